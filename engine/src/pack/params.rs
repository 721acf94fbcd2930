//! Action `parameters`: StackStorm's draft-04 JSON schema fragments with its own
//! extra keys (`position`, `secret`, `immutable`, boolean `required`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::doc::{Doc, Need, type_name};
use super::model::ParamSpec;

/// The JSON schema primitive types.
const TYPES: &[&str] = &[
    "string", "integer", "number", "boolean", "object", "array", "null",
];

/// StackStorm's own keys; they are not JSON schema, so they are removed before the
/// schema is compiled (`description` too: it is stored separately in `ParamSpec`).
const ST2_KEYS: &[&str] = &["position", "secret", "immutable", "required", "description"];

/// Keys a parameter may carry: draft-04 keywords (st2 validates with draft-04), the two
/// later annotation keywords packs use in practice, and st2's extras. Anything else is
/// most likely a typo (`defualt`) that JSON schema would silently ignore.
const PARAM_KEYS: &[&str] = &[
    "$ref",
    "additionalItems",
    "additionalProperties",
    "allOf",
    "anyOf",
    "const",
    "default",
    "definitions",
    "dependencies",
    "description",
    "enum",
    "examples",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "format",
    "immutable",
    "items",
    "maxItems",
    "maxLength",
    "maxProperties",
    "maximum",
    "minItems",
    "minLength",
    "minProperties",
    "minimum",
    "multipleOf",
    "not",
    "oneOf",
    "pattern",
    "patternProperties",
    "position",
    "properties",
    "required",
    "secret",
    "title",
    "type",
    "uniqueItems",
];

/// Parameters that st2 runners define themselves. An action may re-declare one of them
/// with only `immutable: true` (st2's `core.local` does this for `sudo`): the runner's
/// definition supplies the type and default, so no `default` is needed there.
fn runner_parameters(runner: Option<&str>) -> &'static [&'static str] {
    match runner {
        Some("local-shell-cmd") => &[
            "cmd",
            "cwd",
            "env",
            "kwarg_op",
            "sudo",
            "sudo_password",
            "timeout",
        ],
        Some("local-shell-script") => &[
            "content_version",
            "cwd",
            "debug",
            "env",
            "kwarg_op",
            "sudo",
            "sudo_password",
            "timeout",
        ],
        Some("http-request") => &[
            "allow_redirects",
            "cookies",
            "headers",
            "http_proxy",
            "https_proxy",
            "password",
            "url",
            "username",
            "verify_ssl_cert",
        ],
        Some("python-script") => &["content_version", "debug", "env", "log_level", "timeout"],
        _ => &[],
    }
}

/// Validates an action's `parameters` mapping (already known to be a mapping or absent).
pub(crate) fn parameters(
    doc: &mut Doc,
    action: &Map<String, Value>,
    runner: Option<&str>,
) -> BTreeMap<String, ParamSpec> {
    let mut out = BTreeMap::new();
    let Some(params) = doc.object(action, &["parameters"], Need::Optional) else {
        return out;
    };
    // position -> parameter that claimed it first, to report clashes by name.
    let mut positions: BTreeMap<u32, String> = BTreeMap::new();
    for (name, raw) in params {
        // st2's action schema only admits `^\w+$` parameter names; they become
        // template variables and `--name` script arguments.
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            doc.err(
                &["parameters", name],
                "parameter names may only contain letters, digits and '_'",
            );
        }
        let Value::Object(p) = raw else {
            let found = type_name(raw);
            doc.err(
                &["parameters", name],
                format!("expected a mapping (a JSON schema), found {found}"),
            );
            continue;
        };
        if let Some(spec) = parameter(doc, name, p, runner, &mut positions) {
            out.insert(name.clone(), spec);
        }
    }
    out
}

fn parameter(
    doc: &mut Doc,
    name: &str,
    p: &Map<String, Value>,
    runner: Option<&str>,
    positions: &mut BTreeMap<u32, String>,
) -> Option<ParamSpec> {
    let errors_before = doc.errors.len();
    let at = |key: &'static str| ["parameters", name, key];
    for key in p.keys().filter(|k| !PARAM_KEYS.contains(&k.as_str())) {
        doc.err(
            &["parameters", name, key],
            format!("unknown key (accepted keys: {})", PARAM_KEYS.join(", ")),
        );
    }
    check_type(doc, name, p.get("type"));

    let required = doc.boolean(p, &at("required")).unwrap_or(false);
    let secret = doc.boolean(p, &at("secret")).unwrap_or(false);
    let immutable = doc.boolean(p, &at("immutable")).unwrap_or(false);
    let description = doc
        .string(p, &at("description"), Need::Optional)
        .map(str::to_string);

    let position = match p.get("position") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => {
                if let Some(other) = positions.get(&n) {
                    doc.err(
                        &at("position"),
                        format!("position {n} is already used by parameter '{other}'"),
                    );
                } else {
                    positions.insert(n, name.to_string());
                }
                Some(n)
            }
            None => {
                doc.err(
                    &at("position"),
                    format!("must be a non-negative integer, found {v}"),
                );
                None
            }
        },
    };

    match p.get("enum") {
        None => {}
        Some(Value::Array(items)) if !items.is_empty() => {}
        Some(Value::Array(_)) => doc.err(&at("enum"), "must list at least one value"),
        Some(other) => doc.err(
            &at("enum"),
            format!("expected a list, found {}", type_name(other)),
        ),
    }

    // st2 treats `default: null` as "no default" (its runners declare `sudo_password`
    // that way), so null is not validated against e.g. `type: string`.
    let default = p.get("default").filter(|v| !v.is_null()).cloned();

    // StackStorm accepts this (the parameter then never has a value); so does
    // squall, with a warning.
    if immutable && default.is_none() && !runner_parameters(runner).contains(&name) {
        doc.warn(
            &at("immutable"),
            "an immutable parameter without a default never has a value",
        );
    }

    let mut schema: Map<String, Value> = p.clone();
    schema.retain(|k, _| !ST2_KEYS.contains(&k.as_str()));
    let mut schema = Value::Object(schema);
    normalize_nested_required(&mut schema);

    // Compiling a schema whose structure is already reported broken would only repeat
    // the same problem in jsonschema's words.
    let default = if doc.errors.len() == errors_before {
        compile_and_check_default(doc, name, &schema, default)
    } else {
        default
    };

    Some(ParamSpec {
        schema,
        required,
        default,
        secret,
        immutable,
        position,
        description,
    })
}

fn check_type(doc: &mut Doc, name: &str, ty: Option<&Value>) {
    let at = ["parameters", name, "type"];
    let expected = TYPES.join(", ");
    let check_one = |doc: &mut Doc, t: &Value| match t {
        Value::String(s) if TYPES.contains(&s.as_str()) => {}
        Value::String(s) => doc.err(
            &at,
            format!("unknown type '{s}' (expected one of {expected})"),
        ),
        other => doc.err(
            &at,
            format!("expected a type name, found {}", type_name(other)),
        ),
    };
    match ty {
        None => {}
        // JSON schema also allows a list of types (`type: [string, "null"]`).
        Some(Value::Array(list)) if !list.is_empty() => list.iter().for_each(|t| check_one(doc, t)),
        Some(Value::Array(_)) => doc.err(&at, "must name at least one type"),
        Some(t) => check_one(doc, t),
    }
}

/// Compile the schema and check the default against it. A default of the
/// wrong type is cast to the declared one when it can be (`0` for a boolean,
/// `"5"` for an integer), as StackStorm's loose typing lets pass; otherwise
/// kept as written with a warning (a run that relies on it fails its
/// parameter check then). Returns the default to use.
fn compile_and_check_default(
    doc: &mut Doc,
    name: &str,
    schema: &Value,
    default: Option<Value>,
) -> Option<Value> {
    let validator = match jsonschema::draft4::new(schema) {
        Ok(v) => v,
        Err(e) => {
            let mut at = vec!["parameters".to_string(), name.to_string()];
            at.extend(e.instance_path().iter().map(|seg| seg.to_string()));
            doc.err(&at, format!("invalid JSON schema: {e}"));
            return default;
        }
    };
    let default = default?;
    // A templated default (`{{ config_context.x }}`) is rendered when the action runs;
    // only the rendered value can be checked against the type.
    if default
        .as_str()
        .is_some_and(|s| s.contains("{{") || s.contains("{%"))
    {
        return Some(default);
    }
    let problems: Vec<String> = validator
        .iter_errors(&default)
        .map(|e| e.to_string())
        .collect();
    if problems.is_empty() {
        return Some(default);
    }
    let at = ["parameters", name, "default"];
    let cast = crate::params::cast_loosely(&default, schema);
    if cast != default && validator.is_valid(&cast) {
        doc.warn(
            &at,
            format!("default {default} is not of the declared type; using {cast}"),
        );
        return Some(cast);
    }
    doc.warn(
        &at,
        format!(
            "default does not match the parameter's schema ({}); a run that relies on it will be refused",
            problems.join("; ")
        ),
    );
    Some(default)
}

/// st2 validates with a draft-04 validator that also accepts draft-03 style
/// `required: true` on nested properties. Draft-04 wants `required: [names]` on the
/// parent, so rewrite nested booleans into that form (stock packs use both). A boolean
/// `required` with no parent property to move to (on an `items` schema) is dropped.
pub(crate) fn normalize_nested_required(schema: &mut Value) {
    let Value::Object(obj) = schema else { return };
    if matches!(obj.get("required"), Some(Value::Bool(_))) {
        obj.remove("required");
    }
    let mut newly_required = Vec::new();
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for (prop, sub) in props.iter_mut() {
            if let Value::Object(sub_obj) = sub
                && let Some(Value::Bool(flag)) = sub_obj.get("required").cloned()
            {
                sub_obj.remove("required");
                if flag {
                    newly_required.push(Value::String(prop.clone()));
                }
            }
            normalize_nested_required(sub);
        }
    }
    if !newly_required.is_empty() {
        match obj.get_mut("required") {
            Some(Value::Array(list)) => list.extend(newly_required),
            _ => {
                obj.insert("required".to_string(), Value::Array(newly_required));
            }
        }
    }
    for key in ["items", "additionalItems", "additionalProperties", "not"] {
        if let Some(sub) = obj.get_mut(key) {
            match sub {
                Value::Array(list) => list.iter_mut().for_each(normalize_nested_required),
                other => normalize_nested_required(other),
            }
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = obj.get_mut(key) {
            list.iter_mut().for_each(normalize_nested_required);
        }
    }
    for key in ["patternProperties", "definitions"] {
        if let Some(Value::Object(map)) = obj.get_mut(key) {
            map.values_mut().for_each(normalize_nested_required);
        }
    }
}
