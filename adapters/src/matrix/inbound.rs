//! Matrix events to ChatEvents: messages (with threads, mentions, DMs),
//! reactions and their redactions, and invites.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::room::Room;
use matrix_sdk::ruma::events::reaction::OriginalSyncReactionEvent;
use matrix_sdk::ruma::events::room::member::{MembershipState, StrippedRoomMemberEvent};
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, Relation,
};
use matrix_sdk::ruma::events::room::redaction::OriginalSyncRoomRedactionEvent;
use matrix_sdk::ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId};
use tokio::sync::mpsc;

use squall_engine::chat::{ChannelRef, ChatEvent, IncomingMessage};

use super::{MatrixConfig, PLATFORM};

/// A reaction as it arrived, kept so its redaction can be reported.
#[derive(Debug, Clone)]
struct SeenReaction {
    room: String,
    user: String,
    message_id: String,
    emoji: String,
}

/// Recent reactions by their event id (bounded).
#[derive(Default)]
pub struct ReactionLog {
    seen: HashMap<OwnedEventId, SeenReaction>,
}

const REACTION_LOG_MAX: usize = 50_000;

pub fn register_handlers(
    client: &Client,
    config: &MatrixConfig,
    events: mpsc::Sender<ChatEvent>,
    started: MilliSecondsSinceUnixEpoch,
    reactions: Arc<Mutex<ReactionLog>>,
) {
    let threads = config.threads;
    let tx = events.clone();
    client.add_event_handler(
        move |ev: OriginalSyncRoomMessageEvent, room: Room, client: Client| {
            let tx = tx.clone();
            async move {
                let Some(own) = client.user_id() else { return };
                if ev.sender == own || ev.origin_server_ts < started {
                    return;
                }
                // Text only: notices are what bots send, and squall must not
                // answer other bots (or itself through a bridge).
                let MessageType::Text(text) = &ev.content.msgtype else {
                    return;
                };
                let thread = match &ev.content.relates_to {
                    Some(Relation::Replacement(_)) => return,
                    Some(Relation::Thread(thread)) => Some(thread.event_id.to_string()),
                    _ if threads => Some(ev.event_id.to_string()),
                    _ => None,
                };
                let (body, mentions_bot) = strip_mention(&text.body, own.as_str(), own.localpart());
                let mentioned_in_metadata = ev
                    .content
                    .mentions
                    .as_ref()
                    .is_some_and(|m| m.user_ids.contains(own));
                let direct = room.joined_members_count() <= 2;
                let message = IncomingMessage {
                    platform: PLATFORM.into(),
                    to: ChannelRef {
                        channel: room.room_id().to_string(),
                        thread,
                    },
                    user: ev.sender.to_string(),
                    text: body,
                    message_id: ev.event_id.to_string(),
                    direct,
                    mentions_bot: mentions_bot || mentioned_in_metadata,
                };
                let _ = tx.send(ChatEvent::Message(message)).await;
            }
        },
    );

    let tx = events.clone();
    let log = reactions.clone();
    client.add_event_handler(
        move |ev: OriginalSyncReactionEvent, room: Room, client: Client| {
            let tx = tx.clone();
            let log = log.clone();
            async move {
                if client.user_id() == Some(&ev.sender) || ev.origin_server_ts < started {
                    return;
                }
                let seen = SeenReaction {
                    room: room.room_id().to_string(),
                    user: ev.sender.to_string(),
                    message_id: ev.content.relates_to.event_id.to_string(),
                    emoji: ev.content.relates_to.key.clone(),
                };
                if let Ok(mut log) = log.lock() {
                    if log.seen.len() >= REACTION_LOG_MAX {
                        log.seen.clear();
                    }
                    log.seen.insert(ev.event_id.clone(), seen.clone());
                }
                if let Some(vote) = reaction_event(seen, true) {
                    let _ = tx.send(vote).await;
                }
            }
        },
    );

    let tx = events.clone();
    let log = reactions;
    client.add_event_handler(move |ev: OriginalSyncRoomRedactionEvent| {
        let tx = tx.clone();
        let log = log.clone();
        async move {
            let Some(redacted) = ev.redacts.clone().or_else(|| ev.content.redacts.clone()) else {
                return;
            };
            let removed = log
                .lock()
                .ok()
                .and_then(|mut log| log.seen.remove(&redacted));
            // Only the reactor withdrawing their own reaction counts as a removed vote.
            if let Some(vote) = removed
                .filter(|s| s.user == ev.sender.as_str())
                .and_then(|seen| reaction_event(seen, false))
            {
                let _ = tx.send(vote).await;
            }
        }
    });

    let allowed: Vec<String> = config.rooms.clone();
    client.add_event_handler(
        move |ev: StrippedRoomMemberEvent, room: Room, client: Client| {
            let allowed = allowed.clone();
            async move {
                if client.user_id() != Some(&ev.state_key)
                    || ev.content.membership != MembershipState::Invite
                {
                    return;
                }
                accept_invite(room, &allowed).await;
            }
        },
    );
}

/// Join a room the bot was invited to, when `allowed` (matrix.rooms) is empty
/// or names it. Used for invites as they arrive and, at start-up, for those
/// that arrived while squall was down.
pub(super) async fn accept_invite(room: Room, allowed: &[String]) {
    if !allowed.is_empty() && !allowed.iter().any(|r| r == room.room_id().as_str()) {
        tracing::info!(room = %room.room_id(), "ignoring an invite to a room outside matrix.rooms");
        return;
    }
    // Joining right after the invite can race the homeserver; retry.
    let mut delay = Duration::from_millis(200);
    for _ in 0..8 {
        match room.join().await {
            Ok(()) => {
                tracing::info!(room = %room.room_id(), "joined after an invite");
                return;
            }
            Err(err) => {
                tracing::warn!(room = %room.room_id(), error = %err, "joining failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// A reaction (or its removal) as a vote; `None` when it is not one.
fn reaction_event(seen: SeenReaction, added: bool) -> Option<ChatEvent> {
    // The bot's own reactions never reach here (they are filtered on arrival).
    crate::common::reaction_to_vote(
        PLATFORM,
        ChannelRef {
            channel: seen.room,
            thread: None,
        },
        &seen.user,
        None,
        &seen.message_id,
        &seen.emoji,
        added,
    )
}

/// Remove a leading mention of the bot (`@squall:hs: `, `squall: `) and say
/// whether there was one.
pub(super) fn strip_mention(body: &str, user_id: &str, localpart: &str) -> (String, bool) {
    let trimmed = body.trim();
    for name in [user_id, localpart] {
        if let Some(rest) = trimmed.strip_prefix(name) {
            let rest = rest.trim_start_matches([':', ',']).trim_start();
            if rest.len() < trimmed.len() {
                return (rest.to_owned(), true);
            }
        }
    }
    (trimmed.to_owned(), false)
}
