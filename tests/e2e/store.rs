//! The store conformance suite: every test runs on SQLite and on PostgreSQL
//! (a fresh database each).

use std::collections::HashSet;

use anyhow::Result;
use serde_json::json;
use squall_engine::execution::{ExecutionStatus, new_id, now_ms};
use squall_engine::store::{
    Completion, ExecutionFilter, NewExecution, NewOutboxRow, NewTriggerInstance, Store, WriteBatch,
};
use squall_tests::{Backend, TestDb};

use crate::server::TestServer;

on_both_backends!(
    claims_are_oldest_first_and_exclusive,
    completion_from_a_node_that_lost_its_lease_is_ignored,
    expired_leases_are_abandoned_or_requeued_by_policy,
    api_keys_verify_by_hash,
    webhook_to_rule_to_action_is_recorded,
    completions_store_the_run_times_the_worker_measured,
    a_database_from_the_previous_version_upgrades_in_place,
);

/// A database made by the previous version (before executions had a `retry`
/// column) holding queued work: opening it migrates in place, and the work is
/// claimed and completed through a full pool of connections, several at once.
async fn a_database_from_the_previous_version_upgrades_in_place(backend: Backend) -> Result<()> {
    use sea_orm::ConnectionTrait;
    use squall_migrations::MigratorTrait;

    let db = TestDb::new(backend).await?;
    let store = Store::connect(&db.url).await?;
    let conn = store.connection();
    squall_migrations::Migrator::down(conn, Some(1)).await?;
    let ids: Vec<String> = (0..40).map(|_| new_id()).collect();
    for id in &ids {
        conn.execute_raw(sea_orm::Statement::from_sql_and_values(
            conn.get_database_backend(),
            numbered_placeholders(
                conn.get_database_backend(),
                "INSERT INTO executions (id, action, runner, status, parameters, context, attempt, \
                 idempotent, created_at, updated_at) VALUES (?, 'core.noop', 'noop', 'requested', '{}', \
                 '{\"source\": \"test\"}', 1, ?, ?, ?)",
            ),
            vec![id.clone().into(), false.into(), now_ms().into(), now_ms().into()],
        ))
        .await?;
    }
    drop(store);

    let store = Store::connect(&db.url).await?;
    let mut tasks = Vec::new();
    for owner in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_executions(&format!("n{owner}"), 3, now_ms() + 60_000)
                    .await?;
                if batch.is_empty() {
                    return anyhow::Ok(mine);
                }
                mine.extend(batch.into_iter().map(|m| (m.id, format!("n{owner}"))));
            }
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await??);
    }
    assert_eq!(claimed.len(), ids.len());
    let completions = claimed
        .iter()
        .map(|(id, owner)| Completion {
            id: id.clone(),
            lease_owner: owner.clone(),
            status: ExecutionStatus::Failed,
            result: json!({}),
            stdout: String::new(),
            stderr: String::new(),
            exit_code: Some(1),
            error: Some("boom".into()),
            retry: Some(squall_engine::runners::Retry::MayHelp),
            notices: Vec::new(),
            follow_up: Default::default(),
            started_at: None,
            finished_at: now_ms(),
        })
        .collect();
    store
        .write_batch(&WriteBatch {
            completions,
            ..WriteBatch::default()
        })
        .await?;
    for id in &ids {
        let row = store.get_execution(id).await?.expect("the row");
        assert_eq!(
            (row.status.as_str(), row.retry.as_deref()),
            ("failed", Some("may_help"))
        );
    }
    db.cleanup().await
}

/// `?` placeholders as the backend wants them.
fn numbered_placeholders(backend: sea_orm::DbBackend, sql: &str) -> String {
    if backend != sea_orm::DbBackend::Postgres {
        return sql.to_owned();
    }
    let mut n = 0;
    sql.chars()
        .map(|c| {
            if c == '?' {
                n += 1;
                format!("${n}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A completion is committed in a batch, later than the run ended, and the
/// claim's time is when the claim was asked for: the stored start and end are
/// the ones the worker measured around the run (a workflow's completion
/// without a start keeps the claim's).
async fn completions_store_the_run_times_the_worker_measured(backend: Backend) -> Result<()> {
    let (db, store) = store_with(backend, vec![new_execution(false), new_execution(false)]).await?;
    let claimed = store.claim_executions("a", 2, now_ms() + 60_000).await?;
    let claimed_at = claimed[1].started_at.expect("a claim sets a start");
    let (ran_from, ran_to) = (now_ms() - 5_000, now_ms() - 4_000);
    let done = |id: &str, started_at: Option<i64>| Completion {
        id: id.to_owned(),
        lease_owner: "a".into(),
        status: ExecutionStatus::Succeeded,
        result: json!({}),
        stdout: String::new(),
        stderr: String::new(),
        exit_code: Some(0),
        error: None,
        retry: None,
        notices: Vec::new(),
        follow_up: Default::default(),
        started_at,
        finished_at: ran_to,
    };
    store
        .write_batch(&WriteBatch {
            completions: vec![
                done(&claimed[0].id, Some(ran_from)),
                done(&claimed[1].id, None),
            ],
            ..WriteBatch::default()
        })
        .await?;
    let measured = store.get_execution(&claimed[0].id).await?.expect("exists");
    assert_eq!(
        (measured.started_at, measured.finished_at),
        (Some(ran_from), Some(ran_to))
    );
    let kept = store.get_execution(&claimed[1].id).await?.expect("exists");
    assert_eq!(
        (kept.started_at, kept.finished_at),
        (Some(claimed_at), Some(ran_to))
    );
    db.cleanup().await
}

fn new_execution(idempotent: bool) -> NewExecution {
    NewExecution {
        id: new_id(),
        action: "core.noop".into(),
        runner: "noop".into(),
        parameters: json!({}),
        context: json!({"source": "test"}),
        parent_id: None,
        idempotent,
        outcome: None,
        secrets: Default::default(),
    }
}

async fn store_with(backend: Backend, executions: Vec<NewExecution>) -> Result<(TestDb, Store)> {
    let db = TestDb::new(backend).await?;
    let store = Store::connect(&db.url).await?;
    store
        .write_batch(&WriteBatch {
            executions,
            ..WriteBatch::default()
        })
        .await?;
    Ok((db, store))
}

async fn claims_are_oldest_first_and_exclusive(backend: Backend) -> Result<()> {
    let executions: Vec<NewExecution> = (0..200).map(|_| new_execution(false)).collect();
    let expected: Vec<String> = executions.iter().map(|e| e.id.clone()).collect();
    let (db, store) = store_with(backend, executions).await?;
    let first = store.claim_executions("a", 5, now_ms() + 60_000).await?;
    assert_eq!(
        first.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        expected[..5].to_vec()
    );
    assert!(
        first
            .iter()
            .all(|m| m.status == "running" && m.lease_owner.as_deref() == Some("a"))
    );

    // Several claimers at once never get the same execution.
    let mut tasks = Vec::new();
    for owner in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_executions(&format!("n{owner}"), 7, now_ms() + 60_000)
                    .await?;
                if batch.is_empty() {
                    return anyhow::Ok(mine);
                }
                mine.extend(batch.into_iter().map(|m| m.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for id in task.await?? {
            assert!(seen.insert(id.clone()), "{id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 195);
    db.cleanup().await
}

async fn completion_from_a_node_that_lost_its_lease_is_ignored(backend: Backend) -> Result<()> {
    let (db, store) = store_with(backend, vec![new_execution(false)]).await?;
    let claimed = store.claim_executions("a", 1, now_ms() + 60_000).await?;
    let id = claimed[0].id.clone();
    let done = |owner: &str| Completion {
        id: id.clone(),
        lease_owner: owner.into(),
        status: ExecutionStatus::Succeeded,
        result: json!({"by": owner}),
        stdout: String::new(),
        stderr: String::new(),
        exit_code: Some(0),
        error: None,
        retry: None,
        // Its notify message goes out only with the completion that is stored.
        notices: vec![NewOutboxRow::notice(
            &id,
            "ops",
            &json!({"text": format!("done by {owner}")}),
            None,
        )],
        // And so do the rule firings on its end.
        follow_up: WriteBatch {
            trigger_instances: vec![NewTriggerInstance {
                id: format!("{id}-ti-{owner}"),
                trigger: "core.st2.generic.actiontrigger".into(),
                payload: json!({"by": owner}),
                source: format!("execution/{id}"),
                occurred_at: now_ms(),
                secrets: Default::default(),
            }],
            ..WriteBatch::default()
        },
        started_at: None,
        finished_at: now_ms(),
    };
    store
        .write_batch(&WriteBatch {
            completions: vec![done("b")],
            ..WriteBatch::default()
        })
        .await?;
    assert_eq!(
        store.get_execution(&id).await?.expect("exists").status,
        "running"
    );
    store
        .write_batch(&WriteBatch {
            completions: vec![done("a")],
            ..WriteBatch::default()
        })
        .await?;
    let finished = store.get_execution(&id).await?.expect("exists");
    assert_eq!(finished.status, "succeeded");
    assert_eq!(finished.result.as_deref(), Some(r#"{"by":"a"}"#));
    // A second completion (a retry after a lost reply) changes nothing.
    store
        .write_batch(&WriteBatch {
            completions: vec![done("a")],
            ..WriteBatch::default()
        })
        .await?;
    assert_eq!(
        store.get_execution(&id).await?.expect("exists").finished_at,
        finished.finished_at
    );
    let sent: Vec<String> = store
        .chat_messages_of(&id)
        .await?
        .into_iter()
        .map(|m| m.message)
        .collect();
    assert_eq!(sent, vec![r#"{"text":"done by a"}"#.to_owned()]);
    assert!(
        store
            .get_trigger_instance(&format!("{id}-ti-a"))
            .await?
            .is_some()
    );
    assert!(
        store
            .get_trigger_instance(&format!("{id}-ti-b"))
            .await?
            .is_none()
    );
    db.cleanup().await
}

async fn expired_leases_are_abandoned_or_requeued_by_policy(backend: Backend) -> Result<()> {
    let plain = new_execution(false);
    let idem = new_execution(true);
    let (plain_id, idem_id) = (plain.id.clone(), idem.id.clone());
    let (db, store) = store_with(backend, vec![plain, idem]).await?;
    store
        .claim_executions("dead-node", 10, now_ms() - 1)
        .await?;
    let report = store.recover_orphans("live-node", false).await?;
    assert_eq!((report.abandoned, report.requeued), (1, 1));
    let plain = store.get_execution(&plain_id).await?.expect("exists");
    assert_eq!(plain.status, "abandoned");
    assert!(plain.error.unwrap_or_default().contains("stopped"));
    let idem = store.get_execution(&idem_id).await?.expect("exists");
    assert_eq!((idem.status.as_str(), idem.attempt), ("requested", 2));
    // A live lease is left alone.
    store
        .claim_executions("other", 10, now_ms() + 60_000)
        .await?;
    let report = store.recover_orphans("live-node", false).await?;
    assert_eq!((report.abandoned, report.requeued), (0, 0));
    let listed = store
        .list_executions(&ExecutionFilter {
            status: Some(ExecutionStatus::Abandoned),
            limit: 10,
            ..ExecutionFilter::default()
        })
        .await?;
    assert_eq!(listed.len(), 1);
    db.cleanup().await
}

async fn api_keys_verify_by_hash(backend: Backend) -> Result<()> {
    let (db, store) = store_with(backend, Vec::new()).await?;
    let (_, key) = store.create_api_key("ci").await?;
    assert_eq!(store.verify_api_key(&key).await?, Some("ci".to_owned()));
    assert_eq!(store.verify_api_key("sq_wrong").await?, None);
    db.cleanup().await
}

async fn webhook_to_rule_to_action_is_recorded(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let (status, accepted) = server
        .post("/api/v1/webhooks/deploy", r#"{"app": "db"}"#)
        .await?;
    assert_eq!(status, 202);
    let executions = server
        .finished_executions_of(accepted["trigger_instance_id"].as_str().unwrap_or_default())
        .await?;
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0]["status"], "succeeded");
    assert_eq!(executions[0]["stdout"], "deploying db to staging\n");
    server.stop().await
}

/// A test that fails (panics) still drops its PostgreSQL database: failed
/// runs leave nothing behind on the server.
#[tokio::test]
async fn a_failing_test_still_drops_its_postgres_database() -> Result<()> {
    use sea_orm::ConnectionTrait;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let failed = tokio::spawn(async move {
        let db = TestDb::new(Backend::Postgres)
            .await
            .expect("a test database");
        let name = db.postgres_name().map(str::to_owned);
        let _ = tx.send(name);
        panic!("the test fails with its database still in scope");
    })
    .await;
    assert!(failed.expect_err("the test panicked").is_panic());
    let name = rx.await?.expect("a PostgreSQL database name");
    let admin =
        sea_orm::Database::connect(format!("{}/postgres", squall_tests::postgres_server_url()))
            .await?;
    let left = admin
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT datname FROM pg_database WHERE datname = $1",
            [name.clone().into()],
        ))
        .await?;
    admin.close().await.ok();
    assert!(left.is_empty(), "{name} was left behind");
    Ok(())
}
