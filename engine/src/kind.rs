//! What a kind of runner declares about itself, apart from running: its
//! name, its [`RunnerTraits`] and the parameters it understands. The catalog
//! checks and plans actions with this alone, so it never needs the runners
//! (which need the catalog: workflows plan their tasks with it).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::pack::ParamSpec;

/// What a runner declares about itself, so the engine never matches on runner names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerTraits {
    /// Finishes at once, in-process, without side effects: workflow tasks run it inline
    /// instead of through the queue.
    pub inline: bool,
    /// Renders its own `cmd` parameter into a shell command when it runs, quoting every
    /// value; callers leave `cmd` templates to it.
    pub shell_command: bool,
    /// Starts a child process: `timeout` and cancel kill its process group, its output
    /// is captured and capped, and secret parameters never reach its command line.
    pub process: bool,
    /// Reads its pack's whole configuration (all of the pack's config secrets join the
    /// run's secret set).
    pub reads_pack_config: bool,
}

/// One kind of runner, as the catalog sees it.
#[derive(Debug, Clone)]
pub struct RunnerKind {
    /// The StackStorm `runner_type` name.
    pub name: &'static str,
    pub traits: RunnerTraits,
    /// Parameters the runner itself understands; an action's parameters of the
    /// same name override their attributes (default, immutable, ...).
    pub parameters: BTreeMap<String, ParamSpec>,
}

impl RunnerKind {
    pub fn traits(&self) -> RunnerTraits {
        self.traits
    }
}

/// The kinds of runner a catalog's actions may name, by name.
#[derive(Debug, Clone, Default)]
pub struct RunnerKinds(BTreeMap<&'static str, Arc<RunnerKind>>);

impl RunnerKinds {
    pub fn new(kinds: impl IntoIterator<Item = RunnerKind>) -> Self {
        Self(kinds.into_iter().map(|k| (k.name, Arc::new(k))).collect())
    }

    pub fn get(&self, name: &str) -> Option<Arc<RunnerKind>> {
        self.0.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.keys().copied().collect()
    }
}
