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
use squall_tests::{
    Backend, TestDb, eventually, free_port, pack_dirs_env, squall_binary, wait_http_ok,
};

const WEBHOOKS: usize = 200;

/// `squall serve` as a child process on a free loopback port.
pub(crate) struct Node {
    child: Child,
    pub(crate) base: String,
}

impl Node {
    /// A node for the crash tests: 8 workers, 3 s leases, warnings only.
    async fn start(db_url: &str, data: &std::path::Path) -> Result<Node> {
        Self::start_with(
            db_url,
            data,
            &[
                ("SQUALL_WORKER__CONCURRENCY", "8"),
                ("SQUALL_WORKER__LEASE_SECONDS", "3"),
                ("SQUALL_LOG", "warn"),
            ],
            Stdio::inherit(),
        )
        .await
    }

    /// A node with more `SQUALL_*` settings, its log going to `stderr`.
    pub(crate) async fn start_with(
        db_url: &str,
        data: &std::path::Path,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Result<Node> {
        let port = free_port()?;
        let child = Command::new(squall_binary()?)
            .arg("serve")
            .env("SQUALL_LISTEN", format!("127.0.0.1:{port}"))
            .env("SQUALL_DATA_DIR", data)
            .env("SQUALL_DATABASE_URL", db_url)
            .env("SQUALL_PACKS", pack_dirs_env())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting squall serve")?;
        let base = format!("http://127.0.0.1:{port}");
        wait_http_ok(&format!("{base}/healthz"), "squall to answer /healthz").await?;
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
            ("plain", "abandoned") => {
                // The node stopped, not the action: running it again may work.
                assert_eq!(execution.retry.as_deref(), Some("may_help"), "{ti}");
                abandoned += 1;
            }
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

/// kill -9 while workflows run, restart: every workflow completes, and no
/// task whose completion had been stored runs again.
#[tokio::test]
async fn kill_9_during_workflows_resumes_them_without_repeating_finished_tasks() -> Result<()> {
    const WORKFLOWS: usize = 4;
    const STEPS: usize = 6;
    let db = TestDb::new(Backend::Sqlite).await?;
    let data = tempfile::tempdir()?;
    let files = tempfile::tempdir()?;
    let mut node = Node::start(&db.url, data.path()).await?;
    let key = std::fs::read_to_string(data.path().join("admin-api-key"))?
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    let mut workflows = Vec::new();
    for w in 0..WORKFLOWS {
        let file = files.path().join(format!("wf{w}"));
        let created: Value = client
            .post(format!("{}/api/v1/executions", node.base))
            .header("St2-Api-Key", &key)
            .json(&json!({"action": "testing.wf_steps", "parameters": {"file": file, "steps": STEPS, "seconds": 0.3}}))
            .send()
            .await?
            .json()
            .await?;
        let id = created["id"].as_str().context("workflow id")?.to_owned();
        workflows.push((id, file));
    }
    let lines = |file: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    // Kill when every workflow is part-way through and a task is running
    // (on a busy machine the moment can fall between two tasks).
    let store = Store::connect(&db.url).await?;
    eventually(
        Duration::from_secs(60),
        "each workflow to finish two steps, with a task running",
        || {
            let done = workflows.iter().all(|(_, f)| lines(f).len() >= 2);
            let store = store.clone();
            let ids: Vec<String> = workflows.iter().map(|(id, _)| id.clone()).collect();
            async move {
                if !done {
                    return Ok(None);
                }
                for id in &ids {
                    if store
                        .children_of(id)
                        .await?
                        .iter()
                        .any(|c| c.status == "running")
                    {
                        return Ok(Some(()));
                    }
                }
                Ok(None)
            }
        },
    )
    .await?;
    node.kill9()?;

    // What the database says had finished when the node died.
    let mut finished_at_kill: Vec<(usize, i64)> = Vec::new();
    let mut running_at_kill = 0;
    for (w, (id, _)) in workflows.iter().enumerate() {
        for child in store.children_of(id).await? {
            let params: Value = serde_json::from_str(&child.parameters)?;
            match child.status.as_str() {
                "succeeded" => finished_at_kill.push((w, params["n"].as_i64().unwrap_or(-1))),
                "running" => running_at_kill += 1,
                _ => {}
            }
        }
    }
    assert!(running_at_kill > 0, "the kill must interrupt running tasks");
    // Each workflow had written two steps' lines: its first step's completion
    // was stored before its second step started (the second one's may not
    // have been, the kill can fall between its line and its commit).
    for w in 0..WORKFLOWS {
        assert!(
            finished_at_kill.iter().any(|(fw, _)| *fw == w),
            "workflow {w} had no finished step stored at the kill: {finished_at_kill:?}"
        );
    }

    let mut node = Node::start(&db.url, data.path()).await?;
    for (id, _) in &workflows {
        eventually(
            Duration::from_secs(60),
            "the workflow to finish after the restart",
            || {
                let store = store.clone();
                let id = id.clone();
                async move {
                    let model = store.get_execution(&id).await?.context("workflow")?;
                    Ok(ExecutionStatus::parse(&model.status)
                        .is_some_and(ExecutionStatus::is_terminal)
                        .then_some(model.status))
                }
            },
        )
        .await
        .and_then(|status| {
            if status == "succeeded" {
                Ok(())
            } else {
                anyhow::bail!("workflow {id} ended {status}")
            }
        })?;
    }
    for (w, (id, file)) in workflows.iter().enumerate() {
        let written = lines(file);
        for n in 0..STEPS {
            let times = written
                .iter()
                .filter(|l| **l == format!("step {n}"))
                .count();
            if finished_at_kill.contains(&(w, n as i64)) {
                assert_eq!(times, 1, "finished step {n} of {id} ran again: {written:?}");
            } else {
                // The step in flight at the kill may have written before it
                // died; it is idempotent, so it ran again.
                assert!((1..=2).contains(&times), "step {n} of {id}: {written:?}");
            }
        }
        let tasks = store.workflow_tasks(id).await?;
        assert_eq!(
            tasks.iter().filter(|t| t.status == "succeeded").count(),
            STEPS
        );
    }
    eprintln!(
        "workflow crash test: {} tasks finished and {running_at_kill} running at the kill",
        finished_at_kill.len()
    );
    node.kill9()?;
    db.cleanup().await
}
