//! OutgoingMessage to a Matrix event: markdown rendered to HTML with a
//! plain-text body, sent as a notice.

use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;

use squall_engine::chat::OutgoingMessage;

/// Notices: clients show them as bot output, and bots do not answer them.
pub fn content(message: &OutgoingMessage) -> RoomMessageEventContent {
    RoomMessageEventContent::notice_markdown(message.to_markdown())
}
