//! The OpenAPI 3.1 document (`GET /api/v1/openapi.json`).
//!
//! Every route is registered through `utoipa_axum::routes!` from the
//! handler's own `#[utoipa::path]`, so a route cannot exist without its
//! entry. The answers every route shares (401 without a key, 400/413/415 for
//! a body, 400 for a bad query) are added here from what each operation
//! declares, so no handler can forget them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, ResponseBuilder};
use utoipa::{Modify, ToSchema};

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`not_found`, `unauthorized`, ...).
    pub error: String,
    /// What was wrong, for people.
    pub detail: String,
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Readiness, with what is not ready (503 adds `error` and `detail`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    pub database: DatabaseState,
    pub packs: PacksState,
    /// Chat adapters by platform.
    pub adapters: BTreeMap<String, AdapterState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseState {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PacksState {
    pub loaded: usize,
    pub actions: usize,
    pub rules: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdapterState {
    pub connected: bool,
}

/// A webhook accepted: its trigger instance is stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAccepted {
    pub trigger_instance_id: String,
    pub trigger: String,
    pub webhook: String,
}

/// A trigger fired through `/webhooks/st2`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerAccepted {
    pub trigger_instance_id: String,
    pub trigger: String,
}

/// Alerts accepted: one trigger instance per alert not seen in the
/// de-duplication window.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsAccepted {
    pub trigger: String,
    pub trigger_instance_ids: Vec<String>,
    /// Alerts in the payload.
    pub alerts: usize,
    /// Of those, repeats dropped.
    pub deduplicated: usize,
}

/// The answer to cancel, pause and resume.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlAnswer {
    pub id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A rerun started.
#[derive(Debug, Serialize, ToSchema)]
pub struct RerunAnswer {
    /// The new execution.
    pub id: String,
    pub rerun_of: String,
}

/// A response to an inquiry recorded (`pending` while more approvals are
/// needed) or deciding it.
#[derive(Debug, Serialize, ToSchema)]
pub struct VoteAnswer {
    pub id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Vec<String>>,
}

/// A loaded rule.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    #[serde(rename = "ref")]
    pub reference: String,
    pub description: String,
    pub enabled: bool,
    #[serde(rename = "type")]
    pub kind: squall_engine::pack::RuleKind,
    pub trigger: RuleTrigger,
    pub criteria: Map<String, Value>,
    pub action: RuleAction,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleTrigger {
    #[serde(rename = "type")]
    pub kind: String,
    pub parameters: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleAction {
    #[serde(rename = "ref")]
    pub reference: String,
    pub parameters: Map<String, Value>,
}

/// A rule enabled or disabled.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleToggled {
    #[serde(rename = "ref")]
    pub reference: String,
    pub enabled: bool,
    pub was_enabled: bool,
}

/// A loaded action and its parameters (secret defaults masked).
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionView {
    #[serde(rename = "ref")]
    pub reference: String,
    pub description: String,
    pub runner_type: String,
    pub enabled: bool,
    pub parameters: BTreeMap<String, ParameterView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParameterView {
    /// The JSON schema of the value.
    pub schema: Value,
    pub required: bool,
    pub default: Option<Value>,
    pub secret: bool,
    pub immutable: bool,
    pub description: Option<String>,
}

/// A pack: loaded, or refused with its errors.
#[derive(Debug, Serialize, ToSchema)]
pub struct PackView {
    /// The pack's name (its directory when pack.yaml could not be read).
    #[serde(rename = "ref")]
    pub reference: String,
    pub version: Option<String>,
    pub description: String,
    /// `built-in` or the directory it was loaded from.
    pub source: String,
    /// `loaded` or `refused`.
    pub state: String,
    pub actions: usize,
    pub rules: usize,
    pub aliases: usize,
    /// Why it was refused (`file:line: field: reason`), each problem.
    pub errors: Vec<String>,
}

/// API keys revoked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: Vec<squall_engine::describe::ApiKeyView>,
}

/// A chat command, without its prefix.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasCommand {
    /// `deploy web to prod`.
    #[schema(pattern = r"\S")]
    pub command: String,
}

/// What a command resolves to.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasMatched {
    pub alias: String,
    /// The format that matched.
    pub format: String,
    pub display: String,
    pub action: String,
    pub parameters: Map<String, Value>,
    /// Further parameter sets (one execution each).
    pub additional_parameters: Vec<Map<String, Value>>,
}

/// One command in the help.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasHelp {
    pub alias: String,
    pub pack: String,
    pub display: String,
    pub description: String,
}

/// Executions a command started.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasExecuted {
    pub alias: String,
    pub action: String,
    pub executions: Vec<String>,
}

/// A datastore scope: `system` or `user:<name>`.
pub const SCOPE_PATTERN: &str = "^(system|user:.{1,255})$";
/// A datastore key name (`squall_engine::datastore::check_name`).
pub const KEY_NAME_PATTERN: &str = r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$";

/// A time in a query: RFC 3339 or milliseconds since the epoch.
pub fn time_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^-?[0-9]{1,15}$")),
        )
        .description(Some("RFC 3339, or milliseconds since the epoch."))
        .build()
        .into()
}

/// Security schemes, and the answers every operation shares.
pub struct Shared;

pub const API_KEY: &str = "api_key";
pub const BEARER: &str = "bearer";

impl Modify for Shared {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "St2-Api-Key",
                "An API key (`squall apikey create`).",
            ))),
        );
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The same API key as `Authorization: Bearer <key>`."))
                    .build(),
            ),
        );
        components.schemas.insert(
            "ErrorBody".to_owned(),
            <ErrorBody as utoipa::PartialSchema>::schema(),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let api = path.starts_with("/api/v1/") && path != "/api/v1/openapi.json";
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if api && operation.security.is_none() {
                    operation.security = Some(vec![
                        SecurityRequirement::new(API_KEY, Vec::<String>::new()),
                        SecurityRequirement::new(BEARER, Vec::<String>::new()),
                    ]);
                }
                add_shared_answers(operation);
            }
        }
    }
}

fn error_answer(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    ))))
                    .build(),
            )
            .build(),
    )
}

fn add_shared_answers(operation: &mut Operation) {
    let mut add = |code: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(code.to_owned())
            .or_insert_with(|| error_answer(description));
    };
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_query = operation.parameters.as_ref().is_some_and(|ps| {
        ps.iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Query))
    });
    let has_body = operation.request_body.is_some();
    if secured {
        add(
            "401",
            "No API key, or one that is not valid or is disabled.",
        );
    }
    if has_query || has_body {
        add("400", "The query or the body is not valid.");
    }
    if has_body {
        add("413", "The body is larger than `api.body_limit_bytes`.");
        add(
            "415",
            "The body is not JSON, a form or text (`Content-Type`).",
        );
    }
}
