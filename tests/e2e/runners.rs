//! The runner conformance suite: every runner that starts a process passes the
//! same checks, through the real server on both backends.
//!
//! - parameters in, result and output out (a hostile word arrives unchanged);
//! - a secret parameter is on no command line while the run is going and is
//!   masked in every view afterwards;
//! - `timeout` ends the run as `timeout`, cancel as `canceled`, each well before
//!   the action's own sleep would have (by the durations squall records);
//! - output over `worker.output_limit_bytes` is cut with a marker.
//!
//! Each action of tests/fixtures/runner-conformance/conform does the same
//! thing with a different runner. A runner squall registers must be listed
//! here: in `PROCESS_CASES`, or in `COVERED_ELSEWHERE` with the suite that
//! checks it, so a new runner cannot ship unchecked.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use squall_engine::runners::RunnerRegistry;
use squall_tests::{Backend, repo_root};

use crate::server::TestServer;

/// Runner and the conformance action that exercises it.
const PROCESS_CASES: &[(&str, &str)] = &[
    ("local-shell-cmd", "conform.shell_cmd"),
    ("local-shell-script", "conform.shell_script"),
    ("python-script", "conform.python"),
];

/// In-process runners, and where their behaviour is checked.
const COVERED_ELSEWHERE: &[(&str, &str)] = &[
    ("noop", "tests/e2e/executions.rs, workflows.rs"),
    ("echo", "tests/e2e/workflows.rs, st2core.rs"),
    ("http-request", "tests/e2e/http_runner.rs"),
    ("orquesta", "tests/e2e/workflows.rs"),
    ("workflow", "tests/e2e/workflows.rs"),
    ("inquirer", "tests/e2e/workflows.rs (approvals)"),
    ("chat-post", "tests/e2e/conformance.rs, slack.rs"),
    ("uuid", "tests/e2e/st2core.rs"),
    ("pause", "tests/e2e/st2core.rs"),
    ("inject-trigger", "tests/e2e/st2core.rs"),
    ("announcement", "tests/e2e/st2core.rs"),
    ("sendmail", "tests/e2e/st2core.rs (against aiosmtpd)"),
];

const OUTPUT_CAP: usize = 4096;
const SECRET: &str = "cOnf-s3cret-91d2";
const WAIT: Duration = Duration::from_secs(600);

on_both_backends!(every_process_runner_keeps_the_runner_contract);

#[test]
fn every_registered_runner_is_covered() {
    let registry = squall_engine::builtin_runners();
    for name in registry.names() {
        let runner = registry.get(name).expect("registered");
        let case = PROCESS_CASES.iter().any(|(r, _)| *r == name);
        let elsewhere = COVERED_ELSEWHERE.iter().any(|(r, _)| *r == name);
        assert!(
            case || elsewhere,
            "runner {name} is in no conformance case: add an action to \
             tests/fixtures/runner-conformance and a line to PROCESS_CASES"
        );
        // A runner that starts a process must run the process checks.
        assert_eq!(
            runner.traits().process,
            case,
            "runner {name}: declared process={} but listed {}",
            runner.traits().process,
            if case {
                "as a process case"
            } else {
                "elsewhere"
            }
        );
    }
}

async fn every_process_runner_keeps_the_runner_contract(backend: Backend) -> Result<()> {
    let server = TestServer::start_with(backend, |c| {
        c.packs = vec![
            repo_root().join("tests/fixtures/runner-conformance"),
            // The python runner's pack virtualenvs and config live beside these.
        ];
        c.worker.output_limit_bytes = OUTPUT_CAP;
    })
    .await?;
    for (runner, action) in PROCESS_CASES {
        conformance(&server, action)
            .await
            .with_context(|| format!("runner {runner} ({action})"))?;
    }
    server.stop().await
}

async fn create(server: &TestServer, action: &str, parameters: Value) -> Result<String> {
    let id = server.create_execution(action, parameters).await?;
    let (_, created) = server.get(&format!("/api/v1/executions/{id}")).await?;
    ensure!(
        !created.to_string().contains(SECRET),
        "the new execution's view shows the secret"
    );
    Ok(id)
}

async fn view(server: &TestServer, id: &str) -> Result<Value> {
    let (status, view) = server.get(&format!("/api/v1/executions/{id}")).await?;
    ensure!(status == 200, "{view}");
    Ok(view)
}

async fn finish(server: &TestServer, id: &str) -> Result<Value> {
    server.engine.wait_for(id, WAIT).await?;
    view(server, id).await
}

/// Poll until the run's process is up (its status says running and it has
/// printed its first line), checking every command line for the secret meanwhile.
async fn wait_running(server: &TestServer, id: &str) -> Result<()> {
    wait_running_without(server, id, SECRET).await
}

/// [`wait_running`] for another `secret`.
pub(crate) async fn wait_running_without(
    server: &TestServer,
    id: &str,
    secret: &str,
) -> Result<()> {
    for _ in 0..2400 {
        let v = view(server, id).await?;
        let cmdlines = tokio::task::spawn_blocking(all_command_lines).await??;
        ensure!(
            !cmdlines.iter().any(|c| c.contains(secret)),
            "the secret is on a command line: {:?}",
            cmdlines
                .iter()
                .filter(|c| c.contains(secret))
                .collect::<Vec<_>>()
        );
        if v["status"] == "running" && has_printed(server, id).await? {
            return Ok(());
        }
        let status = v["status"].as_str().unwrap_or_default();
        ensure!(
            ["requested", "scheduled", "running"].contains(&status),
            "the run ended before it was seen running: {v}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("the run was never seen running")
}

/// Whether the run's process has written a line yet (stored as it ran).
pub(crate) async fn has_printed(server: &TestServer, id: &str) -> Result<bool> {
    let events = server.engine.store.events_after(0, 1000, Some(id)).await?;
    Ok(events
        .iter()
        .any(|e| e.kind == squall_engine::store::OUTPUT))
}

async fn conformance(server: &TestServer, action: &str) -> Result<()> {
    // Parameters in, output and result out; a hostile word arrives as it is.
    let word = "it's \"here\"; $(touch /tmp/conform-pwned) `id`";
    let id = create(server, action, json!({"word": word})).await?;
    let v = finish(server, &id).await?;
    ensure!(v["status"] == "succeeded", "{v}");
    let stdout = v["stdout"].as_str().unwrap_or_default();
    ensure!(stdout.contains(&format!("word={word}\n")), "stdout: {v}");
    let result_word = v["result"]["result"]["word"]
        .as_str()
        .or_else(|| v["result"]["stdout"].as_str())
        .unwrap_or_default();
    ensure!(
        result_word.contains(word),
        "the result carries the output: {v}"
    );
    ensure!(
        !std::path::Path::new("/tmp/conform-pwned").exists(),
        "the word ran as shell"
    );

    // A secret: never on a command line, masked in every view.
    let id = create(
        server,
        action,
        json!({"word": "w", "token": SECRET, "seconds": 1}),
    )
    .await?;
    wait_running(server, &id).await?;
    let v = finish(server, &id).await?;
    ensure!(v["status"] == "succeeded", "{v}");
    ensure!(
        v["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("secret=********"),
        "the process got the secret and the view masks it: {v}"
    );
    ensure!(
        !v.to_string().contains(SECRET),
        "the view shows the secret: {v}"
    );
    let (_, listed) = server.get("/api/v1/executions?limit=20").await?;
    ensure!(
        !listed.to_string().contains(SECRET),
        "the list shows the secret"
    );

    // A timeout ends the run, long before its sleep would.
    let id = create(
        server,
        action,
        json!({"word": "w", "seconds": 300, "timeout": 1}),
    )
    .await?;
    let v = finish(server, &id).await?;
    ensure!(v["status"] == "timeout", "{v}");
    let took = v["duration_ms"].as_u64().unwrap_or(u64::MAX);
    ensure!(took < 300_000, "the timeout did not end the sleep: {v}");

    // Cancel ends it too.
    let id = create(server, action, json!({"word": "w", "seconds": 300})).await?;
    wait_running(server, &id).await?;
    let (status, answer) = server
        .post(&format!("/api/v1/executions/{id}/cancel"), "{}")
        .await?;
    ensure!(status == 200 || status == 202, "{status}: {answer}");
    let v = finish(server, &id).await?;
    ensure!(v["status"] == "canceled", "{v}");
    let took = v["duration_ms"].as_u64().unwrap_or(u64::MAX);
    ensure!(took < 300_000, "the cancel did not end the sleep: {v}");

    // Output over the cap is cut, with a marker saying how much was dropped.
    let id = create(server, action, json!({"word": "w", "spam": 100_000})).await?;
    let v = finish(server, &id).await?;
    ensure!(v["status"] == "succeeded", "{v}");
    let stdout = v["stdout"].as_str().unwrap_or_default();
    ensure!(
        stdout.contains("[output truncated: ") && stdout.len() < OUTPUT_CAP + 100,
        "stdout is {} bytes: {}",
        stdout.len(),
        &stdout[stdout.len().saturating_sub(200)..]
    );
    Ok(())
}

/// Every process's command line, NULs as spaces (what `ps -ef` shows).
pub(crate) fn all_command_lines() -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let path = entry.path().join("cmdline");
        if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
            if !text.is_empty() {
                lines.push(text);
            }
        }
    }
    Ok(lines)
}
