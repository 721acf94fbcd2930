//! Slack adapter settings (`[slack]` or `[adapters.slack]` in squall.toml;
//! every key also a `SQUALL_SLACK__<KEY>` variable).

use serde::{Deserialize, Serialize};
use squall_engine::sensitive::Sensitive;

/// How Slack reaches squall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlackMode {
    /// A WebSocket squall opens (`apps.connections.open`): no public URL.
    Socket,
    /// Slack POSTs events, slash commands and button clicks to
    /// `/api/v1/chat/slack/events` on squall's API server.
    Events,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The bot token (`xoxb-…`), for the Web API.
    pub bot_token: Sensitive,
    /// The app-level token (`xapp-…`, scope `connections:write`), for Socket Mode.
    #[serde(default)]
    pub app_token: Option<Sensitive>,
    /// The app's signing secret, to check requests in Events API mode.
    #[serde(default)]
    pub signing_secret: Option<Sensitive>,
    /// `socket` or `events`; default: `socket` when `app_token` is set.
    #[serde(default)]
    pub mode: Option<SlackMode>,
    /// Web API base URL.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Answer commands in a thread under them (`false`: in the channel).
    #[serde(default = "yes")]
    pub threads: bool,
    /// Socket Mode connections kept open (Slack sends each event to one of
    /// them; a second keeps events flowing while the first reconnects).
    #[serde(default = "two")]
    pub connections: u32,
    /// Seconds before reconnecting a lost socket.
    #[serde(default = "one")]
    pub reconnect_seconds: u64,
    /// Seconds a signed request's timestamp may be off (Slack: 300).
    #[serde(default = "five_minutes")]
    pub signature_window_seconds: u64,
}

fn default_api_url() -> String {
    "https://slack.com/api".into()
}
fn yes() -> bool {
    true
}
fn two() -> u32 {
    2
}
fn one() -> u64 {
    1
}
fn five_minutes() -> u64 {
    300
}

impl SlackConfig {
    /// Socket Mode unless set otherwise or without an app token.
    pub fn mode(&self) -> SlackMode {
        self.mode.unwrap_or(if self.app_token.is_some() {
            SlackMode::Socket
        } else {
            SlackMode::Events
        })
    }

    /// Problems found without I/O.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if !(self.api_url.starts_with("http://") || self.api_url.starts_with("https://")) {
            problems.push(format!(
                "slack.api_url: {:?} is not an http(s) URL",
                self.api_url
            ));
        }
        if !self.bot_token.0.starts_with("xoxb-") {
            problems.push("slack.bot_token: a bot token starts with xoxb-".to_owned());
        }
        match self.mode() {
            SlackMode::Socket => match &self.app_token {
                None => problems.push(
                    "slack.app_token: Socket Mode needs the app-level token (xapp-…); \
                     or set mode = \"events\" with signing_secret"
                        .to_owned(),
                ),
                Some(t) if !t.0.starts_with("xapp-") => problems
                    .push("slack.app_token: an app-level token starts with xapp-".to_owned()),
                Some(_) => {}
            },
            SlackMode::Events => {
                if self.signing_secret.as_ref().is_none_or(|s| s.0.is_empty()) {
                    problems.push(
                        "slack.signing_secret: the Events API needs the app's signing secret \
                         (or set app_token for Socket Mode)"
                            .to_owned(),
                    );
                }
            }
        }
        if self.connections == 0 || self.connections > 10 {
            problems.push("slack.connections: 1 to 10".to_owned());
        }
        if self.signature_window_seconds == 0 {
            problems.push("slack.signature_window_seconds: must be at least 1".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
