//! A local server speaking Slack's wire protocol, for tests: the Web API
//! methods squall calls (`auth.test`, `apps.connections.open`,
//! `chat.postMessage`, `chat.update`, `chat.postEphemeral`, `reactions.add`,
//! `users.info`, and slash-command `response_url`s), the Socket Mode
//! WebSocket (hello, envelopes that must be acked, redelivery of unacked
//! envelopes, `disconnect`), and, in Events API mode, signed HTTP requests
//! to squall. Payloads follow Slack's documentation. It enforces a posting
//! rate per channel with 429 + `Retry-After`, and keeps every message and
//! update so tests can assert on what a person would see.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub const BOT_TOKEN: &str = "xoxb-squall-test-token";
pub const APP_TOKEN: &str = "xapp-1-squall-test-token";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const BOT_USER: &str = "U0SQUALLBOT";
pub const BOT_ID: &str = "B0SQUALLBOT";
pub const TEAM: &str = "T0SQUALL";

/// How long Slack waits for an envelope's ack before sending it again.
const ACK_TIMEOUT: Duration = Duration::from_secs(3);

/// One thing squall did to a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Post,
    Update,
    /// Shown only to `Posted::only_for`.
    Ephemeral,
    /// An answer through a slash command's response_url.
    Response,
}

#[derive(Debug, Clone)]
pub struct Posted {
    pub kind: Kind,
    pub channel: String,
    /// The message's ts (for an update: the message updated).
    pub ts: String,
    pub thread_ts: Option<String>,
    pub only_for: Option<String>,
    /// What a person reads: the blocks' text (or the plain text without
    /// blocks), entities unescaped.
    pub text: String,
    /// The request body as squall sent it (escaped, as Slack receives it).
    pub raw: Value,
    /// The action ids of its buttons.
    pub buttons: Vec<String>,
}

/// How squall hears from the fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Socket,
    /// Signed requests to this URL.
    Events,
}

struct Envelope {
    id: String,
    kind: &'static str,
    payload: Value,
    attempt: u32,
}

struct Socket {
    id: u64,
    tx: mpsc::UnboundedSender<WsMessage>,
}

#[derive(Default)]
struct Inner {
    next_ts: u64,
    next_id: u64,
    posted: Vec<Posted>,
    /// Not yet given to a socket.
    pending: VecDeque<Envelope>,
    /// Given to a socket, waiting for the ack: (envelope, socket id, when).
    unacked: HashMap<String, (Envelope, u64, Instant)>,
    acked: u64,
    /// Acks beyond an envelope's deliveries (a doubled ack). An envelope
    /// redelivered after a late ack is rightly acked once per delivery.
    acked_twice: u64,
    /// Per envelope: (deliveries, acks).
    delivery_acks: HashMap<String, (u64, u64)>,
    redelivered: u64,
    sockets: Vec<Socket>,
    connections_opened: u64,
    /// Posts per channel in the last second.
    rate: HashMap<String, VecDeque<Instant>>,
    rate_limit: Option<usize>,
    rate_limited: u64,
    outage_until: Option<Instant>,
    events_url: Option<String>,
    http_refused: u64,
    users: HashMap<String, String>,
    response_urls: HashMap<String, String>,
    /// Channels the bot is not a member of (`not_in_channel`).
    not_in: std::collections::HashSet<String>,
}

pub struct FakeSlack {
    state: Arc<Shared>,
    pub api_url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
    ws_url: String,
    base: String,
    http: reqwest::Client,
    delivery: Delivery,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Text as Slack stores what a person typed: `&`, `<`, `>` escaped.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// What a person reads of a message body, and its buttons.
fn readable(body: &Value) -> (String, Vec<String>) {
    let mut parts = Vec::new();
    let mut buttons = Vec::new();
    let mut blocks: Vec<&Value> = body["blocks"].as_array().into_iter().flatten().collect();
    for a in body["attachments"].as_array().into_iter().flatten() {
        blocks.extend(a["blocks"].as_array().into_iter().flatten());
    }
    for b in &blocks {
        if let Some(t) = b["text"]["text"].as_str() {
            parts.push(t.to_owned());
        }
        for f in b["fields"].as_array().into_iter().flatten() {
            if let Some(t) = f["text"].as_str() {
                parts.push(t.to_owned());
            }
        }
        for e in b["elements"].as_array().into_iter().flatten() {
            if let Some(id) = e["action_id"].as_str() {
                buttons.push(id.to_owned());
                if let Some(label) = e["text"]["text"].as_str() {
                    parts.push(format!("[{label}]"));
                }
            }
        }
    }
    if blocks.is_empty()
        && let Some(t) = body["text"].as_str()
    {
        parts.push(t.to_owned());
    }
    (unescape(&parts.join("\n")), buttons)
}

fn ok(extra: Value) -> Response {
    let mut body = json!({"ok": true});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    axum::Json(body).into_response()
}

fn slack_error(code: &str) -> Response {
    axum::Json(json!({"ok": false, "error": code})).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// A request body: JSON, or a form (with `payload=` holding JSON).
fn body_of(headers: &HeaderMap, bytes: &[u8]) -> Value {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        let map: HashMap<String, String> = serde_urlencoded::from_bytes(bytes).unwrap_or_default();
        return serde_json::to_value(map).unwrap_or(Value::Null);
    }
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

impl FakeSlack {
    /// Start the fake on loopback; squall reaches it at `api_url`.
    pub async fn start(delivery: Delivery) -> Result<FakeSlack> {
        let api = TcpListener::bind("127.0.0.1:0").await?;
        let ws = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", api.local_addr()?);
        let state = Arc::new(Shared {
            inner: Mutex::new(Inner {
                next_ts: 1,
                ..Inner::default()
            }),
            changed: Notify::new(),
            ws_url: format!("ws://{}", ws.local_addr()?),
            base: base.clone(),
            http: reqwest::Client::new(),
            delivery,
        });
        let app = axum::Router::new()
            .route("/api/{method}", axum::routing::any(api_method))
            .route("/response/{id}", axum::routing::post(response_url))
            .with_state(state.clone());
        let mut tasks = vec![tokio::spawn(async move {
            let _ = axum::serve(api, app).await;
        })];
        let s = state.clone();
        tasks.push(tokio::spawn(accept_sockets(ws, s)));
        let s = state.clone();
        tasks.push(tokio::spawn(redeliver(s)));
        Ok(FakeSlack {
            state,
            api_url: format!("{base}/api"),
            tasks,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.inner.lock().expect("fake slack state")
    }

    /// Where squall's Events API route is (Events API mode).
    pub fn set_events_url(&self, url: &str) {
        self.lock().events_url = Some(url.to_owned());
    }

    /// Posts per channel per second before 429s (None: no limit).
    pub fn set_rate_limit(&self, per_second: Option<usize>) {
        self.lock().rate_limit = per_second;
    }

    pub fn add_user(&self, id: &str, display_name: &str) {
        self.lock()
            .users
            .insert(id.to_owned(), display_name.to_owned());
    }

    fn next_ts(inner: &mut Inner) -> String {
        inner.next_ts += 1;
        format!("{}.{:06}", now_secs(), inner.next_ts)
    }

    /// Everything squall did, in order.
    pub fn posted(&self) -> Vec<Posted> {
        self.lock().posted.clone()
    }

    /// (acked, unacked or not yet delivered, acked twice, redelivered).
    pub fn envelopes(&self) -> (u64, usize, u64, u64) {
        let inner = self.lock();
        (
            inner.acked,
            inner.unacked.len() + inner.pending.len(),
            inner.acked_twice,
            inner.redelivered,
        )
    }

    pub fn rate_limited(&self) -> u64 {
        self.lock().rate_limited
    }

    pub fn connections_opened(&self) -> u64 {
        self.lock().connections_opened
    }

    pub fn open_sockets(&self) -> usize {
        self.lock().sockets.len()
    }

    /// Requests to squall's Events API route it refused (non-2xx).
    pub fn http_refused(&self) -> u64 {
        self.lock().http_refused
    }

    /// Wait for the next change (a post, an ack, a connection).
    pub async fn changed(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.state.changed.notified()).await;
    }

    /// A person types `text` in `channel` (in `thread`); returns the ts.
    pub async fn say(
        &self,
        user: &str,
        channel: &str,
        text: &str,
        thread: Option<&str>,
    ) -> Result<String> {
        let (ts, event_id) = {
            let mut inner = self.lock();
            let ts = Self::next_ts(&mut inner);
            inner.next_id += 1;
            (ts, format!("Ev{:08}", inner.next_id))
        };
        let mut event = json!({
            "type": "message", "channel": channel, "user": user, "text": slack_escape(text),
            "ts": ts, "event_ts": ts,
            "channel_type": if channel.starts_with('D') { "im" } else { "channel" },
            "client_msg_id": format!("{event_id}-client"),
        });
        if let Some(t) = thread {
            event["thread_ts"] = json!(t);
        }
        self.push_event(event, &event_id).await?;
        Ok(ts)
    }

    /// Send an `event_callback` carrying `event`.
    pub async fn push_event(&self, event: Value, event_id: &str) -> Result<()> {
        let payload = json!({
            "token": "XXYYZZ", "team_id": TEAM, "api_app_id": "A0SQUALL", "event": event,
            "type": "event_callback", "event_id": event_id, "event_time": now_secs(),
            "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": true}],
        });
        self.deliver("events_api", payload).await
    }

    /// A reaction added (or removed) by `user` on message `ts`.
    pub async fn react(
        &self,
        user: &str,
        channel: &str,
        ts: &str,
        name: &str,
        added: bool,
    ) -> Result<()> {
        let (event_ts, id) = {
            let mut inner = self.lock();
            inner.next_id += 1;
            (Self::next_ts(&mut inner), format!("Ev{:08}", inner.next_id))
        };
        let kind = if added {
            "reaction_added"
        } else {
            "reaction_removed"
        };
        self.push_event(
            json!({"type": kind, "user": user, "reaction": name, "item_user": BOT_USER,
                   "item": {"type": "message", "channel": channel, "ts": ts},
                   "event_ts": event_ts}),
            &id,
        )
        .await
    }

    /// `user` clicks button `action_id` under message `ts`.
    pub async fn click(&self, user: &str, channel: &str, ts: &str, action_id: &str) -> Result<()> {
        let (thread, trigger) = {
            let mut inner = self.lock();
            inner.next_id += 1;
            let thread = inner
                .posted
                .iter()
                .find(|p| p.ts == ts && p.kind == Kind::Post)
                .and_then(|p| p.thread_ts.clone());
            (thread, format!("{}.{}", inner.next_id, now_secs()))
        };
        let mut message = json!({"type": "message", "ts": ts, "user": BOT_USER, "bot_id": BOT_ID});
        if let Some(t) = &thread {
            message["thread_ts"] = json!(t);
        }
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": TEAM},
            "api_app_id": "A0SQUALL", "token": "XXYYZZ",
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false, "thread_ts": thread},
            "trigger_id": trigger, "team": {"id": TEAM, "domain": "squall"},
            "channel": {"id": channel, "name": "ops"},
            "message": message,
            "response_url": format!("{}/response/{trigger}", self.state.base),
            "actions": [{"action_id": action_id, "block_id": "votes", "type": "button",
                         "value": action_id, "text": {"type": "plain_text", "text": "x"},
                         "action_ts": format!("{}.{:06}", now_secs(), trigger.len())}],
        });
        self.deliver("interactive", payload).await
    }

    /// A slash command (`/squall <text>`).
    pub async fn slash(&self, user: &str, channel: &str, text: &str) -> Result<()> {
        let trigger = {
            let mut inner = self.lock();
            inner.next_id += 1;
            let trigger = format!("{}.{}.cmd", inner.next_id, now_secs());
            inner
                .response_urls
                .insert(trigger.clone(), channel.to_owned());
            trigger
        };
        let payload = json!({
            "token": "XXYYZZ", "team_id": TEAM, "team_domain": "squall", "channel_id": channel,
            "channel_name": "ops", "user_id": user, "user_name": user.to_lowercase(),
            "command": "/squall", "text": slack_escape(text), "api_app_id": "A0SQUALL",
            "is_enterprise_install": "false",
            "response_url": format!("{}/response/{trigger}", self.state.base),
            "trigger_id": trigger,
        });
        self.deliver("slash_commands", payload).await
    }

    async fn deliver(&self, kind: &'static str, payload: Value) -> Result<()> {
        deliver(&self.state, kind, payload).await
    }

    /// Posting to `channel` answers `not_in_channel` (the bot is not in it).
    pub fn set_not_in(&self, channel: &str) {
        self.lock().not_in.insert(channel.to_owned());
    }

    /// Close every socket abruptly (no close frame): a lost connection.
    pub fn drop_sockets(&self) {
        let mut inner = self.lock();
        let sockets: Vec<Socket> = inner.sockets.drain(..).collect();
        for s in sockets {
            let _ = s.tx.send(WsMessage::Close(None));
            requeue(&mut inner, s.id);
        }
        self.state.changed.notify_waiters();
    }

    /// Send Slack's `disconnect` envelope on every socket (as Slack does
    /// before it rotates a connection).
    pub fn disconnect(&self) {
        let inner = self.lock();
        for s in &inner.sockets {
            let _ = s.tx.send(WsMessage::text(
                json!({"type": "disconnect", "reason": "refresh_requested",
                       "debug_info": {"host": "applink-fake"}})
                .to_string(),
            ));
        }
    }

    /// Slack is down for `d`: every API call answers 503, sockets drop,
    /// no new socket opens.
    pub fn outage(&self, d: Duration) {
        self.lock().outage_until = Some(Instant::now() + d);
        self.drop_sockets();
    }
}

async fn deliver(state: &Shared, kind: &'static str, payload: Value) -> Result<()> {
    match state.delivery {
        Delivery::Socket => {
            let mut inner = state.inner.lock().expect("state");
            inner.next_id += 1;
            let id = format!("{:08x}-env-{}", inner.next_id, now_secs());
            inner.pending.push_back(Envelope {
                id,
                kind,
                payload,
                attempt: 0,
            });
            dispatch(&mut inner);
            Ok(())
        }
        Delivery::Events => post_signed(state, kind, &payload).await,
    }
}

fn requeue(inner: &mut Inner, socket: u64) {
    let ids: Vec<String> = inner
        .unacked
        .iter()
        .filter(|(_, (_, s, _))| *s == socket)
        .map(|(id, _)| id.clone())
        .collect();
    for id in ids {
        if let Some((env, _, _)) = inner.unacked.remove(&id) {
            inner.pending.push_front(env);
        }
    }
}

/// Give pending envelopes to open sockets (round robin).
fn dispatch(inner: &mut Inner) {
    if inner.sockets.is_empty() {
        return;
    }
    let mut n = 0usize;
    while let Some(mut env) = inner.pending.pop_front() {
        let socket = &inner.sockets[n % inner.sockets.len()];
        n += 1;
        if env.attempt > 0 {
            inner.redelivered += 1;
        }
        let frame = json!({
            "envelope_id": env.id, "type": env.kind, "payload": env.payload,
            "accepts_response_payload": env.kind != "events_api",
            "retry_attempt": env.attempt, "retry_reason": if env.attempt > 0 { "timeout" } else { "" },
        });
        env.attempt += 1;
        if socket.tx.send(WsMessage::text(frame.to_string())).is_ok() {
            let id = socket.id;
            inner.delivery_acks.entry(env.id.clone()).or_default().0 += 1;
            inner
                .unacked
                .insert(env.id.clone(), (env, id, Instant::now()));
        } else {
            inner.pending.push_front(env);
            return;
        }
    }
}

/// Unacked envelopes go out again after Slack's ack timeout.
async fn redeliver(state: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut inner = state.inner.lock().expect("state");
        let late: Vec<String> = inner
            .unacked
            .iter()
            .filter(|(_, (_, _, at))| at.elapsed() > ACK_TIMEOUT)
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            if let Some((env, _, _)) = inner.unacked.remove(&id) {
                inner.pending.push_back(env);
            }
        }
        dispatch(&mut inner);
    }
}

async fn accept_sockets(listener: TcpListener, state: Arc<Shared>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            serve_socket(ws, state).await;
        });
    }
}

async fn serve_socket(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    state: Arc<Shared>,
) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<WsMessage>();
    let id = {
        let mut inner = state.inner.lock().expect("state");
        inner.next_id += 1;
        let id = inner.next_id;
        let hello = json!({"type": "hello", "num_connections": inner.sockets.len() + 1,
            "debug_info": {"host": "applink-fake", "approximate_connection_time": 18060},
            "connection_info": {"app_id": "A0SQUALL"}});
        let _ = tx.send(WsMessage::text(hello.to_string()));
        inner.sockets.push(Socket { id, tx });
        inner.connections_opened += 1;
        dispatch(&mut inner);
        id
    };
    state.changed.notify_waiters();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(WsMessage::Close(_)) | None => break,
                Some(m) => if sink.send(m).await.is_err() { break },
            },
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Text(t))) => {
                    let Ok(ack) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                    if let Some(env) = ack["envelope_id"].as_str() {
                        let mut inner = state.inner.lock().expect("state");
                        if inner.unacked.remove(env).is_some() {
                            inner.acked += 1;
                        }
                        let (delivered, acks) =
                            inner.delivery_acks.entry(env.to_owned()).or_default();
                        *acks += 1;
                        if *acks > *delivered {
                            inner.acked_twice += 1;
                        }
                        drop(inner);
                        state.changed.notify_waiters();
                    }
                }
                Some(Ok(WsMessage::Ping(p))) => { let _ = sink.send(WsMessage::Pong(p)).await; }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // An abrupt end: no close frame, the TCP connection just goes.
    drop(sink);
    let mut inner = state.inner.lock().expect("state");
    inner.sockets.retain(|s| s.id != id);
    requeue(&mut inner, id);
    drop(inner);
    state.changed.notify_waiters();
}

/// Events API mode: a signed request to squall, retried (as Slack does)
/// up to three times when not answered 2xx.
async fn post_signed(state: &Shared, kind: &str, payload: &Value) -> Result<()> {
    let url = state
        .inner
        .lock()
        .expect("state")
        .events_url
        .clone()
        .context("the fake has no events URL (set_events_url)")?;
    let (body, content_type) = match kind {
        "events_api" => (payload.to_string(), "application/json"),
        "interactive" => (
            serde_urlencoded::to_string([("payload", payload.to_string())])?,
            "application/x-www-form-urlencoded",
        ),
        _ => {
            let fields: Vec<(String, String)> = payload
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            (
                serde_urlencoded::to_string(fields)?,
                "application/x-www-form-urlencoded",
            )
        }
    };
    for attempt in 0..4u32 {
        let ts = now_secs().to_string();
        let answer = state
            .http
            .post(&url)
            .header("content-type", content_type)
            .header("x-slack-request-timestamp", &ts)
            .header("x-slack-signature", sign(SIGNING_SECRET, &ts, &body))
            .header("x-slack-retry-num", attempt.to_string())
            .body(body.clone())
            .timeout(Duration::from_secs(3))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {
                state.inner.lock().expect("state").acked += 1;
                state.changed.notify_waiters();
                return Ok(());
            }
            _ => {
                state.inner.lock().expect("state").http_refused += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    anyhow::bail!("squall did not accept a {kind} request after 4 attempts")
}

/// `v0=` + HMAC-SHA256 of `v0:{ts}:{body}`, as Slack signs requests.
pub fn sign(secret: &str, ts: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

async fn api_method(
    State(state): State<Arc<Shared>>,
    axum::extract::Path(method): axum::extract::Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    {
        let inner = state.inner.lock().expect("state");
        if inner.outage_until.is_some_and(|u| u > Instant::now()) {
            return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
        }
    }
    let token = bearer(&headers);
    let body = body_of(&headers, &bytes);
    if method == "apps.connections.open" {
        if token.as_deref() != Some(APP_TOKEN) {
            return slack_error("invalid_auth");
        }
        let ticket = {
            let mut inner = state.inner.lock().expect("state");
            inner.next_id += 1;
            inner.next_id
        };
        return ok(
            json!({"url": format!("{}/link/?ticket={ticket}&app_id=A0SQUALL", state.ws_url)}),
        );
    }
    if token.as_deref() != Some(BOT_TOKEN) {
        return slack_error(if token.is_none() {
            "not_authed"
        } else {
            "invalid_auth"
        });
    }
    match method.as_str() {
        "auth.test" => ok(json!({
            "url": "https://squall.slack.com/", "team": "squall", "user": "squall",
            "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": false,
        })),
        "users.info" => {
            let user = query
                .get("user")
                .cloned()
                .or_else(|| body["user"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let name = state.inner.lock().expect("state").users.get(&user).cloned();
            match name {
                Some(name) => ok(
                    json!({"user": {"id": user, "team_id": TEAM, "name": name.to_lowercase(),
                    "deleted": false, "real_name": name,
                    "profile": {"display_name": name, "real_name": name}}}),
                ),
                None => slack_error("user_not_found"),
            }
        }
        "chat.postMessage" | "chat.postEphemeral" | "chat.update" => {
            post_method(&state, &method, &body)
        }
        "reactions.add" => ok(json!({})),
        _ => slack_error("unknown_method"),
    }
}

fn post_method(state: &Arc<Shared>, method: &str, body: &Value) -> Response {
    let Some(channel) = body["channel"].as_str() else {
        return slack_error("channel_not_found");
    };
    if method == "chat.postMessage" && state.inner.lock().expect("state").not_in.contains(channel) {
        return slack_error("not_in_channel");
    }
    let has_content = body["text"].is_string()
        || body["blocks"].as_array().is_some_and(|b| !b.is_empty())
        || body["attachments"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
    if !has_content && method != "chat.update" {
        return slack_error("no_text");
    }
    let mut inner = state.inner.lock().expect("state");
    if method != "chat.update"
        && let Some(limit) = inner.rate_limit
    {
        let window = inner.rate.entry(channel.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(1))
        {
            window.pop_front();
        }
        if window.len() >= limit {
            inner.rate_limited += 1;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                axum::Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
        }
        window.push_back(Instant::now());
    }
    let (text, buttons) = readable(body);
    let thread_ts = body["thread_ts"].as_str().map(str::to_owned);
    let (kind, ts) = match method {
        "chat.update" => {
            let Some(ts) = body["ts"].as_str() else {
                return slack_error("message_not_found");
            };
            if !inner
                .posted
                .iter()
                .any(|p| p.ts == ts && p.kind == Kind::Post)
            {
                return slack_error("message_not_found");
            }
            (Kind::Update, ts.to_owned())
        }
        "chat.postEphemeral" => (Kind::Ephemeral, FakeSlack::next_ts(&mut inner)),
        _ => (Kind::Post, FakeSlack::next_ts(&mut inner)),
    };
    let thread_ts = match kind {
        Kind::Update => inner
            .posted
            .iter()
            .find(|p| p.ts == ts && p.kind == Kind::Post)
            .and_then(|p| p.thread_ts.clone()),
        _ => thread_ts,
    };
    inner.posted.push(Posted {
        kind: kind.clone(),
        channel: channel.to_owned(),
        ts: ts.clone(),
        thread_ts,
        only_for: body["user"]
            .as_str()
            .filter(|_| kind == Kind::Ephemeral)
            .map(str::to_owned),
        text: text.clone(),
        raw: body.clone(),
        buttons,
    });
    drop(inner);
    state.changed.notify_waiters();
    if kind == Kind::Post {
        // Slack sends the bot its own messages too (message.channels).
        let mut event = json!({"type": "message", "channel": channel, "user": BOT_USER,
            "bot_id": BOT_ID, "bot_profile": {"id": BOT_ID, "name": "squall"},
            "text": body["text"].as_str().unwrap_or_default(), "ts": ts, "event_ts": ts});
        if let Some(t) = body["thread_ts"].as_str() {
            event["thread_ts"] = json!(t);
        }
        let payload = json!({"token": "XXYYZZ", "team_id": TEAM, "api_app_id": "A0SQUALL",
            "event": event, "type": "event_callback", "event_id": format!("Ev-echo-{ts}"),
            "event_time": now_secs()});
        let state = state.clone();
        tokio::spawn(async move {
            let _ = deliver(&state, "events_api", payload).await;
        });
    }
    match kind {
        Kind::Ephemeral => ok(json!({"message_ts": ts})),
        Kind::Update => ok(json!({"channel": channel, "ts": ts, "text": body["text"],
            "message": {"text": body["text"], "user": BOT_USER, "bot_id": BOT_ID}})),
        _ => ok(json!({"channel": channel, "ts": ts, "message": {
            "type": "message", "user": BOT_USER, "bot_id": BOT_ID, "ts": ts,
            "text": body["text"].as_str().unwrap_or_default(),
        }})),
    }
}

async fn response_url(
    State(state): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    let body = body_of(&headers, &bytes);
    let mut inner = state.inner.lock().expect("state");
    let Some(channel) = inner.response_urls.get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, "no such response_url").into_response();
    };
    let (text, buttons) = readable(&body);
    let ts = FakeSlack::next_ts(&mut inner);
    inner.posted.push(Posted {
        kind: Kind::Response,
        channel,
        ts,
        thread_ts: None,
        only_for: None,
        text,
        raw: body,
        buttons,
    });
    drop(inner);
    state.changed.notify_waiters();
    StatusCode::OK.into_response()
}
