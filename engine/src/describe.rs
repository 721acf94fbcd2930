//! The public views of executions and trigger instances: what the API
//! returns, the CLI prints and chat renders. Secrets are masked here, and
//! only here, for every caller: parameters marked `secret` by name, and every
//! secret value the row holds or inherited (`crate::secrets`) wherever it
//! appears, so no view can forget to.

use serde::Serialize;
use serde_json::Value;

use crate::catalog::Catalog;
use crate::execution::{ExecutionStatus, ms_to_rfc3339};
use crate::secrets::Secrets;
use crate::store::{Store, StoreError, api_key, audit, execution, trigger_instance};

/// JSON view of one execution (without trigger details).
pub fn execution_view(model: &execution::Model, catalog: &Catalog) -> Value {
    serde_json::to_value(execution_summary(model, catalog)).unwrap_or(Value::Null)
}

/// An execution as people may see it (API, CLI, chat): parameters masked,
/// and every secret value it holds scrubbed from result, output and error.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ExecutionView {
    pub id: String,
    pub action: String,
    pub runner: String,
    /// `None` only for a status this version does not know (a newer node's).
    pub status: Option<ExecutionStatus>,
    pub parameters: Value,
    pub result: Value,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// For a run that did not succeed, whether running it again unchanged can
    /// help: `may_help` (something outside it failed or was slow) or
    /// `wont_help` (the action, its pack or its parameters must change
    /// first). Null when only the action knows, or it did not fail.
    pub retry: Option<crate::runner::Retry>,
    pub context: Value,
    pub parent_id: Option<String>,
    pub attempt: i32,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

/// The typed view of an execution ([`execution_view`] is its JSON).
pub fn execution_summary(model: &execution::Model, catalog: &Catalog) -> ExecutionView {
    let params: Value = serde_json::from_str(&model.parameters).unwrap_or(Value::Null);
    let secrets = execution_secrets(model, catalog, &params);
    let scrub = |text: &str| secrets.scrub_text(text);
    let result = model
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .map(|r| secrets.scrub_value(r))
        .unwrap_or(Value::Null);
    let duration_ms = match (model.started_at, model.finished_at) {
        (Some(s), Some(f)) => Some(f - s),
        _ => None,
    };
    ExecutionView {
        id: model.id.clone(),
        action: model.action.clone(),
        runner: model.runner.clone(),
        status: ExecutionStatus::parse(&model.status),
        parameters: secrets.scrub_value(catalog.mask_parameters(&model.action, &params)),
        result,
        stdout: model.stdout.as_deref().map(scrub),
        stderr: model.stderr.as_deref().map(scrub),
        exit_code: model.exit_code,
        error: model.error.as_deref().map(scrub),
        retry: model.retry.as_deref().and_then(crate::runner::Retry::parse),
        context: secrets
            .scrub_value(serde_json::from_str::<Value>(&model.context).unwrap_or(Value::Null)),
        parent_id: model.parent_id.clone(),
        attempt: model.attempt,
        created_at: ms_to_rfc3339(model.created_at),
        started_at: model.started_at.map(ms_to_rfc3339),
        finished_at: model.finished_at.map(ms_to_rfc3339),
        duration_ms,
    }
}

/// An execution with the trigger instance and rule that caused it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExecutionDetail {
    #[serde(flatten)]
    pub execution: ExecutionView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_instance: Option<TriggerInstanceView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleCause>,
}

/// The rule whose enforcement started an execution.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleCause {
    #[serde(rename = "ref")]
    pub reference: String,
    /// Absent when the rule is no longer loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    pub enforcement_id: Option<String>,
}

/// Full view: the execution plus the trigger instance and rule that caused
/// it, as JSON ([`execution_detail_summary`] is the typed form).
pub async fn execution_detail(
    store: &Store,
    model: &execution::Model,
    catalog: &Catalog,
) -> Result<Value, StoreError> {
    let detail = execution_detail_summary(store, model, catalog).await?;
    Ok(serde_json::to_value(detail).unwrap_or(Value::Null))
}

/// Full view: the execution plus the trigger instance and rule that caused it.
pub async fn execution_detail_summary(
    store: &Store,
    model: &execution::Model,
    catalog: &Catalog,
) -> Result<ExecutionDetail, StoreError> {
    let execution = execution_summary(model, catalog);
    let mut detail = ExecutionDetail {
        trigger_instance: None,
        rule: None,
        execution,
    };
    let context = &detail.execution.context;
    if let Some(ti_id) = context.get("trigger_instance_id").and_then(Value::as_str)
        && let Some(ti) = store.get_trigger_instance(ti_id).await?
    {
        detail.trigger_instance = Some(trigger_instance_summary(&ti));
    }
    let context = &detail.execution.context;
    if let Some(rule) = context.get("rule").and_then(Value::as_str) {
        let enforcement_id = context
            .get("rule_enforcement_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let known = catalog.rule(rule);
        detail.rule = Some(RuleCause {
            reference: rule.to_owned(),
            description: known.map(|r| r.description.clone()),
            trigger: known.map(|r| r.trigger_type.clone()),
            enforcement_id,
        });
    }
    Ok(detail)
}

/// An API key as the API and CLI show it: never the key or its hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    /// RFC 3339.
    pub created_at: String,
}

pub fn api_key_view(key: &api_key::Model) -> Value {
    serde_json::to_value(api_key_summary(key)).unwrap_or(Value::Null)
}

pub fn api_key_summary(key: &api_key::Model) -> ApiKeyView {
    ApiKeyView {
        id: key.id.clone(),
        name: key.name.clone(),
        enabled: key.enabled,
        created_at: ms_to_rfc3339(key.created_at),
    }
}

/// An audit row as the API and CLI show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub id: String,
    /// RFC 3339.
    pub at: String,
    pub actor: String,
    pub kind: String,
    pub subject: String,
    pub detail: Value,
}

pub fn audit_view(row: &audit::Model) -> Value {
    serde_json::to_value(audit_summary(row)).unwrap_or(Value::Null)
}

pub fn audit_summary(row: &audit::Model) -> AuditView {
    AuditView {
        id: row.id.clone(),
        at: ms_to_rfc3339(row.at),
        actor: row.actor.clone(),
        kind: row.kind.clone(),
        subject: row.subject.clone(),
        detail: serde_json::from_str::<Value>(&row.detail).unwrap_or(Value::Null),
    }
}

/// One trigger instance, its payload scrubbed of the secret values of the
/// execution that caused it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TriggerInstanceView {
    pub id: String,
    pub trigger: String,
    pub source: String,
    /// RFC 3339.
    pub occurred_at: String,
    pub payload: Value,
}

pub fn trigger_instance_view(ti: &trigger_instance::Model) -> Value {
    serde_json::to_value(trigger_instance_summary(ti)).unwrap_or(Value::Null)
}

pub fn trigger_instance_summary(ti: &trigger_instance::Model) -> TriggerInstanceView {
    let secrets = Secrets::from_stored(ti.secrets.as_deref());
    TriggerInstanceView {
        id: ti.id.clone(),
        trigger: ti.trigger.clone(),
        source: ti.source.clone(),
        occurred_at: ms_to_rfc3339(ti.occurred_at),
        payload: secrets
            .scrub_value(serde_json::from_str::<Value>(&ti.payload).unwrap_or(Value::Null)),
    }
}

/// The secret values an execution's view must mask: those stored with it
/// (its own and inherited), and, for rows stored before secrets were kept,
/// the values of the parameters its action marks secret today.
pub fn execution_secrets(model: &execution::Model, catalog: &Catalog, params: &Value) -> Secrets {
    let stored = Secrets::from_stored(model.secrets.as_deref());
    let (Some(entry), Value::Object(map)) = (catalog.action(&model.action), params) else {
        return stored;
    };
    stored.union(&entry.params.secret_values(map))
}
