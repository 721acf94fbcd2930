//! Slack adapter on slack-morphism: Socket Mode (the default: a WebSocket
//! squall opens, no public URL) or the Events API (signed requests to
//! `/api/v1/chat/slack/events`), commands by prefix, mention, DM or slash
//! command, replies in the command's thread as Block Kit, progress by
//! `chat.update`, approvals by button or reaction, and Web API rate limits
//! honoured through `Retry-After`.

mod config;
mod inbound;
mod outbound;
mod render;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slack_morphism::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use squall_engine::chat::{
    AdapterError, Capabilities, ChannelRef, ChatAdapter, ChatEvent, OutgoingMessage, SentMessage,
};

pub use config::{SlackConfig, SlackMode};

const PLATFORM: &str = "slack";

/// How long a looked-up display name is kept.
const NAME_TTL: Duration = Duration::from_secs(3600);

pub struct SlackAdapter {
    config: SlackConfig,
    api: outbound::Api,
    inbound: Arc<inbound::Inbound>,
    /// Display names from `users.info`, by user id.
    names: Mutex<HashMap<String, (Option<String>, Instant)>>,
    http: reqwest::Client,
    /// Slack answered `auth.test` and (Socket Mode) the listener runs.
    connected: squall_engine::chat::ConnectionState,
}

impl SlackAdapter {
    pub fn new(config: SlackConfig) -> Result<Self, AdapterError> {
        config.validate().map_err(permanent)?;
        let client = outbound::client(&config.api_url)?;
        let api = outbound::Api::new(client, &config.bot_token.0);
        let inbound = Arc::new(inbound::Inbound::new(
            config.threads,
            config.signing_secret.as_ref().map(|s| s.0.clone()),
            Duration::from_secs(config.signature_window_seconds),
        ));
        Ok(Self {
            config,
            api,
            inbound,
            names: Mutex::default(),
            connected: squall_engine::chat::ConnectionState::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| permanent(e.to_string()))?,
        })
    }

    /// `Name (slack:U…)` for every `slack:U…` identity in the text, by
    /// `users.info` (cached); identities whose name cannot be found stay.
    async fn with_names(&self, message: &OutgoingMessage) -> OutgoingMessage {
        let re = identity_pattern();
        let mut users: Vec<String> = Vec::new();
        for text in std::iter::once(&message.text).chain(message.title.iter()) {
            for m in re.captures_iter(text) {
                users.push(m[1].to_owned());
            }
        }
        if users.is_empty() {
            return message.clone();
        }
        users.sort();
        users.dedup();
        let mut names = HashMap::new();
        for user in users {
            if let Some(name) = self.display_name(&user).await {
                names.insert(user, name);
            }
        }
        let replace = |text: &str| {
            re.replace_all(text, |c: &regex::Captures| match names.get(&c[1]) {
                Some(name) => format!("{name} (slack:{})", &c[1]),
                None => c[0].to_owned(),
            })
            .into_owned()
        };
        let mut out = message.clone();
        out.text = replace(&message.text);
        out.title = message.title.as_deref().map(replace);
        out
    }

    async fn display_name(&self, user: &str) -> Option<String> {
        if let Ok(names) = self.names.lock()
            && let Some((name, at)) = names.get(user)
            && at.elapsed() < NAME_TTL
        {
            return name.clone();
        }
        let name = match self.api.display_name(user).await {
            Ok(name) => name,
            Err(err) => {
                tracing::debug!(error = %err, user, "users.info failed");
                return None;
            }
        };
        if let Ok(mut names) = self.names.lock() {
            if names.len() > 10_000 {
                names.clear();
            }
            names.insert(user.to_owned(), (name.clone(), Instant::now()));
        }
        name
    }

    /// Who the bot is (`auth.test`), retried until Slack answers.
    async fn whoami(&self, shutdown: &CancellationToken) -> Result<bool, AdapterError> {
        let answer = crate::common::until_answered(shutdown, "reaching Slack (auth.test)", || {
            self.api.whoami()
        })
        .await?;
        let Some((user_id, bot_id)) = answer else {
            return Ok(false);
        };
        tracing::info!(bot_user = %user_id, bot = ?bot_id, "connected to Slack");
        let _ = self.inbound.me.set(inbound::Me { user_id });
        Ok(true)
    }

    async fn socket_mode(
        &self,
        events: mpsc::Sender<ChatEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        let app_token = self
            .config
            .app_token
            .as_ref()
            .map(|t| SlackApiToken::new(SlackApiTokenValue(t.0.clone())))
            .ok_or_else(|| permanent("Socket Mode needs slack.app_token".into()))?;
        let mut callbacks = SlackSocketModeListenerCallbacks::<outbound::Connector>::new();
        let (inb, tx) = (self.inbound.clone(), events.clone());
        callbacks.push_events_callback = Box::new(move |ev: SlackPushEventCallback, _, _| {
            let (inb, tx) = (inb.clone(), tx.clone());
            async move {
                let body = serde_json::to_value(&ev)?;
                inb.push_event(&body, &tx).await;
                Ok(())
            }
        });
        let (inb, tx) = (self.inbound.clone(), events.clone());
        callbacks.command_callback = Box::new(move |ev: SlackCommandEvent, _, _| {
            let (inb, tx) = (inb.clone(), tx.clone());
            async move {
                let form = command_form(&ev);
                inb.command(&form, &tx).await;
                Ok(SlackCommandEventResponse::new(SlackMessageContent::new()))
            }
        });
        let (inb, tx) = (self.inbound.clone(), events.clone());
        callbacks.interaction_callback = Box::new(move |ev: SlackInteractionEvent, _, _| {
            let (inb, tx) = (inb.clone(), tx.clone());
            async move {
                let payload = serde_json::to_value(&ev)?;
                inb.interaction(&payload, &tx).await;
                Ok(SlackInteractionResponse::Empty)
            }
        });
        let environment = Arc::new(
            SlackClientEventsListenerEnvironment::new(self.api.client.clone())
                .with_error_handler(socket_error),
        );
        let listener = SlackClientSocketModeListener::new(
            &SlackClientSocketModeConfig::new()
                .with_max_connections_count(self.config.connections)
                .with_initial_backoff_in_seconds(self.config.reconnect_seconds)
                .with_reconnect_timeout_in_seconds(self.config.reconnect_seconds.max(1)),
            environment,
            callbacks,
        );
        listener
            .listen_for(&app_token)
            .await
            .map_err(outbound::error)?;
        listener.start().await;
        self.connected.set(true);
        shutdown.cancelled().await;
        self.connected.set(false);
        listener.shutdown().await;
        Ok(())
    }
}

fn permanent(reason: String) -> AdapterError {
    AdapterError::Permanent {
        platform: PLATFORM.into(),
        reason,
    }
}

fn socket_error(
    err: Box<dyn std::error::Error + Send + Sync>,
    _: Arc<SlackClient<outbound::Connector>>,
    _: SlackClientEventsUserState,
) -> HttpStatusCode {
    tracing::warn!(error = %err, "Slack Socket Mode");
    HttpStatusCode::OK
}

/// A slash command's fields as the Events API would post them.
fn command_form(ev: &SlackCommandEvent) -> HashMap<String, String> {
    let mut form = HashMap::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(ev) {
        for (k, v) in map {
            if let serde_json::Value::String(s) = v {
                form.insert(k, s);
            }
        }
    }
    form
}

fn identity_pattern() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\bslack:([UW][A-Z0-9]{2,})\b").expect("regex"))
}

/// Slack's names of the emoji squall reacts with.
fn emoji_name(emoji: &str) -> &str {
    match emoji {
        "✅" => "white_check_mark",
        "❌" => "x",
        "👀" => "eyes",
        "👍" => "+1",
        "👎" => "-1",
        other => other.trim_matches(':'),
    }
}

#[async_trait::async_trait]
impl ChatAdapter for SlackAdapter {
    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn connected(&self) -> bool {
        self.connected.is_up()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: self.config.threads,
            edits: true,
            reactions: true,
            buttons: true,
            typing: false,
            http_ingress: self.config.mode() == SlackMode::Events,
        }
    }

    async fn run(
        &self,
        events: mpsc::Sender<ChatEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        if !self.whoami(&shutdown).await? {
            return Ok(());
        }
        match self.config.mode() {
            SlackMode::Socket => self.socket_mode(events, shutdown).await,
            SlackMode::Events => {
                // Slack calls squall (`http_routes`); nothing to hold open.
                self.connected.set(true);
                shutdown.cancelled().await;
                Ok(())
            }
        }
    }

    async fn send(
        &self,
        to: &ChannelRef,
        message: &OutgoingMessage,
        _key: &str,
    ) -> Result<SentMessage, AdapterError> {
        let message = self.with_names(message).await;
        match self.api.post(to, &message).await {
            Ok(sent) => {
                self.inbound.remember_thread(&sent);
                Ok(sent)
            }
            // A slash command in a channel squall is not in: answered
            // through the command's response_url.
            Err(AdapterError::Permanent { reason, .. })
                if matches!(reason.as_str(), "not_in_channel" | "channel_not_found") =>
            {
                let Some(url) = self.inbound.response_url(&to.channel) else {
                    return Err(permanent(reason));
                };
                outbound::respond(&self.http, &url, &message).await?;
                Ok(SentMessage {
                    to: to.clone(),
                    message_id: String::new(),
                })
            }
            Err(err) => Err(err),
        }
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
                "edit a response_url answer",
            ));
        }
        let message = self.with_names(message).await;
        self.api.update(sent, &message).await
    }

    async fn react(&self, sent: &SentMessage, emoji: &str) -> Result<(), AdapterError> {
        if sent.message_id.is_empty() {
            return Ok(());
        }
        self.api.react(sent, emoji_name(emoji)).await
    }

    fn http_routes(&self, events: mpsc::Sender<ChatEvent>) -> Option<axum::Router> {
        (self.config.mode() == SlackMode::Events)
            .then(|| inbound::http::routes(self.inbound.clone(), events))
    }
}
