//! Execution vocabulary shared by the queue, the runners and the API: statuses,
//! the context an execution was started from, and time-ordered ids.

use serde::{Deserialize, Serialize};

/// Lifecycle of an execution (DESIGN.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    Requested,
    Scheduled,
    Running,
    Succeeded,
    Failed,
    Timeout,
    Canceling,
    Canceled,
    Pending,
    Pausing,
    Paused,
    Abandoned,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 12] = [
        Self::Requested,
        Self::Scheduled,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Timeout,
        Self::Canceling,
        Self::Canceled,
        Self::Pending,
        Self::Pausing,
        Self::Paused,
        Self::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Canceling => "canceling",
            Self::Canceled => "canceled",
            Self::Pending => "pending",
            Self::Pausing => "pausing",
            Self::Paused => "paused",
            Self::Abandoned => "abandoned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Finished for good: nothing will change this execution any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Timeout | Self::Canceled | Self::Abandoned
        )
    }
}

impl std::fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who and what started an execution. Stored with the execution as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutionContext {
    /// `api`, `cli`, `rule`, `chat`, `workflow`.
    pub source: String,
    /// The user on whose behalf it runs: an API key name, a chat identity, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_enforcement_id: Option<String>,
    /// Chat origin, for replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatOrigin>,
    /// The execution this one re-runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// A workflow re-run that keeps the tasks that succeeded and runs the
    /// failed ones again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rerun_failed: bool,
    /// Set on the executions a workflow task starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowRef>,
}

/// Where a chat command came from: replies (results, approval prompts) go
/// back there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatOrigin {
    /// The adapter's platform name (`matrix`, `console`, ...).
    pub platform: String,
    pub channel: String,
    /// The thread the command was typed in, where the platform has threads.
    #[serde(default)]
    pub thread: Option<String>,
    /// The platform's user id of who typed it.
    #[serde(default)]
    pub user: String,
    /// The command's own message id.
    #[serde(default)]
    pub message_id: String,
    /// The alias the command matched (its ack and result formats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Say in chat that the execution started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ack: bool,
    /// Post its result in chat when it ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub result: bool,
}

/// Where an execution sits inside a workflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRef {
    /// The workflow execution that started it.
    pub id: String,
    /// The outermost workflow (the one a person or rule started).
    pub root: String,
    pub task: String,
    /// The task row (`workflow_tasks.id`).
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

/// A new time-ordered identifier (ULID): ids sort by creation time, which keeps
/// the queue claim and the execution list in order without another index.
pub fn new_id() -> String {
    // A shared monotonic generator: ids made in the same millisecond still
    // sort in creation order, so "oldest first" holds exactly.
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let generated = match GENERATOR.lock() {
        Ok(mut generator) => generator.generate().ok(),
        Err(_) => None,
    };
    generated.unwrap_or_else(ulid::Ulid::new).to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// StackStorm's `action_context` as templates see it (action parameter defaults, a
/// shell action's command, notify messages): who runs `action_ref`, and its pack.
pub fn action_context(action_ref: &str, user: Option<&str>) -> serde_json::Value {
    let pack = action_ref.split_once('.').map_or("", |(pack, _)| pack);
    serde_json::json!({"user": user, "api_user": user, "pack": pack, "action": action_ref})
}

/// RFC 3339 text for a millisecond timestamp.
pub fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
