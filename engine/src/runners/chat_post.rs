//! `chat-post` (`chatops.post_message`): post a notice to a chat channel.
//! The run queues the message; a chat node delivers it (to the thread of
//! `thread` when that key already has one) and the run ends with where it
//! went, or fails when nobody delivered it in time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{RunContext, RunOutcome, Runner, runner_param};
use crate::pack::ParamSpec;

pub struct ChatPost;

#[async_trait::async_trait]
impl Runner for ChatPost {
    fn name(&self) -> &'static str {
        "chat-post"
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        let mut channel = runner_param(
            json!({"type": "string", "minLength": 1}),
            None,
            "A room id, `platform:room`, or a channel named in [chat.channels].",
        );
        channel.required = true;
        let mut message = runner_param(json!({"type": "string"}), None, "Markdown text.");
        message.required = true;
        BTreeMap::from([
            ("channel".to_owned(), channel),
            ("message".to_owned(), message),
            (
                "thread".to_owned(),
                runner_param(
                    json!({"type": "string"}),
                    None,
                    "Thread key: notices with the same key (e.g. an alert fingerprint) go to one thread.",
                ),
            ),
            (
                "title".to_owned(),
                runner_param(json!({"type": "string"}), None, "A bold first line."),
            ),
            (
                "timeout".to_owned(),
                runner_param(
                    json!({"type": "number", "minimum": 1}),
                    Some(json!(30)),
                    "Seconds to wait for a chat node to deliver it.",
                ),
            ),
        ])
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        let channel = ctx.param_str("channel").unwrap_or_default().to_owned();
        // What goes to a channel never carries a secret this execution holds.
        let message = ctx.secrets.scrub_value(json!({
            "title": ctx.param_str("title"),
            "text": ctx.param_str("message").unwrap_or_default(),
        }));
        let thread = ctx.param_str("thread").filter(|t| !t.is_empty());
        let store = &ctx.host.store;
        let id = match store
            .queue_chat_message(&ctx.execution_id, &channel, &message, thread)
            .await
        {
            Ok(id) => id,
            Err(e) => return RunOutcome::unavailable(format!("queueing the message: {e}")),
        };
        ctx.host.inquiries.notify_waiters();
        let deadline = Instant::now() + ctx.timeout().min(Duration::from_secs(3600));
        loop {
            match store.chat_message(&id).await {
                Ok(Some(m)) if m.state == "sent" => {
                    let sent: Value = m
                        .sent_ref
                        .as_deref()
                        .and_then(|r| serde_json::from_str(r).ok())
                        .unwrap_or(Value::Null);
                    return RunOutcome::succeeded(sent);
                }
                Ok(Some(m)) if m.state == "failed" => {
                    return RunOutcome::failed(
                        m.error
                            .unwrap_or_else(|| "the message could not be sent".into()),
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "checking a chat message failed"),
            }
            if Instant::now() >= deadline {
                let _ = store
                    .move_chat_message(&id, "new", "failed", None, Some("not delivered in time"))
                    .await;
                return RunOutcome::unavailable(format!(
                    "no chat node delivered the message to {channel:?} in time: is a chat adapter configured and running?"
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = ctx.cancel.cancelled() => {
                    let _ = store.move_chat_message(&id, "new", "failed", None, Some("canceled")).await;
                    return RunOutcome { status: crate::execution::ExecutionStatus::Canceled, ..RunOutcome::failed("canceled") };
                }
            }
        }
    }
}
