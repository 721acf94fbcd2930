//! CLI: the operations verbs (`pack list`, `rule enable|disable`, `apikey
//! list|revoke`, `trigger fire`, `audit list`, `alias help|execute`), through
//! a server (`--server`) or on the database. Without a server the CLI acts as
//! the machine's operator, audited as `cli:<login user>`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use squall::cli::AuditCommand;
use squall::config::Config;
use squall::server;
use squall_engine::execution::{ExecutionContext, now_ms};
use squall_engine::intake::TriggerFiring;
use squall_engine::params::Casting;
use squall_engine::store::AuditFilter;

use super::control::cli_identity;
use super::{Remote, print_json_or};

/// `squall pack list`.
pub async fn pack_list(config: &Config, remote: Option<Remote>, json: bool) -> Result<ExitCode> {
    let packs = match remote {
        Some(remote) => remote.get("/api/v1/packs").await?,
        None => local_packs(config)?,
    };
    let list = packs.as_array().map_or(&[][..], Vec::as_slice);
    print_json_or(json, &packs, || {
        let mut out = String::new();
        for p in list {
            let counts = if p["state"] == "loaded" && p["actions"].is_number() {
                format!(
                    "  {} actions, {} rules, {} aliases",
                    p["actions"], p["rules"], p["aliases"]
                )
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{:<20} {:<10} {:<8} {}{}\n",
                p["ref"].as_str().unwrap_or("?"),
                p["version"].as_str().unwrap_or("-"),
                p["state"].as_str().unwrap_or("?"),
                p["source"].as_str().unwrap_or(""),
                counts
            ));
            if let Some(errors) = p["errors"].as_array() {
                for e in errors {
                    out.push_str(&format!("    {}\n", e.as_str().unwrap_or("?")));
                }
            }
        }
        out
    });
    let failed = list.iter().any(|p| p["state"] != "loaded");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The configured packs loaded as `serve` loads them: each on its own, a
/// refused one with its errors.
fn local_packs(config: &Config) -> Result<Value> {
    let catalog =
        squall_engine::load_catalog_lenient(&config.packs, &squall_engine::builtin_runners());
    Ok(serde_json::to_value(squall::api::pack_views(&catalog))?)
}

/// `squall rule enable|disable REF`.
pub async fn rule_toggle(
    config: &Config,
    remote: Option<Remote>,
    reference: &str,
    enabled: bool,
) -> Result<ExitCode> {
    let verb = if enabled { "enable" } else { "disable" };
    let was = match remote {
        Some(remote) => {
            let answer = remote
                .post(&format!("/api/v1/rules/{reference}/{verb}"), &json!({}))
                .await?;
            answer["was_enabled"].as_bool().unwrap_or(!enabled)
        }
        None => {
            let engine = server::open_engine(config).await?;
            engine
                .set_rule_enabled(reference, enabled, &cli_identity(), "cli")
                .await
                .map_err(|e| match e {
                    squall_engine::EngineError::NoRule(r) => {
                        anyhow!("no rule {r}; `squall rule list` shows them")
                    }
                    other => other.into(),
                })?
        }
    };
    let state = if enabled { "enabled" } else { "disabled" };
    if was == enabled {
        println!("{reference} was already {state}");
    } else {
        println!("{reference} {state}");
    }
    Ok(ExitCode::SUCCESS)
}

fn key_lines(keys: &[Value]) -> String {
    let mut out = String::new();
    for k in keys {
        out.push_str(&format!(
            "{}  {:<20} {:<8} created {}\n",
            k["id"].as_str().unwrap_or("?"),
            k["name"].as_str().unwrap_or("?"),
            if k["enabled"] == true {
                "enabled"
            } else {
                "revoked"
            },
            k["created_at"].as_str().unwrap_or("?"),
        ));
    }
    out
}

/// `squall apikey list`.
pub async fn apikey_list(config: &Config, remote: Option<Remote>, json: bool) -> Result<ExitCode> {
    let keys = match remote {
        Some(remote) => remote.get("/api/v1/apikeys").await?,
        None => {
            let engine = server::open_engine(config).await?;
            Value::Array(
                engine
                    .store
                    .list_api_keys()
                    .await?
                    .iter()
                    .map(squall_engine::describe::api_key_view)
                    .collect(),
            )
        }
    };
    print_json_or(json, &keys, || {
        key_lines(keys.as_array().map_or(&[], Vec::as_slice))
    });
    Ok(ExitCode::SUCCESS)
}

/// `squall apikey revoke ID|NAME`.
pub async fn apikey_revoke(config: &Config, remote: Option<Remote>, key: &str) -> Result<ExitCode> {
    let revoked = match remote {
        Some(remote) => remote.delete(&format!("/api/v1/apikeys/{key}")).await?["revoked"].clone(),
        None => {
            let engine = server::open_engine(config).await?;
            let revoked = engine.store.revoke_api_keys(key).await?;
            if revoked.is_empty() {
                bail!(
                    "no enabled API key with the id or name {key:?}; `squall apikey list` shows them"
                );
            }
            for k in &revoked {
                engine
                    .record_control(&cli_identity(), "apikey.revoke", &k.id, "cli")
                    .await;
            }
            Value::Array(
                revoked
                    .iter()
                    .map(squall_engine::describe::api_key_view)
                    .collect(),
            )
        }
    };
    print!(
        "revoked:\n{}",
        key_lines(revoked.as_array().map_or(&[], Vec::as_slice))
    );
    Ok(ExitCode::SUCCESS)
}

/// `squall trigger fire TRIGGER --payload JSON`.
pub async fn trigger_fire(
    config: &Config,
    remote: Option<Remote>,
    trigger: &str,
    payload: &str,
) -> Result<ExitCode> {
    let payload: Value =
        serde_json::from_str(payload).map_err(|e| anyhow!("--payload is not valid JSON: {e}"))?;
    let id = match remote {
        Some(remote) => remote
            .post(
                "/api/v1/webhooks/st2",
                &json!({"trigger": trigger, "payload": payload}),
            )
            .await?["trigger_instance_id"]
            .as_str()
            .unwrap_or("?")
            .to_owned(),
        None => {
            if !squall_engine::triggers::is_known(trigger)
                || trigger == squall_engine::triggers::WEBHOOK
            {
                bail!(
                    "trigger {trigger:?} cannot be fired here; use a pack trigger (pack.name) or one of: {}",
                    squall_engine::triggers::builtin_names()
                        .into_iter()
                        .filter(|t| *t != squall_engine::triggers::WEBHOOK)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let engine = server::open_engine(config).await?;
            engine
                .intake
                .fire(TriggerFiring {
                    trigger: trigger.to_owned(),
                    url: None,
                    payload,
                    source: "cli".into(),
                })
                .await?
        }
    };
    println!("fired {trigger} as trigger instance {id}");
    Ok(ExitCode::SUCCESS)
}

/// `30m`, `2h`, `7d` ago, or RFC 3339, as milliseconds since the epoch.
fn when(name: &str, value: &str) -> Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.timestamp_millis());
    }
    let (number, unit) = value.split_at(value.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| {
        anyhow!("--{name} {value:?}: give an RFC 3339 time or a duration ago like 30m, 2h, 7d")
    })?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("--{name} {value:?}: the unit must be s, m, h or d"),
    };
    Ok(now_ms() - n * ms)
}

/// `squall audit list`.
pub async fn audit(config: &Config, remote: Option<Remote>, cmd: AuditCommand) -> Result<ExitCode> {
    let AuditCommand::List {
        actor,
        kind,
        subject,
        since,
        until,
        limit,
        json,
    } = cmd;
    let since = since.map(|s| when("since", &s)).transpose()?;
    let until = until.map(|s| when("until", &s)).transpose()?;
    let rows = match remote {
        Some(remote) => {
            let mut query = vec![("limit", limit.to_string())];
            for (k, v) in [("actor", actor), ("kind", kind), ("subject", subject)] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            for (k, v) in [("since", since), ("until", until)] {
                if let Some(v) = v {
                    query.push((k, v.to_string()));
                }
            }
            let query = serde_urlencoded::to_string(&query)?;
            remote.get(&format!("/api/v1/audit?{query}")).await?
        }
        None => {
            let engine = server::open_engine(config).await?;
            let rows = engine
                .store
                .list_audit(&AuditFilter {
                    actor,
                    kind,
                    subject,
                    since,
                    until,
                    limit,
                })
                .await?;
            Value::Array(
                rows.iter()
                    .map(squall_engine::describe::audit_view)
                    .collect(),
            )
        }
    };
    print_json_or(json, &rows, || {
        let mut out = String::new();
        for r in rows.as_array().map_or(&[][..], Vec::as_slice) {
            let source = r["detail"]["source"].as_str().unwrap_or("");
            out.push_str(&format!(
                "{}  {:<24} {:<20} {}{}\n",
                r["at"].as_str().unwrap_or("?"),
                r["actor"].as_str().unwrap_or("?"),
                r["kind"].as_str().unwrap_or("?"),
                r["subject"].as_str().unwrap_or("?"),
                if source.is_empty() {
                    String::new()
                } else {
                    format!("  (from {source})")
                }
            ));
        }
        out
    });
    Ok(ExitCode::SUCCESS)
}

/// `squall alias help [FILTER]`.
pub async fn alias_help(
    config: &Config,
    remote: Option<Remote>,
    filter: Option<String>,
) -> Result<ExitCode> {
    let entries = match remote {
        Some(remote) => {
            let query = serde_urlencoded::to_string([("filter", filter.unwrap_or_default())])?;
            remote
                .get(&format!("/api/v1/actionalias/help?{query}"))
                .await?
        }
        None => {
            let catalog = squall_engine::load_catalog_lenient(
                &config.packs,
                &squall_engine::builtin_runners(),
            );
            Value::Array(
                catalog
                    .aliases
                    .help_entries(filter.as_deref().filter(|f| !f.is_empty()))
                    .into_iter()
                    .map(|e| json!({"alias": e.alias_id, "display": e.display, "description": e.description}))
                    .collect(),
            )
        }
    };
    let prefix = &config.chat.prefix;
    for e in entries.as_array().map_or(&[][..], Vec::as_slice) {
        let description = e["description"].as_str().unwrap_or("");
        println!(
            "{prefix}{}{}",
            e["display"].as_str().unwrap_or("?"),
            if description.is_empty() {
                String::new()
            } else {
                format!(" — {description}")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `squall alias execute TEXT`: run a chat command and wait for its results.
pub async fn alias_execute(
    config: &Config,
    remote: Option<Remote>,
    text: &str,
    timeout: u64,
    json: bool,
) -> Result<ExitCode> {
    let command = text.trim_start_matches(config.chat.prefix.as_str()).trim();
    let timeout = Duration::from_secs(timeout);
    let views = match remote {
        Some(remote) => {
            let started = remote
                .post("/api/v1/aliasexecution", &json!({"command": command}))
                .await?;
            let mut views = Vec::new();
            for id in started["executions"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
            {
                let id = id.as_str().context("an execution id")?;
                views.push(remote.wait(id, timeout).await?);
            }
            views
        }
        None => {
            let engine = server::open_engine(config).await?;
            let catalog = engine.catalog.current();
            let matched = catalog
                .aliases
                .match_command(command)
                .map_err(|e| anyhow!("{e}"))?;
            let alias = catalog
                .alias(&matched.alias_id)
                .cloned()
                .context("the alias is gone")?;
            let mut views = Vec::new();
            for params in matched.parameter_sets() {
                let context = ExecutionContext {
                    source: "cli".into(),
                    user: Some(cli_identity()),
                    ..ExecutionContext::default()
                };
                let id = engine
                    .request_execution(&alias.action_ref, params, Casting::FromText, context)
                    .await?;
                engine.run_inline(&id).await?;
                let model = engine.wait_for(&id, timeout).await?;
                views.push(
                    squall_engine::describe::execution_detail(&engine.store, &model, &catalog)
                        .await?,
                );
            }
            views
        }
    };
    let all = Value::Array(views.clone());
    print_json_or(json, &all, || {
        views
            .iter()
            .map(squall::output::execution_detail)
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(if views.iter().all(|v| v["status"] == "succeeded") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
