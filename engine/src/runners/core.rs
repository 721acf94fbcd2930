//! In-process runners behind StackStorm's small `core` actions: `core.uuid`,
//! `core.pause`, `core.inject_trigger` and `core.announcement`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{RunContext, RunOutcome, Runner, runner_param};
use crate::execution::ExecutionStatus;
use crate::intake::TriggerFiring;
use crate::pack::ParamSpec;

/// `core.uuid`: a new UUID, version 4 (random) or 1 (time-based).
pub struct UuidRunner;

#[async_trait::async_trait]
impl Runner for UuidRunner {
    fn name(&self) -> &'static str {
        "uuid"
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        BTreeMap::from([(
            "uuid_type".to_owned(),
            runner_param(
                json!({"type": "string", "enum": ["uuid1", "uuid4"]}),
                Some(json!("uuid4")),
                "uuid4 (random) or uuid1 (time-based).",
            ),
        )])
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        let id = match ctx.param_str("uuid_type").unwrap_or("uuid4") {
            "uuid1" => {
                let node: [u8; 6] = rand::random();
                uuid::Uuid::now_v1(&node)
            }
            _ => uuid::Uuid::new_v4(),
        };
        RunOutcome::succeeded(json!(id.to_string()))
    }
}

/// `core.pause`: wait `max_pause` seconds (a workflow's deliberate delay);
/// canceling ends the wait.
pub struct PauseRunner;

#[async_trait::async_trait]
impl Runner for PauseRunner {
    fn name(&self) -> &'static str {
        "pause"
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        BTreeMap::from([(
            "max_pause".to_owned(),
            runner_param(
                json!({"type": "number", "minimum": 0, "maximum": 86400}),
                Some(json!(5)),
                "Seconds to wait.",
            ),
        )])
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        let seconds = ctx
            .parameters
            .get("max_pause")
            .and_then(Value::as_f64)
            .unwrap_or(5.0);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(seconds.max(0.0))) => {
                RunOutcome::succeeded(json!({"paused_seconds": seconds}))
            }
            () = ctx.cancel.cancelled() => RunOutcome {
                status: ExecutionStatus::Canceled,
                ..RunOutcome::failed("canceled")
            },
        }
    }
}

/// `core.inject_trigger`: fire a trigger with a payload, as a sensor would.
pub struct InjectTrigger;

#[async_trait::async_trait]
impl Runner for InjectTrigger {
    fn name(&self) -> &'static str {
        "inject-trigger"
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        let mut trigger = runner_param(
            json!({"type": "string", "minLength": 1}),
            None,
            "The trigger type to fire (`pack.name`).",
        );
        trigger.required = true;
        BTreeMap::from([
            ("trigger".to_owned(), trigger),
            (
                "payload".to_owned(),
                runner_param(json!({"type": "object"}), Some(json!({})), "The payload."),
            ),
            (
                "trace_tag".to_owned(),
                runner_param(
                    json!({"type": "string"}),
                    None,
                    "A tag recorded with the trigger instance's source.",
                ),
            ),
        ])
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        let trigger = ctx.param_str("trigger").unwrap_or_default().to_owned();
        if !crate::triggers::is_known(&trigger) {
            return RunOutcome::failed(format!(
                "unknown trigger type {trigger:?}: a built-in one or a `pack.name` outside core. and squall."
            ));
        }
        let payload = ctx
            .parameters
            .get("payload")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let source = match ctx.param_str("trace_tag") {
            Some(tag) => format!("execution/{}/{tag}", ctx.execution_id),
            None => format!("execution/{}", ctx.execution_id),
        };
        fire(&ctx, trigger, payload, source).await
    }
}

/// `core.announcement`: fire `core.st2.generic.announcement` with the action's
/// parameters as payload, for rules that post it (StackStorm's announcement runner).
pub struct Announcement;

#[async_trait::async_trait]
impl Runner for Announcement {
    fn name(&self) -> &'static str {
        "announcement"
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        BTreeMap::from([
            (
                "route".to_owned(),
                runner_param(
                    json!({"type": "string"}),
                    Some(json!("general")),
                    "Which announcement route (rules match on it).",
                ),
            ),
            (
                "experimental".to_owned(),
                runner_param(
                    json!({"type": "boolean"}),
                    Some(json!(true)),
                    "Accepted for StackStorm compatibility.",
                ),
            ),
        ])
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        let route = ctx.param_str("route").unwrap_or("general").to_owned();
        let payload: Map<String, Value> = ctx
            .parameters
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "route" | "experimental"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut payload = ctx.secrets.scrub_value(Value::Object(payload));
        payload["route"] = json!(route);
        let source = format!("execution/{}", ctx.execution_id);
        fire(&ctx, crate::triggers::ANNOUNCEMENT.into(), payload, source).await
    }
}

async fn fire(ctx: &RunContext, trigger: String, payload: Value, source: String) -> RunOutcome {
    let firing = TriggerFiring {
        trigger: trigger.clone(),
        url: None,
        payload,
        source,
    };
    match ctx.host.intake.fire(firing).await {
        Ok(id) => RunOutcome::succeeded(json!({"trigger": trigger, "trigger_instance": id})),
        Err(e) => RunOutcome::failed(format!("firing {trigger}: {e}")),
    }
}
