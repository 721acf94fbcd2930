//! Templates for rule parameters, action defaults, shell commands and chat messages.
//!
//! This module owns squall's template engine: how template text is compiled (and cached),
//! which helpers exist, how values turn into text, how values are quoted for `sh`, and how
//! StackStorm's "a lone expression keeps its JSON type" rule (`to_complex`) is honoured.
//!
//! Two languages share every entry point. squall's own templates are handlebars
//! (`{{ trigger.body.x }}`, `{{#if ok}}...{{/if}}`, `{{default x 5}}`). Packs ported from
//! StackStorm use Jinja, which [`jinja`] renders as StackStorm does. A template is Jinja
//! when it uses something only Jinja has: a `{% %}` statement or `{# #}` comment, a filter
//! (`{{ x | upper }}`), a call (`{{ d.get('k') }}`), a subscript (`{{ x['k'] }}`, `x[0]`),
//! or an expression handlebars cannot parse (`{{ a if b else c }}`, `{{ a ~ b }}`).
//! Everything else is handlebars; a plain `{{ a.b }}` means the same in both.
//!
//! Every handlebars output expression is rewritten at compile time into a call of an
//! internal render helper. That single choke point is what makes objects render as compact
//! JSON (handlebars would print `[object]`) and what quotes shell output, while
//! `{{{ raw }}}` stays raw.

mod jinja;

pub use jinja::NONE_MAGIC_VALUE;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use handlebars::template::{Parameter, Subexpression, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason, Renderable, ScopedJson, StringOutput, Template,
};
use regex::Regex;
use serde_json::Value;

/// Errors from compiling or rendering a template. `template` is the source text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("template syntax error in {template:?}: {reason}")]
    Syntax { template: String, reason: String },
    #[error("template render error in {template:?}: {reason}")]
    Render { template: String, reason: String },
}

/// Past this many distinct templates the cache is dropped wholesale: rule sets are far
/// smaller, so only templates built from user data (which never repeat) can get here.
const CACHE_LIMIT: usize = 10_000;
/// Same bound for the per-helper regex caches.
const REGEX_CACHE_LIMIT: usize = 1_000;
/// Name of the helper every output expression is rewritten into; not a valid Jinja or
/// StackStorm identifier, so it cannot collide with pack helpers.
const RENDER_HELPER: &str = "__squall_render";

/// Helpers that handlebars registers itself; needed to tell `{{len}}`-style helper calls
/// from plain paths, since handlebars keeps that lookup private.
const HANDLEBARS_BUILTINS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

static NULL: Value = Value::Null;

/// A compiled template.
enum Compiled {
    /// The rewritten handlebars AST plus, for a template that is a single expression, the
    /// parameter to evaluate for a typed value.
    Handlebars {
        template: Template,
        single: Option<Parameter>,
    },
    /// Compiled and kept by [`jinja::Jinja`]; for a lone `{{ expr }}`, the expression.
    Jinja { single: Option<String> },
}

/// The template engine: two handlebars registries sharing one compiled-template cache.
///
/// `text` renders without escaping; `shell` quotes every expression for POSIX `sh`. Both
/// carry the same helpers, so a template compiles to the same AST for either.
pub struct Templates {
    text: Handlebars<'static>,
    shell: Handlebars<'static>,
    helper_names: HashSet<String>,
    cache: RwLock<HashMap<String, Arc<Compiled>>>,
    /// The datastore snapshot action parameters read as `st2kv`.
    kv: crate::datastore::KvHandle,
    jinja: jinja::Jinja,
}

impl Templates {
    pub fn new() -> Self {
        let mut text = Handlebars::new();
        text.set_strict_mode(false);
        text.register_escape_fn(handlebars::no_escape);
        let mut shell = Handlebars::new();
        shell.set_strict_mode(false);
        // Every expression reaches output through the render helper, which quotes by
        // itself; this escape fn only guards against an output path that bypasses it.
        shell.register_escape_fn(|s| {
            shlex::try_quote(&s.replace('\0', "")).map_or_else(|_| "''".to_owned(), Cow::into_owned)
        });
        text.register_helper(RENDER_HELPER, Box::new(RenderHelper { shell: false }));
        shell.register_helper(RENDER_HELPER, Box::new(RenderHelper { shell: true }));

        let mut templates = Templates {
            text,
            shell,
            helper_names: HANDLEBARS_BUILTINS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            cache: RwLock::new(HashMap::new()),
            kv: crate::datastore::KvHandle::default(),
            jinja: jinja::Jinja::new(),
        };
        for (name, f) in VALUE_HELPERS {
            templates.register_helper(name, Box::new(ValueHelper { name, f: *f }));
        }
        templates.register_helper("regex_match", Box::new(RegexHelper::new(true)));
        templates.register_helper("regex_search", Box::new(RegexHelper::new(false)));
        for name in ["succeeded", "failed", "completed", "task_status"] {
            templates.register_helper(name, Box::new(WorkflowHelper { name }));
        }
        templates
    }

    /// The datastore snapshot shared with this template engine.
    pub fn kv_handle(&self) -> crate::datastore::KvHandle {
        Arc::clone(&self.kv)
    }

    /// The current datastore snapshot.
    pub fn kv(&self) -> Arc<crate::datastore::KvSnapshot> {
        self.kv
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `ctx` with `st2kv` (the datastore as `user` sees it) added. Callers
    /// add it only where [`names_st2kv`] finds a reference.
    pub fn with_st2kv(&self, ctx: &Value, user: Option<&str>) -> Value {
        let mut ctx = match ctx {
            Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        ctx.insert("st2kv".into(), self.kv().st2kv(user));
        Value::Object(ctx)
    }

    /// Compile only (load-time validation of packs): syntax errors, unknown handlebars
    /// helpers and unknown Jinja filters are reported here rather than at the first render.
    pub fn check(&self, template: &str) -> Result<(), TemplateError> {
        if !is_template(template) {
            return Ok(());
        }
        self.compiled(template).map(|_| ())
    }

    /// Render to a JSON value, StackStorm `to_complex` style: a template that is exactly one
    /// `{{ expr }}` (surrounding whitespace allowed) yields the typed value of the expression
    /// (missing paths yield `Null`); anything else renders to a `Value::String`. Text without
    /// `{{` is returned as-is.
    pub fn render_value(&self, template: &str, ctx: &Value) -> Result<Value, TemplateError> {
        if !is_template(template) {
            return Ok(Value::String(template.to_owned()));
        }
        self.render_value_in(template, &Context::from(ctx.clone()))
    }

    /// [`Templates::render_value`] against an already built handlebars context, so callers
    /// rendering many templates against one payload pay for the context copy once.
    pub fn render_value_in(&self, template: &str, ctx: &Context) -> Result<Value, TemplateError> {
        if !is_template(template) {
            return Ok(Value::String(template.to_owned()));
        }
        let compiled = self.compiled(template)?;
        match &*compiled {
            Compiled::Handlebars {
                single: Some(param),
                ..
            } => {
                let mut rc = RenderContext::new(None);
                let value = param
                    .expand(&self.text, ctx, &mut rc)
                    .map_err(|e| render_error(template, &e))?;
                Ok(value.value().clone())
            }
            Compiled::Jinja { single: Some(expr) } => self.jinja.eval(template, expr, ctx.data()),
            Compiled::Jinja { single: None } => {
                let text = self.jinja.render(template, ctx.data(), false)?;
                Ok(if text == NONE_MAGIC_VALUE {
                    Value::Null
                } else {
                    Value::String(text)
                })
            }
            Compiled::Handlebars {
                template: compiled, ..
            } => self
                .render_compiled(&self.text, compiled, template, ctx)
                .map(Value::String),
        }
    }

    /// Render to text. No HTML escaping; objects and arrays render as compact JSON.
    pub fn render_str(&self, template: &str, ctx: &Value) -> Result<String, TemplateError> {
        if !is_template(template) {
            return Ok(template.to_owned());
        }
        match &*self.compiled(template)? {
            Compiled::Jinja { .. } => self.jinja.render(template, ctx, false),
            Compiled::Handlebars { template: hbs, .. } => {
                self.render_compiled(&self.text, hbs, template, &Context::from(ctx.clone()))
            }
        }
    }

    /// Render a shell command: every `{{ expr }}` output is quoted as one POSIX `sh` word
    /// ([`shell_word`]; a value containing a NUL byte is an error, `sh` cannot carry it).
    /// Only a handlebars triple-stash `{{{ expr }}}` is inserted raw, for the rare
    /// trusted fragment; in Jinja every value is quoted, `| safe` or not.
    pub fn render_shell(&self, template: &str, ctx: &Value) -> Result<String, TemplateError> {
        if !is_template(template) {
            return Ok(template.to_owned());
        }
        match &*self.compiled(template)? {
            Compiled::Jinja { .. } => self.jinja.render(template, ctx, true),
            Compiled::Handlebars { template: hbs, .. } => {
                self.render_compiled(&self.shell, hbs, template, &Context::from(ctx.clone()))
            }
        }
    }

    /// Render every template string inside `value` with [`Templates::render_value`];
    /// object keys and all other values are kept.
    pub fn render_json(&self, value: &Value, ctx: &Value) -> Result<Value, TemplateError> {
        if !contains_template(value) {
            return Ok(value.clone());
        }
        let ctx = Context::from(ctx.clone());
        self.render_json_in(value, &ctx)
    }

    /// Register a helper on both registries (workflow engine and later modules).
    /// Cached templates are dropped because a name may change from path to helper call.
    pub fn register_helper(
        &mut self,
        name: &str,
        helper: Box<dyn HelperDef + Send + Sync + 'static>,
    ) {
        let shared: Arc<dyn HelperDef + Send + Sync> = Arc::from(helper);
        self.text
            .register_helper(name, Box::new(SharedHelper(Arc::clone(&shared))));
        self.shell
            .register_helper(name, Box::new(SharedHelper(shared)));
        self.helper_names.insert(name.to_owned());
        self.cache
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Number of compiled templates currently cached.
    pub fn cached_templates(&self) -> usize {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn render_json_in(&self, value: &Value, ctx: &Context) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::String(s) if is_template(s) => self.render_value_in(s, ctx)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render_json_in(v, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_json_in(v, ctx)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }

    fn render_compiled(
        &self,
        registry: &Handlebars<'static>,
        template: &Template,
        source: &str,
        ctx: &Context,
    ) -> Result<String, TemplateError> {
        let mut rc = RenderContext::new(None);
        let mut out = StringOutput::new();
        template
            .render(registry, ctx, &mut rc, &mut out)
            .map_err(|e| render_error(source, &e))?;
        out.into_string().map_err(|e| TemplateError::Render {
            template: source.to_owned(),
            reason: e.to_string(),
        })
    }

    fn compiled(&self, template: &str) -> Result<Arc<Compiled>, TemplateError> {
        if let Some(hit) = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(template)
        {
            return Ok(Arc::clone(hit));
        }
        let compiled = Arc::new(self.compile(template)?);
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(template.to_owned(), Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Jinja when the text uses Jinja-only syntax, or when handlebars cannot compile it but
    /// Jinja can; handlebars otherwise.
    fn compile(&self, source: &str) -> Result<Compiled, TemplateError> {
        if is_jinja(source) {
            // Text that only looks like Jinja (`printf '{%s}'`, a `{#` in a shell
            // command) stays what it was when handlebars reads it fine.
            return self.compile_jinja(source).or_else(|error| {
                if has_jinja_tag(source) {
                    return Err(error);
                }
                self.compile_handlebars(source).map_err(|_| error)
            });
        }
        self.compile_handlebars(source)
            .or_else(|error| self.compile_jinja(source).map_err(|_| error))
    }

    fn compile_jinja(&self, source: &str) -> Result<Compiled, TemplateError> {
        self.jinja.check(source)?;
        let single = jinja::single_expression(source).map(str::to_owned);
        if let Some(expr) = &single {
            // `{{ a }} {{ b }}`-like text that slipped through single_expression fails
            // here rather than at the first render.
            self.jinja.check_expression(source, expr)?;
        }
        Ok(Compiled::Jinja { single })
    }

    fn compile_handlebars(&self, source: &str) -> Result<Compiled, TemplateError> {
        let syntax = |reason: String| TemplateError::Syntax {
            template: source.to_owned(),
            reason,
        };
        let mut template = Template::compile(source).map_err(|e| {
            // handlebars' Display draws a multi-line source excerpt; keep one line.
            let mut reason = e.reason().to_string();
            if let Some((line, column)) = e.pos() {
                reason.push_str(&format!(" (line {line}, column {column})"));
            }
            syntax(reason)
        })?;
        if let Some(name) = unknown_helper(&template.elements, &self.helper_names) {
            return Err(syntax(format!("unknown helper `{name}`")));
        }
        let single =
            single_expression(&template).map(|ht| output_parameter(ht, &self.helper_names));
        rewrite_outputs(&mut template.elements, &self.helper_names);
        Ok(Compiled::Handlebars { template, single })
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// `text` as one POSIX `sh` word. A value that holds template syntax (`{{`, `{%`, `{#`)
/// keeps it only in a form no template engine reads (`'{''{'`: the shell joins the
/// quoted pieces back), so a command rendered once can never be rendered again into
/// something else by a value that came from a trigger.
pub fn shell_word(text: &str) -> Result<String, String> {
    if !text.contains("{{") && !text.contains("{%") && !text.contains("{#") {
        return shlex::try_quote(text)
            .map(Cow::into_owned)
            .map_err(|e| format!("{e}: value cannot be passed to sh"));
    }
    if text.contains('\0') {
        return Err("the value holds a NUL byte: value cannot be passed to sh".into());
    }
    // One single-quoted word (a `'` inside becomes `'\''`), so every `{` sits inside
    // single quotes, where `''` closes and reopens them without changing the word.
    let quoted = format!("'{}'", text.replace('\'', "'\\''"));
    Ok(quoted
        .replace("{{", "{''{")
        .replace("{%", "{''%")
        .replace("{#", "{''#"))
}

/// Whether `text` is a template at all (StackStorm's test: it contains `{{` or `{%`).
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// Whether a template in `value` reads the datastore (`st2kv`).
pub fn names_st2kv(value: &Value) -> bool {
    match value {
        Value::String(s) => is_template(s) && s.contains("st2kv"),
        Value::Array(items) => items.iter().any(names_st2kv),
        Value::Object(map) => map.values().any(names_st2kv),
        _ => false,
    }
}

/// Whether any string inside `value` is a template.
pub fn contains_template(value: &Value) -> bool {
    match value {
        Value::String(s) => is_template(s),
        Value::Array(items) => items.iter().any(contains_template),
        Value::Object(map) => map.values().any(contains_template),
        _ => false,
    }
}

fn render_error(template: &str, e: &RenderError) -> TemplateError {
    let reason = match e.reason() {
        // Our helpers report through NestedError; its "Nested error:" prefix is noise.
        RenderErrorReason::NestedError(inner) => inner.to_string(),
        other => other.to_string(),
    };
    TemplateError::Render {
        template: template.to_owned(),
        reason,
    }
}

/// Text form of a value as squall prints it: strings raw, null empty, the rest as JSON.
pub fn value_to_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::Number(n) => Cow::Owned(n.to_string()),
        other => Cow::Owned(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// AST inspection and rewriting

fn is_name_only(ht: &handlebars::template::HelperTemplate) -> bool {
    !ht.block && ht.params.is_empty() && ht.hash.is_empty()
}

fn is_helper_name(param: &Parameter, helpers: &HashSet<String>) -> bool {
    param.as_name().is_some_and(|n| helpers.contains(n))
}

/// The one output expression of a template that is nothing else but whitespace.
fn single_expression(template: &Template) -> Option<&handlebars::template::HelperTemplate> {
    let mut found = None;
    for element in &template.elements {
        match element {
            TemplateElement::RawString(s) if s.trim().is_empty() => {}
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht)
                if found.is_none() =>
            {
                found = Some(ht.as_ref());
            }
            _ => return None,
        }
    }
    found
}

/// What an output expression evaluates to, as a parameter: the path itself for `{{ a.b }}`,
/// a subexpression for helper calls such as `{{ default a 5 }}` or `{{ now }}`.
fn output_parameter(
    ht: &handlebars::template::HelperTemplate,
    helpers: &HashSet<String>,
) -> Parameter {
    if is_name_only(ht) && !is_helper_name(&ht.name, helpers) {
        ht.name.clone()
    } else {
        Parameter::Subexpression(Subexpression::new(
            ht.name.clone(),
            ht.params.clone(),
            ht.hash.clone(),
        ))
    }
}

/// Turn every `{{ expr }}` / `{{{ expr }}}` into `{{__squall_render (expr)}}`, recursing
/// into block bodies, so all output goes through [`RenderHelper`].
fn rewrite_outputs(elements: &mut [TemplateElement], helpers: &HashSet<String>) {
    for element in elements {
        match element {
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                let param = output_parameter(ht, helpers);
                ht.name = Parameter::Name(RENDER_HELPER.to_owned());
                ht.params = vec![param];
                ht.hash = HashMap::new();
            }
            TemplateElement::HelperBlock(ht) => {
                for body in [ht.template.as_mut(), ht.inverse.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    rewrite_outputs(&mut body.elements, helpers);
                }
            }
            TemplateElement::DecoratorBlock(dt) | TemplateElement::PartialBlock(dt) => {
                if let Some(body) = dt.template.as_mut() {
                    rewrite_outputs(&mut body.elements, helpers);
                }
            }
            _ => {}
        }
    }
}

/// First helper called (`{{foo x}}`, `{{#foo}}`, `(foo x)`) that is not registered, so packs
/// fail at load time rather than at the first trigger.
fn unknown_helper(elements: &[TemplateElement], helpers: &HashSet<String>) -> Option<String> {
    fn in_params<'a>(
        params: impl IntoIterator<Item = &'a Parameter>,
        helpers: &HashSet<String>,
    ) -> Option<String> {
        params.into_iter().find_map(|param| match param {
            Parameter::Subexpression(sub) => match sub.as_element() {
                TemplateElement::Expression(ht) => in_call(ht, helpers),
                _ => None,
            },
            _ => None,
        })
    }
    fn in_call(
        ht: &handlebars::template::HelperTemplate,
        helpers: &HashSet<String>,
    ) -> Option<String> {
        match ht.name.as_name() {
            Some(name) if !helpers.contains(name) => return Some(name.to_owned()),
            _ => {}
        }
        in_params(ht.params.iter().chain(ht.hash.values()), helpers)
    }
    for element in elements {
        let found = match element {
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                if is_name_only(ht) {
                    None
                } else {
                    in_call(ht, helpers)
                }
            }
            TemplateElement::HelperBlock(ht) => in_call(ht, helpers).or_else(|| {
                [ht.template.as_ref(), ht.inverse.as_ref()]
                    .into_iter()
                    .flatten()
                    .find_map(|body| unknown_helper(&body.elements, helpers))
            }),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Jinja detection

/// Whether `template` uses syntax only Jinja has: `{% %}`/`{# #}` tags, filters, calls
/// or subscripts inside `{{ }}`.
pub(crate) fn is_jinja(template: &str) -> bool {
    let comment = template
        .match_indices("{#")
        .any(|(at, _)| !template[..at].ends_with('{') && template[at..].contains("#}"));
    if template.contains("{%") || comment {
        return true;
    }
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let escaped = rest[..open].ends_with('\\');
        let body = &rest[open + 2..];
        let Some(close) = tag_end(body) else {
            return false;
        };
        if !escaped && jinja_expression(&body[..close]) {
            return true;
        }
        rest = &body[close + 2..];
    }
    false
}

/// Whether `template` holds a well-formed Jinja statement or comment tag
/// (`{% if x %}`, `{#- note #}`): then a Jinja error is the template's error, not a
/// sign that the text was never meant as Jinja (`printf '{%s}'`).
fn has_jinja_tag(template: &str) -> bool {
    static TAG: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"\{%[-+]?\s*[A-Za-z_]\w*[^%]*[-+]?%\}|\{#[^#]*#\}").expect("valid")
    });
    TAG.is_match(template)
}

/// Offset of the `}}` closing a tag whose body starts at `body`, skipping quoted strings
/// (a `"}}"` literal must not end the tag) and comments.
fn tag_end(body: &str) -> Option<usize> {
    if let Some(comment) = body.strip_prefix("!--") {
        return comment.find("--}}").map(|i| i + 3 + 2);
    }
    if body.starts_with('!') {
        return body.find("}}");
    }
    let bytes = body.as_bytes();
    let mut quote = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'}' && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

/// Whether `pred` holds for some (previous byte, byte, next byte) outside quoted strings.
fn any_unquoted(s: &str, pred: impl Fn(Option<u8>, u8, Option<u8>) -> bool) -> bool {
    let bytes = s.as_bytes();
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None => {
                let prev = i.checked_sub(1).map(|p| bytes[p]);
                if pred(prev, b, bytes.get(i + 1).copied()) {
                    return true;
                }
            }
        }
    }
    false
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A filter `x | f`, a call `f(x)` or a subscript `x['k']` / `x[0]` in one tag's body.
/// Handlebars' own uses of these bytes are excluded: block params `{{#each xs as |x|}}`,
/// subexpressions `(helper x)` (no name right before the parenthesis) and literal
/// segments `a.[b c]`.
fn jinja_expression(inner: &str) -> bool {
    let expr = inner
        .trim_start_matches(['{', '~'])
        .trim_end_matches(['}', '~'])
        .trim();
    if expr.starts_with('!') {
        return false;
    }
    let is_block =
        expr.starts_with(['#', '^', '/', '>', '*']) || expr == "else" || expr.starts_with("else ");
    let filter = !is_block
        && any_unquoted(expr, |prev, b, next| {
            b == b'|' && next != Some(b'|') && prev != Some(b'|')
        });
    let call = any_unquoted(expr, |prev, b, _| {
        b == b'(' && prev.is_some_and(is_ident_byte)
    });
    let subscript = any_unquoted(expr, |prev, b, _| {
        b == b'[' && prev.is_some_and(|p| is_ident_byte(p) || p == b']' || p == b')')
    });
    filter || call || subscript
}

// ---------------------------------------------------------------------------------------
// Helpers

/// Writes one expression's value: strings raw, null empty, objects/arrays as compact JSON;
/// in shell mode quoted as one `sh` word unless inside a triple-stash.
struct RenderHelper {
    shell: bool,
}

impl HelperDef for RenderHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let text = value_to_text(arg(h, 0));
        if self.shell && !rc.is_disable_escape() {
            let quoted = shell_word(&text).map_err(|e| helper_error("shell quoting", e))?;
            out.write(&quoted)?;
        } else {
            out.write(&text)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{helper}: {reason}")]
struct HelperFailure {
    helper: &'static str,
    reason: String,
}

fn helper_error(helper: &'static str, reason: String) -> RenderError {
    RenderErrorReason::NestedError(Box::new(HelperFailure { helper, reason })).into()
}

fn arg<'a>(h: &'a Helper<'_>, index: usize) -> &'a Value {
    h.param(index).map_or(&NULL, |p| p.value())
}

type ValueFn = fn(&Helper<'_>) -> Result<Value, String>;

/// A helper computing a JSON value, so it composes in subexpressions:
/// `{{#if (contains trigger.body.tags "prod")}}`.
/// `add a b`, `sub a b`: integers stay integers; numeric strings count.
fn arithmetic(h: &Helper<'_>, op: fn(f64, f64) -> f64) -> Result<Value, String> {
    let num = |v: &Value| -> Result<f64, String> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a number")),
            Value::Null => Ok(0.0),
            other => Err(format!("{other} is not a number")),
        }
    };
    let (a, b) = (num(arg(h, 0))?, num(arg(h, 1))?);
    let out = op(a, b);
    if out.fract() == 0.0 && out.abs() < 9e15 {
        Ok(Value::from(out as i64))
    } else {
        Ok(serde_json::Number::from_f64(out).map_or(Value::Null, Value::Number))
    }
}

struct ValueHelper {
    name: &'static str,
    f: ValueFn,
}

impl HelperDef for ValueHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        (self.f)(h)
            .map(ScopedJson::Derived)
            .map_err(|reason| helper_error(self.name, reason))
    }
}

/// Workflow status helpers. They read what the workflow conductor puts in the
/// render data: `__status` (the status of the task being evaluated) and
/// `__tasks` (the latest status of every task by name).
struct WorkflowHelper {
    name: &'static str,
}

/// Data key with the status of the task a transition is evaluated for.
pub const TASK_STATUS_KEY: &str = "__status";
/// Data key with the latest status of every task of the workflow.
pub const TASK_STATUSES_KEY: &str = "__tasks";

impl HelperDef for WorkflowHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let data = ctx.data();
        let status = data.get(TASK_STATUS_KEY).and_then(Value::as_str);
        let value = match self.name {
            "succeeded" => Value::Bool(status == Some("succeeded")),
            "failed" => Value::Bool(matches!(
                status,
                Some("failed" | "timeout" | "abandoned" | "canceled")
            )),
            "completed" => Value::Bool(status.is_some()),
            _ => {
                let name = value_to_text(arg(h, 0));
                data.get(TASK_STATUSES_KEY)
                    .and_then(|t| t.get(name.as_ref()))
                    .cloned()
                    .unwrap_or(Value::Null)
            }
        };
        Ok(ScopedJson::Derived(value))
    }
}

/// Forwards to a helper shared by both registries (a boxed helper cannot be cloned).
struct SharedHelper(Arc<dyn HelperDef + Send + Sync>);

impl HelperDef for SharedHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        self.0.call_inner(h, r, ctx, rc)
    }

    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        self.0.call(h, r, ctx, rc, out)
    }
}

/// `regex_match value pattern` (anchored at the start, like st2's Jinja `regex_match`, i.e.
/// Python `re.match`) and `regex_search value pattern` (anywhere, `re.search`).
struct RegexHelper {
    anchored: bool,
    cache: RwLock<HashMap<String, Regex>>,
}

impl RegexHelper {
    fn new(anchored: bool) -> Self {
        RegexHelper {
            anchored,
            cache: RwLock::new(HashMap::new()),
        }
    }

    fn regex(&self, pattern: &str) -> Result<Regex, String> {
        if let Some(re) = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pattern)
        {
            return Ok(re.clone());
        }
        let source = if self.anchored {
            Cow::Owned(format!(r"\A(?:{pattern})"))
        } else {
            Cow::Borrowed(pattern)
        };
        let re = Regex::new(&source).map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= REGEX_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), re.clone());
        Ok(re)
    }
}

impl HelperDef for RegexHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let name = if self.anchored {
            "regex_match"
        } else {
            "regex_search"
        };
        let Value::String(pattern) = arg(h, 1) else {
            return Err(helper_error(name, "pattern must be a string".to_owned()));
        };
        let re = self.regex(pattern).map_err(|e| helper_error(name, e))?;
        let matched = re.is_match(&value_to_text(arg(h, 0)));
        Ok(ScopedJson::Derived(Value::Bool(matched)))
    }
}

const VALUE_HELPERS: &[(&str, ValueFn)] = &[
    ("add", |h| arithmetic(h, |a, b| a + b)),
    ("sub", |h| arithmetic(h, |a, b| a - b)),
    ("contains", helper_contains),
    ("default", helper_default),
    ("json", helper_json),
    ("join", helper_join),
    ("upper", |h| {
        Ok(Value::String(value_to_text(arg(h, 0)).to_uppercase()))
    }),
    ("lower", |h| {
        Ok(Value::String(value_to_text(arg(h, 0)).to_lowercase()))
    }),
    ("trim", |h| {
        Ok(Value::String(value_to_text(arg(h, 0)).trim().to_owned()))
    }),
    ("split", helper_split),
    ("startswith", |h| {
        let (s, p) = (value_to_text(arg(h, 0)), value_to_text(arg(h, 1)));
        Ok(Value::Bool(s.starts_with(p.as_ref())))
    }),
    ("endswith", |h| {
        let (s, p) = (value_to_text(arg(h, 0)), value_to_text(arg(h, 1)));
        Ok(Value::Bool(s.ends_with(p.as_ref())))
    }),
    ("concat", |h| {
        Ok(Value::String(
            h.params()
                .iter()
                .map(|p| value_to_text(p.value()))
                .collect(),
        ))
    }),
    ("to_int", helper_to_int),
    ("to_string", |h| {
        Ok(Value::String(value_to_text(arg(h, 0)).into_owned()))
    }),
];

/// String contains substring, array contains element, object has key.
fn helper_contains(h: &Helper<'_>) -> Result<Value, String> {
    let needle = arg(h, 1);
    let found = match arg(h, 0) {
        Value::String(s) => s.contains(value_to_text(needle).as_ref()),
        Value::Array(items) => items.contains(needle),
        Value::Object(map) => map.contains_key(value_to_text(needle).as_ref()),
        _ => false,
    };
    Ok(Value::Bool(found))
}

/// Fallback when the value is missing, null or the empty string (not on `0`/`false`, which
/// are real answers in trigger payloads).
fn helper_default(h: &Helper<'_>) -> Result<Value, String> {
    Ok(match arg(h, 0) {
        Value::Null => arg(h, 1).clone(),
        Value::String(s) if s.is_empty() => arg(h, 1).clone(),
        other => other.clone(),
    })
}

fn helper_json(h: &Helper<'_>) -> Result<Value, String> {
    serde_json::to_string(arg(h, 0))
        .map(Value::String)
        .map_err(|e| e.to_string())
}

fn helper_join(h: &Helper<'_>) -> Result<Value, String> {
    let sep = value_to_text(arg(h, 1));
    Ok(Value::String(match arg(h, 0) {
        Value::Array(items) => items
            .iter()
            .map(value_to_text)
            .collect::<Vec<_>>()
            .join(&sep),
        other => value_to_text(other).into_owned(),
    }))
}

/// Like Python `str.split`: without a separator, split on runs of whitespace.
fn helper_split(h: &Helper<'_>) -> Result<Value, String> {
    let text = value_to_text(arg(h, 0));
    let parts: Vec<Value> = match arg(h, 1) {
        Value::Null => text
            .split_whitespace()
            .map(|p| Value::String(p.to_owned()))
            .collect(),
        sep => {
            let sep = value_to_text(sep);
            if sep.is_empty() {
                return Err("empty separator".to_owned());
            }
            text.split(sep.as_ref())
                .map(|p| Value::String(p.to_owned()))
                .collect()
        }
    };
    Ok(Value::Array(parts))
}

/// Integer conversion; a second argument is returned when the value does not convert,
/// otherwise that is an error (a silent 0, as Jinja's `int` does, hides broken payloads).
fn helper_to_int(h: &Helper<'_>) -> Result<Value, String> {
    let value = arg(h, 0);
    let converted = match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.trunc() as i64)
        }),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(|f| f.trunc() as i64)
            })
        }
        _ => None,
    };
    match (converted, h.param(1)) {
        (Some(i), _) => Ok(Value::from(i)),
        (None, Some(fallback)) => Ok(fallback.value().clone()),
        (None, None) => Err(format!("cannot convert {value} to an integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "trigger": {
                "body": {
                    "count": 7,
                    "ratio": 0.5,
                    "ok": true,
                    "app": "web",
                    "empty": "",
                    "nothing": null,
                    "items": ["a", "b", "c"],
                    "obj": {"k": "v", "n": 1},
                    "tags": ["prod", "eu"],
                    "msg": "x; touch /tmp/f",
                    "text": "  Hello World  ",
                    "csv": "a,b,,c",
                }
            }
        })
    }

    fn t() -> Templates {
        Templates::new()
    }

    fn value(template: &str) -> Value {
        t().render_value(template, &ctx()).expect(template)
    }

    fn text(template: &str) -> String {
        t().render_str(template, &ctx()).expect(template)
    }

    #[test]
    fn templates_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Templates>();
    }

    #[test]
    fn single_expression_yields_typed_number() {
        assert_eq!(value("{{ trigger.body.count }}"), json!(7));
        assert_eq!(value("  {{trigger.body.ratio}}\n"), json!(0.5));
    }

    #[test]
    fn single_expression_yields_typed_object_array_and_bool() {
        assert_eq!(value("{{ trigger.body.obj }}"), json!({"k": "v", "n": 1}));
        assert_eq!(value("{{ trigger.body.items }}"), json!(["a", "b", "c"]));
        assert_eq!(value("{{ trigger.body.ok }}"), json!(true));
    }

    #[test]
    fn triple_stash_single_expression_is_typed_too() {
        assert_eq!(value("{{{ trigger.body.count }}}"), json!(7));
    }

    #[test]
    fn missing_path_yields_null() {
        assert_eq!(value("{{ trigger.body.nope.deeper }}"), Value::Null);
        assert_eq!(value("{{ trigger.body.nothing }}"), Value::Null);
    }

    #[test]
    fn array_index_works_with_dot_number_and_brackets() {
        assert_eq!(value("{{ trigger.body.items.0 }}"), json!("a"));
        assert_eq!(value("{{ trigger.body.items.[1] }}"), json!("b"));
        assert_eq!(text("{{trigger.body.items.[2]}}!"), "c!");
    }

    #[test]
    fn helper_expression_yields_helper_json_result() {
        assert_eq!(value("{{ default trigger.body.x 5 }}"), json!(5));
        assert_eq!(value("{{ len trigger.body.items }}"), json!(3));
        assert_eq!(
            value("{{ split trigger.body.csv \",\" }}"),
            json!(["a", "b", "", "c"])
        );
        assert_eq!(
            value("{{ contains trigger.body.tags \"prod\" }}"),
            json!(true)
        );
    }

    #[test]
    fn text_without_braces_is_returned_as_is() {
        let t = t();
        assert_eq!(t.render_value("plain {x}", &ctx()), Ok(json!("plain {x}")));
        assert_eq!(t.render_str("plain", &ctx()), Ok("plain".to_owned()));
        assert_eq!(t.cached_templates(), 0);
    }

    #[test]
    fn mixed_text_renders_to_string() {
        assert_eq!(
            value("app={{ trigger.body.app }} n={{trigger.body.count}}"),
            json!("app=web n=7")
        );
    }

    #[test]
    fn no_html_escaping() {
        let ctx = json!({"s": "<a href=\"x\">&'</a>"});
        assert_eq!(
            t().render_str("{{ s }}", &ctx),
            Ok("<a href=\"x\">&'</a>".to_owned())
        );
    }

    #[test]
    fn objects_and_arrays_render_as_compact_json() {
        assert_eq!(text("o={{ trigger.body.obj }}"), r#"o={"k":"v","n":1}"#);
        assert_eq!(text("a={{ trigger.body.items }}"), r#"a=["a","b","c"]"#);
        assert_eq!(text("n=[{{ trigger.body.nothing }}]"), "n=[]");
    }

    #[test]
    fn block_helpers_render_rewritten_bodies() {
        let out = text("{{#each trigger.body.tags}}{{@index}}:{{this}} {{/each}}");
        assert_eq!(out, "0:prod 1:eu ");
        let out = text("{{#if (contains trigger.body.tags \"prod\")}}P{{else}}N{{/if}}");
        assert_eq!(out, "P");
        let out =
            text("{{#if (eq trigger.body.app \"db\")}}db{{else if trigger.body.ok}}ok{{/if}}");
        assert_eq!(out, "ok");
        let out = text("{{#with trigger.body.obj}}{{k}}{{/with}}");
        assert_eq!(out, "v");
        let out = text("{{#each trigger.body.nope}}x{{else}}none{{/each}}");
        assert_eq!(out, "none");
        assert_eq!(text("{{lookup trigger.body.obj \"k\"}}"), "v");
        assert_eq!(text("{{~ trigger.body.app ~}}  !"), "web!");
    }

    #[test]
    fn helper_contains_covers_strings_arrays_and_objects() {
        assert_eq!(value("{{ contains trigger.body.app \"we\" }}"), json!(true));
        assert_eq!(
            value("{{ contains trigger.body.tags \"dev\" }}"),
            json!(false)
        );
        assert_eq!(value("{{ contains trigger.body.obj \"k\" }}"), json!(true));
        assert_eq!(value("{{ contains trigger.body.obj \"z\" }}"), json!(false));
        assert_eq!(
            value("{{ contains trigger.body.nope \"z\" }}"),
            json!(false)
        );
    }

    #[test]
    fn helper_regex_match_is_anchored_and_regex_search_is_not() {
        assert_eq!(
            value("{{ regex_match trigger.body.app \"w.b\" }}"),
            json!(true)
        );
        assert_eq!(
            value("{{ regex_match trigger.body.app \"eb\" }}"),
            json!(false)
        );
        assert_eq!(
            value("{{ regex_search trigger.body.app \"eb\" }}"),
            json!(true)
        );
    }

    #[test]
    fn helper_regex_match_with_invalid_regex_is_render_error() {
        let err = t().render_value("{{ regex_match trigger.body.app \"(\" }}", &ctx());
        assert!(
            matches!(&err, Err(TemplateError::Render { reason, .. }) if reason.contains("invalid regex")),
            "{err:?}"
        );
    }

    #[test]
    fn helper_default_applies_to_null_missing_and_empty_string_only() {
        assert_eq!(
            value("{{ default trigger.body.nothing \"d\" }}"),
            json!("d")
        );
        assert_eq!(value("{{ default trigger.body.empty \"d\" }}"), json!("d"));
        assert_eq!(value("{{ default trigger.body.count \"d\" }}"), json!(7));
        let zero = t().render_value("{{ default z 1 }}", &json!({"z": 0}));
        assert_eq!(zero, Ok(json!(0)));
    }

    #[test]
    fn helper_json_renders_compact_json_string() {
        assert_eq!(
            value("{{ json trigger.body.obj }}"),
            json!(r#"{"k":"v","n":1}"#)
        );
        assert_eq!(text("{{json trigger.body.app}}"), r#""web""#);
    }

    #[test]
    fn helper_join_joins_with_separator() {
        assert_eq!(text("{{ join trigger.body.items \", \" }}"), "a, b, c");
        assert_eq!(text("{{ join trigger.body.app \"-\" }}"), "web");
    }

    #[test]
    fn helper_upper_lower_trim() {
        assert_eq!(text("{{ upper trigger.body.app }}"), "WEB");
        assert_eq!(text("{{ lower (upper trigger.body.app) }}"), "web");
        assert_eq!(text("[{{ trim trigger.body.text }}]"), "[Hello World]");
    }

    #[test]
    fn helper_split_with_and_without_separator() {
        assert_eq!(
            value("{{ split trigger.body.text }}"),
            json!(["Hello", "World"])
        );
        assert_eq!(value("{{ split \"a:b\" \":\" }}"), json!(["a", "b"]));
        assert!(t().render_value("{{ split \"ab\" \"\" }}", &ctx()).is_err());
    }

    #[test]
    fn helper_startswith_endswith() {
        assert_eq!(
            value("{{ startswith trigger.body.app \"we\" }}"),
            json!(true)
        );
        assert_eq!(
            value("{{ startswith trigger.body.app \"eb\" }}"),
            json!(false)
        );
        assert_eq!(value("{{ endswith trigger.body.app \"eb\" }}"), json!(true));
        assert_eq!(
            value("{{ endswith trigger.body.app \"we\" }}"),
            json!(false)
        );
    }

    #[test]
    fn helper_concat_joins_all_params_as_text() {
        assert_eq!(
            value("{{ concat trigger.body.app \"-\" trigger.body.count trigger.body.nothing }}"),
            json!("web-7")
        );
    }

    #[test]
    fn helper_to_int_converts_or_falls_back() {
        let ctx = json!({"s": " 42 ", "f": 3.9, "b": true, "bad": "x"});
        let t = t();
        assert_eq!(t.render_value("{{ to_int s }}", &ctx), Ok(json!(42)));
        assert_eq!(t.render_value("{{ to_int f }}", &ctx), Ok(json!(3)));
        assert_eq!(t.render_value("{{ to_int b }}", &ctx), Ok(json!(1)));
        assert_eq!(t.render_value("{{ to_int bad 0 }}", &ctx), Ok(json!(0)));
        assert!(matches!(
            t.render_value("{{ to_int bad }}", &ctx),
            Err(TemplateError::Render { .. })
        ));
    }

    #[test]
    fn helper_to_string_stringifies() {
        assert_eq!(value("{{ to_string trigger.body.count }}"), json!("7"));
        assert_eq!(
            value("{{ to_string trigger.body.obj }}"),
            json!(r#"{"k":"v","n":1}"#)
        );
    }

    #[test]
    fn builtin_comparison_helpers_are_kept() {
        assert_eq!(value("{{ gt trigger.body.count 3 }}"), json!(true));
        assert_eq!(
            value("{{ and (eq trigger.body.app \"web\") (not false) }}"),
            json!(true)
        );
    }

    #[test]
    fn jinja_filters_statements_calls_and_subscripts_render() {
        let t = t();
        let ctx = json!({"trigger": {"app": "web", "headers": {"X-Id": "7"}, "n": "3",
                                     "items": [1, 2]}});
        let text = |s| t.render_str(s, &ctx).unwrap();
        assert_eq!(text("{{ trigger.app | upper }}"), "WEB");
        assert_eq!(text("{{ trigger.x | default('n/a') | upper }}"), "N/A");
        assert_eq!(text("{% if trigger.app == 'web' %}yes{% endif %}"), "yes");
        assert_eq!(text("{{ trigger.headers['X-Id'] }}"), "7");
        assert_eq!(text("{{ trigger.headers.get('X-Id') }}"), "7");
        assert_eq!(text("{{ trigger.app if trigger.n else 'none' }}"), "web");
        assert_eq!(
            t.render_value("{{ trigger.n | int + 1 }}", &ctx),
            Ok(json!(4))
        );
        assert_eq!(t.render_value("{{ trigger.items[1] }}", &ctx), Ok(json!(2)));
    }

    #[test]
    fn unknown_jinja_filters_are_load_time_errors() {
        let err = t().check("{{ x | frobnicate }}").unwrap_err();
        assert!(
            matches!(&err, TemplateError::Syntax { reason, .. } if reason.contains("frobnicate")),
            "{err}"
        );
    }

    #[test]
    fn check_accepts_handlebars_forms_that_look_like_jinja() {
        let t = t();
        assert_eq!(
            t.check("{{#each items as |item|}}{{item}}{{/each}}"),
            Ok(())
        );
        assert_eq!(t.check("{{ concat \"a|b\" \"(x)\" }}"), Ok(()));
        assert_eq!(t.check("{{!-- a | b --}}x"), Ok(()));
        assert_eq!(t.check(r"\{{ a | b }}"), Ok(()));
        assert_eq!(t.check("echo ${#arr[@]}"), Ok(()));
        assert_eq!(
            t.render_str("printf '{%s}' {{ x }}", &json!({"x": "a"})),
            Ok("printf '{%s}' a".to_owned())
        );
        assert_eq!(t.check("{{#if x}}a #} b{{/if}}"), Ok(()));
    }

    #[test]
    fn check_never_panics_on_odd_input() {
        let t = t();
        for odd in [
            "{{",
            "}}",
            "{{{",
            "{{ é(",
            "{{ a['é",
            "{{ a['é'] }}",
            "{{ x | }}",
            "{{ |",
            "{{!--",
            "{{! x",
            "{%",
            "{{ \"",
            "{{ 'é",
            "\\{{",
            "{{#each x as |é|}}{{/each}}",
            "{{ (",
            "{{ ) }}",
            "{{ a.[ }}",
            "é{{ é }}é",
            "{{ f('é', \"ü\") }}",
        ] {
            let _ = t.check(odd);
            let _ = t.render_value(odd, &ctx());
            let _ = t.render_shell(odd, &ctx());
        }
    }

    #[test]
    fn check_reports_syntax_errors_and_unknown_helpers() {
        let t = t();
        assert!(matches!(
            t.check("{{#if x}}open"),
            Err(TemplateError::Syntax { .. })
        ));
        let err = t.check("{{ frobnicate trigger.x }}").unwrap_err();
        assert!(
            matches!(&err, TemplateError::Syntax { reason, .. } if reason.contains("frobnicate"))
        );
        assert!(t.check("{{#if (nope x)}}y{{/if}}").is_err());
    }

    #[test]
    fn jinja_shell_commands_quote_every_value() {
        let out = t().render_shell("echo {{ trigger.body.msg | lower }}", &ctx());
        assert_eq!(out, Ok("echo 'x; touch /tmp/f'".to_owned()));
        assert_eq!(
            t().render_shell("echo {{ x }} ${#arr[@]}", &json!({"x": "a b"})),
            Ok("echo 'a b' ${#arr[@]}".to_owned())
        );
    }

    #[test]
    fn shell_quotes_command_injection() {
        let out = t().render_shell("echo {{ trigger.body.msg }}", &ctx());
        assert_eq!(out, Ok("echo 'x; touch /tmp/f'".to_owned()));
    }

    #[test]
    fn shell_quotes_command_substitution_backticks_and_quotes() {
        let t = t();
        for hostile in ["$(id)", "`id`", "it's", "a'b\"c", "", "-rf /", "*", "a\nb"] {
            let cmd = t
                .render_shell("printf %s {{ v }}", &json!({ "v": hostile }))
                .expect(hostile);
            let word = cmd.strip_prefix("printf %s ").expect(&cmd);
            assert_eq!(shlex::split(word), Some(vec![hostile.to_owned()]), "{cmd}");
            assert!(!word.contains("$(") || word.starts_with('\''), "{cmd}");
        }
    }

    #[test]
    fn shell_quotes_json_rendered_objects_as_one_word() {
        let out = t()
            .render_shell("cmd {{ trigger.body.obj }}", &ctx())
            .unwrap();
        assert_eq!(
            shlex::split(&out),
            Some(vec!["cmd".into(), r#"{"k":"v","n":1}"#.into()])
        );
    }

    #[test]
    fn shell_rejects_nul_bytes() {
        let err = t().render_shell("echo {{ v }}", &json!({"v": "a\0b"}));
        assert!(matches!(err, Err(TemplateError::Render { .. })), "{err:?}");
    }

    #[test]
    fn shell_triple_stash_is_raw() {
        let out = t().render_shell(
            "ls {{{ flags }}} {{ path }}",
            &json!({"flags": "-l -a", "path": "my dir"}),
        );
        assert_eq!(out, Ok("ls -l -a 'my dir'".to_owned()));
    }

    #[test]
    fn shell_quotes_inside_blocks_and_helper_results() {
        let ctx = json!({"xs": ["a b", "c"]});
        let out = t().render_shell(
            "{{#each xs}}rm {{this}};{{/each}} {{ upper \"x y\" }}",
            &ctx,
        );
        assert_eq!(out, Ok("rm 'a b';rm c; 'X Y'".to_owned()));
    }

    #[test]
    fn compiled_templates_are_cached_and_reused() {
        let t = t();
        let first = t.compiled("{{ trigger.body.app }}").unwrap();
        for _ in 0..3 {
            t.render_str("{{ trigger.body.app }}", &ctx()).unwrap();
            t.render_shell("{{ trigger.body.app }}", &ctx()).unwrap();
        }
        assert_eq!(t.cached_templates(), 1);
        let again = t.compiled("{{ trigger.body.app }}").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn cache_is_bounded() {
        let t = t();
        for i in 0..=CACHE_LIMIT {
            t.check(&format!("{{{{ x }}}}{i}")).unwrap();
        }
        assert!(t.cached_templates() <= CACHE_LIMIT);
    }

    #[test]
    fn render_json_renders_nested_strings_and_keeps_keys() {
        let params = json!({
            "count": "{{ trigger.body.count }}",
            "nested": {"list": ["{{ trigger.body.app }}-x", 3, {"{{ key }}": "{{ trigger.body.tags }}"}]},
            "plain": "no template",
            "flag": false
        });
        let out = t().render_json(&params, &ctx()).unwrap();
        assert_eq!(
            out,
            json!({
                "count": 7,
                "nested": {"list": ["web-x", 3, {"{{ key }}": ["prod", "eu"]}]},
                "plain": "no template",
                "flag": false
            })
        );
    }

    #[test]
    fn registered_helper_is_usable_in_both_modes() {
        let mut t = t();
        t.check("{{ shout x }}").unwrap_err();
        t.register_helper(
            "shout",
            Box::new(ValueHelper {
                name: "shout",
                f: |h| Ok(Value::String(format!("{}!", value_to_text(arg(h, 0))))),
            }),
        );
        let ctx = json!({"x": "hi there"});
        assert_eq!(
            t.render_str("{{ shout x }}", &ctx),
            Ok("hi there!".to_owned())
        );
        assert_eq!(
            t.render_shell("say {{ shout x }}", &ctx),
            Ok("say 'hi there!'".to_owned())
        );
    }

    #[test]
    fn helper_error_surfaces_as_render_error() {
        let err = t().render_str("{{ to_int \"zz\" }}", &json!({}));
        assert!(
            matches!(&err, Err(TemplateError::Render { reason, .. }) if reason.starts_with("to_int:")),
            "{err:?}"
        );
    }
}
