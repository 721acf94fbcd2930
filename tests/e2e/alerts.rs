//! Alert receivers, signed webhooks, timers, and the remediation loop with a
//! real Prometheus Alertmanager.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use squall::config::{ChatSection, Sensitive};
use squall::signatures::{HookAuth, Scheme, sign};
use squall_tests::{Alertmanager, Backend, eventually, repo_root};

use crate::chat::{Session, wait_output};
use crate::server::TestServer;

on_both_backends!(
    receivers_store_one_trigger_per_alert_and_drop_repeats,
    signed_webhooks_accept_valid_signatures_and_refuse_bad_or_replayed_ones,
);

fn fixture(name: &str) -> Result<String> {
    Ok(std::fs::read_to_string(
        repo_root().join("tests/fixtures/alerts").join(name),
    )?)
}

async fn alerts_stored(server: &TestServer) -> Result<u64> {
    Ok(server
        .engine
        .store
        .count_trigger_instances_of("squall.alert")
        .await?)
}

async fn receivers_store_one_trigger_per_alert_and_drop_repeats(backend: Backend) -> Result<()> {
    let server = TestServer::start_with(backend, |c| {
        c.alerts.generic.alerts = "items".into();
        c.alerts.generic.name = "title".into();
        c.alerts.generic.status = "state".into();
    })
    .await?;
    let (status, body) = server
        .post(
            "/api/v1/alerts/alertmanager",
            &fixture("alertmanager-firing.json")?,
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["alerts"], 2);
    assert_eq!(
        body["trigger_instance_ids"].as_array().map(Vec::len),
        Some(2)
    );
    let first = body["trigger_instance_ids"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let stored = server
        .engine
        .store
        .get_trigger_instance(&first)
        .await?
        .context("stored")?;
    let payload: Value = serde_json::from_str(&stored.payload)?;
    assert_eq!(payload["source"], "alertmanager");
    assert_eq!(payload["name"], "DiskFull");
    assert_eq!(payload["status"], "firing");
    assert_eq!(payload["labels"]["instance"], "db1:9100");
    assert_eq!(payload["raw"]["fingerprint"], payload["fingerprint"]);

    // The same notification again: both alerts are repeats.
    let (_, body) = server
        .post(
            "/api/v1/alerts/alertmanager",
            &fixture("alertmanager-firing.json")?,
        )
        .await?;
    assert_eq!(
        (body["alerts"].clone(), body["deduplicated"].clone()),
        (json!(2), json!(2))
    );
    // Group still firing, db1 resolved: db1's resolve is news, db2 a repeat.
    let (_, body) = server
        .post(
            "/api/v1/alerts/alertmanager",
            &fixture("alertmanager-mixed.json")?,
        )
        .await?;
    assert_eq!(body["deduplicated"], 1);
    assert_eq!(alerts_stored(&server).await?, 3);

    let (status, body) = server
        .post("/api/v1/alerts/grafana", &fixture("grafana.json")?)
        .await?;
    assert_eq!((status, body["alerts"].clone()), (202, json!(2)));
    let (status, _) = server
        .post(
            "/api/v1/alerts/pagerduty",
            &fixture("pagerduty-triggered.json")?,
        )
        .await?;
    assert_eq!(status, 202);
    let (status, _) = server
        .post(
            "/api/v1/alerts/pagerduty",
            &fixture("pagerduty-resolved.json")?,
        )
        .await?;
    assert_eq!(status, 202);
    let (status, body) = server
        .post(
            "/api/v1/alerts/generic",
            r#"{"items": [{"title": "Queue backlog", "state": "alerting"}, {"title": "Disk", "state": "resolved"}]}"#,
        )
        .await?;
    assert_eq!((status, body["alerts"].clone()), (202, json!(2)));
    assert_eq!(alerts_stored(&server).await?, 9);

    // Bad input: a clear error and nothing stored.
    let (status, body) = server
        .post("/api/v1/alerts/alertmanager", r#"{"status": "firing"}"#)
        .await?;
    assert_eq!(status, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("\"alerts\" list"),
        "{body}"
    );
    let (status, body) = server.post("/api/v1/alerts/nagios", "{}").await?;
    assert_eq!(status, 404);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("alertmanager, grafana, pagerduty, generic")
    );
    let (status, _) = server
        .post("/api/v1/alerts/alertmanager", "{not json")
        .await?;
    assert_eq!(status, 400);
    let unauthenticated = reqwest::Client::new()
        .post(server.url("/api/v1/alerts/alertmanager"))
        .body(fixture("alertmanager-firing.json")?)
        .send()
        .await?;
    assert_eq!(unauthenticated.status().as_u16(), 401);
    assert_eq!(alerts_stored(&server).await?, 9);
    server.stop().await
}

fn auth(scheme: Scheme) -> HookAuth {
    HookAuth {
        auth: scheme,
        secret: Some(Sensitive("shared-secret".into())),
        tolerance_seconds: None,
    }
}

async fn signed_webhooks_accept_valid_signatures_and_refuse_bad_or_replayed_ones(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::start_with(backend, |c| {
        c.webhooks
            .insert("signed_github".into(), auth(Scheme::Github));
        c.webhooks
            .insert("signed_slack".into(), auth(Scheme::Slack));
        c.webhooks.insert("signed_hmac".into(), auth(Scheme::Hmac));
        c.alerts
            .receivers
            .insert("pagerduty".into(), auth(Scheme::Pagerduty));
    })
    .await?;
    let client = reqwest::Client::new();
    let stored = || async { server.engine.store.count_trigger_instances().await };
    let send = |path: &'static str, body: &'static str, headers: Vec<(&'static str, String)>| {
        let mut request = client
            .post(server.url(path))
            .header("Content-Type", "application/json")
            .body(body);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        async move { Ok::<u16, anyhow::Error>(request.send().await?.status().as_u16()) }
    };
    let body = r#"{"ref": "refs/heads/main"}"#;
    let before = stored().await?;

    // GitHub: valid, tampered, replayed (same delivery id).
    let sig = format!("sha256={}", sign("shared-secret", &[body.as_bytes()]));
    let gh = |sig: String| {
        vec![
            ("X-Hub-Signature-256", sig),
            (
                "X-GitHub-Delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
            ),
        ]
    };
    assert_eq!(
        send(
            "/api/v1/webhooks/signed_github",
            body,
            gh(format!("sha256={}", "0".repeat(64)))
        )
        .await?,
        401
    );
    assert_eq!(
        send("/api/v1/webhooks/signed_github", body, gh(sig.clone())).await?,
        202
    );
    assert_eq!(
        send("/api/v1/webhooks/signed_github", body, gh(sig)).await?,
        401,
        "replayed"
    );
    // A key alone is not enough where a signature is configured.
    assert_eq!(
        send(
            "/api/v1/webhooks/signed_github",
            body,
            vec![("St2-Api-Key", server.key.clone())]
        )
        .await?,
        401
    );

    // Slack v0: valid, stale timestamp, replayed.
    let now = chrono::Utc::now().timestamp().to_string();
    let slack = |ts: String| {
        let sig = sign(
            "shared-secret",
            &[b"v0:", ts.as_bytes(), b":", body.as_bytes()],
        );
        vec![
            ("X-Slack-Request-Timestamp", ts),
            ("X-Slack-Signature", format!("v0={sig}")),
        ]
    };
    assert_eq!(
        send("/api/v1/webhooks/signed_slack", body, slack(now.clone())).await?,
        202
    );
    assert_eq!(
        send("/api/v1/webhooks/signed_slack", body, slack(now)).await?,
        401,
        "replayed"
    );
    let old = (chrono::Utc::now().timestamp() - 3600).to_string();
    assert_eq!(
        send("/api/v1/webhooks/signed_slack", body, slack(old)).await?,
        401,
        "stale"
    );

    // Generic HMAC: valid, wrong secret, replayed.
    let ts = chrono::Utc::now().timestamp().to_string();
    let hmac = |secret: &str| {
        let sig = sign(secret, &[ts.as_bytes(), b".", body.as_bytes()]);
        vec![
            ("X-Squall-Timestamp", ts.clone()),
            ("X-Squall-Signature", format!("sha256={sig}")),
        ]
    };
    assert_eq!(
        send("/api/v1/webhooks/signed_hmac", body, hmac("other")).await?,
        401
    );
    assert_eq!(
        send("/api/v1/webhooks/signed_hmac", body, hmac("shared-secret")).await?,
        202
    );
    assert_eq!(
        send("/api/v1/webhooks/signed_hmac", body, hmac("shared-secret")).await?,
        401,
        "replayed"
    );

    // A signed alert receiver (PagerDuty's scheme).
    let pd = fixture("pagerduty-triggered.json")?;
    let pd: &'static str = Box::leak(pd.into_boxed_str());
    let good = format!("v1={}", sign("shared-secret", &[pd.as_bytes()]));
    assert_eq!(
        send(
            "/api/v1/alerts/pagerduty",
            pd,
            vec![("X-PagerDuty-Signature", "v1=00".into())]
        )
        .await?,
        401
    );
    assert_eq!(
        send(
            "/api/v1/alerts/pagerduty",
            pd,
            vec![("X-PagerDuty-Signature", good)]
        )
        .await?,
        202
    );

    // Exactly the four accepted requests stored something.
    assert_eq!(stored().await? - before, 4);
    server.stop().await
}

#[tokio::test]
async fn timers_fire_on_schedule_once_per_due_time_across_restarts() -> Result<()> {
    let packs = tempfile::tempdir()?;
    let pack = packs.path().join("timed");
    std::fs::create_dir_all(pack.join("rules"))?;
    std::fs::write(
        pack.join("pack.yaml"),
        "ref: timed\nname: timed\ndescription: timer tests\nversion: 0.1.0\n",
    )?;
    let date = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    for (name, trigger, params) in [
        (
            "every_second",
            "core.st2.IntervalTimer",
            "{unit: seconds, delta: 1}".to_owned(),
        ),
        (
            "cron_two",
            "core.st2.CronTimer",
            "{second: \"*/2\", timezone: Europe/Berlin}".to_owned(),
        ),
        (
            "once",
            "core.st2.DateTimer",
            format!("{{date: \"{date}\"}}"),
        ),
    ] {
        std::fs::write(
            pack.join("rules").join(format!("{name}.yaml")),
            format!(
                "name: {name}\ntrigger:\n  type: {trigger}\n  parameters: {params}\naction:\n  ref: core.noop\n"
            ),
        )?;
    }
    let data = tempfile::tempdir()?;
    let db_url = format!("sqlite://{}", data.path().join("timers.db").display());
    let start = |db_url: String, packs: std::path::PathBuf| async move {
        TestServer::start_with(Backend::Sqlite, move |c| {
            c.packs.push(packs);
            c.database_url = Some(Sensitive(db_url));
        })
        .await
    };
    let fires = |server: &TestServer, rule: &'static str| {
        let store = server.engine.store.clone();
        async move {
            let rows = store
                .connection()
                .query_all_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Sqlite,
                    format!(
                        "SELECT payload FROM trigger_instances WHERE source = 'timer/timed.{rule}'"
                    ),
                ))
                .await?;
            let mut due = Vec::new();
            for row in rows {
                let payload: String = row.try_get("", "payload")?;
                let v: Value = serde_json::from_str(&payload)?;
                due.push(v["scheduled_for"].as_str().unwrap_or_default().to_owned());
            }
            Ok::<Vec<String>, anyhow::Error>(due)
        }
    };
    use sea_orm::ConnectionTrait;
    let server = start(db_url.clone(), packs.path().to_path_buf()).await?;
    eventually(
        Duration::from_secs(20),
        "three interval fires and the date",
        || async {
            let every = fires(&server, "every_second").await?;
            let once = fires(&server, "once").await?;
            Ok((every.len() >= 3 && once.len() == 1).then_some(()))
        },
    )
    .await?;
    assert!(!fires(&server, "cron_two").await?.is_empty());
    server.engine.shutdown();
    server.stop().await?;
    let last_before = interval_due_times(&db_url)
        .await?
        .into_iter()
        .max()
        .context("interval fires before the stop")?;

    // Down for at least 3.5 s: the interval missed at least three due times.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let server = start(db_url.clone(), packs.path().to_path_buf()).await?;
    // The catch-up fire and one regular fire after it.
    let after: Vec<i64> = eventually(
        Duration::from_secs(30),
        "two interval fires after the restart",
        || async {
            let mut after: Vec<i64> = interval_due_times(&db_url)
                .await?
                .into_iter()
                .filter(|due| *due > last_before)
                .collect();
            after.sort_unstable();
            Ok((after.len() >= 2).then_some(after))
        },
    )
    .await?;
    let every = fires(&server, "every_second").await?;
    let once = fires(&server, "once").await?;
    let cron = fires(&server, "cron_two").await?;
    for (name, list) in [("interval", &every), ("cron", &cron), ("date", &once)] {
        let mut unique = list.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            list.len(),
            "{name} fired a due time twice: {list:?}"
        );
    }
    assert_eq!(once.len(), 1, "a date timer fires once, restart or not");
    // Missed fires coalesce, judged by the due times the scheduler recorded:
    // the first fire after the restart is for the latest due time missed
    // while down (3 s or more after the last one before), and none of the
    // earlier missed ones fired; after it the interval counts again from
    // that fire, never two fires less than a second apart.
    assert!(
        after[0] - last_before >= 3_000,
        "the catch-up fired for {} ms after the last fire before the stop: {after:?}",
        after[0] - last_before
    );
    for pair in after.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= 1_000, "due times {gap} ms apart: {after:?}");
    }
    server.stop().await
}

/// The due times (ms) the interval rule fired for, as recorded in its
/// trigger instances.
async fn interval_due_times(db_url: &str) -> Result<Vec<i64>> {
    use sea_orm::ConnectionTrait;
    let store = squall_engine::store::Store::connect(db_url).await?;
    let rows = store
        .connection()
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "SELECT payload FROM trigger_instances WHERE source = 'timer/timed.every_second'",
        ))
        .await?;
    let mut due = Vec::new();
    for row in rows {
        let payload: String = row.try_get("", "payload")?;
        let v: Value = serde_json::from_str(&payload)?;
        let at =
            chrono::DateTime::parse_from_rfc3339(v["scheduled_for"].as_str().unwrap_or_default())
                .with_context(|| format!("scheduled_for in {v}"))?;
        due.push(at.timestamp_millis());
    }
    Ok(due)
}

/// The remediation loop with the real Alertmanager: firing alert → notice →
/// diagnosis → approval → cleanup → result, then the resolved alert in the
/// same thread.
#[tokio::test]
async fn alertmanager_alert_runs_the_remediation_loop_in_chat() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let am = Alertmanager::start(&server.url("/api/v1/alerts/alertmanager"), &server.key).await?;
    // The ops channel is alice's terminal (carol's console must not show
    // what is posted there).
    let settings = ChatSection {
        channels: [("ops".to_owned(), "console:console-alice".to_owned())].into(),
        ..ChatSection::default()
    };
    let mut ops = Session::new(&server, "alice", settings.clone())?;
    ops.dispatcher.start();
    let mut carol = Session::new(&server, "carol", settings)?;
    let disk = tempfile::tempdir()?;
    for f in ["a.tmp", "b.tmp", "c.tmp", "keep.log"] {
        std::fs::write(disk.path().join(f), "x")?;
    }
    let alert = json!([{
        "labels": {"alertname": "HighDiskUsage", "instance": "db1:9100", "severity": "warning"},
        "annotations": {"summary": "/var is 93% full on db1", "cleanup_path": disk.path()},
        "generatorURL": "http://127.0.0.1:9090/graph"
    }]);
    am.post(&alert).await?;
    let mut seen = String::new();
    wait_output(&mut ops, &mut seen, "HighDiskUsage firing on db1:9100").await?;
    assert!(seen.contains("/var is 93% full on db1"), "{seen}");
    wait_output(
        &mut ops,
        &mut seen,
        "Diagnosis on db1:9100: 3 temporary files",
    )
    .await?;
    let prompt = wait_output(&mut ops, &mut seen, r"approve [0-9A-Z]{26}").await?;
    assert!(
        seen.contains("Approval needed: remediation.disk_remediate (task approve)"),
        "{seen}"
    );
    assert!(
        disk.path().join("a.tmp").exists(),
        "nothing removed before the approval"
    );
    let answer = carol.send(&prompt).await;
    assert!(answer.contains("is approved by console:carol"), "{answer}");
    wait_output(
        &mut ops,
        &mut seen,
        "Cleanup done on db1:9100: removed 3 temporary files",
    )
    .await?;
    assert!(!disk.path().join("a.tmp").exists());
    assert!(disk.path().join("keep.log").exists());

    // Resolve it in Alertmanager: the notice lands in the firing's thread.
    let mut resolved = alert.clone();
    resolved[0]["endsAt"] = json!(chrono::Utc::now().to_rfc3339());
    am.post(&resolved).await?;
    wait_output(&mut ops, &mut seen, "Resolved: HighDiskUsage on db1:9100").await?;
    let fingerprint = server
        .engine
        .store
        .list_inquiries(None, 1)
        .await?
        .first()
        .and_then(|i| i.workflow_id.clone())
        .context("workflow")?;
    let workflow = server
        .engine
        .store
        .get_execution(&fingerprint)
        .await?
        .context("wf")?;
    let params: Value = serde_json::from_str(&workflow.parameters)?;
    let key = params["fingerprint"].as_str().context("fingerprint")?;
    let notices = server.engine.store.chat_messages_in_thread(key).await?;
    assert_eq!(notices.len(), 4, "firing, diagnosis, result, resolved");
    let refs: Vec<Value> = notices
        .iter()
        .map(|n| {
            serde_json::from_str(n.sent_ref.as_deref().unwrap_or("null")).unwrap_or(Value::Null)
        })
        .collect();
    let root = refs[0]["message_id"].clone();
    assert!(
        refs[0]["thread"].is_null(),
        "the firing notice starts the thread"
    );
    for r in &refs[1..] {
        assert_eq!(r["thread"], root, "{refs:?}");
    }
    drop(am);
    server.stop().await
}
