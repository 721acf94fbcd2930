//! Workflows (runner `orquesta` / `workflow`) and approvals (runner `inquirer`).
//!
//! A workflow execution is run by a [`conductor`]: it starts each task's
//! action as a child execution, evaluates transitions, and stores every task
//! state change in `workflow_tasks`, so a workflow resumes after a crash
//! without running a finished task again. While it only waits on approvals
//! (or is paused) it parks: its status becomes `pending` (`paused`), it
//! leaves the worker, and the decision puts it back in the queue.

mod conductor;
pub mod inquirer;
pub mod spec;

use std::collections::BTreeMap;

use crate::pack::ParamSpec;
use crate::runner::{RunContext, RunOutcome, Runner};

pub(crate) use conductor::parked;
pub use spec::{WorkflowSpec, is_workflow_runner};

/// The workflow runner, under both of its names.
pub struct WorkflowRunner {
    name: &'static str,
}

impl WorkflowRunner {
    pub const ORQUESTA: WorkflowRunner = WorkflowRunner { name: "orquesta" };
    pub const WORKFLOW: WorkflowRunner = WorkflowRunner { name: "workflow" };
}

#[async_trait::async_trait]
impl Runner for WorkflowRunner {
    fn name(&self) -> &'static str {
        self.name
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        BTreeMap::new()
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        conductor::run(ctx).await
    }
}
