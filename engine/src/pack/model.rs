//! The loaded form of a pack's content: packs, actions, rules, aliases, workflows.
//!
//! These types are what the pack loader produces after validation; everything
//! downstream (rules engine, runners, chat) reads them and never the raw YAML.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `pack.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackMeta {
    /// The pack's reference name (`ref`, or `name` when `ref` is absent).
    pub name: String,
    pub description: String,
    pub version: String,
    pub author: Option<String>,
    pub email: Option<String>,
    /// Directory the pack was loaded from.
    pub path: PathBuf,
}

/// One action parameter: a JSON schema fragment plus StackStorm's extra keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParamSpec {
    /// The JSON-schema for the value, with StackStorm's own keys (position, secret,
    /// immutable, required) removed.
    pub schema: Value,
    pub required: bool,
    pub default: Option<Value>,
    pub secret: bool,
    pub immutable: bool,
    /// Positional argument index for script runners.
    pub position: Option<u32>,
    pub description: Option<String>,
}

/// `actions/<name>.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Action {
    pub pack: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub runner_type: String,
    /// Path of the entry point resolved against the pack's `actions/` directory.
    pub entry_point: Option<PathBuf>,
    pub parameters: BTreeMap<String, ParamSpec>,
    /// squall extension: safe to run again after a crash left it running.
    pub idempotent: bool,
    /// StackStorm's `notify:`: chat messages when a run finishes.
    #[serde(default, skip_serializing_if = "Notify::is_empty")]
    pub notify: Notify,
    /// File the action was loaded from.
    pub file: PathBuf,
}

/// An action's `notify:` block: what to post when a run succeeds, fails, or either.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Notify {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_complete: Option<NotifySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<NotifySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<NotifySpec>,
}

impl Notify {
    pub fn is_empty(&self) -> bool {
        self.on_complete.is_none() && self.on_success.is_none() && self.on_failure.is_none()
    }

    /// The notifications for a run that `succeeded` or not: `on-complete` and the
    /// matching one of `on-success`/`on-failure`.
    pub fn for_outcome(&self, succeeded: bool) -> impl Iterator<Item = &NotifySpec> {
        let specific = if succeeded {
            &self.on_success
        } else {
            &self.on_failure
        };
        self.on_complete.iter().chain(specific.iter())
    }
}

/// One notification: a message template (default: the action, its status and
/// execution id), extra `data` for rules on `core.st2.generic.notifytrigger`,
/// StackStorm's `routes` and squall's `channels` to post to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NotifySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

impl Action {
    /// `pack.name`.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.pack, self.name)
    }
}

/// Rule type: standard rules fire on match; backstop rules fire only when no
/// standard rule matched the same trigger instance.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    Standard,
    Backstop,
}

/// `rules/<name>.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rule {
    pub pack: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub kind: RuleKind,
    /// Trigger type reference, e.g. `core.st2.webhook`.
    pub trigger_type: String,
    pub trigger_parameters: serde_json::Map<String, Value>,
    /// Raw criteria map (`trigger.body.x: {type, pattern}`), compiled by the rules engine.
    pub criteria: serde_json::Map<String, Value>,
    /// Action reference `pack.name`.
    pub action_ref: String,
    /// Action parameters; strings may be handlebars templates.
    pub action_parameters: serde_json::Map<String, Value>,
    pub file: PathBuf,
}

impl Rule {
    pub fn reference(&self) -> String {
        format!("{}.{}", self.pack, self.name)
    }
}

/// One alias format, with optional representations (StackStorm `formats`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AliasFormat {
    pub display: Option<String>,
    pub representation: Vec<String>,
}

/// `aliases/<name>.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alias {
    pub pack: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub action_ref: String,
    pub formats: Vec<AliasFormat>,
    pub ack: Option<Value>,
    pub result: Option<Value>,
    pub immutable_parameters: serde_json::Map<String, Value>,
    pub match_multiple: bool,
    pub file: PathBuf,
}

impl Alias {
    pub fn reference(&self) -> String {
        format!("{}.{}", self.pack, self.name)
    }
}

/// A workflow definition file (`actions/workflows/*.yaml`), parsed but not yet
/// validated beyond YAML structure; the workflow engine owns its semantics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkflowFile {
    pub pack: String,
    pub file: PathBuf,
    pub definition: Value,
}

/// Everything loaded from one pack directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pack {
    pub meta: PackMeta,
    /// `configs/<pack>.yaml` over the defaults of `config.schema.yaml`.
    #[serde(default)]
    pub config: super::config::PackConfig,
    pub actions: Vec<Action>,
    pub rules: Vec<Rule>,
    pub aliases: Vec<Alias>,
    pub workflows: Vec<WorkflowFile>,
}
