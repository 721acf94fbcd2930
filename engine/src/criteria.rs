//! StackStorm rule criteria: compile once at rule load, evaluate against every trigger.
//!
//! This module owns the meaning of a rule's `criteria:` block: the operator names and
//! aliases, what each operator does with JSON values, how criteria keys address the trigger
//! context, how `search` applies child criteria to list items, and the load-time validation
//! that reports every problem of a rule at once.
//!
//! Semantics follow st2's `st2common/operators.py` and `st2reactor/rules/filter.py`:
//! - Operators get Python semantics on JSON values: `equals` is Python `==` (so `1 == 1.0`
//!   and `true == 1`, but `"1" != 1`), `lessthan`/`greaterthan` are Python `<`/`>` (numbers
//!   with numbers, strings with strings, lists lexicographically; mixed types never match,
//!   as the `TypeError` st2 swallows), `contains` is `pattern in value` and `inside` is
//!   `value in pattern` (substring, list element or object key).
//! - `regex`/`iregex` behave like `re.search`; `matchregex` (deprecated in st2) like
//!   `re.match(pattern, value, re.DOTALL)`, i.e. anchored at the start only;
//!   `matchwildcard` is `fnmatch.fnmatch` (`*`, `?`, `[seq]`, `[!seq]`, whole string).
//! - A missing key and a JSON `null` are both st2's `None`: `exists` is false, `nexists`
//!   true, every other operator false except `nequals`/`ninside`, which compare.
//! - A key may end in a criteria tag (`trigger.level#low`) so one field can be tested twice.
//! - Criteria never match a trigger without payload (st2 `RuleFilter.filter`).
//!
//! Regexes, wildcards, durations and key paths are compiled once; only patterns containing
//! `{{` are rendered (and then prepared) per evaluation.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::cmp::Ordering;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use handlebars::Context;
use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use crate::template::Templates;

/// One problem in a rule's criteria; `field` is like `criteria."trigger.body.app".type`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct CriteriaError {
    pub field: String,
    pub reason: String,
}

impl CriteriaError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CriteriaError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A criteria comparison operator (st2's `type:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    NEquals,
    IEquals,
    Contains,
    NContains,
    IContains,
    INContains,
    StartsWith,
    IStartsWith,
    EndsWith,
    IEndsWith,
    LessThan,
    GreaterThan,
    Regex,
    IRegex,
    /// st2's deprecated `matchregex`: `re.match` with `re.DOTALL`.
    MatchRegex,
    MatchWildcard,
    TimeDiffLt,
    TimeDiffGt,
    Exists,
    NExists,
    Inside,
    NInside,
    Search,
}

/// st2's operator lookup table: canonical name first, then its aliases.
const OPERATOR_NAMES: &[(&str, Operator)] = &[
    ("equals", Operator::Equals),
    ("eq", Operator::Equals),
    ("nequals", Operator::NEquals),
    ("neq", Operator::NEquals),
    ("iequals", Operator::IEquals),
    ("ieq", Operator::IEquals),
    ("contains", Operator::Contains),
    ("ncontains", Operator::NContains),
    ("icontains", Operator::IContains),
    ("incontains", Operator::INContains),
    ("startswith", Operator::StartsWith),
    ("istartswith", Operator::IStartsWith),
    ("endswith", Operator::EndsWith),
    ("iendswith", Operator::IEndsWith),
    ("lessthan", Operator::LessThan),
    ("lt", Operator::LessThan),
    ("greaterthan", Operator::GreaterThan),
    ("gt", Operator::GreaterThan),
    ("regex", Operator::Regex),
    ("iregex", Operator::IRegex),
    ("matchregex", Operator::MatchRegex),
    ("matchwildcard", Operator::MatchWildcard),
    ("timediff_lt", Operator::TimeDiffLt),
    ("td_lt", Operator::TimeDiffLt),
    ("timediff_gt", Operator::TimeDiffGt),
    ("td_gt", Operator::TimeDiffGt),
    ("exists", Operator::Exists),
    ("nexists", Operator::NExists),
    ("inside", Operator::Inside),
    ("in", Operator::Inside),
    ("ninside", Operator::NInside),
    ("nin", Operator::NInside),
    ("search", Operator::Search),
];

impl Operator {
    /// Parse an st2 operator name or alias, case-insensitively (st2 lowercases it).
    pub fn parse(name: &str) -> Option<Operator> {
        let name = name.trim();
        OPERATOR_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, op)| *op)
    }

    /// Canonical st2 name.
    pub fn name(&self) -> &'static str {
        OPERATOR_NAMES
            .iter()
            .find(|(_, op)| op == self)
            .map_or("unknown", |(n, _)| n)
    }

    /// Operators whose st2 implementation returns false for a `None` pattern, so a rule
    /// without `pattern:` could never match.
    fn needs_pattern(self) -> bool {
        !matches!(
            self,
            Operator::Exists | Operator::NExists | Operator::NEquals | Operator::Search
        )
    }
}

/// Every accepted spelling, for error messages: `equals (eq), nequals (neq), ...`.
fn valid_operators() -> String {
    let mut out = String::new();
    for (i, (name, op)) in OPERATOR_NAMES.iter().enumerate() {
        let is_canonical = i == 0 || OPERATOR_NAMES[i - 1].1 != *op;
        if is_canonical {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(name);
        } else {
            let _ = write!(out, " ({name})");
        }
    }
    out
}

/// How `search` combines results: over payload items, and over child criteria per item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchCondition {
    /// Some item matches every child criterion.
    Any,
    /// Every item matches every child criterion.
    All,
    /// Some item matches some child criterion.
    Any2Any,
    /// Every item matches some child criterion.
    All2Any,
}

impl SearchCondition {
    pub fn parse(name: &str) -> Option<SearchCondition> {
        match name {
            "any" => Some(SearchCondition::Any),
            "all" => Some(SearchCondition::All),
            "any2any" => Some(SearchCondition::Any2Any),
            "all2any" => Some(SearchCondition::All2Any),
            _ => None,
        }
    }

    fn every_item(self) -> bool {
        matches!(self, SearchCondition::All | SearchCondition::All2Any)
    }

    fn every_child(self) -> bool {
        matches!(self, SearchCondition::Any | SearchCondition::All)
    }
}

/// Compiled rule criteria; all entries must match.
#[derive(Debug, Clone, Default)]
pub struct Criteria {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    path: Vec<Segment>,
    op: Operator,
    matcher: Matcher,
}

/// One key path step; `index` is set when the text is a number, used on arrays.
#[derive(Debug, Clone)]
struct Segment {
    key: String,
    index: Option<usize>,
}

#[derive(Debug, Clone)]
enum Matcher {
    Fixed(Pattern),
    Templated {
        source: String,
        field: String,
    },
    Search {
        condition: SearchCondition,
        children: Vec<Entry>,
    },
}

/// A pattern prepared for its operator.
#[derive(Debug, Clone)]
enum Pattern {
    /// st2's `None` pattern.
    Absent,
    Value(Value),
    /// Lowercased once for the case-insensitive string operators.
    Lower(String),
    Regex(Regex),
    Seconds(f64),
}

static NULL: Value = Value::Null;

impl Criteria {
    /// Validate and compile all entries, reporting every problem at once.
    pub fn compile(raw: &Map<String, Value>) -> Result<Criteria, Vec<CriteriaError>> {
        let mut errors = Vec::new();
        let entries = compile_entries(raw, "criteria", &mut errors);
        if errors.is_empty() {
            Ok(Criteria { entries })
        } else {
            Err(errors)
        }
    }

    /// Whether the trigger context matches. `ctx` is `{"trigger": <payload>, ...}`; keys are
    /// dotted paths into it. Templated patterns render against `ctx` (inside `search`,
    /// against `{"item": <element>}` plus every top-level entry except `trigger`, as st2).
    pub fn matches(&self, ctx: &Value, templates: &Templates) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        if !ctx.get("trigger").is_some_and(py_truthy) {
            return false;
        }
        let scope = Scope::new(ctx, None, templates);
        self.entries.iter().all(|entry| entry.matches(&scope))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Load-time check of templated patterns (compile cannot see the template engine).
    pub fn check_templates(&self, templates: &Templates) -> Result<(), Vec<CriteriaError>> {
        fn walk(entries: &[Entry], templates: &Templates, errors: &mut Vec<CriteriaError>) {
            for entry in entries {
                match &entry.matcher {
                    Matcher::Templated { source, field } => {
                        if let Err(e) = templates.check(source) {
                            errors.push(CriteriaError::new(field.clone(), e.to_string()));
                        }
                    }
                    Matcher::Search { children, .. } => walk(children, templates, errors),
                    Matcher::Fixed(_) => {}
                }
            }
        }
        let mut errors = Vec::new();
        walk(&self.entries, templates, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Compilation

fn compile_entries(
    raw: &Map<String, Value>,
    prefix: &str,
    errors: &mut Vec<CriteriaError>,
) -> Vec<Entry> {
    raw.iter()
        .filter_map(|(key, spec)| compile_entry(key, spec, &format!("{prefix}.{key:?}"), errors))
        .collect()
}

fn compile_entry(
    key: &str,
    spec: &Value,
    field: &str,
    errors: &mut Vec<CriteriaError>,
) -> Option<Entry> {
    let before = errors.len();
    let path = parse_key(key)
        .map_err(|reason| errors.push(CriteriaError::new(field, reason)))
        .ok();
    let Some(spec) = spec.as_object() else {
        errors.push(CriteriaError::new(
            field,
            "must be an object with `type` and `pattern`",
        ));
        return None;
    };
    let type_field = format!("{field}.type");
    let op = match spec.get("type") {
        None | Some(Value::Null) => {
            errors.push(CriteriaError::new(
                type_field,
                format!("is required; valid operators: {}", valid_operators()),
            ));
            None
        }
        Some(Value::String(name)) => {
            let op = Operator::parse(name);
            if op.is_none() {
                errors.push(CriteriaError::new(
                    type_field,
                    format!(
                        "unknown operator {name:?}; valid operators: {}",
                        valid_operators()
                    ),
                ));
            }
            op
        }
        Some(other) => {
            errors.push(CriteriaError::new(
                type_field,
                format!("must be an operator name, got {other}"),
            ));
            None
        }
    }?;
    let pattern_field = format!("{field}.pattern");
    let matcher = if op == Operator::Search {
        compile_search(spec, field, &pattern_field, errors)
    } else {
        compile_pattern(op, spec.get("pattern"), &pattern_field, errors)
    };
    if errors.len() > before {
        return None;
    }
    Some(Entry {
        path: path?,
        op,
        matcher: matcher?,
    })
}

fn compile_search(
    spec: &Map<String, Value>,
    field: &str,
    pattern_field: &str,
    errors: &mut Vec<CriteriaError>,
) -> Option<Matcher> {
    let condition_field = format!("{field}.condition");
    let allowed = "one of any, all, any2any, all2any";
    let condition = match spec.get("condition") {
        Some(Value::String(name)) => {
            let condition = SearchCondition::parse(name);
            if condition.is_none() {
                errors.push(CriteriaError::new(
                    condition_field,
                    format!("unknown search condition {name:?}; {allowed}"),
                ));
            }
            condition
        }
        None | Some(Value::Null) => {
            errors.push(CriteriaError::new(
                condition_field,
                format!("is required for `search`; {allowed}"),
            ));
            None
        }
        Some(other) => {
            errors.push(CriteriaError::new(
                condition_field,
                format!("must be {allowed}, got {other}"),
            ));
            None
        }
    };
    let children = match spec.get("pattern") {
        Some(Value::Object(children)) => Some(compile_entries(children, pattern_field, errors)),
        None | Some(Value::Null) => {
            errors.push(CriteriaError::new(
                pattern_field,
                "is required for `search`: an object of child criteria keyed by `item.` paths",
            ));
            None
        }
        Some(other) => {
            errors.push(CriteriaError::new(
                pattern_field,
                format!("must be an object of child criteria for `search`, got {other}"),
            ));
            None
        }
    };
    Some(Matcher::Search {
        condition: condition?,
        children: children?,
    })
}

fn compile_pattern(
    op: Operator,
    pattern: Option<&Value>,
    field: &str,
    errors: &mut Vec<CriteriaError>,
) -> Option<Matcher> {
    if matches!(op, Operator::Exists | Operator::NExists) {
        return Some(Matcher::Fixed(Pattern::Absent));
    }
    match pattern {
        Some(Value::String(s)) if crate::template::is_template(s) => Some(Matcher::Templated {
            source: s.clone(),
            field: field.to_owned(),
        }),
        None | Some(Value::Null) if op.needs_pattern() => {
            errors.push(CriteriaError::new(
                field,
                format!("is required for `{}`", op.name()),
            ));
            None
        }
        _ => match prepare(op, pattern.unwrap_or(&NULL)) {
            Ok(prepared) => Some(Matcher::Fixed(prepared)),
            Err(reason) => {
                errors.push(CriteriaError::new(field, reason));
                None
            }
        },
    }
}

/// Prepare a (literal or freshly rendered) pattern for `op`. Patterns with which st2 could
/// never match (a number for `iequals`, ...) are errors so the rule fails at load.
fn prepare(op: Operator, pattern: &Value) -> Result<Pattern, String> {
    use Operator as Op;
    if pattern.is_null() || matches!(op, Op::Exists | Op::NExists) {
        return Ok(Pattern::Absent);
    }
    let text = || {
        pattern
            .as_str()
            .ok_or_else(|| format!("must be a string for `{}`, got {pattern}", op.name()))
    };
    match op {
        Op::Equals
        | Op::NEquals
        | Op::Contains
        | Op::NContains
        | Op::LessThan
        | Op::GreaterThan => Ok(Pattern::Value(pattern.clone())),
        Op::Inside | Op::NInside => match pattern {
            Value::String(_) | Value::Array(_) | Value::Object(_) => {
                Ok(Pattern::Value(pattern.clone()))
            }
            other => Err(format!(
                "must be a string, list or object for `{}`, got {other}",
                op.name()
            )),
        },
        // Python's str.startswith also takes a tuple of prefixes.
        Op::StartsWith | Op::EndsWith => match pattern {
            Value::String(_) => Ok(Pattern::Value(pattern.clone())),
            Value::Array(items) if items.iter().all(Value::is_string) => {
                Ok(Pattern::Value(pattern.clone()))
            }
            other => Err(format!(
                "must be a string or a list of strings for `{}`, got {other}",
                op.name()
            )),
        },
        Op::IEquals | Op::IContains | Op::INContains | Op::IStartsWith | Op::IEndsWith => {
            Ok(Pattern::Lower(text()?.to_lowercase()))
        }
        Op::Regex => compile_regex(text()?, false),
        Op::IRegex => compile_regex(text()?, true),
        Op::MatchRegex => compile_regex(&format!(r"\A(?s:{})", text()?), false),
        Op::MatchWildcard => compile_regex(&wildcard_to_regex(text()?), false),
        Op::TimeDiffLt | Op::TimeDiffGt => seconds(pattern).map(Pattern::Seconds),
        Op::Exists | Op::NExists => Ok(Pattern::Absent),
        Op::Search => Err("`search` needs an object of child criteria".to_owned()),
    }
}

fn compile_regex(source: &str, case_insensitive: bool) -> Result<Pattern, String> {
    RegexBuilder::new(source)
        .case_insensitive(case_insensitive)
        .build()
        .map(Pattern::Regex)
        .map_err(|e| format!("invalid regular expression: {e}"))
}

/// Durations are seconds, as a number or a numeric string (st2's web UI sends strings).
fn seconds(pattern: &Value) -> Result<f64, String> {
    let parsed = match pattern {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    parsed
        .filter(|s| s.is_finite())
        .ok_or_else(|| format!("must be a number of seconds, got {pattern}"))
}

/// Key path: dotted names, `[0]` / `['name']` / `["name"]` brackets, numeric segments
/// indexing arrays, and an optional trailing `#tag` that st2 ignores.
fn parse_key(key: &str) -> Result<Vec<Segment>, String> {
    let key = key.split_once('#').map_or(key, |(path, _)| path).trim();
    if key.is_empty() {
        return Err("empty criteria key".to_owned());
    }
    let segment = |name: &str| -> Result<Segment, String> {
        if name.is_empty() {
            return Err(format!("empty path segment in key {key:?}"));
        }
        if name == "*" {
            return Err(format!(
                "wildcard segments are not supported in key {key:?}"
            ));
        }
        Ok(Segment {
            key: name.to_owned(),
            index: name.parse().ok(),
        })
    };
    let mut segments = Vec::new();
    let mut rest = key;
    loop {
        if let Some(inner) = rest.strip_prefix('[') {
            let close = inner
                .find(']')
                .ok_or_else(|| format!("unclosed `[` in key {key:?}"))?;
            let name = inner[..close].trim();
            let name = ['\'', '"']
                .iter()
                .find_map(|q| name.strip_prefix(*q).and_then(|n| n.strip_suffix(*q)))
                .unwrap_or(name);
            segments.push(segment(name)?);
            rest = &inner[close + 1..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            segments.push(segment(&rest[..end])?);
            rest = &rest[end..];
        }
        if rest.is_empty() {
            return Ok(segments);
        }
        if let Some(after_dot) = rest.strip_prefix('.') {
            if after_dot.is_empty() {
                return Err(format!("trailing `.` in key {key:?}"));
            }
            rest = after_dot;
        } else if !rest.starts_with('[') {
            return Err(format!("unexpected {rest:?} in key {key:?}"));
        }
    }
}

/// `fnmatch.translate`: `*`, `?`, `[seq]`, `[!seq]`, anchored at both ends, `.` matching
/// newlines; everything else literal.
fn wildcard_to_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::from(r"\A(?s:");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                while chars.get(i) == Some(&'*') {
                    i += 1;
                }
                out.push_str(".*");
            }
            '?' => out.push('.'),
            '[' => {
                let mut j = i;
                if chars.get(j) == Some(&'!') {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str(r"\[");
                    continue;
                }
                let (negate, body) = match chars[i..j].split_first() {
                    Some(('!', rest)) => (true, rest),
                    _ => (false, &chars[i..j]),
                };
                i = j + 1;
                push_class(&mut out, negate, body);
            }
            other => push_literal(&mut out, other),
        }
    }
    out.push_str(r")\z");
    out
}

fn push_literal(out: &mut String, c: char) {
    out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
}

fn push_class(out: &mut String, negate: bool, body: &[char]) {
    let mut items = String::new();
    let mut k = 0;
    while k < body.len() {
        let lo = body[k];
        if body.get(k + 1) == Some(&'-') && k + 2 < body.len() {
            let hi = body[k + 2];
            k += 3;
            // Python drops reversed ranges rather than failing.
            if lo <= hi {
                push_literal(&mut items, lo);
                items.push('-');
                push_literal(&mut items, hi);
            }
        } else {
            push_literal(&mut items, lo);
            k += 1;
        }
    }
    match (items.is_empty(), negate) {
        (true, true) => out.push('.'),
        (true, false) => out.push_str(r"[^\x00-\x{10FFFF}]"),
        (false, negate) => {
            out.push('[');
            if negate {
                out.push('^');
            }
            out.push_str(&items);
            out.push(']');
        }
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation

/// Where keys resolve and templates render: the trigger context, or one `search` item.
struct Scope<'a> {
    root: &'a Value,
    item: Option<&'a Value>,
    templates: &'a Templates,
    /// Built on the first templated pattern only; most rules never need it.
    context: OnceCell<Context>,
}

impl<'a> Scope<'a> {
    fn new(root: &'a Value, item: Option<&'a Value>, templates: &'a Templates) -> Self {
        Scope {
            root,
            item,
            templates,
            context: OnceCell::new(),
        }
    }

    fn lookup(&self, path: &[Segment]) -> &'a Value {
        let (base, rest) = match (self.item, path.split_first()) {
            (Some(item), Some((first, rest))) if first.key == "item" => (item, rest),
            // st2 evaluates search children against {"item": ...} and the datastore only.
            (Some(_), Some((first, _))) if first.key == "trigger" => return &NULL,
            _ => (self.root, path),
        };
        walk(base, rest).unwrap_or(&NULL)
    }

    fn render(&self, source: &str) -> Option<Value> {
        let context = self
            .context
            .get_or_init(|| Context::from(self.template_data()));
        self.templates.render_value_in(source, context).ok()
    }

    fn template_data(&self) -> Value {
        let Some(item) = self.item else {
            return self.root.clone();
        };
        let mut data: Map<String, Value> = match self.root {
            Value::Object(root) => root
                .iter()
                .filter(|(k, _)| k.as_str() != "trigger")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => Map::new(),
        };
        data.insert("item".to_owned(), item.clone());
        Value::Object(data)
    }
}

fn walk<'v>(mut value: &'v Value, path: &[Segment]) -> Option<&'v Value> {
    for segment in path {
        value = match value {
            Value::Object(map) => map.get(&segment.key)?,
            Value::Array(items) => items.get(segment.index?)?,
            _ => return None,
        };
    }
    Some(value)
}

impl Entry {
    fn matches(&self, scope: &Scope<'_>) -> bool {
        let value = scope.lookup(&self.path);
        match &self.matcher {
            Matcher::Fixed(pattern) => apply(self.op, value, pattern),
            Matcher::Templated { source, .. } => {
                // st2 renders with StrictUndefined: an undefined or failing template makes
                // the criterion fail rather than compare against nothing.
                match scope.render(source) {
                    Some(Value::Null) | None => false,
                    Some(rendered) => {
                        prepare(self.op, &rendered).is_ok_and(|p| apply(self.op, value, &p))
                    }
                }
            }
            Matcher::Search {
                condition,
                children,
            } => search(*condition, children, value, scope),
        }
    }
}

fn search(
    condition: SearchCondition,
    children: &[Entry],
    value: &Value,
    scope: &Scope<'_>,
) -> bool {
    // st2 treats a single object as a one-item list; anything else fails to iterate.
    let items = match value {
        Value::Array(items) => items.as_slice(),
        Value::Object(_) => std::slice::from_ref(value),
        _ => return false,
    };
    let item_matches = |item: &Value| {
        let item_scope = Scope::new(scope.root, Some(item), scope.templates);
        let mut results = children.iter().map(|child| child.matches(&item_scope));
        if condition.every_child() {
            results.all(|m| m)
        } else {
            results.any(|m| m)
        }
    };
    if condition.every_item() {
        items.iter().all(item_matches)
    } else {
        items.iter().any(item_matches)
    }
}

fn apply(op: Operator, value: &Value, pattern: &Pattern) -> bool {
    use Operator as Op;
    match (op, pattern) {
        (Op::Exists, _) => !value.is_null(),
        (Op::NExists, _) => value.is_null(),
        (Op::NEquals, Pattern::Absent) => !value.is_null(),
        (_, Pattern::Absent) => false,
        (Op::Equals, Pattern::Value(p)) => py_eq(value, p),
        (Op::NEquals, Pattern::Value(p)) => !py_eq(value, p),
        (Op::Contains, Pattern::Value(p)) => py_in(p, value) == Some(true),
        (Op::NContains, Pattern::Value(p)) => py_in(p, value) == Some(false),
        (Op::Inside, Pattern::Value(p)) => py_in(value, p) == Some(true),
        (Op::NInside, Pattern::Value(p)) => py_in(value, p) == Some(false),
        (Op::LessThan, Pattern::Value(p)) => py_cmp(value, p) == Some(Ordering::Less),
        (Op::GreaterThan, Pattern::Value(p)) => py_cmp(value, p) == Some(Ordering::Greater),
        (Op::StartsWith, Pattern::Value(p)) => affix(value, p, |s, a| s.starts_with(a)),
        (Op::EndsWith, Pattern::Value(p)) => affix(value, p, |s, a| s.ends_with(a)),
        (Op::IEquals, Pattern::Lower(p)) => with_lower(value, |s| s == p),
        (Op::IContains, Pattern::Lower(p)) => with_lower(value, |s| s.contains(p.as_str())),
        (Op::INContains, Pattern::Lower(p)) => with_lower(value, |s| !s.contains(p.as_str())),
        (Op::IStartsWith, Pattern::Lower(p)) => with_lower(value, |s| s.starts_with(p.as_str())),
        (Op::IEndsWith, Pattern::Lower(p)) => with_lower(value, |s| s.ends_with(p.as_str())),
        (Op::Regex | Op::IRegex | Op::MatchRegex | Op::MatchWildcard, Pattern::Regex(re)) => {
            value.as_str().is_some_and(|s| re.is_match(s))
        }
        (Op::TimeDiffLt, Pattern::Seconds(limit)) => age_seconds(value).is_some_and(|a| a < *limit),
        (Op::TimeDiffGt, Pattern::Seconds(limit)) => age_seconds(value).is_some_and(|a| a > *limit),
        _ => false,
    }
}

/// Python truthiness, for st2's "no payload, no match".
fn py_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Python numbers, where `bool` is an `int`.
fn numeric(value: &Value) -> Option<Num> {
    match value {
        Value::Bool(b) => Some(Num::Int(i128::from(*b))),
        Value::Number(n) => n
            .as_i64()
            .map(|i| Num::Int(i.into()))
            .or_else(|| n.as_u64().map(|u| Num::Int(u.into())))
            .or_else(|| n.as_f64().map(Num::Float)),
        _ => None,
    }
}

fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (x, y) => x.as_f64().partial_cmp(&y.as_f64()),
    }
}

/// Python `==` on JSON values.
fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => match (numeric(a), numeric(b)) {
            (Some(x), Some(y)) => num_cmp(x, y) == Some(Ordering::Equal),
            _ => false,
        },
    }
}

/// Python ordering; `None` where Python raises `TypeError`.
fn py_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        // UTF-8 byte order is code point order, which is what Python compares.
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        (Value::Array(x), Value::Array(y)) => match x.iter().zip(y).find(|(p, q)| !py_eq(p, q)) {
            Some((p, q)) => py_cmp(p, q),
            None => Some(x.len().cmp(&y.len())),
        },
        _ => num_cmp(numeric(a)?, numeric(b)?),
    }
}

/// Python `needle in haystack`; `None` where Python raises `TypeError`.
fn py_in(needle: &Value, haystack: &Value) -> Option<bool> {
    match haystack {
        Value::String(h) => needle.as_str().map(|n| h.contains(n)),
        Value::Array(items) => Some(items.iter().any(|item| py_eq(item, needle))),
        Value::Object(map) => match needle {
            Value::String(key) => Some(map.contains_key(key)),
            // Lists and dicts are unhashable; other scalars can never equal a string key.
            Value::Array(_) | Value::Object(_) => None,
            _ => Some(false),
        },
        _ => None,
    }
}

fn affix(value: &Value, pattern: &Value, test: fn(&str, &str) -> bool) -> bool {
    let Some(s) = value.as_str() else {
        return false;
    };
    match pattern {
        Value::String(p) => test(s, p),
        Value::Array(items) => {
            items.iter().all(Value::is_string)
                && items.iter().any(|p| p.as_str().is_some_and(|p| test(s, p)))
        }
        _ => false,
    }
}

/// Apply `test` to the lowercased value; allocates only when lowercasing changes something.
fn with_lower(value: &Value, test: impl FnOnce(&str) -> bool) -> bool {
    let Some(s) = value.as_str() else {
        return false;
    };
    let lowered = if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.to_lowercase())
    };
    test(&lowered)
}

fn age_seconds(value: &Value) -> Option<f64> {
    let then = parse_timestamp(value.as_str()?)?;
    Some((Utc::now() - then).num_milliseconds() as f64 / 1000.0)
}

/// The timestamp shapes st2 payloads carry (dateutil accepts more); naive times are UTC,
/// as st2's `date_utils.parse` assumes.
fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn criteria(raw: Value) -> Criteria {
        let Value::Object(map) = raw else {
            panic!("criteria must be an object");
        };
        Criteria::compile(&map).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn errors(raw: Value) -> Vec<CriteriaError> {
        let Value::Object(map) = raw else {
            panic!("criteria must be an object");
        };
        Criteria::compile(&map).expect_err("should not compile")
    }

    /// st2's `op(value, pattern)`: one criterion on `trigger.v`; a null value is a missing key.
    fn op(name: &str, value: Value, pattern: Value) -> bool {
        let c = criteria(json!({"trigger.v": {"type": name, "pattern": pattern}}));
        let mut payload = json!({"marker": 1});
        if !value.is_null() {
            payload["v"] = value;
        }
        c.matches(&json!({ "trigger": payload }), &Templates::new())
    }

    fn now_iso() -> String {
        Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }

    #[test]
    fn operator_parse_accepts_every_st2_name_and_alias_case_insensitively() {
        for (name, op) in OPERATOR_NAMES {
            assert_eq!(Operator::parse(name), Some(*op), "{name}");
            assert_eq!(Operator::parse(&name.to_uppercase()), Some(*op), "{name}");
        }
        assert_eq!(Operator::parse("MATCHregex"), Some(Operator::MatchRegex));
        assert_eq!(Operator::parse("Equals"), Some(Operator::Equals));
        assert_eq!(Operator::parse("weird"), None);
    }

    #[test]
    fn operator_aliases_map_to_long_forms() {
        let pairs = [
            ("eq", "equals"),
            ("neq", "nequals"),
            ("ieq", "iequals"),
            ("lt", "lessthan"),
            ("gt", "greaterthan"),
            ("td_lt", "timediff_lt"),
            ("td_gt", "timediff_gt"),
            ("in", "inside"),
            ("nin", "ninside"),
        ];
        for (alias, long) in pairs {
            assert_eq!(Operator::parse(alias).map(|o| o.name()), Some(long));
        }
        assert_eq!(Operator::Search.name(), "search");
    }

    #[test]
    fn empty_criteria_match_everything() {
        let c = criteria(json!({}));
        assert!(c.is_empty());
        assert!(c.matches(&json!({}), &Templates::new()));
    }

    #[test]
    fn criteria_never_match_a_trigger_without_payload() {
        let c = criteria(json!({"trigger.x": {"type": "nexists"}}));
        let t = Templates::new();
        assert!(!c.matches(&json!({"trigger": {}}), &t));
        assert!(!c.matches(&json!({}), &t));
        assert!(c.matches(&json!({"trigger": {"y": 1}}), &t));
    }

    #[test]
    fn all_entries_must_match() {
        let c = criteria(json!({
            "trigger.body.app": {"type": "equals", "pattern": "web"},
            "trigger.body.count": {"type": "gt", "pattern": 3},
        }));
        let t = Templates::new();
        assert!(c.matches(
            &json!({"trigger": {"body": {"app": "web", "count": 4}}}),
            &t
        ));
        assert!(!c.matches(
            &json!({"trigger": {"body": {"app": "web", "count": 3}}}),
            &t
        ));
        assert!(!c.matches(&json!({"trigger": {"body": {"app": "db", "count": 4}}}), &t));
    }

    #[test]
    fn equals_numeric_string_and_failures() {
        assert!(op("equals", json!(1), json!(1)));
        assert!(op("equals", json!(1), json!(1.0)));
        assert!(op("equals", json!("1"), json!("1")));
        assert!(op("equals", json!(""), json!("")));
        assert!(op("eq", json!({"a": [1]}), json!({"a": [1]})));
        assert!(!op("equals", json!("1"), json!("2")));
        assert!(!op("equals", json!("1"), json!(1)));
        assert!(!op("equals", Value::Null, json!("x")));
    }

    #[test]
    fn equals_follows_python_bool_int_equality() {
        assert!(op("equals", json!(true), json!(1)));
        assert!(!op("equals", json!(true), json!("True")));
    }

    #[test]
    fn nequals_compares_any_types_including_missing() {
        assert!(op("nequals", json!("foo"), json!("bar")));
        assert!(op("nequals", json!("foo"), json!("foo1")));
        assert!(op("nequals", json!("foo"), json!("FOO")));
        assert!(op("nequals", json!("True"), json!(true)));
        assert!(op("neq", json!("None"), Value::Null));
        assert!(!op("nequals", json!("True"), json!("True")));
        assert!(!op("nequals", Value::Null, Value::Null));
    }

    #[test]
    fn iequals_ignores_case() {
        assert!(op("iequals", json!("ABC"), json!("ABC")));
        assert!(op("iequals", json!("ABC"), json!("abc")));
        assert!(op("ieq", json!("AbC"), json!("aBc")));
        assert!(op("iequals", json!("ÄBC"), json!("äbc")));
        assert!(!op("iequals", json!("ABC"), json!("BCA")));
        assert!(!op("iequals", json!(1), json!("1")));
    }

    #[test]
    fn contains_checks_substring_list_element_and_object_key() {
        assert!(op(
            "contains",
            json!("hasystack needle haystack"),
            json!("needle")
        ));
        assert!(op("contains", json!("needle"), json!("needle")));
        assert!(op("contains", json!("needlehaystack"), json!("needle")));
        assert!(op("contains", json!("haystackneedle"), json!("needle")));
        assert!(op("contains", json!(["a", "needle"]), json!("needle")));
        assert!(op("contains", json!([1, 2]), json!(2.0)));
        assert!(op("contains", json!({"needle": 1}), json!("needle")));
        assert!(!op(
            "contains",
            json!("hasystack needl haystack"),
            json!("needle")
        ));
        assert!(!op("contains", json!("needla"), json!("needle")));
        assert!(!op("contains", json!(["needles"]), json!("needle")));
        assert!(!op("contains", json!(12), json!("1")));
        assert!(!op("contains", Value::Null, json!("x")));
    }

    #[test]
    fn ncontains_is_false_when_the_check_cannot_run() {
        assert!(op(
            "ncontains",
            json!("hasystack needle haystack"),
            json!("foo")
        ));
        assert!(op("ncontains", json!("needle haystack"), json!("needlex")));
        assert!(op("ncontains", json!(["a"]), json!("b")));
        assert!(!op(
            "ncontains",
            json!("hasystack needle haystack"),
            json!("needle")
        ));
        assert!(!op("ncontains", json!("needla"), json!("needla")));
        assert!(!op("ncontains", Value::Null, json!("x")));
        assert!(!op("ncontains", json!(5), json!("x")));
    }

    #[test]
    fn icontains_and_incontains_ignore_case() {
        assert!(op(
            "icontains",
            json!("hasystack nEEdle haystack"),
            json!("needle")
        ));
        assert!(op("icontains", json!("neeDle"), json!("NeedlE")));
        assert!(op("icontains", json!("haystackNEEDLE"), json!("needle")));
        assert!(!op(
            "icontains",
            json!("hasystack needl haystack"),
            json!("needle")
        ));
        assert!(!op("icontains", json!(["NEEDLE"]), json!("needle")));
        assert!(op(
            "incontains",
            json!("hasystack needle haystack"),
            json!("FOO")
        ));
        assert!(op("incontains", json!("haystack needle"), json!("needlex")));
        assert!(!op(
            "incontains",
            json!("hasystack needle haystack"),
            json!("nEeDle")
        ));
        assert!(!op("incontains", json!("needlA"), json!("needlA")));
    }

    #[test]
    fn startswith_and_istartswith() {
        assert!(op(
            "startswith",
            json!("hasystack needle haystack"),
            json!("hasystack")
        ));
        assert!(op(
            "startswith",
            json!("a hasystack needle haystack"),
            json!("a ")
        ));
        assert!(op("startswith", json!("web-01"), json!(["db", "web"])));
        assert!(!op(
            "startswith",
            json!("hasystack needle haystack"),
            json!("needle")
        ));
        assert!(!op(
            "startswith",
            json!("a hasystack needle haystack"),
            json!("haystack")
        ));
        assert!(op(
            "istartswith",
            json!("haystack needle haystack"),
            json!("HAYstack")
        ));
        assert!(op(
            "istartswith",
            json!("HAYSTACK needle haystack"),
            json!("haystack")
        ));
        assert!(!op(
            "istartswith",
            json!("hasystack needle haystack"),
            json!("NEEDLE")
        ));
        assert!(!op(
            "istartswith",
            json!("a hasystack needle haystack"),
            json!("haystack")
        ));
    }

    #[test]
    fn endswith_and_iendswith() {
        assert!(op(
            "endswith",
            json!("hasystack needle haystackend"),
            json!("haystackend")
        ));
        assert!(op(
            "endswith",
            json!("a hasystack needle haystack b"),
            json!("b")
        ));
        assert!(!op(
            "endswith",
            json!("hasystack needle haystackend"),
            json!("haystack")
        ));
        assert!(!op(
            "endswith",
            json!("a hasystack needle haystack"),
            json!("a")
        ));
        assert!(op(
            "iendswith",
            json!("haystack needle haystackEND"),
            json!("HAYstackend")
        ));
        assert!(op(
            "iendswith",
            json!("HAYSTACK needle haystackend"),
            json!("haystackEND")
        ));
        assert!(!op(
            "iendswith",
            json!("hasystack needle haystack"),
            json!("NEEDLE")
        ));
        assert!(!op(
            "iendswith",
            json!("a hasystack needle haystack"),
            json!("a ")
        ));
    }

    #[test]
    fn lessthan_and_greaterthan_compare_like_python() {
        assert!(op("lessthan", json!(1), json!(2)));
        assert!(op("lt", json!(1.5), json!(2)));
        assert!(op("lessthan", json!("a"), json!("b")));
        assert!(op("lessthan", json!("aba"), json!("bcb")));
        assert!(op("lessthan", json!([1, 2]), json!([1, 3])));
        assert!(!op("lessthan", json!(1), json!(1)));
        assert!(!op("lessthan", json!(1), json!("2")));
        assert!(!op("lessthan", Value::Null, json!(2)));
        assert!(op("greaterthan", json!(2), json!(1)));
        assert!(op("gt", json!(-1), json!(-2.5)));
        assert!(!op("greaterthan", json!(2), json!(3)));
        assert!(!op("greaterthan", json!("3"), json!(2)));
    }

    #[test]
    fn regex_searches_anywhere_case_sensitively() {
        assert!(op("regex", json!("v1"), json!("v1$")));
        assert!(op("regex", json!("fooponiesbarfooooo"), json!("ponies")));
        assert!(op(
            "regex",
            json!("apple ponies oranges"),
            json!("(ponies|unicorns)")
        ));
        assert!(op(
            "regex",
            json!("apple unicorns oranges"),
            json!("(ponies|unicorns)")
        ));
        assert!(!op(
            "regex",
            json!("apple unicorns oranges"),
            json!("(pikachu|snorlax)")
        ));
        assert!(!op("regex", json!("v1_foo"), json!("v1$")));
        assert!(!op("regex", json!("fooPONIESbarfooooo"), json!("ponies")));
        assert!(!op("regex", json!(11), json!("1")));
    }

    #[test]
    fn iregex_searches_ignoring_case() {
        assert!(op("iregex", json!("V1"), json!("v1$")));
        assert!(op("iregex", json!("fooPONIESbarfooooo"), json!("ponies")));
        assert!(!op("iregex", json!("V1_foo"), json!("v1$")));
    }

    #[test]
    fn matchregex_is_anchored_at_start_with_dotall() {
        assert!(op("matchregex", json!("v1"), json!("v1$")));
        let multiline = "ponies\n        moar\n        foo\n        bar\n        yeah!\n";
        assert!(op("matchregex", json!(multiline), json!(".*bar.*")));
        assert!(op(
            "matchregex",
            json!("foo\r\nponies\nbar\nfooooo"),
            json!(".*ponies.*")
        ));
        assert!(op(
            "MATCHREGEX",
            json!("foo ponies bar"),
            json!(".*ponies.*")
        ));
        assert!(!op("matchregex", json!("v1_foo"), json!("v1$")));
        assert!(!op("matchregex", json!("xv1"), json!("v1")));
    }

    #[test]
    fn matchwildcard_is_fnmatch() {
        assert!(op("matchwildcard", json!("v1"), json!("v1")));
        assert!(!op("matchwildcard", json!("test foo test"), json!("foo")));
        assert!(op("matchwildcard", json!("test foo test"), json!("*foo*")));
        assert!(op("matchwildcard", json!("bar"), json!("b*r")));
        assert!(op("matchwildcard", json!("bar"), json!("b?r")));
        assert!(!op("matchwildcard", json!("baar"), json!("b?r")));
        assert!(op("matchwildcard", json!("web-7"), json!("web-[0-9]")));
        assert!(!op("matchwildcard", json!("web-x"), json!("web-[0-9]")));
        assert!(op("matchwildcard", json!("web-x"), json!("web-[!0-9]")));
        assert!(op("matchwildcard", json!("a]"), json!("a[]]")));
        assert!(op("matchwildcard", json!("a-"), json!("a[x-]")));
        assert!(op("matchwildcard", json!("a[b"), json!("a[b")));
        assert!(op("matchwildcard", json!("a.b(c)+"), json!("a.b(c)+")));
        assert!(!op("matchwildcard", json!("axb"), json!("a.b")));
        assert!(op("matchwildcard", json!("line1\nline2"), json!("line1*")));
        assert!(!op("matchwildcard", json!("a"), json!("[z-a]")));
    }

    #[test]
    fn timediff_lt_and_gt_measure_age_against_now() {
        assert!(op("timediff_lt", json!(now_iso()), json!(10)));
        assert!(op("td_lt", json!(format!("{}Z", now_iso())), json!("10")));
        assert!(!op(
            "timediff_lt",
            json!("2014-07-01T00:01:01.000000"),
            json!(10)
        ));
        assert!(!op(
            "timediff_lt",
            json!("2014-07-01T00:01:01.000000"),
            json!("10")
        ));
        assert!(op(
            "timediff_gt",
            json!("2014-07-01T00:01:01.000000"),
            json!(1)
        ));
        assert!(op("td_gt", json!("2014-07-01T00:01:01+02:00"), json!("1")));
        assert!(op("timediff_gt", json!("2014-07-01 00:01:01"), json!(1)));
        assert!(op(
            "timediff_gt",
            json!("Tue, 1 Jul 2014 00:01:01 +0000"),
            json!(1)
        ));
        assert!(!op("timediff_gt", json!(now_iso()), json!(10)));
        assert!(!op("timediff_gt", json!(now_iso()), json!("10")));
        assert!(!op("timediff_gt", json!("not a date"), json!(1)));
        assert!(!op("timediff_gt", json!(1404172861), json!(1)));
    }

    #[test]
    fn exists_and_nexists_test_presence() {
        assert!(op("exists", json!(false), Value::Null));
        assert!(op("exists", json!(1), Value::Null));
        assert!(op("exists", json!("foo"), Value::Null));
        assert!(!op("exists", Value::Null, Value::Null));
        assert!(!op("nexists", json!(false), Value::Null));
        assert!(!op("nexists", json!(1), Value::Null));
        assert!(!op("nexists", json!("foo"), Value::Null));
        assert!(op("nexists", Value::Null, Value::Null));
    }

    #[test]
    fn explicit_null_counts_as_missing() {
        let c = criteria(json!({"trigger.v": {"type": "exists"}}));
        assert!(!c.matches(&json!({"trigger": {"v": null, "w": 1}}), &Templates::new()));
    }

    #[test]
    fn inside_and_ninside_reverse_contains() {
        assert!(!op("inside", json!("a"), json!("bcd")));
        assert!(op("inside", json!("a"), json!("abc")));
        assert!(op("in", json!("prod"), json!(["prod", "staging"])));
        assert!(op("inside", json!(2), json!([1, 2])));
        assert!(op("inside", json!("k"), json!({"k": 1})));
        assert!(!op("inside", json!(1), json!("123")));
        assert!(!op("ninside", json!("a"), json!("abc")));
        assert!(op("ninside", json!("a"), json!("bcd")));
        assert!(op("nin", json!("dev"), json!(["prod"])));
        assert!(!op("ninside", json!(1), json!("123")));
    }

    #[test]
    fn key_paths_support_tags_brackets_and_indexes() {
        let ctx = json!({"trigger": {
            "headers": {"X-Custom-Header": "v", "a.b": 2},
            "items": [{"name": "first"}, {"name": "second"}],
            "level": 5
        }});
        let t = Templates::new();
        let c = criteria(json!({
            "trigger.headers['X-Custom-Header']": {"type": "eq", "pattern": "v"},
            "trigger.headers[\"a.b\"]": {"type": "eq", "pattern": 2},
            "trigger.items.0.name": {"type": "eq", "pattern": "first"},
            "trigger.items[1].name": {"type": "eq", "pattern": "second"},
            "trigger.items.[1].name#again": {"type": "eq", "pattern": "second"},
            "trigger.level#low": {"type": "gt", "pattern": 1},
            "trigger.level#high": {"type": "lt", "pattern": 10},
        }));
        assert!(c.matches(&ctx, &t));
        let c = criteria(json!({"trigger.items.2.name": {"type": "nexists"}}));
        assert!(c.matches(&ctx, &t));
    }

    fn search_criteria(condition: &str, pattern: Value) -> Criteria {
        criteria(
            json!({"trigger.fields": {"type": "search", "condition": condition, "pattern": pattern}}),
        )
    }

    fn search_matches(c: &Criteria, fields: Value) -> bool {
        c.matches(&json!({"trigger": {"fields": fields}}), &Templates::new())
    }

    fn status_approved() -> Value {
        json!({
            "item.field_name": {"type": "equals", "pattern": "Status"},
            "item.to_value": {"type": "equals", "pattern": "Approved"},
        })
    }

    #[test]
    fn search_any_matches_when_one_item_matches_all_children() {
        let c = search_criteria("any", status_approved());
        let approved = json!([
            {"field_name": "Status", "to_value": "Approved"},
            {"field_name": "Assigned to", "to_value": "Stanley"},
        ]);
        assert!(search_matches(&c, approved));
        let denied = json!([
            {"field_name": "Status", "to_value": "Denied"},
            {"field_name": "Assigned to", "to_value": "Stanley"},
        ]);
        assert!(!search_matches(&c, denied));
    }

    #[test]
    fn search_all_requires_every_item_to_match_all_children() {
        let c = search_criteria("all", status_approved());
        let mixed = json!([
            {"field_name": "Status", "to_value": "Approved"},
            {"field_name": "Assigned to", "to_value": "Stanley"},
        ]);
        assert!(!search_matches(&c, mixed));
        let c = search_criteria(
            "all",
            json!({
                "item.field_name": {"type": "startswith", "pattern": "S"},
                "item.to_value": {"type": "equals", "pattern": "Approved"},
            }),
        );
        let both = json!([
            {"field_name": "Status", "to_value": "Approved"},
            {"field_name": "Signed off by", "to_value": "Approved"},
        ]);
        assert!(search_matches(&c, both));
    }

    fn levels(values: &[i64]) -> Value {
        values
            .iter()
            .map(|v| json!({"field_name": "waterLevel", "to_value": v}))
            .collect()
    }

    #[test]
    fn search_any2any_matches_when_any_item_matches_any_child() {
        let c = search_criteria(
            "any2any",
            json!({
                "item.to_value#1": {"type": "lessthan", "pattern": 40},
                "item.to_value#2": {"type": "greaterthan", "pattern": 50},
            }),
        );
        assert!(search_matches(&c, levels(&[30, 45])));
        assert!(!search_matches(&c, levels(&[44, 45])));
    }

    #[test]
    fn search_any_with_st2_water_level_vectors() {
        let three = json!({
            "item.to_value#1": {"type": "greaterthan", "pattern": 40},
            "item.to_value#2": {"type": "lessthan", "pattern": 50},
            "item.to_value#3": {"type": "equals", "pattern": 46},
        });
        let c = search_criteria("any", three);
        assert!(!search_matches(&c, levels(&[45, 20])));
        assert!(search_matches(&c, levels(&[46, 20])));
        let two = json!({
            "item.to_value#1": {"type": "greaterthan", "pattern": 40},
            "item.to_value#2": {"type": "lessthan", "pattern": 50},
        });
        assert!(search_matches(
            &search_criteria("any", two),
            levels(&[45, 20])
        ));
    }

    #[test]
    fn search_all2any_matches_when_every_item_matches_some_child() {
        let c = search_criteria(
            "all2any",
            json!({
                "item.to_value#1": {"type": "greaterthan", "pattern": 40},
                "item.to_value#2": {"type": "lessthan", "pattern": 50},
                "item.to_value#3": {"type": "equals", "pattern": 46},
            }),
        );
        assert!(search_matches(&c, levels(&[45, 20])));
        let c = search_criteria(
            "all2any",
            json!({
                "item.to_value#1": {"type": "greaterthan", "pattern": 40},
                "item.to_value#2": {"type": "greaterthan", "pattern": 50},
                "item.to_value#3": {"type": "equals", "pattern": 46},
            }),
        );
        assert!(!search_matches(&c, levels(&[45, 20])));
    }

    #[test]
    fn search_all_with_st2_water_level_vectors() {
        let two = json!({
            "item.to_value#1": {"type": "greaterthan", "pattern": 40},
            "item.to_value#2": {"type": "lessthan", "pattern": 50},
        });
        let c = search_criteria("all", two.clone());
        assert!(search_matches(&c, levels(&[45, 46])));
        assert!(!search_matches(&c, levels(&[30, 46])));
        let mut three = two;
        three["item.to_value#3"] = json!({"type": "equals", "pattern": 46});
        assert!(!search_matches(
            &search_criteria("all", three),
            levels(&[45, 46])
        ));
    }

    #[test]
    fn search_treats_a_single_object_as_one_item() {
        let c = search_criteria(
            "all",
            json!({
                "item.to_value#1": {"type": "greaterthan", "pattern": 40},
                "item.to_value#2": {"type": "lessthan", "pattern": 50},
            }),
        );
        assert!(search_matches(
            &c,
            json!({"field_name": "waterLevel", "to_value": 45})
        ));
        assert!(!search_matches(
            &c,
            json!({"field_name": "waterLevel", "to_value": 30})
        ));
    }

    #[test]
    fn search_on_non_list_or_empty_list_follows_python_any_all() {
        let c = search_criteria("any", status_approved());
        assert!(!search_matches(&c, json!("Status")));
        assert!(!search_matches(&c, json!([])));
        let c = search_criteria("all", status_approved());
        assert!(search_matches(&c, json!([])));
        let c = criteria(
            json!({"trigger.nope": {"type": "search", "condition": "all", "pattern": {}}}),
        );
        assert!(!c.matches(&json!({"trigger": {"x": 1}}), &Templates::new()));
    }

    #[test]
    fn search_children_cannot_see_trigger() {
        let c = search_criteria("any", json!({"trigger.flag": {"type": "exists"}}));
        assert!(!c.matches(
            &json!({"trigger": {"flag": 1, "fields": [{"a": 1}]}}),
            &Templates::new()
        ));
    }

    #[test]
    fn nested_search_resolves_item_per_level() {
        let c = criteria(json!({"trigger.hosts": {
            "type": "search", "condition": "any",
            "pattern": {"item.disks": {
                "type": "search", "condition": "any",
                "pattern": {"item.free": {"type": "lt", "pattern": 10}}
            }}
        }}));
        let ctx = |free: i64| json!({"trigger": {"hosts": [{"disks": [{"free": 50}]}, {"disks": [{"free": free}]}]}});
        let t = Templates::new();
        assert!(c.matches(&ctx(5), &t));
        assert!(!c.matches(&ctx(50), &t));
    }

    #[test]
    fn templated_pattern_renders_typed_value_per_evaluation() {
        let c = criteria(json!({
            "trigger.body.app": {"type": "equals", "pattern": "{{ expected.app }}"},
            "trigger.body.count": {"type": "gt", "pattern": "{{ st2kv.system.threshold }}"},
        }));
        let t = Templates::new();
        let ctx = |count: i64| {
            json!({
                "trigger": {"body": {"app": "web", "count": count}},
                "expected": {"app": "web"},
                "st2kv": {"system": {"threshold": 3}},
            })
        };
        assert!(c.matches(&ctx(4), &t));
        assert!(!c.matches(&ctx(3), &t));
        assert_eq!(c.check_templates(&t), Ok(()));
    }

    #[test]
    fn templated_regex_and_helpers_are_prepared_at_evaluation() {
        let c = criteria(json!({
            "trigger.host": {"type": "regex", "pattern": "^{{ prefix }}-[0-9]+$"},
            "trigger.env": {"type": "iequals", "pattern": "{{ default env \"PROD\" }}"},
        }));
        let t = Templates::new();
        assert!(c.matches(
            &json!({"trigger": {"host": "web-12", "env": "prod"}, "prefix": "web"}),
            &t
        ));
        assert!(!c.matches(
            &json!({"trigger": {"host": "db-12", "env": "prod"}, "prefix": "web"}),
            &t
        ));
    }

    #[test]
    fn templated_pattern_that_renders_nothing_never_matches() {
        let c = criteria(
            json!({"trigger.x": {"type": "nequals", "pattern": "{{ st2kv.system.missing }}"}}),
        );
        assert!(!c.matches(&json!({"trigger": {"x": 1}}), &Templates::new()));
        let c =
            criteria(json!({"trigger.x": {"type": "equals", "pattern": "{{ to_int \"zz\" }}"}}));
        assert!(!c.matches(&json!({"trigger": {"x": 1}}), &Templates::new()));
    }

    #[test]
    fn templated_search_child_sees_item() {
        let c = search_criteria(
            "any",
            json!({"item.used": {"type": "gt", "pattern": "{{ item.limit }}"}}),
        );
        assert!(search_matches(
            &c,
            json!([{"used": 1, "limit": 5}, {"used": 9, "limit": 5}])
        ));
        assert!(!search_matches(&c, json!([{"used": 1, "limit": 5}])));
    }

    #[test]
    fn check_templates_reports_bad_templated_patterns() {
        let c = criteria(json!({"trigger.x": {"type": "eq", "pattern": "{{ x | nope }}"}}));
        let errs = c.check_templates(&Templates::new()).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, r#"criteria."trigger.x".pattern"#);
        assert!(
            errs[0].reason.contains("no filter named `nope`"),
            "{}",
            errs[0].reason
        );
    }

    #[test]
    fn compile_reports_all_errors_at_once() {
        let errs = errors(json!({
            "trigger.a": {"type": "frobnicate", "pattern": 1},
            "trigger.b": {"pattern": "x"},
            "trigger.c": {"type": "regex", "pattern": "(unclosed"},
            "trigger.ok": {"type": "eq", "pattern": "fine"},
        }));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[0].field, r#"criteria."trigger.a".type"#);
        assert!(errs[0].reason.contains("\"frobnicate\""));
        assert!(errs[0].reason.contains("equals (eq)"), "{}", errs[0].reason);
        assert_eq!(errs[1].field, r#"criteria."trigger.b".type"#);
        assert_eq!(errs[2].field, r#"criteria."trigger.c".pattern"#);
        assert!(errs[2].reason.contains("invalid regular expression"));
    }

    #[test]
    fn compile_requires_pattern_where_st2_could_never_match_without_one() {
        let errs = errors(json!({
            "trigger.a": {"type": "equals"},
            "trigger.b": {"type": "contains", "pattern": null},
        }));
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].field, r#"criteria."trigger.a".pattern"#);
        for ok in ["exists", "nexists", "nequals"] {
            criteria(json!({"trigger.a": {"type": ok}}));
        }
    }

    #[test]
    fn compile_rejects_bad_search_specs() {
        let errs = errors(json!({
            "trigger.a": {"type": "search", "pattern": {"item.x": {"type": "eq", "pattern": 1}}},
            "trigger.b": {"type": "search", "condition": "weird", "pattern": {}},
            "trigger.c": {"type": "search", "condition": "any", "pattern": [1]},
            "trigger.d": {"type": "search", "condition": "any", "pattern": {"item.x": {"type": "nope"}}},
        }));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                r#"criteria."trigger.a".condition"#,
                r#"criteria."trigger.b".condition"#,
                r#"criteria."trigger.c".pattern"#,
                r#"criteria."trigger.d".pattern."item.x".type"#,
            ]
        );
    }

    #[test]
    fn compile_rejects_bad_timediff_and_typed_patterns() {
        let errs = errors(json!({
            "trigger.a": {"type": "timediff_lt", "pattern": "ten"},
            "trigger.b": {"type": "td_gt", "pattern": [1]},
            "trigger.c": {"type": "iequals", "pattern": 5},
            "trigger.d": {"type": "matchwildcard", "pattern": true},
            "trigger.e": {"type": "inside", "pattern": 5},
            "trigger.f": {"type": "startswith", "pattern": ["a", 1]},
        }));
        assert_eq!(errs.len(), 6, "{errs:?}");
        assert!(errs.iter().all(|e| e.field.ends_with(".pattern")));
    }

    #[test]
    fn compile_rejects_malformed_entries_and_keys() {
        let errs = errors(json!({
            "trigger.a": "equals",
            "trigger..b": {"type": "eq", "pattern": 1},
            "trigger.c[0": {"type": "eq", "pattern": 1},
            "trigger.d": {"type": 5, "pattern": 1},
            // A Jinja pattern is a template like any other.
            "trigger.e": {"type": "eq", "pattern": "{% if x %}y{% endif %}"},
        }));
        assert_eq!(errs.len(), 4, "{errs:?}");
        let rendered: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            rendered.contains(
                &"criteria.\"trigger.a\": must be an object with `type` and `pattern`".to_owned()
            ),
            "{rendered:?}"
        );
    }

    #[test]
    fn odd_keys_are_refused_with_the_reason_or_resolve_to_their_path() {
        // Keys a pack author could write by mistake: each is either refused
        // with a reason that names the key, or read as the path it spells.
        for (key, reason) in [
            ("a.[é", "unclosed `[`"),
            ("[", "unclosed `[`"),
            ("#x", "empty criteria key"),
            ("a[]", "empty path segment"),
            ("..", "empty path segment"),
            ("a.", "trailing `.`"),
            ("a.*.b", "wildcard segments are not supported"),
        ] {
            let errs = errors(json!({ key: {"type": "eq", "pattern": 1} }));
            assert_eq!(errs.len(), 1, "{key}: {errs:?}");
            let text = errs[0].to_string();
            assert!(text.contains(reason), "{key}: {text}");
            assert!(errs[0].field.contains(key), "{key}: {}", errs[0].field);
        }
        let ctx = json!({
            "trigger": {"é": ["é"], "a": [{"é": 1}]},
            "é": "é",
            "]": "]",
            "a": [{"é": 1}],
        });
        let t = Templates::new();
        // (key, pattern, matches): non-ASCII names, brackets, tags, indexes.
        for (key, pattern, expected) in [
            ("é", json!("é"), true),
            ("]", json!("]"), true),
            ("a#tag", json!([{"é": 1}]), true),
            ("a.[0].é", json!(1), true),
            ("a[0]['é']", json!(1), true),
            ("trigger.é.0", json!("é"), true),
            ("trigger.é[1]", json!("é"), false),
            // A name looked up in an array, or a missing key, is absent.
            ("a['é']", json!(1), false),
            ("nope.é", json!("é"), false),
        ] {
            let c = criteria(json!({ key: {"type": "eq", "pattern": pattern} }));
            assert_eq!(c.matches(&ctx, &t), expected, "{key}");
        }
    }

    #[test]
    fn odd_patterns_are_refused_or_match_as_stackstorm_does() {
        // A wildcard with a reversed range matches nothing (CPython's
        // fnmatch drops empty ranges), and an unclosed `[!` is a literal `[!`.
        for value in ["é", "a", "[é-a]", ""] {
            assert!(
                !op("matchwildcard", json!(value), json!("[é-a]")),
                "{value:?}"
            );
        }
        assert!(op("matchwildcard", json!("x[!"), json!("x[!")));
        assert!(!op("matchwildcard", json!("x"), json!("x[!")));
        // Regexes and case folding beyond ASCII.
        assert!(op("regex", json!("ééé"), json!("^é+$")));
        assert!(op("iequals", json!("ÉTÉ"), json!("été")));
        assert!(op("icontains", json!("un ÉTÉ chaud"), json!("été")));
        let errs = errors(json!({"trigger.a": {"type": "regex", "pattern": "(é"}}));
        assert_eq!(errs.len(), 1, "{errs:?}");
    }

    #[test]
    fn wildcard_translation_matches_fnmatch_translate() {
        assert_eq!(wildcard_to_regex("a*?"), r"\A(?s:a.*.)\z");
        assert_eq!(wildcard_to_regex("[!ab]"), r"\A(?s:[^ab])\z");
        assert_eq!(wildcard_to_regex("x["), r"\A(?s:x\[)\z");
    }

    #[test]
    fn criteria_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Criteria>();
    }
}
