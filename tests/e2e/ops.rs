//! The operations verbs through real HTTP and the real CLI: rules enabled
//! and disabled at run time (by the API, and by the CLI on the database,
//! picked up by the running server), API keys listed and revoked, packs
//! with their load state, triggers fired by hand, chat aliases matched,
//! listed and executed without a chat, and every control action audited
//! with who did it and from where.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use squall_tests::{Backend, eventually, pack_dirs_env, squall_binary};

use crate::server::TestServer;

on_both_backends!(
    rules_are_enabled_and_disabled_at_run_time,
    api_keys_are_listed_and_revoked,
    packs_triggers_and_aliases_without_a_chat,
    control_actions_are_audited_with_their_source
);

const WAIT: Duration = Duration::from_secs(60);

/// A CLI config on the server's database (for the CLI's own, local, mode).
fn local_config(
    server: &TestServer,
    dir: &std::path::Path,
    packs: &str,
) -> Result<std::path::PathBuf> {
    let config = dir.join("squall.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = {:?}\ndata_dir = {:?}\npacks = {packs}\n",
            server.database_url(),
            dir.display().to_string(),
        ),
    )?;
    Ok(config)
}

/// Run the CLI; (success, stdout, stderr). It runs on a blocking thread:
/// this test's runtime also serves the API the CLI calls.
async fn cli(args: &[&str], envs: &[(&str, &str)]) -> Result<(bool, String, String)> {
    let mut command = Command::new(squall_binary()?);
    command
        .args(args)
        .env_remove("SQUALL_SERVER")
        .env_remove("SQUALL_API_KEY");
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || command.output()).await??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

async fn remote(server: &TestServer, args: &[&str]) -> Result<(bool, String, String)> {
    let mut all = vec!["--server", server.base.as_str()];
    all.extend_from_slice(args);
    cli(&all, &[("SQUALL_API_KEY", server.key.as_str())]).await
}

async fn webhook_status(server: &TestServer) -> Result<u16> {
    Ok(server
        .post("/api/v1/webhooks/typed", &json!({"count": 1}).to_string())
        .await?
        .0)
}

async fn audit(server: &TestServer, query: &str) -> Result<Vec<Value>> {
    let (status, rows) = server.get(&format!("/api/v1/audit{query}")).await?;
    ensure!(status == 200, "audit answered {status}: {rows}");
    Ok(rows.as_array().cloned().unwrap_or_default())
}

async fn rules_are_enabled_and_disabled_at_run_time(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    assert_eq!(webhook_status(&server).await?, 202);

    let (status, answer) = server
        .post("/api/v1/rules/testing.typed/disable", "")
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["was_enabled"], true);
    assert_eq!(
        webhook_status(&server).await?,
        404,
        "a disabled rule listens no more"
    );
    let (_, rules) = server.get("/api/v1/rules").await?;
    let typed = rules
        .as_array()
        .and_then(|r| r.iter().find(|r| r["ref"] == "testing.typed"))
        .context("the rule is still listed")?;
    assert_eq!(typed["enabled"], false);

    // The CLI through the server enables it again.
    let (ok, out, err) = remote(&server, &["rule", "enable", "testing.typed"]).await?;
    ensure!(ok, "{err}");
    ensure!(out.contains("testing.typed enabled"), "{out}");
    assert_eq!(webhook_status(&server).await?, 202);

    // The CLI on the database: the running server follows the stored state.
    let dir = tempfile::tempdir()?;
    let config = local_config(&server, dir.path(), &pack_dirs_env())?;
    let config = config.display().to_string();
    let (ok, _, err) = cli(
        &["--config", &config, "rule", "disable", "testing.typed"],
        &[],
    )
    .await?;
    ensure!(ok, "{err}");
    eventually(WAIT, "the server to follow the disabled rule", || async {
        Ok((webhook_status(&server).await? == 404).then_some(()))
    })
    .await?;
    let (ok, out, _) = cli(&["--config", &config, "rule", "list"], &[]).await?;
    ensure!(ok);
    ensure!(
        out.lines()
            .any(|l| l.starts_with("testing.typed ") && l.contains("false")),
        "{out}"
    );

    // Unknown rules are refused clearly, with the JSON error body.
    let (status, body) = server.post("/api/v1/rules/testing.nope/enable", "").await?;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (ok, _, err) = remote(&server, &["rule", "disable", "testing.nope"]).await?;
    ensure!(!ok && err.contains("no rule testing.nope"), "{err}");

    let rows = audit(&server, "?kind=rule&subject=testing.typed").await?;
    let seen: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or("").to_owned(),
                r["actor"].as_str().unwrap_or("").to_owned(),
                r["detail"]["source"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].0, "rule.disable");
    ensure!(
        seen[0].1.starts_with("cli:") && seen[0].2 == "cli",
        "{seen:?}"
    );
    assert_eq!(
        seen[1],
        ("rule.enable".into(), "admin".into(), "api".into())
    );
    assert_eq!(
        seen[2],
        ("rule.disable".into(), "admin".into(), "api".into())
    );
    server.stop().await
}

async fn api_keys_are_listed_and_revoked(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let (id, key) = server.engine.store.create_api_key("ci-bot").await?;
    let with_key = |k: &str| {
        server
            .http
            .get(server.url("/api/v1/executions"))
            .header("St2-Api-Key", k)
            .send()
    };
    assert_eq!(with_key(&key).await?.status().as_u16(), 200);

    let (status, keys) = server.get("/api/v1/apikeys").await?;
    assert_eq!(status, 200);
    let listed = keys
        .as_array()
        .and_then(|k| k.iter().find(|k| k["id"] == id.as_str()))
        .context("the new key is listed")?;
    assert_eq!(listed["name"], "ci-bot");
    assert_eq!(listed["enabled"], true);
    ensure!(
        !keys.to_string().contains(&key) && !keys.to_string().contains("hash"),
        "keys or their hashes must never be listed: {keys}"
    );
    let (ok, out, err) = remote(&server, &["apikey", "list"]).await?;
    ensure!(
        ok && out.contains("ci-bot") && out.contains("enabled"),
        "{out}{err}"
    );

    let (ok, out, err) = remote(&server, &["apikey", "revoke", "ci-bot"]).await?;
    ensure!(ok, "{err}");
    ensure!(out.contains(&id) && out.contains("revoked"), "{out}");
    let refused = with_key(&key).await?;
    assert_eq!(
        refused.status().as_u16(),
        401,
        "a revoked key stops working at once"
    );
    let body: Value = refused.json().await?;
    assert_eq!(body["error"], "unauthorized");
    let again = server
        .http
        .delete(server.url("/api/v1/apikeys/ci-bot"))
        .header("St2-Api-Key", &server.key)
        .send()
        .await?;
    assert_eq!(again.status().as_u16(), 404, "nothing left to revoke");
    let rows = audit(&server, &format!("?kind=apikey&subject={id}")).await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["actor"], "admin");
    server.stop().await
}

async fn packs_triggers_and_aliases_without_a_chat(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let (status, packs) = server.get("/api/v1/packs").await?;
    assert_eq!(status, 200);
    let find = |name: &str| {
        packs
            .as_array()
            .and_then(|p| p.iter().find(|p| p["ref"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(find("core")["state"], "loaded");
    ensure!(
        find("testing")["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("testing")),
        "{packs}"
    );
    ensure!(find("testing")["actions"].as_u64() > Some(0));

    // Locally, a broken pack is listed as refused with its errors, beside
    // the others, and the command fails.
    let dir = tempfile::tempdir()?;
    let broken = dir.path().join("extra/broken");
    std::fs::create_dir_all(broken.join("actions"))?;
    std::fs::write(broken.join("pack.yaml"), "name: broken\nversion: 1.0.0\n")?;
    std::fs::write(
        broken.join("actions/bad.yaml"),
        "name: bad\nrunner_type: no-such-runner\nentry_point: x.sh\n",
    )?;
    // Only the broken pack's directory is configured: core and chatops
    // come built into the binary.
    let packs_env = format!("[\"{}\"]", dir.path().join("extra").display());
    let config = local_config(&server, dir.path(), &packs_env)?;
    let (ok, out, _) = cli(
        &["--config", &config.display().to_string(), "pack", "list"],
        &[],
    )
    .await?;
    ensure!(!ok, "a refused pack makes `pack list` fail");
    ensure!(
        out.lines()
            .any(|l| l.starts_with("broken") && l.contains("refused")),
        "{out}"
    );
    ensure!(out.contains("no-such-runner"), "{out}");
    ensure!(
        out.lines()
            .any(|l| l.starts_with("core") && l.contains("loaded") && l.contains("built-in")),
        "{out}"
    );

    // A trigger fired from the CLI through the server.
    let (ok, out, err) = remote(
        &server,
        &[
            "trigger",
            "fire",
            "squall.alert",
            "--payload",
            "{\"labels\": {\"alertname\": \"Manual\"}}",
        ],
    )
    .await?;
    ensure!(ok, "{err}");
    let instance = out
        .split_whitespace()
        .last()
        .context("a trigger instance id")?;
    let stored = server.engine.store.get_trigger_instance(instance).await?;
    let stored = stored.context("the trigger instance is stored")?;
    assert_eq!(stored.trigger, "squall.alert");
    let (ok, _, err) = remote(
        &server,
        &["trigger", "fire", "squall.alert", "--payload", "{"],
    )
    .await?;
    ensure!(!ok && err.contains("--payload is not valid JSON"), "{err}");

    // Aliases: match, help and execute over the API and the CLI.
    let (status, matched) = server
        .post(
            "/api/v1/actionalias/match",
            &json!({"command": "say hello there"}).to_string(),
        )
        .await?;
    assert_eq!(status, 200, "{matched}");
    assert_eq!(matched["alias"], "testing.say");
    assert_eq!(matched["action"], "testing.say");
    assert_eq!(matched["parameters"]["msg"], "hello there");
    let (status, none) = server
        .post(
            "/api/v1/actionalias/match",
            &json!({"command": "fly to the moon"}).to_string(),
        )
        .await?;
    assert_eq!((status, none["error"].as_str()), (404, Some("no_match")));
    let (status, bad) = server
        .post(
            "/api/v1/actionalias/match",
            &json!({"text": "say hi"}).to_string(),
        )
        .await?;
    assert_eq!((status, bad["error"].as_str()), (400, Some("bad_request")));
    let (status, help) = server.get("/api/v1/actionalias/help?filter=say").await?;
    assert_eq!(status, 200);
    ensure!(
        help.as_array()
            .is_some_and(|h| h.iter().any(|e| e["alias"] == "testing.say")),
        "{help}"
    );
    let (ok, out, err) = remote(&server, &["alias", "list", "say"]).await?;
    ensure!(ok && out.contains("say"), "{out}{err}");

    let (status, started) = server
        .post(
            "/api/v1/aliasexecution",
            &json!({"command": "say from the api"}).to_string(),
        )
        .await?;
    assert_eq!(status, 201, "{started}");
    let id = started["executions"][0].as_str().context("an execution")?;
    let done = server.engine.wait_for(id, WAIT).await?;
    assert_eq!(done.status, "succeeded");
    ensure!(
        done.stdout
            .as_deref()
            .unwrap_or("")
            .contains("from the api")
    );
    let (ok, out, err) =
        remote(&server, &["alias", "execute", "say from the cli", "--json"]).await?;
    ensure!(ok, "{err}");
    let views: Value = serde_json::from_str(&out)?;
    assert_eq!(views[0]["status"], "succeeded");
    ensure!(
        views[0]["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("from the cli"),
        "{out}"
    );
    let (ok, out, _) = remote(&server, &["alias", "match", "!say matched remotely"]).await?;
    ensure!(ok && out.contains("\"matched remotely\""), "{out}");
    server.stop().await
}

async fn control_actions_are_audited_with_their_source(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let start = |cmd: &'static str| {
        let server = &server;
        async move {
            let (status, created) = server
                .post(
                    "/api/v1/executions",
                    &json!({"action": "core.local", "parameters": {"cmd": cmd}}).to_string(),
                )
                .await?;
            ensure!(status == 201, "{created}");
            anyhow::Ok(created["id"].as_str().context("id")?.to_owned())
        }
    };
    // Through the API: cancel and rerun.
    let slow = start("sleep 30").await?;
    let (status, _) = server
        .post(&format!("/api/v1/executions/{slow}/cancel"), "")
        .await?;
    assert_eq!(status, 200);
    server.engine.wait_for(&slow, WAIT).await?;
    let quick = start("true").await?;
    server.engine.wait_for(&quick, WAIT).await?;
    let (status, _) = server
        .post(&format!("/api/v1/executions/{quick}/rerun"), "")
        .await?;
    assert_eq!(status, 201);
    // Through the CLI on the database: cancel.
    let dir = tempfile::tempdir()?;
    let config = local_config(&server, dir.path(), &pack_dirs_env())?;
    let other = start("sleep 30").await?;
    let (ok, _, err) = cli(
        &[
            "--config",
            &config.display().to_string(),
            "execution",
            "cancel",
            &other,
        ],
        &[],
    )
    .await?;
    ensure!(ok, "{err}");
    server.engine.wait_for(&other, WAIT).await?;

    let api = audit(&server, &format!("?subject={slow}&kind=execution.cancel")).await?;
    assert_eq!(api.len(), 1, "{api:?}");
    assert_eq!(api[0]["actor"], "admin");
    assert_eq!(api[0]["detail"]["source"], "api");
    let rerun = audit(&server, &format!("?subject={quick}&kind=execution.rerun")).await?;
    assert_eq!(rerun.len(), 1, "{rerun:?}");
    let local = audit(&server, &format!("?subject={other}&kind=execution")).await?;
    ensure!(
        local.iter().any(|r| r["kind"] == "execution.cancel"
            && r["detail"]["source"] == "cli"
            && r["actor"].as_str().is_some_and(|a| a.starts_with("cli:"))),
        "{local:?}"
    );
    // The CLI lists with filters too, through the server.
    let (ok, out, err) = remote(
        &server,
        &[
            "audit",
            "list",
            "--kind",
            "execution.cancel",
            "--since",
            "1h",
        ],
    )
    .await?;
    ensure!(ok, "{err}");
    ensure!(out.contains(&slow) && out.contains(&other), "{out}");
    ensure!(!out.contains(&quick), "{out}");
    let (status, bad) = server.get("/api/v1/audit?since=yesterday").await?;
    assert_eq!((status, bad["error"].as_str()), (400, Some("bad_query")));
    server.stop().await
}
