use serde_json::{Value, json};

use super::*;

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/alerts")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

fn norm(source: &str, body: &Value) -> Vec<Alert> {
    normalize(source, body, &GenericMapping::default()).expect("normalizes")
}

#[test]
fn alertmanager_group_becomes_one_alert_each() {
    let alerts = norm("alertmanager", &fixture("alertmanager-firing.json"));
    assert_eq!(alerts.len(), 2);
    let a = &alerts[0];
    assert_eq!(a.source, "alertmanager");
    assert_eq!(a.status, "firing");
    assert_eq!(a.name, "DiskFull");
    assert_eq!(a.severity.as_deref(), Some("critical"));
    assert_eq!(a.summary.as_deref(), Some("Disk almost full on db1"));
    assert_eq!(a.labels["instance"], "db1:9100");
    assert_eq!(a.ends_at, None, "Go's zero time is no end");
    assert!(
        a.starts_at
            .as_deref()
            .is_some_and(|s| s.starts_with("2026-"))
    );
    assert_ne!(alerts[0].fingerprint, alerts[1].fingerprint);
}

#[test]
fn per_alert_status_wins_over_the_group_status() {
    let alerts = norm("alertmanager", &fixture("alertmanager-mixed.json"));
    let statuses: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a.labels["instance"].as_str().unwrap_or(""),
                a.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![("db1:9100", "resolved"), ("db2:9100", "firing")]
    );
    assert_eq!(alerts[0].ends_at.as_deref(), Some("2026-11-25T14:39:18Z"));
    let resolved = norm("alertmanager", &fixture("alertmanager-resolved.json"));
    assert!(resolved.iter().all(|a| a.status == "resolved"));
}

#[test]
fn grafana_alerts_normalize_like_alertmanager() {
    let alerts = norm("grafana", &fixture("grafana.json"));
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].source, "grafana");
    assert_eq!(alerts[0].name, "High memory usage");
    assert_eq!(alerts[0].fingerprint, "c6eadffa33fcdf37");
    assert_eq!(
        alerts[0].url.as_deref(),
        Some("https://play.grafana.org/alerting/1afz29v7z/edit")
    );
    assert_eq!(
        alerts[1].summary.as_deref(),
        Some("This alert was triggered for zone eu-1")
    );
}

#[test]
fn pagerduty_incident_events() {
    let fired = norm("pagerduty", &fixture("pagerduty-triggered.json"));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].status, "firing");
    assert_eq!(fired[0].name, "A little bump in the road");
    assert_eq!(fired[0].severity.as_deref(), Some("P1"));
    assert_eq!(fired[0].labels["service"], "API Service");
    assert_eq!(fired[0].fingerprint, "d3640fbd41094207a1c11e58e46b1662");
    let resolved = norm("pagerduty", &fixture("pagerduty-resolved.json"));
    assert_eq!(resolved[0].status, "resolved");
    assert_eq!(resolved[0].fingerprint, fired[0].fingerprint);
    assert_eq!(
        resolved[0].ends_at.as_deref(),
        Some("2020-04-09T15:20:03.134Z")
    );
}

#[test]
fn generic_mapping_reads_dotted_paths() {
    let mapping = GenericMapping {
        alerts: "data.items".into(),
        name: "title".into(),
        status: "state".into(),
        labels: "tags".into(),
        resolved_values: vec!["ok".into()],
        ..GenericMapping::default()
    };
    let body = json!({"data": {"items": [
        {"title": "Queue backlog", "state": "alerting", "tags": {"queue": "mail"}},
        {"title": "Queue backlog", "state": "OK", "tags": {"queue": "mail"}}
    ]}});
    let alerts = normalize("generic", &body, &mapping).expect("ok");
    assert_eq!(alerts[0].status, "firing");
    assert_eq!(alerts[1].status, "resolved");
    assert_eq!(
        alerts[0].fingerprint, alerts[1].fingerprint,
        "derived from name and labels"
    );
    let err = normalize("generic", &json!({"x": 1}), &mapping).expect_err("no list");
    assert!(err.0.contains("data.items"), "{err}");
}

#[test]
fn bad_payloads_say_what_is_missing() {
    let err = normalize(
        "alertmanager",
        &json!({"status": "firing"}),
        &GenericMapping::default(),
    )
    .expect_err("no alerts");
    assert!(err.0.contains("\"alerts\" list"), "{err}");
    let err = normalize(
        "alertmanager",
        &json!({"alerts": [{"labels": {}}]}),
        &GenericMapping::default(),
    )
    .expect_err("no name");
    assert!(err.0.contains("alertname"), "{err}");
    let err = normalize(
        "pagerduty",
        &json!({"event": {"event_type": "service.updated"}}),
        &GenericMapping::default(),
    )
    .expect_err("not an incident");
    assert!(err.0.contains("not an incident event"), "{err}");
    assert!(normalize("nagios", &json!({}), &GenericMapping::default()).is_err());
}

#[test]
fn repeats_inside_the_window_are_dropped() {
    let alerts = norm("alertmanager", &fixture("alertmanager-firing.json"));
    let mut dedup = Dedup::new(std::time::Duration::from_secs(60));
    assert!(dedup.admit(&alerts[0], 1_000));
    assert!(
        !dedup.admit(&alerts[0], 30_000),
        "same status inside the window"
    );
    assert!(dedup.admit(&alerts[1], 30_000), "another fingerprint");
    let mut resolved = alerts[0].clone();
    resolved.status = "resolved".into();
    assert!(dedup.admit(&resolved, 31_000), "a status change is news");
    assert!(
        dedup.admit(&alerts[0], 32_000),
        "firing again after a resolve"
    );
    assert!(dedup.admit(&alerts[0], 100_000), "after the window");
}
