//! The chat outbox on SQLite and PostgreSQL: what a chat command's
//! execution writes, when its result becomes deliverable, and how rows are
//! claimed (in order per channel, under a lease any node may take over).

use anyhow::{Context, Result};
use serde_json::json;
use squall_engine::execution::{ExecutionStatus, new_id, now_ms};
use squall_engine::store::{
    Completion, Delivery, NewExecution, NewOutboxRow, OutboxKind, Store, WriteBatch, chat_outbox,
};
use squall_tests::{Backend, TestDb};

on_both_backends!(
    a_chat_command_brings_its_ack_and_a_held_result_released_once_when_it_ends,
    abandoned_commands_get_their_final_message,
    one_channel_is_delivered_in_order_and_a_lease_can_be_taken_over,
    a_refused_row_does_not_block_the_rows_after_it,
    retries_wait_for_their_time,
);

fn chat_execution(channel: &str) -> NewExecution {
    NewExecution {
        id: new_id(),
        action: "testing.say".into(),
        runner: "local-shell-cmd".into(),
        parameters: json!({}),
        context: json!({
            "source": "chat",
            "user": "matrix:@alice:hs",
            "chat": {"platform": "matrix", "channel": channel, "user": "@alice:hs",
                     "message_id": "$cmd", "thread": "$cmd", "ack": true, "result": true},
        }),
        parent_id: None,
        idempotent: false,
        outcome: None,
        secrets: Default::default(),
    }
}

fn reply(channel: &str, text: &str) -> NewOutboxRow {
    NewOutboxRow {
        kind: OutboxKind::Reply,
        execution_id: None,
        inquiry_id: None,
        platform: Some("matrix".into()),
        channel: Some(channel.into()),
        thread: None,
        target: format!("matrix:{channel}"),
        message: json!({"text": text}),
        thread_key: None,
        edit_of: None,
        ready_at: None,
    }
}

async fn rows_of(store: &Store, execution: &str) -> Result<Vec<chat_outbox::Model>> {
    Ok(store.chat_messages_of(execution).await?)
}

async fn due_ids(store: &Store) -> Result<Vec<String>> {
    Ok(store
        .outbox_due(&["matrix"], now_ms(), 100)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

async fn a_chat_command_brings_its_ack_and_a_held_result_released_once_when_it_ends(
    backend: Backend,
) -> Result<()> {
    let db = TestDb::new(backend).await?;
    let store = Store::connect(&db.url).await?;
    let exec = chat_execution("!room");
    let id = exec.id.clone();
    store
        .write_batch(&WriteBatch {
            executions: vec![exec],
            ..WriteBatch::default()
        })
        .await?;
    let rows = rows_of(&store, &id).await?;
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.kind.as_str(), r.state.as_str()))
        .collect();
    assert_eq!(kinds, [("ack", "new"), ("result", "held")]);
    assert_eq!(
        rows[1].thread.as_deref(),
        Some("$cmd"),
        "results go to the command's thread"
    );
    // Running is not the end: still held, and a sweep does not release it.
    store.claim_executions("node", 1, now_ms() + 60_000).await?;
    assert_eq!(store.release_results().await?, 0);
    store
        .write_batch(&WriteBatch {
            completions: vec![Completion {
                id: id.clone(),
                lease_owner: "node".into(),
                status: ExecutionStatus::Succeeded,
                result: json!({}),
                stdout: "hello".into(),
                stderr: String::new(),
                exit_code: Some(0),
                error: None,
                retry: None,
                notices: Vec::new(),
                follow_up: Default::default(),
                started_at: None,
                finished_at: now_ms(),
            }],
            ..WriteBatch::default()
        })
        .await?;
    let result = rows_of(&store, &id)
        .await?
        .pop()
        .context("the result row")?;
    assert_eq!(
        result.state, "new",
        "released in the completion's transaction"
    );
    assert_eq!(store.release_results().await?, 0, "released exactly once");
    // The result waits for the ack before it in its channel.
    let ack = rows_of(&store, &id).await?[0].id.clone();
    assert_eq!(due_ids(&store).await?, [ack.clone()]);
    assert!(
        store
            .claim_outbox(&ack, "n", now_ms() + 60_000, None)
            .await?
    );
    let sent = Delivery::Sent(json!({"message_id": "$ack"}));
    assert!(store.finish_outbox(&ack, "n", &sent).await?);
    assert_eq!(due_ids(&store).await?, [result.id]);
    db.cleanup().await
}

async fn abandoned_commands_get_their_final_message(backend: Backend) -> Result<()> {
    let db = TestDb::new(backend).await?;
    let store = Store::connect(&db.url).await?;
    let exec = chat_execution("!room");
    let id = exec.id.clone();
    store
        .write_batch(&WriteBatch {
            executions: vec![exec],
            ..WriteBatch::default()
        })
        .await?;
    store.claim_executions("dead", 1, now_ms() + 60_000).await?;
    let report = store.recover_orphans("alive", true).await?;
    assert_eq!(report.abandoned, 1);
    let rows = rows_of(&store, &id).await?;
    assert_eq!(rows[1].kind, "result");
    assert_eq!(rows[1].state, "new", "released with the abandonment");
    db.cleanup().await
}

async fn one_channel_is_delivered_in_order_and_a_lease_can_be_taken_over(
    backend: Backend,
) -> Result<()> {
    let db = TestDb::new(backend).await?;
    let store = Store::connect(&db.url).await?;
    let first = store.queue_outbox(reply("!a", "one")).await?;
    let second = store.queue_outbox(reply("!a", "two")).await?;
    let other = store.queue_outbox(reply("!b", "elsewhere")).await?;
    let lease = now_ms() + 60_000;
    assert!(
        !store.claim_outbox(&second, "n1", lease, None).await?,
        "not before the earlier row of its channel"
    );
    assert!(
        store.claim_outbox(&other, "n2", lease, None).await?,
        "other channels go on"
    );
    assert!(store.claim_outbox(&first, "n1", lease, None).await?);
    assert!(
        !store.claim_outbox(&first, "n2", lease, None).await?,
        "a claimed row is one node's"
    );
    assert!(!store.claim_outbox(&second, "n1", lease, None).await?);
    let sent = Delivery::Sent(json!({"message_id": "$1"}));
    assert!(store.finish_outbox(&first, "n1", &sent).await?);
    assert!(
        store
            .claim_outbox(&second, "n1", now_ms() - 1, None)
            .await?
    );
    // n1's lease has run out: n2 takes the row over, and n1's late answer
    // no longer counts.
    assert!(store.claim_outbox(&second, "n2", lease, None).await?);
    assert!(!store.finish_outbox(&second, "n1", &sent).await?);
    assert!(store.finish_outbox(&second, "n2", &sent).await?);
    let row = store.chat_message(&second).await?.context("row")?;
    assert_eq!((row.state.as_str(), row.attempts), ("sent", 2));
    db.cleanup().await
}

async fn a_refused_row_does_not_block_the_rows_after_it(backend: Backend) -> Result<()> {
    let db = TestDb::new(backend).await?;
    let store = Store::connect(&db.url).await?;
    let refused = store.queue_outbox(reply("!a", "far too long")).await?;
    let next = store.queue_outbox(reply("!a", "next")).await?;
    let lease = now_ms() + 60_000;
    assert!(store.claim_outbox(&refused, "n", lease, None).await?);
    let reason = "matrix: [413 / M_TOO_LARGE] event too large".to_owned();
    store
        .finish_outbox(&refused, "n", &Delivery::Failed(reason.clone()))
        .await?;
    let row = store.chat_message(&refused).await?.context("row")?;
    assert_eq!(row.state, "failed");
    assert_eq!(row.error.as_deref(), Some(reason.as_str()));
    assert!(store.claim_outbox(&next, "n", lease, None).await?);
    db.cleanup().await
}

async fn retries_wait_for_their_time(backend: Backend) -> Result<()> {
    let db = TestDb::new(backend).await?;
    let store = Store::connect(&db.url).await?;
    let row = store.queue_outbox(reply("!a", "later")).await?;
    let behind = store.queue_outbox(reply("!a", "after it")).await?;
    assert!(
        store
            .claim_outbox(&row, "n", now_ms() + 60_000, None)
            .await?
    );
    let at = now_ms() + 3_600_000;
    store
        .finish_outbox(
            &row,
            "n",
            &Delivery::Retry {
                at,
                reason: "matrix: rate limited for 3600000 ms".into(),
            },
        )
        .await?;
    assert!(
        !due_ids(&store).await?.contains(&row),
        "not due before its time"
    );
    assert_eq!(store.outbox_next_retry(&["matrix"]).await?, Some(at));
    assert_eq!(
        store.outbox_next_retry(&["slack"]).await?,
        None,
        "only the platforms asked about"
    );
    assert!(
        !store
            .claim_outbox(&behind, "n", now_ms() + 60_000, None)
            .await?,
        "the channel waits for it: order is kept"
    );
    db.cleanup().await
}
