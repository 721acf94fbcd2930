//! The OpenAPI document (`/api/v1/openapi.json`) through real HTTP: it covers
//! every route with its answers and auth, every error answer is the JSON
//! error body, and schemathesis (PyPI) generating requests from the document
//! finds no 5xx, no dropped connection and no answer the document does not
//! describe.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use squall_tests::Backend;

use crate::server::TestServer;

on_both_backends!(
    the_document_covers_every_route_and_errors_are_json,
    schemathesis_finds_nothing_wrong
);

/// Every route squall serves, as the document must list it.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/webhooks/st2"),
    ("post", "/api/v1/webhooks/{name}"),
    ("post", "/api/v1/alerts/{source}"),
    ("get", "/api/v1/executions"),
    ("post", "/api/v1/executions"),
    ("get", "/api/v1/executions/{id}"),
    ("post", "/api/v1/executions/{id}/cancel"),
    ("post", "/api/v1/executions/{id}/pause"),
    ("post", "/api/v1/executions/{id}/resume"),
    ("post", "/api/v1/executions/{id}/rerun"),
    ("get", "/api/v1/inquiries"),
    ("get", "/api/v1/inquiries/{id}"),
    ("post", "/api/v1/inquiries/{id}/respond"),
    ("get", "/api/v1/rules"),
    ("post", "/api/v1/rules/{reference}/enable"),
    ("post", "/api/v1/rules/{reference}/disable"),
    ("get", "/api/v1/packs"),
    ("get", "/api/v1/actions"),
    ("get", "/api/v1/apikeys"),
    ("delete", "/api/v1/apikeys/{key}"),
    ("get", "/api/v1/audit"),
    ("post", "/api/v1/actionalias/match"),
    ("get", "/api/v1/actionalias/help"),
    ("post", "/api/v1/aliasexecution"),
    ("get", "/api/v1/stream"),
    ("get", "/api/v1/keys"),
    ("get", "/api/v1/keys/{name}"),
    ("put", "/api/v1/keys/{name}"),
    ("delete", "/api/v1/keys/{name}"),
];

/// Routes a caller reaches without an API key.
const PUBLIC: &[&str] = &["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"];

async fn the_document_covers_every_route_and_errors_are_json(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    // The document is public: tools fetch it before they hold a key.
    let response = server
        .http
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    let doc: Value = response.json().await?;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "squall");

    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().context("paths")? {
        for (method, operation) in item.as_object().context("path item")? {
            listed.insert((method.clone(), path.clone()));
            check_operation(method, path, operation)?;
        }
    }
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        listed, expected,
        "the document lists other routes than squall serves"
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["type"], "apiKey");
    assert_eq!(schemes["api_key"]["name"], "St2-Api-Key");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    for name in ["ErrorBody", "ExecutionView", "ExecutionDetail", "KvView"] {
        ensure!(
            doc["components"]["schemas"].get(name).is_some(),
            "schema {name} is missing"
        );
    }

    // Answers axum makes itself carry the JSON error body too.
    let response = server
        .http
        .delete(server.url("/api/v1/rules"))
        .header("St2-Api-Key", &server.key)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 405);
    let allow = response
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(allow, "GET,HEAD");
    let body: Value = response.json().await?;
    assert_eq!(body["error"], "method_not_allowed");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("Allow"),
        "{body}"
    );

    let too_big = "x".repeat(2 * 1024 * 1024);
    let (status, body) = server.post("/api/v1/webhooks/deploy", &too_big).await?;
    assert_eq!(status, 413);
    assert_eq!(body["error"], "payload_too_large");

    let (status, body) = server.get("/api/v1/no/such/thing").await?;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");

    // A struct is read from an object only (serde would take an array).
    let (status, body) = server
        .post("/api/v1/executions", r#"["core.local", {"cmd": "true"}]"#)
        .await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("an array, not an object"),
        "{body}"
    );
    // An unknown action is a missing resource.
    let (status, body) = server
        .post("/api/v1/executions", r#"{"action": "nope.nothing"}"#)
        .await?;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "unknown_action");

    // A time to live that would overflow the clock is refused, not a crash.
    let response = server
        .http
        .put(server.url("/api/v1/keys/far"))
        .header("St2-Api-Key", &server.key)
        .json(&json!({"value": 1, "ttl": 9_223_372_036_854_775_806_u64}))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await?;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("ttl must be at most"),
        "{body}"
    );
    // `60.0` is a whole number of seconds as JSON writes it.
    let response = server
        .http
        .put(server.url("/api/v1/keys/soon"))
        .header("St2-Api-Key", &server.key)
        .json(&json!({"value": 1, "ttl": 60.0}))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    Ok(())
}

/// One operation: auth where it must be, and every error answer documented
/// as the JSON error body.
fn check_operation(method: &str, path: &str, operation: &Value) -> Result<()> {
    let secured = operation["security"].as_array().is_some_and(|s| {
        s.iter()
            .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
    });
    let public = PUBLIC.contains(&path);
    ensure!(
        secured != public,
        "{method} {path}: security {:?}",
        operation["security"]
    );
    let responses = operation["responses"].as_object().context("responses")?;
    ensure!(
        responses.keys().any(|code| code.starts_with('2')),
        "{method} {path} documents no success"
    );
    if secured {
        ensure!(
            responses.contains_key("401"),
            "{method} {path}: 401 undocumented"
        );
    }
    for (code, answer) in responses {
        if !code.starts_with('4') {
            continue;
        }
        let schema = &answer["content"]["application/json"]["schema"]["$ref"];
        ensure!(
            schema == "#/components/schemas/ErrorBody",
            "{method} {path} {code}: {answer}"
        );
    }
    Ok(())
}

/// The schemathesis command: `$SCHEMATHESIS`, else the virtualenv
/// `scripts/testenv/schemathesis.sh` installs.
fn schemathesis() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return Ok(PathBuf::from(path));
    }
    let cache = std::env::var_os("SQUALL_TESTENV_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/squall-testenv"))
        })
        .context("neither SQUALL_TESTENV_CACHE nor HOME is set")?;
    let path = cache.join("schemathesis-venv/bin/schemathesis");
    ensure!(
        path.is_file(),
        "schemathesis is not installed at {}: run `bash scripts/testenv/schemathesis.sh` \
         (scripts/test.sh does it) or set SCHEMATHESIS to its path",
        path.display()
    );
    Ok(path)
}

async fn schemathesis_finds_nothing_wrong(backend: Backend) -> Result<()> {
    let program = schemathesis()?;
    let server = TestServer::start(backend).await?;
    // The only key the run may revoke (see schemathesis.toml).
    server.engine.store.create_api_key("decoy").await?;
    // Something to list: an execution, a pair, a secret.
    let (status, created) = server
        .post(
            "/api/v1/executions",
            &json!({"action": "core.local", "parameters": {"cmd": "echo seeded"}}).to_string(),
        )
        .await?;
    ensure!(status == 201, "{created}");
    let id = created["id"].as_str().context("id")?;
    server.engine.wait_for(id, Duration::from_secs(60)).await?;
    for body in [
        json!({"value": {"a": 1}}),
        json!({"value": "hunter2", "secret": true}),
    ] {
        let name = if body["secret"] == true {
            "token"
        } else {
            "plain"
        };
        let response = server
            .http
            .put(server.url(&format!("/api/v1/keys/{name}")))
            .header("St2-Api-Key", &server.key)
            .json(&body)
            .send()
            .await?;
        ensure!(response.status().is_success(), "seeding key {name}");
    }

    let reports = tempfile::tempdir()?;
    // schemathesis keeps a cache (`.schemathesis/`) in its working directory:
    // a scratch one, not the checkout.
    let scratch = tempfile::tempdir()?;
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemathesis/schemathesis.toml"
    );
    // A pinned seed keeps CI repeatable; SCHEMATHESIS_SEED=random explores.
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261207".into());
    let mut command = tokio::process::Command::new(&program);
    command
        .arg("--no-color")
        .arg("--config-file")
        .arg(config)
        .arg("run")
        .arg(server.url("/api/v1/openapi.json"))
        .arg("--report")
        .arg("ndjson")
        .arg("--report-dir")
        .arg(reports.path())
        .current_dir(scratch.path())
        .env("SQUALL_API_KEY", &server.key)
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    if seed != "random" {
        command.arg("--seed").arg(&seed);
    }
    let output = command
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let tail: Vec<&str> = stdout.lines().rev().take(200).collect();
        bail!(
            "schemathesis found problems ({}):\n{}\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // The run must have reached squall's logic, not only its key check: every
    // operation saw at least one answer other than 401, and many succeeded.
    let answers = recorded_answers(reports.path())?;
    ensure!(!answers.is_empty(), "the report holds no answers");
    let mut by_operation: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (operation, status) in &answers {
        by_operation
            .entry(operation.clone())
            .or_default()
            .insert(*status);
    }
    for (operation, statuses) in &by_operation {
        ensure!(
            statuses.iter().any(|s| *s != 401),
            "{operation} only ever answered 401: the run's key did not work"
        );
        ensure!(
            statuses.iter().all(|s| *s < 500),
            "{operation} answered {statuses:?}"
        );
    }
    let succeeded = answers
        .iter()
        .filter(|(_, s)| (200..300).contains(s))
        .count();
    ensure!(
        succeeded >= 100,
        "only {succeeded} of {} requests succeeded",
        answers.len()
    );
    // The run's own key survived it.
    let (status, _) = server.get("/api/v1/apikeys").await?;
    assert_eq!(status, 200);
    Ok(())
}

/// `(METHOD path, status)` of every answer in the ndjson report.
fn recorded_answers(dir: &std::path::Path) -> Result<Vec<(String, u16)>> {
    let mut answers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "ndjson") {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let event: Value = serde_json::from_str(line)
                .with_context(|| format!("a report line is not JSON: {line:.200}"))?;
            collect_answers(&event, &mut answers);
        }
    }
    Ok(answers)
}

fn collect_answers(value: &Value, out: &mut Vec<(String, u16)>) {
    match value {
        Value::Object(map) => {
            if let (Some(request), Some(response)) = (map.get("request"), map.get("response"))
                && let (Some(method), Some(uri), Some(status)) = (
                    request["method"].as_str(),
                    request["uri"].as_str(),
                    response["status_code"].as_u64(),
                )
            {
                let path = uri
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                    .unwrap_or(uri);
                let path = path.split('?').next().unwrap_or(path);
                // Only documented operations (checks also try others).
                if let Some(route) = route_of(&method.to_ascii_lowercase(), path) {
                    out.push((
                        format!("{method} {route}"),
                        u16::try_from(status).unwrap_or(0),
                    ));
                }
            }
            for v in map.values() {
                collect_answers(v, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                collect_answers(v, out);
            }
        }
        _ => {}
    }
}

/// The documented route a request went to (ids folded), if any.
fn route_of(method: &str, path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .filter(|(m, _)| *m == method)
        .map(|(_, route)| *route)
        .find(|route| {
            let parts: Vec<&str> = route.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.starts_with('{') || p == s)
        })
}
