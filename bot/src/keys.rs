//! CLI: the key-value datastore, against a running server (`--server`) or
//! the database. Without a server the CLI acts as the operator of the
//! machine (it holds the key file anyway), so `--decrypt` needs no grant;
//! every change and decrypting read is audited as `cli:<login user>`.

use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

use squall::cli::KeyCommand;
use squall::config::Config;
use squall::output::pair_line;
use squall::server;
use squall_engine::datastore::KvSet;
use squall_engine::store::AuditEntry;

use super::{Remote, print_json_or};

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A list of pairs (the API's JSON form), as JSON or a line each.
fn print_list(json: bool, list: &Value) {
    print_json_or(json, list, || {
        let lines: Vec<String> = list
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(pair_line)
            .collect();
        if lines.is_empty() {
            "(no keys)".into()
        } else {
            lines.join("\n")
        }
    });
}

async fn audit(engine: &squall_engine::Engine, kind: &str, subject: String) {
    let entry = AuditEntry {
        actor: super::control::cli_identity(),
        kind: kind.into(),
        subject,
        detail: json!({"source": "cli"}),
    };
    if let Err(e) = engine.store.append_audit(&[entry]).await {
        tracing::warn!(error = %e, "writing an audit row failed");
    }
}

pub async fn key(config: &Config, remote: Option<Remote>, cmd: KeyCommand) -> Result<ExitCode> {
    if let Some(remote) = remote {
        return key_remote(&remote, cmd).await;
    }
    let engine = server::open_engine(config).await?;
    let datastore = &engine.datastore;
    match cmd {
        KeyCommand::List {
            scope,
            prefix,
            decrypt,
            json,
        } => {
            let pairs = datastore
                .list(scope.as_deref(), prefix.as_deref(), decrypt, 10_000)
                .await?;
            if decrypt && pairs.iter().any(|p| p.decrypted) {
                let scope = scope.as_deref().unwrap_or("*");
                let prefix = prefix.as_deref().unwrap_or("");
                audit(&engine, "key.decrypt", format!("key:{scope}/{prefix}*")).await;
            }
            print_list(json, &serde_json::to_value(&pairs)?);
        }
        KeyCommand::Get {
            name,
            scope,
            decrypt,
            json,
        } => {
            let pair = datastore.get(&scope.scope, &name, decrypt).await?;
            if pair.decrypted {
                audit(
                    &engine,
                    "key.decrypt",
                    format!("key:{}/{name}", scope.scope),
                )
                .await;
            }
            let view = serde_json::to_value(&pair)?;
            print_json_or(json, &view, || pair_line(&view));
        }
        KeyCommand::Set {
            name,
            value,
            scope,
            secret,
            ttl,
            json,
        } => {
            let value = parse_value(&value, json)?;
            let pair = datastore
                .set(&KvSet {
                    scope: scope.scope.clone(),
                    name: name.clone(),
                    value,
                    secret,
                    ttl,
                })
                .await?;
            audit(&engine, "key.set", format!("key:{}/{name}", scope.scope)).await;
            println!("{}", pair_line(&serde_json::to_value(&pair)?));
        }
        KeyCommand::Delete { name, scope } => {
            datastore.delete(&scope.scope, &name).await?;
            audit(&engine, "key.delete", format!("key:{}/{name}", scope.scope)).await;
            println!("deleted {}/{name}", scope.scope);
        }
        KeyCommand::Rotate => {
            let report = datastore.rotate(|n| eprintln!("re-encrypted {n}")).await?;
            audit(
                &engine,
                "key.rotate",
                format!("datastore-key:{}", report.new_key_id),
            )
            .await;
            println!(
                "re-encrypted {} secret(s); the datastore key is now {} (the old one is kept beside it as .previous)",
                report.resealed, report.new_key_id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_value(value: &str, json: bool) -> Result<Value> {
    if json {
        serde_json::from_str(value)
            .map_err(|e| anyhow!("VALUE is not JSON ({e}); leave out --json to store it as text"))
    } else {
        Ok(Value::String(value.to_owned()))
    }
}

async fn key_remote(remote: &Remote, cmd: KeyCommand) -> Result<ExitCode> {
    match cmd {
        KeyCommand::List {
            scope,
            prefix,
            decrypt,
            json,
        } => {
            let path = format!(
                "/api/v1/keys{}",
                query(&[
                    ("scope", scope),
                    ("prefix", prefix),
                    ("decrypt", decrypt.then(|| "true".to_owned())),
                ])
            );
            print_list(json, &remote.get(&path).await?);
        }
        KeyCommand::Get {
            name,
            scope,
            decrypt,
            json,
        } => {
            let path = format!(
                "/api/v1/keys/{}{}",
                encode(&name),
                query(&[
                    ("scope", Some(scope.scope)),
                    ("decrypt", decrypt.then(|| "true".to_owned())),
                ])
            );
            let view = remote.get(&path).await?;
            print_json_or(json, &view, || pair_line(&view));
        }
        KeyCommand::Set {
            name,
            value,
            scope,
            secret,
            ttl,
            json,
        } => {
            let value = parse_value(&value, json)?;
            let mut body = json!({"value": value, "secret": secret, "scope": scope.scope});
            if let Some(ttl) = ttl {
                body["ttl"] = json!(ttl);
            }
            let view = remote
                .put(&format!("/api/v1/keys/{}", encode(&name)), &body)
                .await?;
            println!("{}", pair_line(&view));
        }
        KeyCommand::Delete { name, scope } => {
            remote
                .delete(&format!(
                    "/api/v1/keys/{}{}",
                    encode(&name),
                    query(&[("scope", Some(scope.scope.clone()))])
                ))
                .await?;
            println!("deleted {}/{name}", scope.scope);
        }
        KeyCommand::Rotate => bail!(
            "key rotate works on the key files of the server's machine: run it there without --server"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
