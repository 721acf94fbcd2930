//! Unit tests of the Matrix adapter's pure parts; the adapter itself is
//! tested against a real Synapse by the conformance suite (tests/e2e).

use super::MatrixConfig;
use super::inbound::strip_mention;

#[test]
fn leading_mentions_are_stripped() {
    assert_eq!(
        strip_mention("squall: help", "@squall:hs", "squall"),
        ("help".into(), true)
    );
    assert_eq!(
        strip_mention("@squall:hs help", "@squall:hs", "squall"),
        ("help".into(), true)
    );
    assert_eq!(
        strip_mention("!help", "@squall:hs", "squall"),
        ("!help".into(), false)
    );
}

#[test]
fn config_problems_are_named() {
    let config: MatrixConfig = serde_json::from_value(serde_json::json!({
        "homeserver": "matrix.example.org",
        "user": "",
        "access_token": "t",
    }))
    .unwrap();
    let problems = config.validate().unwrap_err();
    for needle in ["matrix.homeserver", "matrix.user", "matrix.device_id"] {
        assert!(problems.contains(needle), "{problems}");
    }
}
