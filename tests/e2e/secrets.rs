//! A secret given to an execution stays masked in everything descended from
//! it: its own views, the `squall.execution` trigger instance it fires, the
//! executions rules start from that, a workflow's tasks, chat results and
//! notices, the audit log, and the CLI.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Map, json};
use squall::config::ChatSection;
use squall_engine::execution::ExecutionContext;
use squall_engine::params::Casting;
use squall_tests::{Backend, eventually, repo_root, squall_binary};

use crate::chat::{Session, wait_output};
use crate::server::TestServer;

const SECRET: &str = "hunter3-SECRET";

fn assert_masked(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the secret:\n{text}");
}

/// Every audit row about `subject`, as text.
async fn audit_text(server: &TestServer, subject: &str) -> Result<String> {
    let rows = server.engine.store.audit_for(subject).await?;
    Ok(rows
        .iter()
        .map(|r| format!("{} {}", r.kind, r.detail))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `squall execution get <id>` as a user runs it on the server's machine
/// (the CLI opens the database itself and renders its own view).
fn cli_execution_get(server: &TestServer, id: &str) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("squall.toml");
    let packs = [
        repo_root().join("packs"),
        repo_root().join("tests/fixtures/packs"),
    ];
    std::fs::write(
        &config,
        format!(
            "database_url = {:?}\ndata_dir = {:?}\npacks = [{:?}, {:?}]\n",
            server.database_url(),
            dir.path().display().to_string(),
            packs[0].display().to_string(),
            packs[1].display().to_string(),
        ),
    )?;
    let out = std::process::Command::new(squall_binary()?)
        .args(["--config"])
        .arg(&config)
        .args(["execution", "get", id])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned()
        + String::from_utf8_lossy(&out.stderr).as_ref();
    anyhow::ensure!(out.status.success(), "squall execution get failed:\n{text}");
    Ok(text)
}

/// Start testing.wf_secret: it prints the secret, then posts what it printed
/// to `channel`.
async fn start_secret_workflow(server: &TestServer, channel: &str) -> Result<String> {
    let mut params = Map::new();
    params.insert("token".into(), json!(SECRET));
    params.insert("channel".into(), json!(channel));
    Ok(server
        .engine
        .request_execution(
            "testing.wf_secret",
            &params,
            Casting::Strict,
            ExecutionContext::default(),
        )
        .await?)
}

async fn on_backend(backend: Backend) -> Result<()> {
    chained_executions_keep_the_secret_masked(backend).await?;
    workflow_tasks_inherit_the_workflows_secrets(backend).await
}

async fn chained_executions_keep_the_secret_masked(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let (status, created) = server
        .post(
            "/api/v1/executions",
            &json!({"action": "testing.leak", "parameters": {"token": SECRET}}).to_string(),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    assert_masked("the create answer", &created.to_string());
    let leak = created["id"].as_str().context("id")?.to_owned();
    server
        .engine
        .wait_for(&leak, Duration::from_secs(30))
        .await?;
    let (_, view) = server.get(&format!("/api/v1/executions/{leak}")).await?;
    assert_eq!(view["stdout"], "token is ********\n", "{view}");
    assert_masked("the leak's own view", &view.to_string());

    // The rule testing.leak_chain runs core.echo with the leak's output.
    let chained = eventually(Duration::from_secs(30), "the chained execution", || async {
        let (_, list) = server
            .get("/api/v1/executions?action=core.echo&status=succeeded")
            .await?;
        Ok(list.as_array().and_then(|l| {
            l.iter()
                .find(|e| e["context"]["rule"] == "testing.leak_chain")
                .cloned()
        }))
    })
    .await?;
    let chained_id = chained["id"].as_str().context("id")?.to_owned();
    assert_masked("the chained execution in the list", &chained.to_string());
    let (_, detail) = server
        .get(&format!("/api/v1/executions/{chained_id}"))
        .await?;
    assert_masked("the chained execution's detail", &detail.to_string());
    // Masked, not dropped: the chain still carries the text around it.
    assert_eq!(
        detail["trigger_instance"]["payload"]["result"]["stdout"], "token is ********\n",
        "{detail}"
    );
    assert_eq!(
        detail["result"]["message"], "the leak said: token is ********\n",
        "{detail}"
    );
    assert_masked("the CLI", &cli_execution_get(&server, &chained_id)?);
    assert_masked("the CLI", &cli_execution_get(&server, &leak)?);
    for id in [&leak, &chained_id] {
        assert_masked("the audit log", &audit_text(&server, id).await?);
    }
    // A re-run of the chained execution inherits what it masked.
    let rerun = server
        .engine
        .rerun(&chained_id, ExecutionContext::default())
        .await?;
    server
        .engine
        .wait_for(&rerun, Duration::from_secs(30))
        .await?;
    let (_, view) = server.get(&format!("/api/v1/executions/{rerun}")).await?;
    assert_masked("a re-run of the chained execution", &view.to_string());
    server.stop().await
}

async fn workflow_tasks_inherit_the_workflows_secrets(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    // A channel nobody serves here: the notice is queued, then fails.
    let wf = start_secret_workflow(&server, "nowhere:room").await?;
    // The print task ends before the notice does; look at it and at the
    // queued notice while the workflow waits for a chat node.
    let task = eventually(Duration::from_secs(30), "the print task", || async {
        let (_, list) = server.get("/api/v1/executions?action=core.local").await?;
        Ok(list.as_array().and_then(|l| {
            l.iter()
                .find(|e| e["parent_id"] == wf.as_str() && e["status"] == "succeeded")
                .cloned()
        }))
    })
    .await?;
    assert_eq!(task["stdout"], "task got ********\n", "{task}");
    assert_eq!(
        task["parameters"]["cmd"], "echo task got ********",
        "{task}"
    );
    assert_masked("the task", &task.to_string());
    let notices = eventually(Duration::from_secs(30), "the queued notice", || async {
        let queued = server.engine.store.chat_messages_to_send().await?;
        Ok((!queued.is_empty()).then_some(queued))
    })
    .await?;
    assert_eq!(notices.len(), 1, "one queued notice");
    assert_masked("the queued chat notice", &notices[0].message);
    assert!(
        notices[0].message.contains("task got ********"),
        "{}",
        notices[0].message
    );
    // Nobody delivers to that channel: stop the workflow rather than wait.
    server.engine.cancel(&wf).await?;
    let finished = server.engine.wait_for(&wf, Duration::from_secs(60)).await?;
    let (_, view) = server
        .get(&format!("/api/v1/executions/{}", finished.id))
        .await?;
    assert_masked("the workflow", &view.to_string());
    let task_id = task["id"].as_str().context("id")?;
    assert_masked("the CLI", &cli_execution_get(&server, task_id)?);
    for id in [wf.as_str(), task_id] {
        assert_masked("the audit log", &audit_text(&server, id).await?);
    }
    server.stop().await
}

#[tokio::test]
async fn secrets_stay_masked_down_chains_and_workflows_on_sqlite() -> Result<()> {
    on_backend(Backend::Sqlite).await
}

#[tokio::test]
async fn secrets_stay_masked_down_chains_and_workflows_on_postgres() -> Result<()> {
    on_backend(Backend::Postgres).await
}

#[tokio::test]
async fn chat_results_and_notices_mask_secrets() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let mut alice = Session::new(&server, "alice", ChatSection::default())?;
    alice.dispatcher.start();
    let answer = alice.say(&format!("leak {SECRET}")).await;
    assert!(answer.contains("testing.leak succeeded"), "{answer}");
    assert!(answer.contains("token is ********"), "{answer}");
    assert_masked("the chat result", &answer);
    let id = alice.last_id(&answer);
    let status = alice.say(&format!("status {id}")).await;
    assert!(status.contains("token is ********"), "{status}");
    assert_masked("chat status", &status);

    // A workflow's notice to the console channel.
    let wf = start_secret_workflow(&server, "console:console").await?;
    let mut seen = String::new();
    wait_output(&mut alice, &mut seen, "the workflow printed").await?;
    let done = server.engine.wait_for(&wf, Duration::from_secs(60)).await?;
    assert_eq!(done.status, "succeeded", "{:?}", done.error);
    seen.push_str(&alice.settle().await);
    assert!(
        seen.contains("the workflow printed task got ********"),
        "{seen}"
    );
    assert_masked("the chat notice", &seen);
    server.stop().await
}

/// The real server's log, at its most verbose (trace, and debug for
/// handlebars, which logs every value it renders, asked for explicitly), while a secret goes down a rule
/// chain and through a workflow, never holds the secret.
#[tokio::test]
async fn the_server_log_never_holds_a_secret() -> Result<()> {
    let db = squall_tests::TestDb::new(Backend::Sqlite).await?;
    let data = tempfile::tempdir()?;
    let log_path = data.path().join("squall.log");
    let node = crate::crash::Node::start_with(
        &db.url,
        data.path(),
        &[("SQUALL_LOG", "trace,handlebars=debug")],
        std::fs::File::create(&log_path)?.into(),
    )
    .await?;
    let outcome = async {
        let base = node.base.clone();
        let client = reqwest::Client::new();
        let key = std::fs::read_to_string(data.path().join("admin-api-key"))?.trim().to_owned();
        for body in [
            json!({"action": "testing.leak", "parameters": {"token": SECRET}}),
            json!({"action": "testing.wf_secret", "parameters": {"token": SECRET, "channel": "nowhere:room"}}),
        ] {
            let created: serde_json::Value = client
                .post(format!("{base}/api/v1/executions"))
                .header("St2-Api-Key", &key)
                .json(&body)
                .send()
                .await?
                .json()
                .await?;
            anyhow::ensure!(created["id"].is_string(), "{created}");
        }
        // Wait for the chained echo and for the workflow's notice to be refused.
        eventually(Duration::from_secs(30), "the chain and the workflow's task", || {
            let client = client.clone();
            let (base, key) = (base.clone(), key.clone());
            async move {
                let list: serde_json::Value = client
                    .get(format!("{base}/api/v1/executions?status=succeeded"))
                    .header("St2-Api-Key", &key)
                    .send()
                    .await?
                    .json()
                    .await?;
                let done = |action: &str| {
                    list.as_array()
                        .is_some_and(|l| l.iter().any(|e| e["action"] == action))
                };
                Ok((done("core.echo") && done("core.local")).then_some(()))
            }
        })
        .await
    }
    .await;
    drop(node);
    outcome?;
    let log = std::fs::read_to_string(&log_path)?;
    assert!(log.contains("DEBUG"), "the log was at debug level or more");
    assert_masked("the server log", &log);
    db.cleanup().await
}
