//! Alert receivers: turn the webhook bodies of monitoring tools into
//! squall's normalized alert (the payload of trigger `squall.alert`), one per
//! alert in a grouped payload. Pure functions: no I/O.
//!
//! Shapes follow each product's documentation: Prometheus Alertmanager's
//! webhook (version 4), Grafana alerting's webhook contact point, PagerDuty
//! webhooks v3, and a generic JSON body described by a field mapping.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A receiver that takes this source name.
pub const SOURCES: [&str; 4] = ["alertmanager", "grafana", "pagerduty", "generic"];

/// What was wrong with an alert payload.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct AlertError(pub String);

/// Field mapping for the generic receiver: dotted paths into the body (or
/// into each element of `alerts`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GenericMapping {
    /// Path to the list of alerts; empty: the body is one alert.
    pub alerts: String,
    pub name: String,
    pub status: String,
    pub severity: String,
    pub summary: String,
    pub fingerprint: String,
    pub starts_at: String,
    pub ends_at: String,
    pub url: String,
    pub labels: String,
    pub annotations: String,
    /// Status values that mean resolved (compared case-insensitively).
    pub resolved_values: Vec<String>,
}

impl Default for GenericMapping {
    fn default() -> Self {
        Self {
            alerts: String::new(),
            name: "name".into(),
            status: "status".into(),
            severity: "severity".into(),
            summary: "summary".into(),
            fingerprint: "fingerprint".into(),
            starts_at: "starts_at".into(),
            ends_at: "ends_at".into(),
            url: "url".into(),
            labels: "labels".into(),
            annotations: "annotations".into(),
            resolved_values: vec!["resolved".into(), "ok".into(), "closed".into()],
        }
    }
}

/// One normalized alert, as rules see it under `trigger.`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub source: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub name: String,
    pub severity: Option<String>,
    pub summary: Option<String>,
    pub labels: Map<String, Value>,
    pub annotations: Map<String, Value>,
    pub fingerprint: String,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub url: Option<String>,
    pub raw: Value,
}

impl Alert {
    pub fn to_payload(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Normalize a body from `source`.
pub fn normalize(
    source: &str,
    body: &Value,
    generic: &GenericMapping,
) -> Result<Vec<Alert>, AlertError> {
    match source {
        "alertmanager" => alertmanager(body, "alertmanager"),
        "grafana" => alertmanager(body, "grafana"),
        "pagerduty" => pagerduty(body),
        "generic" => generic_alerts(body, generic),
        other => Err(AlertError(format!(
            "unknown alert source {other:?}; one of: {}",
            SOURCES.join(", ")
        ))),
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn object(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

/// Go's zero time (`0001-01-01T00:00:00Z`) means "not set".
fn time(v: Option<&Value>) -> Option<String> {
    text(v).filter(|t| !t.starts_with("0001-01-01"))
}

/// A stable fingerprint when the source sends none: name plus sorted labels.
fn derived_fingerprint(name: &str, labels: &Map<String, Value>) -> String {
    use std::hash::{Hash, Hasher};
    let sorted: BTreeMap<&String, String> =
        labels.iter().map(|(k, v)| (k, v.to_string())).collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    for (k, v) in sorted {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// Alertmanager (webhook version 4) and Grafana (same structure, more URLs).
fn alertmanager(body: &Value, source: &str) -> Result<Vec<Alert>, AlertError> {
    let Some(alerts) = body.get("alerts").and_then(Value::as_array) else {
        return Err(AlertError(format!(
            "a {source} notification needs an \"alerts\" list (webhook payload version 4)"
        )));
    };
    let group_status = text(body.get("status")).unwrap_or_else(|| "firing".into());
    let external = text(body.get("externalURL"));
    alerts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if !a.is_object() {
                return Err(AlertError(format!("alerts[{i}] is not an object")));
            }
            let labels = object(a.get("labels"));
            let annotations = object(a.get("annotations"));
            let name = text(labels.get("alertname"))
                .or_else(|| text(body.get("title")))
                .ok_or_else(|| AlertError(format!("alerts[{i}] has no labels.alertname")))?;
            // Per-alert status wins: a group still firing can carry a resolved alert.
            let status = match text(a.get("status"))
                .unwrap_or_else(|| group_status.clone())
                .as_str()
            {
                "resolved" => "resolved",
                _ => "firing",
            };
            let fingerprint =
                text(a.get("fingerprint")).unwrap_or_else(|| derived_fingerprint(&name, &labels));
            let url = ["dashboardURL", "panelURL", "generatorURL"]
                .iter()
                .find_map(|k| text(a.get(*k)))
                .or_else(|| external.clone());
            Ok(Alert {
                source: source.into(),
                status: status.into(),
                severity: text(labels.get("severity")),
                summary: text(annotations.get("summary"))
                    .or_else(|| text(annotations.get("description")))
                    .or_else(|| text(annotations.get("message"))),
                fingerprint,
                starts_at: time(a.get("startsAt")),
                ends_at: if status == "resolved" {
                    time(a.get("endsAt"))
                } else {
                    None
                },
                url,
                raw: a.clone(),
                name,
                labels,
                annotations,
            })
        })
        .collect()
}

/// PagerDuty webhooks v3: one event per body.
fn pagerduty(body: &Value) -> Result<Vec<Alert>, AlertError> {
    let Some(event) = body.get("event").filter(|e| e.is_object()) else {
        return Err(AlertError(
            "a PagerDuty v3 webhook needs an \"event\" object".into(),
        ));
    };
    let event_type = text(event.get("event_type")).unwrap_or_default();
    if !event_type.starts_with("incident.") {
        return Err(AlertError(format!(
            "PagerDuty event type {event_type:?} is not an incident event"
        )));
    }
    let data = event.get("data").cloned().unwrap_or(Value::Null);
    let resolved = event_type == "incident.resolved"
        || data.get("status").and_then(Value::as_str) == Some("resolved");
    let name = text(data.get("title")).unwrap_or_else(|| event_type.clone());
    let mut labels = Map::new();
    if let Some(service) = data.pointer("/service/summary").and_then(Value::as_str) {
        labels.insert("service".into(), json!(service));
    }
    for key in ["urgency", "incident_key", "status", "number"] {
        if let Some(v) = data.get(key).filter(|v| !v.is_null()) {
            labels.insert(key.into(), v.clone());
        }
    }
    labels.insert("event_type".into(), json!(event_type));
    let fingerprint = text(data.get("incident_key"))
        .or_else(|| text(data.get("id")))
        .unwrap_or_else(|| derived_fingerprint(&name, &labels));
    Ok(vec![Alert {
        source: "pagerduty".into(),
        status: if resolved { "resolved" } else { "firing" }.into(),
        severity: text(data.pointer("/priority/summary")).or_else(|| text(data.get("urgency"))),
        summary: text(data.get("title")),
        annotations: Map::new(),
        fingerprint,
        starts_at: text(data.get("created_at")),
        ends_at: if resolved {
            text(event.get("occurred_at"))
        } else {
            None
        },
        url: text(data.get("html_url")),
        raw: event.clone(),
        name,
        labels,
    }])
}

fn at_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.').try_fold(value, |v, key| match v {
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => v.get(key),
    })
}

fn generic_alerts(body: &Value, m: &GenericMapping) -> Result<Vec<Alert>, AlertError> {
    let items: Vec<&Value> = if m.alerts.is_empty() {
        vec![body]
    } else {
        match at_path(body, &m.alerts) {
            Some(Value::Array(list)) => list.iter().collect(),
            _ => {
                return Err(AlertError(format!(
                    "the body has no list at {:?} (alerts path of the generic mapping)",
                    m.alerts
                )));
            }
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let name = text(at_path(a, &m.name))
                .ok_or_else(|| AlertError(format!("alert {i} has no name at {:?}", m.name)))?;
            let status_text = text(at_path(a, &m.status)).unwrap_or_else(|| "firing".into());
            let resolved = m
                .resolved_values
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&status_text));
            let labels = object(at_path(a, &m.labels));
            Ok(Alert {
                source: "generic".into(),
                status: if resolved { "resolved" } else { "firing" }.into(),
                severity: text(at_path(a, &m.severity)),
                summary: text(at_path(a, &m.summary)),
                annotations: object(at_path(a, &m.annotations)),
                fingerprint: text(at_path(a, &m.fingerprint))
                    .unwrap_or_else(|| derived_fingerprint(&name, &labels)),
                starts_at: time(at_path(a, &m.starts_at)),
                ends_at: time(at_path(a, &m.ends_at)),
                url: text(at_path(a, &m.url)),
                raw: a.clone(),
                name,
                labels,
            })
        })
        .collect()
}

/// Drops repeats of the same alert (source, fingerprint, status) inside a
/// window. In memory, per node: a repeat that reaches another node is not
/// caught (documented).
pub struct Dedup {
    window_ms: i64,
    seen: std::collections::HashMap<(String, String), (String, i64)>,
}

impl Dedup {
    pub fn new(window: std::time::Duration) -> Self {
        Self {
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            seen: std::collections::HashMap::new(),
        }
    }

    /// Whether `alert` is new at `now_ms` (and remember it).
    pub fn admit(&mut self, alert: &Alert, now_ms: i64) -> bool {
        if self.window_ms == 0 {
            return true;
        }
        if self.seen.len() > 100_000 {
            let window = self.window_ms;
            self.seen.retain(|_, (_, at)| now_ms - *at < window);
        }
        let key = (alert.source.clone(), alert.fingerprint.clone());
        match self.seen.get(&key) {
            Some((status, at)) if *status == alert.status && now_ms - *at < self.window_ms => false,
            _ => {
                self.seen.insert(key, (alert.status.clone(), now_ms));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests;
