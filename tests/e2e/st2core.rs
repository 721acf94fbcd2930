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
    server.run_action(action, parameters, WAIT).await
}

async fn create(server: &TestServer, action: &str, parameters: Value) -> Result<String> {
    server.create_execution(action, parameters).await
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

    // core.ask requests an approval: StackStorm's inquiry trigger fires.
    let asked = create(&server, "core.ask", json!({})).await?;
    let relayed = finished_runs(&server, "st2style.relayed", 1).await?;
    let message = relayed[0]["parameters"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("approval ") && message.ends_with(" asked on route inquiry"),
        "{relayed:?}"
    );
    let (_, view) = server.get(&format!("/api/v1/executions/{asked}")).await?;
    assert_eq!(view["status"], "pending", "{view}");

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

/// The aiosmtpd python: `$AIOSMTPD_PYTHON`, else the virtualenv
/// `scripts/testenv/aiosmtpd.sh` installs.
fn aiosmtpd_python() -> Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("AIOSMTPD_PYTHON") {
        return Ok(path.into());
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let cache = std::env::var_os("SQUALL_TESTENV_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(home).join(".cache/squall-testenv"));
    let path = cache.join("aiosmtpd-venv/bin/python");
    ensure!(
        path.is_file(),
        "aiosmtpd is not installed at {}: run `bash scripts/testenv/aiosmtpd.sh` \
         (scripts/test.sh does it) or set AIOSMTPD_PYTHON",
        path.display()
    );
    Ok(path)
}

/// `squall pack install` builds a python pack's virtualenv ahead of its first
/// run, and names a pack whose requirements cannot be installed.
#[tokio::test]
async fn pack_install_prepares_python_packs() -> Result<()> {
    let output = tokio::process::Command::new(squall_tests::squall_binary()?)
        .args(["pack", "install"])
        .arg(repo_root().join("tests/fixtures/python-packs"))
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stdout.contains("pyops: virtualenv ready (") && stdout.contains("/bin/python)"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    ensure!(
        stderr.contains(
            "pybroken: pack pybroken: building its virtualenv from requirements.txt failed"
        ),
        "stderr: {stderr}"
    );
    ensure!(
        !output.status.success(),
        "a failed install must fail the command"
    );
    Ok(())
}

#[tokio::test]
async fn a_broken_core_config_keeps_the_core_pack() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let packs = tmp.path().join("packs");
    std::fs::create_dir_all(&packs)?;
    std::fs::create_dir_all(tmp.path().join("configs"))?;
    std::fs::write(
        tmp.path().join("configs/core.yaml"),
        "smtp_host: mail.example.com\nsmtp_port: not-a-port\nsmtp_password: broken-s3cret-9\n",
    )?;
    let server = TestServer::start_with(Backend::Sqlite, |c| c.packs = vec![packs.clone()]).await?;
    // core.local and the rest of core still run.
    let view = run(&server, "core.local", json!({"cmd": "echo still here"})).await?;
    assert_eq!(view["stdout"], "still here\n", "{view}");
    let (_, packs_view) = server.get("/api/v1/packs").await?;
    let text = packs_view.to_string();
    assert!(!text.contains("broken-s3cret-9"), "{text}");
    let catalog = server.engine.catalog.current();
    assert!(catalog.refused.is_empty(), "{:?}", catalog.refused);
    let warning = catalog
        .warnings
        .iter()
        .map(ToString::to_string)
        .find(|w| w.contains("smtp_port"))
        .context("a warning about smtp_port")?;
    assert!(
        warning.contains("the built-in pack core loads without this setting"),
        "{warning}"
    );
    // The broken setting takes its schema default; the good ones stay.
    let config = catalog.pack_config("core").context("core's config")?;
    assert_eq!(config.values["smtp_port"], json!(25));
    assert_eq!(config.values["smtp_host"], json!("mail.example.com"));
    server.stop().await
}

#[tokio::test]
async fn sendmail_delivers_through_a_real_smtp_server() -> Result<()> {
    let python = aiosmtpd_python()?;
    let tmp = tempfile::tempdir()?;
    let maildir = tmp.path().join("mail");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _sink = tokio::process::Command::new(&python)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .kill_on_drop(true)
        .spawn()
        .context("starting aiosmtpd")?;
    let mut up = false;
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(up, "aiosmtpd did not listen on port {port}");

    // The SMTP server comes from the core pack's config, beside the packs.
    let packs = tmp.path().join("packs");
    std::fs::create_dir_all(&packs)?;
    std::fs::create_dir_all(tmp.path().join("configs"))?;
    std::fs::write(
        tmp.path().join("configs/core.yaml"),
        format!("smtp_host: 127.0.0.1\nsmtp_port: {port}\nsmtp_password: smtp-s3cret-77\n"),
    )?;
    let server = TestServer::start_with(Backend::Sqlite, |c| c.packs = vec![packs.clone()]).await?;

    let view = run(
        &server,
        "core.sendmail",
        json!({
            "to": "ops@example.com, lead@example.com",
            "from": "squall@example.com",
            "subject": "disk full",
            "body": "<b>web-1</b> is at 97%",
        }),
    )
    .await?;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["result"]["smtp_code"], "250", "{view}");
    assert_eq!(view["parameters"]["smtp_port"], json!(port), "{view}");
    assert!(
        !view.to_string().contains("smtp-s3cret-77"),
        "the config's secret shows: {view}"
    );

    let maildir_new = maildir.join("new");
    let mails = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
        let mut texts = Vec::new();
        for entry in std::fs::read_dir(&maildir_new)? {
            texts.push(std::fs::read_to_string(entry?.path())?);
        }
        Ok(texts)
    })
    .await??;
    ensure!(mails.len() == 1, "{} mails in the sink", mails.len());
    let mail = &mails[0];
    for expected in [
        "Subject: disk full",
        "From: squall@example.com",
        "ops@example.com",
        "lead@example.com",
        "Content-Type: text/html",
        "<b>web-1</b> is at 97%",
    ] {
        ensure!(mail.contains(expected), "no {expected:?} in:\n{mail}");
    }

    // The server is the operator's: a caller cannot point it elsewhere (and be
    // handed the password).
    let (status, refused) = server
        .post(
            "/api/v1/executions",
            &json!({"action": "core.sendmail", "parameters": {
                "to": "a@example.com", "body": "x", "smtp_host": "attacker.example"}})
            .to_string(),
        )
        .await?;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("immutable"), "{refused}");

    // Bad input is a clear failure, and nothing is sent.
    let view = run(
        &server,
        "core.sendmail",
        json!({"to": "not an address", "body": "x"}),
    )
    .await?;
    assert_eq!(view["status"], "failed", "{view}");
    assert!(
        view["error"]
            .as_str()
            .unwrap_or_default()
            .contains("to \"not an address\" is not an email address"),
        "{view}"
    );
    server.stop().await
}
