//! `noop`: does nothing and succeeds; the cheapest way to exercise the
//! pipeline (and StackStorm's `core.noop`).

use std::collections::BTreeMap;

use serde_json::json;

use super::{RunContext, RunOutcome, Runner};
use crate::pack::ParamSpec;

pub struct Noop;

#[async_trait::async_trait]
impl Runner for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn traits(&self) -> super::RunnerTraits {
        super::RunnerTraits {
            inline: true,
            ..Default::default()
        }
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        BTreeMap::new()
    }

    async fn run(&self, _ctx: RunContext) -> RunOutcome {
        RunOutcome::succeeded(json!({}))
    }
}
