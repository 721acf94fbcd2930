//! Workflows: one test per language feature and control operation, run by a
//! real server (worker pool, SQLite) against the `testing` pack's workflows.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use squall_engine::Engine;
use squall_engine::execution::{ExecutionContext, ExecutionStatus};
use squall_engine::inquiry::{Vote, VoteOutcome, Voter};
use squall_engine::params::Casting;
use squall_engine::store::execution;
use squall_tests::{Backend, eventually};

use crate::server::TestServer;

on_both_backends!(
    tasks_pass_published_values_and_the_workflow_renders_its_output,
    every_matching_transition_fires_and_joins_wait_for_their_inbound,
    an_unhandled_failure_or_the_fail_command_fails_the_workflow,
    with_items_runs_each_item_within_the_concurrency_limit,
    retry_policy_and_retry_command_run_a_failed_task_again,
    a_task_past_its_timeout_is_killed_and_a_workflow_past_its_own_times_out,
    a_delayed_task_starts_after_its_delay,
    a_workflow_runs_another_workflow_as_a_task,
    pause_lets_the_running_task_finish_and_resume_continues,
    cancel_stops_the_workflow_and_kills_its_running_task,
    rerun_from_failed_keeps_what_succeeded,
    an_approval_gate_resumes_on_quorum_and_refuses_self_approval,
    a_denial_stops_the_workflow_and_an_expired_ttl_times_the_gate_out,
    canceling_a_workflow_waiting_for_approval_cancels_the_request,
    context_values_reach_a_shell_command_as_one_quoted_word,
    inquiries_and_workflow_control_over_the_api,
);

const WAIT: Duration = Duration::from_secs(30);

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

pub async fn start(engine: &Engine, action: &str, p: Value, user: &str) -> Result<String> {
    Ok(engine
        .request_execution(
            action,
            &params(p),
            Casting::Strict,
            ExecutionContext {
                source: "test".into(),
                user: Some(user.into()),
                ..ExecutionContext::default()
            },
        )
        .await?)
}

async fn run(engine: &Engine, action: &str, p: Value) -> Result<(execution::Model, Value)> {
    let id = start(engine, action, p, "test:runner").await?;
    let model = engine.wait_for(&id, WAIT).await?;
    let result = model
        .result
        .as_deref()
        .map(serde_json::from_str)
        .transpose()?
        .unwrap_or(Value::Null);
    Ok((model, result))
}

async fn wait_status(engine: &Engine, id: &str, status: &str) -> Result<()> {
    eventually(WAIT, &format!("{id} to be {status}"), || async {
        let model = engine.store.get_execution(id).await?.context("execution")?;
        Ok((model.status == status).then_some(()))
    })
    .await
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn tasks_pass_published_values_and_the_workflow_renders_its_output(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let (model, result) = run(
        &server.engine,
        "testing.wf_sequence",
        json!({"name": "squall"}),
    )
    .await?;
    assert_eq!(model.status, "succeeded", "{result}");
    assert_eq!(
        result["output"],
        json!({"message": "hello squall", "said": "hello squall"})
    );
    let children = server.engine.store.children_of(&model.id).await?;
    let actions: Vec<&str> = children.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(actions, vec!["core.echo", "testing.say"]);
    let tasks = server.engine.store.workflow_tasks(&model.id).await?;
    let names: Vec<(&str, &str)> = tasks
        .iter()
        .map(|t| (t.name.as_str(), t.status.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![("compose", "succeeded"), ("speak", "succeeded")]
    );
    server.stop().await
}

async fn every_matching_transition_fires_and_joins_wait_for_their_inbound(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let (model, result) = run(&server.engine, "testing.wf_branches", json!({})).await?;
    assert_eq!(model.status, "succeeded", "{result}");
    let path = result["output"]["path"].as_str().unwrap_or_default();
    for part in ["start", "-a", "-all", "-two"] {
        assert!(path.contains(part), "{path}");
    }
    assert_eq!(result["output"]["b_status"], "succeeded");
    let tasks = server.engine.store.workflow_tasks(&model.id).await?;
    let count = |name: &str| tasks.iter().filter(|t| t.name == name).count();
    // join: all and join: 2 run once each although three transitions lead there.
    assert_eq!((count("all_done"), count("two_done")), (1, 1));

    // b fails, handled by `noop`: two_done (2 of 3) runs, all_done can never
    // join, and the workflow fails saying so.
    let (model, result) = run(
        &server.engine,
        "testing.wf_branches",
        json!({"fail_b": true}),
    )
    .await?;
    assert_eq!(model.status, "failed", "{result}");
    assert_eq!(result["output"]["b_status"], "failed");
    let error = model.error.unwrap_or_default();
    assert!(
        error.contains("all_done")
            && error.contains("join waited for 3 inbound transitions; 2 arrived"),
        "{error}"
    );
    let tasks = server.engine.store.workflow_tasks(&model.id).await?;
    assert!(
        tasks
            .iter()
            .any(|t| t.name == "two_done" && t.status == "succeeded")
    );
    server.stop().await
}

async fn an_unhandled_failure_or_the_fail_command_fails_the_workflow(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let (model, result) = run(&server.engine, "testing.wf_fail", json!({})).await?;
    assert_eq!(model.status, "failed");
    assert_eq!(result["errors"][0]["task"], "broken", "{result}");
    assert_eq!(model.error.as_deref(), Some("task broken: ended failed"));
    let tasks = server.engine.store.workflow_tasks(&model.id).await?;
    assert!(!tasks.iter().any(|t| t.name == "never"));

    let (model, result) = run(&server.engine, "testing.wf_fail", json!({"explicit": true})).await?;
    assert_eq!(model.status, "failed");
    assert_eq!(
        model.error.as_deref(),
        Some("task check: failed by a `fail` transition"),
        "{result}"
    );
    server.stop().await
}

async fn with_items_runs_each_item_within_the_concurrency_limit(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("hosts.txt");
    let hosts: Vec<String> = (1..=6).map(|i| format!("host-{i}")).collect();
    let (model, result) = run(
        &server.engine,
        "testing.wf_items",
        json!({"file": file, "hosts": hosts}),
    )
    .await?;
    assert_eq!(model.status, "succeeded", "{result}");
    // Each item recorded when it began and ended; sweep those events in
    // time order and count the items running at once.
    let mut events: Vec<(u128, i32, String)> = Vec::new();
    for line in lines(&file) {
        let mut words = line.split(' ');
        let (Some(host), Some(edge), Some(ns)) = (words.next(), words.next(), words.next()) else {
            anyhow::bail!("unexpected line {line:?}");
        };
        // At one instant, an end counts before a start.
        let step = if edge == "start" { 1 } else { -1 };
        events.push((ns.parse()?, step, host.to_owned()));
    }
    let mut started: Vec<String> = events
        .iter()
        .filter(|e| e.1 == 1)
        .map(|e| e.2.clone())
        .collect();
    started.sort();
    assert_eq!(started, hosts, "every item ran once");
    events.sort();
    let mut running = 0;
    let mut most = 0;
    for (_, step, _) in &events {
        running += step;
        most = most.max(running);
    }
    assert_eq!(running, 0, "every item ended: {events:?}");
    assert_eq!(
        most, 2,
        "the limit is 2 and six items had to share it: {events:?}"
    );
    // The task result lists item results in item order.
    let stdout: Vec<String> = result["output"]["lines"]
        .as_array()
        .context("lines")?
        .iter()
        .map(|r| r["stdout"].as_str().unwrap_or_default().trim().to_owned())
        .collect();
    assert_eq!(stdout, hosts);
    // The stored start and end of each item are the times its worker
    // measured around the run (not when a claim was asked for or a batch of
    // completions committed), so they show the same limit.
    let children = server.engine.store.children_of(&model.id).await?;
    assert_eq!(children.len(), 6);
    let spans: Vec<(i64, i64)> = children
        .iter()
        .map(|c| (c.started_at.unwrap_or(0), c.finished_at.unwrap_or(0)))
        .collect();
    for (start, _) in &spans {
        let overlapping = spans
            .iter()
            .filter(|(s, f)| s <= start && start < f)
            .count();
        assert!(
            overlapping <= 2,
            "{overlapping} items overlapped in the stored times: {spans:?}"
        );
    }
    server.stop().await
}

async fn retry_policy_and_retry_command_run_a_failed_task_again(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let dir = tempfile::tempdir()?;
    let counter = dir.path().join("policy");
    let (model, result) = run(
        &server.engine,
        "testing.wf_retry",
        json!({"file": counter, "succeed_on": 3}),
    )
    .await?;
    assert_eq!(model.status, "succeeded", "{result}");
    assert_eq!(result["output"]["attempts"], "attempt 3");
    let tasks = server.engine.store.workflow_tasks(&model.id).await?;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].attempt, 3);

    // count: 2 allows three attempts in all; the fourth is never made.
    let counter = dir.path().join("exhausted");
    let (model, _) = run(
        &server.engine,
        "testing.wf_retry",
        json!({"file": counter, "succeed_on": 5}),
    )
    .await?;
    assert_eq!(model.status, "failed");
    assert_eq!(std::fs::read_to_string(&counter)?.trim(), "3");

    let counter = dir.path().join("command");
    let (model, result) = run(
        &server.engine,
        "testing.wf_retry_command",
        json!({"file": counter}),
    )
    .await?;
    assert_eq!(model.status, "succeeded", "{result}");
    assert_eq!(result["output"]["attempts"], "attempt 3");
    server.stop().await
}

async fn a_task_past_its_timeout_is_killed_and_a_workflow_past_its_own_times_out(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let (model, result) = run(
        &server.engine,
        "testing.wf_timeouts",
        json!({"seconds": 30}),
    )
    .await?;
    assert_eq!(model.status, "succeeded", "{result}");
    assert_eq!(result["output"]["slow"], "timeout");
    let children = server.engine.store.children_of(&model.id).await?;
    assert_eq!(children[0].status, "canceled", "the sleep was killed");
    // Its worker measured the run: it ended long before the 30 s sleep would have.
    let ran = children[0].finished_at.unwrap_or(i64::MAX) - children[0].started_at.unwrap_or(0);
    assert!(ran < 30_000, "the killed sleep ran {ran} ms");

    let (model, _) = run(&server.engine, "testing.wf_workflow_timeout", json!({})).await?;
    assert_eq!(model.status, "timeout");
    let children = server.engine.store.children_of(&model.id).await?;
    assert_eq!(children[0].status, "canceled");
    server.stop().await
}

async fn a_delayed_task_starts_after_its_delay(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let (model, _) = run(&server.engine, "testing.wf_delay", json!({})).await?;
    assert_eq!(model.status, "succeeded");
    let children = server.engine.store.children_of(&model.id).await?;
    let first = children[0].finished_at.unwrap_or(0);
    let later = children[1].started_at.unwrap_or(0);
    assert!(later - first >= 500, "started {} ms after", later - first);
    server.stop().await
}

async fn a_workflow_runs_another_workflow_as_a_task(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let (model, result) = run(&server.engine, "testing.wf_parent", json!({})).await?;
    assert_eq!(model.status, "succeeded", "{result}");
    assert_eq!(result["output"]["child"], "hello world");
    let children = server.engine.store.children_of(&model.id).await?;
    assert_eq!(children[0].action, "testing.wf_sequence");
    assert_eq!(
        server
            .engine
            .store
            .children_of(&children[0].id)
            .await?
            .len(),
        2
    );
    server.stop().await
}

async fn pause_lets_the_running_task_finish_and_resume_continues(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("steps");
    let engine = &server.engine;
    let id = start(
        engine,
        "testing.wf_steps",
        json!({"file": file, "steps": 4, "seconds": 0.4}),
        "test:u",
    )
    .await?;
    wait_status(engine, &id, "running").await?;
    let outcome = engine.pause(&id).await?;
    assert_eq!(
        outcome,
        squall_engine::engine::ControlOutcome::Done("pausing".into())
    );
    wait_status(engine, &id, "paused").await?;
    let at_pause = lines(&file).len();
    assert!(at_pause < 4, "paused after {at_pause} steps");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(lines(&file).len(), at_pause, "no step ran while paused");
    engine.resume(&id).await?;
    let model = engine.wait_for(&id, WAIT).await?;
    assert_eq!(model.status, "succeeded");
    assert_eq!(lines(&file), vec!["step 0", "step 1", "step 2", "step 3"]);
    // Pausing something that is not a workflow is an error that says so.
    let (plain, _) = run(engine, "core.noop", json!({})).await?;
    let err = engine.pause(&plain.id).await.expect_err("not a workflow");
    assert_eq!(
        err.to_string(),
        format!("execution {} is not a workflow", plain.id)
    );
    server.stop().await
}

async fn cancel_stops_the_workflow_and_kills_its_running_task(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("steps");
    let engine = &server.engine;
    let id = start(
        engine,
        "testing.wf_steps",
        json!({"file": file, "seconds": 30}),
        "test:u",
    )
    .await?;
    let child = eventually(WAIT, "the first step to run", || async {
        let children = engine.store.children_of(&id).await?;
        Ok(children
            .into_iter()
            .find(|c| c.status == "running")
            .map(|c| c.id))
    })
    .await?;
    engine.cancel(&id).await?;
    let model = engine.wait_for(&id, WAIT).await?;
    assert_eq!(model.status, "canceled");
    let child = engine.store.get_execution(&child).await?.context("child")?;
    assert_eq!(child.status, "canceled");
    // Killed, not waited for: its worker measured a run shorter than the 30 s step.
    let ran = child.finished_at.unwrap_or(i64::MAX) - child.started_at.unwrap_or(0);
    assert!(ran < 30_000, "the canceled step ran {ran} ms");
    assert!(lines(&file).is_empty(), "the killed step never wrote");
    server.stop().await
}

async fn rerun_from_failed_keeps_what_succeeded(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("steps");
    let engine = &server.engine;
    let (model, _) = run(
        engine,
        "testing.wf_steps",
        json!({"file": file, "steps": 3, "seconds": 0, "fail_at": 1}),
    )
    .await?;
    assert_eq!(model.status, "failed");
    assert_eq!(lines(&file), vec!["step 0"]);
    std::fs::write(format!("{}.fix", file.display()), "")?;
    let rerun = engine
        .rerun_with(&model.id, ExecutionContext::default(), true)
        .await?;
    let again = engine.wait_for(&rerun, WAIT).await?;
    assert_eq!(again.status, "succeeded", "{:?}", again.result);
    assert_eq!(lines(&file), vec!["step 0", "step 1", "step 2"]);
    server.stop().await
}

fn voter(identity: &str) -> Voter {
    Voter {
        identity: identity.into(),
        roles: vec!["operator".into()],
        may_respond: true,
    }
}

async fn pending_inquiry(engine: &Engine, workflow: &str) -> Result<String> {
    eventually(WAIT, "the approval request", || async {
        let found = engine
            .store
            .list_inquiries(Some("pending"), 50)
            .await?
            .into_iter()
            .find(|i| i.workflow_id.as_deref() == Some(workflow))
            .map(|i| i.id);
        Ok(found)
    })
    .await
}

async fn an_approval_gate_resumes_on_quorum_and_refuses_self_approval(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let engine = &server.engine;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("acted");
    let id = start(
        engine,
        "testing.wf_approval",
        json!({"file": file, "approvers": 2}),
        "console:alice",
    )
    .await?;
    let inquiry = pending_inquiry(engine, &id).await?;
    wait_status(engine, &id, "pending").await?;

    let refused = engine
        .vote(&inquiry, &voter("console:alice"), Vote::Approve(None))
        .await?;
    assert!(
        matches!(&refused, VoteOutcome::Refused(r) if r.contains("started this execution")),
        "{refused:?}"
    );
    let outsider = Voter {
        may_respond: false,
        ..voter("console:mallory")
    };
    let refused = engine
        .vote(&inquiry, &outsider, Vote::Approve(None))
        .await?;
    assert!(matches!(&refused, VoteOutcome::Refused(r) if r.contains("inquiry:respond")));
    let invalid = engine
        .vote(
            &inquiry,
            &voter("console:bob"),
            Vote::Approve(Some(json!({"approved": "yes"}))),
        )
        .await?;
    assert!(
        matches!(&invalid, VoteOutcome::Invalid(r) if r.contains("schema")),
        "{invalid:?}"
    );

    let first = engine
        .vote(&inquiry, &voter("console:bob"), Vote::Approve(None))
        .await?;
    assert_eq!(
        first,
        VoteOutcome::Recorded {
            approvals: 1,
            required: 2
        }
    );
    let withdrawn = engine
        .vote(&inquiry, &voter("console:bob"), Vote::Withdraw)
        .await?;
    assert_eq!(
        withdrawn,
        VoteOutcome::Withdrawn {
            approvals: 0,
            required: 2
        }
    );
    engine
        .vote(&inquiry, &voter("console:bob"), Vote::Approve(None))
        .await?;
    assert!(lines(&file).is_empty(), "nothing acted before the quorum");
    let decided = engine
        .vote(&inquiry, &voter("console:carol"), Vote::Approve(None))
        .await?;
    let VoteOutcome::Decided(decision) = decided else {
        bail!("not decided: {decided:?}")
    };
    assert_eq!(decision.status, "approved");
    assert_eq!(decision.decided_by, vec!["console:bob", "console:carol"]);

    let model = engine.wait_for(&id, WAIT).await?;
    assert_eq!(model.status, "succeeded", "{:?}", model.result);
    assert_eq!(lines(&file), vec!["approved"]);
    let late = engine
        .vote(&inquiry, &voter("console:dave"), Vote::Deny(None))
        .await?;
    assert_eq!(late, VoteOutcome::Closed("approved".into()));

    let kinds: Vec<(String, String)> = engine
        .store
        .audit_for(&inquiry)
        .await?
        .into_iter()
        .map(|a| (a.kind, a.actor))
        .collect();
    let expect = [
        ("inquiry.requested", "console:alice"),
        ("inquiry.vote_refused", "console:alice"),
        ("inquiry.vote_refused", "console:mallory"),
        ("inquiry.vote", "console:bob"),
        ("inquiry.vote", "console:bob"),
        ("inquiry.vote", "console:bob"),
        ("inquiry.vote", "console:carol"),
        ("inquiry.decided", "console:carol"),
    ];
    let expect: Vec<(String, String)> = expect
        .iter()
        .map(|(k, a)| ((*k).to_owned(), (*a).to_owned()))
        .collect();
    assert_eq!(kinds, expect);
    server.stop().await
}

async fn a_denial_stops_the_workflow_and_an_expired_ttl_times_the_gate_out(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let engine = &server.engine;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("acted");
    let id = start(
        engine,
        "testing.wf_approval",
        json!({"file": file}),
        "console:alice",
    )
    .await?;
    let inquiry = pending_inquiry(engine, &id).await?;
    let decided = engine
        .vote(
            &inquiry,
            &voter("console:bob"),
            Vote::Deny(Some("not today".into())),
        )
        .await?;
    assert!(matches!(&decided, VoteOutcome::Decided(d) if d.status == "denied"));
    let model = engine.wait_for(&id, WAIT).await?;
    assert_eq!(model.status, "failed");
    let result: Value = serde_json::from_str(model.result.as_deref().unwrap_or("null"))?;
    assert_eq!(result["output"]["decision"], "denied");
    assert!(lines(&file).is_empty());

    // ttl is in minutes (StackStorm's unit): 0.01 min = 0.6 s.
    let id = start(
        engine,
        "testing.wf_approval",
        json!({"file": file, "ttl": 0.01}),
        "console:alice",
    )
    .await?;
    let inquiry = pending_inquiry(engine, &id).await?;
    let model = engine.wait_for(&id, WAIT).await?;
    assert_eq!(model.status, "failed");
    let inq = engine
        .store
        .get_inquiry(&inquiry)
        .await?
        .context("inquiry")?;
    assert_eq!(inq.status, "expired");
    // Its expiry was the ttl after it was asked, and it was not closed before.
    let (asked, expires, decided) = (
        inq.created_at,
        inq.expires_at.context("expires_at")?,
        inq.decided_at.context("decided_at")?,
    );
    // (The expiry is computed just before the row is stored.)
    assert!(
        (1..=600).contains(&(expires - asked)),
        "expires {} ms after it was asked",
        expires - asked
    );
    assert!(
        decided >= expires,
        "closed {} ms before its expiry",
        expires - decided
    );
    let ask = engine
        .store
        .get_execution(&inq.execution_id)
        .await?
        .context("ask")?;
    assert_eq!(ask.status, ExecutionStatus::Timeout.as_str());
    server.stop().await
}

async fn canceling_a_workflow_waiting_for_approval_cancels_the_request(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let engine = &server.engine;
    let dir = tempfile::tempdir()?;
    let id = start(
        engine,
        "testing.wf_approval",
        json!({"file": dir.path().join("x")}),
        "console:alice",
    )
    .await?;
    let inquiry = pending_inquiry(engine, &id).await?;
    wait_status(engine, &id, "pending").await?;
    engine.cancel(&id).await?;
    assert_eq!(engine.wait_for(&id, WAIT).await?.status, "canceled");
    let inq = engine
        .store
        .get_inquiry(&inquiry)
        .await?
        .context("inquiry")?;
    assert_eq!(inq.status, "canceled");
    let ask = engine
        .store
        .get_execution(&inq.execution_id)
        .await?
        .context("ask")?;
    assert_eq!(ask.status, "canceled");
    server.stop().await
}

async fn context_values_reach_a_shell_command_as_one_quoted_word(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("injected");
    let text = format!(
        "a; touch {} $(touch {})",
        marker.display(),
        marker.display()
    );
    let (model, result) = run(&server.engine, "testing.wf_shell", json!({ "text": text })).await?;
    assert_eq!(model.status, "succeeded", "{result}");
    assert_eq!(result["output"]["said"], text.as_str());
    assert!(!marker.exists(), "nothing from the value ran");
    server.stop().await
}

async fn inquiries_and_workflow_control_over_the_api(backend: Backend) -> Result<()> {
    let server = TestServer::start(backend).await?;
    let dir = tempfile::tempdir()?;
    let (status, created) = server
        .post(
            "/api/v1/executions",
            &json!({"action": "testing.wf_approval", "parameters": {"file": dir.path().join("x")}})
                .to_string(),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let workflow = created["id"].as_str().context("id")?.to_owned();
    let inquiry = pending_inquiry(&server.engine, &workflow).await?;
    let (status, list) = server.get("/api/v1/inquiries").await?;
    assert_eq!(status, 200);
    assert!(
        list.as_array()
            .is_some_and(|l| l.iter().any(|i| i["id"] == inquiry.as_str()))
    );
    let respond = format!("/api/v1/inquiries/{inquiry}/respond");
    // The API key that started it cannot approve it.
    let (status, body) = server.post(&respond, r#"{"approved": true}"#).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = server.post(&respond, "[1]").await?;
    assert_eq!(status, 400, "{body}");
    // Another key approves; a response off the schema is refused first.
    let (_, other) = server.engine.store.create_api_key("oncall").await?;
    let post_as = |body: &'static str| {
        let request = server
            .http
            .post(server.url(&respond))
            .header("St2-Api-Key", other.clone())
            .header("Content-Type", "application/json")
            .body(body);
        async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            Ok::<(u16, Value), anyhow::Error>((
                status,
                response.json().await.unwrap_or(Value::Null),
            ))
        }
    };
    let (status, body) = post_as(r#"{"approved": "yes"}"#).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_response")),
        "{body}"
    );
    let (status, body) = post_as(r#"{"approved": true}"#).await?;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let (status, _) = post_as(r#"{"approved": true}"#).await?;
    assert_eq!(status, 409, "already decided");
    let (status, view) = server.get(&format!("/api/v1/inquiries/{inquiry}")).await?;
    assert_eq!(status, 200);
    assert_eq!(view["votes"][0]["voter"], "oncall");
    assert_eq!(
        server.engine.wait_for(&workflow, WAIT).await?.status,
        "succeeded"
    );

    // Control routes: pause/resume/cancel/rerun and their refusals.
    let file = dir.path().join("steps");
    let (_, created) = server
        .post(
            "/api/v1/executions",
            &json!({"action": "testing.wf_steps", "parameters": {"file": file, "seconds": 0.3}})
                .to_string(),
        )
        .await?;
    let id = created["id"].as_str().context("id")?.to_owned();
    wait_status(&server.engine, &id, "running").await?;
    let (status, body) = server
        .post(&format!("/api/v1/executions/{id}/pause"), "")
        .await?;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pausing")),
        "{body}"
    );
    wait_status(&server.engine, &id, "paused").await?;
    let (status, _) = server
        .post(&format!("/api/v1/executions/{id}/pause"), "")
        .await?;
    assert_eq!(status, 409);
    let (status, body) = server
        .post(&format!("/api/v1/executions/{id}/cancel"), "")
        .await?;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("canceled")),
        "{body}"
    );
    let (status, _) = server
        .post(&format!("/api/v1/executions/{id}/resume"), "")
        .await?;
    assert_eq!(status, 409);
    let (status, body) = server
        .post(
            &format!("/api/v1/executions/{id}/rerun"),
            r#"{"failed_only": true}"#,
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let rerun = body["id"].as_str().context("rerun id")?.to_owned();
    assert_eq!(
        server.engine.wait_for(&rerun, WAIT).await?.status,
        "succeeded"
    );
    let (status, body) = server.post("/api/v1/executions/nope/cancel", "").await?;
    assert_eq!(status, 404, "{body}");
    server.stop().await
}
