//! OutgoingMessage to console text.

use squall_engine::chat::OutgoingMessage;

/// `squall> ` before the first line, two spaces before the rest.
pub fn framed(prefix: &str, message: &OutgoingMessage) -> String {
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
