//! What Slack sends squall, by either way in (Socket Mode envelopes or signed
//! Events API requests), turned into `ChatEvent`s: messages and mentions,
//! slash commands, button clicks and reactions. Messages from bots (squall's
//! own included) are never commands; an event seen twice (Slack's retries,
//! a redelivery after a lost socket, a mention that is both `message` and
//! `app_mention`) is handled once.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;

use squall_engine::chat::{ChannelRef, ChatEvent, IncomingMessage};

use super::PLATFORM;

/// The bot, as `auth.test` names it.
#[derive(Debug, Clone)]
pub(super) struct Me {
    pub(super) user_id: String,
}

use crate::common::{SEEN, Seen};

/// A slash command's `response_url`, good for 30 minutes.
struct ResponseUrl {
    url: String,
    until: Instant,
}

/// State both ways in share.
pub(super) struct Inbound {
    pub(super) me: OnceLock<Me>,
    threads: bool,
    seen: Mutex<Seen>,
    response_urls: Mutex<HashMap<String, ResponseUrl>>,
    signing_secret: Option<String>,
    window: Duration,
    /// Signatures of accepted requests, until they fall out of the window.
    signatures: Mutex<HashMap<String, Instant>>,
    /// The thread of each message squall sent lately, so a vote by reaction
    /// is answered where its prompt is.
    sent_threads: Mutex<HashMap<String, String>>,
}

impl Inbound {
    pub(super) fn new(threads: bool, signing_secret: Option<String>, window: Duration) -> Self {
        Self {
            me: OnceLock::new(),
            threads,
            seen: Mutex::default(),
            response_urls: Mutex::default(),
            signing_secret,
            window,
            signatures: Mutex::default(),
            sent_threads: Mutex::default(),
        }
    }

    pub(super) fn remember_thread(&self, sent: &squall_engine::chat::SentMessage) {
        if let (Some(thread), Ok(mut threads)) = (&sent.to.thread, self.sent_threads.lock()) {
            if threads.len() > SEEN {
                threads.clear();
            }
            threads.insert(sent.message_id.clone(), thread.clone());
        }
    }

    fn thread_of(&self, message_id: &str) -> Option<String> {
        self.sent_threads.lock().ok()?.get(message_id).cloned()
    }

    fn first(&self, key: String) -> bool {
        self.seen.lock().map(|mut s| s.first(key)).unwrap_or(true)
    }

    /// The `response_url` of the latest slash command in `channel`.
    pub(super) fn response_url(&self, channel: &str) -> Option<String> {
        let urls = self.response_urls.lock().ok()?;
        urls.get(channel)
            .filter(|r| r.until > Instant::now())
            .map(|r| r.url.clone())
    }

    /// An `event_callback` body (the Events API request, or the payload of a
    /// Socket Mode `events_api` envelope).
    pub(super) async fn push_event(&self, body: &Value, events: &mpsc::Sender<ChatEvent>) {
        if let Some(id) = body["event_id"].as_str()
            && !self.first(format!("event:{id}"))
        {
            return;
        }
        let Some(me) = self.me.get() else {
            tracing::warn!("a Slack event arrived before squall knew its own bot user; dropped");
            return;
        };
        if let Some(event) = self.event(me, &body["event"])
            && events.send(event).await.is_err()
        {
            tracing::warn!("the dispatcher has stopped; a Slack event was dropped");
        }
    }

    fn event(&self, me: &Me, event: &Value) -> Option<ChatEvent> {
        let kind = event["type"].as_str()?;
        match kind {
            "message" | "app_mention" => self.message(me, event, kind == "app_mention"),
            "reaction_added" | "reaction_removed" => {
                let item = &event["item"];
                if item["type"].as_str() != Some("message") {
                    return None;
                }
                if !self.first(format!(
                    "{kind}:{}:{}:{}:{}",
                    event["user"].as_str()?,
                    item["ts"].as_str()?,
                    event["reaction"].as_str()?,
                    event["event_ts"].as_str().unwrap_or_default()
                )) {
                    return None;
                }
                crate::common::reaction_to_vote(
                    PLATFORM,
                    ChannelRef {
                        channel: item["channel"].as_str()?.to_owned(),
                        thread: self.thread_of(item["ts"].as_str()?),
                    },
                    event["user"].as_str()?,
                    Some(&me.user_id),
                    item["ts"].as_str()?,
                    event["reaction"].as_str()?,
                    kind == "reaction_added",
                )
            }
            _ => None,
        }
    }

    fn message(&self, me: &Me, event: &Value, mention_event: bool) -> Option<ChatEvent> {
        // Edits, joins, deletions and bot posts are not commands.
        match event["subtype"].as_str() {
            None | Some("thread_broadcast") => {}
            Some(_) => return None,
        }
        if event.get("bot_id").is_some_and(|b| !b.is_null()) || event.get("bot_profile").is_some() {
            return None;
        }
        let user = event["user"].as_str()?;
        if user == me.user_id {
            return None;
        }
        let channel = event["channel"].as_str()?;
        let ts = event["ts"].as_str()?;
        // A mention arrives as `message` and as `app_mention`: once.
        if !self.first(format!("message:{channel}:{ts}")) {
            return None;
        }
        let raw = event["text"].as_str().unwrap_or_default();
        let mention = format!("<@{}>", me.user_id);
        let mentions_bot = mention_event || raw.contains(&mention);
        let text = unescape(&raw.replace(&mention, " "));
        let direct = event["channel_type"].as_str() == Some("im") || channel.starts_with('D');
        let thread_ts = event["thread_ts"].as_str();
        let thread = match thread_ts {
            Some(t) => Some(t.to_owned()),
            None if self.threads && !direct => Some(ts.to_owned()),
            None => None,
        };
        Some(ChatEvent::Message(IncomingMessage {
            platform: PLATFORM.into(),
            to: ChannelRef {
                channel: channel.to_owned(),
                thread,
            },
            user: user.to_owned(),
            text: text.trim().to_owned(),
            message_id: ts.to_owned(),
            direct,
            mentions_bot,
        }))
    }

    /// A slash command (`/squall deploy web`): its form fields.
    pub(super) async fn command(
        &self,
        form: &HashMap<String, String>,
        events: &mpsc::Sender<ChatEvent>,
    ) {
        let (Some(user), Some(channel)) = (form.get("user_id"), form.get("channel_id")) else {
            return;
        };
        if let Some(trigger) = form.get("trigger_id")
            && !self.first(format!("command:{trigger}"))
        {
            return;
        }
        if let (Some(url), Ok(mut urls)) = (form.get("response_url"), self.response_urls.lock()) {
            urls.retain(|_, r| r.until > Instant::now());
            urls.insert(
                channel.clone(),
                ResponseUrl {
                    url: url.clone(),
                    until: Instant::now() + Duration::from_secs(29 * 60),
                },
            );
        }
        let text = form.get("text").map(String::as_str).unwrap_or_default();
        let message = IncomingMessage {
            platform: PLATFORM.into(),
            to: ChannelRef {
                channel: channel.clone(),
                thread: None,
            },
            user: user.clone(),
            text: unescape(text).trim().to_owned(),
            message_id: form.get("trigger_id").cloned().unwrap_or_default(),
            direct: channel.starts_with('D'),
            // Addressed to squall by its very form.
            mentions_bot: true,
        };
        if events.send(ChatEvent::Message(message)).await.is_err() {
            tracing::warn!("the dispatcher has stopped; a Slack command was dropped");
        }
    }

    /// An interactivity payload: a click on a prompt's buttons is a vote by
    /// the person who clicked.
    pub(super) async fn interaction(&self, payload: &Value, events: &mpsc::Sender<ChatEvent>) {
        if payload["type"].as_str() != Some("block_actions") {
            return;
        }
        let Some(user) = payload["user"]["id"].as_str() else {
            return;
        };
        let channel = payload["channel"]["id"]
            .as_str()
            .or_else(|| payload["container"]["channel_id"].as_str());
        let Some(channel) = channel else {
            return;
        };
        let thread = payload["message"]["thread_ts"]
            .as_str()
            .or_else(|| payload["container"]["thread_ts"].as_str())
            .map(str::to_owned);
        for action in payload["actions"].as_array().into_iter().flatten() {
            let Some(id) = action["action_id"].as_str() else {
                continue;
            };
            let key = format!(
                "action:{user}:{id}:{}",
                action["action_ts"].as_str().unwrap_or_default()
            );
            if !self.first(key) {
                continue;
            }
            let to = ChannelRef {
                channel: channel.to_owned(),
                thread: thread.clone(),
            };
            if let Some(vote) = crate::common::button_to_vote(PLATFORM, to, user, id)
                && events.send(vote).await.is_err()
            {
                tracing::warn!("the dispatcher has stopped; a Slack click was dropped");
            }
        }
    }

    /// Check a signed Events API request: `v0=HMAC-SHA256(secret,
    /// "v0:{timestamp}:{body}")`, the timestamp within the window, and the
    /// same signature never accepted twice.
    pub(super) fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), &'static str> {
        let secret = self
            .signing_secret
            .as_deref()
            .ok_or("squall has no Slack signing secret (slack.signing_secret)")?;
        let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
            return Err("missing X-Slack-Request-Timestamp or X-Slack-Signature");
        };
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| "X-Slack-Request-Timestamp is not a number")?;
        let now = squall_engine::execution::now_ms() / 1000;
        let window = i64::try_from(self.window.as_secs()).unwrap_or(300);
        if (now - ts).abs() > window {
            return Err(
                "the request's timestamp is outside the signature window (stale or replayed)",
            );
        }
        let hex_sig = signature
            .strip_prefix("v0=")
            .ok_or("X-Slack-Signature is not a v0 signature")?;
        let given = hex::decode(hex_sig).map_err(|_| "X-Slack-Signature is not hex")?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| "bad signing secret")?;
        mac.update(b"v0:");
        mac.update(timestamp.as_bytes());
        mac.update(b":");
        mac.update(body);
        // Constant-time comparison.
        mac.verify_slice(&given)
            .map_err(|_| "the signature does not match the body")?;
        let mut seen = self
            .signatures
            .lock()
            .map_err(|_| "signature log poisoned")?;
        let now_i = Instant::now();
        seen.retain(|_, until| *until > now_i);
        if seen.contains_key(hex_sig) {
            return Err("this request was already received (replayed)");
        }
        seen.insert(hex_sig.to_owned(), now_i + self.window * 2);
        Ok(())
    }
}

/// Slack's escaped text as typed: entities back to characters, links
/// `<https://x|label>` and `<https://x>` to their URL.
pub(super) fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = &rest[start + 1..start + end];
        let target = inner.split('|').next().unwrap_or(inner);
        if target.starts_with("http://")
            || target.starts_with("https://")
            || target.starts_with("mailto:")
        {
            out.push_str(target);
        } else {
            out.push('<');
            out.push_str(inner);
            out.push('>');
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The HTTP way in: one route for events, slash commands and clicks.
pub(super) mod http {
    use std::collections::HashMap;
    use std::sync::Arc;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};
    use tokio::sync::mpsc;

    use squall_engine::chat::ChatEvent;

    use super::Inbound;

    #[derive(Clone)]
    struct Ctx {
        inbound: Arc<Inbound>,
        events: mpsc::Sender<ChatEvent>,
    }

    pub(in crate::slack) fn routes(
        inbound: Arc<Inbound>,
        events: mpsc::Sender<ChatEvent>,
    ) -> axum::Router {
        axum::Router::new()
            .route("/events", axum::routing::post(receive))
            .with_state(Ctx { inbound, events })
    }

    fn refuse(status: StatusCode, why: &str) -> Response {
        (status, axum::Json(json!({"ok": false, "error": why}))).into_response()
    }

    async fn receive(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
        let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Err(why) = ctx.inbound.verify(
            header_str("x-slack-request-timestamp"),
            header_str("x-slack-signature"),
            &body,
        ) {
            tracing::warn!(reason = why, "refused a Slack request");
            return refuse(StatusCode::UNAUTHORIZED, why);
        }
        let form = header_str(header::CONTENT_TYPE.as_str())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if form {
            let Ok(fields) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
                return refuse(StatusCode::BAD_REQUEST, "the form body does not parse");
            };
            if let Some(payload) = fields.get("payload") {
                let Ok(payload) = serde_json::from_str::<Value>(payload) else {
                    return refuse(StatusCode::BAD_REQUEST, "payload= is not JSON");
                };
                ctx.inbound.interaction(&payload, &ctx.events).await;
                return StatusCode::OK.into_response();
            }
            // Slack checks a slash command's URL with `ssl_check=1`.
            if fields.contains_key("ssl_check") {
                return StatusCode::OK.into_response();
            }
            if fields.contains_key("command") {
                ctx.inbound.command(&fields, &ctx.events).await;
                return StatusCode::OK.into_response();
            }
            return refuse(
                StatusCode::BAD_REQUEST,
                "a form without payload= or command=",
            );
        }
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return refuse(StatusCode::BAD_REQUEST, "the body is not JSON");
        };
        match body["type"].as_str() {
            Some("url_verification") => {
                axum::Json(json!({"challenge": body["challenge"]})).into_response()
            }
            Some("event_callback") => {
                if ctx.inbound.me.get().is_none() {
                    // Slack retries a request that is not answered with 2xx.
                    return refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "squall is still connecting to Slack",
                    );
                }
                ctx.inbound.push_event(&body, &ctx.events).await;
                StatusCode::OK.into_response()
            }
            Some("app_rate_limited") => {
                tracing::warn!("Slack is rate limiting the events it sends squall");
                StatusCode::OK.into_response()
            }
            other => refuse(
                StatusCode::BAD_REQUEST,
                &format!("unknown request type {other:?}"),
            ),
        }
    }
}
