//! Webhook authentication: an API key, or an HMAC-SHA256 signature of the
//! body in the sender's scheme (GitHub, Slack v0, PagerDuty, or squall's
//! generic header), compared in constant time. Replays are refused: Slack and
//! the generic scheme sign a timestamp that must be recent; a signature (or
//! GitHub delivery id) seen before inside the window is refused too; the
//! server remembers them in the database, so a replay to another node fails.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use squall_engine::store::{Store, StoreError};

use crate::config::Sensitive;

/// How a webhook or alert receiver authenticates its sender.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// `St2-Api-Key` or `Authorization: Bearer` with a squall API key.
    #[default]
    ApiKey,
    /// `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github,
    /// `X-Slack-Signature: v0=<hex>` over `v0:<X-Slack-Request-Timestamp>:<body>`.
    Slack,
    /// `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]` over the body.
    Pagerduty,
    /// `X-Squall-Signature: sha256=<hex>` over `<X-Squall-Timestamp>.<body>`.
    Hmac,
}

/// Authentication settings of one webhook or receiver.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HookAuth {
    pub auth: Scheme,
    /// The shared secret of the HMAC schemes.
    pub secret: Option<Sensitive>,
    /// Seconds a signed timestamp stays acceptable (and signatures are
    /// remembered against replays).
    pub tolerance_seconds: Option<u64>,
}

const DEFAULT_TOLERANCE: i64 = 300;

/// Remembers signatures recently accepted, to refuse replays (in memory;
/// the server keeps them in the database instead, see `Store::first_use_of`).
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn mac(secret: &str, parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        m.update(p);
    }
    m
}

/// Constant-time check of a hex signature.
fn matches(secret: &str, parts: &[&[u8]], hex_signature: &str) -> bool {
    match hex::decode(hex_signature) {
        Ok(bytes) => mac(secret, parts).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// Hex HMAC-SHA256 of `parts` (for senders and tests).
pub fn sign(secret: &str, parts: &[&[u8]]) -> String {
    hex::encode(mac(secret, parts).finalize().into_bytes())
}

/// A request whose signature checked out: the token that identifies it
/// against replays, and how long to remember it (seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentic {
    pub replay_token: String,
    pub window: i64,
}

/// The replay refusal, worded once for every caller.
pub const REPLAYED: &str = "this exact request was already received: refused as a replay";

/// Why a signed request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The sender's fault: a 401 with this reason (it never names the
    /// secret or the expected signature).
    #[error("{0}")]
    Unauthorized(String),
    /// The replay record could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Check a signed request: its signature, its timestamp, and that it was not
/// seen before. Seen requests are remembered in the database (table
/// `webhook_replays`), so a replay to another node is refused too. `Ok(None)`
/// for the API-key scheme, which the caller checks itself.
pub async fn verify(
    auth: &HookAuth,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    store: &Store,
) -> Result<Option<Authentic>, Refusal> {
    let Some(ok) = check_signature(auth, headers, body, now).map_err(Refusal::Unauthorized)? else {
        return Ok(None);
    };
    if !store.first_use_of(&ok.replay_token, now, ok.window).await? {
        return Err(Refusal::Unauthorized(REPLAYED.into()));
    }
    Ok(Some(ok))
}

/// Check the signature (and timestamp) of a request; `None` for the API-key
/// scheme. Whether it is a replay is [`verify`]'s to check with the token.
fn check_signature(
    auth: &HookAuth,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Option<Authentic>, String> {
    let Some(secret) = auth.secret.as_ref().map(|s| s.0.as_str()) else {
        return Err("this webhook is configured for signatures but has no secret".into());
    };
    let window = auth.tolerance_seconds.map_or(DEFAULT_TOLERANCE, |t| {
        i64::try_from(t).unwrap_or(DEFAULT_TOLERANCE)
    });
    let fresh = |ts: &str| -> Result<(), String> {
        let ts: i64 = ts
            .parse()
            .map_err(|_| format!("the timestamp {ts:?} is not a number of seconds"))?;
        if (now - ts).abs() > window {
            return Err(format!(
                "the request timestamp is {} s away from now (more than {window} s): refused as a possible replay",
                (now - ts).abs()
            ));
        }
        Ok(())
    };
    let replay_token = match auth.auth {
        Scheme::ApiKey => return Ok(None),
        Scheme::Github => {
            let sig = header(headers, "x-hub-signature-256")
                .ok_or("missing X-Hub-Signature-256 header")?;
            let hex = sig
                .strip_prefix("sha256=")
                .ok_or("X-Hub-Signature-256 must be sha256=<hex>")?;
            if !matches(secret, &[body], hex) {
                return Err("the X-Hub-Signature-256 signature does not match the body".into());
            }
            let delivery = header(headers, "x-github-delivery").unwrap_or(hex);
            format!("github:{delivery}")
        }
        Scheme::Slack => {
            let ts = header(headers, "x-slack-request-timestamp")
                .ok_or("missing X-Slack-Request-Timestamp header")?;
            fresh(ts)?;
            let sig =
                header(headers, "x-slack-signature").ok_or("missing X-Slack-Signature header")?;
            let hex = sig
                .strip_prefix("v0=")
                .ok_or("X-Slack-Signature must be v0=<hex>")?;
            if !matches(secret, &[b"v0:", ts.as_bytes(), b":", body], hex) {
                return Err("the X-Slack-Signature does not match the body and timestamp".into());
            }
            format!("slack:{hex}")
        }
        Scheme::Pagerduty => {
            let sigs = header(headers, "x-pagerduty-signature")
                .ok_or("missing X-PagerDuty-Signature header")?;
            // Several signatures during a secret rotation: any may match.
            let hit = sigs
                .split(',')
                .filter_map(|s| s.trim().strip_prefix("v1="))
                .find(|hex| matches(secret, &[body], hex))
                .ok_or("no X-PagerDuty-Signature matches the body")?;
            format!("pagerduty:{hit}")
        }
        Scheme::Hmac => {
            let ts =
                header(headers, "x-squall-timestamp").ok_or("missing X-Squall-Timestamp header")?;
            fresh(ts)?;
            let sig =
                header(headers, "x-squall-signature").ok_or("missing X-Squall-Signature header")?;
            let hex = sig.strip_prefix("sha256=").unwrap_or(sig);
            if !matches(secret, &[ts.as_bytes(), b".", body], hex) {
                return Err("the X-Squall-Signature does not match the body and timestamp".into());
            }
            format!("hmac:{hex}")
        }
    };
    Ok(Some(Authentic {
        replay_token,
        window,
    }))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const SECRET: &str = "It's a Secret to Everybody";

    fn auth(scheme: Scheme) -> HookAuth {
        HookAuth {
            auth: scheme,
            secret: Some(Sensitive(SECRET.into())),
            tolerance_seconds: None,
        }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    /// The production replay record: a real store on a fresh SQLite file.
    /// (Both backends are covered over HTTP in the e2e webhook tests.)
    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("squall.db").display());
        let store = Store::connect(&url).await.expect("store");
        (dir, store)
    }

    async fn refused(
        auth: &HookAuth,
        h: &HeaderMap,
        body: &[u8],
        now: i64,
        store: &Store,
    ) -> String {
        match verify(auth, h, body, now, store).await {
            Err(Refusal::Unauthorized(reason)) => reason,
            Err(Refusal::Store(err)) => panic!("store error: {err}"),
            Ok(_) => panic!("accepted a request that must be refused"),
        }
    }

    async fn accepted(auth: &HookAuth, h: &HeaderMap, body: &[u8], now: i64, store: &Store) {
        match verify(auth, h, body, now, store).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a signature scheme was treated as the API-key scheme"),
            Err(err) => panic!("refused: {err}"),
        }
    }

    #[tokio::test]
    async fn github_documented_example() {
        // The example from GitHub's "Validating webhook deliveries".
        let (_dir, store) = store().await;
        let body = b"Hello, World!";
        let h = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".into(),
        )]);
        let a = auth(Scheme::Github);
        accepted(&a, &h, body, 0, &store).await;
        assert_eq!(refused(&a, &h, body, 1, &store).await, REPLAYED);
        let err = refused(&a, &h, b"Hello, World?", 2, &store).await;
        assert!(err.contains("does not match"), "{err}");
    }

    #[tokio::test]
    async fn github_deliveries_are_told_apart_by_their_delivery_id() {
        // The same delivery (X-GitHub-Delivery) sent again is a replay even
        // though GitHub's signature has no timestamp.
        let (_dir, store) = store().await;
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let sig = sign(SECRET, &[body]);
        let a = auth(Scheme::Github);
        let first = headers(&[
            ("x-hub-signature-256", format!("sha256={sig}")),
            (
                "x-github-delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
            ),
        ]);
        accepted(&a, &first, body, 10, &store).await;
        let other = headers(&[
            ("x-hub-signature-256", format!("sha256={sig}")),
            (
                "x-github-delivery",
                "9a1c0e2e-cc78-11e3-81ab-4c9367dc0958".into(),
            ),
        ]);
        accepted(&a, &other, body, 11, &store).await;
        assert_eq!(refused(&a, &first, body, 12, &store).await, REPLAYED);
    }

    #[tokio::test]
    async fn slack_v0_checks_signature_and_timestamp() {
        let (_dir, store) = store().await;
        let a = auth(Scheme::Slack);
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fweather";
        let ts = "1531420618";
        let sig = sign(SECRET, &[b"v0:", ts.as_bytes(), b":", body]);
        let h = headers(&[
            ("x-slack-request-timestamp", ts.into()),
            ("x-slack-signature", format!("v0={sig}")),
        ]);
        accepted(&a, &h, body, 1_531_420_700, &store).await;
        assert_eq!(refused(&a, &h, body, 1_531_420_701, &store).await, REPLAYED);
        let err = refused(&a, &h, body, 1_531_430_000, &store).await;
        assert!(err.contains("possible replay"), "{err}");
        let bad = headers(&[
            ("x-slack-request-timestamp", ts.into()),
            ("x-slack-signature", format!("v0={}", "0".repeat(64))),
        ]);
        let err = refused(&a, &bad, body, 1_531_420_700, &store).await;
        assert!(err.contains("does not match"), "{err}");
    }

    #[tokio::test]
    async fn a_replay_is_remembered_by_the_database_not_the_process() {
        // Two stores on one database stand for two nodes (or a restart).
        let (dir, store) = store().await;
        let url = format!("sqlite://{}", dir.path().join("squall.db").display());
        let other_node = Store::connect(&url).await.expect("second store");
        let body = b"{}";
        let sig = sign(SECRET, &[b"100.", body]);
        let h = headers(&[
            ("x-squall-timestamp", "100".into()),
            ("x-squall-signature", format!("sha256={sig}")),
        ]);
        let a = auth(Scheme::Hmac);
        accepted(&a, &h, body, 120, &store).await;
        assert_eq!(refused(&a, &h, body, 121, &other_node).await, REPLAYED);
    }

    #[tokio::test]
    async fn pagerduty_accepts_any_listed_signature() {
        let (_dir, store) = store().await;
        let body = br#"{"event":{}}"#;
        let good = sign(SECRET, &[body]);
        let a = auth(Scheme::Pagerduty);
        let h = headers(&[("x-pagerduty-signature", format!("v1=deadbeef,v1={good}"))]);
        accepted(&a, &h, body, 0, &store).await;
        assert_eq!(refused(&a, &h, body, 10, &store).await, REPLAYED);
        let h = headers(&[("x-pagerduty-signature", "v1=deadbeef".into())]);
        let err = refused(&a, &h, body, 0, &store).await;
        assert!(!err.contains(&good), "the expected signature leaked: {err}");
    }

    #[tokio::test]
    async fn generic_hmac_signs_timestamp_and_body() {
        let (_dir, store) = store().await;
        let body = b"{}";
        let sig = sign(SECRET, &[b"100.", body]);
        let a = auth(Scheme::Hmac);
        let h = headers(&[
            ("x-squall-timestamp", "100".into()),
            ("x-squall-signature", format!("sha256={sig}")),
        ]);
        accepted(&a, &h, body, 120, &store).await;
        assert_eq!(refused(&a, &h, body, 121, &store).await, REPLAYED);
        let missing = headers(&[("x-squall-signature", format!("sha256={sig}"))]);
        assert_eq!(
            refused(&a, &missing, body, 120, &store).await,
            "missing X-Squall-Timestamp header"
        );
    }

    #[tokio::test]
    async fn the_api_key_scheme_is_left_to_the_caller() {
        let (_dir, store) = store().await;
        let h = headers(&[]);
        assert!(matches!(
            verify(&auth(Scheme::ApiKey), &h, b"{}", 0, &store).await,
            Ok(None)
        ));
    }
}
