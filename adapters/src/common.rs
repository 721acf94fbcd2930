//! What every chat adapter shares: reconnection backoff, turning reactions
//! into votes, and mapping platform errors onto `AdapterError`.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use squall_engine::chat::{AdapterError, ChannelRef, ChatEvent, VoteEvent, VoteTarget};

/// Exponential backoff between reconnection attempts: 250 ms doubling to 15 s.
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(15);

    pub fn new() -> Self {
        Self(Self::FIRST)
    }

    pub fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// Sleep the current delay (and double the next); false when shutting
    /// down meanwhile.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = shutdown.cancelled() => false,
        }
    }
}

/// Call `f` until the platform answers: transient failures (and rate
/// limits) are retried with backoff, a permanent one is returned. `None`
/// when shutting down meanwhile.
pub async fn until_answered<T, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut f: F,
) -> Result<Option<T>, AdapterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AdapterError>>,
{
    let mut backoff = Backoff::new();
    loop {
        match f().await {
            Ok(answer) => return Ok(Some(answer)),
            Err(err @ (AdapterError::Permanent { .. } | AdapterError::Unsupported { .. })) => {
                return Err(err);
            }
            Err(err) => {
                tracing::warn!(error = %err, "{what} failed; retrying");
                if !backoff.wait(shutdown).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// Keys seen lately, to handle each event once (platform redeliveries).
#[derive(Default)]
pub struct Seen {
    order: VecDeque<String>,
    keys: HashSet<String>,
}

pub const SEEN: usize = 20_000;

impl Seen {
    /// True the first time `key` is offered.
    pub fn first(&mut self, key: String) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        if self.order.len() >= SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.keys.remove(&old);
        }
        self.keys.insert(key.clone());
        self.order.push_back(key);
        true
    }
}

/// Reactions that approve or deny. Platforms send the emoji itself (Matrix)
/// or its name (Slack `white_check_mark`, Discord `✅` or a custom name).
const APPROVE: &[&str] = &[
    "✅",
    "✔️",
    "✔",
    "👍",
    "white_check_mark",
    "heavy_check_mark",
    "+1",
    "thumbsup",
];
const DENY: &[&str] = &["❌", "👎", "x", "-1", "thumbsdown", "no_entry"];

/// Approve (true), deny (false), or not a vote.
pub fn reaction_vote(emoji: &str) -> Option<bool> {
    let e = emoji.trim().trim_matches(':');
    if APPROVE.contains(&e) {
        Some(true)
    } else if DENY.contains(&e) {
        Some(false)
    } else {
        None
    }
}

/// A reaction as a vote event: `None` when the emoji is not a vote or the
/// reactor is the bot itself (its own ✅ ❌ under a prompt).
pub fn reaction_to_vote(
    platform: &str,
    to: ChannelRef,
    user: &str,
    bot_user: Option<&str>,
    message_id: &str,
    emoji: &str,
    added: bool,
) -> Option<ChatEvent> {
    if bot_user == Some(user) {
        return None;
    }
    let approve = reaction_vote(emoji)?;
    Some(ChatEvent::Vote(VoteEvent {
        platform: platform.to_owned(),
        to,
        user: user.to_owned(),
        on: VoteTarget::Message(message_id.to_owned()),
        approve,
        withdrawn: !added,
    }))
}

/// A button press as a vote event: `None` for buttons that are not votes.
pub fn button_to_vote(
    platform: &str,
    to: ChannelRef,
    user: &str,
    button_id: &str,
) -> Option<ChatEvent> {
    let (inquiry, approve) = squall_engine::chat::parse_vote_button(button_id)?;
    Some(ChatEvent::Vote(VoteEvent {
        platform: platform.to_owned(),
        to,
        user: user.to_owned(),
        on: VoteTarget::Inquiry(inquiry),
        approve,
        withdrawn: false,
    }))
}

/// Map an HTTP answer from a platform API onto an adapter error: 429 is a
/// rate limit (with the platform's retry-after), other 4xx a refusal that a
/// retry cannot fix, 5xx and no answer at all transient.
pub fn http_error(
    platform: &str,
    status: Option<u16>,
    retry_after: Option<Duration>,
    reason: impl std::fmt::Display,
) -> AdapterError {
    match status {
        Some(429) => AdapterError::RateLimited {
            platform: platform.to_owned(),
            retry_after,
        },
        // 401/403 can be a token being rotated, 408 a slow network.
        Some(s @ 400..=499) if !matches!(s, 401 | 403 | 408) => AdapterError::Permanent {
            platform: platform.to_owned(),
            reason: reason.to_string(),
        },
        _ => AdapterError::Transient {
            platform: platform.to_owned(),
            reason: reason.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to() -> ChannelRef {
        ChannelRef {
            channel: "c".into(),
            thread: None,
        }
    }

    #[test]
    fn reactions_become_votes_except_the_bots_own() {
        assert_eq!(reaction_vote(":white_check_mark:"), Some(true));
        assert_eq!(reaction_vote("👎"), Some(false));
        assert_eq!(reaction_vote("🎉"), None);
        let vote = reaction_to_vote("p", to(), "alice", Some("bot"), "m1", "✅", false);
        let Some(ChatEvent::Vote(v)) = vote else {
            panic!("not a vote: {vote:?}");
        };
        assert!(v.approve && v.withdrawn);
        assert_eq!(v.on, VoteTarget::Message("m1".into()));
        assert!(reaction_to_vote("p", to(), "bot", Some("bot"), "m1", "✅", true).is_none());
    }

    #[test]
    fn buttons_become_votes() {
        let id = squall_engine::chat::vote_button_id("01ABC", false);
        let Some(ChatEvent::Vote(v)) = button_to_vote("p", to(), "alice", &id) else {
            panic!("not a vote");
        };
        assert_eq!(v.on, VoteTarget::Inquiry("01ABC".into()));
        assert!(!v.approve);
        assert!(button_to_vote("p", to(), "alice", "other:thing").is_none());
    }

    #[test]
    fn http_statuses_map_to_retry_or_refusal() {
        assert!(matches!(
            http_error("p", Some(429), Some(Duration::from_secs(2)), "slow down"),
            AdapterError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        assert!(matches!(
            http_error("p", Some(413), None, "too large"),
            AdapterError::Permanent { .. }
        ));
        assert!(matches!(
            http_error("p", Some(502), None, "bad gateway"),
            AdapterError::Transient { .. }
        ));
        assert!(matches!(
            http_error("p", None, None, "connection refused"),
            AdapterError::Transient { .. }
        ));
    }
}
