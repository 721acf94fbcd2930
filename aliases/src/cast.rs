//! Casting chat strings to action parameter types.
//!
//! Everything a user types arrives as text; the action declares JSON-schema
//! types. This module owns that conversion and its error wording (the
//! `reason` of [`MatchError::BadValue`](crate::MatchError::BadValue)), which
//! a chat user must be able to act on, so it names the expected type and
//! echoes the offending value.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// An action parameter's JSON-schema `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    /// Untyped (or a type this crate does not cast): the string is kept.
    Any,
}

impl ParamType {
    /// Maps a JSON-schema type name; unknown names (and `null`) become `Any`.
    pub fn from_schema_type(name: &str) -> ParamType {
        match name {
            "string" => ParamType::String,
            "integer" => ParamType::Integer,
            "number" => ParamType::Number,
            "boolean" => ParamType::Boolean,
            "array" => ParamType::Array,
            "object" => ParamType::Object,
            _ => ParamType::Any,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ParamType::String | ParamType::Any => "a string",
            ParamType::Integer => "a whole number (e.g. 3)",
            ParamType::Number => "a number (e.g. 2.5)",
            ParamType::Boolean => "true or false (yes/no, 1/0 also work)",
            ParamType::Array => "a comma-separated list or a JSON array",
            ParamType::Object => "a JSON object (e.g. {\"key\": \"value\"})",
        }
    }
}

/// Casts one value. Non-string values (from `immutable_parameters`) are
/// already typed by the alias author and pass through unchanged.
pub(crate) fn cast(value: Value, ty: ParamType) -> Result<Value, String> {
    let Value::String(text) = value else {
        return Ok(value);
    };
    let bad = || {
        format!(
            "expected {}, got \"{}\"",
            ty.describe(),
            truncate(&text, 60)
        )
    };
    let trimmed = text.trim();
    match ty {
        ParamType::String | ParamType::Any => Ok(Value::String(text)),
        ParamType::Integer => trimmed
            .strip_prefix('+')
            .unwrap_or(trimmed)
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad()),
        ParamType::Number => {
            if let Ok(i) = trimmed.parse::<i64>() {
                return Ok(Value::from(i));
            }
            trimmed
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(bad)
        }
        ParamType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(bad()),
        },
        ParamType::Array => {
            if trimmed.starts_with('[') {
                return match parse_json_like(trimmed) {
                    Some(v @ Value::Array(_)) => Ok(v),
                    _ => Err(bad()),
                };
            }
            // st2 casts a comma-delimited string to a list; blanks between
            // commas are dropped so "a, b," is ["a", "b"].
            Ok(Value::Array(
                trimmed
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            ))
        }
        ParamType::Object => match parse_json_like(trimmed) {
            Some(v @ Value::Object(_)) => Ok(v),
            _ => Err(bad()),
        },
    }
}

/// Casts every value that has a declared type.
pub(crate) fn cast_all(
    params: Map<String, Value>,
    types: &std::collections::BTreeMap<String, ParamType>,
) -> Result<Map<String, Value>, (String, String)> {
    params
        .into_iter()
        .map(|(name, value)| {
            let ty = types.get(&name).copied().unwrap_or(ParamType::Any);
            match cast(value, ty) {
                Ok(v) => Ok((name, v)),
                Err(reason) => Err((name, reason)),
            }
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// JSON, or failing that the Python-literal spelling st2 also accepts via
/// `ast.literal_eval` (`{'a': 'b'}`, `True`, `None`), which chat users type.
pub(crate) fn parse_json_like(text: &str) -> Option<Value> {
    serde_json::from_str(text)
        .ok()
        .or_else(|| serde_json::from_str(&python_literal_to_json(text)?).ok())
}

/// Rewrites single-quoted strings and `True`/`False`/`None`; returns `None`
/// on an unterminated string.
fn python_literal_to_json(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                out.push('"');
                loop {
                    let d = chars.next()?;
                    match d {
                        '\\' => {
                            let e = chars.next()?;
                            match e {
                                '\'' => out.push('\''),
                                '"' => out.push_str("\\\""),
                                other => {
                                    out.push('\\');
                                    out.push(other);
                                }
                            }
                        }
                        d if d == c => break,
                        '"' => out.push_str("\\\""),
                        d => out.push(d),
                    }
                }
                out.push('"');
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    if !(n.is_alphanumeric() || n == '_') {
                        break;
                    }
                    word.push(n);
                    chars.next();
                }
                out.push_str(match word.as_str() {
                    "True" => "true",
                    "False" => "false",
                    "None" => "null",
                    _ => &word,
                });
            }
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: &str, ty: ParamType) -> Value {
        cast(Value::String(v.into()), ty).unwrap()
    }

    #[test]
    fn strings_are_cast_to_declared_types() {
        assert_eq!(ok(" 42 ", ParamType::Integer), json!(42));
        assert_eq!(ok("2.5", ParamType::Number), json!(2.5));
        assert_eq!(ok("7", ParamType::Number), json!(7));
        assert_eq!(ok("Yes", ParamType::Boolean), json!(true));
        assert_eq!(ok("0", ParamType::Boolean), json!(false));
        assert_eq!(ok("a, b,,c", ParamType::Array), json!(["a", "b", "c"]));
        assert_eq!(ok("value2", ParamType::Array), json!(["value2"]));
        assert_eq!(ok("[1, \"x\"]", ParamType::Array), json!([1, "x"]));
        assert_eq!(ok(r#"{"a": 1}"#, ParamType::Object), json!({"a": 1}));
        assert_eq!(
            ok("{'a': 'c', 'b': True}", ParamType::Object),
            json!({"a": "c", "b": true})
        );
        assert_eq!(ok("text", ParamType::Any), json!("text"));
    }

    #[test]
    fn bad_values_name_the_expected_type() {
        for (v, ty, expected) in [
            ("abc", ParamType::Integer, "whole number"),
            ("1.5", ParamType::Integer, "whole number"),
            ("nan", ParamType::Number, "a number"),
            ("maybe", ParamType::Boolean, "true or false"),
            ("[1,", ParamType::Array, "list"),
            ("{broken", ParamType::Object, "JSON object"),
            ("[1]", ParamType::Object, "JSON object"),
        ] {
            let err = cast(Value::String(v.into()), ty).unwrap_err();
            assert!(err.contains(expected) && err.contains(v), "{v}: {err}");
        }
    }

    #[test]
    fn typed_values_from_the_alias_pass_through() {
        assert_eq!(cast(json!([1]), ParamType::Array).unwrap(), json!([1]));
        assert_eq!(cast(json!(3), ParamType::String).unwrap(), json!(3));
    }
}
