//! The console adapter: one user in one channel, reading lines from any
//! reader (stdin for `squall chat`) and printing replies to any writer. It
//! also drives the transcript tests, so its output is plain and stable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use squall_engine::chat::{
    AdapterError, Capabilities, ChannelRef, ChatAdapter, ChatEvent, IncomingMessage,
    OutgoingMessage, SentMessage,
};

/// The console's only channel.
pub const CHANNEL: &str = "console";

type Reader = Box<dyn AsyncBufRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

pub struct ConsoleAdapter {
    user: String,
    input: Mutex<Option<Reader>>,
    output: Arc<Mutex<Writer>>,
    next_id: AtomicU64,
}

impl ConsoleAdapter {
    /// `user` is the console user's id: the identity is `console:<user>`.
    pub fn new(user: impl Into<String>, input: Reader, output: Writer) -> Self {
        Self {
            user: user.into(),
            input: Mutex::new(Some(input)),
            output: Arc::new(Mutex::new(output)),
            next_id: AtomicU64::new(1),
        }
    }

    /// A message as the console user typed it (for tests that feed lines
    /// one at a time instead of through `run`).
    pub fn incoming(&self, text: &str) -> IncomingMessage {
        IncomingMessage {
            platform: "console".into(),
            to: ChannelRef {
                channel: CHANNEL.into(),
                thread: None,
            },
            user: self.user.clone(),
            text: text.to_owned(),
            message_id: format!("in-{}", self.next_id.fetch_add(1, Ordering::Relaxed)),
            // A terminal is a conversation with the bot: no prefix needed.
            direct: true,
            mentions_bot: false,
        }
    }

    async fn write(&self, text: &str) -> Result<(), AdapterError> {
        let mut out = self.output.lock().await;
        let result = async {
            out.write_all(text.as_bytes()).await?;
            out.flush().await
        }
        .await;
        result.map_err(|e| AdapterError::Permanent {
            platform: "console".into(),
            reason: format!("cannot write to the console: {e}"),
        })
    }
}

/// `squall> ` before the first line, two spaces before the rest.
fn framed(prefix: &str, message: &OutgoingMessage) -> String {
    let text = message.to_plain_text();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            out.push_str(prefix);
        } else {
            out.push_str("  ");
        }
        out.push_str(line);
        out.push('\n');
    }
    if out.is_empty() {
        out = format!("{prefix}\n");
    }
    out
}

#[async_trait::async_trait]
impl ChatAdapter for ConsoleAdapter {
    fn platform(&self) -> &'static str {
        "console"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: false,
            edits: true,
            // Nobody at a terminal can react to a line: approvals there are
            // answered with `approve <id>` / `deny <id>`.
            reactions: false,
            buttons: false,
        }
    }

    async fn run(
        &self,
        events: mpsc::Sender<ChatEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        let Some(mut input) = self.input.lock().await.take() else {
            return Err(AdapterError::Permanent {
                platform: "console".into(),
                reason: "the console is already running".into(),
            });
        };
        let mut line = String::new();
        loop {
            line.clear();
            let read = tokio::select! {
                read = input.read_line(&mut line) => read,
                () = shutdown.cancelled() => return Ok(()),
            };
            match read {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    let text = line.trim_end_matches(['\n', '\r']);
                    if text.trim().is_empty() {
                        continue;
                    }
                    if events
                        .send(ChatEvent::Message(self.incoming(text)))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Err(err) => {
                    return Err(AdapterError::Permanent {
                        platform: "console".into(),
                        reason: format!("cannot read the console: {err}"),
                    });
                }
            }
        }
    }

    async fn send(
        &self,
        to: &ChannelRef,
        message: &OutgoingMessage,
    ) -> Result<SentMessage, AdapterError> {
        let id = format!("out-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.write(&framed("squall> ", message)).await?;
        Ok(SentMessage {
            to: to.clone(),
            message_id: id,
        })
    }

    async fn edit(
        &self,
        sent: &SentMessage,
        message: &OutgoingMessage,
    ) -> Result<(), AdapterError> {
        self.write(&framed(
            &format!("squall (edit {})> ", sent.message_id),
            message,
        ))
        .await
    }

    async fn react(&self, sent: &SentMessage, emoji: &str) -> Result<(), AdapterError> {
        self.write(&format!("squall reacted {emoji} to {}\n", sent.message_id))
            .await
    }
}
