//! Secret lineage: the secret values an execution may show, and the one
//! place they are masked.
//!
//! A value given to a parameter marked `secret` enters an execution; from
//! there it can travel into everything the execution causes: a workflow's
//! tasks (through the context), the `squall.execution` trigger instance and
//! the executions its rules start (through the payload), chat notices,
//! approval prompts. Each of those rows stores the set it inherited
//! (`executions.secrets`, `trigger_instances.secrets`), so a view of any of
//! them masks the value without knowing where it came from, even after the
//! action that declared it was uninstalled.
//!
//! Runners see the real values (they need them); everything a person, a log
//! or another system can read is scrubbed with [`Secrets::scrub_value`] or
//! [`Secrets::scrub_text`]: execution and trigger-instance views (API, CLI,
//! chat results), audit rows, chat notices and prompts.

use serde_json::Value;

use crate::params::MASK;

/// Secret values shorter than this are not scrubbed from text: replacing
/// every "1" or "on" would destroy the output without protecting anything.
/// (A short secret parameter is still masked by name in parameter views.)
pub const MIN_SCRUB_LEN: usize = 4;

/// A set of secret values. `Debug` never prints them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} value(s), redacted)", self.0.len())
    }
}

impl Secrets {
    /// The values of `values` worth scrubbing (strings as they are, other
    /// JSON values as their JSON text), without duplicates.
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a Value>) -> Secrets {
        let mut set = Secrets::default();
        for value in values {
            match value {
                Value::Null => {}
                Value::String(s) => set.insert(s),
                other => set.insert(&other.to_string()),
            }
        }
        set
    }

    /// Read the stored column (`None` or a JSON array of strings).
    pub fn from_stored(column: Option<&str>) -> Secrets {
        let Some(text) = column else {
            return Secrets::default();
        };
        let values: Vec<String> = serde_json::from_str(text).unwrap_or_default();
        let mut set = Secrets::default();
        for value in &values {
            set.insert(value);
        }
        set
    }

    /// The column value: `None` when empty, so rows without secrets (nearly
    /// all of them) cost nothing.
    pub fn to_stored(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| serde_json::to_string(&self.0).unwrap_or_default())
    }

    fn insert(&mut self, value: &str) {
        if value.len() >= MIN_SCRUB_LEN && !self.0.iter().any(|v| v == value) {
            self.0.push(value.to_owned());
            // Longest first: a secret that contains another is masked whole.
            self.0.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// Both sets in one.
    #[must_use]
    pub fn union(mut self, other: &Secrets) -> Secrets {
        for value in &other.0 {
            self.insert(value);
        }
        self
    }

    /// The values (for a runner that must keep them off a command line).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn contains(&self, value: &str) -> bool {
        self.0.iter().any(|s| s == value)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The values of this set that occur in `value` (in any string, key or
    /// scalar of it).
    pub fn present_in(&self, value: &Value) -> Secrets {
        fn visit(value: &Value, f: &mut impl FnMut(&str)) {
            match value {
                Value::Null => {}
                Value::String(s) => f(s),
                Value::Array(items) => items.iter().for_each(|v| visit(v, f)),
                Value::Object(map) => map.iter().for_each(|(k, v)| {
                    f(k);
                    visit(v, f);
                }),
                other => f(&other.to_string()),
            }
        }
        let mut found = Secrets::default();
        if self.0.is_empty() {
            return found;
        }
        visit(value, &mut |text| {
            for secret in &self.0 {
                if text.contains(secret.as_str()) {
                    found.insert(secret);
                }
            }
        });
        found
    }

    /// `text` with every secret value replaced by [`MASK`].
    pub fn scrub_text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }

    /// `value` with every secret value replaced in every string, keys included.
    pub fn scrub_value(&self, value: Value) -> Value {
        if self.0.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.scrub_text(&s)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.scrub_value(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.scrub_text(&k), self.scrub_value(v)))
                    .collect(),
            ),
            // A secret number or boolean equal to the whole value.
            other => {
                let text = other.to_string();
                if self.0.contains(&text) {
                    Value::String(MASK.into())
                } else {
                    other
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scrubs_every_string_and_key_and_keeps_the_rest() {
        let set = Secrets::from_values(&[json!("hunter3-SECRET"), json!(12_345_678)]);
        let out = set.scrub_value(json!({
            "stdout": "token is hunter3-SECRET\n",
            "hunter3-SECRET": [1, "x hunter3-SECRET y", 12_345_678],
            "n": 5,
        }));
        assert_eq!(
            out,
            json!({"stdout": "token is ********\n", "********": [1, "x ******** y", "********"], "n": 5})
        );
    }

    #[test]
    fn short_values_and_nulls_are_not_scrubbed_and_longest_wins() {
        let set = Secrets::from_values(&[json!("on"), Value::Null, json!("abcd"), json!("abcdef")]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.scrub_text("on abcdef abcd"), "on ******** ********");
    }

    #[test]
    fn stored_form_round_trips_and_empty_is_none() {
        assert_eq!(Secrets::default().to_stored(), None);
        let set = Secrets::from_values(&[json!("s3cret-value")]);
        let back = Secrets::from_stored(set.to_stored().as_deref());
        assert_eq!(back, set);
        assert_eq!(Secrets::from_stored(Some("not json")), Secrets::default());
        assert!(!format!("{set:?}").contains("s3cret"));
    }

    #[test]
    fn union_keeps_each_value_once() {
        let a = Secrets::from_values(&[json!("alpha-1")]);
        let b = Secrets::from_values(&[json!("alpha-1"), json!("beta-22")]);
        assert_eq!(a.union(&b).len(), 2);
    }
}
