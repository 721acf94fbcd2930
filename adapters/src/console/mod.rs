//! The console adapter: one user in one channel, reading lines from any
//! reader (stdin for `squall chat`) and printing replies to any writer. It
//! also drives the transcript tests, so its output is plain and stable.

mod config;
mod inbound;
mod outbound;
mod render;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use squall_engine::chat::{
    AdapterError, Capabilities, ChannelRef, ChatAdapter, ChatEvent, IncomingMessage,
    OutgoingMessage, SentMessage,
};

pub use config::ConsoleConfig;

/// The channel name actions and prompts may use for "the console": any
/// console may deliver what is sent there. What answers a command goes to
/// its user's console channel (`console-<user>`), so a console started
/// again after a crash gets the answers the last one could not print.
pub const CHANNEL: &str = "console";

const PLATFORM: &str = "console";

type Reader = Box<dyn AsyncBufRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

pub struct ConsoleAdapter {
    config: ConsoleConfig,
    /// This terminal's own channel.
    channel: String,
    input: Mutex<Option<Reader>>,
    output: Arc<Mutex<Writer>>,
    next_id: AtomicU64,
}

impl ConsoleAdapter {
    /// `user` is the console user's id: the identity is `console:<user>`.
    pub fn new(user: impl Into<String>, input: Reader, output: Writer) -> Self {
        let user = user.into();
        Self {
            channel: format!("{CHANNEL}-{user}"),
            config: ConsoleConfig { user },
            input: Mutex::new(Some(input)),
            output: Arc::new(Mutex::new(output)),
            next_id: AtomicU64::new(1),
        }
    }

    /// A message as the console user typed it (for tests that feed lines
    /// one at a time instead of through `run`).
    pub fn incoming(&self, text: &str) -> IncomingMessage {
        inbound::incoming(&self.config.user, &self.channel, text, self.next_id())
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

fn permanent(reason: String) -> AdapterError {
    AdapterError::Permanent {
        platform: PLATFORM.into(),
        reason,
    }
}

#[async_trait::async_trait]
impl ChatAdapter for ConsoleAdapter {
    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: false,
            edits: true,
            // Nobody at a terminal can react to a line: approvals there are
            // answered with `approve <id>` / `deny <id>`.
            reactions: false,
            buttons: false,
            typing: false,
            http_ingress: false,
        }
    }

    /// Its own user's channel, and any channel an action or prompt names
    /// (a terminal shows everything posted while it is the only chat), but
    /// never another console user's answers.
    fn holds(&self, channel: &str) -> bool {
        channel == self.channel || !channel.starts_with(&format!("{CHANNEL}-"))
    }

    async fn run(
        &self,
        events: mpsc::Sender<ChatEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        let Some(input) = self.input.lock().await.take() else {
            return Err(permanent("the console is already running".into()));
        };
        inbound::read_lines(input, |text| self.incoming(text), events, shutdown).await
    }

    async fn send(
        &self,
        to: &ChannelRef,
        message: &OutgoingMessage,
        _key: &str,
    ) -> Result<SentMessage, AdapterError> {
        let id = format!("out-{}", self.next_id());
        outbound::write(&self.output, &render::framed("squall> ", message)).await?;
        Ok(SentMessage {
            to: to.clone(),
            message_id: id,
        })
    }

    async fn edit(
        &self,
        sent: &SentMessage,
        message: &OutgoingMessage,
        _key: &str,
    ) -> Result<(), AdapterError> {
        let prefix = format!("squall (edit {})> ", sent.message_id);
        outbound::write(&self.output, &render::framed(&prefix, message)).await
    }
}
