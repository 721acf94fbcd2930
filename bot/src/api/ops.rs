//! Operations verbs over the API, as `st2` users know them: packs with their
//! load state, rules enabled or disabled at run time, API keys listed and
//! revoked, the audit log, and chat aliases matched, listed and executed
//! without a chat.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use squall_engine::EngineError;
use squall_engine::describe::{ApiKeyView, AuditView};
use squall_engine::execution::ExecutionContext;
use squall_engine::params::Casting;
use squall_engine::store::AuditFilter;
use utoipa::IntoParams;

use super::doc::{self, ErrorBody};
use super::{ApiError, AppState, Caller, Q, audit_control, check_limit, parse_body, parse_object};

/// `GET /api/v1/packs`: every loaded pack, where it came from, what it holds.
#[utoipa::path(
    get,
    path = "/packs",
    tag = "packs",
    responses((status = 200, description = "Loaded packs.", body = Vec<doc::PackView>))
)]
pub(super) async fn list_packs(State(state): State<Arc<AppState>>) -> Json<Vec<doc::PackView>> {
    Json(pack_views(&state.engine.catalog.current()))
}

/// Every pack of `catalog`: the loaded ones, then the refused ones with
/// their errors (what `/api/v1/packs` and `squall pack list` show).
pub fn pack_views(catalog: &squall_engine::catalog::Catalog) -> Vec<doc::PackView> {
    let source = |dir: &std::path::Path| {
        if squall_engine::pack::builtin::is_builtin(dir) {
            "built-in".to_owned()
        } else {
            dir.display().to_string()
        }
    };
    let loaded = catalog.packs.iter().map(|pack| doc::PackView {
        reference: pack.meta.name.clone(),
        version: Some(pack.meta.version.clone()),
        description: pack.meta.description.clone(),
        source: source(&pack.meta.path),
        state: "loaded".into(),
        actions: pack.actions.len(),
        rules: pack.rules.len(),
        aliases: pack.aliases.len(),
        errors: Vec::new(),
    });
    let refused = catalog.refused.iter().map(|pack| doc::PackView {
        reference: pack
            .name
            .clone()
            .unwrap_or_else(|| pack.dir.display().to_string()),
        version: pack.version.clone(),
        description: String::new(),
        source: source(&pack.dir),
        state: "refused".into(),
        actions: 0,
        rules: 0,
        aliases: 0,
        errors: pack.errors.iter().map(ToString::to_string).collect(),
    });
    loaded.chain(refused).collect()
}

/// `POST /api/v1/rules/{ref}/enable` and `.../disable`.
#[utoipa::path(
    post,
    path = "/rules/{reference}/enable",
    tag = "rules",
    params(("reference" = String, Path, description = "`pack.rule`.")),
    responses(
        (status = 200, description = "Enabled on every node (stored).", body = doc::RuleToggled),
        (status = 404, description = "No such rule.", body = ErrorBody)
    )
)]
pub(super) async fn enable_rule(
    state: State<Arc<AppState>>,
    caller: axum::Extension<Caller>,
    reference: Path<String>,
) -> Result<Json<doc::RuleToggled>, ApiError> {
    toggle_rule(state, caller, reference, true).await
}

/// `POST /api/v1/rules/{ref}/disable`.
#[utoipa::path(
    post,
    path = "/rules/{reference}/disable",
    tag = "rules",
    params(("reference" = String, Path, description = "`pack.rule`.")),
    responses(
        (status = 200, description = "Disabled on every node (stored).", body = doc::RuleToggled),
        (status = 404, description = "No such rule.", body = ErrorBody)
    )
)]
pub(super) async fn disable_rule(
    state: State<Arc<AppState>>,
    caller: axum::Extension<Caller>,
    reference: Path<String>,
) -> Result<Json<doc::RuleToggled>, ApiError> {
    toggle_rule(state, caller, reference, false).await
}

async fn toggle_rule(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(reference): Path<String>,
    enabled: bool,
) -> Result<Json<doc::RuleToggled>, ApiError> {
    let was = state
        .engine
        .set_rule_enabled(&reference, enabled, &caller.0, "api")
        .await
        .map_err(|e| match e {
            EngineError::NoRule(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no rule {reference}; `squall rule list` shows them"),
            ),
            other => other.into(),
        })?;
    Ok(Json(doc::RuleToggled {
        reference,
        enabled,
        was_enabled: was,
    }))
}

/// `GET /api/v1/apikeys`: ids, names and states; never the keys (only their
/// hashes are stored).
#[utoipa::path(
    get,
    path = "/apikeys",
    tag = "apikeys",
    responses((status = 200, description = "API keys (never the keys).", body = Vec<ApiKeyView>))
)]
pub(super) async fn list_api_keys(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<ApiKeyView>>, ApiError> {
    let keys = state
        .engine
        .store
        .list_api_keys()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        keys.iter()
            .map(squall_engine::describe::api_key_summary)
            .collect(),
    ))
}

/// `DELETE /api/v1/apikeys/{id or name}`: disable the key (or every enabled
/// key of that name). It stops working at once on this node, within the
/// key cache's lifetime (10 s) on others.
#[utoipa::path(
    delete,
    path = "/apikeys/{key}",
    tag = "apikeys",
    params(("key" = String, Path, description = "The key's id or name.")),
    responses(
        (status = 200, description = "The keys revoked.", body = doc::Revoked),
        (status = 404, description = "No enabled key with that id or name.", body = ErrorBody)
    )
)]
pub(super) async fn revoke_api_key(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(key): Path<String>,
) -> Result<Json<doc::Revoked>, ApiError> {
    let revoked = state
        .engine
        .store
        .revoke_api_keys(&key)
        .await
        .map_err(ApiError::internal)?;
    if revoked.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no enabled API key with the id or name {key:?}"),
        ));
    }
    state.keys.forget();
    for k in &revoked {
        audit_control(&state, &caller, "apikey.revoke", &k.id).await;
    }
    Ok(Json(doc::Revoked {
        revoked: revoked
            .iter()
            .map(squall_engine::describe::api_key_summary)
            .collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Who (`api:<key>`, `slack:U123`, `cli:<user>`).
    actor: Option<String>,
    /// A kind (`execution.cancel`) or a family (`execution`).
    kind: Option<String>,
    /// What it was about (an execution id, `key:system/name`, ...).
    subject: Option<String>,
    /// RFC 3339 time or milliseconds since the epoch.
    #[param(schema_with = doc::time_schema)]
    since: Option<String>,
    /// RFC 3339 time or milliseconds since the epoch.
    #[param(schema_with = doc::time_schema)]
    until: Option<String>,
    /// 1 to 1000 (100 when absent).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

fn parse_time(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(Some(ms));
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| Some(t.timestamp_millis()))
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!(
                    "{name} must be an RFC 3339 time (2026-12-07T10:00:00Z) or milliseconds since the epoch, not {value:?}"
                ),
            )
        })
}

/// `GET /api/v1/audit`: audit rows, newest first, filtered.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "Audit rows, newest first.", body = Vec<AuditView>))
)]
pub(super) async fn list_audit(
    State(state): State<Arc<AppState>>,
    Q(query): Q<AuditQuery>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let limit = check_limit(query.limit, 100, 1000)?;
    let filter = AuditFilter {
        actor: query.actor,
        kind: query.kind,
        subject: query.subject,
        since: parse_time("since", query.since.as_deref())?,
        until: parse_time("until", query.until.as_deref())?,
        limit,
    };
    let rows = state
        .engine
        .store
        .list_audit(&filter)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        rows.iter()
            .map(squall_engine::describe::audit_summary)
            .collect(),
    ))
}

fn alias_command(headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    let request: doc::AliasCommand = parse_object(
        parse_body(headers, body)?,
        r#"{"command": "deploy web to prod"}"#,
    )?;
    let command = request.command.trim().to_owned();
    if command.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the command is empty",
        ));
    }
    Ok(command)
}

fn no_match(err: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_match", err.to_string())
}

/// `POST /api/v1/actionalias/match`: which alias and parameters a command
/// resolves to.
#[utoipa::path(
    post,
    path = "/actionalias/match",
    tag = "aliases",
    request_body = doc::AliasCommand,
    responses(
        (status = 200, description = "The alias and the parameters it reads.", body = doc::AliasMatched),
        (status = 404, description = "No alias matches.", body = ErrorBody)
    )
)]
pub(super) async fn match_alias(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<doc::AliasMatched>, ApiError> {
    let command = alias_command(&headers, &body)?;
    let catalog = state.engine.catalog.current();
    let matched = catalog.aliases.match_command(&command).map_err(no_match)?;
    let action = catalog
        .alias(&matched.alias_id)
        .map(|a| a.action_ref.clone())
        .unwrap_or_default();
    Ok(Json(doc::AliasMatched {
        alias: matched.alias_id,
        format: matched.representation,
        display: matched.display,
        action,
        parameters: matched.parameters,
        additional_parameters: matched.additional_parameters,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct HelpQuery {
    /// Only commands whose text or description contains this.
    filter: Option<String>,
}

/// `GET /api/v1/actionalias/help`: every command, by pack.
#[utoipa::path(
    get,
    path = "/actionalias/help",
    tag = "aliases",
    params(HelpQuery),
    responses((status = 200, description = "Commands, by pack.", body = Vec<doc::AliasHelp>))
)]
pub(super) async fn alias_help(
    State(state): State<Arc<AppState>>,
    Q(query): Q<HelpQuery>,
) -> Json<Vec<doc::AliasHelp>> {
    let catalog = state.engine.catalog.current();
    let filter = query.filter.as_deref().filter(|f| !f.is_empty());
    Json(
        catalog
            .aliases
            .help_entries(filter)
            .into_iter()
            .map(|e| doc::AliasHelp {
                pack: e.alias_id.split('.').next().unwrap_or_default().to_owned(),
                alias: e.alias_id,
                display: e.display,
                description: e.description,
            })
            .collect(),
    )
}

/// `POST /api/v1/aliasexecution`: run a chat command on behalf of the API
/// caller; answers the executions it started (one per parameter set).
#[utoipa::path(
    post,
    path = "/aliasexecution",
    tag = "aliases",
    request_body = doc::AliasCommand,
    responses(
        (status = 201, description = "The executions started.", body = doc::AliasExecuted),
        (status = 404, description = "No alias matches.", body = ErrorBody),
        (status = 503, description = "Intake is full or closing; retry.", body = ErrorBody)
    )
)]
pub(super) async fn execute_alias(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let command = alias_command(&headers, &body)?;
    let catalog = state.engine.catalog.current();
    let matched = catalog.aliases.match_command(&command).map_err(no_match)?;
    let alias = catalog
        .alias(&matched.alias_id)
        .cloned()
        .ok_or_else(|| no_match(format!("alias {} is gone", matched.alias_id)))?;
    let mut ids = Vec::new();
    for params in matched.parameter_sets() {
        let context = ExecutionContext {
            source: "api".into(),
            user: Some(caller.0.clone()),
            ..ExecutionContext::default()
        };
        let id = state
            .engine
            .request_execution(&alias.action_ref, params, Casting::FromText, context)
            .await?;
        ids.push(id);
    }
    Ok((
        StatusCode::CREATED,
        Json(doc::AliasExecuted {
            alias: alias.reference(),
            action: alias.action_ref,
            executions: ids,
        }),
    )
        .into_response())
}
