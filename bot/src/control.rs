//! CLI: execution control (cancel, pause, resume, re-run) and approval
//! requests, against a running server (`--server`) or the database.

use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

use squall::cli::{ExecutionCommand, InquiryCommand};
use squall::config::Config;
use squall::server;
use squall_engine::engine::ControlOutcome;
use squall_engine::execution::ExecutionContext;
use squall_engine::inquiry::{self, Vote, VoteOutcome, Voter};
use squall_engine::rbac::Permission;
use squall_engine::store::CancelOutcome;

use super::{Remote, print_json_or};

/// Who the CLI acts as without a server: the login user.
pub(crate) fn cli_identity() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

pub async fn execution_control(
    config: &Config,
    remote: Option<Remote>,
    cmd: ExecutionCommand,
) -> Result<ExitCode> {
    if let Some(remote) = remote {
        let (path, body) = match &cmd {
            ExecutionCommand::Cancel { id } => {
                (format!("/api/v1/executions/{id}/cancel"), json!({}))
            }
            ExecutionCommand::Pause { id } => (format!("/api/v1/executions/{id}/pause"), json!({})),
            ExecutionCommand::Resume { id } => {
                (format!("/api/v1/executions/{id}/resume"), json!({}))
            }
            ExecutionCommand::Rerun { id, failed } => (
                format!("/api/v1/executions/{id}/rerun"),
                json!({ "failed_only": failed }),
            ),
            _ => bail!("not a control command"),
        };
        let answer = remote.post(&path, &body).await?;
        match &cmd {
            ExecutionCommand::Rerun { id, .. } => {
                println!("{id} re-runs as {}", answer["id"].as_str().unwrap_or("?"));
            }
            _ => println!(
                "{}: {}",
                answer["id"].as_str().unwrap_or("?"),
                answer["status"].as_str().unwrap_or("?")
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let engine = server::open_engine(config).await?;
    let conflict = |id: &str, verb: &str, status: String| -> Result<ExitCode> {
        bail!("cannot {verb} {id} while it is {status}")
    };
    let me = cli_identity();
    match cmd {
        ExecutionCommand::Cancel { id } => {
            match engine.cancel(&id).await? {
                CancelOutcome::Canceled => println!("{id}: canceled"),
                CancelOutcome::Canceling => println!("{id}: canceling (its worker stops it)"),
                CancelOutcome::AlreadyFinished(s) => bail!("{id} already finished ({s})"),
                CancelOutcome::NotFound => bail!("no execution {id}"),
            }
            engine
                .record_control(&me, "execution.cancel", &id, "cli")
                .await;
        }
        ExecutionCommand::Pause { id } => {
            match engine.pause(&id).await? {
                ControlOutcome::Done(s) => println!("{id}: {s}"),
                ControlOutcome::NotApplicable(s) => return conflict(&id, "pause", s),
            }
            engine
                .record_control(&me, "execution.pause", &id, "cli")
                .await;
        }
        ExecutionCommand::Resume { id } => {
            match engine.resume(&id).await? {
                ControlOutcome::Done(s) => println!("{id}: {s}"),
                ControlOutcome::NotApplicable(s) => return conflict(&id, "resume", s),
            }
            engine
                .record_control(&me, "execution.resume", &id, "cli")
                .await;
        }
        ExecutionCommand::Rerun { id, failed } => {
            let context = ExecutionContext {
                source: "cli".into(),
                user: Some(cli_identity()),
                ..ExecutionContext::default()
            };
            let new = engine.rerun_with(&id, context, failed).await?;
            engine
                .record_control(&me, "execution.rerun", &id, "cli")
                .await;
            println!("{id} re-runs as {new}");
        }
        _ => bail!("not a control command"),
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(view: &Value) -> String {
    let mut out = format!(
        "{}  {}  {}\n  requested by {}; needs {} approval(s)",
        view["id"].as_str().unwrap_or("?"),
        view["status"].as_str().unwrap_or("?"),
        view["message"].as_str().unwrap_or(""),
        view["requester"].as_str().unwrap_or("squall"),
        view["approvers_required"],
    );
    if let Some(votes) = view["votes"].as_array() {
        for v in votes {
            out.push_str(&format!(
                "\n  {} {} at {}",
                v["voter"].as_str().unwrap_or("?"),
                if v["approve"] == Value::Bool(true) {
                    "approved"
                } else {
                    "denied"
                },
                v["at"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

pub async fn inquiry(
    config: &Config,
    remote: Option<Remote>,
    cmd: InquiryCommand,
) -> Result<ExitCode> {
    match cmd {
        InquiryCommand::List { all, json } => {
            let list = match remote {
                Some(r) => {
                    r.get(if all {
                        "/api/v1/inquiries?status=all"
                    } else {
                        "/api/v1/inquiries"
                    })
                    .await?
                }
                None => {
                    let engine = server::open_engine(config).await?;
                    let models = engine
                        .store
                        .list_inquiries((!all).then_some("pending"), 100)
                        .await?;
                    Value::Array(models.iter().map(|i| inquiry::view(i, None)).collect())
                }
            };
            print_json_or(json, &list, || {
                let items = list.as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    "no approval requests\n".to_owned()
                } else {
                    items.iter().map(|i| describe(i) + "\n").collect()
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        InquiryCommand::Get { id, json } => {
            let view = match remote {
                Some(r) => r.get(&format!("/api/v1/inquiries/{id}")).await?,
                None => {
                    let engine = server::open_engine(config).await?;
                    let inq = engine
                        .store
                        .get_inquiry(&id)
                        .await?
                        .ok_or_else(|| anyhow!("no inquiry {id}"))?;
                    let votes = engine.store.inquiry_votes(&id).await?;
                    inquiry::view(&inq, Some(&votes))
                }
            };
            print_json_or(json, &view, || describe(&view) + "\n");
            Ok(ExitCode::SUCCESS)
        }
        InquiryCommand::Respond { id, response } => {
            let response: Value = serde_json::from_str(&response).map_err(|e| {
                anyhow!("the response must be JSON, e.g. '{{\"approved\": true}}': {e}")
            })?;
            if let Some(r) = remote {
                let answer = r
                    .post(&format!("/api/v1/inquiries/{id}/respond"), &response)
                    .await?;
                println!("{id}: {}", answer["status"].as_str().unwrap_or("?"));
                return Ok(ExitCode::SUCCESS);
            }
            let engine = server::open_engine(config).await?;
            let rbac = server::load_rbac(config).map_err(|e| anyhow!("RBAC: {e}"))?;
            let principal = rbac.principal(&cli_identity());
            let voter = Voter {
                identity: principal.identity.clone(),
                may_respond: rbac.allows(&principal, &Permission::InquiryRespond),
                roles: principal.roles,
            };
            match engine
                .vote(&id, &voter, Vote::Approve(Some(response)))
                .await?
            {
                VoteOutcome::NotFound => bail!("no inquiry {id}"),
                VoteOutcome::Closed(s) => bail!("inquiry {id} is already {s}"),
                VoteOutcome::Refused(reason) | VoteOutcome::Invalid(reason) => bail!("{reason}"),
                VoteOutcome::Recorded {
                    approvals,
                    required,
                }
                | VoteOutcome::Withdrawn {
                    approvals,
                    required,
                } => {
                    println!("{id}: pending ({approvals} of {required} approvals)");
                }
                VoteOutcome::Decided(d) => {
                    println!("{id}: {} by {}", d.status, d.decided_by.join(", "))
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
