//! In-process runners behind StackStorm's small `core` actions: `core.uuid`,
//! `core.pause`, `core.inject_trigger` and `core.announcement`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{RunContext, RunOutcome, Runner, runner_param};
use crate::execution::ExecutionStatus;
use crate::intake::TriggerFiring;
use crate::pack::ParamSpec;
use crate::runner::Retry;

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
            return RunOutcome::refused(format!(
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
        // The intake refuses only when it is overloaded or its store failed.
        Err(e) => RunOutcome::unavailable(format!("firing {trigger}: {e}")),
    }
}

/// `core.sendmail`: send an email over SMTP. The server comes from the `core`
/// pack's config (`configs/core.yaml`: smtp_host, smtp_port, smtp_security,
/// smtp_username, smtp_password) through the action's parameter defaults.
pub struct Sendmail;

#[async_trait::async_trait]
impl Runner for Sendmail {
    fn name(&self) -> &'static str {
        "sendmail"
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        let string = |default: Option<Value>, what: &str| {
            runner_param(json!({"type": "string"}), default, what)
        };
        let mut password = string(None, "SMTP password.");
        password.secret = true;
        BTreeMap::from([
            (
                "smtp_host".to_owned(),
                string(Some(json!("127.0.0.1")), "SMTP server."),
            ),
            (
                "smtp_port".to_owned(),
                runner_param(
                    json!({"type": "integer", "minimum": 1, "maximum": 65535}),
                    Some(json!(25)),
                    "SMTP port.",
                ),
            ),
            (
                "smtp_security".to_owned(),
                runner_param(
                    json!({"type": "string", "enum": ["none", "starttls", "tls"]}),
                    Some(json!("none")),
                    "none (plain SMTP, for a relay on this host), starttls or tls.",
                ),
            ),
            ("smtp_username".to_owned(), string(None, "SMTP user name.")),
            ("smtp_password".to_owned(), password),
            (
                "timeout".to_owned(),
                runner_param(
                    json!({"type": "number", "minimum": 1}),
                    Some(json!(60)),
                    "Seconds to wait for the SMTP server.",
                ),
            ),
        ])
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        match send_mail(&ctx).await {
            Ok(result) => RunOutcome::succeeded(result),
            Err(_) if ctx.cancel.is_cancelled() => RunOutcome {
                status: ExecutionStatus::Canceled,
                ..RunOutcome::failed("canceled")
            },
            Err((retry, e)) => RunOutcome::failed(ctx.secrets.scrub_text(&e)).retry(retry),
        }
    }
}

/// The message sent, or why not: a bad address or parameter (a retry will
/// not help), or what the SMTP server said (a permanent 5xx answer will not
/// pass; a refused connection, a timeout or a 4xx answer may).
async fn send_mail(ctx: &RunContext) -> Result<Value, (Retry, String)> {
    let bad = |text: String| (Retry::WontHelp, text);
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let text = |name: &str| ctx.param_str(name).unwrap_or_default().trim().to_owned();
    let mailbox = |what: &str, address: &str| {
        address
            .parse::<Mailbox>()
            .map_err(|e| bad(format!("{what} {address:?} is not an email address: {e}")))
    };
    let from = mailbox("from", &text("from"))?;
    let mut message = Message::builder().from(from).subject(text("subject"));
    let recipients: Vec<&str> = ctx
        .param_str("to")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if recipients.is_empty() {
        return Err(bad("to: give at least one address (comma-separated)".into()));
    }
    for to in &recipients {
        message = message.to(mailbox("to", to)?);
    }
    let content_type = match ctx.param_str("content_type").unwrap_or("text/html") {
        "text/plain" => ContentType::TEXT_PLAIN,
        "text/html" => ContentType::TEXT_HTML,
        other => {
            return Err(bad(format!(
                "content_type {other:?}: use text/html or text/plain"
            )));
        }
    };
    let email = message
        .header(content_type)
        .body(ctx.param_str("body").unwrap_or_default().to_owned())
        .map_err(|e| bad(format!("building the message: {e}")))?;

    let host = text("smtp_host");
    let port = ctx
        .parameters
        .get("smtp_port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(25);
    let mut transport = match ctx.param_str("smtp_security").unwrap_or("none") {
        "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
            .map_err(|e| bad(format!("SMTP server {host}: {e}")))?,
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
            .map_err(|e| bad(format!("SMTP server {host}: {e}")))?,
        _ => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone()),
    }
    .port(port)
    .timeout(Some(ctx.timeout()));
    let user = text("smtp_username");
    if !user.is_empty() {
        transport = transport.credentials(Credentials::new(
            user,
            ctx.param_str("smtp_password")
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    let transport = transport.build();
    let sent = tokio::select! {
        sent = transport.send(email) => sent,
        // `run` reports it as canceled.
        () = ctx.cancel.cancelled() => return Err((Retry::MayHelp, "canceled".into())),
    };
    let response = sent.map_err(|e| {
        let retry = if e.is_permanent() {
            Retry::WontHelp
        } else {
            Retry::MayHelp
        };
        (retry, format!("sending through {host}:{port}: {e}"))
    })?;
    Ok(json!({
        "to": recipients,
        "smtp_code": response.code().to_string(),
        "smtp_message": response.message().collect::<Vec<_>>(),
    }))
}
