//! Pack configuration, as StackStorm keeps it.
//!
//! A pack declares its settings in `config.schema.yaml` (a mapping of name to a JSON
//! schema fragment, with StackStorm's `required: true` and `secret: true` flags); an
//! operator writes the values in `configs/<pack>.yaml` beside the packs directory. The
//! values are the schema's defaults overlaid with that file, checked against the schema
//! when the pack loads. Python actions read them as `self.config`, parameter defaults as
//! `{{ config_context.x }}`; the values of `secret: true` settings are masked wherever
//! an execution shows them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::secrets::Secrets;

/// A pack's configuration values and which of them are secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PackConfig {
    /// The values (an object; empty when the pack has neither schema nor file).
    pub values: Value,
    /// The file the values came from, when there is one.
    pub file: Option<PathBuf>,
    /// Values of the settings marked `secret: true`.
    #[serde(skip)]
    secret_values: Vec<Value>,
}

impl PackConfig {
    /// The secret values, for an execution's masking set.
    pub fn secrets(&self) -> Secrets {
        Secrets::from_values(&self.secret_values)
    }
}

/// A problem with a pack's configuration: `file`, `field` (dotted) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    pub file: PathBuf,
    pub field: String,
    pub reason: String,
}

/// What loading a pack's configuration found: the configuration, errors (the values
/// break the schema: the pack is refused) and warnings (required settings nobody set
/// because there is no config file yet: actions needing them will fail).
#[derive(Debug, Default)]
pub struct Loaded {
    pub config: PackConfig,
    pub errors: Vec<ConfigProblem>,
    pub warnings: Vec<ConfigProblem>,
}

/// Where StackStorm keeps a pack's config: `configs/<pack>.yaml` in `configs_dir`, or
/// beside the directory holding the pack.
pub fn config_file(pack_dir: &Path, pack: &str, configs_dir: Option<&Path>) -> Option<PathBuf> {
    let dir = match configs_dir {
        Some(dir) => dir.to_path_buf(),
        None => pack_dir.parent()?.parent()?.join("configs"),
    };
    Some(dir.join(format!("{pack}.yaml")))
}

/// Load and check `pack`'s configuration (`schema` is its parsed `config.schema.yaml`).
pub fn load(
    pack_dir: &Path,
    pack: &str,
    schema: Option<&Value>,
    configs_dir: Option<&Path>,
) -> Loaded {
    load_without(pack_dir, pack, schema, configs_dir, &BTreeSet::new())
}

/// [`load`] ignoring the file's top-level settings named in `skip` (their
/// schema defaults apply); `""` in `skip` ignores the whole file.
pub fn load_without(
    pack_dir: &Path,
    pack: &str,
    schema: Option<&Value>,
    configs_dir: Option<&Path>,
    skip: &BTreeSet<String>,
) -> Loaded {
    let file = config_file(pack_dir, pack, configs_dir)
        .filter(|f| f.is_file())
        .filter(|_| !skip.contains(""));
    let schema_file = pack_dir.join("config.schema.yaml");
    let mut loaded = Loaded::default();
    let mut values = Map::new();
    if let Some(file) = &file {
        let problem = |reason: String| ConfigProblem {
            file: file.clone(),
            field: String::new(),
            reason,
        };
        match std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|text| yaml_serde::from_str::<Value>(&text).map_err(|e| e.to_string()))
        {
            Ok(Value::Object(map)) => {
                values = map;
                values.retain(|name, _| !skip.contains(name));
            }
            Ok(Value::Null) => {}
            Ok(other) => loaded.errors.push(problem(format!(
                "a pack config must be a mapping of setting to value, not {}",
                super::doc::type_name(&other)
            ))),
            Err(e) => loaded.errors.push(problem(e)),
        }
    }
    let Some(Value::Object(props)) = schema else {
        loaded.config = PackConfig {
            values: Value::Object(values),
            file,
            secret_values: Vec::new(),
        };
        return loaded;
    };
    apply_defaults(props, &mut values);
    // StackStorm's dialect as standard JSON schema: the settings are the properties of
    // one object, and `required: true` flags move into `required` lists, as for
    // action parameters (`secret` is not a JSON schema keyword; validators skip it).
    let mut json_schema = serde_json::json!({"type": "object", "properties": props});
    super::params::normalize_nested_required(&mut json_schema);
    let instance = Value::Object(values);
    match jsonschema::draft4::new(&json_schema) {
        Ok(validator) => {
            for error in validator.iter_errors(&instance) {
                let mut field: Vec<String> = error
                    .instance_path()
                    .iter()
                    .map(|seg| seg.to_string())
                    .collect();
                // A missing setting has no value to leak; any other message quotes
                // the value, which must not show for a secret setting.
                let reason = match error.kind() {
                    jsonschema::error::ValidationErrorKind::Required { property } => {
                        let name = property.as_str().unwrap_or_default().to_owned();
                        field.push(name.clone());
                        format!("required setting `{name}` is not set")
                    }
                    _ => mask_reason(&error.to_string(), props, &field),
                };
                let problem = ConfigProblem {
                    file: file.clone().unwrap_or_else(|| schema_file.clone()),
                    field: field.join("."),
                    reason,
                };
                let missing_without_file = file.is_none()
                    && matches!(
                        error.kind(),
                        jsonschema::error::ValidationErrorKind::Required { .. }
                    );
                if missing_without_file {
                    loaded.warnings.push(ConfigProblem {
                        reason: format!(
                            "{}; write it in {}",
                            problem.reason,
                            config_file(pack_dir, pack, configs_dir).map_or_else(
                                || "configs/<pack>.yaml".into(),
                                |f| f.display().to_string()
                            )
                        ),
                        ..problem
                    });
                } else {
                    loaded.errors.push(problem);
                }
            }
        }
        Err(e) => loaded.errors.push(ConfigProblem {
            file: schema_file.clone(),
            field: e
                .instance_path()
                .iter()
                .map(|seg| seg.to_string())
                .collect::<Vec<_>>()
                .join("."),
            reason: format!("invalid JSON schema: {e}"),
        }),
    }
    let mut secret_values = Vec::new();
    collect_secrets(props, &instance, &mut secret_values);
    loaded.config = PackConfig {
        values: instance,
        file,
        secret_values,
    };
    loaded
}

/// Defaults for settings the file leaves out, nested objects included.
fn apply_defaults(props: &Map<String, Value>, values: &mut Map<String, Value>) {
    for (name, spec) in props {
        match values.get_mut(name) {
            Some(Value::Object(inner)) => {
                if let Some(Value::Object(nested)) = spec.get("properties") {
                    apply_defaults(nested, inner);
                }
            }
            Some(_) => {}
            None => {
                // StackStorm leaves a `default: null` setting unset.
                if let Some(default) = spec.get("default").filter(|d| !d.is_null()) {
                    values.insert(name.clone(), default.clone());
                } else if let Some(Value::Object(nested)) = spec.get("properties") {
                    let mut inner = Map::new();
                    apply_defaults(nested, &mut inner);
                    if !inner.is_empty() {
                        values.insert(name.clone(), Value::Object(inner));
                    }
                }
            }
        }
    }
}

/// The schema of the setting at `path` (a property name, an array index into `items`,
/// or a key under `additionalProperties`), with whether it or a parent is secret.
fn secret_at(props: &Map<String, Value>, path: &[String]) -> bool {
    let mut spec: Option<&Value> = None;
    let mut level = props;
    for segment in path {
        let next = match spec {
            None => level.get(segment),
            Some(s) => match (
                s.get("properties"),
                s.get("items"),
                s.get("additionalProperties"),
            ) {
                (Some(Value::Object(p)), _, _) if p.contains_key(segment) => p.get(segment),
                (_, Some(items), _) if segment.parse::<usize>().is_ok() => Some(items),
                (_, _, Some(extra)) if extra.is_object() => Some(extra),
                _ => None,
            },
        };
        let Some(next) = next else { return false };
        if next.get("secret").and_then(Value::as_bool) == Some(true) {
            return true;
        }
        if let Some(Value::Object(p)) = next.get("properties") {
            level = p;
        }
        spec = Some(next);
    }
    false
}

/// A validation message quotes the offending value; for a secret setting it must not.
fn mask_reason(reason: &str, props: &Map<String, Value>, path: &[String]) -> String {
    if secret_at(props, path) {
        format!(
            "the value of secret setting `{}` is not valid",
            path.join(".")
        )
    } else {
        reason.to_owned()
    }
}

/// The values of secret settings in `values`, nested ones included: under `properties`,
/// in each item of an array (`items`) and each value of a map (`additionalProperties`).
fn collect_secrets(props: &Map<String, Value>, values: &Value, out: &mut Vec<Value>) {
    for (name, spec) in props {
        if let Some(value) = values.get(name) {
            collect_in(spec, value, out);
        }
    }
}

fn collect_in(spec: &Value, value: &Value, out: &mut Vec<Value>) {
    if spec.get("secret").and_then(Value::as_bool) == Some(true) {
        out.push(value.clone());
        return;
    }
    match value {
        Value::Object(map) => {
            let props = spec.get("properties").and_then(Value::as_object);
            if let Some(props) = props {
                collect_secrets(props, value, out);
            }
            if let Some(extra) = spec.get("additionalProperties").filter(|e| e.is_object()) {
                for (key, item) in map {
                    if !props.is_some_and(|p| p.contains_key(key)) {
                        collect_in(extra, item, out);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_spec) = spec.get("items").filter(|i| i.is_object()) {
                for item in items {
                    collect_in(item_spec, item, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, pack: &str, schema: &str, config: Option<&str>) -> PathBuf {
        let pack_dir = dir.join("packs").join(pack);
        std::fs::create_dir_all(&pack_dir).unwrap();
        std::fs::write(pack_dir.join("config.schema.yaml"), schema).unwrap();
        if let Some(config) = config {
            std::fs::create_dir_all(dir.join("configs")).unwrap();
            std::fs::write(dir.join("configs").join(format!("{pack}.yaml")), config).unwrap();
        }
        pack_dir
    }

    fn schema_of(pack_dir: &Path) -> Value {
        yaml_serde::from_str(&std::fs::read_to_string(pack_dir.join("config.schema.yaml")).unwrap())
            .unwrap()
    }

    const SCHEMA: &str = "
before: {type: string, default: null}
accounts:
  type: array
  items:
    type: object
    required: true
    properties:
      name: {type: string, required: true}
api_url: {type: string, default: 'https://api.example.com', required: true}
token: {type: string, secret: true, required: true}
retries: {type: integer, default: 3}
proxy:
  type: object
  properties:
    host: {type: string, default: proxy.local}
    password: {type: string, secret: true}
";

    #[test]
    fn defaults_fill_what_the_file_leaves_out_and_secrets_are_known() {
        let dir = tempfile::tempdir().unwrap();
        let pack_dir = write(
            dir.path(),
            "ops",
            SCHEMA,
            Some("token: s3cr3t-token\nproxy: {password: hunter22}\n"),
        );
        let loaded = load(&pack_dir, "ops", Some(&schema_of(&pack_dir)), None);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(
            loaded.config.values,
            json!({"api_url": "https://api.example.com", "token": "s3cr3t-token", "retries": 3,
                   "proxy": {"host": "proxy.local", "password": "hunter22"}})
        );
        let masked = loaded
            .config
            .secrets()
            .scrub_text("token s3cr3t-token pass hunter22 url https://api.example.com");
        assert!(
            !masked.contains("s3cr3t-token") && !masked.contains("hunter22"),
            "{masked}"
        );
        assert!(masked.contains("https://api.example.com"));
    }

    #[test]
    fn values_breaking_the_schema_are_errors_that_never_quote_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let pack_dir = write(
            dir.path(),
            "ops",
            SCHEMA,
            Some("token: 12345678\nretries: many\n"),
        );
        let loaded = load(&pack_dir, "ops", Some(&schema_of(&pack_dir)), None);
        let fields: Vec<&str> = loaded.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["retries", "token"], "{:?}", loaded.errors);
        assert!(loaded.errors.iter().all(|e| !e.reason.contains("12345678")));
        assert!(
            loaded.errors[0].reason.contains("many"),
            "{:?}",
            loaded.errors[0]
        );
    }

    #[test]
    fn a_missing_required_setting_is_an_error_with_a_file_and_a_warning_without() {
        let dir = tempfile::tempdir().unwrap();
        let pack_dir = write(dir.path(), "ops", SCHEMA, None);
        let loaded = load(&pack_dir, "ops", Some(&schema_of(&pack_dir)), None);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0]
                .reason
                .contains("required setting `token`"),
            "{:?}",
            loaded.warnings
        );
        assert!(loaded.warnings[0].reason.contains("configs/ops.yaml"));

        let pack_dir = write(dir.path(), "ops2", SCHEMA, Some("retries: 1\n"));
        let loaded = load(&pack_dir, "ops2", Some(&schema_of(&pack_dir)), None);
        assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
        assert_eq!(loaded.errors[0].field, "token");
        assert!(loaded.errors[0].file.ends_with("configs/ops2.yaml"));
    }

    #[test]
    fn secrets_inside_lists_and_maps_are_masked_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let schema = "
accounts:
  type: array
  items:
    type: object
    properties:
      name: {type: string}
      password: {type: string, secret: true}
tokens:
  type: object
  additionalProperties: {type: string, secret: true}
";
        let pack_dir = write(
            dir.path(),
            "ops",
            schema,
            Some(
                "accounts: [{name: a, password: p4ssw0rd-a}, {name: b, password: 424242}]\ntokens: {ci: t0ken-ci}\n",
            ),
        );
        let loaded = load(&pack_dir, "ops", Some(&schema_of(&pack_dir)), None);
        let masked = loaded.config.secrets().scrub_text("p4ssw0rd-a t0ken-ci");
        assert_eq!(masked, "******** ********");
        assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
        assert_eq!(loaded.errors[0].field, "accounts.1.password");
        assert!(
            !loaded.errors[0].reason.contains("424242"),
            "{:?}",
            loaded.errors
        );
    }

    #[test]
    fn a_config_file_that_is_not_a_mapping_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let pack_dir = write(dir.path(), "ops", SCHEMA, Some("- a\n- b\n"));
        let loaded = load(&pack_dir, "ops", Some(&schema_of(&pack_dir)), None);
        assert!(
            loaded.errors[0].reason.contains("not a list"),
            "{:?}",
            loaded.errors
        );
    }
}
