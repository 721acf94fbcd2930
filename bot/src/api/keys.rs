//! `/api/v1/keys`: the key-value datastore.
//!
//! Any valid API key reads and writes pairs (as it does everything else in
//! the API). Seeing a secret decrypted (`?decrypt=true`) also needs the grant
//! `key:decrypt` for the key's identity `api:<key name>` in `rbac/`
//! (`api:anonymous` when the API runs without authentication). Every write
//! and every decrypting read leaves an audit row; values never enter it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use squall_engine::datastore::{KvError, KvSet, SYSTEM};
use squall_engine::rbac::Permission;
use squall_engine::store::AuditEntry;

use super::{ApiError, AppState, Caller, parse_body};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyQuery {
    scope: Option<String>,
    #[serde(default)]
    decrypt: bool,
    prefix: Option<String>,
    limit: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutKey {
    value: Value,
    #[serde(default)]
    secret: bool,
    ttl: Option<u64>,
    scope: Option<String>,
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

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<KeyQuery>,
) -> Result<Json<Value>, ApiError> {
    if query.decrypt {
        check_decrypt(&state, &caller)?;
    }
    let limit = query.limit.unwrap_or(1000);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit must be between 1 and 10000",
        ));
    }
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
    Ok(Json(serde_json::to_value(pairs).unwrap_or_default()))
}

pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<KeyQuery>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(serde_json::to_value(pair).unwrap_or_default()))
}

pub(super) async fn put(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = parse_body(&headers, &body)?;
    let request: PutKey = serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "expected {{\"value\": <JSON>, \"secret\": false, \"ttl\": <seconds>, \"scope\": \"system\" | \"user:<name>\"}}: {e}"
            ),
        )
    })?;
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
    Ok((
        StatusCode::OK,
        Json(serde_json::to_value(pair).unwrap_or_default()),
    )
        .into_response())
}

pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<KeyQuery>,
) -> Result<StatusCode, ApiError> {
    let scope = query.scope.unwrap_or_else(|| SYSTEM.into());
    state.engine.datastore.delete(&scope, &name).await?;
    audit(&state, &caller, "key.delete", &scope, &name).await;
    Ok(StatusCode::NO_CONTENT)
}
