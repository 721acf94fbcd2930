//! `inquirer` (StackStorm's `core.ask`): ask people for a decision. The run
//! records an inquiry and parks its execution in `pending`; a vote that
//! reaches the quorum (or a denial, or the ttl) ends it later.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::parked;
use crate::execution::{ExecutionContext, ExecutionStatus, new_id, now_ms};
use crate::pack::ParamSpec;
use crate::runner::{RunContext, RunOutcome, Runner, runner_param};
use crate::store::{AuditEntry, NewInquiry};

pub struct Inquirer;

/// The response schema when an action gives none: approve or deny, with an
/// optional reason.
pub fn default_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "approved": {"type": "boolean", "description": "Approve (true) or deny (false)."},
            "reason": {"type": "string"}
        },
        "required": ["approved"]
    })
}

#[async_trait::async_trait]
impl Runner for Inquirer {
    fn name(&self) -> &'static str {
        "inquirer"
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        let p =
            |schema: Value, default: Option<Value>, text: &str| runner_param(schema, default, text);
        BTreeMap::from([
            (
                "schema".to_owned(),
                p(
                    json!({"type": "object"}),
                    Some(default_schema()),
                    "JSON schema of the response.",
                ),
            ),
            (
                "ttl".to_owned(),
                p(
                    json!({"type": "number", "minimum": 0}),
                    Some(json!(1440)),
                    "Minutes to wait for a decision (0: forever).",
                ),
            ),
            (
                "users".to_owned(),
                p(
                    json!({"type": "array", "items": {"type": "string"}}),
                    Some(json!([])),
                    "Identities (platform:user) that may respond.",
                ),
            ),
            (
                "roles".to_owned(),
                p(
                    json!({"type": "array", "items": {"type": "string"}}),
                    Some(json!([])),
                    "Roles whose members may respond.",
                ),
            ),
            (
                "route".to_owned(),
                p(
                    json!({"type": "string"}),
                    None,
                    "Notification route (kept for StackStorm compatibility).",
                ),
            ),
            (
                "approvers_required".to_owned(),
                p(
                    json!({"type": "integer", "minimum": 1}),
                    Some(json!(1)),
                    "Approvals needed.",
                ),
            ),
            (
                "allow_self_approval".to_owned(),
                p(
                    json!({"type": "boolean"}),
                    Some(json!(false)),
                    "May whoever started the execution approve it.",
                ),
            ),
            (
                "channel".to_owned(),
                p(
                    json!({"type": "string"}),
                    None,
                    "Where to ask: a room id or a named channel; default: where the execution was started.",
                ),
            ),
            (
                "message".to_owned(),
                p(
                    json!({"type": "string"}),
                    None,
                    "What is being approved, in words.",
                ),
            ),
            (
                "thread".to_owned(),
                p(
                    json!({"type": "string"}),
                    None,
                    "Thread key (as for chatops.post_message): ask in that thread of `channel`.",
                ),
            ),
        ])
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        let host = ctx.host.clone();
        let model = match host.store.get_execution(&ctx.execution_id).await {
            Ok(Some(m)) => m,
            Ok(None) => return RunOutcome::failed("the execution disappeared"),
            Err(e) => return RunOutcome::unavailable(format!("loading the execution: {e}")),
        };
        let context: ExecutionContext = serde_json::from_str(&model.context).unwrap_or_default();
        let ttl_minutes = ctx
            .parameters
            .get("ttl")
            .and_then(Value::as_f64)
            .unwrap_or(1440.0);
        let expires_at = (ttl_minutes > 0.0).then(|| now_ms() + (ttl_minutes * 60_000.0) as i64);
        let target = match ctx.param_str("channel") {
            Some(channel) => {
                Some(json!({ "channel": channel, "thread_key": ctx.param_str("thread") }))
            }
            None => context
                .chat
                .as_ref()
                .and_then(|origin| serde_json::to_value(origin).ok()),
        };
        let mut params = serde_json::Map::new();
        for key in [
            "schema",
            "users",
            "roles",
            "route",
            "approvers_required",
            "allow_self_approval",
            "message",
            "ttl",
        ] {
            if let Some(v) = ctx.parameters.get(key) {
                params.insert(key.to_owned(), v.clone());
            }
        }
        if let Some(w) = &context.workflow {
            params.insert("task".into(), json!(w.task));
            params.insert("workflow".into(), json!(w.root));
        }
        // Name the workflow the approval gates, for the prompt.
        if let Some(parent) = &model.parent_id
            && let Ok(Some(p)) = host.store.get_execution(parent).await
        {
            params.insert("workflow_action".into(), json!(p.action));
        }
        let id = new_id();
        let new = NewInquiry {
            id: id.clone(),
            execution_id: ctx.execution_id.clone(),
            workflow_id: model.parent_id.clone(),
            // The prompt is shown in chat and the API: a secret that reached
            // the message (from the workflow's context) is masked there.
            params: ctx.secrets.scrub_value(Value::Object(params.clone())),
            requester: context.user.clone(),
            target,
            expires_at,
        };
        let audit = AuditEntry {
            actor: context.user.clone().unwrap_or_else(|| "squall".into()),
            kind: "inquiry.requested".into(),
            subject: id,
            detail: json!({
                "execution": ctx.execution_id,
                "workflow": model.parent_id,
                "users": params.get("users"),
                "roles": params.get("roles"),
                "approvers_required": params.get("approvers_required"),
            }),
        };
        let inquiry_id = new.id.clone();
        match host.store.create_inquiry(new, &host.node_id, audit).await {
            Ok(true) => {
                host.inquiries.notify_waiters();
                if host
                    .catalog
                    .current()
                    .has_rules_for(crate::triggers::INQUIRY)
                {
                    // StackStorm's inquiry trigger, for rules that tell people elsewhere.
                    let firing = crate::intake::TriggerFiring {
                        trigger: crate::triggers::INQUIRY.into(),
                        url: None,
                        payload: json!({
                            "id": inquiry_id,
                            "route": params.get("route").cloned().unwrap_or(json!("inquiry")),
                            "execution_id": ctx.execution_id,
                        }),
                        source: format!("inquiry/{inquiry_id}"),
                    };
                    if let Err(e) = host.intake.fire(firing).await {
                        tracing::warn!(inquiry = %inquiry_id, error = %e, "firing core.st2.generic.inquiry failed");
                    }
                }
                parked(ExecutionStatus::Pending)
            }
            Ok(false) => RunOutcome::failed(
                "the execution was no longer running when the inquiry was stored",
            ),
            Err(e) => RunOutcome::unavailable(format!("storing the inquiry: {e}")),
        }
    }
}
