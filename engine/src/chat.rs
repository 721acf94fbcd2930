//! The platform-neutral chat model: what adapters deliver (ChatEvent), what
//! squall says (OutgoingMessage), and the `ChatAdapter` trait every platform
//! implements. Platform quirks stay inside adapters; nothing here names one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where a message lives: a channel (room) and, on platforms with threads,
/// the thread inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelRef {
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

/// A message someone wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncomingMessage {
    /// `console`, `matrix`, `slack`, `discord`.
    pub platform: String,
    pub to: ChannelRef,
    /// The platform's user id (without the platform prefix).
    pub user: String,
    pub text: String,
    pub message_id: String,
    /// A direct message to the bot: every message is a command.
    pub direct: bool,
    /// The message mentions the bot.
    pub mentions_bot: bool,
}

impl IncomingMessage {
    /// The identity squall knows this user by: `platform:user_id`.
    pub fn identity(&self) -> String {
        format!("{}:{}", self.platform, self.user)
    }
}

/// What a vote is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoteTarget {
    /// A prompt message, by its platform message id (a reaction on it).
    Message(String),
    /// An approval request, by its id (a button under its prompt).
    Inquiry(String),
}

/// An approve or deny vote, normalised by the adapter from whatever the
/// platform delivers (a reaction, a button press).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteEvent {
    pub platform: String,
    pub to: ChannelRef,
    /// The platform's user id of the voter (never the bot itself: adapters
    /// drop the bot's own reactions).
    pub user: String,
    pub on: VoteTarget,
    pub approve: bool,
    /// A removed reaction: take back the vote it cast.
    pub withdrawn: bool,
}

impl VoteEvent {
    /// The identity squall knows the voter by: `platform:user_id`.
    pub fn identity(&self) -> String {
        format!("{}:{}", self.platform, self.user)
    }
}

/// Everything an adapter delivers to the dispatcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChatEvent {
    Message(IncomingMessage),
    Vote(VoteEvent),
}

/// The id of a prompt's approve or deny button.
pub fn vote_button_id(inquiry_id: &str, approve: bool) -> String {
    let verb = if approve { "approve" } else { "deny" };
    format!("inquiry:{inquiry_id}:{verb}")
}

/// An inquiry id and approve (true) or deny (false) from a button id made by
/// [`vote_button_id`]; `None` for any other button.
pub fn parse_vote_button(button_id: &str) -> Option<(String, bool)> {
    let mut parts = button_id.splitn(3, ':');
    let (Some("inquiry"), Some(id), Some(verb)) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    match verb {
        "approve" => Some((id.to_owned(), true)),
        "deny" => Some((id.to_owned(), false)),
        _ => None,
    }
}

/// Colour of a message's status bar, where the platform shows one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusColor {
    Neutral,
    Running,
    Success,
    Failure,
    Warning,
}

/// A button under a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub id: String,
    pub label: String,
}

/// What squall says, before a platform renders it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutgoingMessage {
    pub title: Option<String>,
    /// Markdown.
    pub text: String,
    pub fields: Vec<(String, String)>,
    pub code_blocks: Vec<String>,
    pub color: Option<StatusColor>,
    pub buttons: Vec<Button>,
    /// Shown only to this person (the platform's user id), where the
    /// platform can (a Slack ephemeral message); elsewhere to the channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only_for: Option<String>,
    /// How to read all of it (`!status 01J…`), for a platform that must
    /// cut the message to its limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more: Option<String>,
}

impl OutgoingMessage {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// Plain-text rendering (console, and the fallback body elsewhere).
    pub fn to_plain_text(&self) -> String {
        let mut out = String::new();
        if let Some(title) = &self.title {
            out.push_str(title);
            out.push('\n');
        }
        if !self.text.is_empty() {
            out.push_str(&self.text);
            out.push('\n');
        }
        for (name, value) in &self.fields {
            out.push_str(&format!("{name}: {value}\n"));
        }
        for block in &self.code_blocks {
            out.push_str("```\n");
            out.push_str(block.trim_end_matches('\n'));
            out.push_str("\n```\n");
        }
        for button in &self.buttons {
            out.push_str(&format!("[{}] ", button.label));
        }
        if !self.buttons.is_empty() {
            out.push('\n');
        }
        out.trim_end().to_owned()
    }
}

impl OutgoingMessage {
    /// Markdown rendering for platforms that format (Matrix, Slack, Discord).
    /// Text outside code blocks has `<`, `>` and `&` escaped, so output or
    /// user input can never become HTML markup.
    pub fn to_markdown(&self) -> String {
        let mut parts = Vec::new();
        if let Some(title) = &self.title {
            parts.push(format!("**{}**", escape_markup(title)));
        }
        if !self.text.is_empty() {
            parts.push(escape_markup(&self.text));
        }
        if !self.fields.is_empty() {
            parts.push(
                self.fields
                    .iter()
                    .map(|(k, v)| format!("- **{}**: {}", escape_markup(k), escape_markup(v)))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
        for block in &self.code_blocks {
            // A fence longer than any backtick run inside keeps the block closed.
            let longest = block.split(|c| c != '`').map(str::len).max().unwrap_or(0);
            let fence = "`".repeat(longest.max(2) + 1);
            parts.push(format!(
                "{fence}\n{}\n{fence}",
                block.trim_end_matches('\n')
            ));
        }
        parts.join("\n\n")
    }
}

fn escape_markup(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A message the adapter sent, so it can be edited or reacted to later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    pub to: ChannelRef,
    pub message_id: String,
}

/// What a platform can do beyond sending text. The dispatcher and the
/// delivery loop ask these; an adapter only implements the methods of the
/// capabilities it declares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Replies can go to a thread under the command.
    pub threads: bool,
    /// Sent messages can be replaced (`edit`).
    pub edits: bool,
    /// People can react to messages, and the bot can add reactions (`react`).
    pub reactions: bool,
    /// Messages can carry buttons.
    pub buttons: bool,
    /// A typing notice can be shown (`typing`).
    pub typing: bool,
    /// The platform calls squall over HTTP (`http_routes`).
    pub http_ingress: bool,
}

/// Errors from an adapter, saying whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{platform}: the connection failed ({reason}); it will be retried")]
    Transient { platform: String, reason: String },
    /// The platform asked squall to slow down.
    #[error("{platform}: rate limited{}", retry_after.map(|d| format!(" for {} ms", d.as_millis())).unwrap_or_default())]
    RateLimited {
        platform: String,
        retry_after: Option<Duration>,
    },
    /// The platform refused this for good (too long, no such room, ...).
    #[error("{platform}: {reason}")]
    Permanent { platform: String, reason: String },
    #[error("{platform} cannot {operation}")]
    Unsupported {
        platform: String,
        operation: &'static str,
    },
}

impl AdapterError {
    pub fn unsupported(platform: &str, operation: &'static str) -> Self {
        Self::Unsupported {
            platform: platform.to_owned(),
            operation,
        }
    }
}

/// Whether an adapter's connection to its platform is up, as its
/// connection loop last saw it ([`ChatAdapter::connected`]).
#[derive(Debug, Default)]
pub struct ConnectionState(std::sync::atomic::AtomicBool);

impl ConnectionState {
    pub fn set(&self, up: bool) {
        self.0.store(up, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_up(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One chat platform connection.
///
/// Every send carries an idempotency key (the outbox row id): a platform
/// that supports one (Matrix transaction ids, Slack/Discord nonces) shows a
/// message sent twice with one key once, so a send retried after a crash is
/// never a duplicate.
#[async_trait::async_trait]
pub trait ChatAdapter: Send + Sync {
    fn platform(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// Connect and deliver events until `shutdown`; reconnects with backoff.
    async fn run(
        &self,
        events: mpsc::Sender<ChatEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError>;
    async fn send(
        &self,
        to: &ChannelRef,
        message: &OutgoingMessage,
        key: &str,
    ) -> Result<SentMessage, AdapterError>;
    /// Replace a sent message (`capabilities().edits`).
    async fn edit(
        &self,
        _sent: &SentMessage,
        _message: &OutgoingMessage,
        _key: &str,
    ) -> Result<(), AdapterError> {
        Err(AdapterError::unsupported(self.platform(), "edit messages"))
    }
    /// React to a message (`capabilities().reactions`).
    async fn react(&self, _sent: &SentMessage, _emoji: &str) -> Result<(), AdapterError> {
        Err(AdapterError::unsupported(self.platform(), "react"))
    }
    /// Show or stop a typing notice (`capabilities().typing`).
    async fn typing(&self, _to: &ChannelRef, _on: bool) -> Result<(), AdapterError> {
        Ok(())
    }
    /// Whether the adapter is connected to its platform now (`/readyz`,
    /// `squall_chat_adapter_connected`). One without a lasting connection
    /// (a terminal) always is.
    fn connected(&self) -> bool {
        true
    }
    /// Whether this connection can deliver to `channel`. A platform
    /// connection reaches every channel of its account; a terminal reaches
    /// only its own, so each console delivers only what was said to it.
    fn holds(&self, _channel: &str) -> bool {
        true
    }
    /// Routes the platform calls (`capabilities().http_ingress`), mounted by
    /// the API server under `/api/v1/chat/<platform>/`. They authenticate
    /// requests themselves (platform signatures), and feed `events`.
    fn http_routes(&self, _events: mpsc::Sender<ChatEvent>) -> Option<axum::Router> {
        None
    }
}
