//! What Discord sends squall, by either way in (gateway dispatches or signed
//! requests to the Interactions endpoint), turned into `ChatEvent`s:
//! messages addressed to the bot, `/squall` commands, button clicks and
//! ✅ ❌ reactions. Messages from bots (squall's own included) are never
//! commands; an event seen twice (a resumed gateway replaying) is handled
//! once. Interactions are answered here, within Discord's 3 s: a command
//! with a deferred answer (the reply follows), a click with a deferred
//! update (the prompt is edited when the vote is counted).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serenity::model::application::{CommandDataOptionValue, Interaction};
use serenity::model::channel::{Message, MessageType, Reaction, ReactionType};

use squall_engine::chat::{ChannelRef, ChatEvent, IncomingMessage};

use super::PLATFORM;
use crate::common::{SEEN, Seen};

/// An interaction token is good for 15 minutes; squall stops using one a
/// minute early.
pub(super) const TOKEN_LIFE: Duration = Duration::from_secs(14 * 60);

/// Interaction response types (Discord's numbers).
const PONG: u8 = 1;
const DEFERRED_MESSAGE: u8 = 5;
const DEFERRED_UPDATE: u8 = 6;
const AUTOCOMPLETE_RESULT: u8 = 8;

/// A `/squall` command being answered through its interaction.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) token: String,
    pub(super) at: Instant,
    /// The deferred answer's message, once squall filled it in.
    pub(super) original: Option<String>,
}

/// Where a `ChannelRef.thread` points on Discord: the message a reply
/// references, or a thread (a channel whose id is its first message's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Under {
    /// Someone's message (a command): answers reply to it.
    Reply,
    /// A message of squall's own (a notice) with no thread yet: the first
    /// answer starts one.
    Root,
    /// A thread squall started (or found): answers go in it.
    Thread,
}

/// State both ways in share, and what the sending side learns.
pub(super) struct Inbound {
    pub(super) me: OnceLock<String>,
    command: String,
    replies: bool,
    seen: Mutex<Seen>,
    /// The newest message id seen per channel: where a catch-up after a
    /// new gateway session starts reading history.
    pub(super) last_seen: Mutex<HashMap<String, u64>>,
    /// Gateway sessions started (READY) by this process.
    pub(super) sessions: std::sync::atomic::AtomicU64,
    /// The gateway session is up (or, without a gateway, Discord answered).
    pub(super) connected: squall_engine::chat::ConnectionState,
    /// `/squall` interactions by id.
    pending: Mutex<HashMap<String, Pending>>,
    /// The latest button click's token by user, for an answer only they see.
    clicks: Mutex<HashMap<String, (String, Instant)>>,
    /// The `ChannelRef.thread` each message squall sent lately was sent
    /// under, so a vote on it is answered there.
    sent_under: Mutex<HashMap<String, Option<String>>>,
    /// What each `thread` value names (a reply target or a thread).
    unders: Mutex<HashMap<String, Under>>,
    /// Messages squall sent through an interaction token, by message id →
    /// interaction id (edited through the token while it lasts).
    via_token: Mutex<HashMap<String, String>>,
    verifier: Option<serenity::interactions_endpoint::Verifier>,
    window: Duration,
}

fn trimmed<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) -> &mut HashMap<K, V> {
    if map.len() > SEEN {
        map.clear();
    }
    map
}

impl Inbound {
    pub(super) fn new(
        command: String,
        replies: bool,
        public_key: Option<&str>,
        window: Duration,
    ) -> Self {
        Self {
            me: OnceLock::new(),
            command,
            replies,
            seen: Mutex::default(),
            last_seen: Mutex::default(),
            sessions: std::sync::atomic::AtomicU64::new(0),
            connected: squall_engine::chat::ConnectionState::default(),
            pending: Mutex::default(),
            clicks: Mutex::default(),
            sent_under: Mutex::default(),
            unders: Mutex::default(),
            via_token: Mutex::default(),
            verifier: public_key.map(serenity::interactions_endpoint::Verifier::new),
            window,
        }
    }

    fn first(&self, key: String) -> bool {
        self.seen.lock().map(|mut s| s.first(key)).unwrap_or(true)
    }

    pub(super) fn under(&self, thread: &str) -> Option<Under> {
        self.unders.lock().ok()?.get(thread).copied()
    }

    pub(super) fn set_under(&self, thread: &str, under: Under) {
        if let Ok(mut unders) = self.unders.lock() {
            trimmed(&mut unders).insert(thread.to_owned(), under);
        }
    }

    pub(super) fn remember_sent(&self, message_id: &str, thread: Option<&str>) {
        if let Ok(mut sent) = self.sent_under.lock() {
            trimmed(&mut sent).insert(message_id.to_owned(), thread.map(str::to_owned));
        }
    }

    fn thread_of(&self, message_id: &str) -> Option<String> {
        self.sent_under
            .lock()
            .ok()?
            .get(message_id)
            .cloned()
            .flatten()
    }

    pub(super) fn sent_by_me(&self, message_id: &str) -> bool {
        self.sent_under
            .lock()
            .is_ok_and(|s| s.contains_key(message_id))
    }

    pub(super) fn pending(&self, interaction: &str) -> Option<Pending> {
        let pending = self.pending.lock().ok()?;
        pending
            .get(interaction)
            .filter(|p| p.at.elapsed() < TOKEN_LIFE)
            .cloned()
    }

    pub(super) fn answered(&self, interaction: &str, message_id: &str) {
        if let Ok(mut pending) = self.pending.lock()
            && let Some(p) = pending.get_mut(interaction)
        {
            p.original = Some(message_id.to_owned());
        }
        self.sent_via(interaction, message_id);
    }

    pub(super) fn sent_via(&self, interaction: &str, message_id: &str) {
        if let Ok(mut via) = self.via_token.lock() {
            trimmed(&mut via).insert(message_id.to_owned(), interaction.to_owned());
        }
    }

    /// The interaction (and its token) a message was sent through, while
    /// the token lasts.
    pub(super) fn token_of(&self, message_id: &str) -> Option<(String, Pending)> {
        let interaction = self.via_token.lock().ok()?.get(message_id).cloned()?;
        let pending = self.pending(&interaction)?;
        Some((interaction, pending))
    }

    /// The token of `user`'s latest click, while it lasts.
    pub(super) fn click_token(&self, user: &str) -> Option<String> {
        let clicks = self.clicks.lock().ok()?;
        clicks
            .get(user)
            .filter(|(_, at)| at.elapsed() < TOKEN_LIFE)
            .map(|(t, _)| t.clone())
    }

    /// A message someone wrote: a command when it is a DM or mentions the
    /// bot (or, for the dispatcher to decide, starts with the prefix).
    pub(super) fn message(&self, msg: &Message) -> Option<ChatEvent> {
        if let Ok(mut last) = self.last_seen.lock() {
            let at = last.entry(msg.channel_id.to_string()).or_default();
            *at = (*at).max(msg.id.get());
        }
        let me = self.me.get()?;
        if msg.author.bot || msg.author.id.to_string() == *me || msg.webhook_id.is_some() {
            return None;
        }
        if !matches!(msg.kind, MessageType::Regular | MessageType::InlineReply) {
            return None;
        }
        if !self.first(format!("message:{}", msg.id)) {
            return None;
        }
        let mention = format!("<@{me}>");
        let nick_mention = format!("<@!{me}>");
        let mentions_bot = msg.mentions.iter().any(|u| u.id.to_string() == *me)
            || msg.content.contains(&mention)
            || msg.content.contains(&nick_mention);
        let text = msg
            .content
            .replace(&nick_mention, " ")
            .replace(&mention, " ");
        let message_id = msg.id.to_string();
        let thread = if self.replies {
            self.set_under(&message_id, Under::Reply);
            Some(message_id.clone())
        } else {
            None
        };
        Some(ChatEvent::Message(IncomingMessage {
            platform: PLATFORM.into(),
            to: ChannelRef {
                channel: msg.channel_id.to_string(),
                thread,
            },
            user: msg.author.id.to_string(),
            text: text.trim().to_owned(),
            message_id,
            direct: msg.guild_id.is_none(),
            mentions_bot,
        }))
    }

    /// A reaction added or removed: a vote when it is ✅ or ❌ on a prompt.
    pub(super) fn reaction(&self, reaction: &Reaction, added: bool) -> Option<ChatEvent> {
        let user = reaction.user_id?.to_string();
        let emoji = match &reaction.emoji {
            ReactionType::Unicode(e) => e.clone(),
            ReactionType::Custom { name, .. } => name.clone()?,
            _ => return None,
        };
        let message_id = reaction.message_id.to_string();
        crate::common::reaction_to_vote(
            PLATFORM,
            ChannelRef {
                channel: reaction.channel_id.to_string(),
                thread: self.thread_of(&message_id),
            },
            &user,
            self.me.get().map(String::as_str),
            &message_id,
            &emoji,
            added,
        )
    }

    /// An interaction: the answer Discord needs now, and the event (if any)
    /// for the dispatcher.
    pub(super) fn interaction(&self, interaction: &Interaction) -> (Value, Option<ChatEvent>) {
        match interaction {
            Interaction::Ping(_) => (json!({"type": PONG}), None),
            Interaction::Command(command) => {
                let answer = json!({"type": DEFERRED_MESSAGE});
                let id = command.id.to_string();
                if command.data.name != self.command || !self.first(format!("interaction:{id}")) {
                    return (answer, None);
                }
                let text = command
                    .data
                    .options
                    .iter()
                    .find_map(|o| match &o.value {
                        CommandDataOptionValue::String(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                if let Ok(mut pending) = self.pending.lock() {
                    let pending = trimmed(&mut pending);
                    pending.retain(|_, p| p.at.elapsed() < TOKEN_LIFE);
                    pending.insert(
                        id.clone(),
                        Pending {
                            token: command.token.clone(),
                            at: Instant::now(),
                            original: None,
                        },
                    );
                }
                let event = ChatEvent::Message(IncomingMessage {
                    platform: PLATFORM.into(),
                    to: ChannelRef {
                        channel: command.channel_id.to_string(),
                        thread: Some(format!("{}{id}", super::INTERACTION)),
                    },
                    user: command.user.id.to_string(),
                    text: text.trim().to_owned(),
                    message_id: id,
                    direct: command.guild_id.is_none(),
                    // Addressed to squall by its very form.
                    mentions_bot: true,
                });
                (answer, Some(event))
            }
            Interaction::Component(click) => {
                let answer = json!({"type": DEFERRED_UPDATE});
                if !self.first(format!("interaction:{}", click.id)) {
                    return (answer, None);
                }
                let user = click.user.id.to_string();
                if let Ok(mut clicks) = self.clicks.lock() {
                    trimmed(&mut clicks)
                        .insert(user.clone(), (click.token.clone(), Instant::now()));
                }
                let message_id = click.message.id.to_string();
                let to = ChannelRef {
                    channel: click.channel_id.to_string(),
                    thread: self.thread_of(&message_id),
                };
                let vote =
                    crate::common::button_to_vote(PLATFORM, to, &user, &click.data.custom_id);
                (answer, vote)
            }
            Interaction::Autocomplete(_) => (
                json!({"type": AUTOCOMPLETE_RESULT, "data": {"choices": []}}),
                None,
            ),
            _ => (json!({"type": DEFERRED_UPDATE}), None),
        }
    }

    /// Check a request to the Interactions endpoint: Ed25519 over timestamp
    /// and body with the application's public key, the timestamp recent.
    pub(super) fn verify(
        &self,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
    ) -> Result<(), &'static str> {
        let verifier = self
            .verifier
            .as_ref()
            .ok_or("squall has no Discord public key (discord.public_key)")?;
        let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
            return Err("missing X-Signature-Ed25519 or X-Signature-Timestamp");
        };
        verifier
            .verify(signature, timestamp, body)
            .map_err(|()| "invalid request signature")?;
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| "X-Signature-Timestamp is not a number")?;
        let now = squall_engine::execution::now_ms() / 1000;
        if (now - ts).abs() > i64::try_from(self.window.as_secs()).unwrap_or(300) {
            return Err(
                "the request's timestamp is outside the signature window (stale or replayed)",
            );
        }
        Ok(())
    }
}

/// The HTTP way in: Discord's Interactions endpoint.
pub(super) mod http {
    use std::sync::Arc;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use serde_json::json;
    use serenity::model::application::Interaction;
    use tokio::sync::mpsc;

    use squall_engine::chat::ChatEvent;

    use super::Inbound;

    #[derive(Clone)]
    struct Ctx {
        inbound: Arc<Inbound>,
        events: mpsc::Sender<ChatEvent>,
    }

    pub(in crate::discord) fn routes(
        inbound: Arc<Inbound>,
        events: mpsc::Sender<ChatEvent>,
    ) -> axum::Router {
        axum::Router::new()
            .route("/interactions", axum::routing::post(receive))
            .with_state(Ctx { inbound, events })
    }

    fn refuse(status: StatusCode, why: &str) -> Response {
        (status, axum::Json(json!({"error": why}))).into_response()
    }

    async fn receive(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Err(why) = ctx.inbound.verify(
            header("x-signature-ed25519"),
            header("x-signature-timestamp"),
            &body,
        ) {
            tracing::warn!(reason = why, "refused a Discord interaction");
            return refuse(StatusCode::UNAUTHORIZED, why);
        }
        let interaction: Interaction = match serde_json::from_slice(&body) {
            Ok(i) => i,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    &format!("the body is not a Discord interaction: {e}"),
                );
            }
        };
        let (answer, event) = ctx.inbound.interaction(&interaction);
        if let Some(event) = event
            && ctx.events.send(event).await.is_err()
        {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "squall is shutting down");
        }
        axum::Json(answer).into_response()
    }
}
