//! Webhook authentication: an API key, or an HMAC-SHA256 signature of the
//! body in the sender's scheme (GitHub, Slack v0, PagerDuty, or squall's
//! generic header), compared in constant time. Replays are refused: Slack and
//! the generic scheme sign a timestamp that must be recent; a signature (or
//! GitHub delivery id) seen before inside the window is refused too; the
//! server remembers them in the database, so a replay to another node fails.

#[cfg(test)]
use std::collections::HashMap;
#[cfg(test)]
use std::sync::Mutex;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

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
#[cfg(test)]
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<String, i64>>,
}

#[cfg(test)]
impl ReplayGuard {
    /// False when `token` was seen within `window` seconds before `now`.
    fn first_use(&self, token: String, now: i64, window: i64) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.len() > 50_000 {
            seen.retain(|_, at| now - *at < window);
        }
        match seen.get(&token) {
            Some(at) if now - *at < window => false,
            _ => {
                seen.insert(token, now);
                true
            }
        }
    }
}

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

/// Check a signed request against a memory of recent signatures.
#[cfg(test)]
/// `Ok` means authentic and not a replay; `Err` says what was wrong (never
/// the secret or the expected signature).
pub fn verify(
    auth: &HookAuth,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    replays: &ReplayGuard,
) -> Result<(), String> {
    match check_signature(auth, headers, body, now)? {
        Some(ok) if !replays.first_use(ok.replay_token.clone(), now, ok.window) => {
            Err(REPLAYED.into())
        }
        _ => Ok(()),
    }
}

/// Check the signature (and timestamp) of a request; `None` for the API-key
/// scheme. Whether it is a replay is the caller's to check with the token.
pub fn check_signature(
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

    fn auth(scheme: Scheme) -> HookAuth {
        HookAuth {
            auth: scheme,
            secret: Some(Sensitive("It's a Secret to Everybody".into())),
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

    #[test]
    fn github_documented_example() {
        // The example from GitHub's "Validating webhook deliveries".
        let body = b"Hello, World!";
        let h = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".into(),
        )]);
        let guard = ReplayGuard::default();
        assert_eq!(verify(&auth(Scheme::Github), &h, body, 0, &guard), Ok(()));
        let err = verify(&auth(Scheme::Github), &h, body, 1, &guard).expect_err("replay");
        assert!(err.contains("replay"), "{err}");
        let err = verify(
            &auth(Scheme::Github),
            &h,
            b"Hello, World?",
            2,
            &ReplayGuard::default(),
        )
        .expect_err("tampered");
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn slack_v0_checks_signature_and_timestamp() {
        let a = auth(Scheme::Slack);
        let secret = "It's a Secret to Everybody";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fweather";
        let ts = "1531420618";
        let sig = sign(secret, &[b"v0:", ts.as_bytes(), b":", body]);
        let h = headers(&[
            ("x-slack-request-timestamp", ts.into()),
            ("x-slack-signature", format!("v0={sig}")),
        ]);
        let guard = ReplayGuard::default();
        assert_eq!(verify(&a, &h, body, 1_531_420_700, &guard), Ok(()));
        let err = verify(&a, &h, body, 1_531_420_701, &guard).expect_err("same request again");
        assert!(err.contains("replay"), "{err}");
        let err = verify(&a, &h, body, 1_531_430_000, &ReplayGuard::default()).expect_err("old");
        assert!(err.contains("possible replay"), "{err}");
        let bad = headers(&[
            ("x-slack-request-timestamp", ts.into()),
            ("x-slack-signature", format!("v0={}", "0".repeat(64))),
        ]);
        assert!(verify(&a, &bad, body, 1_531_420_700, &ReplayGuard::default()).is_err());
    }

    #[test]
    fn pagerduty_accepts_any_listed_signature() {
        let body = br#"{"event":{}}"#;
        let good = sign("It's a Secret to Everybody", &[body]);
        let h = headers(&[("x-pagerduty-signature", format!("v1=deadbeef,v1={good}"))]);
        let guard = ReplayGuard::default();
        assert_eq!(
            verify(&auth(Scheme::Pagerduty), &h, body, 0, &guard),
            Ok(())
        );
        let err = verify(&auth(Scheme::Pagerduty), &h, body, 10, &guard).expect_err("replayed");
        assert!(err.contains("replay"), "{err}");
        let h = headers(&[("x-pagerduty-signature", "v1=deadbeef".into())]);
        assert!(
            verify(
                &auth(Scheme::Pagerduty),
                &h,
                body,
                0,
                &ReplayGuard::default()
            )
            .is_err()
        );
    }

    #[test]
    fn generic_hmac_signs_timestamp_and_body() {
        let body = b"{}";
        let sig = sign("It's a Secret to Everybody", &[b"100.", body]);
        let h = headers(&[
            ("x-squall-timestamp", "100".into()),
            ("x-squall-signature", format!("sha256={sig}")),
        ]);
        let guard = ReplayGuard::default();
        assert_eq!(verify(&auth(Scheme::Hmac), &h, body, 120, &guard), Ok(()));
        assert!(
            verify(&auth(Scheme::Hmac), &h, body, 121, &guard).is_err(),
            "replayed"
        );
        let missing = headers(&[("x-squall-signature", format!("sha256={sig}"))]);
        let err = verify(
            &auth(Scheme::Hmac),
            &missing,
            body,
            120,
            &ReplayGuard::default(),
        )
        .expect_err("no timestamp");
        assert_eq!(err, "missing X-Squall-Timestamp header");
    }
}
