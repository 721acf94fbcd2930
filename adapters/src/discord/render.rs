//! squall's messages as Discord shows them: plain text as message content;
//! anything with a title, status, fields or output as an embed (colour by
//! status, fields, output in a code block); buttons as components. Every
//! body says `allowed_mentions: {parse: []}`, so no output or parameter can
//! ping `@everyone`, a role or a user. Discord's limits are kept by cutting,
//! never by refusing: 2,000 characters of text a message (content, or the
//! embed's description), with a note saying how to read the rest.

use serde_json::{Value, json};
use serenity::builder::{
    CreateActionRow, CreateAllowedMentions, CreateButton, CreateEmbed, CreateEmbedFooter,
};
use serenity::model::Colour;
use serenity::model::application::ButtonStyle;

use squall_engine::chat::{OutgoingMessage, StatusColor};

/// Discord's limits.
pub const TEXT: usize = 2000;
const TITLE: usize = 256;
const FIELD_NAME: usize = 256;
const FIELD_VALUE: usize = 1024;
const FIELDS: usize = 25;
const EMBED_TOTAL: usize = 6000;
const BUTTON_LABEL: usize = 80;
const BUTTONS_PER_ROW: usize = 5;
const ROWS: usize = 5;

fn colour(c: StatusColor) -> Colour {
    Colour::new(match c {
        StatusColor::Neutral => 0x99_aa_b5,
        StatusColor::Running => 0x58_65_f2,
        StatusColor::Success => 0x57_f2_87,
        StatusColor::Failure => 0xed_42_45,
        StatusColor::Warning => 0xfe_e7_5c,
    })
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// At most `max` characters, ending in `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if chars(text) <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// The last `max` characters, starting with `…` when cut.
fn tail(text: &str, max: usize) -> String {
    let n = chars(text);
    if n <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().skip(n - max.saturating_sub(1)).collect();
    format!("…{kept}")
}

/// A code block that nothing inside can close early.
fn fenced(code: &str) -> String {
    format!(
        "```\n{}\n```",
        code.trim_end_matches('\n').replace("```", "``\u{200b}`")
    )
}

/// Text and code blocks in at most `TEXT` characters: text first, then
/// output; what does not fit is cut (the text's head, the output's tail)
/// and a last line says how to read it all.
pub fn body_text(message: &OutgoingMessage) -> String {
    let mut parts: Vec<(bool, String)> = Vec::new();
    if !message.text.trim().is_empty() {
        parts.push((false, message.text.trim_end().to_owned()));
    }
    for code in &message.code_blocks {
        parts.push((true, code.clone()));
    }
    let render = |(code, text): &(bool, String)| if *code { fenced(text) } else { text.clone() };
    let whole = parts.iter().map(render).collect::<Vec<_>>().join("\n");
    if chars(&whole) <= TEXT {
        return whole;
    }
    let note = format!(
        "*Cut to Discord's 2,000 characters: {}.*",
        message
            .more
            .as_deref()
            .unwrap_or("the whole message is in squall's audit log")
    );
    let mut budget = TEXT - chars(&note) - 1;
    let mut out: Vec<String> = Vec::new();
    for part in &parts {
        let rendered = render(part);
        let sep = usize::from(!out.is_empty());
        if chars(&rendered) + sep <= budget {
            budget -= chars(&rendered) + sep;
            out.push(rendered);
            continue;
        }
        // Room for a useful piece of this part?
        let room = budget.saturating_sub(sep);
        if part.0 {
            // Fences and their line breaks take 8 characters.
            if room > 40 {
                out.push(fenced(&tail(&part.1, room - 8)));
            }
        } else if room > 20 {
            out.push(cut(&part.1, room));
        }
        break;
    }
    out.push(note);
    out.join("\n")
}

fn plain(message: &OutgoingMessage) -> bool {
    message.title.is_none()
        && message.color.is_none()
        && message.fields.is_empty()
        && message.code_blocks.is_empty()
}

fn embed(message: &OutgoingMessage) -> CreateEmbed {
    let mut embed = CreateEmbed::new();
    let mut total = 0;
    if let Some(title) = &message.title {
        let title = cut(title, TITLE);
        total += chars(&title);
        embed = embed.title(title);
    }
    let description = body_text(message);
    if !description.is_empty() {
        total += chars(&description);
        embed = embed.description(description);
    }
    let mut dropped = 0;
    let mut shown = 0;
    for (name, value) in &message.fields {
        let name = cut(
            if name.trim().is_empty() {
                "\u{200b}"
            } else {
                name
            },
            FIELD_NAME,
        );
        let value = cut(
            if value.trim().is_empty() {
                "—"
            } else {
                value
            },
            FIELD_VALUE,
        );
        // Room is kept for the footer that says fields were cut.
        let size = chars(&name) + chars(&value);
        if shown == FIELDS || total + size > EMBED_TOTAL - 100 {
            dropped += 1;
            continue;
        }
        total += size;
        shown += 1;
        let inline = chars(&value) <= 40;
        embed = embed.field(name, value, inline);
    }
    if dropped > 0 {
        embed = embed.footer(CreateEmbedFooter::new(format!(
            "{dropped} more fields cut: the message is larger than Discord shows"
        )));
    }
    if let Some(c) = message.color {
        embed = embed.colour(colour(c));
    }
    embed
}

fn components(message: &OutgoingMessage) -> Vec<CreateActionRow> {
    message
        .buttons
        .chunks(BUTTONS_PER_ROW)
        .take(ROWS)
        .map(|row| {
            CreateActionRow::Buttons(
                row.iter()
                    .map(|b| {
                        let style = if b.id.ends_with(":approve") {
                            ButtonStyle::Success
                        } else if b.id.ends_with(":deny") {
                            ButtonStyle::Danger
                        } else {
                            ButtonStyle::Secondary
                        };
                        CreateButton::new(cut(&b.id, 100))
                            .label(cut(&b.label, BUTTON_LABEL))
                            .style(style)
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The body of a new message or an edit: content or an embed, buttons
/// (an empty list on an edit removes them), and no mentions.
pub fn body(message: &OutgoingMessage) -> Value {
    let (content, embeds) = if plain(message) {
        (body_text(message), Vec::new())
    } else {
        (String::new(), vec![embed(message)])
    };
    json!({
        "content": content,
        "embeds": embeds,
        "components": components(message),
        "allowed_mentions": CreateAllowedMentions::new().replied_user(false),
    })
}

/// A thread's name: the message's title or first line.
pub fn thread_name(message: &OutgoingMessage) -> String {
    let first = message
        .title
        .clone()
        .or_else(|| message.text.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let first = first.replace(['*', '`', '_'], "");
    let name = cut(first.trim(), 100);
    if name.is_empty() {
        "squall".into()
    } else {
        name
    }
}
