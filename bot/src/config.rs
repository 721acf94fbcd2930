//! `squall.toml` and `SQUALL_*` environment variables.
//!
//! Every option can be set in the file or the environment (nested keys with a
//! double underscore: `SQUALL_WORKER__CONCURRENCY=8`). Validation happens
//! before anything is opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use squall_engine::runners::OutputLimits;
use squall_engine::worker::WorkerConfig;

pub use squall_engine::sensitive::Sensitive;

/// squall's configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Directory for the embedded SQLite database and the first API key.
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://PATH` or `postgres://USER@HOST/DB`. Default:
    /// `sqlite://<data_dir>/squall.db`.
    pub database_url: Option<Sensitive>,
    /// Directories holding packs (each either a pack or a directory of packs),
    /// loaded beside the built-in `core` and `chatops` packs; a pack here
    /// named like a built-in one replaces it. Default: `packs` when that
    /// directory exists, else none.
    pub packs: Vec<PathBuf>,
    pub worker: WorkerSection,
    pub api: ApiSection,
    pub chat: ChatSection,
    /// Chat platform connections, `[adapters.<name>]` (the `type` defaults
    /// to the name): `[adapters.matrix]`, later `[adapters.slack]`, ...
    pub adapters: squall_adapters::config::Adapters,
    /// The older spelling of `[adapters.matrix]`, still read (and moved
    /// there on load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matrix: Option<squall_adapters::matrix::MatrixConfig>,
    /// `[slack]`, the same as `[adapters.slack]` (moved there on load);
    /// `SQUALL_SLACK__BOT_TOKEN`, ... set it from the environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slack: Option<squall_adapters::slack::SlackConfig>,
    /// `[discord]`, the same as `[adapters.discord]` (moved there on load);
    /// `SQUALL_DISCORD__TOKEN`, ... set it from the environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discord: Option<squall_adapters::discord::DiscordConfig>,
    /// Authentication per webhook name (`[webhooks.github] auth = "github"`);
    /// webhooks not listed need an API key.
    pub webhooks: std::collections::BTreeMap<String, crate::signatures::HookAuth>,
    pub alerts: AlertsSection,
    pub datastore: DatastoreSection,
    pub log: LogSection,
    pub stream: StreamSection,
}

/// The event log behind `/api/v1/stream`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSection {
    /// Hours events are kept (a client can resume from anything younger).
    pub retention_hours: u64,
}

impl Default for StreamSection {
    fn default() -> Self {
        Self {
            retention_hours: 168,
        }
    }
}

/// How squall logs (to stderr; the level is `SQUALL_LOG`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` (default) or `json`: one JSON object per line, for log
    /// collectors (`SQUALL_LOG__FORMAT=json`).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The key-value datastore's encryption key (secrets are sealed with
/// AES-256-GCM).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatastoreSection {
    /// File holding the key (64 hex digits); created, mode 0600, at first
    /// use. Default: `<data_dir>/datastore.key`.
    pub key_file: Option<PathBuf>,
    /// The key itself (64 hex digits), instead of a file
    /// (`SQUALL_DATASTORE__KEY`); `squall key rotate` needs a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Sensitive>,
}

/// Alert receivers (`/api/v1/alerts/{source}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// A repeat of the same alert (source, fingerprint, status) within this
    /// many seconds is dropped (0: keep every repeat).
    pub dedup_seconds: u64,
    /// Authentication per source (`[alerts.receivers.pagerduty] auth = "pagerduty"`);
    /// default: an API key.
    pub receivers: std::collections::BTreeMap<String, crate::signatures::HookAuth>,
    /// Field mapping of the generic receiver.
    pub generic: squall_adapters::alerts::GenericMapping,
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            dedup_seconds: 300,
            receivers: std::collections::BTreeMap::new(),
            generic: squall_adapters::alerts::GenericMapping::default(),
        }
    }
}

/// Chat commands, whatever the platform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChatSection {
    /// A message starting with this is a command (DMs and mentions need none).
    pub prefix: String,
    /// Longer messages are refused politely.
    pub max_message_bytes: usize,
    /// Commands one person may send per minute (0: no limit).
    pub rate_limit_per_minute: usize,
    /// Directory of RBAC YAML files (roles, users, identities).
    pub rbac_dir: PathBuf,
    /// Characters of output shown in a result; more is cut with a hint.
    pub output_tail_chars: usize,
    /// Seconds between progress edits of the ack while an execution runs.
    pub progress_seconds: u64,
    /// Named channels (`ops = "matrix:!room:server"`) for approval prompts
    /// and `chatops.post_message`.
    pub channels: std::collections::BTreeMap<String, String>,
}

impl Default for ChatSection {
    fn default() -> Self {
        Self {
            prefix: "!".into(),
            max_message_bytes: 4000,
            rate_limit_per_minute: 30,
            rbac_dir: PathBuf::from("rbac"),
            output_tail_chars: 1500,
            progress_seconds: 5,
            channels: std::collections::BTreeMap::new(),
        }
    }
}

/// The worker pool of this node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Run executions on this node.
    pub enabled: bool,
    /// Executions run at once.
    pub concurrency: usize,
    /// Seconds a claimed execution stays owned without a heartbeat.
    pub lease_seconds: u64,
    /// Bytes of stdout and of stderr kept per execution.
    pub output_limit_bytes: usize,
    /// Python interpreters kept started ahead of python actions, per pack
    /// interpreter that has run (0: each run starts its own).
    pub warm_python: usize,
}

/// The HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Largest request body accepted, bytes (larger: 413).
    pub body_limit_bytes: usize,
    /// Require an API key on /api/v1 (webhooks included).
    pub auth: bool,
}

/// `./packs` when there is one (a checkout, or a deployment laid out like
/// one); a copied binary elsewhere starts with the built-in packs alone.
fn default_packs() -> Vec<PathBuf> {
    let dir = PathBuf::from("packs");
    if dir.is_dir() { vec![dir] } else { Vec::new() }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9101".into(),
            data_dir: PathBuf::from("data"),
            database_url: None,
            packs: default_packs(),
            worker: WorkerSection::default(),
            api: ApiSection::default(),
            chat: ChatSection::default(),
            adapters: squall_adapters::config::Adapters::default(),
            matrix: None,
            slack: None,
            discord: None,
            webhooks: std::collections::BTreeMap::new(),
            alerts: AlertsSection::default(),
            datastore: DatastoreSection::default(),
            log: LogSection::default(),
            stream: StreamSection::default(),
        }
    }
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 64,
            lease_seconds: 30,
            output_limit_bytes: 1024 * 1024,
            warm_python: 2,
        }
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            auth: true,
        }
    }
}

/// Environment variables that belong to the CLI, not to the configuration.
const CLI_ENV: [&str; 4] = ["server", "api_key", "config", "log"];

impl Config {
    /// Defaults, then the file (if it exists, or if it was named explicitly),
    /// then `SQUALL_*` variables.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(path) if !path.exists() => {
                return Err(format!("config file {} does not exist", path.display()));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("squall.toml")),
        }
        figment = figment.merge(
            Env::prefixed("SQUALL_")
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    // SQUALL_TEST_* and SQUALL_TESTENV belong to the test
                    // harness and its scripts.
                    !CLI_ENV.contains(&key.as_str())
                        && !key.starts_with("test_")
                        && key != "testenv"
                        && !key.starts_with("testenv_")
                })
                .split("__"),
        );
        let mut config: Config = figment.extract().map_err(|e| {
            e.into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        if let Some(matrix) = config.matrix.take() {
            if config.adapters.0.contains_key("matrix") {
                return Err(
                    "[matrix] and [adapters.matrix] are the same connection: keep [adapters.matrix]"
                        .into(),
                );
            }
            config.adapters.0.insert(
                "matrix".into(),
                squall_adapters::config::AdapterConfig::Matrix(matrix),
            );
        }
        if let Some(slack) = config.slack.take() {
            if config.adapters.0.contains_key("slack") {
                return Err(
                    "[slack] and [adapters.slack] are the same connection: keep one of them".into(),
                );
            }
            config.adapters.0.insert(
                "slack".into(),
                squall_adapters::config::AdapterConfig::Slack(slack),
            );
        }
        if let Some(discord) = config.discord.take() {
            if config.adapters.0.contains_key("discord") {
                return Err(
                    "[discord] and [adapters.discord] are the same connection: keep one of them"
                        .into(),
                );
            }
            config.adapters.0.insert(
                "discord".into(),
                squall_adapters::config::AdapterConfig::Discord(discord),
            );
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "listen: {:?} is not an IP:port address",
                self.listen
            ));
        }
        if self.worker.concurrency == 0 {
            problems.push("worker.concurrency: must be at least 1".into());
        }
        if self.stream.retention_hours == 0 {
            problems.push("stream.retention_hours: must be at least 1".into());
        }
        if self.worker.lease_seconds < 3 {
            problems.push("worker.lease_seconds: must be at least 3".into());
        }
        if self.api.body_limit_bytes < 1024 {
            problems.push("api.body_limit_bytes: must be at least 1024".into());
        }
        if self.chat.prefix.trim().is_empty() {
            problems.push("chat.prefix: must not be empty".into());
        }
        problems.extend(self.adapters.validate());
        // A signature scheme without its secret would refuse every request.
        let hooks = self
            .webhooks
            .iter()
            .map(|(name, auth)| (format!("webhooks.{name}"), auth))
            .chain(
                self.alerts
                    .receivers
                    .iter()
                    .map(|(name, auth)| (format!("alerts.receivers.{name}"), auth)),
            );
        for (key, auth) in hooks {
            let secret = auth.secret.as_ref().is_some_and(|s| !s.0.is_empty());
            if auth.auth != crate::signatures::Scheme::ApiKey && !secret {
                problems.push(format!(
                    "{key}.secret: the {:?} scheme needs a secret",
                    auth.auth
                ));
            }
        }
        for name in self.alerts.receivers.keys() {
            if !squall_adapters::alerts::SOURCES.contains(&name.as_str()) {
                problems.push(format!(
                    "alerts.receivers.{name}: no such receiver; receivers: {}",
                    squall_adapters::alerts::SOURCES.join(", ")
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.0.clone(),
            None => format!("sqlite://{}", self.data_dir.join("squall.db").display()),
        }
    }

    /// Where the datastore key comes from.
    pub fn datastore_key(&self) -> squall_engine::datastore::KeySource {
        use squall_engine::datastore::KeySource;
        match (&self.datastore.key, &self.datastore.key_file) {
            (Some(key), _) => KeySource::Inline(key.0.clone()),
            (None, Some(file)) => KeySource::File(file.clone()),
            (None, None) => KeySource::File(self.data_dir.join("datastore.key")),
        }
    }

    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            concurrency: self.worker.concurrency,
            lease: Duration::from_secs(self.worker.lease_seconds),
            limits: OutputLimits {
                max_bytes: self.worker.output_limit_bytes,
            },
            warm_python: self.worker.warm_python,
            ..WorkerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_values_never_print() {
        let url = Sensitive("postgres://u:hunter2@db/squall".into());
        assert_eq!(format!("{url:?} {url}"), "**redacted** **redacted**");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("squall.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nworkers = 3\n").expect("write");
        let err = Config::load(Some(&path)).expect_err("unknown key");
        assert!(err.contains("workers"), "{err}");
    }

    #[test]
    fn signature_schemes_need_their_secret_and_receivers_exist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("squall.toml");
        std::fs::write(
            &path,
            "[webhooks.gh]\nauth = \"github\"\n[alerts.receivers.nagios]\nauth = \"api_key\"\n",
        )
        .expect("write");
        let err = Config::load(Some(&path)).expect_err("no secret");
        assert!(
            err.contains("webhooks.gh.secret: the Github scheme needs a secret"),
            "{err}"
        );
        assert!(
            err.contains("alerts.receivers.nagios: no such receiver"),
            "{err}"
        );
    }

    #[test]
    fn adapters_are_read_from_their_tables_and_the_older_matrix_section() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("squall.toml");
        let matrix = "homeserver = \"http://127.0.0.1:8008\"\nuser = \"@squall:localhost\"\npassword = \"p\"\n";
        for text in [
            format!("[adapters.matrix]\n{matrix}"),
            format!("[matrix]\n{matrix}"),
        ] {
            std::fs::write(&path, text).expect("write");
            let config = Config::load(Some(&path)).expect("valid");
            assert!(config.matrix.is_none());
            assert_eq!(config.adapters.0["matrix"].platform(), "matrix");
        }
        std::fs::write(
            &path,
            "[adapters.matrix]\nhomeserver = \"matrix.org\"\nuser = \"u\"\n",
        )
        .expect("write");
        let err = Config::load(Some(&path)).expect_err("invalid");
        assert!(err.contains("adapters.matrix: matrix.homeserver"), "{err}");
        assert!(err.contains("set password or access_token"), "{err}");
    }

    #[test]
    fn the_slack_section_is_the_slack_adapter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("squall.toml");
        std::fs::write(
            &path,
            "[slack]\nbot_token = \"xoxb-1\"\napp_token = \"xapp-1\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&path)).expect("valid");
        assert_eq!(config.adapters.0["slack"].platform(), "slack");
        std::fs::write(&path, "[slack]\nbot_token = \"xoxb-1\"\n").expect("write");
        let err = Config::load(Some(&path)).expect_err("no way in");
        assert!(err.contains("slack.signing_secret"), "{err}");
        std::fs::write(
            &path,
            "[slack]\nbot_token = \"xoxb-1\"\napp_token = \"xapp-1\"\n[adapters.slack]\nbot_token = \"xoxb-2\"\napp_token = \"xapp-2\"\n",
        )
        .expect("write");
        let err = Config::load(Some(&path)).expect_err("twice");
        assert!(err.contains("same connection"), "{err}");
    }

    #[test]
    fn the_discord_section_is_the_discord_adapter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("squall.toml");
        std::fs::write(
            &path,
            "[discord]\ntoken = \"MTA.x.y\"\napplication_id = \"1234567890\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&path)).expect("valid");
        assert_eq!(config.adapters.0["discord"].platform(), "discord");
        // An id unquoted (as a SQUALL_DISCORD__APPLICATION_ID variable reads).
        std::fs::write(
            &path,
            "[discord]\ntoken = \"MTA.x.y\"\napplication_id = 1190000000000000001\n",
        )
        .expect("write");
        Config::load(Some(&path)).expect("a numeric id");
        std::fs::write(
            &path,
            "[discord]\ntoken = \"MTA.x.y\"\napplication_id = \"squall\"\ngateway = false\n",
        )
        .expect("write");
        let err = Config::load(Some(&path)).expect_err("invalid");
        assert!(err.contains("discord.application_id"), "{err}");
        assert!(err.contains("discord.public_key"), "{err}");
    }

    #[test]
    fn bad_listen_address_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("squall.toml");
        std::fs::write(&path, "listen = \"localhost\"\n").expect("write");
        let err = Config::load(Some(&path)).expect_err("bad address");
        assert!(err.contains("listen"), "{err}");
    }
}
