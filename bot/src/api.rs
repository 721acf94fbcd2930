//! The HTTP API (axum): webhooks, executions, rules, health.
//!
//! Handlers return `Result<_, ApiError>`; errors become `{error, detail}` JSON
//! and never carry internals (those are logged with a correlation id).

pub mod doc;
mod keys;
mod ops;

pub use ops::pack_views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::signatures::{self, HookAuth, Scheme};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use squall_adapters::alerts::Dedup;
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use doc::ErrorBody;
use squall_engine::describe::{
    ExecutionDetail, ExecutionView, execution_detail_summary, execution_summary,
};
use squall_engine::execution::{ExecutionContext, ExecutionStatus};
use squall_engine::inquiry::InquiryView;
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
    /// The OpenAPI document, serialized once when the router is built.
    openapi: OnceLock<Bytes>,
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
            openapi: OnceLock::new(),
        })
    }

    /// The chat adapters whose connection `/readyz` reports.
    pub fn with_adapters(
        self: Arc<Self>,
        adapters: Vec<Arc<dyn squall_engine::chat::ChatAdapter>>,
    ) -> Arc<AppState> {
        self.with(|state| state.adapters = adapters)
    }

    /// Change a state that is not shared yet (the builder steps below).
    fn with(self: Arc<Self>, change: impl FnOnce(&mut AppState)) -> Arc<AppState> {
        let mut state = Arc::try_unwrap(self).unwrap_or_else(|_| unreachable!("not shared yet"));
        change(&mut state);
        Arc::new(state)
    }

    /// Serve the live event stream from `hub`.
    pub fn with_stream(self: Arc<Self>, hub: Arc<crate::stream::StreamHub>) -> Arc<AppState> {
        self.with(|state| state.stream = Some(hub))
    }

    /// The RBAC model API keys are checked against (`api:<key name>`).
    pub fn with_rbac(self: Arc<Self>, rbac: Arc<squall_engine::rbac::Rbac>) -> Arc<AppState> {
        self.with(|state| state.rbac = rbac)
    }

    /// Webhook and alert receiver settings (authentication, de-duplication).
    pub fn with_hooks(
        self: Arc<Self>,
        webhooks: std::collections::BTreeMap<String, HookAuth>,
        alerts: crate::config::AlertsSection,
    ) -> Arc<AppState> {
        self.with(|state| {
            state.dedup = Mutex::new(Dedup::new(Duration::from_secs(alerts.dedup_seconds)));
            state.webhooks = webhooks;
            state.alerts = alerts;
        })
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
            EngineError::Datastore(_) => {
                Self::new(StatusCode::BAD_REQUEST, "datastore", err.to_string())
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

/// The document's fixed parts; the paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "squall",
        description = "squall's HTTP API: executions, rules, packs, inquiries, the datastore, the event stream, webhooks and alert receivers. Errors answer `{\"error\", \"detail\"}` JSON.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(webhook),
    tags(
        (name = "executions"), (name = "inquiries"), (name = "rules"), (name = "packs"),
        (name = "aliases"), (name = "keys"), (name = "apikeys"), (name = "audit"),
        (name = "triggers"), (name = "stream"), (name = "health")
    )
)]
struct ApiDoc;

/// The whole HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, mut openapi) = documented_routes(&state).split_for_parts();
    doc::Shared.modify(&mut openapi);
    let json = openapi.to_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document did not serialize");
        "{}".to_owned()
    });
    let _ = state.openapi.set(Bytes::from(json));
    router
        .fallback(not_found)
        .layer(middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(state.body_limit))
        .with_state(state)
}

fn documented_routes(state: &Arc<AppState>) -> OpenApiRouter<Arc<AppState>> {
    // Webhooks and alert receivers authenticate per sender (API key or
    // signature over the raw body), so they sit outside the API-key layer.
    // A webhook name may hold slashes, which OpenAPI cannot say: the route
    // is `{*name}`, its entry `{name}` (ApiDoc).
    let public = OpenApiRouter::new()
        .route("/webhooks/{*name}", post(webhook))
        .routes(routes!(alert))
        .routes(routes!(openapi_document));
    let api = OpenApiRouter::new()
        .routes(routes!(fire_st2_trigger))
        .routes(routes!(list_executions, create_execution))
        .routes(routes!(get_execution))
        .routes(routes!(cancel_execution))
        .routes(routes!(pause_execution))
        .routes(routes!(resume_execution))
        .routes(routes!(rerun_execution))
        .routes(routes!(list_inquiries))
        .routes(routes!(get_inquiry))
        .routes(routes!(respond_inquiry))
        .routes(routes!(list_rules))
        .routes(routes!(ops::enable_rule))
        .routes(routes!(ops::disable_rule))
        .routes(routes!(ops::list_packs))
        .routes(routes!(ops::list_api_keys))
        .routes(routes!(ops::revoke_api_key))
        .routes(routes!(ops::list_audit))
        .routes(routes!(ops::match_alias))
        .routes(routes!(ops::alias_help))
        .routes(routes!(ops::execute_alias))
        .routes(routes!(list_actions))
        .routes(routes!(stream))
        .routes(routes!(keys::list))
        .routes(routes!(keys::get, keys::put, keys::delete))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .nest("/api/v1", api.merge(public))
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object))
)]
async fn openapi_document(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.get().cloned().unwrap_or_default(),
    )
        .into_response()
}

/// Error answers that did not come from a handler (axum's own rejections: a
/// body over the limit, a method a route does not take, ...) get the same
/// JSON body as every other error.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let (error, detail) = match status {
        // axum adds the `Allow` header after this layer.
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not take that method; the Allow header lists those it takes"
                .to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the body is larger than the server's limit (api.body_limit_bytes)".to_owned(),
        ),
        StatusCode::BAD_REQUEST => ("bad_request", text),
        StatusCode::NOT_FOUND => ("not_found", text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", text),
        s if s.is_client_error() => ("bad_request", text),
        _ => ("internal_error", text),
    };
    let detail = if detail.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        detail
    };
    let mut answer = ApiError::new(status, error, detail).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        answer.headers_mut().insert(header::ALLOW, allow.clone());
    }
    answer
}

/// A list's `limit` query parameter: `default` when absent, else 1 to `max`.
pub(crate) fn check_limit(limit: Option<u64>, default: u64, max: u64) -> Result<u64, ApiError> {
    match limit.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("limit must be between 1 and {max}"),
        )),
    }
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// Comma-separated event kinds or families (`execution`, `inquiry.opened`).
    kinds: Option<String>,
    /// Only events about this execution.
    execution: Option<String>,
    /// Resume after this event id (the `Last-Event-ID` header wins).
    last_event_id: Option<u64>,
}

/// `GET /api/v1/stream`: server-sent events. Without `Last-Event-ID` it
/// starts with what happens next; with one, it first replays what came after
/// that id.
#[utoipa::path(
    get,
    path = "/stream",
    tag = "stream",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id.")
    ),
    responses(
        (status = 200, description = "Server-sent events: `id`, `event` (the kind) and JSON `data`.", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad filter or `Last-Event-ID`.", body = ErrorBody),
        (status = 503, description = "This server does not serve the stream.", body = ErrorBody)
    )
)]
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
        .or(query.last_event_id.and_then(|id| i64::try_from(id).ok()))
        .unwrap_or_else(|| hub.head());
    Ok(hub.subscribe(after, filter).into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// Liveness: the process answers and its database does.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "Alive.", body = doc::Health),
        (status = 503, description = "The database does not answer.", body = ErrorBody)
    )
)]
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.store.count_api_keys().await {
        Ok(_) => Json(doc::Health {
            status: "ok".into(),
        })
        .into_response(),
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
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready.", body = doc::Readiness),
        (status = 503, description = "Not ready; `detail` says what is not.", body = doc::Readiness)
    )
)]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let mut problems = Vec::new();
    let database = match state.engine.store.count_api_keys().await {
        Ok(_) => doc::DatabaseState {
            ok: true,
            detail: None,
        },
        Err(err) => {
            problems.push("database unreachable".to_owned());
            doc::DatabaseState {
                ok: false,
                detail: Some(short(&err.to_string())),
            }
        }
    };
    let catalog = state.engine.catalog.current();
    let packs = catalog.packs.len();
    if packs == 0 {
        problems.push("no packs loaded".to_owned());
    }
    let mut adapters = std::collections::BTreeMap::new();
    for adapter in &state.adapters {
        let connected = adapter.connected();
        if !connected {
            problems.push(format!("chat adapter {} not connected", adapter.platform()));
        }
        adapters.insert(
            adapter.platform().to_owned(),
            doc::AdapterState { connected },
        );
    }
    let ready = problems.is_empty();
    let body = doc::Readiness {
        status: if ready { "ready" } else { "not_ready" }.into(),
        database,
        packs: doc::PacksState {
            loaded: packs,
            actions: catalog.action_refs().len(),
            rules: catalog.rules().count(),
        },
        adapters,
        error: (!ready).then(|| "not_ready".to_owned()),
        detail: (!ready).then(|| problems.join("; ")),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Every `squall_` metric.", content_type = "application/openmetrics-text", body = String),
        (status = 503, description = "The store could not be read.", body = ErrorBody)
    )
)]
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

/// A JSON object into `T`, refusing anything else (serde would read a
/// struct from an array too). `expected` shows the caller the right shape.
pub(crate) fn parse_object<T: serde::de::DeserializeOwned>(
    value: Value,
    expected: &str,
) -> Result<T, ApiError> {
    let refuse = |reason: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected {expected}: {reason}"),
        )
    };
    if !value.is_object() {
        return Err(refuse(format!(
            "the body is {}, not an object",
            json_kind(&value)
        )));
    }
    serde_json::from_value(value).map_err(|e| refuse(e.to_string()))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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

/// `POST /api/v1/webhooks/{name}`: a `core.st2.webhook` trigger instance for
/// the rules listening on `name` (which may hold slashes).
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{name}",
    tag = "triggers",
    params(("name" = String, Path, description = "The webhook's `url` in its rule.")),
    request_body(description = "Any JSON, a form or text (or nothing); stored as the payload's `body`.", content = Option<Value>, content_type = "application/json"),
    security((), ("api_key" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "Stored; rules run from it.", body = doc::WebhookAccepted),
        (status = 401, description = "No valid API key or signature.", body = ErrorBody),
        (status = 404, description = "No enabled rule listens on this webhook.", body = ErrorBody),
        (status = 503, description = "Intake is full or closing; retry.", body = ErrorBody)
    )
)]
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
        Json(doc::WebhookAccepted {
            trigger_instance_id: id,
            trigger: triggers::WEBHOOK.into(),
            webhook: name,
        }),
    )
        .into_response())
}

/// A trigger to fire.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct St2Trigger {
    /// A pack trigger (`pack.name`) or a built-in one.
    trigger: String,
    #[serde(default)]
    payload: Value,
}

/// `POST /api/v1/webhooks/st2`: fire any trigger with a payload, as st2's
/// own `/webhooks/st2` does.
#[utoipa::path(
    post,
    path = "/webhooks/st2",
    tag = "triggers",
    request_body = St2Trigger,
    responses(
        (status = 202, description = "Stored; rules run from it.", body = doc::TriggerAccepted),
        (status = 404, description = "No such trigger.", body = ErrorBody),
        (status = 503, description = "Intake is full or closing; retry.", body = ErrorBody)
    )
)]
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
    let request: St2Trigger = parse_object(
        parse_body(headers, body)?,
        r#"{"trigger": "<type>", "payload": {...}}"#,
    )?;
    if !triggers::is_known(&request.trigger) || request.trigger == triggers::WEBHOOK {
        // An unknown trigger is a missing resource; the webhook trigger is
        // known but fired only through `/webhooks/{name}`.
        let status = if request.trigger == triggers::WEBHOOK {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::NOT_FOUND
        };
        return Err(ApiError::new(
            status,
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
        Json(doc::TriggerAccepted {
            trigger_instance_id: id,
            trigger: request.trigger,
        }),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this action (`pack.name`).
    action: Option<String>,
    /// Only this status.
    status: Option<ExecutionStatus>,
    /// At most this many, newest first (1 to 1000; 50 when absent).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// `GET /api/v1/executions`: executions, newest first.
#[utoipa::path(
    get,
    path = "/executions",
    tag = "executions",
    params(ListQuery),
    responses((status = 200, description = "Executions, secrets masked.", body = Vec<ExecutionView>))
)]
async fn list_executions(
    State(state): State<Arc<AppState>>,
    Q(query): Q<ListQuery>,
) -> Result<Json<Vec<ExecutionView>>, ApiError> {
    let status = query.status;
    let limit = check_limit(query.limit, 50, 1000)?;
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
    Ok(Json(
        models
            .iter()
            .map(|m| execution_summary(m, &catalog))
            .collect(),
    ))
}

/// `GET /api/v1/executions/{id}`: one execution with what caused it.
#[utoipa::path(
    get,
    path = "/executions/{id}",
    tag = "executions",
    params(("id" = String, Path, description = "Execution id.")),
    responses(
        (status = 200, description = "The execution, secrets masked.", body = ExecutionDetail),
        (status = 404, description = "No such execution.", body = ErrorBody)
    )
)]
async fn get_execution(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ExecutionDetail>, ApiError> {
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
    let view = execution_detail_summary(&state.engine.store, &model, &catalog)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(view))
}

/// An action to run.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateExecution {
    /// `pack.name`.
    action: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    /// The values are text (`name=value` from a CLI or script): cast them to
    /// the declared types instead of requiring JSON types.
    #[serde(default)]
    parameters_are_text: bool,
}

/// `POST /api/v1/executions`: run an action.
#[utoipa::path(
    post,
    path = "/executions",
    tag = "executions",
    request_body = CreateExecution,
    responses(
        (status = 201, description = "Requested; it runs when a worker claims it.", body = ExecutionView),
        (status = 404, description = "No such action.", body = ErrorBody),
        (status = 503, description = "Intake is full or closing; retry.", body = ErrorBody)
    )
)]
async fn create_execution(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateExecution = parse_object(
        parse_body(&headers, &body)?,
        r#"{"action": "pack.name", "parameters": {...}}"#,
    )?;
    if state
        .engine
        .catalog
        .current()
        .action(&request.action)
        .is_none()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_action",
            format!(
                "no action named {:?}; GET /api/v1/actions lists them",
                request.action
            ),
        ));
    }
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
    let Some(model) = model else {
        return Err(ApiError::internal(format!(
            "execution {id} was requested but cannot be read back"
        )));
    };
    let catalog = state.engine.catalog.current();
    Ok((
        StatusCode::CREATED,
        Json(execution_summary(&model, &catalog)),
    )
        .into_response())
}

/// `GET /api/v1/rules`: the loaded rules.
#[utoipa::path(
    get,
    path = "/rules",
    tag = "rules",
    responses((status = 200, description = "Every loaded rule.", body = Vec<doc::RuleView>))
)]
async fn list_rules(State(state): State<Arc<AppState>>) -> Json<Vec<doc::RuleView>> {
    let catalog = state.engine.catalog.current();
    Json(
        catalog
            .rules()
            .map(|r| doc::RuleView {
                reference: r.reference(),
                description: r.description.clone(),
                enabled: r.enabled,
                kind: r.kind,
                trigger: doc::RuleTrigger {
                    kind: r.trigger_type.clone(),
                    parameters: r.trigger_parameters.clone(),
                },
                criteria: r.criteria.clone(),
                action: doc::RuleAction {
                    reference: r.action_ref.clone(),
                    parameters: r.action_parameters.clone(),
                },
            })
            .collect(),
    )
}

/// `GET /api/v1/actions`: the loaded actions and their parameters.
#[utoipa::path(
    get,
    path = "/actions",
    tag = "packs",
    responses((status = 200, description = "Every loaded action; secret defaults masked.", body = Vec<doc::ActionView>))
)]
async fn list_actions(State(state): State<Arc<AppState>>) -> Json<Vec<doc::ActionView>> {
    let catalog = state.engine.catalog.current();
    let mut actions = Vec::new();
    for reference in catalog.action_refs() {
        if let Some(entry) = catalog.action(reference) {
            let parameters = entry
                .params
                .specs()
                .iter()
                .map(|(name, spec)| {
                    let default = if spec.secret {
                        spec.default
                            .as_ref()
                            .map(|_| json!(squall_engine::params::MASK))
                    } else {
                        spec.default.clone()
                    };
                    let view = doc::ParameterView {
                        schema: spec.schema.clone(),
                        required: spec.required,
                        default,
                        secret: spec.secret,
                        immutable: spec.immutable,
                        description: spec.description.clone(),
                    };
                    (name.clone(), view)
                })
                .collect();
            actions.push(doc::ActionView {
                reference: reference.to_owned(),
                description: entry.action.description.clone(),
                runner_type: entry.action.runner_type.clone(),
                enabled: entry.action.enabled,
                parameters,
            });
        }
    }
    Json(actions)
}

/// `POST /api/v1/executions/{id}/cancel`.
#[utoipa::path(
    post,
    path = "/executions/{id}/cancel",
    tag = "executions",
    params(("id" = String, Path, description = "Execution id.")),
    responses(
        (status = 200, description = "Canceled, or being canceled (its processes are stopped).", body = doc::ControlAnswer),
        (status = 404, description = "No such execution.", body = ErrorBody),
        (status = 409, description = "It already finished.", body = ErrorBody)
    )
)]
async fn cancel_execution(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<doc::ControlAnswer>, ApiError> {
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
    Ok(Json(doc::ControlAnswer {
        id,
        status: status.into(),
        detail: Some(detail),
    }))
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
) -> Result<Json<doc::ControlAnswer>, ApiError> {
    match outcome {
        squall_engine::engine::ControlOutcome::Done(status) => Ok(Json(doc::ControlAnswer {
            id: id.to_owned(),
            status,
            detail: None,
        })),
        squall_engine::engine::ControlOutcome::NotApplicable(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("cannot {verb} workflow {id} while it is {status}"),
        )),
    }
}

/// `POST /api/v1/executions/{id}/pause`: workflows only.
#[utoipa::path(
    post,
    path = "/executions/{id}/pause",
    tag = "executions",
    params(("id" = String, Path, description = "Execution id.")),
    responses(
        (status = 200, description = "Pausing: running tasks finish, no new ones start.", body = doc::ControlAnswer),
        (status = 404, description = "No such execution.", body = ErrorBody),
        (status = 409, description = "Not a workflow, or not in a state that can pause.", body = ErrorBody)
    )
)]
async fn pause_execution(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<doc::ControlAnswer>, ApiError> {
    let outcome = state.engine.pause(&id).await?;
    audit_control(&state, &caller, "execution.pause", &id).await;
    control_reply(&id, "pause", outcome)
}

/// `POST /api/v1/executions/{id}/resume`: workflows only.
#[utoipa::path(
    post,
    path = "/executions/{id}/resume",
    tag = "executions",
    params(("id" = String, Path, description = "Execution id.")),
    responses(
        (status = 200, description = "Running again.", body = doc::ControlAnswer),
        (status = 404, description = "No such execution.", body = ErrorBody),
        (status = 409, description = "Not a workflow, or not paused.", body = ErrorBody)
    )
)]
async fn resume_execution(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<doc::ControlAnswer>, ApiError> {
    let outcome = state.engine.resume(&id).await?;
    audit_control(&state, &caller, "execution.resume", &id).await;
    control_reply(&id, "resume", outcome)
}

/// How to run an execution again.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RerunRequest {
    /// Workflows only: keep the tasks that succeeded, run the failed ones again.
    #[serde(default)]
    failed_only: bool,
}

/// `POST /api/v1/executions/{id}/rerun`: run it again with the same
/// parameters (the body is optional).
#[utoipa::path(
    post,
    path = "/executions/{id}/rerun",
    tag = "executions",
    params(("id" = String, Path, description = "Execution id.")),
    request_body(content = Option<RerunRequest>, description = "Optional."),
    responses(
        (status = 201, description = "The new execution.", body = doc::RerunAnswer),
        (status = 404, description = "No such execution.", body = ErrorBody),
        (status = 409, description = "`failed_only` on an execution that is not a workflow.", body = ErrorBody),
        (status = 503, description = "Intake is full or closing; retry.", body = ErrorBody)
    )
)]
async fn rerun_execution(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RerunRequest = match parse_body(&headers, &body)? {
        Value::Null => RerunRequest::default(),
        value => parse_object(value, r#"{"failed_only": true|false}"#)?,
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
        Json(doc::RerunAnswer {
            id: new_id,
            rerun_of: id,
        }),
    )
        .into_response())
}

/// Which inquiries to list.
#[derive(Deserialize, ToSchema, Clone, Copy, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum InquiryStatus {
    #[default]
    Pending,
    Approved,
    Denied,
    Expired,
    Canceled,
    All,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct InquiryQuery {
    /// Only inquiries in this state (`pending` when absent; `all` for every one).
    status: Option<InquiryStatus>,
    /// At most this many, newest first (1 to 1000; 50 when absent).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// `GET /api/v1/inquiries`: approvals asked for.
#[utoipa::path(
    get,
    path = "/inquiries",
    tag = "inquiries",
    params(InquiryQuery),
    responses((status = 200, description = "Inquiries, newest first.", body = Vec<InquiryView>))
)]
async fn list_inquiries(
    State(state): State<Arc<AppState>>,
    Q(query): Q<InquiryQuery>,
) -> Result<Json<Vec<InquiryView>>, ApiError> {
    let status = match query.status.unwrap_or_default() {
        InquiryStatus::Pending => Some("pending"),
        InquiryStatus::Approved => Some("approved"),
        InquiryStatus::Denied => Some("denied"),
        InquiryStatus::Expired => Some("expired"),
        InquiryStatus::Canceled => Some("canceled"),
        InquiryStatus::All => None,
    };
    let limit = check_limit(query.limit, 50, 1000)?;
    let list = state
        .engine
        .store
        .list_inquiries(status, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        list.iter()
            .map(|i| squall_engine::inquiry::summary(i, None))
            .collect(),
    ))
}

/// `GET /api/v1/inquiries/{id}`: one inquiry with its votes.
#[utoipa::path(
    get,
    path = "/inquiries/{id}",
    tag = "inquiries",
    params(("id" = String, Path, description = "Inquiry id.")),
    responses(
        (status = 200, description = "The inquiry and its votes.", body = InquiryView),
        (status = 404, description = "No such inquiry.", body = ErrorBody)
    )
)]
async fn get_inquiry(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<InquiryView>, ApiError> {
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
    Ok(Json(squall_engine::inquiry::summary(&inq, Some(&votes))))
}

/// Respond to an inquiry: the body is the response (for the default schema
/// `{"approved": true}` or `{"approved": false, "reason": "..."}`). The API
/// key acts as an admin.
#[utoipa::path(
    post,
    path = "/inquiries/{id}/respond",
    tag = "inquiries",
    params(("id" = String, Path, description = "Inquiry id.")),
    request_body(content = Object, description = "The response; it must satisfy the inquiry's schema."),
    responses(
        (status = 200, description = "Recorded (`pending` while more approvals are needed) or decided.", body = doc::VoteAnswer),
        (status = 403, description = "This caller may not respond.", body = ErrorBody),
        (status = 404, description = "No such inquiry.", body = ErrorBody),
        (status = 409, description = "Already decided.", body = ErrorBody)
    )
)]
async fn respond_inquiry(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<doc::VoteAnswer>, ApiError> {
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
        } => Ok(Json(doc::VoteAnswer {
            id,
            status: "pending".into(),
            approvals: Some(approvals),
            required: Some(required),
            decided_by: None,
        })),
        VoteOutcome::Decided(d) => Ok(Json(doc::VoteAnswer {
            id,
            status: d.status,
            decided_by: Some(d.decided_by),
            approvals: None,
            required: None,
        })),
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
#[utoipa::path(
    post,
    path = "/alerts/{source}",
    tag = "triggers",
    params(("source" = String, Path, description = "`alertmanager`, `grafana`, `pagerduty` or `generic`.")),
    request_body(description = "The sender's own webhook payload.", content = Value, content_type = "application/json"),
    security((), ("api_key" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "Stored, one trigger instance per fresh alert.", body = doc::AlertsAccepted),
        (status = 401, description = "No valid API key or signature.", body = ErrorBody),
        (status = 404, description = "No such receiver.", body = ErrorBody),
        (status = 503, description = "Intake is full or closing; retry.", body = ErrorBody)
    )
)]
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
        Json(doc::AlertsAccepted {
            trigger: triggers::ALERT.into(),
            trigger_instance_ids: ids,
            alerts: fresh.len() + repeats.len(),
            deduplicated: repeats.len(),
        }),
    )
        .into_response())
}
