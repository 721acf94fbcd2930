//! Which chat platforms squall connects to: `[adapters.<name>]` tables in
//! squall.toml (or `SQUALL_ADAPTERS__<NAME>__<OPTION>` variables), each a
//! variant of [`AdapterConfig`] chosen by its `type` (default: the table's
//! name), and the one place that builds them all.
//!
//! ```toml
//! [adapters.matrix]
//! homeserver = "https://matrix.example.org"
//! user = "@squall:example.org"
//! password = "..."
//! ```
//!
//! The console is not configured here: it is the terminal `squall chat` (or
//! `squall serve --console`) runs in.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use squall_engine::chat::ChatAdapter;

/// One chat platform connection's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum AdapterConfig {
    #[cfg(feature = "discord")]
    Discord(crate::discord::DiscordConfig),
    #[cfg(feature = "matrix")]
    Matrix(crate::matrix::MatrixConfig),
    #[cfg(feature = "slack")]
    Slack(crate::slack::SlackConfig),
}

impl AdapterConfig {
    /// The platform this connects to (one connection per platform).
    pub fn platform(&self) -> &'static str {
        match *self {
            #[cfg(feature = "discord")]
            Self::Discord(_) => "discord",
            #[cfg(feature = "matrix")]
            Self::Matrix(_) => "matrix",
            #[cfg(feature = "slack")]
            Self::Slack(_) => "slack",
        }
    }

    /// Problems found without I/O.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            #[cfg(feature = "discord")]
            Self::Discord(c) => c.validate(),
            #[cfg(feature = "matrix")]
            Self::Matrix(c) => c.validate(),
            #[cfg(feature = "slack")]
            Self::Slack(c) => c.validate(),
        }
    }

    /// Build the adapter (it connects when run).
    pub fn build(&self) -> Result<Arc<dyn ChatAdapter>, String> {
        match self {
            #[cfg(feature = "discord")]
            Self::Discord(c) => crate::discord::DiscordAdapter::new(c.clone())
                .map(|a| Arc::new(a) as Arc<dyn ChatAdapter>)
                .map_err(|e| e.to_string()),
            #[cfg(feature = "matrix")]
            Self::Matrix(c) => crate::matrix::MatrixAdapter::new(c.clone())
                .map(|a| Arc::new(a) as Arc<dyn ChatAdapter>)
                .map_err(|e| e.to_string()),
            #[cfg(feature = "slack")]
            Self::Slack(c) => crate::slack::SlackAdapter::new(c.clone())
                .map(|a| Arc::new(a) as Arc<dyn ChatAdapter>)
                .map_err(|e| e.to_string()),
        }
    }
}

/// Every configured adapter, by its table name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Adapters(pub BTreeMap<String, AdapterConfig>);

impl Adapters {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Problems found without I/O, each naming its table.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut platforms: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, config) in &self.0 {
            if let Err(e) = config.validate() {
                problems.push(format!("adapters.{name}: {e}"));
            }
            if let Some(other) = platforms.insert(config.platform(), name) {
                problems.push(format!(
                    "adapters.{other} and adapters.{name} both connect to {}: one connection per platform",
                    config.platform()
                ));
            }
        }
        problems
    }

    /// Build them all.
    pub fn build_all(&self) -> Result<Vec<Arc<dyn ChatAdapter>>, String> {
        self.0
            .iter()
            .map(|(name, c)| c.build().map_err(|e| format!("adapters.{name}: {e}")))
            .collect()
    }
}

impl Serialize for Adapters {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Adapters {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let tables = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
        let mut out = BTreeMap::new();
        for (name, mut table) in tables {
            if let Some(map) = table.as_object_mut() {
                map.entry("type")
                    .or_insert_with(|| serde_json::Value::String(name.clone()));
            }
            let config = serde_json::from_value::<AdapterConfig>(table)
                .map_err(|e| serde::de::Error::custom(format!("adapters.{name}: {e}")))?;
            out.insert(name, config);
        }
        Ok(Adapters(out))
    }
}

#[cfg(all(test, feature = "matrix"))]
mod tests {
    use super::*;

    #[test]
    fn the_table_name_is_the_default_type() {
        let adapters: Adapters = serde_json::from_value(serde_json::json!({
            "matrix": {"homeserver": "http://hs", "user": "@b:hs", "password": "p"},
            "other": {"type": "matrix", "homeserver": "http://hs2", "user": "@c:hs", "password": "p"},
        }))
        .unwrap();
        assert_eq!(adapters.0.len(), 2);
        assert!(adapters.0.values().all(|c| c.platform() == "matrix"));
        let problems = adapters.validate();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("one connection per platform")),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_types_and_options_name_their_table() {
        let err = serde_json::from_value::<Adapters>(serde_json::json!({"irc": {"server": "x"}}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("adapters.irc") && err.contains("unknown variant"),
            "{err}"
        );
        let err = serde_json::from_value::<Adapters>(serde_json::json!({
            "matrix": {"homeserver": "http://hs", "user": "@b:hs", "password": "p", "colour": "red"}
        }))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("adapters.matrix") && err.contains("colour"),
            "{err}"
        );
    }
}
