//! The platform-neutral chat model: what adapters deliver (ChatEvent), what
//! squall says (OutgoingMessage), and the `ChatAdapter` trait every platform
//! implements. Platform quirks stay inside adapters; nothing here names one.

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

/// A reaction added to or removed from a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReactionEvent {
    pub platform: String,
    pub to: ChannelRef,
    pub user: String,
    pub message_id: String,
    pub emoji: String,
    pub added: bool,
}

/// A button press.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionEvent {
    pub platform: String,
    pub to: ChannelRef,
    pub user: String,
    pub message_id: String,
    pub button_id: String,
}

/// Everything an adapter delivers to the dispatcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChatEvent {
    Message(IncomingMessage),
    Reaction(ReactionEvent),
    Interaction(InteractionEvent),
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
pub struct OutgoingMessage {
    pub title: Option<String>,
    /// Markdown.
    pub text: String,
    pub fields: Vec<(String, String)>,
    pub code_blocks: Vec<String>,
    pub color: Option<StatusColor>,
    pub buttons: Vec<Button>,
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

/// What a platform can do beyond sending text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub threads: bool,
    pub edits: bool,
    /// People can react to messages (and the bot can add reactions).
    pub reactions: bool,
    pub buttons: bool,
}

/// Errors from an adapter, saying whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{platform}: the connection failed ({reason}); it will be retried")]
    Transient { platform: String, reason: String },
    #[error("{platform}: {reason}")]
    Permanent { platform: String, reason: String },
    #[error("{platform} cannot {operation}")]
    Unsupported {
        platform: String,
        operation: &'static str,
    },
}

/// One chat platform connection.
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
    ) -> Result<SentMessage, AdapterError>;
    /// Replace a sent message (only when `capabilities().edits`).
    async fn edit(&self, sent: &SentMessage, message: &OutgoingMessage)
    -> Result<(), AdapterError>;
    /// React to a message (only when `capabilities().reactions`).
    async fn react(&self, sent: &SentMessage, emoji: &str) -> Result<(), AdapterError>;
    /// The bot's own user id on the platform (its reactions are not votes).
    fn bot_user(&self) -> Option<String> {
        None
    }
    /// Show or stop a typing notice; platforms without one ignore it.
    async fn typing(&self, _to: &ChannelRef, _on: bool) -> Result<(), AdapterError> {
        Ok(())
    }
}
