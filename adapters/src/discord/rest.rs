//! Discord's REST API (`/api/v10`) as squall calls it, with Discord's rate
//! limits honoured: a 429 pauses its route (or, when Discord says
//! `global`, every route) for `retry_after`, and a route whose bucket is
//! spent (`X-RateLimit-Remaining: 0`) waits out `X-RateLimit-Reset-After`
//! before its next call. A short pause is waited out; a long one is
//! answered with `AdapterError::RateLimited`, so the outbox retries that row
//! later and other channels go on.
//!
//! Discord's answers map onto `AdapterError`: a refusal of the request
//! itself (4xx with a JSON error code: unknown channel, missing access, too
//! long) is permanent, with Discord's message; 5xx and no answer transient.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use squall_engine::chat::AdapterError;

use super::PLATFORM;

/// How long one call may take: the delivery loop sends one message at a
/// time, so a call Discord never answers must not hold it.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest rate-limit pause a call waits out itself.
const WAIT_AT_MOST: Duration = Duration::from_secs(2);

/// Discord's JSON error codes squall treats specially.
pub(super) mod code {
    pub const UNKNOWN_MESSAGE: i64 = 10008;
    pub const UNKNOWN_WEBHOOK: i64 = 10015;
    pub const UNKNOWN_INTERACTION: i64 = 10062;
    pub const THREAD_EXISTS: i64 = 160_004;
}

/// A refusal, with Discord's own code and message.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) status: u16,
    pub(super) code: Option<i64>,
    pub(super) error: AdapterError,
}

impl From<Refused> for AdapterError {
    fn from(r: Refused) -> Self {
        r.error
    }
}

#[derive(Default)]
struct Limits {
    global_until: Option<Instant>,
    routes: HashMap<String, Instant>,
}

pub(super) struct Rest {
    http: reqwest::Client,
    base: String,
    auth: String,
    limits: Mutex<Limits>,
}

impl Rest {
    pub(super) fn new(api_url: &str, token: &str) -> Result<Self, AdapterError> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!(
                "DiscordBot (https://example.invalid/squall, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()
            .map_err(|e| super::permanent(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: format!("{}/api/v10", api_url.trim_end_matches('/')),
            auth: format!("Bot {}", token.trim()),
            limits: Mutex::default(),
        })
    }

    /// The pause ahead of `route`, if any.
    fn paused(&self, route: &str) -> Option<Duration> {
        let limits = self.limits.lock().ok()?;
        let now = Instant::now();
        let until = [limits.global_until, limits.routes.get(route).copied()]
            .into_iter()
            .flatten()
            .max()?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    fn pause(&self, route: &str, global: bool, wait: Duration) {
        if let Ok(mut limits) = self.limits.lock() {
            let now = Instant::now();
            let until = now + wait;
            if global {
                limits.global_until = Some(limits.global_until.map_or(until, |u| u.max(until)));
            } else {
                if limits.routes.len() > 1000 {
                    limits.routes.retain(|_, u| *u > now);
                }
                let entry = limits.routes.entry(route.to_owned()).or_insert(until);
                *entry = (*entry).max(until);
            }
        }
    }

    /// One call: `path` below `/api/v10`. Answers the JSON body (`Null`
    /// for 204).
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Refused> {
        let route = bucket(&method, path);
        loop {
            if let Some(wait) = self.paused(&route) {
                if wait > WAIT_AT_MOST {
                    return Err(rate_limited(wait));
                }
                tokio::time::sleep(wait).await;
            }
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header(reqwest::header::AUTHORIZATION, &self.auth);
            if let Some(body) = body {
                request = request.json(body);
            } else if method != Method::GET {
                request = request.header(reqwest::header::CONTENT_LENGTH, "0");
            }
            let answer = request.send().await.map_err(|e| Refused {
                status: 0,
                code: None,
                error: AdapterError::Transient {
                    platform: PLATFORM.into(),
                    reason: format!("{method} {}: {e}", redact(path)),
                },
            })?;
            let status = answer.status().as_u16();
            let headers = answer.headers().clone();
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            if header("x-ratelimit-remaining") == Some("0")
                && let Some(after) = header("x-ratelimit-reset-after").and_then(seconds)
            {
                self.pause(&route, false, after);
            }
            let text = answer.text().await.unwrap_or_default();
            if status == 429 {
                let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let wait = parsed["retry_after"]
                    .as_f64()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .or_else(|| header("retry-after").and_then(seconds))
                    .unwrap_or(Duration::from_secs(1));
                let global = parsed["global"].as_bool() == Some(true)
                    || header("x-ratelimit-global").is_some()
                    || header("x-ratelimit-scope") == Some("global");
                tracing::debug!(route, global, wait_ms = wait.as_millis(), "Discord: 429");
                self.pause(&route, global, wait);
                continue;
            }
            if (200..300).contains(&status) {
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_str(&text).map_err(|e| Refused {
                    status,
                    code: None,
                    // Discord took it: sending again would post twice.
                    error: super::permanent(format!("Discord's answer does not parse: {e}")),
                });
            }
            let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let code = parsed["code"].as_i64();
            let message = parsed["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("HTTP {status}"));
            let detail = match parsed.get("errors") {
                Some(errors) => format!(" {errors}"),
                None => String::new(),
            };
            let reason = match code {
                Some(c) => format!(
                    "Discord refused {method} {}: {message} (code {c}){detail}",
                    redact(path)
                ),
                None => format!("Discord answered {method} {} with {message}", redact(path)),
            };
            let error = match status {
                // A missing permission is the bot's role, not a blip.
                403 if code.is_some() => super::permanent(reason),
                _ => crate::common::http_error(PLATFORM, Some(status), None, reason),
            };
            return Err(Refused {
                status,
                code,
                error,
            });
        }
    }

    pub(super) async fn get(&self, path: &str) -> Result<Value, Refused> {
        self.call(Method::GET, path, None).await
    }
    pub(super) async fn post(&self, path: &str, body: &Value) -> Result<Value, Refused> {
        self.call(Method::POST, path, Some(body)).await
    }
    pub(super) async fn patch(&self, path: &str, body: &Value) -> Result<Value, Refused> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    /// The bot's own user id.
    pub(super) async fn me(&self) -> Result<(String, String), AdapterError> {
        match self.get("/users/@me").await {
            Ok(me) => Ok((
                me["id"].as_str().unwrap_or_default().to_owned(),
                me["username"].as_str().unwrap_or_default().to_owned(),
            )),
            Err(r) if r.status == 401 => Err(super::permanent(
                "Discord refused discord.token (401): use the bot token from Developer Portal → Bot"
                    .into(),
            )),
            Err(r) => Err(r.error),
        }
    }

    /// Create (or update, by name) the slash command, globally and in each
    /// of `guilds`.
    pub(super) async fn register_command(
        &self,
        application_id: &str,
        name: &str,
        guilds: &[String],
    ) -> Result<(), AdapterError> {
        let command = serenity::builder::CreateCommand::new(name)
            .description("Run a squall command, as you would type it after the prefix")
            .add_option(
                serenity::builder::CreateCommandOption::new(
                    serenity::model::application::CommandOptionType::String,
                    "command",
                    "The command, e.g. deploy web to prod",
                )
                .required(true),
            );
        let body = serde_json::to_value(&command)
            .map_err(|e| super::permanent(format!("the command does not serialise: {e}")))?;
        self.post(&format!("/applications/{application_id}/commands"), &body)
            .await?;
        for guild in guilds {
            self.post(
                &format!("/applications/{application_id}/guilds/{guild}/commands"),
                &body,
            )
            .await?;
        }
        Ok(())
    }

    /// Answer an interaction (within Discord's 3 s).
    pub(super) async fn callback(
        &self,
        id: &str,
        token: &str,
        body: &Value,
    ) -> Result<(), Refused> {
        self.post(&format!("/interactions/{id}/{token}/callback"), body)
            .await
            .map(|_| ())
    }

    pub(super) async fn react(
        &self,
        channel: &str,
        message: &str,
        emoji: &str,
    ) -> Result<(), Refused> {
        self.call(
            Method::PUT,
            &format!(
                "/channels/{channel}/messages/{message}/reactions/{}/@me",
                encode(emoji)
            ),
            None,
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn typing(&self, channel: &str) -> Result<(), Refused> {
        self.call(Method::POST, &format!("/channels/{channel}/typing"), None)
            .await
            .map(|_| ())
    }

    /// Start a thread on a message (the thread's id is the message's).
    pub(super) async fn start_thread(
        &self,
        channel: &str,
        message: &str,
        name: &str,
    ) -> Result<(), Refused> {
        let body = json!({"name": name, "auto_archive_duration": 1440});
        match self
            .post(
                &format!("/channels/{channel}/messages/{message}/threads"),
                &body,
            )
            .await
        {
            Err(r) if r.code == Some(code::THREAD_EXISTS) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

fn rate_limited(wait: Duration) -> Refused {
    Refused {
        status: 429,
        code: None,
        error: AdapterError::RateLimited {
            platform: PLATFORM.into(),
            retry_after: Some(wait),
        },
    }
}

fn seconds(s: &str) -> Option<Duration> {
    s.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// The rate-limit bucket of a call: its method and route, keeping the major
/// parameters (channel, guild, webhook) and not the others.
pub(super) fn bucket(method: &Method, path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let mut out = method.as_str().to_owned();
    let mut previous = "";
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        // Major parameters (and interaction ids: a bucket each) stay; other
        // ids, tokens and emoji become `:id`.
        let keep = matches!(
            previous,
            "channels" | "guilds" | "webhooks" | "interactions"
        );
        let minor = segment.len() > 15 || previous == "reactions";
        out.push('/');
        out.push_str(if keep || !minor { segment } else { ":id" });
        previous = segment;
    }
    out
}

/// A path with interaction and webhook tokens hidden (for errors and logs).
pub(super) fn redact(path: &str) -> String {
    let mut out = Vec::new();
    let mut previous = "";
    let mut before = "";
    for segment in path.split('/') {
        let token = (before == "webhooks" && !previous.is_empty())
            || (before == "interactions" && !previous.is_empty());
        out.push(if token && segment.len() > 30 {
            "…"
        } else {
            segment
        });
        before = previous;
        previous = segment;
    }
    out.join("/")
}

/// Percent-encode a path segment (an emoji).
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_major_parameters_only() {
        assert_eq!(
            bucket(&Method::POST, "/channels/111111111111111111/messages"),
            "POST/channels/111111111111111111/messages"
        );
        assert_eq!(
            bucket(
                &Method::PATCH,
                "/channels/111111111111111111/messages/222222222222222222"
            ),
            "PATCH/channels/111111111111111111/messages/:id"
        );
        assert_eq!(
            bucket(
                &Method::PUT,
                "/channels/1/messages/222222222222222222/reactions/%E2%9C%85/@me"
            ),
            "PUT/channels/1/messages/:id/reactions/:id/@me"
        );
    }

    #[test]
    fn tokens_never_reach_error_text() {
        let token = "a".repeat(60);
        let path = format!("/webhooks/123/{token}/messages/@original");
        assert!(!redact(&path).contains(&token), "{}", redact(&path));
        let path = format!("/interactions/456/{token}/callback");
        assert!(!redact(&path).contains(&token), "{}", redact(&path));
        assert_eq!(redact("/channels/1/messages"), "/channels/1/messages");
    }

    #[test]
    fn emoji_are_percent_encoded() {
        assert_eq!(encode("✅"), "%E2%9C%85");
        assert_eq!(encode("name:123"), "name:123");
    }
}
