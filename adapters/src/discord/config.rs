//! Discord adapter settings (`[discord]` or `[adapters.discord]` in
//! squall.toml; every key also a `SQUALL_DISCORD__<KEY>` variable).

use serde::{Deserialize, Deserializer, Serialize};
use squall_engine::sensitive::Sensitive;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The bot token (Developer Portal → Bot → Token).
    pub token: Sensitive,
    /// The application id (General Information → Application ID). Needed
    /// for the `/squall` command and for answering interactions.
    #[serde(deserialize_with = "id")]
    pub application_id: String,
    /// The application's public key (hex), to check requests to the
    /// Interactions endpoint. Without it the endpoint is not mounted.
    #[serde(default)]
    pub public_key: Option<String>,
    /// REST base URL; the gateway's address comes from `GET /gateway`.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Hold a gateway connection (messages, reactions, interactions). Off:
    /// only the Interactions endpoint, for bots without a gateway.
    #[serde(default = "yes")]
    pub gateway: bool,
    /// The slash command registered at start (`/squall <command>`); empty:
    /// register none.
    #[serde(default = "default_command")]
    pub command: String,
    /// Guilds to register the command in as well (instantly available
    /// there; a global command can take a while to appear).
    #[serde(default, deserialize_with = "ids")]
    pub command_guilds: Vec<String>,
    /// Answer a command as a reply to it (`false`: a plain channel message).
    #[serde(default = "yes")]
    pub replies: bool,
    /// Seconds a signed interaction's timestamp may be off.
    #[serde(default = "five_minutes")]
    pub signature_window_seconds: u64,
}

/// A Discord id written as a string or, as a `SQUALL_DISCORD__*` variable
/// or an unquoted TOML value reads it, a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Number(u64),
}

impl From<Id> for String {
    fn from(id: Id) -> Self {
        match id {
            Id::Text(s) => s,
            Id::Number(n) => n.to_string(),
        }
    }
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Id::deserialize(d).map(String::from)
}

fn ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<Id>::deserialize(d).map(|ids| ids.into_iter().map(String::from).collect())
}

fn default_api_url() -> String {
    "https://discord.com".into()
}
fn default_command() -> String {
    "squall".into()
}
fn yes() -> bool {
    true
}
fn five_minutes() -> u64 {
    300
}

impl DiscordConfig {
    /// Problems found without I/O.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if !(self.api_url.starts_with("http://") || self.api_url.starts_with("https://")) {
            problems.push(format!(
                "discord.api_url: {:?} is not an http(s) URL",
                self.api_url
            ));
        }
        let token = self.token.0.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            problems.push(
                "discord.token: the bot token (Developer Portal → Bot → Reset Token), without \"Bot \""
                    .to_owned(),
            );
        }
        if !is_snowflake(&self.application_id) {
            problems.push(format!(
                "discord.application_id: {:?} is not a Discord id (digits, from General Information)",
                self.application_id
            ));
        }
        for guild in &self.command_guilds {
            if !is_snowflake(guild) {
                problems.push(format!(
                    "discord.command_guilds: {guild:?} is not a Discord id"
                ));
            }
        }
        if let Some(key) = &self.public_key
            && (key.len() != 64 || hex::decode(key).is_err())
        {
            problems.push(
                "discord.public_key: 64 hex digits (General Information → Public Key)".to_owned(),
            );
        }
        if !self.gateway && self.public_key.is_none() {
            problems.push(
                "discord.gateway = false needs discord.public_key: without the gateway, \
                 commands arrive only at the Interactions endpoint"
                    .to_owned(),
            );
        }
        let command_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if !self.command.is_empty()
            && (self.command.len() > 32 || !self.command.chars().all(command_char))
        {
            problems.push(format!(
                "discord.command: {:?} is not a slash command name (1-32 of a-z, 0-9, - and _)",
                self.command
            ));
        }
        if self.signature_window_seconds == 0 {
            problems.push("discord.signature_window_seconds: must be at least 1".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// A Discord id: a decimal number.
pub(super) fn is_snowflake(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}
