//! Crash safety with the real binary: kill -9 while webhook-triggered
//! executions are in flight, restart, and check that every webhook answered
//! 202 has exactly one execution — none lost, none duplicated.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use squall_engine::execution::ExecutionStatus;
use squall_engine::store::Store;
use squall_tests::{Backend, TestDb, eventually, free_port, pack_dirs, squall_binary};

const WEBHOOKS: usize = 200;

struct Node {
    child: Child,
    base: String,
}

impl Node {
    async fn start(db_url: &str, data: &std::path::Path) -> Result<Node> {
        let port = free_port()?;
        let packs = pack_dirs()
            .iter()
            .map(|p| format!("\"{}\"", p.display()))
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new(squall_binary()?)
            .arg("serve")
            .env("SQUALL_LISTEN", format!("127.0.0.1:{port}"))
            .env("SQUALL_DATA_DIR", data)
            .env("SQUALL_DATABASE_URL", db_url)
            .env("SQUALL_PACKS", format!("[{packs}]"))
            .env("SQUALL_WORKER__CONCURRENCY", "8")
            .env("SQUALL_WORKER__LEASE_SECONDS", "3")
            .env("SQUALL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting squall serve")?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let health = format!("{base}/healthz");
        eventually(Duration::from_secs(30), "squall to answer /healthz", || {
            let client = client.clone();
            let health = health.clone();
            async move {
                Ok(client
                    .get(&health)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            }
        })
        .await?;
        Ok(Node { child, base })
    }

    fn kill9(&mut self) -> Result<()> {
        // std's Child::kill sends SIGKILL: no shutdown code runs.
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Node {
    /// A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn kill_9_with_executions_in_flight_loses_and_duplicates_nothing_sqlite() -> Result<()> {
    kill_9_with_executions_in_flight(Backend::Sqlite).await
}

#[tokio::test]
async fn kill_9_with_executions_in_flight_loses_and_duplicates_nothing_postgres() -> Result<()> {
    kill_9_with_executions_in_flight(Backend::Postgres).await
}

async fn kill_9_with_executions_in_flight(backend: Backend) -> Result<()> {
    let db = TestDb::new(backend).await?;
    let data = tempfile::tempdir()?;
    let mut node = Node::start(&db.url, data.path()).await?;
    let key = std::fs::read_to_string(data.path().join("admin-api-key"))?
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut requests = Vec::new();
    for n in 0..WEBHOOKS {
        let client = client.clone();
        let url = format!("{}/api/v1/webhooks/crash", node.base);
        let key = key.clone();
        let answered = answered.clone();
        let kind = if n % 2 == 0 { "plain" } else { "idempotent" };
        requests.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .header("St2-Api-Key", key)
                .json(&json!({"kind": kind, "n": n}))
                .send()
                .await
                .ok()?;
            if response.status().as_u16() != 202 {
                return None;
            }
            let body: Value = response.json().await.ok()?;
            answered.fetch_add(1, Ordering::SeqCst);
            Some((body["trigger_instance_id"].as_str()?.to_owned(), kind))
        }));
    }
    // Kill once most webhooks were accepted, while others are still arriving
    // and the workers are mid-run.
    eventually(Duration::from_secs(30), "150 webhooks accepted", || {
        let answered = answered.clone();
        async move { Ok((answered.load(Ordering::SeqCst) >= 150).then_some(())) }
    })
    .await?;
    node.kill9()?;
    let mut accepted: HashMap<String, &str> = HashMap::new();
    for request in requests {
        if let Some((id, kind)) = request.await? {
            accepted.insert(id, kind);
        }
    }
    assert!(accepted.len() >= 150);

    let store = Store::connect(&db.url).await?;
    let in_flight_at_kill = store
        .list_executions(&squall_engine::store::ExecutionFilter {
            status: Some(ExecutionStatus::Running),
            limit: 1000,
            ..Default::default()
        })
        .await?
        .len();
    assert!(
        in_flight_at_kill > 0,
        "the kill must interrupt running executions for this test to mean anything"
    );

    let mut node = Node::start(&db.url, data.path()).await?;
    eventually(
        Duration::from_secs(120),
        "every execution to finish after the restart",
        || {
            let store = store.clone();
            async move {
                let counts = store.count_executions_by_status().await?;
                let open: u64 = counts
                    .iter()
                    .filter(|(s, _)| {
                        !ExecutionStatus::parse(s).is_some_and(ExecutionStatus::is_terminal)
                    })
                    .map(|(_, n)| *n)
                    .sum();
                Ok((open == 0).then_some(()))
            }
        },
    )
    .await?;

    let mut abandoned = 0;
    let mut rerun = 0;
    for (ti, kind) in &accepted {
        let ids = store.executions_for_trigger(ti).await?;
        assert_eq!(
            ids.len(),
            1,
            "trigger instance {ti} has {} executions",
            ids.len()
        );
        let execution = store
            .get_execution(&ids[0])
            .await?
            .context("execution row")?;
        match (*kind, execution.status.as_str()) {
            ("plain", "succeeded") | ("idempotent", "succeeded") => {}
            ("plain", "abandoned") => abandoned += 1,
            other => panic!("unexpected outcome {other:?} for {ti}"),
        }
        if execution.attempt > 1 {
            rerun += 1;
        }
    }
    assert!(
        abandoned + rerun > 0,
        "some executions must have been interrupted"
    );
    // Nothing beyond the accepted webhooks' work exists: no duplicates from
    // requests that were cut off either.
    let total: u64 = store
        .count_executions_by_status()
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let stored_triggers = store.count_trigger_instances_of("core.st2.webhook").await?;
    assert_eq!(
        total, stored_triggers,
        "one execution per stored trigger instance"
    );
    assert!(stored_triggers as usize >= accepted.len());
    eprintln!(
        "crash test ({backend:?}): {} accepted, {in_flight_at_kill} running at kill, {abandoned} abandoned, {rerun} re-run",
        accepted.len()
    );
    node.kill9()?;
    db.cleanup().await
}
