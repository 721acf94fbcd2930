//! The runner shape: what a runner is given ([`RunContext`]), what it returns
//! ([`RunOutcome`], with whether a retry can help), and the registry that maps
//! StackStorm `runner_type` names to runners. What a runner declares about
//! itself ([`RunnerTraits`], its parameters) is `crate::kind`, all the catalog
//! sees: the catalog names kinds, [`RunHost::runners`] runs them, so the catalog
//! never depends on the runners that depend on it. The runners themselves live
//! in `runners/`; which of them a squall ships is decided by the wiring
//! ([`crate::engine::builtin_runners`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::CatalogHandle;
use crate::execution::ExecutionStatus;
pub use crate::kind::RunnerTraits;
use crate::kind::{RunnerKind, RunnerKinds};
use crate::pack::{Action, ParamSpec};
use crate::runners::output::OutputSink;
use crate::store::Store;
use crate::template::Templates;

/// Caps on captured output, per stream.
#[derive(Debug, Clone, Copy)]
pub struct OutputLimits {
    pub max_bytes: usize,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
        }
    }
}

/// Everything a runner gets for one run.
pub struct RunContext {
    pub execution_id: String,
    pub action: Arc<Action>,
    /// On whose behalf it runs (the execution context's `user`).
    pub user: Option<String>,
    /// Resolved parameters: runner parameters and action parameters, with
    /// defaults applied and validated.
    pub parameters: Map<String, Value>,
    pub templates: Arc<Templates>,
    pub limits: OutputLimits,
    /// Cancelled when the execution is cancelled; runners kill what they started.
    pub cancel: CancellationToken,
    /// The engine services, for runners that orchestrate (workflows, inquiries).
    pub host: Arc<RunHost>,
    /// Secret values this execution holds (its own and inherited): what it
    /// passes on to its tasks, and masks in what it posts or asks.
    pub secrets: crate::secrets::Secrets,
    /// Where output lines go while the run produces them.
    pub output: OutputSink,
}

/// What orchestrating runners need beyond their parameters.
pub struct RunHost {
    /// The node (lease owner) running the execution.
    pub node_id: String,
    pub store: Store,
    pub catalog: CatalogHandle,
    /// Wakes idle workers after new executions were stored.
    pub work_available: Arc<Notify>,
    /// Notified after runs finished (their completions are stored).
    pub finished: Arc<Notify>,
    /// Notified when an approval request was created.
    pub inquiries: Arc<Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The datastore, for python actions' `action_service`.
    pub datastore: Arc<crate::datastore::Datastore>,
    /// Where runners fire triggers (`core.inject_trigger`, `core.announcement`).
    pub intake: crate::intake::Intake,
    /// The runners of this node: what runs an action (its catalog entry only
    /// names the kind).
    pub runners: RunnerRegistry,
}

impl RunContext {
    pub fn param_str(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).and_then(Value::as_str)
    }

    /// The run's timeout: the `timeout` parameter (seconds) or the default.
    pub fn timeout(&self) -> Duration {
        let secs = self
            .parameters
            .get("timeout")
            .and_then(Value::as_f64)
            .filter(|s| *s > 0.0)
            .unwrap_or(DEFAULT_TIMEOUT_SECS as f64);
        Duration::from_secs_f64(secs)
    }
}

/// Default timeout for runners with a `timeout` parameter, seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// Whether running the same thing again, unchanged, can end differently: what
/// a failed run says about itself, so people (and retry policies) need not
/// guess from the error text.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// Something outside the run failed or was slow (a refused connection, an
    /// HTTP 5xx or 429, a transient SMTP answer, the node running it stopped):
    /// the same run may succeed later.
    MayHelp,
    /// The run cannot succeed as given (a missing script, bad parameters, a
    /// pack that cannot install, an HTTP 4xx): something must change first.
    WontHelp,
}

impl Retry {
    pub fn as_str(self) -> &'static str {
        match self {
            Retry::MayHelp => "may_help",
            Retry::WontHelp => "wont_help",
        }
    }

    /// What it means for the person looking at the failure.
    pub fn advice(self) -> &'static str {
        match self {
            Retry::MayHelp => "a retry may help: what failed was outside the action",
            Retry::WontHelp => {
                "a retry will not help until the action, its pack or its parameters change"
            }
        }
    }

    pub fn parse(text: &str) -> Option<Retry> {
        match text {
            "may_help" => Some(Retry::MayHelp),
            "wont_help" => Some(Retry::WontHelp),
            _ => None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub status: ExecutionStatus,
    pub result: Value,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// For a run that did not succeed: whether a retry can help. `None` when
    /// only the action knows (a script's non-zero exit, a python action's
    /// exception or `(False, ...)`).
    pub retry: Option<Retry>,
}

impl RunOutcome {
    pub fn succeeded(result: Value) -> Self {
        Self {
            status: ExecutionStatus::Succeeded,
            result,
            stdout: String::new(),
            stderr: String::new(),
            exit_code: None,
            error: None,
            retry: None,
        }
    }

    /// A failure that does not say whether a retry can help.
    pub fn failed(error: impl Into<String>) -> Self {
        let error = error.into();
        Self {
            status: ExecutionStatus::Failed,
            result: json!({ "error": error }),
            stdout: String::new(),
            stderr: String::new(),
            exit_code: None,
            error: Some(error),
            retry: None,
        }
    }

    /// A failure the same run cannot get past ([`Retry::WontHelp`]).
    pub fn refused(error: impl Into<String>) -> Self {
        Self::failed(error).retry(Retry::WontHelp)
    }

    /// A failure of something outside the run ([`Retry::MayHelp`]).
    pub fn unavailable(error: impl Into<String>) -> Self {
        Self::failed(error).retry(Retry::MayHelp)
    }

    /// The same outcome, saying whether a retry can help.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }
}

/// A kind of runner (`local-shell-cmd`, `http-request`, ...).
#[async_trait::async_trait]
pub trait Runner: Send + Sync {
    /// The StackStorm `runner_type` name.
    fn name(&self) -> &'static str;
    /// What the engine may rely on about this runner.
    fn traits(&self) -> RunnerTraits {
        RunnerTraits::default()
    }
    /// Parameters the runner itself understands; an action's parameters of the
    /// same name override their attributes (default, immutable, ...).
    fn parameters(&self) -> BTreeMap<String, ParamSpec>;
    /// Perform the run. Never panics on bad input: problems become a failed
    /// outcome that says what was wrong.
    async fn run(&self, ctx: RunContext) -> RunOutcome;
}

/// Two runners registered under one name: the second would silently replace
/// the first, so registration refuses it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two runners are registered as {0:?}: runner names must be unique")]
pub struct DuplicateRunner(pub &'static str);

/// All runners squall ships, by name.
#[derive(Clone)]
pub struct RunnerRegistry {
    runners: BTreeMap<&'static str, Arc<dyn Runner>>,
    kinds: RunnerKinds,
}

impl RunnerRegistry {
    /// A registry of `runners`, refusing a name given twice.
    pub fn new(runners: Vec<Arc<dyn Runner>>) -> Result<Self, DuplicateRunner> {
        let mut by_name = BTreeMap::new();
        for runner in runners {
            let name = runner.name();
            if by_name.insert(name, runner).is_some() {
                return Err(DuplicateRunner(name));
            }
        }
        let kinds = RunnerKinds::new(by_name.values().map(|r: &Arc<dyn Runner>| RunnerKind {
            name: r.name(),
            traits: r.traits(),
            parameters: r.parameters(),
        }));
        Ok(Self {
            runners: by_name,
            kinds,
        })
    }

    /// What the catalog needs to know of these runners.
    pub fn kinds(&self) -> &RunnerKinds {
        &self.kinds
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Runner>> {
        self.runners.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.runners.keys().copied().collect()
    }
}

/// Build a runner parameter spec from a compact JSON description.
pub(crate) fn runner_param(schema: Value, default: Option<Value>, description: &str) -> ParamSpec {
    ParamSpec {
        schema,
        required: false,
        default,
        secret: false,
        immutable: false,
        position: None,
        description: Some(description.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str);

    #[async_trait::async_trait]
    impl Runner for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn parameters(&self) -> BTreeMap<String, ParamSpec> {
            BTreeMap::new()
        }
        async fn run(&self, _: RunContext) -> RunOutcome {
            RunOutcome::succeeded(Value::Null)
        }
    }

    #[test]
    fn a_runner_name_registered_twice_is_refused() {
        let err = RunnerRegistry::new(vec![
            Arc::new(Named("noop")),
            Arc::new(Named("echo")),
            Arc::new(Named("noop")),
        ])
        .err()
        .expect("a duplicate name must be refused");
        assert_eq!(err, DuplicateRunner("noop"));
        assert!(err.to_string().contains("\"noop\""), "{err}");
    }
}
