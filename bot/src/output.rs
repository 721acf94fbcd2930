//! Human-readable output of the CLI.

use serde_json::Value;

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line per execution.
pub fn execution_table(executions: &[Value]) -> String {
    let mut out = format!(
        "{:<26}  {:<24}  {:<10}  {:<24}  {}\n",
        "ID", "ACTION", "STATUS", "CREATED", "BY"
    );
    for e in executions {
        let ctx = &e["context"];
        let by = ctx
            .get("rule")
            .and_then(Value::as_str)
            .map(|r| format!("rule {r}"))
            .or_else(|| ctx.get("user").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| text(&ctx["source"]));
        out.push_str(&format!(
            "{:<26}  {:<24}  {:<10}  {:<24}  {}\n",
            text(&e["id"]),
            text(&e["action"]),
            text(&e["status"]),
            text(&e["created_at"]),
            by
        ));
    }
    out
}

/// The full record of one execution.
pub fn execution_detail(e: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
    line(&mut out, "id:", text(&e["id"]));
    line(&mut out, "action:", text(&e["action"]));
    line(&mut out, "runner:", text(&e["runner"]));
    line(&mut out, "status:", text(&e["status"]));
    line(&mut out, "attempt:", text(&e["attempt"]));
    line(&mut out, "created:", text(&e["created_at"]));
    line(&mut out, "started:", text(&e["started_at"]));
    line(&mut out, "finished:", text(&e["finished_at"]));
    if let Some(ms) = e["duration_ms"].as_i64() {
        line(&mut out, "duration:", format!("{ms} ms"));
    }
    if let Some(ti) = e.get("trigger_instance") {
        line(
            &mut out,
            "trigger:",
            format!(
                "{} ({}) from {}",
                text(&ti["trigger"]),
                text(&ti["id"]),
                text(&ti["source"])
            ),
        );
    }
    if let Some(rule) = e.get("rule") {
        line(
            &mut out,
            "rule:",
            format!(
                "{} (enforcement {})",
                text(&rule["ref"]),
                text(&rule["enforcement_id"])
            ),
        );
    }
    if let Some(user) = e["context"].get("user") {
        line(&mut out, "user:", text(user));
    }
    if !e["error"].is_null() {
        line(&mut out, "error:", text(&e["error"]));
    }
    if let Some(retry) = e["retry"]
        .as_str()
        .and_then(squall_engine::runners::Retry::parse)
    {
        line(&mut out, "retry:", retry.advice().to_owned());
    }
    out.push_str(&format!(
        "parameters:\n{}\n",
        indent(&pretty(&e["parameters"]))
    ));
    out.push_str(&format!("result:\n{}\n", indent(&pretty(&e["result"]))));
    if let Some(ti) = e.get("trigger_instance") {
        out.push_str(&format!(
            "trigger payload:\n{}\n",
            indent(&pretty(&ti["payload"]))
        ));
    }
    for stream in ["stdout", "stderr"] {
        if let Some(s) = e[stream].as_str().filter(|s| !s.is_empty()) {
            out.push_str(&format!("{stream}:\n{}\n", indent(s.trim_end())));
        }
    }
    out
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rules, one per line.
pub fn rule_table(rules: &[Value]) -> String {
    let mut out = format!(
        "{:<32}  {:<8}  {:<20}  {}\n",
        "RULE", "ENABLED", "TRIGGER", "ACTION"
    );
    for r in rules {
        let mut trigger = text(&r["trigger"]["type"]);
        if let Some(url) = r["trigger"]["parameters"]
            .get("url")
            .and_then(Value::as_str)
        {
            trigger = format!("{trigger} ({url})");
        }
        out.push_str(&format!(
            "{:<32}  {:<8}  {:<20}  {}\n",
            text(&r["ref"]),
            text(&r["enabled"]),
            trigger,
            text(&r["action"]["ref"])
        ));
    }
    out
}

/// One pair as a line: `scope/name = value`, marked when secret or expiring.
pub fn pair_line(pair: &Value) -> String {
    let value = match &pair["value"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = format!(
        "{}/{} = {value}",
        pair["scope"].as_str().unwrap_or("?"),
        pair["name"].as_str().unwrap_or("?")
    );
    if pair["secret"].as_bool() == Some(true) {
        out.push_str("  (secret)");
    }
    if let Some(at) = pair["expires_at"].as_i64()
        && let Some(when) = chrono::DateTime::from_timestamp_millis(at)
    {
        out.push_str(&format!(
            "  (expires {})",
            when.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    out
}
