//! Matrix adapter settings (`[matrix]` in squall.toml).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use squall_engine::sensitive::Sensitive;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// Homeserver base URL, e.g. `https://matrix.example.org`.
    pub homeserver: String,
    /// The bot's user: `@squall:example.org` or its localpart.
    pub user: String,
    /// Password login (one of `password` or `access_token`).
    #[serde(default)]
    pub password: Option<Sensitive>,
    /// Access-token login; needs `device_id` too.
    #[serde(default)]
    pub access_token: Option<Sensitive>,
    #[serde(default)]
    pub device_id: Option<String>,
    /// Where the device, session and end-to-end crypto keys are kept (SQLite).
    #[serde(default = "default_store_dir")]
    pub store_dir: PathBuf,
    /// Passphrase encrypting the store.
    #[serde(default)]
    pub store_passphrase: Option<Sensitive>,
    /// Rooms the bot joins when invited (ids); empty: accept every invite.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Answer every command in a thread under it (otherwise only commands
    /// sent in a thread are answered there).
    #[serde(default)]
    pub threads: bool,
}

fn default_store_dir() -> PathBuf {
    PathBuf::from("data/matrix")
}

impl MatrixConfig {
    /// Problems found without I/O.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if !(self.homeserver.starts_with("http://") || self.homeserver.starts_with("https://")) {
            problems.push(format!(
                "matrix.homeserver: {:?} is not an http(s) URL",
                self.homeserver
            ));
        }
        if self.user.trim().is_empty() {
            problems.push("matrix.user: required".to_owned());
        }
        match (&self.password, &self.access_token, &self.device_id) {
            (None, None, _) => problems.push("matrix: set password or access_token".to_owned()),
            (_, Some(_), None) => {
                problems.push("matrix.device_id: required with access_token".to_owned())
            }
            _ => {}
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
