//! A local server speaking Discord's wire protocol, for tests: REST under
//! `/api/v10` (the calls squall makes: gateway discovery, `users/@me`,
//! application commands, channel messages, edits, reactions, threads,
//! typing, interaction callbacks and webhook follow-ups) and a WebSocket
//! gateway (hello, identify → READY, heartbeats and their acks, resume with
//! replay, op 7 and op 9, close codes). Payloads follow Discord's
//! documentation. It records every REST call, enforces a per-channel (and,
//! if asked, a global) rate limit with 429s in Discord's shape, posts back
//! squall's own messages as MESSAGE_CREATE (as Discord does), and signs
//! requests to squall's Interactions endpoint with an Ed25519 key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::{Signer, SigningKey};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub const TOKEN: &str = "MTE5MDAwMDAwMDAwMDAwMDAwMg.squall.test-token";
pub const APPLICATION_ID: &str = "1190000000000000001";
pub const BOT_USER: &str = "1190000000000000002";
pub const GUILD: &str = "1190000000000000100";
/// The fixed seed of the application's signing key (tests only).
const KEY_SEED: [u8; 32] = [7; 32];
const HEARTBEAT_MS: u64 = 1500;

/// The application's public key, hex (what squall is configured with).
pub fn public_key() -> String {
    hex::encode(SigningKey::from_bytes(&KEY_SEED).verifying_key().to_bytes())
}

/// Sign a request to the Interactions endpoint as Discord does:
/// Ed25519 over timestamp + body, hex.
pub fn sign(seed: [u8; 32], timestamp: &str, body: &str) -> String {
    let key = SigningKey::from_bytes(&seed);
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(body.as_bytes());
    hex::encode(key.sign(&message).to_bytes())
}

pub fn key_seed() -> [u8; 32] {
    KEY_SEED
}

/// One thing squall did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Post,
    Edit,
    /// Shown only to `Posted::only_for` (an interaction answer).
    Ephemeral,
    /// The deferred answer of a `/squall` command, filled in.
    Original,
    /// A follow-up through an interaction's token.
    Followup,
}

#[derive(Debug, Clone)]
pub struct Posted {
    pub kind: Kind,
    /// The channel the message is in (a thread's id for a thread).
    pub channel: String,
    /// The message's id (for an edit: the message edited).
    pub id: String,
    /// The message it replies to (`message_reference`).
    pub reference: Option<String>,
    pub only_for: Option<String>,
    /// What a person reads: content, embed title, description, fields.
    pub text: String,
    /// The request body as squall sent it.
    pub raw: Value,
    /// The custom ids of its buttons.
    pub buttons: Vec<String>,
    /// The interaction it answers.
    pub interaction: Option<String>,
}

/// A fault the gateway plays on the live connection.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Close with this code (4000: resumable; 4009: session timed out).
    Close(u16),
    /// Op 7: reconnect and resume.
    Reconnect,
    /// Op 9 with `d: false`: the session is gone, identify anew.
    InvalidSession,
}

struct Session {
    id: String,
    /// Dispatches of this session: (seq, payload).
    log: Vec<(u64, Value)>,
    seq: u64,
    live: bool,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    posted: Vec<Posted>,
    calls: Vec<(String, String)>,
    /// Messages by id: (channel, author id, body).
    messages: HashMap<String, (String, String, Value)>,
    /// Thread channel → parent channel.
    threads: HashMap<String, String>,
    nonces: HashMap<(String, String), String>,
    reactions: Vec<(String, String)>,
    typing: u64,
    commands: Vec<Value>,
    /// Interactions: id → (token, user, acknowledged).
    interactions: HashMap<String, (String, String, bool)>,
    callbacks: Vec<(String, u64)>,
    rate: HashMap<String, VecDeque<Instant>>,
    rate_limit: Option<usize>,
    global: VecDeque<Instant>,
    global_limit: Option<usize>,
    rate_limited: u64,
    globally_limited: u64,
    outage_until: Option<Instant>,
    sessions: Vec<Session>,
    socket: Option<mpsc::UnboundedSender<WsMessage>>,
    identifies: u64,
    identify_intents: Vec<u64>,
    resumes: u64,
    connections: u64,
    withhold_acks: bool,
    heartbeats: u64,
}

pub struct FakeDiscord {
    state: Arc<Shared>,
    pub api_url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
    ws_url: String,
    http: reqwest::Client,
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn user(id: &str, name: &str, bot: bool) -> Value {
    json!({"id": id, "username": name, "discriminator": "0", "global_name": name,
           "avatar": null, "bot": bot, "public_flags": 0})
}

fn member(id: &str) -> Value {
    json!({"user": user(id, &format!("user-{id}"), false), "nick": null, "avatar": null,
           "roles": [], "joined_at": "2026-01-01T00:00:00.000000+00:00", "deaf": false,
           "mute": false, "flags": 0, "pending": false, "permissions": "1071698660929"})
}

/// A message object as Discord's documentation shows one.
fn message(id: &str, channel: &str, author: Value, content: &str, extra: &Value) -> Value {
    let mut m = json!({
        "id": id, "channel_id": channel, "guild_id": GUILD, "author": author,
        "content": content, "timestamp": timestamp(), "edited_timestamp": null,
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "pinned": false, "type": 0, "flags": 0,
        "components": [],
    });
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    m
}

/// What a person reads of a message body, and its buttons.
fn readable(body: &Value) -> (String, Vec<String>) {
    let mut parts = Vec::new();
    if let Some(c) = body["content"].as_str().filter(|c| !c.is_empty()) {
        parts.push(c.to_owned());
    }
    for e in body["embeds"].as_array().into_iter().flatten() {
        for key in ["title", "description"] {
            if let Some(t) = e[key].as_str() {
                parts.push(t.to_owned());
            }
        }
        for f in e["fields"].as_array().into_iter().flatten() {
            parts.push(format!(
                "{}: {}",
                f["name"].as_str().unwrap_or_default(),
                f["value"].as_str().unwrap_or_default()
            ));
        }
        if let Some(t) = e["footer"]["text"].as_str() {
            parts.push(t.to_owned());
        }
    }
    let mut buttons = Vec::new();
    for row in body["components"].as_array().into_iter().flatten() {
        for c in row["components"].as_array().into_iter().flatten() {
            if let Some(id) = c["custom_id"].as_str() {
                buttons.push(id.to_owned());
                parts.push(format!("[{}]", c["label"].as_str().unwrap_or_default()));
            }
        }
    }
    (parts.join("\n"), buttons)
}

fn error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

impl FakeDiscord {
    pub async fn start() -> Result<FakeDiscord> {
        let api = TcpListener::bind("127.0.0.1:0").await?;
        let ws = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", api.local_addr()?);
        let state = Arc::new(Shared {
            inner: Mutex::new(Inner {
                next_id: 1_200_000_000_000_000_000,
                ..Inner::default()
            }),
            changed: Notify::new(),
            ws_url: format!("ws://{}", ws.local_addr()?),
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new()
            .route("/api/v10/{*path}", axum::routing::any(rest))
            .with_state(state.clone());
        let mut tasks = vec![tokio::spawn(async move {
            let _ = axum::serve(api, app).await;
        })];
        tasks.push(tokio::spawn(accept_sockets(ws, state.clone())));
        Ok(FakeDiscord {
            state,
            api_url: base,
            tasks,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.inner.lock().expect("fake discord state")
    }

    /// Posts per channel per second before 429s (None: no limit).
    pub fn set_rate_limit(&self, per_second: Option<usize>) {
        self.lock().rate_limit = per_second;
    }

    /// Requests per second across all routes before a global 429.
    pub fn set_global_limit(&self, per_second: Option<usize>) {
        self.lock().global_limit = per_second;
    }

    pub fn posted(&self) -> Vec<Posted> {
        self.lock().posted.clone()
    }

    /// Every REST call: (method, path).
    pub fn calls(&self) -> Vec<(String, String)> {
        self.lock().calls.clone()
    }

    pub fn commands(&self) -> Vec<Value> {
        self.lock().commands.clone()
    }

    /// Interaction callbacks: (interaction id, response type).
    pub fn callbacks(&self) -> Vec<(String, u64)> {
        self.lock().callbacks.clone()
    }

    /// Reactions squall added: (message id, emoji).
    pub fn reactions(&self) -> Vec<(String, String)> {
        self.lock().reactions.clone()
    }

    /// (per-route 429s, global 429s).
    pub fn rate_limited(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.rate_limited, inner.globally_limited)
    }

    /// (identifies, resumes, connections, heartbeats).
    pub fn gateway_counts(&self) -> (u64, u64, u64, u64) {
        let inner = self.lock();
        (
            inner.identifies,
            inner.resumes,
            inner.connections,
            inner.heartbeats,
        )
    }

    pub fn identify_intents(&self) -> Vec<u64> {
        self.lock().identify_intents.clone()
    }

    /// A session is live (identified or resumed, not since lost).
    pub fn connected(&self) -> bool {
        let inner = self.lock();
        inner.socket.is_some() && inner.sessions.last().is_some_and(|s| s.live)
    }

    /// The parent of a thread channel.
    pub fn thread_parent(&self, channel: &str) -> Option<String> {
        self.lock().threads.get(channel).cloned()
    }

    pub fn typing_count(&self) -> u64 {
        self.lock().typing
    }

    pub fn withhold_heartbeat_acks(&self, withhold: bool) {
        self.lock().withhold_acks = withhold;
    }

    /// Play a fault on the live connection.
    pub fn fault(&self, fault: Fault) {
        let mut inner = self.lock();
        let Some(socket) = inner.socket.clone() else {
            return;
        };
        match fault {
            Fault::Close(code) => {
                if code != 4000
                    && let Some(s) = inner.sessions.last_mut()
                {
                    s.live = false;
                    s.id.clear();
                }
                let _ = socket.send(WsMessage::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: "fault".into(),
                })));
                inner.socket = None;
            }
            Fault::Reconnect => {
                let _ = socket.send(WsMessage::text(json!({"op": 7, "d": null}).to_string()));
            }
            Fault::InvalidSession => {
                if let Some(s) = inner.sessions.last_mut() {
                    s.live = false;
                    s.id.clear();
                }
                let _ = socket.send(WsMessage::text(json!({"op": 9, "d": false}).to_string()));
            }
        }
    }

    /// Discord is down for `d`: REST answers 503, the gateway drops and
    /// refuses connections.
    pub fn outage(&self, d: Duration) {
        let mut inner = self.lock();
        inner.outage_until = Some(Instant::now() + d);
        if let Some(socket) = inner.socket.take() {
            let _ = socket.send(WsMessage::Close(Some(CloseFrame {
                code: CloseCode::from(1001),
                reason: "going away".into(),
            })));
        }
    }

    pub async fn changed(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.state.changed.notified()).await;
    }

    fn next_id(inner: &mut Inner) -> String {
        inner.next_id += 1;
        inner.next_id.to_string()
    }

    /// A person writes `text` in `channel`; returns the message id.
    pub fn say(&self, user_id: &str, channel: &str, text: &str) -> String {
        self.say_with(user_id, channel, text, &json!({}))
    }

    /// A message with extra fields (`mentions`, `guild_id: null` for a DM,
    /// `author` of a bot, ...).
    pub fn say_with(&self, user_id: &str, channel: &str, text: &str, extra: &Value) -> String {
        let mut inner = self.lock();
        let id = Self::next_id(&mut inner);
        let mut m = message(
            &id,
            channel,
            user(user_id, &format!("user-{user_id}"), false),
            text,
            extra,
        );
        if m["guild_id"].is_string() {
            m["member"] = member(user_id);
            m["member"].as_object_mut().map(|o| o.remove("user"));
        }
        inner.messages.insert(
            id.clone(),
            (channel.to_owned(), user_id.to_owned(), m.clone()),
        );
        dispatch(&mut inner, "MESSAGE_CREATE", m);
        id
    }

    /// A person adds (or removes) a reaction.
    pub fn react(&self, user_id: &str, channel: &str, message_id: &str, emoji: &str, added: bool) {
        let mut inner = self.lock();
        let mut d = json!({"user_id": user_id, "channel_id": channel, "message_id": message_id,
                           "guild_id": GUILD, "emoji": {"id": null, "name": emoji},
                           "burst": false, "type": 0});
        let kind = if added {
            d["member"] = member(user_id);
            d["message_author_id"] = json!(BOT_USER);
            d["burst_colors"] = json!([]);
            "MESSAGE_REACTION_ADD"
        } else {
            "MESSAGE_REACTION_REMOVE"
        };
        dispatch(&mut inner, kind, d);
    }

    fn interaction(
        &self,
        user_id: &str,
        channel: &str,
        kind: u64,
        data: Value,
        extra: Value,
    ) -> Value {
        let mut inner = self.lock();
        let id = Self::next_id(&mut inner);
        let token = format!("aW50ZXJhY3Rpb246{id}:{}", "t".repeat(40));
        inner
            .interactions
            .insert(id.clone(), (token.clone(), user_id.to_owned(), false));
        let mut i = json!({
            "id": id, "application_id": APPLICATION_ID, "type": kind, "data": data,
            "guild_id": GUILD, "channel_id": channel,
            "channel": {"id": channel, "type": 0, "name": "ops", "guild_id": GUILD},
            "member": member(user_id), "token": token, "version": 1,
            "app_permissions": "442368", "locale": "en-GB", "guild_locale": "en-US",
            "entitlements": [], "authorizing_integration_owners": {"0": GUILD},
            "context": 0, "attachment_size_limit": 10_485_760,
        });
        if let (Some(m), Some(e)) = (i.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        i
    }

    fn slash_payload(&self, user_id: &str, channel: &str, text: &str) -> Value {
        self.interaction(
            user_id,
            channel,
            2,
            json!({"id": "1190000000000000050", "name": "squall", "type": 1,
                   "options": [{"name": "command", "type": 3, "value": text}]}),
            json!({}),
        )
    }

    fn click_payload(
        &self,
        user_id: &str,
        channel: &str,
        message_id: &str,
        custom_id: &str,
    ) -> Result<Value> {
        let m = self
            .lock()
            .messages
            .get(message_id)
            .map(|(_, _, m)| m.clone())
            .context("no such message")?;
        Ok(self.interaction(
            user_id,
            channel,
            3,
            json!({"custom_id": custom_id, "component_type": 2}),
            json!({"message": m}),
        ))
    }

    /// `/squall <text>` over the gateway; returns the interaction id.
    pub fn slash(&self, user_id: &str, channel: &str, text: &str) -> String {
        let i = self.slash_payload(user_id, channel, text);
        let id = i["id"].as_str().unwrap_or_default().to_owned();
        dispatch(&mut self.lock(), "INTERACTION_CREATE", i);
        id
    }

    /// A click on a button over the gateway.
    pub fn click(
        &self,
        user_id: &str,
        channel: &str,
        message_id: &str,
        custom_id: &str,
    ) -> Result<()> {
        let i = self.click_payload(user_id, channel, message_id, custom_id)?;
        dispatch(&mut self.lock(), "INTERACTION_CREATE", i);
        Ok(())
    }

    /// POST an interaction to squall's Interactions endpoint, signed with
    /// `seed`; `tamper` changes the body after signing. Answers (status,
    /// body).
    pub async fn post_interaction(
        &self,
        url: &str,
        interaction: &Value,
        seed: [u8; 32],
        tamper: bool,
    ) -> Result<(u16, Value)> {
        let body = interaction.to_string();
        let ts = chrono::Utc::now().timestamp().to_string();
        let signature = sign(seed, &ts, &body);
        let sent = if tamper {
            body.replace("signed", "tampered")
        } else {
            body
        };
        let answer = self
            .state
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-signature-ed25519", signature)
            .header("x-signature-timestamp", ts)
            .body(sent)
            .send()
            .await?;
        let status = answer.status().as_u16();
        let body = answer.json::<Value>().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            // Discord takes the HTTP answer as the interaction's callback.
            let id = interaction["id"].as_str().unwrap_or_default().to_owned();
            let mut inner = self.lock();
            if let Some(i) = inner.interactions.get_mut(&id) {
                i.2 = true;
            }
            inner
                .callbacks
                .push((id, body["type"].as_u64().unwrap_or_default()));
        }
        Ok((status, body))
    }

    /// A `/squall` interaction payload (for the HTTP endpoint).
    pub fn slash_interaction(&self, user_id: &str, channel: &str, text: &str) -> Value {
        self.slash_payload(user_id, channel, text)
    }

    pub fn click_interaction(
        &self,
        user_id: &str,
        channel: &str,
        message_id: &str,
        custom_id: &str,
    ) -> Result<Value> {
        self.click_payload(user_id, channel, message_id, custom_id)
    }

    pub fn ping_interaction(&self) -> Value {
        let mut inner = self.lock();
        let id = Self::next_id(&mut inner);
        json!({"id": id, "application_id": APPLICATION_ID, "type": 1,
               "token": "cGluZw", "version": 1})
    }
}

/// Send a dispatch to the live session (or keep it for a resume).
fn dispatch(inner: &mut Inner, kind: &str, d: Value) {
    let Some(session) = inner.sessions.last_mut() else {
        return;
    };
    if session.id.is_empty() {
        // Invalidated: Discord keeps nothing for a session that is gone.
        return;
    }
    session.seq += 1;
    let frame = json!({"op": 0, "s": session.seq, "t": kind, "d": d});
    session.log.push((session.seq, frame.clone()));
    if session.live
        && let Some(socket) = &inner.socket
    {
        let _ = socket.send(WsMessage::text(frame.to_string()));
    }
}

/// Posts allowed in the last second, per key: None when over the limit.
fn allow(window: &mut VecDeque<Instant>, limit: usize) -> Option<usize> {
    let now = Instant::now();
    while window
        .front()
        .is_some_and(|t| now - *t > Duration::from_secs(1))
    {
        window.pop_front();
    }
    if window.len() >= limit {
        return None;
    }
    window.push_back(now);
    Some(limit - window.len())
}

fn limited(global: bool, retry: Duration) -> Response {
    let secs = retry.as_secs_f64().max(0.05);
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"message": "You are being rate limited.", "retry_after": secs, "global": global})),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        "retry-after",
        format!("{}", secs.ceil()).parse().expect("header"),
    );
    h.insert(
        "x-ratelimit-scope",
        (if global { "global" } else { "user" })
            .parse()
            .expect("header"),
    );
    if global {
        h.insert("x-ratelimit-global", "true".parse().expect("header"));
    }
    r
}

#[allow(clippy::too_many_lines)]
async fn rest(
    State(state): State<Arc<Shared>>,
    method: Method,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let parts: Vec<&str> = path.split('/').collect();
    let mut inner = state.inner.lock().expect("state");
    inner.calls.push((method.to_string(), format!("/{path}")));
    if inner.outage_until.is_some_and(|t| t > Instant::now()) {
        return error(StatusCode::SERVICE_UNAVAILABLE, 0, "upstream connect error");
    }
    let webhook = parts.first() == Some(&"webhooks") || parts.first() == Some(&"interactions");
    let authed = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bot {TOKEN}"));
    if !webhook && !authed {
        return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
    }
    if let Some(limit) = inner.global_limit
        && allow(&mut inner.global, limit).is_none()
    {
        inner.globally_limited += 1;
        return limited(true, Duration::from_millis(500));
    }
    let ok = |v: Value| axum::Json(v).into_response();
    let changed = || state.changed.notify_waiters();
    let next = |inner: &mut Inner| FakeDiscord::next_id(inner);
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["gateway"]) => ok(json!({"url": state.ws_url})),
        ("GET", ["gateway", "bot"]) => ok(json!({"url": state.ws_url, "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}})),
        ("GET", ["users", "@me"]) => ok(user(BOT_USER, "squall", true)),
        (
            "POST",
            ["applications", app, "commands"] | ["applications", app, "guilds", _, "commands"],
        ) => {
            if *app != APPLICATION_ID {
                return error(StatusCode::FORBIDDEN, 50001, "Missing Access");
            }
            inner.commands.push(body.clone());
            let mut c = body.clone();
            c["id"] = json!("1190000000000000050");
            c["application_id"] = json!(APPLICATION_ID);
            c["version"] = json!("1");
            ok(c)
        }
        ("POST", ["channels", channel, "messages"]) => {
            let channel = (*channel).to_owned();
            if channel.starts_with("404") {
                return error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
            }
            if let Some(limit) = inner.rate_limit {
                let window = inner.rate.entry(channel.clone()).or_default();
                match allow(window, limit) {
                    None => {
                        let wait = window.front().map_or(Duration::from_millis(200), |t| {
                            Duration::from_secs(1).saturating_sub(t.elapsed())
                        });
                        inner.rate_limited += 1;
                        return limited(false, wait);
                    }
                    Some(_) => {}
                }
            }
            if let Some(text) = body["content"].as_str()
                && text.chars().count() > 2000
            {
                return (StatusCode::BAD_REQUEST, axum::Json(json!({"code": 50035, "message": "Invalid Form Body",
                    "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}}))).into_response();
            }
            if let Some(nonce) = body["nonce"].as_str()
                && body["enforce_nonce"] == json!(true)
                && let Some(id) = inner.nonces.get(&(channel.clone(), nonce.to_owned()))
            {
                let m = inner
                    .messages
                    .get(id)
                    .map(|(_, _, m)| m.clone())
                    .unwrap_or(Value::Null);
                return ok(m);
            }
            let id = next(&mut inner);
            if let Some(nonce) = body["nonce"].as_str() {
                inner
                    .nonces
                    .insert((channel.clone(), nonce.to_owned()), id.clone());
            }
            let (text, buttons) = readable(&body);
            let reference = body["message_reference"]["message_id"]
                .as_str()
                .map(str::to_owned);
            let mut extra = json!({"embeds": body["embeds"], "components": body["components"]});
            if let Some(r) = &reference {
                extra["message_reference"] =
                    json!({"message_id": r, "channel_id": channel, "guild_id": GUILD});
                extra["type"] = json!(19);
            }
            let m = message(
                &id,
                &channel,
                user(BOT_USER, "squall", true),
                body["content"].as_str().unwrap_or_default(),
                &extra,
            );
            inner.messages.insert(
                id.clone(),
                (channel.clone(), BOT_USER.to_owned(), m.clone()),
            );
            inner.posted.push(Posted {
                kind: Kind::Post,
                channel: channel.clone(),
                id: id.clone(),
                reference,
                only_for: None,
                text,
                raw: body.clone(),
                buttons,
                interaction: None,
            });
            // Discord sends the bot its own messages too.
            dispatch(&mut inner, "MESSAGE_CREATE", m.clone());
            drop(inner);
            changed();
            let mut r = ok(m);
            if let Some(limit) = state.inner.lock().ok().and_then(|i| i.rate_limit) {
                let h = r.headers_mut();
                h.insert(
                    "x-ratelimit-limit",
                    limit.to_string().parse().expect("header"),
                );
                h.insert(
                    "x-ratelimit-bucket",
                    "channel-messages".parse().expect("header"),
                );
            }
            r
        }
        // Channel history after a message id, newest first (Discord's order).
        ("GET", ["channels", channel, "messages"]) => {
            let after: u64 = query.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
            let limit: usize = query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(50);
            let mut found: Vec<(u64, Value)> = inner
                .messages
                .iter()
                .filter(|(_, (at, _, _))| at == channel)
                .filter_map(|(id, (_, _, m))| id.parse::<u64>().ok().map(|n| (n, m.clone())))
                .filter(|(n, _)| *n > after)
                .collect();
            found.sort_by_key(|(n, _)| *n);
            found.truncate(limit);
            found.reverse();
            ok(Value::Array(found.into_iter().map(|(_, m)| m).collect()))
        }
        ("GET", ["channels", _, "messages", id]) => match inner.messages.get(*id) {
            Some((_, _, m)) => ok(m.clone()),
            None => error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
        },
        ("PATCH", ["channels", channel, "messages", id]) => {
            let Some((at, author, _)) = inner.messages.get(*id).cloned() else {
                return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            };
            if at != *channel {
                return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            if author != BOT_USER {
                return error(
                    StatusCode::FORBIDDEN,
                    50005,
                    "Cannot edit a message authored by another user",
                );
            }
            let (text, buttons) = readable(&body);
            inner.posted.push(Posted {
                kind: Kind::Edit,
                channel: at.clone(),
                id: (*id).to_owned(),
                reference: None,
                only_for: None,
                text,
                raw: body.clone(),
                buttons,
                interaction: None,
            });
            drop(inner);
            changed();
            ok(json!({"id": id, "channel_id": at}))
        }
        ("POST", ["channels", channel, "messages", id, "threads"]) => {
            if !inner.messages.contains_key(*id) {
                return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            if inner.threads.contains_key(*id) {
                return error(
                    StatusCode::BAD_REQUEST,
                    160_004,
                    "A thread has already been created for this message",
                );
            }
            inner
                .threads
                .insert((*id).to_owned(), (*channel).to_owned());
            ok(
                json!({"id": id, "type": 11, "parent_id": channel, "guild_id": GUILD,
                      "name": body["name"], "owner_id": BOT_USER}),
            )
        }
        ("PUT", ["channels", _, "messages", id, "reactions", emoji, "@me"]) => {
            if !inner.messages.contains_key(*id) {
                return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
            }
            inner
                .reactions
                .push(((*id).to_owned(), (*emoji).to_owned()));
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", ["channels", _, "typing"]) => {
            inner.typing += 1;
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            let Some((known, user_id, _)) = inner.interactions.get(*id).cloned() else {
                return error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
            };
            if known != *token {
                return error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
            }
            let kind = body["type"].as_u64().unwrap_or_default();
            inner.callbacks.push(((*id).to_owned(), kind));
            if let Some(i) = inner.interactions.get_mut(*id) {
                i.2 = true;
            }
            if kind == 4 {
                let (text, buttons) = readable(&body["data"]);
                inner.posted.push(Posted {
                    kind: Kind::Ephemeral,
                    channel: String::new(),
                    id: String::new(),
                    reference: None,
                    only_for: Some(user_id),
                    text,
                    raw: body.clone(),
                    buttons,
                    interaction: Some((*id).to_owned()),
                });
            }
            drop(inner);
            changed();
            StatusCode::NO_CONTENT.into_response()
        }
        (m, ["webhooks", app, token, rest @ ..]) => {
            let token = (*token).to_owned();
            let found = inner
                .interactions
                .iter()
                .find(|(_, (t, _, _))| *t == token)
                .map(|(id, (_, u, acked))| (id.clone(), u.clone(), *acked));
            let Some((interaction, user_id, acked)) = found else {
                return error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
            };
            if *app != APPLICATION_ID || !acked {
                return error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
            }
            let channel = "interaction".to_owned();
            let (text, buttons) = readable(&body);
            let ephemeral = body["flags"].as_u64().is_some_and(|f| f & 64 != 0);
            let (kind, id) = match (m, rest) {
                ("PATCH", ["messages", "@original"]) => {
                    let key = format!("original:{interaction}");
                    let existing = inner.nonces.get(&(key.clone(), String::new())).cloned();
                    let id = existing.unwrap_or_else(|| {
                        let id = next(&mut inner);
                        inner.nonces.insert((key, String::new()), id.clone());
                        id
                    });
                    (Kind::Original, id)
                }
                ("POST", []) => (
                    if ephemeral {
                        Kind::Ephemeral
                    } else {
                        Kind::Followup
                    },
                    next(&mut inner),
                ),
                ("PATCH", ["messages", id]) => (Kind::Edit, (*id).to_owned()),
                _ => return error(StatusCode::NOT_FOUND, 0, "404: Not Found"),
            };
            let m = message(
                &id,
                &channel,
                user(BOT_USER, "squall", true),
                body["content"].as_str().unwrap_or_default(),
                &json!({"embeds": body["embeds"]}),
            );
            if kind != Kind::Edit {
                inner.messages.insert(
                    id.clone(),
                    (channel.clone(), BOT_USER.to_owned(), m.clone()),
                );
            }
            inner.posted.push(Posted {
                kind: kind.clone(),
                channel,
                id,
                reference: None,
                only_for: (kind == Kind::Ephemeral).then_some(user_id),
                text,
                raw: body.clone(),
                buttons,
                interaction: Some(interaction),
            });
            drop(inner);
            changed();
            ok(m)
        }
        _ => error(StatusCode::NOT_FOUND, 0, "404: Not Found"),
    }
}

async fn accept_sockets(listener: TcpListener, state: Arc<Shared>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let down = state
                .inner
                .lock()
                .ok()
                .and_then(|i| i.outage_until)
                .is_some_and(|t| t > Instant::now());
            if down {
                return;
            }
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            serve_socket(ws, state).await;
        });
    }
}

fn ready(state: &Shared, session: &str) -> Value {
    json!({"v": 10, "user": {"id": BOT_USER, "username": "squall", "discriminator": "0",
        "global_name": null, "avatar": null, "bot": true, "verified": true, "mfa_enabled": false,
        "flags": 0}, "guilds": [{"id": GUILD, "unavailable": true}], "session_id": session,
        "resume_gateway_url": state.ws_url, "shard": [0, 1],
        "application": {"id": APPLICATION_ID, "flags": 8_953_856}, "private_channels": []})
}

async fn serve_socket(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    state: Arc<Shared>,
) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<WsMessage>();
    {
        let mut inner = state.inner.lock().expect("state");
        inner.connections += 1;
        // A new connection replaces the old one.
        if let Some(old) = inner.socket.replace(tx.clone()) {
            let _ = old.send(WsMessage::Close(None));
        }
        if let Some(s) = inner.sessions.last_mut() {
            s.live = false;
        }
        let hello = json!({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_MS}});
        let _ = tx.send(WsMessage::text(hello.to_string()));
    }
    state.changed.notify_waiters();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(m @ WsMessage::Close(_)) => { let _ = sink.send(m).await; break }
                None => break,
                Some(m) => if sink.send(m).await.is_err() { break },
            },
            incoming = stream.next() => {
                let Some(Ok(msg)) = incoming else { break };
                let text = match msg {
                    WsMessage::Text(t) => t.to_string(),
                    WsMessage::Close(_) => break,
                    _ => continue,
                };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                gateway_op(&state, &tx, &frame);
            }
        }
    }
    let mut inner = state.inner.lock().expect("state");
    if inner.socket.as_ref().is_some_and(|s| s.same_channel(&tx)) {
        inner.socket = None;
        if let Some(s) = inner.sessions.last_mut() {
            s.live = false;
        }
    }
    drop(inner);
    state.changed.notify_waiters();
}

/// The gateway takes the token bare or, as serenity sends it, after `Bot `.
fn token_ok(token: &Value) -> bool {
    token
        .as_str()
        .is_some_and(|t| t.strip_prefix("Bot ").unwrap_or(t) == TOKEN)
}

fn gateway_op(state: &Shared, tx: &mpsc::UnboundedSender<WsMessage>, frame: &Value) {
    let mut inner = state.inner.lock().expect("state");
    let send = |v: Value| {
        let _ = tx.send(WsMessage::text(v.to_string()));
    };
    match frame["op"].as_u64() {
        Some(1) => {
            inner.heartbeats += 1;
            if !inner.withhold_acks {
                send(json!({"op": 11}));
            }
        }
        Some(2) => {
            if !token_ok(&frame["d"]["token"]) {
                let _ = tx.send(WsMessage::Close(Some(CloseFrame {
                    code: CloseCode::from(4004),
                    reason: "Authentication failed.".into(),
                })));
                return;
            }
            inner.identifies += 1;
            let intents = frame["d"]["intents"].as_u64().unwrap_or_default();
            inner.identify_intents.push(intents);
            inner.next_id += 1;
            let session = format!("session{}", inner.next_id);
            inner.sessions.push(Session {
                id: session.clone(),
                log: Vec::new(),
                seq: 0,
                live: true,
            });
            let ready = ready(state, &session);
            dispatch(&mut inner, "READY", ready);
        }
        Some(6) => {
            let wanted = frame["d"]["session_id"].as_str().unwrap_or_default();
            let seq = frame["d"]["seq"].as_u64().unwrap_or_default();
            let resumable = inner
                .sessions
                .last()
                .is_some_and(|s| !s.id.is_empty() && s.id == wanted);
            if !resumable || !token_ok(&frame["d"]["token"]) {
                send(json!({"op": 9, "d": false}));
                return;
            }
            inner.resumes += 1;
            // Replay what the client missed, and (Discord replays at least
            // once) the two dispatches before.
            let session = inner.sessions.last_mut().expect("session");
            session.live = true;
            let from = seq.saturating_sub(2);
            for (s, f) in &session.log {
                if *s > from && f["t"] != json!("READY") {
                    send(f.clone());
                }
            }
            dispatch(&mut inner, "RESUMED", json!({"_trace": ["fake"]}));
        }
        _ => {}
    }
    drop(inner);
    state.changed.notify_waiters();
}

/// Distinct ids seen (a helper for tests).
pub fn distinct(ids: impl IntoIterator<Item = String>) -> usize {
    ids.into_iter().collect::<HashSet<_>>().len()
}
