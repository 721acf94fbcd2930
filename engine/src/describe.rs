//! The public view of executions: what the API returns and the CLI prints.
//! Secrets are masked here — parameters marked `secret`, and any occurrence
//! of a secret value in output — so no caller can forget to.

use serde_json::{Map, Value, json};

use crate::catalog::Catalog;
use crate::execution::ms_to_rfc3339;
use crate::params::MASK;
use crate::store::{Store, StoreError, execution};

/// Secret values shorter than this are not scrubbed from output: replacing
/// every "1" or "on" would destroy the output without protecting anything.
const MIN_SCRUB_LEN: usize = 4;

/// JSON view of one execution (without trigger details).
pub fn execution_view(model: &execution::Model, catalog: &Catalog) -> Value {
    let params: Value = serde_json::from_str(&model.parameters).unwrap_or(Value::Null);
    let secrets = secret_values(catalog, &model.action, &params);
    let scrub = |text: &str| scrub_text(text, &secrets);
    let result = model
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .map(|r| scrub_value(r, &secrets))
        .unwrap_or(Value::Null);
    let duration_ms = match (model.started_at, model.finished_at) {
        (Some(s), Some(f)) => Some(f - s),
        _ => None,
    };
    json!({
        "id": model.id,
        "action": model.action,
        "runner": model.runner,
        "status": model.status,
        "parameters": catalog.mask_parameters(&model.action, &params),
        "result": result,
        "stdout": model.stdout.as_deref().map(scrub),
        "stderr": model.stderr.as_deref().map(scrub),
        "exit_code": model.exit_code,
        "error": model.error.as_deref().map(scrub),
        "context": serde_json::from_str::<Value>(&model.context).unwrap_or(Value::Null),
        "parent_id": model.parent_id,
        "attempt": model.attempt,
        "created_at": ms_to_rfc3339(model.created_at),
        "started_at": model.started_at.map(ms_to_rfc3339),
        "finished_at": model.finished_at.map(ms_to_rfc3339),
        "duration_ms": duration_ms,
    })
}

/// Full view: the execution plus the trigger instance and rule that caused it.
pub async fn execution_detail(
    store: &Store,
    model: &execution::Model,
    catalog: &Catalog,
) -> Result<Value, StoreError> {
    let mut view = execution_view(model, catalog);
    let context = view.get("context").cloned().unwrap_or(Value::Null);
    if let Some(ti_id) = context.get("trigger_instance_id").and_then(Value::as_str)
        && let Some(ti) = store.get_trigger_instance(ti_id).await?
    {
        view["trigger_instance"] = json!({
            "id": ti.id,
            "trigger": ti.trigger,
            "source": ti.source,
            "occurred_at": ms_to_rfc3339(ti.occurred_at),
            "payload": serde_json::from_str::<Value>(&ti.payload).unwrap_or(Value::Null),
        });
    }
    if let Some(rule) = context.get("rule").and_then(Value::as_str) {
        view["rule"] = match catalog.rule(rule) {
            Some(r) => json!({
                "ref": rule,
                "description": r.description,
                "trigger": r.trigger_type,
                "enforcement_id": context.get("rule_enforcement_id"),
            }),
            None => json!({"ref": rule, "enforcement_id": context.get("rule_enforcement_id")}),
        };
    }
    Ok(view)
}

fn secret_values(catalog: &Catalog, action: &str, params: &Value) -> Vec<String> {
    let (Some(entry), Value::Object(map)) = (catalog.action(action), params) else {
        return Vec::new();
    };
    entry
        .params
        .secret_names()
        .filter_map(|name| map.get(name))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .filter(|s| s.len() >= MIN_SCRUB_LEN)
        .collect()
}

fn scrub_text(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

fn scrub_value(value: Value, secrets: &[String]) -> Value {
    if secrets.is_empty() {
        return value;
    }
    match value {
        Value::String(s) => Value::String(scrub_text(&s, secrets)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| scrub_value(v, secrets)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, scrub_value(v, secrets)))
                .collect::<Map<String, Value>>(),
        ),
        other => other,
    }
}
