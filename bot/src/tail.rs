//! `squall execution tail ID`: follow a running execution's output line by
//! line until it ends. Through a server it reads the event stream
//! (`/api/v1/stream?execution=ID`) and reconnects with `Last-Event-ID` when
//! the connection drops; without one it reads the event log directly.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;
use squall_engine::execution::ExecutionStatus;
use squall_engine::store::{Event, Store};

/// Where a followed execution is.
enum Progress {
    Running,
    Ended(String),
}

/// Print one event; say when the execution ended.
fn show(event: &Value) -> Progress {
    match event["kind"].as_str() {
        Some("execution.output") => {
            let line = event["data"]["line"].as_str().unwrap_or("");
            if event["data"]["stream"] == "stderr" {
                eprintln!("{line}");
            } else {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Progress::Running
        }
        Some("execution.changed") => {
            let status = event["data"]["status"].as_str().unwrap_or("");
            match ExecutionStatus::parse(status) {
                Some(s) if s.is_terminal() => Progress::Ended(status.to_owned()),
                _ => Progress::Running,
            }
        }
        _ => Progress::Running,
    }
}

fn finish(id: &str, status: &str) -> ExitCode {
    eprintln!("execution {id} {status}");
    if status == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// An execution that already ended: its stored output.
pub fn print_finished(id: &str, view: &Value) -> ExitCode {
    if let Some(text) = view["stdout"].as_str().filter(|t| !t.is_empty()) {
        print!("{}", with_newline(text));
    }
    if let Some(text) = view["stderr"].as_str().filter(|t| !t.is_empty()) {
        eprint!("{}", with_newline(text));
    }
    finish(id, view["status"].as_str().unwrap_or("unknown"))
}

fn with_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// Follow through a server's event stream.
pub async fn follow_remote(
    client: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    id: &str,
) -> Result<ExitCode> {
    let mut last: i64 = 0;
    let mut failures = 0u32;
    loop {
        let mut request = client
            .get(format!("{base}/api/v1/stream"))
            .query(&[("execution", id)])
            .header("Last-Event-ID", last.to_string())
            .header("Accept", "text/event-stream");
        if let Some(key) = key {
            request = request.header("St2-Api-Key", key);
        }
        let response = match request.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let status = r.status();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                bail!(
                    "the server answered {status}: {}",
                    body["detail"].as_str().unwrap_or("no detail")
                );
            }
            Err(err) => {
                failures += 1;
                if failures > 30 {
                    bail!("cannot reach squall at {base}: {err}");
                }
                eprintln!("(connection to {base} failed: {err}; retrying)");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        failures = 0;
        let mut parser = SseParser::default();
        let mut response = response;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) | Err(_) => break,
            };
            for (event_id, data) in parser.feed(&chunk) {
                if let Some(event_id) = event_id {
                    last = event_id;
                }
                let Ok(event) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                if event["error"].is_string() {
                    eprintln!(
                        "(the server reported: {})",
                        event["detail"].as_str().unwrap_or("an error")
                    );
                    continue;
                }
                if let Progress::Ended(status) = show(&event) {
                    return Ok(finish(id, &status));
                }
            }
        }
        eprintln!("(the event stream closed; resuming after event {last})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Follow through the database (no server).
pub async fn follow_local(store: &Store, id: &str) -> Result<ExitCode> {
    let mut last = 0;
    loop {
        let events = store.events_after(last, 1000, Some(id)).await?;
        for Event {
            id: event_id,
            at,
            kind,
            subject,
            data,
        } in events
        {
            last = event_id;
            let event = serde_json::json!({"id": event_id, "at": at, "kind": kind, "subject": subject, "data": data});
            if let Progress::Ended(status) = show(&event) {
                return Ok(finish(id, &status));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A minimal server-sent-events reader: `id:` and `data:` fields, events
/// ended by a blank line, comments (keep-alives) ignored.
#[derive(Default)]
struct SseParser {
    buffer: String,
    id: Option<i64>,
    data: Vec<String>,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<(Option<i64>, String)> {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        let mut out = Vec::new();
        while let Some(pos) = self.buffer.find('\n') {
            let line: String = self.buffer.drain(..=pos).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push((self.id.take(), self.data.join("\n")));
                    self.data.clear();
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.id = value.parse().ok(),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks_are_parsed_whole() {
        let mut p = SseParser::default();
        assert!(
            p.feed(b": keep-alive\n\nid: 7\nevent: x\ndata: {\"a\"")
                .is_empty()
        );
        let got = p.feed(b":1}\n\nid: 8\ndata: b\r\n\r\n");
        assert_eq!(
            got,
            vec![(Some(7), "{\"a\":1}".to_owned()), (Some(8), "b".to_owned())]
        );
    }
}
