//! `/api/v1/keys`: the key-value datastore.
//!
//! Any valid API key reads and writes pairs (as it does everything else in
//! the API). Seeing a secret decrypted (`?decrypt=true`) also needs the grant
//! `key:decrypt` for the key's identity `api:<key name>` in `rbac/`
//! (`api:anonymous` when the API runs without authentication). Every write
//! and every decrypting read leaves an audit row; values never enter it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use squall_engine::datastore::{KvError, KvSet, KvView, SYSTEM};
use squall_engine::rbac::Permission;
use squall_engine::store::AuditEntry;

use super::doc::ErrorBody;
use super::{ApiError, AppState, Caller, Q, check_limit, parse_body, parse_object};

impl From<KvError> for ApiError {
    fn from(err: KvError) -> Self {
        match err {
            KvError::Invalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", err.to_string())
            }
            KvError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string())
            }
            KvError::Key(_) | KvError::Store(_) => ApiError::internal(err),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyQuery {
    /// `system` (when absent for one key; every scope when listing) or
    /// `user:<name>`.
    #[param(pattern = "^(system|user:.{1,255})$")]
    scope: Option<String>,
    /// Show secrets decrypted (needs `key:decrypt`).
    #[serde(default)]
    decrypt: bool,
    /// Listing: only names starting with this.
    prefix: Option<String>,
    /// Listing: at most this many (1 to 10000; 1000 when absent).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u64>,
}

/// A value to store.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PutKey {
    /// Any JSON value.
    value: Value,
    /// Encrypt it at rest and mask it everywhere.
    #[serde(default)]
    secret: bool,
    /// Seconds to live.
    #[schema(minimum = 1, maximum = 3_155_760_000_u64)]
    #[serde(default, deserialize_with = "whole_seconds")]
    ttl: Option<u64>,
    /// `system` (when absent) or `user:<name>`.
    #[schema(pattern = "^(system|user:.{1,255})$")]
    scope: Option<String>,
}

/// A whole number of seconds, written as JSON writes it: `60` or `60.0`
/// (JSON has one number type; `integer` in a schema admits both).
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= 1e15 => Ok(Some(f as u64)),
        _ => Err(D::Error::custom(format!(
            "ttl must be a whole, non-negative number of seconds, not {number}"
        ))),
    }
}

fn check_decrypt(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    let identity = format!("api:{}", caller.0);
    state
        .rbac
        .check(&identity, &Permission::KeyDecrypt)
        .map(|_| ())
        .map_err(|denied| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{denied}; grant it to the API key's identity in rbac/"),
            )
        })
}

async fn audit(state: &AppState, caller: &Caller, kind: &str, scope: &str, name: &str) {
    let entry = AuditEntry {
        actor: caller.0.clone(),
        kind: kind.into(),
        subject: format!("key:{scope}/{name}"),
        detail: json!({"source": "api"}),
    };
    if let Err(e) = state.engine.store.append_audit(&[entry]).await {
        tracing::warn!(error = %e, "writing an audit row failed");
    }
}

/// `GET /api/v1/keys`: pairs, secrets masked unless decrypted.
#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    params(KeyQuery),
    responses(
        (status = 200, description = "Pairs.", body = Vec<KvView>),
        (status = 403, description = "`decrypt` without `key:decrypt`.", body = ErrorBody)
    )
)]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Q(query): Q<KeyQuery>,
) -> Result<Json<Vec<KvView>>, ApiError> {
    if query.decrypt {
        check_decrypt(&state, &caller)?;
    }
    let limit = check_limit(query.limit, 1000, 10_000)?;
    let pairs = state
        .engine
        .datastore
        .list(
            query.scope.as_deref(),
            query.prefix.as_deref(),
            query.decrypt,
            limit,
        )
        .await?;
    if query.decrypt && pairs.iter().any(|p| p.decrypted) {
        let scope = query.scope.as_deref().unwrap_or("*");
        let prefix = query.prefix.as_deref().unwrap_or("");
        audit(&state, &caller, "key.decrypt", scope, &format!("{prefix}*")).await;
    }
    Ok(Json(pairs))
}

/// `GET /api/v1/keys/{name}`.
#[utoipa::path(
    get,
    path = "/keys/{name}",
    tag = "keys",
    params(("name" = String, Path, description = "The key's name.", pattern = r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$", max_length = 255), KeyQuery),
    responses(
        (status = 200, description = "The pair.", body = KvView),
        (status = 403, description = "`decrypt` without `key:decrypt`.", body = ErrorBody),
        (status = 404, description = "No such key in that scope.", body = ErrorBody)
    )
)]
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Q(query): Q<KeyQuery>,
) -> Result<Json<KvView>, ApiError> {
    if query.decrypt {
        check_decrypt(&state, &caller)?;
    }
    let scope = query.scope.unwrap_or_else(|| SYSTEM.into());
    let pair = state
        .engine
        .datastore
        .get(&scope, &name, query.decrypt)
        .await?;
    if pair.decrypted {
        audit(&state, &caller, "key.decrypt", &scope, &name).await;
    }
    Ok(Json(pair))
}

/// `PUT /api/v1/keys/{name}`: set a value.
#[utoipa::path(
    put,
    path = "/keys/{name}",
    tag = "keys",
    params(("name" = String, Path, description = "The key's name.", pattern = r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$", max_length = 255)),
    request_body = PutKey,
    responses((status = 200, description = "Stored (a secret masked).", body = KvView))
)]
pub(super) async fn put(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: PutKey = parse_object(
        parse_body(&headers, &body)?,
        r#"{"value": <JSON>, "secret": false, "ttl": <seconds>, "scope": "system" | "user:<name>"}"#,
    )?;
    let scope = request.scope.unwrap_or_else(|| SYSTEM.into());
    let pair = state
        .engine
        .datastore
        .set(&KvSet {
            scope: scope.clone(),
            name: name.clone(),
            value: request.value,
            secret: request.secret,
            ttl: request.ttl,
        })
        .await?;
    audit(&state, &caller, "key.set", &scope, &name).await;
    Ok((StatusCode::OK, Json(pair)).into_response())
}

/// `DELETE /api/v1/keys/{name}`.
#[utoipa::path(
    delete,
    path = "/keys/{name}",
    tag = "keys",
    params(("name" = String, Path, description = "The key's name.", pattern = r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$", max_length = 255), KeyQuery),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such key in that scope.", body = ErrorBody)
    )
)]
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Q(query): Q<KeyQuery>,
) -> Result<StatusCode, ApiError> {
    let scope = query.scope.unwrap_or_else(|| SYSTEM.into());
    state.engine.datastore.delete(&scope, &name).await?;
    audit(&state, &caller, "key.delete", &scope, &name).await;
    Ok(StatusCode::NO_CONTENT)
}
