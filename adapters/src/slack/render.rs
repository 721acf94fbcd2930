//! squall's messages as Slack sees them: Block Kit sections (title, mrkdwn
//! text, fields, code blocks, buttons) inside an attachment that carries the
//! status colour. Every piece of text is escaped for mrkdwn (`&`, `<`, `>`),
//! so no output or parameter can become `<!channel>`, `<!here>` or a
//! mention, and every piece is cut to Slack's limits (3000 characters a
//! section, 10 fields a section, 50 blocks a message): a message is split
//! or cut, never refused whole.

use serde_json::{Value, json};
use squall_engine::chat::{OutgoingMessage, StatusColor};

/// Slack's limits.
const SECTION_TEXT: usize = 3000;
const FIELD_TEXT: usize = 2000;
const FIELDS_PER_SECTION: usize = 10;
const BLOCKS: usize = 50;
const BUTTON_TEXT: usize = 75;
/// The notification text shown where blocks are not (push notices).
const FALLBACK: usize = 3000;

/// Escape text for mrkdwn: the three characters Slack's markup is made of.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// squall's Markdown as Slack mrkdwn, escaped: `**bold**` is `*bold*`.
pub fn mrkdwn(markdown: &str) -> String {
    escape(markdown).replace("**", "*")
}

fn color(c: StatusColor) -> &'static str {
    match c {
        StatusColor::Neutral => "#dddddd",
        StatusColor::Running => "#1d9bf0",
        StatusColor::Success => "#2eb67d",
        StatusColor::Failure => "#e01e5a",
        StatusColor::Warning => "#ecb22e",
    }
}

/// Pieces of at most `max` characters, cut at a line break where there is
/// one in the second half.
pub fn pieces(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.chars().count() > max {
        let cut = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let head = &rest[..cut];
        let at = match head.rfind('\n') {
            Some(nl) if nl > cut / 2 => nl + 1,
            _ => cut,
        };
        out.push(rest[..at].to_owned());
        rest = &rest[at..];
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": true}})
}

/// The blocks of a message, within Slack's limits.
pub fn blocks(message: &OutgoingMessage) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(title) = &message.title {
        blocks.push(section(cut(&format!("*{}*", mrkdwn(title)), SECTION_TEXT)));
    }
    if !message.text.trim().is_empty() {
        for piece in pieces(&mrkdwn(&message.text), SECTION_TEXT) {
            blocks.push(section(piece));
        }
    }
    for fields in message.fields.chunks(FIELDS_PER_SECTION) {
        let fields: Vec<Value> = fields
            .iter()
            .map(|(name, value)| {
                json!({"type": "mrkdwn", "verbatim": true,
                       "text": cut(&format!("*{}*\n{}", mrkdwn(name), mrkdwn(value)), FIELD_TEXT)})
            })
            .collect();
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    for code in &message.code_blocks {
        // A fence inside the output would close the block early.
        let body = escape(code.trim_end_matches('\n')).replace("```", "``\u{200b}`");
        for piece in pieces(&body, SECTION_TEXT - 8) {
            blocks.push(section(format!(
                "```\n{}\n```",
                piece.trim_end_matches('\n')
            )));
        }
    }
    let buttons: Vec<Value> = message
        .buttons
        .iter()
        .map(|b| {
            let mut button = json!({
                "type": "button",
                "action_id": b.id,
                "value": b.id,
                "text": {"type": "plain_text", "text": cut(&b.label, BUTTON_TEXT), "emoji": true},
            });
            if b.id.ends_with(":approve") {
                button["style"] = json!("primary");
            } else if b.id.ends_with(":deny") {
                button["style"] = json!("danger");
            }
            button
        })
        .collect();
    let room = if buttons.is_empty() {
        BLOCKS
    } else {
        BLOCKS - 1
    };
    if blocks.len() > room {
        let dropped = blocks.len() - (room - 1);
        blocks.truncate(room - 1);
        blocks.push(section(format!(
            "_… {dropped} more parts cut: the message is longer than Slack shows._"
        )));
    }
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    blocks
}

/// The plain notification text of a message, escaped.
pub fn fallback(message: &OutgoingMessage) -> String {
    cut(&escape(&message.to_plain_text()), FALLBACK)
}

/// The message content for `chat.postMessage`, `chat.update` and
/// `chat.postEphemeral`: blocks in a coloured attachment, or at the top
/// level when the message has no status colour.
pub fn content(message: &OutgoingMessage) -> Value {
    let blocks = blocks(message);
    let fallback = fallback(message);
    match message.color {
        Some(c) => json!({
            "attachments": [{"color": color(c), "fallback": fallback, "blocks": blocks}],
        }),
        None => json!({"text": fallback, "blocks": blocks}),
    }
}
