//! Lines typed at the console to chat messages.

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use squall_engine::chat::{AdapterError, ChannelRef, ChatEvent, IncomingMessage};

use super::{PLATFORM, Reader, permanent};

pub fn incoming(user: &str, channel: &str, text: &str, n: u64) -> IncomingMessage {
    IncomingMessage {
        platform: PLATFORM.into(),
        to: ChannelRef {
            channel: channel.into(),
            thread: None,
        },
        user: user.to_owned(),
        text: text.to_owned(),
        message_id: format!("in-{n}"),
        // A terminal is a conversation with the bot: no prefix needed.
        direct: true,
        mentions_bot: false,
    }
}

/// Read lines until the input ends or `shutdown`; blank lines are skipped.
pub async fn read_lines(
    mut input: Reader,
    message: impl Fn(&str) -> IncomingMessage,
    events: mpsc::Sender<ChatEvent>,
    shutdown: CancellationToken,
) -> Result<(), AdapterError> {
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
                    .send(ChatEvent::Message(message(text)))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            Err(err) => return Err(permanent(format!("cannot read the console: {err}"))),
        }
    }
}
