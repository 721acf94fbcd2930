//! The delivery loop: sends the chat outbox, one row at a time in the order
//! rows became deliverable, each channel's rows strictly in order (the claim
//! refuses a row while an earlier one of its channel is unsent, whichever
//! node holds it). Transient failures retry with backoff, rate limits after
//! the platform's retry-after; a refusal marks the row failed with the
//! platform's reason and the rows after it go on. Acks, results, progress,
//! prompts and decisions are rendered here, from the state they report on.
//!
//! Wake-ups: this dispatcher's own queueing (`outbox`), stored completions
//! (`finished`) and approval requests (`inquiries`); a slow sweep covers
//! rows another node released.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use squall_engine::chat::{AdapterError, ChannelRef, ChatAdapter, OutgoingMessage, SentMessage};
use squall_engine::execution::{ExecutionContext, ExecutionStatus, now_ms};
use squall_engine::store::{Delivery, OutboxKind, StoreError, chat_outbox, execution, inquiry};

use super::{Dispatcher, ack_text};

/// How long a claimed row stays this node's before another may take it over.
const LEASE: Duration = Duration::from_secs(60);
/// The longest sleep between looks at the outbox (rows released by others).
const SWEEP: Duration = Duration::from_secs(2);
const BATCH: u64 = 200;
/// The shortest sleep between looks at the outbox.
const MIN_WAIT: Duration = Duration::from_millis(100);
/// A row the platform keeps answering with transient errors for this long
/// is marked failed (a room the bot can no longer post to, a platform gone).
const GIVE_UP_AFTER_MS: i64 = 24 * 3600 * 1000;

/// Retry delay after `attempts` transient failures: 250 ms doubling to 30 s.
fn backoff(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.clamp(1, 8) - 1).unwrap_or(0);
    (Duration::from_millis(250) * 2u32.pow(doublings)).min(Duration::from_secs(30))
}

fn failure(err: AdapterError, attempts: i32, created_at: i64) -> Delivery {
    let now = now_ms();
    let at =
        |delay: Duration| now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    if now - created_at > GIVE_UP_AFTER_MS && !matches!(err, AdapterError::Permanent { .. }) {
        return Delivery::Failed(format!(
            "not delivered within 24 h after {attempts} attempts; last: {err}"
        ));
    }
    match err {
        AdapterError::Transient { .. } => Delivery::Retry {
            at: at(backoff(attempts)),
            reason: err.to_string(),
        },
        AdapterError::RateLimited { retry_after, .. } => Delivery::Retry {
            at: at(retry_after.unwrap_or_else(|| backoff(attempts))),
            reason: err.to_string(),
        },
        AdapterError::Permanent { .. } | AdapterError::Unsupported { .. } => {
            Delivery::Failed(err.to_string())
        }
    }
}

fn reference(platform: &str, sent: &SentMessage) -> Value {
    json!({
        "platform": platform,
        "channel": sent.to.channel,
        "thread": sent.to.thread,
        "message_id": sent.message_id,
    })
}

/// The message a delivered row left, to edit it.
fn sent_message(row: &chat_outbox::Model) -> Option<SentMessage> {
    if row.state != "sent" {
        return None;
    }
    let r: Value = serde_json::from_str(row.sent_ref.as_deref()?).ok()?;
    Some(SentMessage {
        to: ChannelRef {
            channel: r["channel"].as_str()?.to_owned(),
            thread: r["thread"].as_str().map(str::to_owned),
        },
        message_id: r["message_id"].as_str()?.to_owned(),
    })
}

impl Dispatcher {
    pub(super) async fn delivery_loop(self: Arc<Self>) {
        let platforms: Vec<&str> = self.adapters.keys().copied().collect();
        // Requests asked before prompts were outbox rows get theirs now.
        match self.engine.store.queue_missing_prompts().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(prompts = n, "queued approval prompts that had none"),
            Err(err) => tracing::warn!(error = %err, "queueing missing approval prompts failed"),
        }
        let mut last_sweep: Option<Instant> = None;
        loop {
            let outbox = self.outbox.notified();
            let finished = self.engine.host.finished.notified();
            let inquiries = self.engine.host.inquiries.notified();
            tokio::pin!(outbox, finished, inquiries);
            finished.as_mut().enable();
            inquiries.as_mut().enable();
            if last_sweep.is_none_or(|at| at.elapsed() >= SWEEP) {
                last_sweep = Some(Instant::now());
                if let Err(err) = self.engine.store.release_results().await {
                    tracing::warn!(error = %err, "releasing chat results failed");
                }
            }
            match self.deliver_due(&platforms).await {
                // More may be waiting: behind a full batch, or behind the
                // rows just sent (a batch holds one row per channel).
                Ok(delivered) if delivered > 0 => continue,
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "reading the chat outbox failed"),
            }
            let wait = match self.engine.store.outbox_next_retry(&platforms).await {
                Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
                _ => SWEEP,
            }
            // A due row can still wait behind its channel's earlier row: no spinning.
            .clamp(MIN_WAIT, SWEEP);
            tokio::select! {
                () = &mut outbox => {}
                () = &mut finished => {}
                () = &mut inquiries => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Deliver what is due; returns the rows delivered.
    async fn deliver_due(&self, platforms: &[&str]) -> Result<usize, StoreError> {
        let rows = self
            .engine
            .store
            .outbox_due(platforms, now_ms(), BATCH)
            .await?;
        let mut delivered = 0;
        for row in rows {
            if self.deliver(row).await {
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// Where a row goes from here: the adapter, the channel, and whether the
    /// channel was resolved from a name (recorded with the claim).
    fn destination(
        &self,
        row: &chat_outbox::Model,
    ) -> Option<(Arc<dyn ChatAdapter>, ChannelRef, bool)> {
        match (&row.platform, &row.channel) {
            (Some(platform), Some(channel)) => {
                let adapter = self.adapters.get(platform.as_str())?;
                Some((
                    adapter.clone(),
                    ChannelRef {
                        channel: channel.clone(),
                        thread: row.thread.clone(),
                    },
                    false,
                ))
            }
            _ => {
                let (adapter, mut to) = self.resolve_channel(&row.target)?;
                to.thread = row.thread.clone();
                Some((adapter, to, true))
            }
        }
    }

    /// Claim, send and record one row; false when it was not ours to send.
    async fn deliver(&self, row: chat_outbox::Model) -> bool {
        let store = &self.engine.store;
        let lease_until = now_ms() + i64::try_from(LEASE.as_millis()).unwrap_or(60_000);
        let Some((adapter, to, resolved)) = self.destination(&row) else {
            if row.platform.is_some() || self.held_elsewhere(&row.target) {
                // Another node holds that platform.
                return false;
            }
            if store
                .claim_outbox(&row.id, &self.instance, lease_until, None)
                .await
                .unwrap_or(false)
            {
                let reason = format!(
                    "unknown channel {:?}: name it in [chat.channels] or write platform:room",
                    row.target
                );
                tracing::warn!(row = %row.id, %reason, "a chat message cannot be delivered");
                let _ = store
                    .finish_outbox(&row.id, &self.instance, &Delivery::Failed(reason))
                    .await;
            }
            return false;
        };
        if !adapter.holds(&to.channel) {
            return false;
        }
        let resolved = resolved.then(|| (adapter.platform(), to.channel.as_str()));
        match store
            .claim_outbox(&row.id, &self.instance, lease_until, resolved)
            .await
        {
            Ok(true) => {}
            Ok(false) => return false,
            Err(err) => {
                tracing::warn!(error = %err, "claiming a chat message failed");
                return false;
            }
        }
        let attempts = row.attempts + 1;
        let kind = OutboxKind::parse(&row.kind).unwrap_or(OutboxKind::Notice);
        tracing::debug!(row = %row.id, kind = %row.kind, "delivering a chat message");
        let outcome = self.send_row(kind, &row, &adapter, to, attempts).await;
        tracing::debug!(row = %row.id, "delivered");
        match &outcome {
            Delivery::Failed(reason) => {
                tracing::warn!(row = %row.id, kind = %row.kind, %reason, "the platform refused a chat message")
            }
            Delivery::Retry { reason, .. } => {
                tracing::info!(row = %row.id, attempts, %reason, "a chat message will be sent again")
            }
            Delivery::Sent(_) => self.engine.host.metrics.chat_delivered(
                adapter.platform(),
                (now_ms() - row.ready_at) as f64 / 1000.0,
            ),
            Delivery::Skipped(_) => {}
        }
        if let Err(err) = store.finish_outbox(&row.id, &self.instance, &outcome).await {
            tracing::warn!(error = %err, "recording a chat delivery failed");
        }
        self.delivered.notify_waiters();
        if kind == OutboxKind::Result
            && !matches!(outcome, Delivery::Retry { .. })
            && let Some(id) = &row.execution_id
        {
            self.command_answered(id).await;
        }
        true
    }

    async fn send_row(
        &self,
        kind: OutboxKind,
        row: &chat_outbox::Model,
        adapter: &Arc<dyn ChatAdapter>,
        to: ChannelRef,
        attempts: i32,
    ) -> Delivery {
        let store = &self.engine.store;
        let caps = adapter.capabilities();
        match kind {
            OutboxKind::Reply | OutboxKind::Notice => {
                let message = serde_json::from_str::<OutgoingMessage>(&row.message)
                    .unwrap_or_else(|_| OutgoingMessage::text(row.message.clone()));
                self.send(row, adapter, to, &message, attempts).await
            }
            OutboxKind::Ack | OutboxKind::Result => {
                let Some(model) = self.execution_of(row).await else {
                    return Delivery::Skipped("the execution no longer exists".into());
                };
                let message = if kind == OutboxKind::Ack {
                    OutgoingMessage::text(self.ack_message(&model))
                } else {
                    self.final_message(&model)
                };
                self.send(row, adapter, to, &message, attempts).await
            }
            OutboxKind::Progress => {
                if !caps.edits {
                    return Delivery::Skipped(format!("{} cannot edit", adapter.platform()));
                }
                let ack = match &row.edit_of {
                    Some(id) => store.chat_message(id).await.ok().flatten(),
                    None => None,
                };
                let Some(sent) = ack.as_ref().and_then(sent_message) else {
                    return Delivery::Skipped("the ack was not delivered".into());
                };
                let message =
                    serde_json::from_str::<OutgoingMessage>(&row.message).unwrap_or_default();
                match adapter.edit(&sent, &message, &row.id).await {
                    Ok(()) => Delivery::Sent(reference(adapter.platform(), &sent)),
                    Err(err) => failure(err, attempts, row.created_at),
                }
            }
            OutboxKind::Prompt => {
                let Some(inq) = self.inquiry_of(row).await else {
                    return Delivery::Skipped("the approval request no longer exists".into());
                };
                if inq.status != "pending" {
                    // Its decision row says what happened.
                    return Delivery::Skipped(format!("already {}", inq.status));
                }
                let message = self.prompt_message(&inq, caps.buttons, caps.reactions);
                // Votes on this prompt wait until it is recorded (a reaction
                // can arrive before the send returns).
                self.prompts_in_flight.fetch_add(1, Ordering::SeqCst);
                let outcome = self.send(row, adapter, to, &message, attempts).await;
                if let Delivery::Sent(reference) = &outcome
                    && let Some(message_id) = reference["message_id"].as_str()
                {
                    let key = format!("{}:{message_id}", adapter.platform());
                    if let Err(err) = store
                        .move_prompt(&inq.id, "new", "posted", Some((reference, &key)))
                        .await
                    {
                        tracing::warn!(error = %err, "recording an approval prompt failed");
                    }
                    self.prompts_in_flight.fetch_sub(1, Ordering::SeqCst);
                    self.delivered.notify_waiters();
                    if caps.reactions {
                        let sent = SentMessage {
                            to: ChannelRef {
                                channel: reference["channel"].as_str().unwrap_or_default().into(),
                                thread: reference["thread"].as_str().map(str::to_owned),
                            },
                            message_id: message_id.to_owned(),
                        };
                        for emoji in ["✅", "❌"] {
                            if let Err(err) = adapter.react(&sent, emoji).await {
                                tracing::debug!(error = %err, "adding a vote reaction failed");
                            }
                        }
                    }
                } else {
                    self.prompts_in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                outcome
            }
            OutboxKind::Decision => {
                let Some(inq) = self.inquiry_of(row).await else {
                    return Delivery::Skipped("the approval request no longer exists".into());
                };
                let message = self.decision_message(&inq);
                let prompt = match &row.edit_of {
                    Some(id) => store.chat_message(id).await.ok().flatten(),
                    None => None,
                };
                let outcome = match prompt.as_ref().and_then(sent_message) {
                    Some(sent) if caps.edits => {
                        match adapter.edit(&sent, &message, &row.id).await {
                            Ok(()) => Delivery::Sent(reference(adapter.platform(), &sent)),
                            Err(err) => failure(err, attempts, row.created_at),
                        }
                    }
                    // No edits, or the prompt never went out: say it anew.
                    _ => self.send(row, adapter, to, &message, attempts).await,
                };
                if matches!(outcome, Delivery::Sent(_)) {
                    let _ = store.move_prompt(&inq.id, "posted", "final", None).await;
                }
                outcome
            }
        }
    }

    /// Send a new message, in the thread its thread key already has (and
    /// recording the thread a key's first message starts).
    async fn send(
        &self,
        row: &chat_outbox::Model,
        adapter: &Arc<dyn ChatAdapter>,
        mut to: ChannelRef,
        message: &OutgoingMessage,
        attempts: i32,
    ) -> Delivery {
        let store = &self.engine.store;
        let key = row
            .thread_key
            .as_ref()
            .map(|k| format!("{k}|{}|{}", adapter.platform(), to.channel));
        let mut first_of_thread = false;
        if let Some(key) = &key
            && to.thread.is_none()
        {
            match store.chat_thread(key).await {
                Ok(Some(root)) => to.thread = Some(root),
                Ok(None) => first_of_thread = true,
                Err(err) => tracing::warn!(error = %err, "looking up a notice thread failed"),
            }
        }
        match adapter.send(&to, message, &row.id).await {
            Ok(sent) => {
                if first_of_thread
                    && let Some(key) = &key
                    && let Err(err) = store.set_chat_thread(key, &sent.message_id).await
                {
                    tracing::warn!(error = %err, "recording a notice thread failed");
                }
                Delivery::Sent(reference(adapter.platform(), &sent))
            }
            Err(err) => failure(err, attempts, row.created_at),
        }
    }

    async fn inquiry_of(&self, row: &chat_outbox::Model) -> Option<inquiry::Model> {
        let id = row.inquiry_id.as_deref()?;
        self.engine.store.get_inquiry(id).await.ok().flatten()
    }

    async fn execution_of(&self, row: &chat_outbox::Model) -> Option<execution::Model> {
        let id = row.execution_id.as_deref()?;
        self.engine.store.get_execution(id).await.ok().flatten()
    }

    fn context_of(model: &execution::Model) -> ExecutionContext {
        serde_json::from_str(&model.context).unwrap_or_default()
    }

    /// "Running X as execution Y", the alias's ack format, or for a re-run
    /// "Retrying Z as execution Y".
    fn ack_message(&self, model: &execution::Model) -> String {
        let context = Self::context_of(model);
        if let Some(of) = &context.rerun_of {
            let how = if context.rerun_failed {
                " from its failed tasks"
            } else {
                ""
            };
            return format!("Retrying {of}{how} as execution {}.", model.id);
        }
        let catalog = self.engine.catalog.current();
        let alias = context
            .chat
            .as_ref()
            .and_then(|c| c.alias.as_deref())
            .and_then(|r| catalog.alias(r));
        alias
            .and_then(|a| {
                ack_text(
                    &self.engine,
                    a,
                    &model.id,
                    context.user.as_deref().unwrap_or_default(),
                )
            })
            .unwrap_or_else(|| format!("Running {} as execution {}.", model.action, model.id))
    }

    /// The final message of a command: its result, or for one abandoned by
    /// a stopped squall, how to run it again.
    fn final_message(&self, model: &execution::Model) -> OutgoingMessage {
        let context = Self::context_of(model);
        let catalog = self.engine.catalog.current();
        let alias = context
            .chat
            .as_ref()
            .and_then(|c| c.alias.as_deref())
            .and_then(|r| catalog.alias(r))
            .cloned();
        let mut message =
            self.result_message(model, alias.as_ref(), self.settings.output_tail_chars);
        if ExecutionStatus::parse(&model.status) == Some(ExecutionStatus::Abandoned) {
            message.text = format!(
                "{} was abandoned when squall stopped; `{}retry {}` runs it again.",
                model.id, self.settings.prefix, model.id
            );
        }
        message
    }

    /// Rows this dispatcher still has to deliver (results held included).
    pub(super) async fn undelivered(&self, held_too: bool) -> Result<usize, StoreError> {
        let rows = self.engine.store.chat_messages_unsent().await?;
        let asked: std::collections::HashSet<String> = self
            .running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        Ok(rows
            .iter()
            // Held results count only for commands asked here.
            .filter(|row| {
                row.state != "held"
                    || held_too
                        && row
                            .execution_id
                            .as_ref()
                            .is_some_and(|id| asked.contains(id))
            })
            .filter(|row| {
                self.destination(row)
                    .is_some_and(|(adapter, to, _)| adapter.holds(&to.channel))
            })
            .count())
    }
}
