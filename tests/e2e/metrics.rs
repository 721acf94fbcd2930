//! `/metrics`, `/healthz` and `/readyz` through real HTTP, with a real
//! Prometheus server scraping squall and answering queries with the counts
//! squall produced.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use squall_tests::{Backend, Prometheus, eventually};

use crate::server::TestServer;

on_both_backends!(
    prometheus_scrapes_the_counts_squall_produced,
    readiness_reports_what_it_checked
);

const WAIT: Duration = Duration::from_secs(60);

async fn run(server: &TestServer, cmd: &str) -> Result<String> {
    let (status, created) = server
        .post(
            "/api/v1/executions",
            &json!({"action": "core.local", "parameters": {"cmd": cmd}}).to_string(),
        )
        .await?;
    ensure!(status == 201, "create answered {status}: {created}");
    let id = created["id"].as_str().context("id")?.to_owned();
    server.engine.wait_for(&id, WAIT).await?;
    Ok(id)
}

async fn prometheus_scrapes_the_counts_squall_produced(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    for _ in 0..3 {
        run(&server, "true").await?;
    }
    for _ in 0..2 {
        run(&server, "false").await?;
    }
    let (accepted, _) = server
        .post(
            "/api/v1/webhooks/st2",
            &json!({"trigger": "squall.alert", "payload": {"labels": {}}}).to_string(),
        )
        .await?;
    assert_eq!(accepted, 202);
    let (refused, _) = server.post("/api/v1/webhooks/st2", "{not json").await?;
    assert_eq!(refused, 400);

    // The exposition itself: OpenMetrics text with conventional names.
    let response = server.http.get(server.url("/metrics")).send().await?;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    ensure!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await?;
    for needle in [
        "squall_executions_total{action=\"core.local\",status=\"succeeded\"} 3",
        "squall_executions_total{action=\"core.local\",status=\"failed\"} 2",
        "squall_execution_duration_seconds_count{action=\"core.local\"} 5",
        "squall_queue_claim_latency_seconds_count",
        "squall_queue_depth 0",
        "squall_inquiries_open 0",
        "squall_executions_stored{status=\"succeeded\"} 3",
        "squall_requests_received_total{kind=\"trigger\",source=\"st2\",code=\"202\"} 1",
        "squall_requests_received_total{kind=\"trigger\",source=\"st2\",code=\"400\"} 1",
        "# EOF",
    ] {
        ensure!(text.contains(needle), "{needle:?} is not in:\n{text}");
    }

    // A real Prometheus scrapes it and answers queries with those counts.
    let target = server.base.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&target).await?;
    let succeeded = eventually(WAIT, "Prometheus to have scraped squall", || async {
        prometheus
            .query_one("squall_executions_total{action=\"core.local\",status=\"succeeded\"}")
            .await
    })
    .await?;
    assert_eq!(succeeded, 3.0);
    assert_eq!(
        prometheus
            .query_one("sum(squall_executions_total{status=\"failed\"})")
            .await?,
        Some(2.0)
    );
    assert_eq!(prometheus.query_one("up{job=\"squall\"}").await?, Some(1.0));
    assert_eq!(
        prometheus
            .query_one("squall_requests_received_total{code=\"400\"}")
            .await?,
        Some(1.0)
    );
    assert_eq!(
        prometheus
            .query_one("squall_execution_duration_seconds_count")
            .await?,
        Some(5.0)
    );
    server.stop().await
}

async fn readiness_reports_what_it_checked(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let (status, health) = server.get("/healthz").await?;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, ready) = server.get("/readyz").await?;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"]["ok"], true);
    ensure!(ready["packs"]["loaded"].as_u64() >= Some(3), "{ready}");
    server.stop().await?;

    // A chat adapter that is not connected (never started here; its
    // homeserver does not exist): alive, but not ready.
    let adapter: squall_adapters::config::AdapterConfig = serde_json::from_value(json!({
        "type": "matrix",
        "homeserver": "http://127.0.0.1:9",
        "user": "@squall:localhost",
        "password": "unused",
    }))?;
    let server = TestServer::start_with(backend, move |c| {
        c.adapters.0.insert("matrix".into(), adapter);
    })
    .await?;
    let (status, _) = server.get("/healthz").await?;
    assert_eq!(status, 200);
    let (status, ready) = server.get("/readyz").await?;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["error"], "not_ready");
    assert_eq!(ready["adapters"]["matrix"]["connected"], false);
    ensure!(
        ready["detail"]
            .as_str()
            .is_some_and(|d| d.contains("chat adapter matrix not connected")),
        "{ready}"
    );
    let text = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        text.contains("squall_chat_adapter_connected{platform=\"matrix\"} 0"),
        "{text}"
    );
    server.stop().await
}
