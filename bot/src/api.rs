//! The HTTP API (axum): webhooks, executions, rules, health.
//!
//! Handlers return `Result<_, ApiError>`; errors become `{error, detail}` JSON
//! and never carry internals (those are logged with a correlation id).

mod keys;
mod ops;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::signatures::{self, HookAuth, Scheme};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use squall_adapters::alerts::Dedup;

use squall_engine::describe::{execution_detail, execution_view};
use squall_engine::execution::{ExecutionContext, ExecutionStatus};
use squall_engine::intake::{IntakeError, TriggerFiring};
use squall_engine::params::Casting;
use squall_engine::store::{ExecutionFilter, hash_api_key};
use squall_engine::{Engine, EngineError, triggers};

/// Shared state of every handler.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub auth: bool,
    pub body_limit: usize,
    keys: KeyCache,
    webhooks: std::collections::BTreeMap<String, HookAuth>,
    alerts: crate::config::AlertsSection,
    dedup: Mutex<Dedup>,
    /// Who may decrypt datastore secrets (`key:decrypt` for `api:<key name>`).
    rbac: Arc<squall_engine::rbac::Rbac>,
    /// The live event stream (`/api/v1/stream`).
    stream: Option<Arc<crate::stream::StreamHub>>,
    /// Chat adapters, for readiness and `squall_chat_adapter_connected`.
    adapters: Vec<Arc<dyn squall_engine::chat::ChatAdapter>>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, auth: bool, body_limit: usize) -> Arc<AppState> {
        Arc::new(AppState {
            engine,
            auth,
            body_limit,
            keys: KeyCache::default(),
            webhooks: std::collections::BTreeMap::new(),
            alerts: crate::config::AlertsSection::default(),
            dedup: Mutex::new(Dedup::new(Duration::from_secs(300))),
            rbac: Arc::default(),
            stream: None,
            adapters: Vec::new(),
        })
    }

    /// The chat adapters whose connection `/readyz` reports.
    pub fn with_adapters(
        self: Arc<Self>,
        adapters: Vec<Arc<dyn squall_engine::chat::ChatAdapter>>,
    ) -> Arc<AppState> {
        let mut state = Arc::try_unwrap(self).unwrap_or_else(|_| unreachable!("not shared yet"));
        state.adapters = adapters;
        Arc::new(state)
    }

    /// Serve the live event stream from `hub`.
    pub fn with_stream(self: Arc<Self>, hub: Arc<crate::stream::StreamHub>) -> Arc<AppState> {
        let mut state = Arc::try_unwrap(self).unwrap_or_else(|_| unreachable!("not shared yet"));
        state.stream = Some(hub);
        Arc::new(state)
    }

    /// The RBAC model API keys are checked against (`api:<key name>`).
    pub fn with_rbac(self: Arc<Self>, rbac: Arc<squall_engine::rbac::Rbac>) -> Arc<AppState> {
        let mut state = Arc::try_unwrap(self).unwrap_or_else(|_| unreachable!("not shared yet"));
        state.rbac = rbac;
        Arc::new(state)
    }

    /// Webhook and alert receiver settings (authentication, de-duplication).
    pub fn with_hooks(
        self: Arc<Self>,
        webhooks: std::collections::BTreeMap<String, HookAuth>,
        alerts: crate::config::AlertsSection,
    ) -> Arc<AppState> {
        let mut state = Arc::try_unwrap(self).unwrap_or_else(|_| unreachable!("not shared yet"));
        state.dedup = Mutex::new(Dedup::new(Duration::from_secs(alerts.dedup_seconds)));
        state.webhooks = webhooks;
        state.alerts = alerts;
        Arc::new(state)
    }
}

/// Verified keys are remembered briefly so a burst of webhooks costs one
/// database read, not one per request; a revoked key stops working within
/// [`KEY_CACHE_TTL`].
#[derive(Default)]
struct KeyCache {
    entries: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

impl KeyCache {
    /// Drop every remembered key (after a revocation).
    fn forget(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    async fn verify(&self, engine: &Engine, key: &str) -> Result<Option<String>, ApiError> {
        let hash = hash_api_key(key);
        if let Ok(entries) = self.entries.lock()
            && let Some((name, at)) = entries.get(&hash)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(name.clone());
        }
        let name = engine
            .store
            .verify_api_key(key)
            .await
            .map_err(ApiError::internal)?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(hash, (name.clone(), Instant::now()));
        }
        Ok(name)
    }
}

/// An error answered to an API caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
        }
    }

    fn internal(err: impl std::fmt::Display) -> Self {
        let id = squall_engine::execution::new_id();
        tracing::error!(correlation_id = %id, error = %err, "internal error answering an API request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("internal error; correlation id {id}"),
        )
    }
}

impl From<IntakeError> for ApiError {
    fn from(err: IntakeError) -> Self {
        match err {
            IntakeError::Overloaded | IntakeError::Closed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                err.to_string(),
            ),
            IntakeError::Store(_) => Self::internal(err),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Parameters(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_parameters",
                err.to_string(),
            ),
            EngineError::Intake(e) => e.into(),
            EngineError::NoExecution(_) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", err.to_string())
            }
            EngineError::NotAWorkflow(_) => {
                Self::new(StatusCode::CONFLICT, "not_a_workflow", err.to_string())
            }
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "detail": self.detail})),
        )
            .into_response()
    }
}

/// The whole HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    // Webhooks and alert receivers authenticate per sender (API key or
    // signature over the raw body), so they sit outside the API-key layer.
    let hooks = Router::new()
        .route("/webhooks/{*name}", post(webhook))
        .route("/alerts/{source}", post(alert));
    let api = Router::new()
        .route("/webhooks/st2", post(fire_st2_trigger))
        .route("/executions", get(list_executions).post(create_execution))
        .route("/executions/{id}", get(get_execution))
        .route("/executions/{id}/cancel", post(cancel_execution))
        .route("/executions/{id}/pause", post(pause_execution))
        .route("/executions/{id}/resume", post(resume_execution))
        .route("/executions/{id}/rerun", post(rerun_execution))
        .route("/inquiries", get(list_inquiries))
        .route("/inquiries/{id}", get(get_inquiry))
        .route("/inquiries/{id}/respond", post(respond_inquiry))
        .route("/rules", get(list_rules))
        .route("/rules/{reference}/enable", post(ops::enable_rule))
        .route("/rules/{reference}/disable", post(ops::disable_rule))
        .route("/packs", get(ops::list_packs))
        .route("/apikeys", get(ops::list_api_keys))
        .route("/apikeys/{key}", axum::routing::delete(ops::revoke_api_key))
        .route("/audit", get(ops::list_audit))
        .route("/actionalias/match", post(ops::match_alias))
        .route("/actionalias/help", get(ops::alias_help))
        .route("/aliasexecution", post(ops::execute_alias))
        .route("/actions", get(list_actions))
        .route("/stream", get(stream))
        .route("/keys", get(keys::list))
        .route(
            "/keys/{name}",
            get(keys::get).put(keys::put).delete(keys::delete),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api.merge(hooks))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.body_limit))
        .with_state(state)
}

/// Query parameters, refused with the JSON error body (axum's own `Query`
/// answers plain text).
pub(crate) struct Q<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
            .map(Q)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_query",
                    format!("the query parameters are not valid: {e}"),
                )
            })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// Comma-separated event kinds or families (`execution`, `inquiry.opened`).
    kinds: Option<String>,
    /// Only events about this execution.
    execution: Option<String>,
    /// Resume after this event id (the `Last-Event-ID` header wins).
    last_event_id: Option<i64>,
}

/// `GET /api/v1/stream`: server-sent events. Without `Last-Event-ID` it
/// starts with what happens next; with one, it first replays what came after
/// that id.
async fn stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Q(query): Q<StreamQuery>,
) -> Result<Response, ApiError> {
    let Some(hub) = &state.stream else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this server does not serve the event stream",
        ));
    };
    let header_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_last_event_id",
                        "Last-Event-ID must be an event id (a non-negative integer)",
                    )
                })?,
        ),
    };
    let filter = crate::stream::Filter {
        kinds: query
            .kinds
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        execution: query.execution,
    };
    filter
        .validate()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e))?;
    let after = header_id
        .or(query.last_event_id.filter(|id| *id >= 0))
        .unwrap_or_else(|| hub.head());
    Ok(hub.subscribe(after, filter).into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.store.count_api_keys().await {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(err) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("database unreachable: {}", short(&err.to_string())),
        )
        .into_response(),
    }
}

/// Readiness: the database answers, packs are loaded, every chat adapter is
/// connected. 503 with what is not ready otherwise.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut problems = Vec::new();
    let database = match state.engine.store.count_api_keys().await {
        Ok(_) => json!({"ok": true}),
        Err(err) => {
            problems.push("database unreachable".to_owned());
            json!({"ok": false, "detail": short(&err.to_string())})
        }
    };
    let catalog = state.engine.catalog.current();
    let packs = catalog.packs.len();
    if packs == 0 {
        problems.push("no packs loaded".to_owned());
    }
    let mut adapters = Map::new();
    for adapter in &state.adapters {
        let connected = adapter.connected();
        if !connected {
            problems.push(format!("chat adapter {} not connected", adapter.platform()));
        }
        adapters.insert(
            adapter.platform().to_owned(),
            json!({"connected": connected}),
        );
    }
    let body = json!({
        "status": if problems.is_empty() { "ready" } else { "not_ready" },
        "database": database,
        "packs": {"loaded": packs, "actions": catalog.action_refs().len(), "rules": catalog.rules().count()},
        "adapters": adapters,
    });
    if problems.is_empty() {
        Json(body).into_response()
    } else {
        let mut body = body;
        body["error"] = json!("not_ready");
        body["detail"] = json!(problems.join("; "));
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// Prometheus metrics (OpenMetrics text).
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let metrics = &state.engine.host.metrics;
    if let Some(hub) = &state.stream {
        metrics.stream_subscribers(hub.subscribers());
    }
    for adapter in &state.adapters {
        metrics.adapter_connected(adapter.platform(), adapter.connected());
    }
    match metrics.scrape(&state.engine.store).await {
        Ok(text) => (
            [(header::CONTENT_TYPE, squall_engine::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(err) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("metrics could not be read: {}", short(&err.to_string())),
        )
        .into_response(),
    }
}

/// Count a webhook, alert or trigger request by its answer. Only names the
/// catalog knows become label values (no label per random URL).
fn count_received(state: &AppState, kind: &str, source: &str, answer: &Result<Response, ApiError>) {
    let code = match answer {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status.as_u16(),
    };
    state.engine.host.metrics.received(kind, source, code);
}

fn short(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The API key from `St2-Api-Key` or `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("st2-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The caller's identity, put in request extensions by the auth layer.
#[derive(Clone)]
struct Caller(String);

async fn require_api_key(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.auth {
        request.extensions_mut().insert(Caller("anonymous".into()));
        return Ok(next.run(request).await);
    }
    let Some(key) = presented_key(request.headers()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required: send it as the St2-Api-Key header or Authorization: Bearer <key> (create one with `squall apikey create`)",
        ));
    };
    match state.keys.verify(&state.engine, key).await? {
        Some(name) => {
            request.extensions_mut().insert(Caller(name));
            Ok(next.run(request).await)
        }
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API key is not valid or has been disabled",
        )),
    }
}

/// Headers that carry credentials are never stored in a trigger payload.
const HIDDEN_HEADERS: [&str; 5] = [
    "authorization",
    "st2-api-key",
    "cookie",
    "x-auth-token",
    "proxy-authorization",
];

fn headers_payload(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        if HIDDEN_HEADERS.contains(&name) {
            continue;
        }
        map.insert(
            name.to_owned(),
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    Value::Object(map)
}

/// Parse a webhook body by its content type, as StackStorm does: JSON, form
/// fields, or text. curl's `-d '{...}'` sends JSON labelled as a form, so a
/// form body that starts with `{` or `[` is read as JSON.
fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let text = std::str::from_utf8(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is not valid UTF-8",
        )
    })?;
    let looks_json = matches!(text.trim_start().chars().next(), Some('{' | '['));
    let parse_json = || {
        serde_json::from_str::<Value>(text).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {e}"),
            )
        })
    };
    match content_type.as_str() {
        "application/x-www-form-urlencoded" if looks_json => parse_json(),
        "application/x-www-form-urlencoded" => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(text).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_form",
                    format!("the form body is not valid: {e}"),
                )
            })?;
            Ok(Value::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ))
        }
        t if t.starts_with("text/") => Ok(Value::String(text.to_owned())),
        t if t.is_empty() || t == "application/json" || t.ends_with("+json") => parse_json(),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type {other:?} is not accepted; send application/json, application/x-www-form-urlencoded or text/plain"
            ),
        )),
    }
}

async fn webhook(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = name.trim_matches('/').to_owned();
    let answer = receive_webhook(&state, name.clone(), headers, body).await;
    let known = state.engine.catalog.current().has_webhook(&name);
    count_received(
        &state,
        "webhook",
        if known { &name } else { "unknown" },
        &answer,
    );
    answer
}

async fn receive_webhook(
    state: &Arc<AppState>,
    name: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authenticate_hook(state, state.webhooks.get(&name), &headers, &body).await?;
    let catalog = state.engine.catalog.current();
    if !catalog.has_webhook(&name) {
        let known: Vec<&str> = catalog.webhook_urls().into_iter().collect();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_webhook",
            format!(
                "no enabled rule listens on webhook {name:?}; known webhooks: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let payload =
        json!({"headers": headers_payload(&headers), "body": parse_body(&headers, &body)?});
    let id = state
        .engine
        .intake
        .fire(TriggerFiring {
            trigger: triggers::WEBHOOK.into(),
            url: Some(name.clone()),
            payload,
            source: format!("webhook/{name}"),
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"trigger_instance_id": id, "trigger": triggers::WEBHOOK, "webhook": name})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct St2Trigger {
    trigger: String,
    #[serde(default)]
    payload: Value,
}

async fn fire_st2_trigger(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let answer = fire_trigger(&state, &headers, &body).await;
    count_received(&state, "trigger", "st2", &answer);
    answer
}

async fn fire_trigger(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let value = parse_body(headers, body)?;
    let request: St2Trigger = serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected {{\"trigger\": \"<type>\", \"payload\": {{...}}}}: {e}"),
        )
    })?;
    if !triggers::is_known(&request.trigger) || request.trigger == triggers::WEBHOOK {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_trigger",
            format!(
                "trigger {:?} cannot be fired here; use a pack trigger (pack.name) or one of: {}",
                request.trigger,
                triggers::builtin_names()
                    .into_iter()
                    .filter(|t| *t != triggers::WEBHOOK)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let id = state
        .engine
        .intake
        .fire(TriggerFiring {
            trigger: request.trigger.clone(),
            url: None,
            payload: request.payload,
            source: "webhook/st2".into(),
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"trigger_instance_id": id, "trigger": request.trigger})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    action: Option<String>,
    status: Option<String>,
    limit: Option<u64>,
}

async fn list_executions(
    State(state): State<Arc<AppState>>,
    Q(query): Q<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(ExecutionStatus::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "unknown status {s:?}; one of: {}",
                    ExecutionStatus::ALL.map(|s| s.as_str()).join(", ")
                ),
            )
        })?),
    };
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit must be between 1 and 1000",
        ));
    }
    let models = state
        .engine
        .store
        .list_executions(&ExecutionFilter {
            action: query.action,
            status,
            limit,
        })
        .await
        .map_err(ApiError::internal)?;
    let catalog = state.engine.catalog.current();
    Ok(Json(Value::Array(
        models.iter().map(|m| execution_view(m, &catalog)).collect(),
    )))
}

async fn get_execution(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(model) = state
        .engine
        .store
        .get_execution(&id)
        .await
        .map_err(ApiError::internal)?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no execution {id}"),
        ));
    };
    let catalog = state.engine.catalog.current();
    let view = execution_detail(&state.engine.store, &model, &catalog)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateExecution {
    action: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    /// The values are text (`name=value` from a CLI or script): cast them to
    /// the declared types instead of requiring JSON types.
    #[serde(default)]
    parameters_are_text: bool,
}

async fn create_execution(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = parse_body(&headers, &body)?;
    let request: CreateExecution = serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected {{\"action\": \"pack.name\", \"parameters\": {{...}}}}: {e}"),
        )
    })?;
    let context = ExecutionContext {
        source: "api".into(),
        user: Some(caller.0),
        ..ExecutionContext::default()
    };
    let id = state
        .engine
        .request_execution(
            &request.action,
            &request.parameters,
            if request.parameters_are_text {
                Casting::FromText
            } else {
                Casting::Strict
            },
            context,
        )
        .await?;
    let model = state
        .engine
        .store
        .get_execution(&id)
        .await
        .map_err(ApiError::internal)?;
    let catalog = state.engine.catalog.current();
    let body = model
        .map(|m| execution_view(&m, &catalog))
        .unwrap_or_else(|| json!({"id": id}));
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list_rules(State(state): State<Arc<AppState>>) -> Json<Value> {
    let catalog = state.engine.catalog.current();
    Json(Value::Array(
        catalog
            .rules()
            .map(|r| {
                json!({
                    "ref": r.reference(),
                    "description": r.description,
                    "enabled": r.enabled,
                    "type": r.kind,
                    "trigger": {"type": r.trigger_type, "parameters": r.trigger_parameters},
                    "criteria": r.criteria,
                    "action": {"ref": r.action_ref, "parameters": r.action_parameters},
                })
            })
            .collect(),
    ))
}

async fn list_actions(State(state): State<Arc<AppState>>) -> Json<Value> {
    let catalog = state.engine.catalog.current();
    let mut actions = Vec::new();
    for reference in catalog.action_refs() {
        if let Some(entry) = catalog.action(reference) {
            actions.push(json!({
                "ref": reference,
                "description": entry.action.description,
                "runner_type": entry.action.runner_type,
                "enabled": entry.action.enabled,
                "parameters": entry.params.specs().iter().map(|(name, spec)| (name.clone(), json!({
                    "schema": spec.schema,
                    "required": spec.required,
                    "default": if spec.secret { spec.default.as_ref().map(|_| json!(squall_engine::params::MASK)) } else { spec.default.clone() },
                    "secret": spec.secret,
                    "immutable": spec.immutable,
                    "description": spec.description,
                }))).collect::<Map<String, Value>>(),
            }));
        }
    }
    Json(Value::Array(actions))
}

async fn cancel_execution(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    use squall_engine::store::CancelOutcome;
    let outcome = state.engine.cancel(&id).await?;
    let (status, detail) = match outcome {
        CancelOutcome::Canceled => ("canceled", "canceled before it started".to_owned()),
        CancelOutcome::Canceling => ("canceling", "its processes are being stopped".to_owned()),
        CancelOutcome::AlreadyFinished(s) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_finished",
                format!("execution {id} already finished ({s})"),
            ));
        }
        CancelOutcome::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no execution {id}"),
            ));
        }
    };
    audit_control(&state, &caller, "execution.cancel", &id).await;
    Ok(Json(json!({"id": id, "status": status, "detail": detail})))
}

async fn audit_control(state: &AppState, caller: &Caller, kind: &str, id: &str) {
    state
        .engine
        .record_control(&caller.0, kind, id, "api")
        .await;
}

fn control_reply(
    id: &str,
    verb: &str,
    outcome: squall_engine::engine::ControlOutcome,
) -> Result<Json<Value>, ApiError> {
    match outcome {
        squall_engine::engine::ControlOutcome::Done(status) => {
            Ok(Json(json!({"id": id, "status": status})))
        }
        squall_engine::engine::ControlOutcome::NotApplicable(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("cannot {verb} workflow {id} while it is {status}"),
        )),
    }
}

async fn pause_execution(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let outcome = state.engine.pause(&id).await?;
    audit_control(&state, &caller, "execution.pause", &id).await;
    control_reply(&id, "pause", outcome)
}

async fn resume_execution(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let outcome = state.engine.resume(&id).await?;
    audit_control(&state, &caller, "execution.resume", &id).await;
    control_reply(&id, "resume", outcome)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RerunRequest {
    /// Workflows only: keep the tasks that succeeded, run the failed ones again.
    #[serde(default)]
    failed_only: bool,
}

async fn rerun_execution(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RerunRequest = if body.is_empty() {
        RerunRequest::default()
    } else {
        serde_json::from_value(parse_body(&headers, &body)?).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected {{\"failed_only\": true|false}}: {e}"),
            )
        })?
    };
    let caller_for_audit = caller.clone();
    let context = ExecutionContext {
        source: "api".into(),
        user: Some(caller.0),
        ..ExecutionContext::default()
    };
    let new_id = state
        .engine
        .rerun_with(&id, context, request.failed_only)
        .await?;
    audit_control(&state, &caller_for_audit, "execution.rerun", &id).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": new_id, "rerun_of": id})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct InquiryQuery {
    status: Option<String>,
    limit: Option<u64>,
}

async fn list_inquiries(
    State(state): State<Arc<AppState>>,
    Q(query): Q<InquiryQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = query.status.as_deref().unwrap_or("pending");
    let status = (status != "all").then_some(status);
    let list = state
        .engine
        .store
        .list_inquiries(status, query.limit.unwrap_or(50).clamp(1, 1000))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Value::Array(
        list.iter()
            .map(|i| squall_engine::inquiry::view(i, None))
            .collect(),
    )))
}

async fn get_inquiry(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let inq = state
        .engine
        .store
        .get_inquiry(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no inquiry {id}"),
            )
        })?;
    let votes = state
        .engine
        .store
        .inquiry_votes(&id)
        .await
        .map_err(ApiError::internal)?;
    let view = squall_engine::inquiry::view(&inq, Some(&votes));
    Ok(Json(view))
}

/// Respond to an inquiry: the body is the response (for the default schema
/// `{"approved": true}` or `{"approved": false, "reason": "..."}`). The API
/// key acts as an admin.
async fn respond_inquiry(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    use squall_engine::inquiry::{Vote, VoteOutcome, Voter};
    let response = parse_body(&headers, &body)?;
    if !response.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the response must be a JSON object, e.g. {\"approved\": true}",
        ));
    }
    let voter = Voter {
        identity: caller.0.clone(),
        roles: vec!["admin".into()],
        may_respond: true,
    };
    let outcome = state
        .engine
        .vote(&id, &voter, Vote::Approve(Some(response)))
        .await?;
    state.engine.host.inquiries.notify_waiters();
    match outcome {
        VoteOutcome::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no inquiry {id}"),
        )),
        VoteOutcome::Closed(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "closed",
            format!("inquiry {id} is already {status}"),
        )),
        VoteOutcome::Refused(reason) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", reason))
        }
        VoteOutcome::Invalid(reason) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_response",
            reason,
        )),
        VoteOutcome::Recorded {
            approvals,
            required,
        }
        | VoteOutcome::Withdrawn {
            approvals,
            required,
        } => Ok(Json(
            json!({"id": id, "status": "pending", "approvals": approvals, "required": required}),
        )),
        VoteOutcome::Decided(d) => Ok(Json(
            json!({"id": id, "status": d.status, "decided_by": d.decided_by}),
        )),
    }
}

/// Authenticate a webhook or alert request: by signature when `auth` says
/// so, else by API key. Nothing is stored for a request that fails.
async fn authenticate_hook(
    state: &AppState,
    auth: Option<&HookAuth>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<String, ApiError> {
    match auth {
        Some(auth) if auth.auth != Scheme::ApiKey => {
            let now = chrono::Utc::now().timestamp();
            let refuse = |reason: String| {
                tracing::warn!(%reason, "refused a webhook with a bad signature");
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason)
            };
            match signatures::verify(auth, headers, body, now, &state.engine.store).await {
                Ok(_) => Ok("signed-webhook".into()),
                Err(signatures::Refusal::Unauthorized(reason)) => Err(refuse(reason)),
                Err(signatures::Refusal::Store(err)) => Err(ApiError::internal(err)),
            }
        }
        _ => {
            if !state.auth {
                return Ok("anonymous".into());
            }
            let Some(key) = presented_key(headers) else {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "an API key is required: send it as the St2-Api-Key header or Authorization: Bearer <key> (or configure a signature scheme for this webhook)",
                ));
            };
            state.keys.verify(&state.engine, key).await?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the API key is not valid or has been disabled",
                )
            })
        }
    }
}

/// `POST /api/v1/alerts/{source}`: one `squall.alert` trigger instance per
/// alert in the payload, repeats inside the de-duplication window dropped.
async fn alert(
    State(state): State<Arc<AppState>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let answer = receive_alert(&state, &source, &headers, &body).await;
    let known = squall_adapters::alerts::SOURCES.contains(&source.as_str());
    count_received(
        &state,
        "alert",
        if known { &source } else { "unknown" },
        &answer,
    );
    answer
}

async fn receive_alert(
    state: &AppState,
    source: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if !squall_adapters::alerts::SOURCES.contains(&source) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!(
                "no alert receiver {source:?}; receivers: {}",
                squall_adapters::alerts::SOURCES.join(", ")
            ),
        ));
    }
    authenticate_hook(state, state.alerts.receivers.get(source), headers, body).await?;
    let value = parse_body(headers, body)?;
    let alerts = squall_adapters::alerts::normalize(source, &value, &state.alerts.generic)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_alert", e.0))?;
    let now = squall_engine::execution::now_ms();
    let (fresh, repeats): (Vec<_>, Vec<_>) = match state.dedup.lock() {
        Ok(mut dedup) => alerts.into_iter().partition(|a| dedup.admit(a, now)),
        Err(_) => (alerts, Vec::new()),
    };
    let firings: Vec<TriggerFiring> = fresh
        .iter()
        .map(|a| TriggerFiring {
            trigger: triggers::ALERT.into(),
            url: None,
            payload: a.to_payload(),
            source: format!("alerts/{source}"),
        })
        .collect();
    let ids = state.engine.intake.fire_many(firings).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "trigger": triggers::ALERT,
            "trigger_instance_ids": ids,
            "alerts": fresh.len() + repeats.len(),
            "deduplicated": repeats.len(),
        })),
    )
        .into_response())
}
