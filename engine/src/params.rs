//! Action parameters: merge a runner's parameters with an action's, apply
//! defaults, refuse immutable overrides, cast text to declared types and
//! validate every value against its JSON schema (draft 4, as StackStorm).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::pack::ParamSpec;

/// Text shown instead of a secret value anywhere outside the runner.
pub const MASK: &str = "********";

/// A problem with one parameter, phrased for the person who supplied it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parameter '{parameter}': {reason}")]
pub struct ParamError {
    pub parameter: String,
    pub reason: String,
}

/// Whether string values may be cast to the declared type. Values that came
/// from text (templates, CLI `k=v`, chat) are cast; JSON from the API is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Casting {
    FromText,
    Strict,
}

/// The compiled parameter set of one action.
pub struct ParamSet {
    specs: BTreeMap<String, ParamSpec>,
    validators: BTreeMap<String, jsonschema::Validator>,
}

impl std::fmt::Debug for ParamSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamSet")
            .field("specs", &self.specs)
            .finish_non_exhaustive()
    }
}

impl ParamSet {
    /// Merge runner parameters with the action's own (the action's attributes
    /// win) and compile a validator per parameter.
    pub fn build(
        runner: &BTreeMap<String, ParamSpec>,
        action: &BTreeMap<String, ParamSpec>,
    ) -> Result<ParamSet, ParamError> {
        let mut specs = runner.clone();
        for (name, spec) in action {
            let merged = match specs.remove(name) {
                Some(base) => merge(base, spec),
                None => spec.clone(),
            };
            specs.insert(name.clone(), merged);
        }
        let mut validators = BTreeMap::new();
        for (name, spec) in &specs {
            let validator = jsonschema::draft4::new(&spec.schema).map_err(|e| ParamError {
                parameter: name.clone(),
                reason: format!("invalid schema: {e}"),
            })?;
            validators.insert(name.clone(), validator);
        }
        Ok(ParamSet { specs, validators })
    }

    pub fn specs(&self) -> &BTreeMap<String, ParamSpec> {
        &self.specs
    }

    /// The full parameter map an execution runs with, or every problem found.
    /// `defaults` replaces declared defaults (those rendered from the
    /// datastore); a null there means the parameter has no default.
    pub fn resolve(
        &self,
        provided: &Map<String, Value>,
        casting: Casting,
        defaults: &Map<String, Value>,
    ) -> Result<Map<String, Value>, Vec<ParamError>> {
        let mut errors = Vec::new();
        let mut resolved = Map::new();
        for (name, value) in provided {
            let Some(spec) = self.specs.get(name) else {
                let known: Vec<&str> = self.specs.keys().map(String::as_str).collect();
                errors.push(ParamError {
                    parameter: name.clone(),
                    reason: format!(
                        "unknown parameter (this action takes: {})",
                        known.join(", ")
                    ),
                });
                continue;
            };
            // An immutable parameter may be given its own value again (a re-run passes
            // every stored parameter); a templated default compares as rendered.
            let own = defaults.get(name).or(spec.default.as_ref());
            if spec.immutable && own != Some(value) {
                errors.push(ParamError {
                    parameter: name.clone(),
                    reason: "is immutable and cannot be overridden".into(),
                });
                continue;
            }
            let value = match casting {
                Casting::FromText => cast(value, &spec.schema),
                Casting::Strict => value.clone(),
            };
            resolved.insert(name.clone(), value);
        }
        for (name, spec) in &self.specs {
            if resolved.contains_key(name) || provided.contains_key(name) {
                continue;
            }
            // A rendered default that came out null (a datastore key that
            // is not set) counts as no default.
            let default = match defaults.get(name) {
                Some(Value::Null) => None,
                Some(rendered) => Some(rendered),
                None => spec.default.as_ref(),
            };
            match default {
                Some(default) => {
                    resolved.insert(name.clone(), default.clone());
                }
                None if spec.required => errors.push(ParamError {
                    parameter: name.clone(),
                    reason: "is required".into(),
                }),
                None => {}
            }
        }
        for (name, value) in &resolved {
            if let Some(validator) = self.validators.get(name)
                && let Err(err) = validator.validate(value)
            {
                let shown = if self.specs.get(name).is_some_and(|s| s.secret) {
                    MASK.to_owned()
                } else {
                    truncate(&value.to_string(), 80)
                };
                errors.push(ParamError {
                    parameter: name.clone(),
                    reason: format!("{} (got {shown})", describe(&err, &self.specs[name].schema)),
                });
            }
        }
        if errors.is_empty() {
            Ok(resolved)
        } else {
            errors.sort_by(|a, b| a.parameter.cmp(&b.parameter));
            Err(errors)
        }
    }

    /// A copy of `params` with secret values replaced by [`MASK`].
    pub fn mask(&self, params: &Value) -> Value {
        let Value::Object(map) = params else {
            return params.clone();
        };
        Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let secret = self.specs.get(k).is_some_and(|s| s.secret);
                    let shown = if secret && !v.is_null() {
                        Value::String(MASK.into())
                    } else {
                        v.clone()
                    };
                    (k.clone(), shown)
                })
                .collect(),
        )
    }

    /// Names of secret parameters.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.specs
            .iter()
            .filter(|(_, s)| s.secret)
            .map(|(n, _)| n.as_str())
    }

    /// The values `params` gives the secret parameters.
    pub fn secret_values(&self, params: &Map<String, Value>) -> crate::secrets::Secrets {
        crate::secrets::Secrets::from_values(
            self.secret_names().filter_map(|name| params.get(name)),
        )
    }
}

fn merge(base: ParamSpec, over: &ParamSpec) -> ParamSpec {
    let mut schema = base.schema;
    if let (Value::Object(base_schema), Value::Object(over_schema)) = (&mut schema, &over.schema) {
        for (k, v) in over_schema {
            base_schema.insert(k.clone(), v.clone());
        }
    }
    ParamSpec {
        schema,
        required: base.required || over.required,
        default: over.default.clone().or(base.default),
        secret: base.secret || over.secret,
        immutable: base.immutable || over.immutable,
        position: over.position.or(base.position),
        description: over.description.clone().or(base.description),
    }
}

fn declared_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// [`cast`] for any scalar: a number or boolean is read as its text first
/// (a pack's `default: 0` on a boolean, `default: 8080` on a string).
pub(crate) fn cast_loosely(value: &Value, schema: &Value) -> Value {
    let text = match value {
        Value::String(_) => return cast(value, schema),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return value.clone(),
    };
    if declared_types(schema).contains(&"string") {
        return Value::String(text);
    }
    cast(&Value::String(text), schema)
}

/// StackStorm-style casts of text to the declared type; a value that does not
/// cast is left alone so validation reports it.
fn cast(value: &Value, schema: &Value) -> Value {
    let Value::String(text) = value else {
        return value.clone();
    };
    let types = declared_types(schema);
    if types.is_empty() || types.contains(&"string") {
        return value.clone();
    }
    let trimmed = text.trim();
    for ty in types {
        let cast = match ty {
            "integer" => trimmed.parse::<i64>().ok().map(Value::from),
            "number" => trimmed.parse::<f64>().ok().and_then(|f| {
                if f.fract() == 0.0 && f.abs() < 9e15 {
                    Some(Value::from(f as i64))
                } else {
                    serde_json::Number::from_f64(f).map(Value::Number)
                }
            }),
            "boolean" => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Some(Value::Bool(true)),
                "false" | "no" | "0" | "off" => Some(Value::Bool(false)),
                _ => None,
            },
            "array" => match serde_json::from_str::<Value>(trimmed) {
                Ok(v @ Value::Array(_)) => Some(v),
                _ if trimmed.is_empty() => Some(Value::Array(Vec::new())),
                _ => Some(Value::Array(
                    trimmed
                        .split(',')
                        .map(|s| Value::String(s.trim().to_owned()))
                        .collect(),
                )),
            },
            "object" => match serde_json::from_str::<Value>(trimmed) {
                Ok(v @ Value::Object(_)) => Some(v),
                _ => None,
            },
            "null" if trimmed.is_empty() || trimmed == "null" => Some(Value::Null),
            _ => None,
        };
        if let Some(v) = cast {
            return v;
        }
    }
    value.clone()
}

fn describe(err: &jsonschema::ValidationError<'_>, schema: &Value) -> String {
    let types = declared_types(schema);
    let message = err.to_string();
    if message.contains("is not of type") && !types.is_empty() {
        format!("expected {}", types.join(" or "))
    } else {
        message
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(schema: Value) -> ParamSpec {
        ParamSpec {
            schema,
            required: false,
            default: None,
            secret: false,
            immutable: false,
            position: None,
            description: None,
        }
    }

    fn set() -> ParamSet {
        let mut runner = BTreeMap::new();
        let mut cmd = spec(json!({"type": "string"}));
        cmd.required = true;
        runner.insert("cmd".into(), cmd);
        runner.insert("timeout".into(), {
            let mut t = spec(json!({"type": "integer"}));
            t.default = Some(json!(60));
            t
        });
        let mut action = BTreeMap::new();
        action.insert("cmd".into(), {
            let mut c = spec(json!({}));
            c.default = Some(json!("echo {{ msg }}"));
            c.immutable = true;
            c
        });
        action.insert("count".into(), spec(json!({"type": "integer"})));
        action.insert("token".into(), {
            let mut t = spec(json!({"type": "string"}));
            t.secret = true;
            t
        });
        ParamSet::build(&runner, &action).expect("valid")
    }

    #[test]
    fn defaults_fill_missing_parameters() {
        let resolved = set()
            .resolve(&Map::new(), Casting::Strict, &Map::new())
            .expect("valid");
        assert_eq!(resolved["cmd"], json!("echo {{ msg }}"));
        assert_eq!(resolved["timeout"], json!(60));
    }

    #[test]
    fn wrong_type_names_the_parameter() {
        let provided = json!({"count": "many"});
        let errors = set()
            .resolve(
                provided.as_object().expect("object"),
                Casting::FromText,
                &Map::new(),
            )
            .expect_err("invalid");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].parameter, "count");
        assert_eq!(
            errors[0].to_string(),
            "parameter 'count': expected integer (got \"many\")"
        );
    }

    #[test]
    fn text_is_cast_to_the_declared_type() {
        let provided = json!({"count": "42"});
        let resolved = set()
            .resolve(
                provided.as_object().expect("object"),
                Casting::FromText,
                &Map::new(),
            )
            .expect("valid");
        assert_eq!(resolved["count"], json!(42));
    }

    #[test]
    fn strict_casting_keeps_strings() {
        let provided = json!({"count": "42"});
        assert!(
            set()
                .resolve(
                    provided.as_object().expect("object"),
                    Casting::Strict,
                    &Map::new()
                )
                .is_err()
        );
    }

    #[test]
    fn immutable_parameter_cannot_be_overridden() {
        let provided = json!({"cmd": "rm -rf /"});
        let errors = set()
            .resolve(
                provided.as_object().expect("object"),
                Casting::Strict,
                &Map::new(),
            )
            .expect_err("immutable");
        assert_eq!(
            errors[0].to_string(),
            "parameter 'cmd': is immutable and cannot be overridden"
        );
    }

    #[test]
    fn unknown_parameter_is_refused_with_the_known_list() {
        let provided = json!({"nope": 1});
        let errors = set()
            .resolve(
                provided.as_object().expect("object"),
                Casting::Strict,
                &Map::new(),
            )
            .expect_err("unknown");
        assert!(
            errors[0].reason.contains("count, timeout, token"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn secrets_are_masked_and_never_echoed_in_errors() {
        let set = set();
        let masked = set.mask(&json!({"token": "hunter2", "count": 1}));
        assert_eq!(masked, json!({"token": MASK, "count": 1}));
        let provided = json!({"token": 12345});
        let errors = set
            .resolve(
                provided.as_object().expect("object"),
                Casting::Strict,
                &Map::new(),
            )
            .expect_err("wrong type");
        assert!(!errors[0].to_string().contains("12345"));
    }
}
