//! `echo`: returns its `message` as the result and stdout without starting a
//! process.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{RunContext, RunOutcome, Runner, runner_param};
use crate::pack::ParamSpec;

pub struct Echo;

#[async_trait::async_trait]
impl Runner for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn traits(&self) -> super::RunnerTraits {
        super::RunnerTraits {
            inline: true,
            ..Default::default()
        }
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        let mut message = runner_param(json!({"type": "string"}), None, "Text to return.");
        message.required = true;
        BTreeMap::from([("message".to_owned(), message)])
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        let message = ctx
            .parameters
            .get("message")
            .cloned()
            .unwrap_or(Value::Null);
        let text = match &message {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut outcome = RunOutcome::succeeded(json!({ "message": message }));
        outcome.stdout = text;
        outcome
    }
}
