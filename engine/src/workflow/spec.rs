//! The workflow language: Orquesta's structure with handlebars expressions.
//!
//! A definition is parsed once at load time into a [`WorkflowSpec`]; every
//! problem (unknown task in `do`, bad expression, an Orquesta feature squall
//! does not support) is reported with the key it concerns, so the pack loader
//! can name file, field and reason.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::template::Templates;

/// Whether `runner` names the workflow runner (whose actions' `entry_point`
/// is a workflow definition).
pub fn is_workflow_runner(runner: &str) -> bool {
    runner == "orquesta" || runner == "workflow"
}

/// Engine commands usable in `do` instead of a task name.
pub const COMMANDS: [&str; 4] = ["continue", "noop", "fail", "retry"];

/// A problem in a workflow definition.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    /// Dotted path of the key (`tasks.deploy.next[0].do`).
    pub field: String,
    pub reason: String,
}

/// How many inbound transitions a join task waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    All,
    Count(usize),
}

/// `with: {items, concurrency}`.
#[derive(Debug, Clone, PartialEq)]
pub struct WithItems {
    /// Expression that yields the list of items.
    pub items: String,
    /// Items running at once; `None` means all at once.
    pub concurrency: Option<Value>,
}

/// `retry: {when, count, delay}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Expression deciding whether to retry; default: the task failed.
    pub when: Option<String>,
    pub count: u32,
    /// Seconds between attempts.
    pub delay: f64,
}

/// One `next` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub when: Option<String>,
    /// Published variables in order; later ones see earlier ones.
    pub publish: Vec<(String, Value)>,
    /// Task names and engine commands.
    pub targets: Vec<String>,
}

/// One task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Action reference; a task without one is a no-op join/branch point.
    pub action: Option<String>,
    pub input: Map<String, Value>,
    pub next: Vec<Transition>,
    pub join: Option<Join>,
    pub with: Option<WithItems>,
    pub retry: Option<Retry>,
    /// Seconds to wait before the task starts.
    pub delay: Option<f64>,
    /// Seconds the task may run; then its action is canceled and the task times out.
    pub timeout: Option<f64>,
    /// Number of transitions in the definition that lead here.
    pub inbound: usize,
}

/// A parsed, validated workflow definition.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSpec {
    pub description: String,
    /// Input names with their defaults.
    pub input: Vec<(String, Option<Value>)>,
    pub vars: Vec<(String, Value)>,
    pub output: Vec<(String, Value)>,
    pub tasks: BTreeMap<String, TaskSpec>,
    /// Tasks nothing transitions to: where a run starts.
    pub start: Vec<String>,
    /// Seconds the whole workflow may run.
    pub timeout: Option<f64>,
    /// Some expression calls `task_status`.
    pub uses_task_status: bool,
}

impl WorkflowSpec {
    /// Every action the tasks call, with the key that names it.
    pub fn actions(&self) -> impl Iterator<Item = (String, &str)> {
        self.tasks.iter().filter_map(|(name, task)| {
            task.action
                .as_deref()
                .map(|a| (format!("tasks.{name}.action"), a))
        })
    }
}

const TOP_KEYS: &[&str] = &[
    "version",
    "description",
    "input",
    "vars",
    "output",
    "tasks",
    "timeout",
];
const TASK_KEYS: &[&str] = &[
    "action", "input", "next", "join", "with", "retry", "delay", "timeout",
];

/// Parse and validate a definition. `templates` checks every expression.
pub fn parse(definition: &Value, templates: &Templates) -> Result<WorkflowSpec, Vec<SpecError>> {
    let mut p = Parser {
        templates,
        errors: Vec::new(),
    };
    let spec = p.workflow(definition);
    if p.errors.is_empty() {
        Ok(spec)
    } else {
        Err(p.errors)
    }
}

struct Parser<'a> {
    templates: &'a Templates,
    errors: Vec<SpecError>,
}

impl Parser<'_> {
    fn err(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(SpecError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn workflow(&mut self, def: &Value) -> WorkflowSpec {
        let empty = Map::new();
        let map = match def.as_object() {
            Some(m) => m,
            None => {
                self.err("", "a workflow definition must be a mapping");
                &empty
            }
        };
        for key in map.keys() {
            if !TOP_KEYS.contains(&key.as_str()) {
                self.unsupported_key(key, key, TOP_KEYS);
            }
        }
        if let Some(v) = map.get("version") {
            let ok = matches!(v.as_f64(), Some(x) if (x - 1.0).abs() < f64::EPSILON)
                || v.as_str() == Some("1.0");
            if !ok {
                self.err(
                    "version",
                    format!("unsupported version {v}; squall reads 1.0"),
                );
            }
        }
        let input = self.input_list(map.get("input"));
        let vars = self.pairs("vars", map.get("vars"));
        let output = self.pairs("output", map.get("output"));
        let timeout = self.seconds("timeout", map.get("timeout"));
        let mut tasks = BTreeMap::new();
        match map.get("tasks") {
            Some(Value::Object(t)) if !t.is_empty() => {
                for (name, body) in t {
                    tasks.insert(name.clone(), self.task(name, body));
                }
            }
            _ => self.err("tasks", "a workflow needs a mapping of one or more tasks"),
        }
        // Resolve transitions: targets exist, count inbound edges.
        let names: BTreeSet<String> = tasks.keys().cloned().collect();
        let mut inbound: BTreeMap<String, usize> = BTreeMap::new();
        // A task only its own transitions lead to (a loop) can still start a run.
        let mut from_others: BTreeSet<String> = BTreeSet::new();
        for (name, task) in &tasks {
            for (i, t) in task.next.iter().enumerate() {
                for target in &t.targets {
                    if COMMANDS.contains(&target.as_str()) {
                        continue;
                    }
                    if names.contains(target) {
                        *inbound.entry(target.clone()).or_default() += 1;
                        if target != name {
                            from_others.insert(target.clone());
                        }
                    } else {
                        let hint = suggest(target, &names);
                        self.err(
                            format!("tasks.{name}.next[{i}].do"),
                            format!("unknown task {target:?}{hint}"),
                        );
                    }
                }
            }
        }
        for (name, task) in &mut tasks {
            task.inbound = inbound.get(name).copied().unwrap_or(0);
            if let Some(Join::Count(n)) = task.join
                && n > task.inbound
            {
                self.errors.push(SpecError {
                    field: format!("tasks.{name}.join"),
                    reason: format!(
                        "waits for {n} inbound transitions but only {} lead here",
                        task.inbound
                    ),
                });
            }
        }
        let start: Vec<String> = tasks
            .iter()
            .filter(|(n, _)| !from_others.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        if start.is_empty() && !tasks.is_empty() {
            self.err(
                "tasks",
                "every task is the target of a transition, so none can start the workflow",
            );
        }
        for (key, value) in vars.iter().chain(output.iter()) {
            self.expressions(key, value);
        }
        WorkflowSpec {
            uses_task_status: def.to_string().contains("task_status"),
            description: map
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            input,
            vars,
            output,
            tasks,
            start,
            timeout,
        }
    }

    fn unsupported_key(&mut self, field: &str, key: &str, known: &[&str]) {
        let orquesta_only = [
            "with-items",
            "on-success",
            "on-error",
            "on-complete",
            "type",
        ];
        let reason = if orquesta_only.contains(&key) {
            format!("{key:?} is Mistral syntax, which squall does not support; use `next`")
        } else {
            format!("unknown key {key:?}; expected one of {}", known.join(", "))
        };
        self.err(field, reason);
    }

    fn task(&mut self, name: &str, body: &Value) -> TaskSpec {
        let at = format!("tasks.{name}");
        let mut task = TaskSpec {
            action: None,
            input: Map::new(),
            next: Vec::new(),
            join: None,
            with: None,
            retry: None,
            delay: None,
            timeout: None,
            inbound: 0,
        };
        let Some(map) = body.as_object() else {
            if !body.is_null() {
                self.err(at, "a task must be a mapping");
            }
            return task;
        };
        for key in map.keys() {
            if !TASK_KEYS.contains(&key.as_str()) {
                self.unsupported_key(&format!("{at}.{key}"), key, TASK_KEYS);
            }
        }
        match map.get("action") {
            None | Some(Value::Null) => {}
            Some(Value::String(a)) => {
                // Orquesta allows `action: pack.name key=value`; squall wants `input`.
                if a.trim().contains(char::is_whitespace) {
                    self.err(
                        format!("{at}.action"),
                        "inline parameters after the action name are not supported; use `input`",
                    );
                } else if a.contains("{{") || a.contains("<%") {
                    self.err(
                        format!("{at}.action"),
                        "the action must be a fixed reference, not an expression",
                    );
                } else {
                    task.action = Some(a.trim().to_owned());
                }
            }
            Some(_) => self.err(format!("{at}.action"), "must be an action reference"),
        }
        match map.get("input") {
            None | Some(Value::Null) => {}
            Some(Value::Object(input)) => {
                let mut normalised = Map::new();
                for (k, v) in input {
                    let v = self.expressions(&format!("{at}.input.{k}"), v);
                    normalised.insert(k.clone(), v);
                }
                task.input = normalised;
            }
            Some(_) => self.err(format!("{at}.input"), "must be a mapping"),
        }
        task.join = match map.get("join") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "all" => Some(Join::All),
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {
                Some(Join::Count(n.as_u64().unwrap_or(1) as usize))
            }
            Some(other) => {
                self.err(
                    format!("{at}.join"),
                    format!("must be `all` or a positive count, not {other}"),
                );
                None
            }
        };
        task.with = self.with_items(&at, map.get("with"));
        task.retry = self.retry(&at, map.get("retry"));
        task.delay = self.seconds(&format!("{at}.delay"), map.get("delay"));
        task.timeout = self.seconds(&format!("{at}.timeout"), map.get("timeout"));
        match map.get("next") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(t) = self.transition(&format!("{at}.next[{i}]"), item) {
                        task.next.push(t);
                    }
                }
            }
            Some(_) => self.err(format!("{at}.next"), "must be a list of transitions"),
        }
        task
    }

    fn transition(&mut self, at: &str, item: &Value) -> Option<Transition> {
        let Some(map) = item.as_object() else {
            self.err(at, "a transition must be a mapping with when/publish/do");
            return None;
        };
        for key in map.keys() {
            if !["when", "publish", "do"].contains(&key.as_str()) {
                self.err(
                    format!("{at}.{key}"),
                    format!("unknown key {key:?}; expected when, publish, do"),
                );
            }
        }
        let when = match map.get("when") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => self.expression(&format!("{at}.when"), s),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(_) => {
                self.err(format!("{at}.when"), "must be an expression");
                None
            }
        };
        let publish = self.pairs(&format!("{at}.publish"), map.get("publish"));
        let publish = publish
            .into_iter()
            .map(|(k, v)| {
                let v = self.expressions(&format!("{at}.publish.{k}"), &v);
                (k, v)
            })
            .collect();
        let targets = match map.get("do") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            Some(Value::Array(list)) => {
                let mut out = Vec::new();
                for t in list {
                    match t.as_str() {
                        Some(s) => out.push(s.trim().to_owned()),
                        None => self.err(format!("{at}.do"), "task names must be strings"),
                    }
                }
                out
            }
            Some(_) => {
                self.err(format!("{at}.do"), "must be a task name or a list of them");
                Vec::new()
            }
        };
        Some(Transition {
            when,
            publish,
            targets,
        })
    }

    fn with_items(&mut self, at: &str, value: Option<&Value>) -> Option<WithItems> {
        let (items, concurrency) = match value? {
            Value::Null => return None,
            Value::String(s) => (s.clone(), None),
            Value::Object(m) => {
                for key in m.keys() {
                    if key != "items" && key != "concurrency" {
                        self.err(
                            format!("{at}.with.{key}"),
                            format!("unknown key {key:?}; expected items, concurrency"),
                        );
                    }
                }
                let Some(items) = m.get("items").and_then(Value::as_str) else {
                    self.err(
                        format!("{at}.with.items"),
                        "needs an expression for the list",
                    );
                    return None;
                };
                (items.to_owned(), m.get("concurrency").cloned())
            }
            _ => {
                self.err(format!("{at}.with"), "must be an expression or a mapping");
                return None;
            }
        };
        // `x in {{ expr }}`: the item is `item` whatever its name.
        static NAMED: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^\s*([A-Za-z_][\w, ]*)\s+in\s+(.+)$").expect("regex"));
        let expr = match NAMED.captures(&items) {
            Some(c) if c[1].contains(',') => {
                self.err(
                    format!("{at}.with.items"),
                    "zipping several lists (`a, b in ...`) is not supported",
                );
                return None;
            }
            Some(c) => c[2].to_owned(),
            None => items,
        };
        let expr = self.expression(&format!("{at}.with.items"), &expr)?;
        if let Some(c) = &concurrency {
            match c {
                Value::Number(n) if n.as_u64().is_some_and(|n| n >= 1) => {}
                Value::String(s) if crate::template::is_template(s) => {
                    self.expression(&format!("{at}.with.concurrency"), s);
                }
                other => self.err(
                    format!("{at}.with.concurrency"),
                    format!("must be a positive number or an expression, not {other}"),
                ),
            }
        }
        Some(WithItems {
            items: expr,
            concurrency,
        })
    }

    fn retry(&mut self, at: &str, value: Option<&Value>) -> Option<Retry> {
        let map = match value? {
            Value::Null => return None,
            Value::Object(m) => m,
            _ => {
                self.err(
                    format!("{at}.retry"),
                    "must be a mapping with when/count/delay",
                );
                return None;
            }
        };
        for key in map.keys() {
            if !["when", "count", "delay"].contains(&key.as_str()) {
                self.err(
                    format!("{at}.retry.{key}"),
                    format!("unknown key {key:?}; expected when, count, delay"),
                );
            }
        }
        let count = match map.get("count") {
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                u32::try_from(n.as_u64().unwrap_or(0)).unwrap_or(u32::MAX)
            }
            _ => {
                self.err(
                    format!("{at}.retry.count"),
                    "needs a whole number of retries",
                );
                0
            }
        };
        let when = match map.get("when") {
            Some(Value::String(s)) => self.expression(&format!("{at}.retry.when"), s),
            None | Some(Value::Null) => None,
            Some(_) => {
                self.err(format!("{at}.retry.when"), "must be an expression");
                None
            }
        };
        let delay = self
            .seconds(&format!("{at}.retry.delay"), map.get("delay"))
            .unwrap_or(0.0);
        Some(Retry { when, count, delay })
    }

    fn seconds(&mut self, at: &str, value: Option<&Value>) -> Option<f64> {
        match value? {
            Value::Null => None,
            Value::Number(n) if n.as_f64().is_some_and(|s| s >= 0.0) => n.as_f64(),
            other => {
                self.err(at, format!("must be a number of seconds, not {other}"));
                None
            }
        }
    }

    /// `input: [name, {name: default}]` or a mapping.
    fn input_list(&mut self, value: Option<&Value>) -> Vec<(String, Option<Value>)> {
        let mut out = Vec::new();
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(name) => out.push((name.clone(), None)),
                        Value::Object(m) if m.len() == 1 => {
                            let (k, v) = m.iter().next().expect("one entry");
                            let v = self.expressions(&format!("input.{k}"), v);
                            out.push((k.clone(), Some(v)));
                        }
                        _ => self.err(
                            format!("input[{i}]"),
                            "each input is a name or a single `name: default` mapping",
                        ),
                    }
                }
            }
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    out.push((k.clone(), (!v.is_null()).then(|| v.clone())));
                }
            }
            Some(_) => self.err("input", "must be a list of names"),
        }
        out
    }

    /// `vars`/`output`/`publish`: a list of single-key mappings, or a mapping.
    fn pairs(&mut self, at: &str, value: Option<&Value>) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item.as_object() {
                        Some(m) if m.len() == 1 => {
                            let (k, v) = m.iter().next().expect("one entry");
                            out.push((k.clone(), v.clone()));
                        }
                        _ => self.err(
                            format!("{at}[{i}]"),
                            "each entry is a single `name: value` mapping",
                        ),
                    }
                }
            }
            Some(Value::Object(m)) => {
                out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Some(_) => self.err(at, "must be a list of `name: value` mappings"),
        }
        out
    }

    /// Normalise and check every template string inside `value`.
    fn expressions(&mut self, at: &str, value: &Value) -> Value {
        match value {
            Value::String(s) => match self.expression(at, s) {
                Some(s) => Value::String(s),
                None => value.clone(),
            },
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.expressions(&format!("{at}[{i}]"), v))
                    .collect(),
            ),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), self.expressions(&format!("{at}.{k}"), v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn expression(&mut self, at: &str, text: &str) -> Option<String> {
        if text.contains("<%") {
            self.err(
                at,
                format!("YAQL expressions (<% %>) are not supported; write {{{{ }}}} handlebars: {text:?}"),
            );
            return None;
        }
        let normalised = normalise(text);
        match self.templates.check(&normalised) {
            Ok(()) => Some(normalised),
            Err(e) => {
                self.err(at, e.to_string());
                None
            }
        }
    }
}

/// Rewrite Orquesta's Jinja function calls into handlebars inside `{{ }}`:
/// `succeeded()` → `succeeded`, `ctx().x` / `ctx('x')` → `ctx.x`,
/// `result().y` → `result.y`, `item()` → `item`, `task_status(t)` → `(task_status "t")`.
pub fn normalise(text: &str) -> String {
    if !text.contains("()") && !text.contains("ctx(") && !text.contains("task_status(") {
        return text.to_owned();
    }
    static CALLS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
        [
            (r"\b(succeeded|failed|completed|result|ctx|item)\(\)", "$1"),
            (r#"\bctx\(\s*['"]?([A-Za-z_]\w*)['"]?\s*\)"#, "ctx.$1"),
            (
                r#"\btask_status\(\s*['"]?([A-Za-z_][\w-]*)['"]?\s*\)"#,
                "(task_status \"$1\")",
            ),
        ]
        .into_iter()
        .map(|(re, to)| (Regex::new(re).expect("regex"), to))
        .collect()
    });
    let mut out = text.to_owned();
    for (re, to) in CALLS.iter() {
        out = re.replace_all(&out, *to).into_owned();
    }
    out
}

fn suggest(name: &str, names: &BTreeSet<String>) -> String {
    names
        .iter()
        .map(|n| (strsim::levenshtein(name, n), n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| format!(" (did you mean {n:?}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse_yaml(text: &str) -> Result<WorkflowSpec, Vec<SpecError>> {
        let value: Value = yaml_serde::from_str(text).expect("yaml");
        parse(&value, &Templates::new())
    }

    #[test]
    fn parses_orquesta_structure() {
        let spec = parse_yaml(
            r#"
version: 1.0
input: [app, {env: staging}]
vars: [{count: 0}]
output: [{done: "{{ ctx.count }}"}]
tasks:
  first:
    action: core.noop
    next:
      - when: "{{ succeeded() }}"
        publish: [{count: "{{ ctx('count') }}"}]
        do: second, third
      - when: "{{ failed() }}"
        do: fail
  second:
    action: core.echo
    input: {message: "{{ result().x }}"}
    next: [{do: last}]
  third:
    with: {items: "x in {{ ctx.list }}", concurrency: 2}
    action: core.echo
    input: {message: "{{ item() }}"}
    retry: {count: 2, delay: 0.5}
    next: [{do: last}]
  last:
    join: all
"#,
        )
        .expect("valid");
        assert_eq!(spec.start, vec!["first".to_owned()]);
        assert_eq!(spec.tasks["last"].inbound, 2);
        assert_eq!(spec.tasks["last"].join, Some(Join::All));
        let t = &spec.tasks["first"].next[0];
        assert_eq!(t.when.as_deref(), Some("{{ succeeded }}"));
        assert_eq!(t.publish[0].1, json!("{{ ctx.count }}"));
        assert_eq!(t.targets, vec!["second", "third"]);
        assert_eq!(
            spec.tasks["second"].input["message"],
            json!("{{ result.x }}")
        );
        let with = spec.tasks["third"].with.as_ref().expect("with");
        assert_eq!(with.items, "{{ ctx.list }}");
        assert_eq!(spec.input[1], ("env".into(), Some(json!("staging"))));
    }

    #[test]
    fn reports_each_problem_with_its_key() {
        let errors = parse_yaml(
            r#"
tasks:
  a:
    action: core.noop
    on-success: [b]
    next:
      - when: "<% succeeded() %>"
        do: bee
  b:
    action: core.echo
    input: {message: "{{ x | no_such_filter }}"}
    join: 3
"#,
        )
        .expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "tasks.a.on-success",
                "tasks.a.next[0].when",
                "tasks.b.input.message",
                "tasks.a.next[0].do",
                "tasks.b.join"
            ],
            "{errors:#?}"
        );
        assert!(errors[0].reason.contains("Mistral"));
        assert!(errors[1].reason.contains("YAQL"));
        assert!(
            errors[2]
                .reason
                .contains("no filter named `no_such_filter`")
        );
        assert!(errors[3].reason.contains("unknown task \"bee\""));
    }

    #[test]
    fn a_cycle_without_entry_is_an_error() {
        let errors = parse_yaml("tasks:\n  a: {next: [{do: b}]}\n  b: {next: [{do: a}]}\n")
            .expect_err("no start");
        assert!(errors[0].reason.contains("none can start"), "{errors:?}");
    }
}
