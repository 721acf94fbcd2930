//! Discord adapter: the gateway through serenity (identify with the intents
//! squall needs, heartbeats, resume or re-identify on a lost connection,
//! op 7 and op 9), commands by prefix, mention, DM or the `/squall` slash
//! command, and the HTTP Interactions endpoint for bots without a gateway.
//! Replies reference the command (or go in its thread), results are embeds,
//! progress is an edit, approvals are buttons or ✅ ❌ reactions, and
//! nothing squall posts can mention anyone.
//!
//! REST calls go through `rest::Rest` (serenity's own client cannot honour
//! rate limits against any base URL but discord.com); request bodies are
//! serenity's builders.

mod config;
mod inbound;
mod render;
mod rest;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use serenity::all::{
    Context, EventHandler, GatewayIntents, Interaction, Message, Reaction, Ready, ResumedEvent,
    ShardStageUpdateEvent,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use squall_engine::chat::{
    AdapterError, Capabilities, ChannelRef, ChatAdapter, ChatEvent, OutgoingMessage, SentMessage,
};

use crate::common::Backoff;
use inbound::{Inbound, Under};
use rest::{Refused, Rest, code};

pub use config::DiscordConfig;

const PLATFORM: &str = "discord";
/// A `ChannelRef.thread` of a `/squall` command: answered through the
/// interaction's token.
const INTERACTION: &str = "i:";
/// An ephemeral message's flag.
const EPHEMERAL: u64 = 1 << 6;

fn permanent(reason: String) -> AdapterError {
    AdapterError::Permanent {
        platform: PLATFORM.into(),
        reason,
    }
}

/// The gateway intents squall needs: messages in guilds and DMs, their
/// content (a privileged intent, enabled in the Developer Portal), and
/// reactions.
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
        | GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::GUILD_MESSAGE_REACTIONS
        | GatewayIntents::DIRECT_MESSAGE_REACTIONS
}

pub struct DiscordAdapter {
    config: DiscordConfig,
    rest: Arc<Rest>,
    inbound: Arc<Inbound>,
}

impl DiscordAdapter {
    pub fn new(config: DiscordConfig) -> Result<Self, AdapterError> {
        config.validate().map_err(permanent)?;
        let rest = Arc::new(Rest::new(&config.api_url, &config.token.0)?);
        let inbound = Arc::new(Inbound::new(
            config.command.clone(),
            config.replies,
            config.public_key.as_deref(),
            Duration::from_secs(config.signature_window_seconds),
        ));
        Ok(Self {
            config,
            rest,
            inbound,
        })
    }

    /// Who the bot is (`GET /users/@me`), retried until Discord answers;
    /// then the slash command is registered.
    async fn connect(&self, shutdown: &CancellationToken) -> Result<bool, AdapterError> {
        let answer =
            crate::common::until_answered(shutdown, "reaching Discord (users/@me)", || {
                self.rest.me()
            })
            .await?;
        let Some((id, name)) = answer else {
            return Ok(false);
        };
        tracing::info!(bot_user = %id, name, "connected to Discord");
        let _ = self.inbound.me.set(id);
        if !self.config.command.is_empty()
            && let Err(err) = self
                .rest
                .register_command(
                    &self.config.application_id,
                    &self.config.command,
                    &self.config.command_guilds,
                )
                .await
        {
            tracing::warn!(error = %err, command = %self.config.command,
                "registering the slash command failed; prefix and mention commands still work");
        }
        Ok(true)
    }

    async fn gateway(
        &self,
        events: mpsc::Sender<ChatEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        let mut backoff = Backoff::new();
        loop {
            let http = serenity::http::HttpBuilder::new(self.config.token.0.trim())
                .proxy(self.config.api_url.trim_end_matches('/'))
                .ratelimiter_disabled(true)
                .build();
            let handler = Handler {
                inbound: self.inbound.clone(),
                rest: self.rest.clone(),
                events: events.clone(),
            };
            let mut client = serenity::client::ClientBuilder::new_with_http(http, intents())
                .event_handler(handler)
                .await
                .map_err(|e| permanent(format!("starting the gateway client: {e}")))?;
            let shards = client.shard_manager.clone();
            let outcome = tokio::select! {
                r = client.start() => Some(r),
                () = shutdown.cancelled() => None,
            };
            self.inbound.connected.set(false);
            match outcome {
                None => {
                    shards.shutdown_all().await;
                    return Ok(());
                }
                Some(Ok(())) => {
                    tracing::warn!("the Discord gateway connection ended; reconnecting");
                }
                Some(Err(serenity::Error::Gateway(
                    e @ (serenity::gateway::GatewayError::InvalidAuthentication
                    | serenity::gateway::GatewayError::InvalidGatewayIntents
                    | serenity::gateway::GatewayError::DisallowedGatewayIntents),
                ))) => {
                    return Err(permanent(format!(
                        "the gateway refused squall: {e}; check discord.token and enable the \
                         Message Content intent (Developer Portal → Bot)"
                    )));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the Discord gateway failed; reconnecting");
                }
            }
            if !backoff.wait(&shutdown).await {
                return Ok(());
            }
        }
    }

    /// Send a new message to a channel, as a reply to `reference` when set.
    async fn post(
        &self,
        channel: &str,
        message: &OutgoingMessage,
        reference: Option<&str>,
        key: &str,
    ) -> Result<String, Refused> {
        let mut body = render::body(message);
        body["nonce"] = Value::String(nonce(key));
        body["enforce_nonce"] = Value::Bool(true);
        if let Some(id) = reference {
            body["message_reference"] = json!({"message_id": id, "fail_if_not_exists": false});
        }
        let sent = self
            .rest
            .post(&format!("/channels/{channel}/messages"), &body)
            .await?;
        Ok(sent["id"].as_str().unwrap_or_default().to_owned())
    }

    /// What a `thread` value names, asking Discord when squall does not
    /// know (after a restart): under a message of squall's own, a thread;
    /// under anyone else's, a reply.
    async fn under(&self, channel: &str, thread: &str) -> Under {
        if let Some(under) = self.inbound.under(thread) {
            return under;
        }
        let under = if self.inbound.sent_by_me(thread) {
            Under::Root
        } else {
            match self
                .rest
                .get(&format!("/channels/{channel}/messages/{thread}"))
                .await
            {
                Ok(found)
                    if found["author"]["id"].as_str()
                        == self.inbound.me.get().map(String::as_str) =>
                {
                    // Started already (before a restart) or not: starting
                    // it again is answered "exists" and is harmless.
                    Under::Root
                }
                _ => Under::Reply,
            }
        };
        self.inbound.set_under(thread, under);
        under
    }

    /// A message for a `/squall` command: the deferred answer filled in,
    /// then follow-ups; once the token has expired, a reply in the channel.
    async fn send_interaction(
        &self,
        to: &ChannelRef,
        interaction: &str,
        message: &OutgoingMessage,
        key: &str,
    ) -> Result<SentMessage, AdapterError> {
        let app = &self.config.application_id;
        let sent = |id: String| SentMessage {
            to: to.clone(),
            message_id: id,
        };
        let Some(pending) = self.inbound.pending(interaction) else {
            // A restart, or more than 14 minutes: the token is gone.
            let id = self.post(&to.channel, message, None, key).await?;
            self.inbound.remember_sent(&id, to.thread.as_deref());
            return Ok(sent(id));
        };
        let body = render::body(message);
        let result = match &pending.original {
            None => {
                self.rest
                    .patch(
                        &format!("/webhooks/{app}/{}/messages/@original", pending.token),
                        &body,
                    )
                    .await
            }
            Some(_) => {
                self.rest
                    .post(
                        &format!("/webhooks/{app}/{}?wait=true", pending.token),
                        &body,
                    )
                    .await
            }
        };
        let answer = match result {
            Ok(answer) => answer,
            // The deferred answer has not reached Discord yet (the HTTP
            // endpoint answers as the command is queued): again shortly.
            Err(r)
                if r.code == Some(code::UNKNOWN_WEBHOOK)
                    || r.code == Some(code::UNKNOWN_INTERACTION) =>
            {
                return Err(AdapterError::Transient {
                    platform: PLATFORM.into(),
                    reason: "the interaction is not acknowledged yet".into(),
                });
            }
            Err(r) => return Err(r.error),
        };
        let id = answer["id"].as_str().unwrap_or_default().to_owned();
        if pending.original.is_none() {
            self.inbound.answered(interaction, &id);
        } else {
            self.inbound.sent_via(interaction, &id);
        }
        self.inbound.remember_sent(&id, to.thread.as_deref());
        Ok(sent(id))
    }
}

/// A nonce for an outbox key: Discord keeps 25 characters and, with
/// `enforce_nonce`, posts a message sent twice with one nonce once.
fn nonce(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    hex::encode(digest)[..25].to_owned()
}

struct Handler {
    inbound: Arc<Inbound>,
    rest: Arc<Rest>,
    events: mpsc::Sender<ChatEvent>,
}

impl Handler {
    /// Messages sent after the newest one seen in each channel, handled as
    /// if the gateway had delivered them (the seen-set drops repeats).
    async fn catch_up(&self) {
        let channels: Vec<(String, u64)> = self
            .inbound
            .last_seen
            .lock()
            .map(|l| l.iter().map(|(c, id)| (c.clone(), *id)).collect())
            .unwrap_or_default();
        for (channel, after) in channels {
            let path = format!("/channels/{channel}/messages?after={after}&limit=100");
            let found = match self.rest.get(&path).await {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(%channel, error = %err.error, "reading missed Discord messages failed");
                    continue;
                }
            };
            let mut missed: Vec<Message> = found
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| serde_json::from_value(m.clone()).ok())
                        .collect()
                })
                .unwrap_or_default();
            missed.sort_by_key(|m| m.id);
            if !missed.is_empty() {
                tracing::info!(%channel, count = missed.len(), "handling Discord messages sent while the gateway reconnected");
            }
            for message in &missed {
                self.deliver(self.inbound.message(message)).await;
            }
        }
    }

    async fn deliver(&self, event: Option<ChatEvent>) {
        if let Some(event) = event
            && self.events.send(event).await.is_err()
        {
            tracing::warn!("the dispatcher has stopped; a Discord event was dropped");
        }
    }
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _: Context, ready: Ready) {
        let _ = self.inbound.me.set(ready.user.id.to_string());
        self.inbound.connected.set(true);
        tracing::info!(session = %ready.session_id, guilds = ready.guilds.len(), "Discord gateway ready");
        let earlier = self
            .inbound
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if earlier > 0 {
            // A new session (serenity re-identifies after a missed heartbeat
            // ack): Discord does not replay what the old one missed, so read
            // it from each channel's history.
            self.catch_up().await;
        }
    }

    async fn resume(&self, _: Context, _: ResumedEvent) {
        self.inbound.connected.set(true);
        tracing::info!("Discord gateway resumed");
    }

    async fn shard_stage_update(&self, _: Context, event: ShardStageUpdateEvent) {
        self.inbound
            .connected
            .set(event.new == serenity::gateway::ConnectionStage::Connected);
    }

    async fn message(&self, _: Context, message: Message) {
        self.deliver(self.inbound.message(&message)).await;
    }

    async fn reaction_add(&self, _: Context, reaction: Reaction) {
        self.deliver(self.inbound.reaction(&reaction, true)).await;
    }

    async fn reaction_remove(&self, _: Context, reaction: Reaction) {
        self.deliver(self.inbound.reaction(&reaction, false)).await;
    }

    async fn interaction_create(&self, _: Context, interaction: Interaction) {
        let (answer, event) = self.inbound.interaction(&interaction);
        let id = interaction.id().to_string();
        let token = interaction.token().to_owned();
        if let Err(r) = self.rest.callback(&id, &token, &answer).await {
            tracing::warn!(error = %r.error, "answering a Discord interaction failed");
        }
        self.deliver(event).await;
    }
}

#[async_trait::async_trait]
impl ChatAdapter for DiscordAdapter {
    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn connected(&self) -> bool {
        self.inbound.connected.is_up()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: true,
            edits: true,
            reactions: true,
            buttons: true,
            typing: true,
            http_ingress: self.config.public_key.is_some(),
        }
    }

    async fn run(
        &self,
        events: mpsc::Sender<ChatEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        if !self.connect(&shutdown).await? {
            return Ok(());
        }
        if self.config.gateway {
            self.gateway(events, shutdown).await
        } else {
            // Discord calls squall (`http_routes`); nothing to hold open.
            self.inbound.connected.set(true);
            shutdown.cancelled().await;
            Ok(())
        }
    }

    async fn send(
        &self,
        to: &ChannelRef,
        message: &OutgoingMessage,
        key: &str,
    ) -> Result<SentMessage, AdapterError> {
        // Shown only to the person who clicked, through their click.
        if let Some(user) = &message.only_for
            && let Some(token) = self.inbound.click_token(user)
        {
            let mut body = render::body(message);
            body["flags"] = json!(EPHEMERAL);
            self.rest
                .post(
                    &format!("/webhooks/{}/{token}", self.config.application_id),
                    &body,
                )
                .await?;
            return Ok(SentMessage {
                to: to.clone(),
                message_id: String::new(),
            });
        }
        let thread = to.thread.as_deref();
        if let Some(interaction) = thread.and_then(|t| t.strip_prefix(INTERACTION)) {
            return self.send_interaction(to, interaction, message, key).await;
        }
        let (channel, id) = match thread {
            None => (
                to.channel.clone(),
                self.post(&to.channel, message, None, key).await?,
            ),
            Some(thread) => match self.under(&to.channel, thread).await {
                Under::Reply => (
                    to.channel.clone(),
                    self.post(&to.channel, message, Some(thread), key).await?,
                ),
                Under::Thread => (
                    thread.to_owned(),
                    self.post(thread, message, None, key).await?,
                ),
                Under::Root => {
                    let name = render::thread_name(message);
                    match self.rest.start_thread(&to.channel, thread, &name).await {
                        Ok(()) => {
                            self.inbound.set_under(thread, Under::Thread);
                            (
                                thread.to_owned(),
                                self.post(thread, message, None, key).await?,
                            )
                        }
                        // No threads here (a DM, no permission): a reply.
                        Err(r) if r.status == 400 || r.status == 403 => {
                            tracing::debug!(error = %r.error, "starting a thread failed; replying instead");
                            self.inbound.set_under(thread, Under::Reply);
                            (
                                to.channel.clone(),
                                self.post(&to.channel, message, Some(thread), key).await?,
                            )
                        }
                        Err(r) => return Err(r.error),
                    }
                }
            },
        };
        self.inbound.remember_sent(&id, thread);
        Ok(SentMessage {
            // The channel the message lives in (a thread is a channel), so
            // edits and reactions find it.
            to: ChannelRef {
                channel,
                thread: to.thread.clone(),
            },
            message_id: id,
        })
    }

    async fn edit(
        &self,
        sent: &SentMessage,
        message: &OutgoingMessage,
        _key: &str,
    ) -> Result<(), AdapterError> {
        if sent.message_id.is_empty() {
            return Err(AdapterError::unsupported(
                PLATFORM,
                "edit an ephemeral message",
            ));
        }
        let body = render::body(message);
        if let Some((_, pending)) = self.inbound.token_of(&sent.message_id) {
            let path = format!(
                "/webhooks/{}/{}/messages/{}",
                self.config.application_id, pending.token, sent.message_id
            );
            match self.rest.patch(&path, &body).await {
                Ok(_) => return Ok(()),
                Err(r) if r.code == Some(code::UNKNOWN_WEBHOOK) => {}
                Err(r) => return Err(r.error),
            }
        }
        self.rest
            .patch(
                &format!("/channels/{}/messages/{}", sent.to.channel, sent.message_id),
                &body,
            )
            .await?;
        Ok(())
    }

    async fn react(&self, sent: &SentMessage, emoji: &str) -> Result<(), AdapterError> {
        if sent.message_id.is_empty() {
            return Ok(());
        }
        match self
            .rest
            .react(&sent.to.channel, &sent.message_id, emoji)
            .await
        {
            Ok(()) => Ok(()),
            Err(r) if r.code == Some(code::UNKNOWN_MESSAGE) => Ok(()),
            Err(r) => Err(r.error),
        }
    }

    async fn typing(&self, to: &ChannelRef, on: bool) -> Result<(), AdapterError> {
        // Discord's typing notice ends by itself (10 s, or a message).
        if on {
            let channel = match to.thread.as_deref() {
                Some(t) if self.inbound.under(t) == Some(Under::Thread) => t,
                _ => to.channel.as_str(),
            };
            self.rest.typing(channel).await?;
        }
        Ok(())
    }

    fn http_routes(&self, events: mpsc::Sender<ChatEvent>) -> Option<axum::Router> {
        self.config
            .public_key
            .is_some()
            .then(|| inbound::http::routes(self.inbound.clone(), events))
    }
}
