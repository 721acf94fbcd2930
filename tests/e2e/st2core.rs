//! What StackStorm packs lean on from `core`: an action's `notify:` posted to
//! chat through the outbox, rules on `core.st2.generic.actiontrigger` and
//! `...notifytrigger`, and the actions `core.inject_trigger`, `core.uuid`,
//! `core.pause` and `core.announcement`. The fixture pack
//! (tests/fixtures/st2-packs/st2style) is written in Exchange style, Jinja
//! included.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use squall::config::ChatSection;
use squall_engine::store::ExecutionFilter;
use squall_tests::{Backend, repo_root};

use crate::chat::Session;
use crate::server::TestServer;

const WAIT: Duration = Duration::from_secs(60);

async fn start(backend: Backend) -> Result<TestServer> {
    TestServer::start_with(backend, |c| {
        c.packs = vec![repo_root().join("tests/fixtures/st2-packs")];
    })
    .await
}

async fn run(server: &TestServer, action: &str, parameters: Value) -> Result<Value> {
    let id = create(server, action, parameters).await?;
    server.engine.wait_for(&id, WAIT).await?;
    let (status, view) = server.get(&format!("/api/v1/executions/{id}")).await?;
    ensure!(status == 200, "{view}");
    Ok(view)
}

async fn create(server: &TestServer, action: &str, parameters: Value) -> Result<String> {
    let (status, created) = server
        .post(
            "/api/v1/executions",
            &json!({"action": action, "parameters": parameters}).to_string(),
        )
        .await?;
    ensure!(status == 201, "create answered {status}: {created}");
    Ok(created["id"].as_str().context("id")?.to_owned())
}

/// The finished executions of `action`, waiting until there are `count`.
async fn finished_runs(server: &TestServer, action: &str, count: usize) -> Result<Vec<Value>> {
    for _ in 0..1200 {
        let rows = server
            .engine
            .store
            .list_executions(&ExecutionFilter {
                action: Some(action.into()),
                limit: 50,
                ..Default::default()
            })
            .await?;
        let done: Vec<Value> = rows
            .iter()
            .filter(|r| r.status == "succeeded" || r.status == "failed")
            .map(|r| {
                json!({
                    "status": r.status,
                    "parameters": serde_json::from_str::<Value>(&r.parameters).unwrap_or_default(),
                })
            })
            .collect();
        if done.len() >= count {
            return Ok(done);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{action} did not finish {count} times in time")
}

#[tokio::test]
async fn notify_reaches_chat_and_generic_triggers_drive_rules() -> Result<()> {
    let server = start(Backend::Sqlite).await?;
    let mut alice = Session::new(&server, "alice", ChatSection::default())?;
    let said = alice.say("notified hello").await;
    // The alias's Jinja ack and result formats, then the action's notify.
    assert!(said.contains("On it (st2style.notified)."), "{said}");
    assert!(said.contains("said \"hello\""), "{said}");
    assert!(
        said.contains("st2style.notified SUCCEEDED: hello"),
        "the notify message reaches the channel of the command: {said}"
    );

    // actiontrigger -> core.inject_trigger -> st2style.relay -> relayed, and
    // the notify on the chatops route -> notifytrigger -> relayed.
    let relayed = finished_runs(&server, "st2style.relayed", 2).await?;
    let mut messages: Vec<String> = relayed
        .iter()
        .map(|r| {
            r["parameters"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    messages.sort();
    ensure!(
        messages[0] == "notified infra: st2style.notified SUCCEEDED: hello",
        "{messages:?}"
    );
    ensure!(
        messages[1].starts_with("relay of ") && messages[1].ends_with(" (SUCCEEDED)"),
        "{messages:?}"
    );
    let injected = finished_runs(&server, "core.inject_trigger", 1).await?;
    assert_eq!(injected[0]["status"], "succeeded", "{injected:?}");
    server.stop().await
}

on_both_backends!(core_actions_do_what_stackstorm_packs_expect);

async fn core_actions_do_what_stackstorm_packs_expect(backend: Backend) -> Result<()> {
    let server = start(backend).await?;

    let uuid4 = regex::Regex::new(
        r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
    )?;
    let view = run(&server, "core.uuid", json!({})).await?;
    assert_eq!(view["status"], "succeeded", "{view}");
    let first = view["result"].as_str().unwrap_or_default().to_owned();
    assert!(uuid4.is_match(&first), "{view}");
    let view = run(&server, "core.uuid", json!({})).await?;
    assert_ne!(view["result"], json!(first), "two runs, two uuids");
    let view = run(&server, "core.uuid", json!({"uuid_type": "uuid1"})).await?;
    assert_eq!(
        view["result"].as_str().unwrap_or_default().chars().nth(14),
        Some('1'),
        "{view}"
    );
    let (status, refused) = server
        .post(
            "/api/v1/executions",
            &json!({"action": "core.uuid", "parameters": {"uuid_type": "uuid7"}}).to_string(),
        )
        .await?;
    assert_eq!(status, 400, "{refused}");

    // core.pause waits, and a cancel ends the wait.
    let view = run(&server, "core.pause", json!({"max_pause": 0.2})).await?;
    assert_eq!(view["status"], "succeeded", "{view}");
    let id = create(&server, "core.pause", json!({"max_pause": 600})).await?;
    for _ in 0..600 {
        let (_, view) = server.get(&format!("/api/v1/executions/{id}")).await?;
        if view["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, answer) = server
        .post(&format!("/api/v1/executions/{id}/cancel"), "{}")
        .await?;
    assert!(status == 200 || status == 202, "{status}: {answer}");
    server.engine.wait_for(&id, WAIT).await?;
    let (_, view) = server.get(&format!("/api/v1/executions/{id}")).await?;
    assert_eq!(view["status"], "canceled", "{view}");

    // core.inject_trigger refuses a trigger type nobody could name.
    let view = run(
        &server,
        "core.inject_trigger",
        json!({"trigger": "core.nonsense", "payload": {}}),
    )
    .await?;
    assert_eq!(view["status"], "failed", "{view}");
    assert!(
        view["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown trigger type \"core.nonsense\""),
        "{view}"
    );

    // core.announcement fires StackStorm's announcement trigger.
    let view = run(
        &server,
        "core.announcement",
        json!({"message": "deploy window opens", "route": "ops"}),
    )
    .await?;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["result"]["trigger"], "core.st2.generic.announcement");
    server.stop().await
}
