//! One content file: its YAML parsed into JSON values, plus the error sink that
//! stamps every problem with the file, a dotted field path and (best effort) a line.
//!
//! The model stores `serde_json::Value`s (parameter schemas, criteria, templates), and
//! JSON-schema validation works on them, so YAML is converted once, here, reporting
//! anything JSON cannot represent instead of silently coercing it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::loader::PackError;

/// Whether a missing (or null) key is an error.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Required,
    Optional,
}

/// The keys a mapping may carry.
pub(crate) struct Keys {
    /// Keys squall reads.
    pub accepted: &'static [&'static str],
    /// StackStorm keys that are meaningless to squall but harmless (ids, tags, ...):
    /// accepted so stock packs load unchanged, then dropped.
    pub ignored: &'static [&'static str],
    /// StackStorm keys whose behaviour squall does not implement: loading them
    /// silently would make the pack behave differently than its author expects.
    pub unsupported: &'static [&'static str],
}

/// A parsed file and the problems found in it so far.
pub(crate) struct Doc {
    pub file: PathBuf,
    src: String,
    pub errors: Vec<PackError>,
    /// Problems StackStorm lets pass, so squall loads the pack and says so.
    pub warnings: Vec<PackError>,
}

impl Doc {
    /// Reads and parses `file`; the mapping is `None` when the file is unreadable,
    /// not YAML, or not a mapping at the top (each reported).
    pub fn read(file: &Path) -> (Doc, Option<Map<String, Value>>) {
        let mut doc = Doc {
            file: file.to_path_buf(),
            src: String::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        match std::fs::read_to_string(file) {
            Ok(src) => doc.src = src,
            Err(e) => {
                doc.err::<&str>(&[], format!("cannot read file: {e}"));
                return (doc, None);
            }
        }
        let mut yaml = match yaml_serde::from_str::<yaml_serde::Value>(&doc.src) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map(|l| l.line());
                doc.push(String::new(), format!("invalid YAML: {e}"), line);
                return (doc, None);
            }
        };
        // st2 loads packs with PyYAML, which honours `<<` merge keys; so do we.
        if let Err(e) = yaml.apply_merge() {
            doc.err::<&str>(&[], format!("invalid YAML merge key: {e}"));
            return (doc, None);
        }
        match doc.convert(yaml, &mut Vec::new()) {
            Value::Object(map) => (doc, Some(map)),
            Value::Null => {
                doc.err::<&str>(&[], "file is empty (expected a mapping)");
                (doc, None)
            }
            other => {
                let found = type_name(&other);
                doc.err::<&str>(&[], format!("top level must be a mapping, found {found}"));
                (doc, None)
            }
        }
    }

    /// Records a problem at field path `at` (segments, joined with `.`).
    pub fn err<S: AsRef<str>>(&mut self, at: &[S], reason: impl Into<String>) {
        let line = find_line(&self.src, at);
        let field = at.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(".");
        self.push(field, reason.into(), line);
    }

    /// Records something StackStorm accepts but a pack author should fix.
    pub fn warn<S: AsRef<str>>(&mut self, at: &[S], reason: impl Into<String>) {
        let line = find_line(&self.src, at);
        let field = at.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(".");
        self.warnings.push(PackError {
            file: self.file.clone(),
            field,
            reason: reason.into(),
            line,
        });
    }

    pub fn push(&mut self, field: String, reason: String, line: Option<usize>) {
        self.errors.push(PackError {
            file: self.file.clone(),
            field,
            reason,
            line,
        });
    }

    /// Best-effort line of field `at`, for errors raised after the file is gone.
    pub fn line_of(&self, at: &[&str]) -> Option<usize> {
        find_line(&self.src, at)
    }

    /// Reports every key of `map` (at path `at`) that `keys` does not allow.
    pub fn check_keys(&mut self, map: &Map<String, Value>, at: &[&str], keys: &Keys) {
        for key in map.keys() {
            let key = key.as_str();
            if keys.accepted.contains(&key) || keys.ignored.contains(&key) {
                continue;
            }
            let path = with(at, key);
            if keys.unsupported.contains(&key) {
                self.err(&path, "not supported by squall");
            } else {
                let mut all: Vec<&str> =
                    keys.accepted.iter().chain(keys.ignored).copied().collect();
                all.sort_unstable();
                self.err(
                    &path,
                    format!("unknown key (accepted keys: {})", all.join(", ")),
                );
            }
        }
    }

    /// A string field; null counts as absent (`description:` with nothing after it).
    pub fn string<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        at: &[&str],
        need: Need,
    ) -> Option<&'v str> {
        match lookup(map, at) {
            None | Some(Value::Null) => {
                if need == Need::Required {
                    self.err(at, "is required");
                }
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() && need == Need::Required => {
                self.err(at, "must not be empty");
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.err(at, format!("expected a string, found {}", type_name(other)));
                None
            }
        }
    }

    /// An optional boolean field.
    pub fn boolean(&mut self, map: &Map<String, Value>, at: &[&str]) -> Option<bool> {
        match lookup(map, at) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.err(
                    at,
                    format!("expected a boolean, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional mapping field (null counts as absent).
    pub fn object<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        at: &[&str],
        need: Need,
    ) -> Option<&'v Map<String, Value>> {
        match lookup(map, at) {
            None | Some(Value::Null) => {
                if need == Need::Required {
                    self.err(at, "is required");
                }
                None
            }
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                self.err(
                    at,
                    format!("expected a mapping, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// Converts parsed YAML to JSON, reporting what JSON cannot hold.
    fn convert(&mut self, value: yaml_serde::Value, at: &mut Vec<String>) -> Value {
        use yaml_serde::Value as Y;
        match value {
            Y::Null => Value::Null,
            Y::Bool(b) => Value::Bool(b),
            Y::String(s) => Value::String(s),
            Y::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::from(i)
                } else if let Some(u) = n.as_u64() {
                    Value::from(u)
                } else if let Some(num) = n.as_f64().and_then(serde_json::Number::from_f64) {
                    Value::Number(num)
                } else {
                    self.err(at, format!("number {n} cannot be represented in JSON"));
                    Value::Null
                }
            }
            Y::Sequence(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        at.push(i.to_string());
                        let v = self.convert(item, at);
                        at.pop();
                        v
                    })
                    .collect(),
            ),
            Y::Mapping(mapping) => {
                let mut out = Map::new();
                for (k, v) in mapping {
                    // Scalar keys become strings, as Python's json.dumps does for st2.
                    let key = match k {
                        Y::String(s) => s,
                        Y::Bool(b) => b.to_string(),
                        Y::Number(n) => n.to_string(),
                        _ => {
                            self.err(at, "mapping keys must be strings");
                            continue;
                        }
                    };
                    at.push(key);
                    let v = self.convert(v, at);
                    let key = at.pop().unwrap_or_default();
                    out.insert(key, v);
                }
                Value::Object(out)
            }
            Y::Tagged(tagged) => {
                self.err(at, format!("YAML tag {} is not supported", tagged.tag));
                Value::Null
            }
        }
    }
}

/// `at` extended by one segment.
pub(crate) fn with<'a>(at: &[&'a str], key: &'a str) -> Vec<&'a str> {
    let mut v = at.to_vec();
    v.push(key);
    v
}

/// The value at the last segment of `at`; earlier segments name the parents of
/// `map` and are only there for error messages.
fn lookup<'v>(map: &'v Map<String, Value>, at: &[&str]) -> Option<&'v Value> {
    at.last().and_then(|k| map.get(*k))
}

/// Human name of a JSON value's type, for "expected X, found Y".
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Best-effort 1-based line of a block-style key path: each segment is looked for
/// inside the block of the previous one. List indices are skipped, and a segment that
/// cannot be found (flow style, missing key) yields the deepest ancestor found, which
/// is where a "missing key" error belongs anyway.
fn find_line<S: AsRef<str>>(src: &str, at: &[S]) -> Option<usize> {
    let lines: Vec<&str> = src.lines().collect();
    let mut found = None;
    let mut start = 0;
    let mut parent_indent: Option<usize> = None;
    for seg in at {
        let seg = seg.as_ref();
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut indent = line.len() - trimmed.len();
            if parent_indent.is_some_and(|p| indent <= p) {
                break; // left the parent's block
            }
            let mut content = trimmed;
            while let Some(rest) = content.strip_prefix("- ") {
                let rest_trimmed = rest.trim_start();
                indent += content.len() - rest_trimmed.len();
                content = rest_trimmed;
            }
            if key_matches(content, seg) {
                hit = Some((i, indent));
                break;
            }
        }
        let Some((i, indent)) = hit else { break };
        found = Some(i + 1);
        start = i + 1;
        parent_indent = Some(indent);
    }
    found
}

fn key_matches(content: &str, key: &str) -> bool {
    [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .any(|k| {
            content
                .strip_prefix(k.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
        })
}

#[cfg(test)]
mod tests {
    use super::find_line;

    #[test]
    fn find_line_follows_nested_blocks_and_falls_back_to_the_parent() {
        let src = "name: a\nparameters:\n  count:\n    type: integr\n  other:\n    type: string\nrules:\n  - name: x\n    when: 1\n";
        assert_eq!(find_line(src, &["parameters", "count", "type"]), Some(4));
        assert_eq!(find_line(src, &["parameters", "other", "type"]), Some(6));
        assert_eq!(find_line(src, &["parameters", "missing", "type"]), Some(2));
        assert_eq!(find_line(src, &["rules", "0", "when"]), Some(9));
        assert_eq!(find_line(src, &["nope"]), None);
    }
}
