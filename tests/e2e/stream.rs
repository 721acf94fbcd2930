//! The live event stream (`/api/v1/stream`) and `squall execution tail`
//! through real HTTP: output lines streamed while a run produces them, a
//! client that disconnects mid-run and resumes with `Last-Event-ID` sees
//! every line exactly once, and every kind of event reaches subscribers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use squall_engine::execution::ExecutionContext;
use squall_engine::inquiry::{Vote, Voter};
use squall_engine::params::Casting;
use squall_tests::{Backend, eventually, squall_binary};

use crate::server::TestServer;

on_both_backends!(
    a_client_resumed_with_last_event_id_sees_every_line_once,
    tail_follows_a_running_execution_line_by_line,
    the_stream_carries_every_kind_of_event,
    bad_stream_requests_get_json_errors
);

const WAIT: Duration = Duration::from_secs(60);

/// A shell command printing 20 lines, waiting for `marker`, then 20 more
/// (and one on stderr): the test decides when the second half comes.
fn gated_script(marker: &std::path::Path) -> String {
    format!(
        "for i in $(seq 1 20); do echo line-$i; done; \
         while [ ! -e '{m}' ]; do sleep 0.05; done; \
         for i in $(seq 21 40); do echo line-$i; done; echo err-1 >&2",
        m = marker.display()
    )
}

fn expected_lines() -> Vec<String> {
    (1..=40).map(|i| format!("line-{i}")).collect()
}

async fn start_gated(server: &TestServer, marker: &std::path::Path) -> Result<String> {
    let (status, created) = server
        .post(
            "/api/v1/executions",
            &json!({"action": "core.local", "parameters": {"cmd": gated_script(marker), "timeout": 120}})
                .to_string(),
        )
        .await?;
    ensure!(status == 201, "create answered {status}: {created}");
    Ok(created["id"].as_str().context("no id")?.to_owned())
}

/// An open event stream read event by event.
struct Subscription {
    response: reqwest::Response,
    buffer: String,
}

impl Subscription {
    async fn open(server: &TestServer, query: &str, last_event_id: Option<i64>) -> Result<Self> {
        let mut request = server
            .http
            .get(server.url(&format!("/api/v1/stream{query}")))
            .header("St2-Api-Key", &server.key);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await?;
        ensure!(
            response.status() == 200,
            "the stream answered {}",
            response.status()
        );
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        ensure!(
            content_type.starts_with("text/event-stream"),
            "content type {content_type}"
        );
        Ok(Self {
            response,
            buffer: String::new(),
        })
    }

    /// The next event (its `id:` field must match the JSON's id).
    async fn next(&mut self) -> Result<Value> {
        loop {
            if let Some(pos) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..pos + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse::<i64>()?);
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let event: Value = serde_json::from_str(&data)?;
                ensure!(
                    id == event["id"].as_i64(),
                    "SSE id {id:?} differs from {event}"
                );
                return Ok(event);
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .context("no event within a minute")??
                .context("the stream ended")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

fn is_end(event: &Value) -> bool {
    event["kind"] == "execution.changed"
        && matches!(
            event["data"]["status"].as_str(),
            Some("succeeded" | "failed" | "timeout" | "canceled" | "abandoned")
        )
}

async fn a_client_resumed_with_last_event_id_sees_every_line_once(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("go");
    let id = start_gated(&server, &marker).await?;

    // First connection: from the beginning, until the first half is out.
    let query = format!("?execution={id}");
    let mut first = Subscription::open(&server, &query, Some(0)).await?;
    let mut events = Vec::new();
    loop {
        let event = first.next().await?;
        let done = event["data"]["line"] == "line-20";
        events.push(event);
        if done {
            break;
        }
    }
    drop(first);
    let last_seen = events.last().and_then(|e| e["id"].as_i64()).context("id")?;

    // While nobody listens the run finishes.
    std::fs::write(&marker, "")?;
    server.engine.wait_for(&id, WAIT).await?;

    let mut second = Subscription::open(&server, &query, Some(last_seen)).await?;
    loop {
        let event = second.next().await?;
        let end = is_end(&event);
        events.push(event);
        if end {
            break;
        }
    }

    let ids: Vec<i64> = events.iter().filter_map(|e| e["id"].as_i64()).collect();
    ensure!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids are not strictly increasing: {ids:?}"
    );
    ensure!(
        events.iter().all(|e| e["subject"] == id.as_str()),
        "an event about another subject came through the filter"
    );
    let stdout: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "execution.output" && e["data"]["stream"] == "stdout")
        .filter_map(|e| e["data"]["line"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        stdout,
        expected_lines(),
        "every line exactly once, in order"
    );
    let stderr: Vec<&str> = events
        .iter()
        .filter(|e| e["data"]["stream"] == "stderr")
        .filter_map(|e| e["data"]["line"].as_str())
        .collect();
    assert_eq!(stderr, vec!["err-1"]);
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"].as_str().is_some_and(|k| k != "execution.output"))
        .filter_map(|e| e["data"]["status"].as_str())
        .collect();
    assert_eq!(statuses, vec!["requested", "running", "succeeded"]);
    // The output came before the end, and the stored result agrees.
    let (_, view) = server.get(&format!("/api/v1/executions/{id}")).await?;
    ensure!(
        view["stdout"].as_str().unwrap_or("").lines().count() == 40,
        "{view}"
    );

    // Retention: events older than the cut are purged, newer ones stay.
    let store = &server.engine.store;
    let cut = events[events.len() / 2]["at"].as_i64().context("at")?;
    let purged = store.purge_events_before(cut).await?;
    let left = store.events_after(0, 10_000, Some(&id)).await?;
    ensure!(
        purged > 0 && !left.is_empty(),
        "purged {purged}, left {}",
        left.len()
    );
    ensure!(
        left.iter().all(|e| e.at >= cut),
        "an event older than the cut stayed"
    );
    server.stop().await
}

async fn tail_follows_a_running_execution_line_by_line(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("go");
    let id = start_gated(&server, &marker).await?;

    let mut child = Command::new(squall_binary()?)
        .args(["--server", &server.base, "execution", "tail", &id])
        .env("SQUALL_API_KEY", &server.key)
        .env_remove("SQUALL_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    // Read on a thread: this test's runtime also runs the server.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let reader_thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first half arrives while the run is still waiting: followed, not
    // printed at the end.
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("line-20") {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(line)) => seen.push(line),
            _ => {
                // Say why: where the run is, what was stored, what tail said.
                let _ = child.kill();
                let stderr = child
                    .stderr
                    .take()
                    .map(|mut e| {
                        let mut text = String::new();
                        let _ = std::io::Read::read_to_string(&mut e, &mut text);
                        text
                    })
                    .unwrap_or_default();
                let (_, view) = server.get(&format!("/api/v1/executions/{id}")).await?;
                let events = server.engine.store.events_after(0, 100, Some(&id)).await?;
                bail!(
                    "tail printed {seen:?} and then nothing within a minute; its stderr: \
                     {stderr:?}; the execution: {view}; its stored events: {:?}",
                    events
                        .iter()
                        .map(|e| (e.id, e.kind.clone()))
                        .collect::<Vec<_>>()
                );
            }
        }
    }
    let (_, view) = server.get(&format!("/api/v1/executions/{id}")).await?;
    assert_eq!(view["status"], "running", "the run is gated on the marker");
    std::fs::write(&marker, "")?;
    let status = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    reader_thread
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread"))?;
    while let Ok(line) = rx.try_recv() {
        seen.push(line);
    }
    let stderr = String::from_utf8_lossy(&status.stderr);
    ensure!(status.status.success(), "tail failed: {stderr}");
    assert_eq!(seen, expected_lines());
    ensure!(stderr.contains("err-1"), "{stderr}");
    ensure!(
        stderr.contains(&format!("execution {id} succeeded")),
        "{stderr}"
    );

    // A finished execution prints its stored output and its status.
    let mut again = Command::new(squall_binary()?);
    again
        .args(["--server", &server.base, "execution", "tail", &id])
        .env("SQUALL_API_KEY", &server.key);
    let again = tokio::task::spawn_blocking(move || again.output()).await??;
    ensure!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .lines()
            .collect::<Vec<_>>(),
        expected_lines()
    );
    // An unknown execution is an error, not an endless wait.
    let mut unknown = Command::new(squall_binary()?);
    unknown
        .args(["--server", &server.base, "execution", "tail", "nope"])
        .env("SQUALL_API_KEY", &server.key);
    let unknown = tokio::task::spawn_blocking(move || unknown.output()).await??;
    ensure!(!unknown.status.success());
    ensure!(String::from_utf8_lossy(&unknown.stderr).contains("404"));
    server.stop().await
}

async fn the_stream_carries_every_kind_of_event(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let engine = server.engine.clone();
    // Live from now: nothing of the past is replayed.
    let mut sub = Subscription::open(&server, "", None).await?;

    let (status, fired) = server
        .post(
            "/api/v1/webhooks/st2",
            &json!({"trigger": "squall.alert", "payload": {"labels": {}}}).to_string(),
        )
        .await?;
    let trigger_instance = if status == 202 {
        fired["trigger_instance_id"].as_str().map(str::to_owned)
    } else {
        None
    };
    let dir = tempfile::tempdir()?;
    let context = ExecutionContext {
        source: "test".into(),
        user: Some("console:alice".into()),
        ..ExecutionContext::default()
    };
    let params = json!({"file": dir.path().join("acted"), "approvers": 1});
    let workflow = engine
        .request_execution(
            "testing.wf_approval",
            params.as_object().context("object")?,
            Casting::Strict,
            context,
        )
        .await?;
    let inquiry = eventually(WAIT, "the approval request", || async {
        Ok(engine
            .store
            .list_inquiries(Some("pending"), 50)
            .await?
            .into_iter()
            .find(|i| i.workflow_id.as_deref() == Some(workflow.as_str()))
            .map(|i| i.id))
    })
    .await?;
    let voter = Voter {
        identity: "console:bob".into(),
        roles: vec!["admin".into()],
        may_respond: true,
    };
    engine.vote(&inquiry, &voter, Vote::Approve(None)).await?;
    engine.host.inquiries.notify_waiters();
    engine.wait_for(&workflow, WAIT).await?;

    // A chat delivery: queued, claimed and sent.
    let message = engine
        .store
        .queue_chat_message(&workflow, "console:ops", &json!({"text": "hi"}), None)
        .await?;
    ensure!(
        engine
            .store
            .claim_outbox(&message, "test-node", i64::MAX, None)
            .await?
    );
    engine
        .store
        .finish_outbox(
            &message,
            "test-node",
            &squall_engine::store::Delivery::Sent(json!({"id": "m1"})),
        )
        .await?;

    let mut seen: Vec<Value> = Vec::new();
    let wanted = |seen: &[Value]| {
        let has = |kind: &str, subject: &str| {
            seen.iter()
                .any(|e| e["kind"] == kind && e["subject"] == subject)
        };
        has("execution.created", &workflow)
            && seen.iter().any(|e| {
                e["kind"] == "execution.changed"
                    && e["subject"] == workflow.as_str()
                    && e["data"]["status"] == "succeeded"
            })
            && has("inquiry.opened", &inquiry)
            && has("inquiry.decided", &inquiry)
            && has("chat.delivery", &message)
            && trigger_instance
                .as_deref()
                .is_none_or(|ti| has("trigger.instance", ti))
    };
    while !wanted(&seen) {
        let event = sub.next().await.with_context(|| {
            format!(
                "waiting for every kind; got {:?}",
                seen.iter()
                    .map(|e| format!("{} {}", e["kind"], e["subject"]))
                    .collect::<Vec<_>>()
            )
        })?;
        seen.push(event);
    }
    ensure!(
        trigger_instance.is_some(),
        "firing squall.alert answered {status}: {fired}"
    );
    let decided = seen
        .iter()
        .find(|e| e["kind"] == "inquiry.decided")
        .context("decided")?;
    ensure!(
        decided["data"]["decided_by"]
            .as_str()
            .is_some_and(|d| d.contains("console:bob")),
        "{decided}"
    );
    let delivery = seen
        .iter()
        .find(|e| e["kind"] == "chat.delivery")
        .context("delivery")?;
    assert_eq!(delivery["data"]["state"], "sent");
    let ids: Vec<i64> = seen.iter().filter_map(|e| e["id"].as_i64()).collect();
    ensure!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // A kind filter passes only that family.
    let mut only = Subscription::open(&server, "?kinds=inquiry", Some(0)).await?;
    let first = only.next().await?;
    let second = only.next().await?;
    assert_eq!(
        (first["kind"].as_str(), second["kind"].as_str()),
        (Some("inquiry.opened"), Some("inquiry.decided"))
    );
    server.stop().await
}

async fn bad_stream_requests_get_json_errors(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    for (query, header, code) in [
        ("?kinds=bogus", None, "bad_query"),
        ("?colour=red", None, "bad_query"),
        ("", Some("yesterday"), "bad_last_event_id"),
    ] {
        let mut request = server
            .http
            .get(server.url(&format!("/api/v1/stream{query}")))
            .header("St2-Api-Key", &server.key);
        if let Some(h) = header {
            request = request.header("Last-Event-ID", h);
        }
        let response = request.send().await?;
        assert_eq!(response.status().as_u16(), 400, "{query} {header:?}");
        let body: Value = response.json().await?;
        assert_eq!(body["error"], code, "{body}");
        ensure!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let anonymous = server.http.get(server.url("/api/v1/stream")).send().await?;
    assert_eq!(anonymous.status().as_u16(), 401);
    server.stop().await
}
