//! `key` in chat: a person's own datastore pairs (`user:<platform>:<id>`,
//! the scope `st2kv.user.*` reads for the actions they start), and the
//! system scope for those granted `key:read` / `key:write`. Secrets are
//! never shown decrypted in chat and cannot be set from it (the value would
//! stay in the channel's history).

use serde_json::Value;

use squall_engine::datastore::{KvError, KvSet, SYSTEM};
use squall_engine::rbac::{Permission, Principal};

use super::{Dispatcher, Reply};
use squall_engine::chat::OutgoingMessage;

const USAGE: &str = "Usage: `key list [system]`, `key get [system] <name>`, \
`key set [system] <name> <value>`, `key delete [system] <name>`. \
Without `system` they work on your own pairs.";

impl Dispatcher {
    pub(super) async fn key_command(&self, reply: &Reply, principal: &Principal, rest: &str) {
        let text = match self.key_answer(principal, rest).await {
            Ok(text) => text,
            Err(KeyRefusal::Usage(why)) => format!("{why} {USAGE}"),
            Err(KeyRefusal::Denied(grant)) => format!(
                "You may not do that: it needs the `{grant}` grant ({}).",
                principal.identity
            ),
            Err(KeyRefusal::Store(err)) => match err {
                KvError::Invalid(_) | KvError::NotFound { .. } => err.to_string(),
                other => {
                    tracing::error!(error = %other, "a chat key command failed");
                    "The datastore could not answer; the error is in squall's log.".to_owned()
                }
            },
        };
        reply.say(OutgoingMessage::text(text)).await;
    }

    async fn key_answer(&self, principal: &Principal, rest: &str) -> Result<String, KeyRefusal> {
        let (verb, rest) = split_word(rest);
        let (system, rest) = match split_word(rest) {
            ("system", more) => (true, more),
            _ => (false, rest),
        };
        let scope = if system {
            SYSTEM.to_owned()
        } else {
            format!("user:{}", principal.identity)
        };
        let writes = matches!(verb, "set" | "delete");
        if system {
            let permission = if writes {
                Permission::KeyWrite
            } else {
                Permission::KeyRead
            };
            if !self.rbac.allows(principal, &permission) {
                return Err(KeyRefusal::Denied(permission.grant()));
            }
        }
        let datastore = &self.engine.datastore;
        match verb {
            "list" | "" => {
                let pairs = datastore.list(Some(&scope), None, false, 50).await?;
                if pairs.is_empty() {
                    return Ok(format!("No pairs in {scope}."));
                }
                let lines: Vec<String> = pairs
                    .iter()
                    .map(|p| crate::output::pair_line(&serde_json::to_value(p).unwrap_or_default()))
                    .collect();
                Ok(lines.join("\n"))
            }
            "get" => {
                let name = one_name(rest)?;
                let pair = datastore.get(&scope, name, false).await?;
                Ok(crate::output::pair_line(
                    &serde_json::to_value(pair).unwrap_or_default(),
                ))
            }
            "set" => {
                let (name, value) = split_word(rest);
                if name.is_empty() || value.is_empty() {
                    return Err(KeyRefusal::Usage("`key set` takes a name and a value."));
                }
                // JSON when it reads as JSON (`3`, `true`, `["a"]`), else text.
                let value = serde_json::from_str::<Value>(value)
                    .unwrap_or_else(|_| Value::String(value.to_owned()));
                let pair = datastore
                    .set(&KvSet {
                        scope: scope.clone(),
                        name: name.to_owned(),
                        value,
                        secret: false,
                        ttl: None,
                    })
                    .await?;
                self.engine
                    .record_control(
                        &principal.identity,
                        "key.set",
                        &format!("key:{scope}/{name}"),
                        "chat",
                    )
                    .await;
                Ok(format!(
                    "Set {}",
                    crate::output::pair_line(&serde_json::to_value(pair).unwrap_or_default())
                ))
            }
            "delete" => {
                let name = one_name(rest)?;
                datastore.delete(&scope, name).await?;
                self.engine
                    .record_control(
                        &principal.identity,
                        "key.delete",
                        &format!("key:{scope}/{name}"),
                        "chat",
                    )
                    .await;
                Ok(format!("Deleted {scope}/{name}."))
            }
            other => Err(KeyRefusal::Usage(if other == "decrypt" {
                "Secrets are not shown decrypted in chat."
            } else {
                "Unknown `key` verb."
            })),
        }
    }
}

enum KeyRefusal {
    Usage(&'static str),
    Denied(String),
    Store(KvError),
}

impl From<KvError> for KeyRefusal {
    fn from(err: KvError) -> Self {
        KeyRefusal::Store(err)
    }
}

fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim();
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    }
}

fn one_name(rest: &str) -> Result<&str, KeyRefusal> {
    match split_word(rest) {
        (name, "") if !name.is_empty() => Ok(name),
        _ => Err(KeyRefusal::Usage("Give one key name.")),
    }
}
