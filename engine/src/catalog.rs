//! The catalog: loaded packs indexed for the hot paths. Actions carry their
//! compiled parameter sets; rules are compiled once and indexed by trigger
//! type (and webhook URL), so matching a trigger instance never scans every
//! rule.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use squall_aliases::{AliasDef, AliasIndex, FormatDef, ParamType};

use crate::criteria::Criteria;
use crate::kind::{RunnerKind, RunnerKinds};
use crate::pack::config::PackConfig;
use crate::pack::{Action, Alias, Pack, PackError, Rule, RuleKind};
use crate::params::{Casting, ParamError, ParamSet};
use crate::template::Templates;
use crate::triggers;
use crate::workflow::spec::{self, WorkflowSpec};

/// Parse the definition of every workflow action and check that its tasks
/// call actions that exist.
fn build_workflows(
    packs: &[Pack],
    actions: &HashMap<String, ActionEntry>,
    errors: &mut Vec<PackError>,
) -> HashMap<String, Arc<WorkflowSpec>> {
    let templates = Templates::new();
    let mut out = HashMap::new();
    for pack in packs {
        for action in &pack.actions {
            if !spec::is_workflow_runner(&action.runner_type) {
                continue;
            }
            let Some(entry) = &action.entry_point else {
                continue;
            };
            let same = |file: &std::path::Path| {
                file == entry
                    || (file.canonicalize().ok().is_some()
                        && file.canonicalize().ok() == entry.canonicalize().ok())
            };
            let Some(file) = pack.workflows.iter().find(|w| same(&w.file)) else {
                errors.push(PackError {
                    file: action.file.clone(),
                    field: "entry_point".into(),
                    reason: format!(
                        "{} is not a workflow definition under actions/workflows/",
                        entry.display()
                    ),
                    line: None,
                });
                continue;
            };
            let mut problems = Vec::new();
            match spec::parse(&file.definition, &templates) {
                Ok(parsed) => {
                    for (field, called) in parsed.actions() {
                        if !actions.contains_key(called) {
                            problems.push(spec::SpecError {
                                field,
                                reason: format!("unknown action {called:?}"),
                            });
                        }
                    }
                    if problems.is_empty() {
                        out.insert(action.reference(), Arc::new(parsed));
                    }
                }
                Err(errs) => problems = errs,
            }
            errors.extend(problems.into_iter().map(|e| PackError {
                file: file.file.clone(),
                field: e.field,
                reason: e.reason,
                line: None,
            }));
        }
    }
    out
}

/// An action ready to run.
pub struct ActionEntry {
    pub action: Arc<Action>,
    /// Its kind of runner (the node's runner registry runs it).
    pub runner: Arc<RunnerKind>,
    pub params: ParamSet,
}

/// A rule ready to evaluate.
pub struct CompiledRule {
    pub rule: Rule,
    pub criteria: Criteria,
}

/// What one rule decided about one trigger instance.
pub struct RuleDecision {
    pub rule: String,
    pub outcome: Result<PlannedExecution, String>,
}

/// An execution a rule (or a person) asked for, parameters resolved.
#[derive(Debug, Clone)]
pub struct PlannedExecution {
    pub action: String,
    pub runner: String,
    pub parameters: Map<String, Value>,
    pub idempotent: bool,
    /// The values of its secret parameters.
    pub secrets: crate::secrets::Secrets,
}

/// Everything loaded, indexed. Immutable: a reload builds a new one.
pub struct Catalog {
    pub packs: Vec<Pack>,
    actions: HashMap<String, ActionEntry>,
    /// trigger type -> rules, standard first then backstop, each in name order.
    rules_by_trigger: HashMap<String, Vec<Arc<CompiledRule>>>,
    /// webhook url -> rules listening on it.
    webhook_rules: HashMap<String, Vec<Arc<CompiledRule>>>,
    rules: BTreeMap<String, Arc<CompiledRule>>,
    /// Every enabled alias, compiled for matching chat commands.
    pub aliases: AliasIndex,
    alias_defs: HashMap<String, Alias>,
    /// Workflow actions' parsed definitions, by action reference.
    workflows: HashMap<String, Arc<WorkflowSpec>>,
    /// Packs that did not load, each with its errors (lenient loading).
    pub refused: Vec<crate::pack::RefusedPack>,
    /// What StackStorm lets pass in the loaded packs, for their authors.
    pub warnings: Vec<PackError>,
    /// The runner kinds it was built with (a rebuild uses them again).
    runners: RunnerKinds,
}

impl Catalog {
    /// Index loaded packs. Fails (with every problem) when an action names a
    /// runner squall lacks or a parameter schema does not compile.
    pub fn build(packs: Vec<Pack>, runners: &RunnerKinds) -> Result<Catalog, Vec<PackError>> {
        let mut errors = Vec::new();
        let mut actions = HashMap::new();
        let mut rules = BTreeMap::new();
        for pack in &packs {
            for action in &pack.actions {
                let Some(runner) = runners.get(&action.runner_type) else {
                    errors.push(PackError {
                        file: action.file.clone(),
                        field: "runner_type".into(),
                        reason: format!("unknown runner {:?}", action.runner_type),
                        line: None,
                    });
                    continue;
                };
                match ParamSet::build(&runner.parameters, &action.parameters) {
                    Ok(params) => {
                        actions.insert(
                            action.reference(),
                            ActionEntry {
                                action: Arc::new(action.clone()),
                                runner,
                                params,
                            },
                        );
                    }
                    Err(err) => errors.push(PackError {
                        file: action.file.clone(),
                        field: format!("parameters.{}", err.parameter),
                        reason: err.reason,
                        line: None,
                    }),
                }
            }
            for rule in &pack.rules {
                if crate::timers::schedule::is_timer(&rule.trigger_type)
                    && let Err(reason) = crate::timers::schedule::Schedule::parse(
                        &rule.trigger_type,
                        &rule.trigger_parameters,
                    )
                {
                    errors.push(PackError {
                        file: rule.file.clone(),
                        field: "trigger.parameters".into(),
                        reason,
                        line: None,
                    });
                }
                match Criteria::compile(&rule.criteria) {
                    Ok(criteria) => {
                        rules.insert(
                            rule.reference(),
                            Arc::new(CompiledRule {
                                rule: rule.clone(),
                                criteria,
                            }),
                        );
                    }
                    Err(errs) => errors.extend(errs.into_iter().map(|e| PackError {
                        file: rule.file.clone(),
                        field: e.field,
                        reason: e.reason,
                        line: None,
                    })),
                }
            }
        }
        let (aliases, alias_defs) = build_alias_index(&packs, &actions, &mut errors);
        let workflows = build_workflows(&packs, &actions, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut rules_by_trigger: HashMap<String, Vec<Arc<CompiledRule>>> = HashMap::new();
        let mut webhook_rules: HashMap<String, Vec<Arc<CompiledRule>>> = HashMap::new();
        let mut ordered: Vec<&Arc<CompiledRule>> = rules.values().collect();
        ordered.sort_by_key(|r| (r.rule.kind == RuleKind::Backstop, r.rule.reference()));
        for compiled in ordered {
            if !compiled.rule.enabled {
                continue;
            }
            if compiled.rule.trigger_type == triggers::WEBHOOK {
                if let Some(url) = compiled
                    .rule
                    .trigger_parameters
                    .get("url")
                    .and_then(Value::as_str)
                {
                    webhook_rules
                        .entry(url.trim_matches('/').to_owned())
                        .or_default()
                        .push(compiled.clone());
                }
            } else {
                rules_by_trigger
                    .entry(compiled.rule.trigger_type.clone())
                    .or_default()
                    .push(compiled.clone());
            }
        }
        Ok(Catalog {
            packs,
            actions,
            rules_by_trigger,
            webhook_rules,
            rules,
            aliases,
            alias_defs,
            workflows,
            refused: Vec::new(),
            warnings: Vec::new(),
            runners: runners.clone(),
        })
    }

    /// The definition behind a workflow action.
    pub fn workflow(&self, reference: &str) -> Option<&Arc<WorkflowSpec>> {
        self.workflows.get(reference)
    }

    /// The alias definition behind a match (ack/result formats, action).
    pub fn alias(&self, reference: &str) -> Option<&Alias> {
        self.alias_defs.get(reference)
    }

    pub fn action(&self, reference: &str) -> Option<&ActionEntry> {
        self.actions.get(reference)
    }

    pub fn action_refs(&self) -> BTreeSet<&str> {
        self.actions.keys().map(String::as_str).collect()
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values().map(|r| &r.rule)
    }

    /// This catalog with rules enabled or disabled as `states` says (rule
    /// reference -> enabled); rules it does not name keep their state.
    pub fn with_rule_states(
        &self,
        states: &BTreeMap<String, bool>,
    ) -> Result<Catalog, Vec<PackError>> {
        let mut packs = self.packs.clone();
        for pack in &mut packs {
            for rule in &mut pack.rules {
                if let Some(enabled) = states.get(&rule.reference()) {
                    rule.enabled = *enabled;
                }
            }
        }
        let mut catalog = Catalog::build(packs, &self.runners)?;
        catalog.refused = self.refused.clone();
        catalog.warnings = self.warnings.clone();
        Ok(catalog)
    }

    /// Whether every rule `states` names has that state already.
    pub fn has_rule_states(&self, states: &BTreeMap<String, bool>) -> bool {
        states
            .iter()
            .all(|(r, enabled)| self.rule(r).is_none_or(|rule| rule.enabled == *enabled))
    }

    pub fn rule(&self, reference: &str) -> Option<&Rule> {
        self.rules.get(reference).map(|r| &r.rule)
    }

    /// Webhook URLs that enabled rules listen on.
    pub fn webhook_urls(&self) -> BTreeSet<&str> {
        self.webhook_rules.keys().map(String::as_str).collect()
    }

    pub fn has_webhook(&self, url: &str) -> bool {
        self.webhook_rules.contains_key(url)
    }

    /// Whether any enabled rule listens on this trigger type (lets sources skip
    /// firing triggers nobody listens to, e.g. `squall.execution`).
    pub fn has_rules_for(&self, trigger_type: &str) -> bool {
        self.rules_by_trigger.contains_key(trigger_type)
    }

    /// Resolve parameters for a run of `action_ref` on behalf of `user`.
    /// Templated defaults (`{{ st2kv.system.x }}`, `{{ config_context.url }}`) are
    /// rendered here; the datastore and pack-config secrets the parameters took join the
    /// execution's secret set, and so do all of the pack's config secrets for a python
    /// action (it reads the whole config).
    pub fn plan(
        &self,
        action_ref: &str,
        provided: &Map<String, Value>,
        casting: Casting,
        templates: &Templates,
        user: Option<&str>,
    ) -> Result<PlannedExecution, Vec<ParamError>> {
        let Some(entry) = self.actions.get(action_ref) else {
            return Err(vec![ParamError {
                parameter: "action".into(),
                reason: format!("no action named {action_ref:?}"),
            }]);
        };
        if !entry.action.enabled {
            return Err(vec![ParamError {
                parameter: "action".into(),
                reason: format!("action {action_ref:?} is disabled"),
            }]);
        }
        let config = self.pack_config(&entry.action.pack);
        let defaults =
            self.render_template_defaults(action_ref, entry, provided, config, templates, user)?;
        let parameters = entry.params.resolve(provided, casting, &defaults)?;
        let mut secrets = entry.params.secret_values(&parameters);
        let kv = templates.kv();
        let config_secrets = config.map(PackConfig::secrets).unwrap_or_default();
        for value in parameters.values() {
            secrets = secrets
                .union(&kv.secrets_in(value))
                .union(&config_secrets.present_in(value));
        }
        // A python action reads the whole config; a shell command rendered when it
        // runs reads whatever `config_context` it names.
        let traits = entry.runner.traits();
        let command_reads_config = traits.shell_command
            && parameters
                .get("cmd")
                .and_then(Value::as_str)
                .is_some_and(|cmd| cmd.contains("config_context"));
        if traits.reads_pack_config || command_reads_config {
            secrets = secrets.union(&config_secrets);
        }
        Ok(PlannedExecution {
            secrets,
            action: action_ref.to_owned(),
            runner: entry.action.runner_type.clone(),
            parameters,
            // The conductor resumes a workflow from its stored task states, so
            // running it again after a crash never repeats a finished task.
            idempotent: entry.action.idempotent || self.workflows.contains_key(action_ref),
        })
    }

    /// A loaded pack's configuration.
    pub fn pack_config(&self, pack: &str) -> Option<&PackConfig> {
        self.packs
            .iter()
            .find(|p| p.meta.name == pack)
            .map(|p| &p.config)
    }

    /// The templated defaults of parameters not `provided`, rendered as StackStorm
    /// renders them: the other parameters' values, `action_context`, `config_context`
    /// and (when named) `st2kv` are in scope.
    fn render_template_defaults(
        &self,
        action_ref: &str,
        entry: &ActionEntry,
        provided: &Map<String, Value>,
        config: Option<&PackConfig>,
        templates: &Templates,
        user: Option<&str>,
    ) -> Result<Map<String, Value>, Vec<ParamError>> {
        let specs = entry.params.specs();
        // The shell runner renders its own command (quoting every value) when it runs;
        // only a command reading the datastore is rendered here, as before it runs.
        let runner_renders = |name: &str, default: &Value| {
            name == "cmd"
                && entry.runner.traits().shell_command
                && !crate::template::names_st2kv(default)
        };
        let pending: Map<String, Value> = specs
            .iter()
            // Immutable ones even when given: the value given must equal the rendered one.
            .filter(|(name, spec)| spec.immutable || !provided.contains_key(name.as_str()))
            .filter_map(|(name, spec)| spec.default.as_ref().map(|d| (name, d)))
            .filter(|(name, default)| {
                crate::template::contains_template(default) && !runner_renders(name, default)
            })
            .map(|(name, default)| (name.clone(), default.clone()))
            .collect();
        if pending.is_empty() {
            return Ok(pending);
        }
        // Other parameters' plain defaults are values a default may refer to.
        let mut scope: Map<String, Value> = specs
            .iter()
            .filter(|(name, _)| !pending.contains_key(name.as_str()))
            .filter_map(|(name, spec)| spec.default.as_ref().map(|d| (name.clone(), d.clone())))
            .collect();
        scope.extend(provided.iter().map(|(k, v)| (k.clone(), v.clone())));
        scope.insert(
            "action_context".into(),
            crate::execution::action_context(action_ref, user),
        );
        scope.insert(
            "config_context".into(),
            config.map_or_else(|| json!({}), |c| c.values.clone()),
        );
        // The datastore snapshot is copied in once, not once per default.
        if pending.values().any(crate::template::names_st2kv) {
            scope.insert("st2kv".into(), templates.kv().st2kv(user));
        }
        // A default may read another templated default: render those it reads first
        // (StackStorm orders them the same way); a cycle renders in name order.
        let mut rendered = Map::new();
        let mut left: Vec<(String, Value)> = pending.into_iter().collect();
        while !left.is_empty() {
            // Whether `name`'s default names another pending parameter (a whole
            // identifier, not `host` inside `config_context.host`).
            let reads_pending = |name: &str, default: &Value| {
                let text = default.to_string();
                left.iter()
                    .filter(|(other, _)| other != name)
                    .any(|(other, _)| names_identifier(&text, other))
            };
            let next = left
                .iter()
                .position(|(name, d)| !reads_pending(name, d))
                .unwrap_or(0);
            let (name, default) = left.remove(next);
            let one = Map::from_iter([(name.clone(), default)]);
            let ctx = Value::Object(scope.clone());
            let value = self
                .render_input(action_ref, &one, &ctx, templates, user)
                .map_err(|e| {
                    vec![ParamError {
                        parameter: name.clone(),
                        reason: format!("rendering the default: {e}"),
                    }]
                })?
                .remove(&name)
                .unwrap_or(Value::Null);
            if !provided.contains_key(&name) {
                scope.insert(name.clone(), value.clone());
            }
            rendered.insert(name, value);
        }
        Ok(rendered)
    }

    /// Render the parameters a rule or workflow task gives an action. A shell
    /// command (`cmd` of a `local-shell-cmd` action) is rendered with every
    /// `{{ expr }}` quoted as one shell word, so values from a trigger or a
    /// workflow context can never splice shell syntax into it.
    pub fn render_input(
        &self,
        action_ref: &str,
        input: &Map<String, Value>,
        ctx: &Value,
        templates: &Templates,
        user: Option<&str>,
    ) -> Result<Map<String, Value>, crate::template::TemplateError> {
        // Pack-written templates may read the datastore; the context gets
        // `st2kv` only then (it is a copy of the snapshot).
        let with_kv;
        let ctx = if input.values().any(crate::template::names_st2kv) && ctx.get("st2kv").is_none()
        {
            with_kv = templates.with_st2kv(ctx, user);
            &with_kv
        } else {
            ctx
        };
        let shell = self
            .actions
            .get(action_ref)
            .is_some_and(|a| a.runner.traits().shell_command);
        // Everything but the shell command renders in one pass (one copy of
        // the context), the command on its own with quoting.
        let cmd = input.get("cmd").and_then(Value::as_str).filter(|_| shell);
        let rest: Map<String, Value> = input
            .iter()
            .filter(|(k, _)| cmd.is_none() || k.as_str() != "cmd")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = match templates.render_json(&Value::Object(rest), ctx)? {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        if let Some(cmd) = cmd {
            out.insert(
                "cmd".into(),
                Value::String(templates.render_shell(cmd, ctx)?),
            );
        }
        Ok(out)
    }

    /// Evaluate the rules for one trigger instance. `url` selects webhook rules.
    /// Backstop rules run only when no standard rule matched.
    pub fn evaluate(
        &self,
        trigger_type: &str,
        url: Option<&str>,
        payload: &Value,
        templates: &Templates,
    ) -> Vec<RuleDecision> {
        let candidates = match url {
            Some(url) if trigger_type == triggers::WEBHOOK => self.webhook_rules.get(url),
            _ => self.rules_by_trigger.get(trigger_type),
        };
        let Some(candidates) = candidates else {
            return Vec::new();
        };
        let ctx = json!({ "trigger": payload });
        let mut decisions = Vec::new();
        let mut standard_matched = false;
        // A timer fires for one rule: its own schedule.
        let only = url.filter(|_| crate::timers::schedule::is_timer(trigger_type));
        for compiled in candidates {
            if only.is_some_and(|rule| compiled.rule.reference() != rule) {
                continue;
            }
            if compiled.rule.kind == RuleKind::Backstop && standard_matched {
                break;
            }
            if !compiled.criteria.matches(&ctx, templates) {
                continue;
            }
            if compiled.rule.kind == RuleKind::Standard {
                standard_matched = true;
            }
            decisions.push(RuleDecision {
                rule: compiled.rule.reference(),
                outcome: self.plan_for_rule(&compiled.rule, &ctx, templates),
            });
        }
        decisions
    }

    fn plan_for_rule(
        &self,
        rule: &Rule,
        ctx: &Value,
        templates: &Templates,
    ) -> Result<PlannedExecution, String> {
        let provided = self
            .render_input(
                &rule.action_ref,
                &rule.action_parameters,
                ctx,
                templates,
                None,
            )
            .map_err(|e| format!("rendering action parameters: {e}"))?;
        self.plan(
            &rule.action_ref,
            &provided,
            Casting::FromText,
            templates,
            None,
        )
        .map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Parameters with secrets masked, for anything a person or log can see.
    pub fn mask_parameters(&self, action_ref: &str, params: &Value) -> Value {
        match self.actions.get(action_ref) {
            Some(entry) => entry.params.mask(params),
            None => params.clone(),
        }
    }
}

/// Compile every enabled alias; the parameter types come from its action so
/// chat text is cast the way the action expects.
fn build_alias_index(
    packs: &[Pack],
    actions: &HashMap<String, ActionEntry>,
    errors: &mut Vec<PackError>,
) -> (AliasIndex, HashMap<String, Alias>) {
    let mut defs = Vec::new();
    let mut by_id = HashMap::new();
    let mut files = HashMap::new();
    for alias in packs.iter().flat_map(|p| &p.aliases).filter(|a| a.enabled) {
        let Some(entry) = actions.get(&alias.action_ref) else {
            // The loader already reported the missing action.
            continue;
        };
        let param_types = entry
            .params
            .specs()
            .iter()
            .map(|(name, spec)| {
                let ty = spec
                    .schema
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                (name.clone(), ParamType::from_schema_type(ty))
            })
            .collect();
        defs.push(AliasDef {
            id: alias.reference(),
            description: alias.description.clone(),
            formats: alias
                .formats
                .iter()
                .map(|f| FormatDef {
                    display: f.display.clone(),
                    representations: f.representation.clone(),
                })
                .collect(),
            immutable_parameters: alias.immutable_parameters.clone(),
            match_multiple: alias.match_multiple,
            param_types,
        });
        files.insert(alias.reference(), alias.file.clone());
        by_id.insert(alias.reference(), alias.clone());
    }
    let (index, alias_errors) = AliasIndex::build_lenient(defs);
    for err in alias_errors {
        let text = err.to_string();
        let file = match &err {
            squall_aliases::AliasError::InvalidFormat {
                alias_id: Some(id), ..
            }
            | squall_aliases::AliasError::DuplicateAlias { alias_id: id } => files.get(id).cloned(),
            _ => None,
        }
        .unwrap_or_default();
        errors.push(PackError {
            file,
            field: "formats".into(),
            reason: text,
            line: None,
        });
    }
    (index, by_id)
}

/// The current catalog, swappable on reload without stopping readers.
#[derive(Clone)]
pub struct CatalogHandle {
    inner: Arc<std::sync::RwLock<Arc<Catalog>>>,
}

impl CatalogHandle {
    pub fn new(catalog: Catalog) -> Self {
        Self {
            inner: Arc::new(std::sync::RwLock::new(Arc::new(catalog))),
        }
    }

    pub fn current(&self) -> Arc<Catalog> {
        match self.inner.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, catalog: Catalog) {
        let mut guard = match self.inner.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(catalog);
    }
}

/// Whether `name` occurs in `text` as a whole identifier that is not an attribute
/// (`{{ host }}` names `host`; `{{ config_context.host }}` and `{{ hostname }}` do not).
fn names_identifier(text: &str, name: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(|c| is_ident(c) || c == '.') && !after.is_some_and(is_ident)
    })
}
