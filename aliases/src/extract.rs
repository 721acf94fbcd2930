//! Turning a command into raw (string) parameter values.
//!
//! This owns st2's step 1 (cutting trailing `key=value` extras off the
//! command), step 4 (matching the prepared stream) and step 5 (merging
//! captured values, defaults and extras), plus the st2-compatible public
//! primitives [`extract_parameters`](crate::extract_parameters) and
//! [`inject_immutable_parameters`](crate::inject_immutable_parameters).
//! Values stay strings here; casting to action types happens in the index.

use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde_json::{Map, Value};

use crate::error::AliasError;
use crate::format::CompiledFormat;

// st2's snippets:
//   value  = ""|''|"(.+?)"|'(.+?)'|({.+?})|(\S+)
//   pairs  = (?:^|\s+)\s*(\S+?)\s*=(value)
//   ending = .*?((pairs\s*)*)$
const PAIR: &str = r#"(?:^|\s+)\s*(\S+?)\s*=(""|''|"(.+?)"|'(.+?)'|(\{.+?\})|(\S+))"#;
static PAIRS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("(?s){PAIR}")).expect("static regex"));
static ENDING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?s)^.*?((?:{PAIR}\s*)*)$")).expect("static regex"));

/// Where a parameter value came from; only user-supplied values may clash
/// with immutable parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Captured from the command by the format.
    Captured,
    /// An optional placeholder's default.
    Default,
    /// A trailing `key=value` extra.
    Extra,
}

/// A command with its trailing extras separated, ready to match formats.
#[derive(Debug)]
pub(crate) struct PreparedCommand<'a> {
    /// The command without its trailing `key=value` pairs.
    pub stripped: &'a str,
    /// `stripped` wrapped in one space on each side, exactly as st2 matches
    /// it (formats ending in `.` rely on the trailing space).
    pub stream: String,
    pub extras: Vec<(String, String)>,
}

impl<'a> PreparedCommand<'a> {
    pub(crate) fn new(command: &'a str) -> Self {
        let mut stripped = command;
        let mut extras = Vec::new();
        // Without an `=` there can be no pair; skipping saves a regex run on
        // the common path.
        if command.contains('=')
            && let Some(tail) = ENDING.captures(command).and_then(|c| c.get(1))
            && !tail.is_empty()
        {
            for pair in PAIRS.captures_iter(tail.as_str()) {
                let value: String = (3..=6)
                    .filter_map(|i| pair.get(i))
                    .map(|m| m.as_str())
                    .collect();
                extras.push((pair[1].to_string(), value));
            }
            // st2 removes every occurrence of the tail text (str.replace);
            // only the tail itself is cut here, which is what was meant.
            stripped = &command[..tail.start()];
        }
        PreparedCommand {
            stripped,
            stream: format!(" {stripped} "),
            extras,
        }
    }

    /// The first whitespace-separated word, which selects index buckets.
    pub(crate) fn first_word(&self) -> &str {
        self.stripped.split_whitespace().next().unwrap_or("")
    }
}

/// Collects a match's values in st2's precedence: captured values, then
/// defaults for omitted optional parameters, then extras (which win).
pub(crate) fn collect(
    format: &CompiledFormat,
    caps: &Captures<'_>,
    command: &PreparedCommand<'_>,
) -> Result<Vec<(String, String, Source)>, AliasError> {
    let mut values = Vec::with_capacity(format.placeholders.len() + command.extras.len());
    for (k, ph) in format.placeholders.iter().enumerate() {
        match (format.placeholder_value(caps, k), &ph.default) {
            // st2 uses the default when the captured value is falsy.
            (Some(v), _) if !v.is_empty() => {
                values.push((ph.name.clone(), v.to_string(), Source::Captured))
            }
            (_, Some(default)) => values.push((ph.name.clone(), default.clone(), Source::Default)),
            // A required placeholder inside an optional group of the
            // author's regex: st2 would report None; we leave it out.
            (_, None) => {}
        }
    }
    for (index, name) in &format.named_groups {
        if let Some(m) = caps.get(*index) {
            values.push((name.clone(), m.as_str().to_string(), Source::Captured));
        }
    }
    for (key, value) in &command.extras {
        values.push((key.clone(), value.clone(), Source::Extra));
    }
    let nothing = values.iter().all(|(_, v, _)| v.is_empty());
    if !format.source.is_empty() && command.stripped.trim().is_empty() && nothing {
        return Err(AliasError::NoValue);
    }
    Ok(values)
}

fn to_map(values: Vec<(String, String, Source)>) -> Map<String, Value> {
    values
        .into_iter()
        .map(|(k, v, _)| (k, Value::String(v)))
        .collect()
}

fn compile_standalone(format: &str) -> Result<CompiledFormat, AliasError> {
    CompiledFormat::compile(format).map_err(|reason| AliasError::InvalidFormat {
        alias_id: None,
        format: format.to_string(),
        reason,
    })
}

/// Extracts parameters from `param_stream` with one format, exactly like
/// st2's `extract_parameters(format_str, param_stream)`: every value is a
/// string, optional parameters fall back to their defaults, and trailing
/// `key=value` pairs are added (and win over the format).
///
/// Unlike st2, a named group of the author's regex that did not participate
/// is left out instead of being reported as a null value.
pub fn extract_parameters(
    format: &str,
    param_stream: &str,
) -> Result<Map<String, Value>, AliasError> {
    let compiled = compile_standalone(format)?;
    let command = PreparedCommand::new(param_stream);
    let caps = compiled
        .regex
        .captures(&command.stream)
        .ok_or_else(|| AliasError::NoMatch {
            command: param_stream.to_string(),
            format: format.to_string(),
        })?;
    collect(&compiled, &caps, &command).map(to_map)
}

/// The `match_multiple` variant: one parameter map per non-overlapping
/// occurrence of the format in the command (st2's `finditer`). Only formats
/// their author anchored (e.g. `(?:\b|^)fixes (?P<key>...)(?:\b|$)`) can
/// occur more than once; others are matched against the whole command.
pub fn extract_all_parameters(
    format: &str,
    param_stream: &str,
) -> Result<Vec<Map<String, Value>>, AliasError> {
    let compiled = compile_standalone(format)?;
    let command = PreparedCommand::new(param_stream);
    compiled
        .regex
        .captures_iter(&command.stream)
        .map(|caps| collect(&compiled, &caps, &command).map(to_map))
        .collect()
}

/// st2's `inject_immutable_parameters`: adds the alias's fixed parameters to
/// every execution's parameters, refusing if any was already supplied.
///
/// st2 also renders Jinja expressions in the fixed values; this crate is
/// pure and has no template engine, so values are injected verbatim and the
/// caller renders them if it supports templating.
pub fn inject_immutable_parameters(
    immutable_parameters: &Map<String, Value>,
    executions: &mut [Map<String, Value>],
) -> Result<(), AliasError> {
    for params in executions.iter_mut() {
        let overridden: Vec<String> = immutable_parameters
            .keys()
            .filter(|k| params.contains_key(*k))
            .cloned()
            .collect();
        if !overridden.is_empty() {
            return Err(AliasError::ImmutableOverride {
                parameters: overridden,
            });
        }
        params.extend(immutable_parameters.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_pairs_are_cut_and_collected() {
        let c = PreparedCommand::new(r#"deploy web a=1 b="x y" c={"k": 1}"#);
        assert_eq!(c.stripped, "deploy web");
        assert_eq!(c.stream, " deploy web ");
        assert_eq!(
            c.extras,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), r#"{"k": 1}"#.into())
            ]
        );
        assert_eq!(c.first_word(), "deploy");
    }

    #[test]
    fn pairs_in_the_middle_of_a_command_are_not_extras() {
        let c = PreparedCommand::new("set a=1 now");
        assert_eq!(c.stripped, "set a=1 now");
        assert!(c.extras.is_empty());
    }
}
