//! The key-value datastore through real HTTP and the real CLI: secrets
//! encrypted at rest, masked everywhere but a permitted `--decrypt`, read by
//! action defaults and rule parameters (`st2kv`), and a key rotation killed
//! half-way that leaves every secret readable.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use squall_tests::{Backend, eventually, pack_dirs_env, squall_binary};

use crate::server::TestServer;

const SECRET: &str = "kv-SECRET-7f3a9";

on_both_backends!(
    secrets_are_sealed_masked_and_reach_actions,
    rotation_killed_half_way_loses_nothing
);

/// A config file for the CLI on the server's database and key file.
fn cli_config(server: &TestServer, dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let config = dir.join("squall.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = {:?}\ndata_dir = {:?}\npacks = {}\n[datastore]\nkey_file = {:?}\n",
            server.database_url(),
            dir.display().to_string(),
            pack_dirs_env(),
            server
                .data_dir()
                .join("datastore.key")
                .display()
                .to_string(),
        ),
    )?;
    Ok(config)
}

fn cli(config: &std::path::Path, args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(squall_binary()?)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("SQUALL_LOG", "debug")
        .env_remove("SQUALL_SERVER")
        .env_remove("SQUALL_API_KEY")
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

async fn put(server: &TestServer, key: &str, name: &str, body: &Value) -> Result<(u16, Value)> {
    let response = server
        .http
        .put(server.url(&format!("/api/v1/keys/{name}")))
        .header("St2-Api-Key", key)
        .json(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn get_as(server: &TestServer, key: &str, path: &str) -> Result<(u16, Value)> {
    let response = server
        .http
        .get(server.url(path))
        .header("St2-Api-Key", key)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// Every byte of the database: the SQLite files, or PostgreSQL's rows as text.
async fn database_text(server: &TestServer) -> Result<String> {
    let url = server.database_url();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        // Read by another process: closing a descriptor of a database file
        // drops every POSIX lock this process holds on it (SQLite's "how to
        // corrupt your database", 2.2), and the server in this process
        // relies on those locks while the CLI tests open the same file.
        let mut text = String::new();
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{path}{suffix}");
            if !std::path::Path::new(&file).exists() {
                continue;
            }
            let out = tokio::process::Command::new("cat")
                .arg(&file)
                .output()
                .await?;
            ensure!(out.status.success(), "cat {file} failed");
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        return Ok(text);
    }
    postgres_rows(url).await
}

/// PostgreSQL: every table's rows as text (`pg_dump` without the binary).
async fn postgres_rows(url: &str) -> Result<String> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(url).await?;
    let tables = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
        ))
        .await?;
    let mut text = String::new();
    for row in tables {
        let table: String = row.try_get("", "tablename")?;
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT row_to_json(t)::text AS j FROM \"{table}\" t"),
            ))
            .await?;
        for row in rows {
            let line: String = row.try_get("", "j")?;
            text.push_str(&line);
            text.push('\n');
        }
    }
    Ok(text)
}

fn rbac_granting_decrypt(dir: &std::path::Path) -> Result<()> {
    std::fs::write(
        dir.join("roles.yaml"),
        "default_role: guest\nroles:\n  guest: {grants: []}\n  keyholder: {grants: [\"key:read\", \"key:decrypt\"]}\nusers:\n  ops:\n    roles: [keyholder]\n    identities: [\"api:admin\"]\n",
    )?;
    Ok(())
}

async fn secrets_are_sealed_masked_and_reach_actions(backend: Backend) -> Result<()> {
    let rbac = tempfile::tempdir()?;
    rbac_granting_decrypt(rbac.path())?;
    let rbac_dir = rbac.path().to_path_buf();
    let server = TestServer::start_with(backend, |c| c.chat.rbac_dir = rbac_dir).await?;
    let admin = server.key.clone();
    let (_, reader) = server.engine.store.create_api_key("reader").await?;

    // Set a secret, a plain nested value and a per-user value over the API.
    let (status, body) = put(
        &server,
        &admin,
        "api_token",
        &json!({"value": SECRET, "secret": true}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "********", "{body}");
    assert_eq!(body["secret"], true);
    let (status, body) = put(
        &server,
        &admin,
        "deploy.region",
        &json!({"value": "eu-west-1"}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = put(
        &server,
        &admin,
        "favourite",
        &json!({"value": "tea", "scope": "user:admin"}),
    )
    .await?;
    assert_eq!(status, 200);

    // Bad input is refused with the JSON error body.
    let (status, body) = put(&server, &admin, "bad%20name", &json!({"value": 1})).await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("not valid"),
        "{body}"
    );
    let (status, body) = put(
        &server,
        &admin,
        "x",
        &json!({"value": 1, "scope": "global"}),
    )
    .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = put(&server, &admin, "x", &json!({"valu": 1})).await?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.get("/api/v1/keys/missing").await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );

    // Unreadable in the database.
    let stored = database_text(&server).await?;
    ensure!(
        stored.contains("eu-west-1"),
        "the database text is not what it seems"
    );
    assert!(
        !stored.contains(SECRET),
        "the secret is readable in the database"
    );

    // Masked in the API; decrypted only for a key that holds key:decrypt.
    let (_, list) = server.get("/api/v1/keys").await?;
    assert!(!list.to_string().contains(SECRET), "{list}");
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
    let (_, one) = server.get("/api/v1/keys/api_token").await?;
    assert_eq!(one["value"], "********");
    let (status, body) = get_as(&server, &reader, "/api/v1/keys/api_token?decrypt=true").await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("key:decrypt"),
        "{body}"
    );
    assert!(!body.to_string().contains(SECRET));
    let (status, body) = get_as(&server, &admin, "/api/v1/keys/api_token?decrypt=true").await?;
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some(SECRET)),
        "{body}"
    );

    // An action's defaults read the datastore; the secret reaches the
    // process and is masked in every view of the execution.
    let (status, created) = server
        .post(
            "/api/v1/executions",
            &json!({"action": "testing.kv_echo"}).to_string(),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    assert!(!created.to_string().contains(SECRET), "{created}");
    let id = created["id"].as_str().context("id")?.to_owned();
    server.engine.wait_for(&id, Duration::from_secs(30)).await?;
    let (_, view) = server.get(&format!("/api/v1/executions/{id}")).await?;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(
        view["stdout"], "token=******** region=eu-west-1 favourite=tea\n",
        "the process got the real token (its length shows in no view), the masking hid it: {view}"
    );
    assert!(!view.to_string().contains(SECRET), "{view}");
    let (_, listed) = server
        .get("/api/v1/executions?action=testing.kv_echo")
        .await?;
    assert!(!listed.to_string().contains(SECRET), "{listed}");

    // A rule's parameters read it too, beside the trigger's data.
    let (status, _) = server
        .post("/api/v1/webhooks/kv", r#"{"suffix": "b"}"#)
        .await?;
    assert_eq!(status, 202);
    let ruled = eventually(Duration::from_secs(30), "the rule's execution", || async {
        let (_, list) = server
            .get("/api/v1/executions?action=testing.kv_echo&status=succeeded")
            .await?;
        Ok(list.as_array().and_then(|l| {
            l.iter()
                .find(|e| e["context"]["rule"] == "testing.kv")
                .cloned()
        }))
    })
    .await?;
    let ruled_id = ruled["id"].as_str().context("id")?;
    let (_, view) = server
        .get(&format!("/api/v1/executions/{ruled_id}"))
        .await?;
    assert_eq!(
        view["stdout"], "token=******** region=eu-west-1-b favourite=\n",
        "{view}"
    );

    // The audit: who set what, who decrypted; never a value.
    let audit = server
        .engine
        .store
        .audit_for("key:system/api_token")
        .await?;
    let kinds: Vec<&str> = audit.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["key.set", "key.decrypt"], "{audit:?}");
    for subject in ["key:system/api_token", id.as_str()] {
        let text = format!("{:?}", server.engine.store.audit_for(subject).await?);
        assert!(!text.contains(SECRET), "audit of {subject}: {text}");
    }

    // The CLI on the server's machine: masked, decrypted on request; its
    // debug log never holds the value, not even while running the action.
    let dir = tempfile::tempdir()?;
    let config = cli_config(&server, dir.path())?;
    let (ok, out, err) = cli(&config, &["key", "list"])?;
    assert!(ok, "{err}");
    assert!(
        out.contains("system/api_token = ********  (secret)"),
        "{out}"
    );
    assert!(out.contains("user:admin/favourite = tea"), "{out}");
    assert!(!format!("{out}{err}").contains(SECRET), "{out}{err}");
    let (ok, out, err) = cli(&config, &["key", "get", "api_token", "--decrypt"])?;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("system/api_token = {SECRET}  (secret)"));
    let (ok, out, err) = cli(&config, &["run", "testing.kv_echo", "--json"])?;
    assert!(ok, "{out}{err}");
    let run: Value = serde_json::from_str(&out)?;
    assert_eq!(
        run["stdout"], "token=******** region=eu-west-1 favourite=\n",
        "{run}"
    );
    assert!(
        !format!("{out}{err}").contains(SECRET),
        "the CLI's output or log:\n{out}{err}"
    );
    // JSON logs (`log.format = "json"`): every line an object, no secret.
    let out = Command::new(squall_binary()?)
        .arg("--config")
        .arg(&config)
        .args(["run", "testing.kv_echo"])
        .env("SQUALL_LOG", "debug")
        .env("SQUALL_LOG__FORMAT", "json")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no debug log at all");
    for line in &lines {
        let event: Value = serde_json::from_str(line)
            .with_context(|| format!("a log line is not JSON: {line}"))?;
        assert!(
            event["level"].is_string() && event["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(!err.contains(SECRET), "{err}");
    // Over HTTP, the reader key may not decrypt.
    // (tokio's Command: the server answering it runs on this test's thread.)
    let out = tokio::process::Command::new(squall_binary()?)
        .args([
            "--server",
            &server.base,
            "--api-key",
            &reader,
            "key",
            "get",
            "api_token",
            "--decrypt",
        ])
        .output()
        .await?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("key:decrypt"));

    // Delete, and expiry.
    let deleted = server
        .http
        .delete(server.url("/api/v1/keys/deploy.region"))
        .header("St2-Api-Key", &admin)
        .send()
        .await?;
    let code = deleted.status().as_u16();
    assert_eq!(code, 204, "{}", deleted.text().await?);
    let (status, body) = server.get("/api/v1/keys/deploy.region").await?;
    assert_eq!(status, 404, "{body}");
    let (status, _) = put(&server, &admin, "brief", &json!({"value": 1, "ttl": 1})).await?;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(30), "the pair to expire", || async {
        let (status, _) = server.get("/api/v1/keys/brief").await?;
        Ok((status == 404).then_some(()))
    })
    .await?;
    server.stop().await
}

const ROTATED: usize = 1500;

async fn rotation_killed_half_way_loses_nothing(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let key_file = server.data_dir().join("datastore.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key file is readable by others");
    }
    let old_key = std::fs::read_to_string(&key_file)?;
    for i in 0..ROTATED {
        server
            .engine
            .datastore
            .set(&squall_engine::datastore::KvSet {
                scope: "system".into(),
                name: format!("s{i:04}"),
                value: json!(format!("{SECRET}-{i}")),
                secret: true,
                ttl: None,
            })
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let config = cli_config(&server, dir.path())?;

    // Start a rotation and kill it once it has moved a few rows.
    let mut child = Command::new(squall_binary()?)
        .arg("--config")
        .arg(&config)
        .args(["key", "rotate"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut moved_when_killed = 0;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if let Some(n) = line.strip_prefix("re-encrypted ") {
            moved_when_killed = n.trim().parse()?;
            if moved_when_killed >= 20 {
                break;
            }
        }
    }
    // `Child::kill` is SIGKILL: no chance to finish the row or clean up.
    child.kill()?;
    child.wait()?;
    assert!(
        moved_when_killed >= 20,
        "the rotation never reported progress"
    );
    assert!(
        server.data_dir().join("datastore.key.new").exists(),
        "the new key was not written before rows moved"
    );

    // Half-way: rows under both keys, every one readable (the CLI opens
    // them with the key files alone).
    let (ok, out, err) = cli(&config, &["key", "list", "--decrypt", "--json"])?;
    assert!(ok, "{err}");
    let pairs: Vec<Value> = serde_json::from_str(&out)?;
    assert_eq!(pairs.len(), ROTATED);
    for (i, pair) in pairs.iter().enumerate() {
        assert_eq!(pair["value"], json!(format!("{SECRET}-{i}")), "{pair}");
    }
    assert_eq!(
        std::fs::read_to_string(&key_file)?,
        old_key,
        "the key file swapped before the rows moved"
    );

    // Run again: it carries on, and finishes.
    let (ok, out, err) = cli(&config, &["key", "rotate"])?;
    assert!(ok, "{out}{err}");
    let moved_second: usize = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .context("count")?;
    assert!(moved_second < ROTATED, "the second run started over: {out}");
    assert_ne!(
        std::fs::read_to_string(&key_file)?,
        old_key,
        "the key did not change"
    );
    let previous = server.data_dir().join("datastore.key.previous");
    assert_eq!(std::fs::read_to_string(previous)?, old_key);

    // Everything readable with the new key, by the CLI and by the running
    // server (which started with the old key).
    let (ok, out, err) = cli(&config, &["key", "list", "--decrypt", "--json"])?;
    assert!(ok, "{err}");
    let pairs: Vec<Value> = serde_json::from_str(&out)?;
    assert_eq!(pairs.len(), ROTATED);
    assert!(
        pairs
            .iter()
            .enumerate()
            .all(|(i, p)| p["value"] == json!(format!("{SECRET}-{i}")))
    );
    let view = server.engine.datastore.get("system", "s0007", true).await?;
    assert_eq!(view.value, json!(format!("{SECRET}-7")));
    server.stop().await
}
