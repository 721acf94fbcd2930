//! Validation of single content files (pack.yaml, actions, rules, aliases) into the
//! model. Cross-file checks (unique names, action references) live in the loader.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use super::doc::{Doc, Keys, Need, type_name, with};
use super::loader::LoadOptions;
use super::model::{Action, Alias, AliasFormat, Notify, NotifySpec, PackMeta, Rule, RuleKind};
use super::params;
use crate::criteria::Criteria;
use crate::template::Templates;

/// What a file inside a pack needs to know about the pack.
pub(crate) struct PackCtx<'a> {
    /// The pack's ref; `None` when pack.yaml is broken (then the `pack` keys of the
    /// content files cannot be compared and are not).
    pub name: Option<&'a str>,
    pub dir: &'a Path,
    pub opts: &'a LoadOptions<'a>,
    pub templates: &'a Templates,
}

/// Runners whose actions are a file next to the metadata; the others (shell command,
/// http, noop) are fully described by their parameters.
const ENTRY_POINT_RUNNERS: &[&str] = &[
    "local-shell-script",
    "python-script",
    "orquesta",
    "workflow",
    "action-chain",
];

const ACTION_KEYS: Keys = Keys {
    accepted: &[
        "description",
        "enabled",
        "entry_point",
        "idempotent",
        "name",
        "notify",
        "pack",
        "parameters",
        "runner_type",
    ],
    // `output_schema` only annotates results; ids/refs are computed by st2 anyway.
    ignored: &["id", "metadata_file", "output_schema", "ref", "tags", "uid"],
    unsupported: &[],
};

const NOTIFY_KEYS: Keys = Keys {
    accepted: &["on-complete", "on-success", "on-failure"],
    ignored: &[],
    unsupported: &[],
};

const NOTIFY_SPEC_KEYS: Keys = Keys {
    accepted: &["message", "data", "routes", "channels"],
    ignored: &[],
    unsupported: &[],
};

/// An action's `notify:` block.
fn notify(doc: &mut Doc, map: &Map<String, Value>, templates: &Templates) -> Notify {
    let Some(block) = doc.object(map, &["notify"], Need::Optional) else {
        return Notify::default();
    };
    doc.check_keys(block, &["notify"], &NOTIFY_KEYS);
    let spec = |doc: &mut Doc, key: &'static str| -> Option<NotifySpec> {
        let m = doc.object(block, &["notify", key], Need::Optional)?;
        doc.check_keys(m, &["notify", key], &NOTIFY_SPEC_KEYS);
        let message = doc
            .string(m, &["notify", key, "message"], Need::Optional)
            .map(str::to_owned);
        if let Some(message) = &message
            && let Err(e) = templates.check(message)
        {
            doc.err(
                &["notify", key, "message"],
                format!("invalid template: {e}"),
            );
        }
        let mut names = |field: &'static str| -> Vec<String> {
            match m.get(field) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                Some(_) => {
                    doc.err(&["notify", key, field], "expected a list of names");
                    Vec::new()
                }
            }
        };
        let routes = names("routes");
        let channels = names("channels");
        let data = m.get("data").cloned().unwrap_or(Value::Null);
        Some(NotifySpec {
            message,
            data,
            routes,
            channels,
        })
    };
    Notify {
        on_complete: spec(doc, "on-complete"),
        on_success: spec(doc, "on-success"),
        on_failure: spec(doc, "on-failure"),
    }
}

const RULE_KEYS: Keys = Keys {
    accepted: &[
        "action",
        "criteria",
        "description",
        "enabled",
        "name",
        "pack",
        "trigger",
        "type",
    ],
    ignored: &["id", "metadata_file", "ref", "tags", "uid"],
    // st2 stores the creating user's context (RBAC) here; squall has no use for it
    // and a pack author setting it expects behaviour squall does not have.
    unsupported: &["context"],
};

const RULE_TRIGGER_KEYS: Keys = Keys {
    accepted: &["parameters", "type"],
    // `ref` is the computed trigger instance and `description` a view-only field.
    ignored: &["description", "ref"],
    unsupported: &[],
};

const RULE_ACTION_KEYS: Keys = Keys {
    accepted: &["parameters", "ref"],
    ignored: &["description"],
    unsupported: &[],
};

const RULE_TYPE_KEYS: Keys = Keys {
    accepted: &["parameters", "ref"],
    ignored: &[],
    unsupported: &[],
};

const ALIAS_KEYS: Keys = Keys {
    accepted: &[
        "ack",
        "action_ref",
        "description",
        "enabled",
        "formats",
        "immutable_parameters",
        "match_multiple",
        "name",
        "pack",
        "result",
    ],
    // `extra` carries chat-adapter-specific decoration (e.g. Slack attachment
    // colours); dropping it changes looks, not behaviour.
    ignored: &["extra", "id", "metadata_file", "ref", "uid"],
    unsupported: &[],
};

/// `ack` and `result` are kept raw for the chat layer; their keys are still checked so
/// a typo (`formt`) is not silently ignored there. `append_url` links the execution.
const ALIAS_ACK_KEYS: Keys = Keys {
    accepted: &["append_url", "enabled", "extra", "format"],
    ignored: &[],
    unsupported: &[],
};

const ALIAS_RESULT_KEYS: Keys = Keys {
    accepted: &["enabled", "extra", "format"],
    ignored: &[],
    unsupported: &[],
};

const ALIAS_FORMAT_KEYS: Keys = Keys {
    accepted: &["display", "representation"],
    ignored: &[],
    unsupported: &[],
};

/// st2's pack ref rule (`PACK_REF_WHITELIST_REGEX`): refs are part of every content
/// reference (`pack.action`), so no dots, dashes or spaces.
fn is_valid_pack_ref(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// st2 requires `MAJOR.MINOR.PATCH` with an optional `-pre` / `+build` suffix.
fn is_semver(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `pack.yaml`. Returns the meta and which key (`ref` or `name`) the name came from.
///
/// Unknown keys are accepted here: st2's pack schema deliberately allows them so that
/// pack.yaml can grow new attributes without breaking older installations.
pub(crate) fn pack_meta(
    doc: &mut Doc,
    map: &Map<String, Value>,
    dir: &Path,
) -> Option<(PackMeta, &'static str)> {
    let name = doc.string(map, &["name"], Need::Required);
    let pack_ref = doc.string(map, &["ref"], Need::Optional);
    // `version: 1.0` parses as a number; st2 casts it to a string before checking.
    let version = match map.get("version") {
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => doc
            .string(map, &["version"], Need::Required)
            .map(str::to_string),
    };
    let description = doc.string(map, &["description"], Need::Required);
    let author = doc.string(map, &["author"], Need::Optional);
    let email = doc.string(map, &["email"], Need::Optional);

    if let Some(v) = &version
        && !is_semver(v)
    {
        doc.err(
            &["version"],
            format!("'{v}' is not a semantic version like 1.0.0"),
        );
    }
    let (pack_name, field) = match (pack_ref, name) {
        (Some(r), _) if is_valid_pack_ref(r) => (r, "ref"),
        (Some(r), _) => {
            doc.err(
                &["ref"],
                format!("'{r}' is not a valid pack ref (only a-z, 0-9 and _)"),
            );
            return None;
        }
        (None, Some(n)) if is_valid_pack_ref(n) => (n, "name"),
        (None, Some(n)) => {
            doc.err(
                &["name"],
                format!("'{n}' is not a valid pack ref (only a-z, 0-9 and _); set `ref` to one"),
            );
            return None;
        }
        (None, None) => return None,
    };
    // A missing description/version is already reported, and any error fails the
    // whole load; the meta is still returned so the pack's ref is known to the
    // tree-wide checks (duplicate packs, action references into this pack).
    let meta = PackMeta {
        name: pack_name.to_string(),
        description: description.unwrap_or_default().to_string(),
        version: version.unwrap_or_default(),
        author: author.map(str::to_string),
        email: email.map(str::to_string),
        path: dir.to_path_buf(),
    };
    Some((meta, field))
}

/// Checks the optional `pack` key of a content file against the pack's ref.
fn check_pack_key(doc: &mut Doc, map: &Map<String, Value>, ctx: &PackCtx) {
    if let (Some(declared), Some(actual)) = (doc.string(map, &["pack"], Need::Optional), ctx.name)
        && declared != actual
    {
        doc.err(
            &["pack"],
            format!("'{declared}' does not match the pack's ref '{actual}'"),
        );
    }
}

/// `actions/<name>.yaml`.
pub(crate) fn action(doc: &mut Doc, map: &Map<String, Value>, ctx: &PackCtx) -> Option<Action> {
    doc.check_keys(map, &[], &ACTION_KEYS);
    check_pack_key(doc, map, ctx);
    let name = doc.string(map, &["name"], Need::Required);
    let description = doc
        .string(map, &["description"], Need::Optional)
        .unwrap_or("");
    let enabled = doc.boolean(map, &["enabled"]).unwrap_or(true);
    let idempotent = doc.boolean(map, &["idempotent"]).unwrap_or(false);

    let runner = doc.string(map, &["runner_type"], Need::Required);
    if let Some(r) = runner
        && !ctx.opts.known_runners.contains(&r)
    {
        let known = ctx.opts.known_runners.join(", ");
        doc.err(
            &["runner_type"],
            format!("unknown runner '{r}' (expected one of {known})"),
        );
    }

    // st2 writes `entry_point: ''` for runners that have none (core.local does).
    let entry = doc
        .string(map, &["entry_point"], Need::Optional)
        .filter(|s| !s.is_empty());
    let needs_entry = runner.is_some_and(|r| ENTRY_POINT_RUNNERS.contains(&r));
    let entry_point = match entry {
        None => {
            if needs_entry {
                let r = runner.unwrap_or_default();
                doc.err(&["entry_point"], format!("is required for runner '{r}'"));
            }
            None
        }
        Some(e) => resolve_entry_point(doc, ctx.dir, e, needs_entry),
    };

    let parameters = params::parameters(doc, map, runner);
    let notify = notify(doc, map, ctx.templates);
    Some(Action {
        pack: ctx.name?.to_string(),
        name: name?.to_string(),
        description: description.to_string(),
        enabled,
        runner_type: runner?.to_string(),
        entry_point,
        parameters,
        idempotent,
        notify,
        file: doc.file.clone(),
    })
}

/// Resolves `entry` against `<pack>/actions/`. It may climb out of `actions/` (shared
/// scripts in `<pack>/lib`) but not out of the pack: a pack must be self-contained.
fn resolve_entry_point(
    doc: &mut Doc,
    pack_dir: &Path,
    entry: &str,
    must_exist: bool,
) -> Option<PathBuf> {
    let rel = Path::new(entry);
    // Depth below the pack dir while walking the path; `actions/` is depth 1.
    let mut depth: i32 = 1;
    let mut inside = true;
    for comp in rel.components() {
        match comp {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => depth -= 1,
            Component::RootDir | Component::Prefix(_) => inside = false,
        }
        inside &= depth >= 0;
    }
    if !inside {
        doc.err(
            &["entry_point"],
            format!("'{entry}' must be a relative path inside the pack"),
        );
        return None;
    }
    let path = pack_dir.join("actions").join(rel);
    if must_exist && !path.is_file() {
        doc.err(
            &["entry_point"],
            format!("file '{}' does not exist", path.display()),
        );
    }
    Some(path)
}

/// `rules/<name>.yaml`.
pub(crate) fn rule(doc: &mut Doc, map: &Map<String, Value>, ctx: &PackCtx) -> Option<Rule> {
    doc.check_keys(map, &[], &RULE_KEYS);
    check_pack_key(doc, map, ctx);
    let name = doc.string(map, &["name"], Need::Required);
    let description = doc
        .string(map, &["description"], Need::Optional)
        .unwrap_or("");
    let enabled = doc.boolean(map, &["enabled"]).unwrap_or(true);

    let kind = match doc.object(map, &["type"], Need::Optional) {
        None => Some(RuleKind::Standard),
        Some(t) => {
            doc.check_keys(t, &["type"], &RULE_TYPE_KEYS);
            doc.object(t, &["type", "parameters"], Need::Optional);
            match doc.string(t, &["type", "ref"], Need::Required) {
                Some("standard") => Some(RuleKind::Standard),
                Some("backstop") => Some(RuleKind::Backstop),
                Some(other) => {
                    doc.err(
                        &["type", "ref"],
                        format!("unknown rule type '{other}' (expected standard or backstop)"),
                    );
                    None
                }
                None => None,
            }
        }
    };

    let (trigger_type, trigger_parameters) = match doc.object(map, &["trigger"], Need::Required) {
        None => (None, Map::new()),
        Some(t) => {
            doc.check_keys(t, &["trigger"], &RULE_TRIGGER_KEYS);
            let ty = doc.string(t, &["trigger", "type"], Need::Required);
            if let Some(ty) = ty {
                check_trigger_type(doc, ty, ctx.opts);
            }
            let params = doc
                .object(t, &["trigger", "parameters"], Need::Optional)
                .cloned();
            (ty, params.unwrap_or_default())
        }
    };

    let criteria = doc
        .object(map, &["criteria"], Need::Optional)
        .cloned()
        .unwrap_or_default();
    if let Err(errors) = Criteria::compile(&criteria) {
        for e in errors {
            // Criteria fields read `criteria."trigger.body.x".type`: the key
            // holds dots, so the line is looked up by the quoted key itself.
            let key = e.field.split('"').nth(1).unwrap_or_default().to_owned();
            let line = doc
                .line_of(&["criteria", &key])
                .or_else(|| doc.line_of(&["criteria"]));
            let field = if e.field.is_empty() {
                "criteria".to_owned()
            } else {
                e.field
            };
            doc.push(field, e.reason, line);
        }
    }

    let (action_ref, action_parameters) = match doc.object(map, &["action"], Need::Required) {
        None => (None, Map::new()),
        Some(a) => {
            doc.check_keys(a, &["action"], &RULE_ACTION_KEYS);
            let r = doc.string(a, &["action", "ref"], Need::Required);
            if let Some(r) = r {
                check_action_ref(doc, &["action", "ref"], r);
            }
            let params = doc
                .object(a, &["action", "parameters"], Need::Optional)
                .cloned()
                .unwrap_or_default();
            let mut at = vec!["action".to_string(), "parameters".to_string()];
            for (k, v) in &params {
                at.push(k.clone());
                check_templates(doc, ctx.templates, v, &mut at);
                at.pop();
            }
            (r, params)
        }
    };

    Some(Rule {
        pack: ctx.name?.to_string(),
        name: name?.to_string(),
        description: description.to_string(),
        enabled,
        kind: kind?,
        trigger_type: trigger_type?.to_string(),
        trigger_parameters,
        criteria,
        action_ref: action_ref?.to_string(),
        action_parameters,
        file: doc.file.clone(),
    })
}

/// Known triggers pass; otherwise a dotted `<pack>.<name>` is taken as a custom
/// trigger of some pack, except under the built-in namespaces where an unknown name
/// can only be a typo.
fn check_trigger_type(doc: &mut Doc, ty: &str, opts: &LoadOptions) {
    if opts.known_triggers.contains(&ty) {
        return;
    }
    let builtin = ty.starts_with("core.") || ty.starts_with("squall.");
    let custom = matches!(ty.split_once('.'), Some((p, n)) if !p.is_empty() && !n.is_empty());
    if builtin || !custom {
        let known = opts.known_triggers.join(", ");
        doc.err(
            &["trigger", "type"],
            format!("unknown trigger type '{ty}' (expected one of {known}, or a custom trigger '<pack>.<name>')"),
        );
    }
}

/// Action references are `pack.name`; whether the action exists is checked once the
/// whole tree is loaded.
fn check_action_ref(doc: &mut Doc, at: &[&str], r: &str) {
    if !matches!(r.split_once('.'), Some((p, n)) if !p.is_empty() && !n.is_empty()) {
        doc.err(
            at,
            format!("'{r}' is not an action reference of the form <pack>.<name>"),
        );
    }
}

/// Every string holding `{{` anywhere inside the parameter value must be a valid template.
fn check_templates(doc: &mut Doc, templates: &Templates, v: &Value, at: &mut Vec<String>) {
    match v {
        Value::String(s) if crate::template::is_template(s) => {
            if let Err(e) = templates.check(s) {
                doc.err(at, format!("invalid template: {e}"));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                at.push(i.to_string());
                check_templates(doc, templates, item, at);
                at.pop();
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                at.push(k.clone());
                check_templates(doc, templates, item, at);
                at.pop();
            }
        }
        _ => {}
    }
}

/// `aliases/<name>.yaml`.
pub(crate) fn alias(doc: &mut Doc, map: &Map<String, Value>, ctx: &PackCtx) -> Option<Alias> {
    doc.check_keys(map, &[], &ALIAS_KEYS);
    check_pack_key(doc, map, ctx);
    let name = doc.string(map, &["name"], Need::Required);
    let description = doc
        .string(map, &["description"], Need::Optional)
        .unwrap_or("");
    let enabled = doc.boolean(map, &["enabled"]).unwrap_or(true);
    let match_multiple = doc.boolean(map, &["match_multiple"]).unwrap_or(false);
    let action_ref = doc.string(map, &["action_ref"], Need::Required);
    if let Some(r) = action_ref {
        check_action_ref(doc, &["action_ref"], r);
    }
    let formats = alias_formats(doc, map);
    let ack = alias_message(doc, map, "ack", &ALIAS_ACK_KEYS, ctx.templates);
    let result = alias_message(doc, map, "result", &ALIAS_RESULT_KEYS, ctx.templates);
    let immutable_parameters = doc
        .object(map, &["immutable_parameters"], Need::Optional)
        .cloned()
        .unwrap_or_default();
    Some(Alias {
        pack: ctx.name?.to_string(),
        name: name?.to_string(),
        description: description.to_string(),
        enabled,
        action_ref: action_ref?.to_string(),
        formats,
        ack,
        result,
        immutable_parameters,
        match_multiple,
        file: doc.file.clone(),
    })
}

/// `formats`: strings, or `{display, representation: [..]}`. A plain string is both
/// what help shows and what is matched, as st2 normalises it.
fn alias_formats(doc: &mut Doc, map: &Map<String, Value>) -> Vec<AliasFormat> {
    let items = match map.get("formats") {
        None | Some(Value::Null) => {
            doc.err(&["formats"], "is required");
            return Vec::new();
        }
        Some(Value::Array(items)) if items.is_empty() => {
            doc.err(&["formats"], "must list at least one format");
            return Vec::new();
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            doc.err(
                &["formats"],
                format!("expected a list, found {}", type_name(other)),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let idx = i.to_string();
        let at = ["formats", idx.as_str()];
        match item {
            Value::String(s) if !s.trim().is_empty() => out.push(AliasFormat {
                display: Some(s.clone()),
                representation: vec![s.clone()],
            }),
            Value::Object(f) => {
                doc.check_keys(f, &at, &ALIAS_FORMAT_KEYS);
                let display = doc
                    .string(f, &with(&at, "display"), Need::Optional)
                    .map(str::to_string);
                let representation =
                    string_list(doc, f.get("representation"), &with(&at, "representation"));
                if display.is_none() && representation.is_empty() {
                    doc.err(&at, "a format needs a `display` or a `representation`");
                }
                out.push(AliasFormat {
                    display,
                    representation,
                });
            }
            other => doc.err(
                &at,
                format!(
                    "expected a non-empty string or a mapping, found {}",
                    type_name(other)
                ),
            ),
        }
    }
    out
}

fn string_list(doc: &mut Doc, v: Option<&Value>, at: &[&str]) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                Value::String(s) => Some(s.clone()),
                other => {
                    let idx = i.to_string();
                    doc.err(
                        &with(at, &idx),
                        format!("expected a string, found {}", type_name(other)),
                    );
                    None
                }
            })
            .collect(),
        Some(other) => {
            doc.err(
                at,
                format!("expected a list of strings, found {}", type_name(other)),
            );
            Vec::new()
        }
    }
}

/// `ack` / `result`: kept raw, but shape-checked.
fn alias_message(
    doc: &mut Doc,
    map: &Map<String, Value>,
    key: &'static str,
    keys: &Keys,
    templates: &Templates,
) -> Option<Value> {
    let m = doc.object(map, &[key], Need::Optional)?;
    doc.check_keys(m, &[key], keys);
    doc.boolean(m, &[key, "enabled"]);
    // A broken format would fail at the first command; say so when the pack loads.
    if let Some(format) = doc.string(m, &[key, "format"], Need::Optional)
        && let Err(e) = templates.check(format)
    {
        doc.err(&[key, "format"], format!("invalid template: {e}"));
    }
    doc.object(m, &[key, "extra"], Need::Optional);
    doc.boolean(m, &[key, "append_url"]);
    Some(Value::Object(m.clone()))
}
