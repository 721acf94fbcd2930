//! Loads StackStorm-layout pack directories into the model, validating everything
//! and reporting every problem of the whole tree at once.
//!
//! Layout read (per pack): `pack.yaml`, optional `config.schema.yaml`,
//! `actions/*.yaml` (scripts beside them), `actions/workflows/*.yaml`,
//! `rules/*.yaml`, `aliases/*.yaml`. Only `*.yaml` / `*.yml` files are content;
//! hidden files are skipped; files are read in path order so results and errors are
//! deterministic. Other directories (sensors/, policies/, tests/, ...) are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::doc::Doc;
use super::model::{Pack, WorkflowFile};
use super::validate::{self, PackCtx};
use crate::template::Templates;

/// What the rest of squall supports, so packs are checked against it.
#[derive(Debug, Clone)]
pub struct LoadOptions<'a> {
    pub known_runners: &'a [&'a str],
    pub known_triggers: &'a [&'a str],
    /// Where `<pack>.yaml` configs live (`configs/` beside the packs directory);
    /// `None`: beside each pack's own parent directory.
    pub configs_dir: Option<PathBuf>,
}

impl LoadOptions<'_> {
    /// StackStorm's place for pack configs: `configs/` beside the first packs
    /// directory (or beside the directory holding a pack given on its own). The
    /// built-in packs read theirs from there too.
    pub fn configs_dir_for(roots: &[PathBuf]) -> Option<PathBuf> {
        let root = roots.first()?;
        let base = if root.join("pack.yaml").is_file() {
            root.parent()?.parent()?
        } else {
            root.parent()?
        };
        Some(base.join("configs"))
    }
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackError {
    pub file: PathBuf,
    /// Dotted path of the offending key (`parameters.count.type`); empty when the
    /// problem concerns the whole file.
    pub field: String,
    pub reason: String,
    /// 1-based line: exact for YAML syntax errors, best effort (the key's line, or its
    /// nearest parent's) for the others.
    pub line: Option<usize>,
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.reason)
        } else {
            write!(f, ": {}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for PackError {}

/// `root` is either a directory of packs or a single pack directory (has pack.yaml). Loads every pack, then checks
/// cross-references (a rule's or alias's action ref must name an action loaded in the tree). Returns ALL errors of
/// the whole tree at once, sorted by file then field; any error -> Err (never a half-loaded pack).
pub fn load_pack_tree(root: &Path, opts: &LoadOptions) -> Result<Vec<Pack>, Vec<PackError>> {
    load_pack_roots(&[root.to_path_buf()], opts)
}

/// One pack directory's load result, on its own (`squall pack list`).
#[derive(Debug)]
pub struct PackReport {
    pub dir: PathBuf,
    /// The pack's name, when its pack.yaml could be read.
    pub name: Option<String>,
    pub version: Option<String>,
    /// Empty when it loads.
    pub errors: Vec<PackError>,
}

/// Load every pack under `roots` separately and report each one's problems
/// (a directory that cannot be read is reported as a pack of its own).
pub fn report_pack_roots(roots: &[PathBuf], opts: &LoadOptions) -> Vec<PackReport> {
    let templates = Templates::new();
    let mut reports = Vec::new();
    for root in roots {
        let mut errors = Vec::new();
        let dirs = discover(root, &mut errors);
        if !errors.is_empty() {
            reports.push(PackReport {
                dir: root.clone(),
                name: None,
                version: None,
                errors,
            });
        }
        for dir in dirs {
            let mut errors = Vec::new();
            let loaded = load_pack(&dir, opts, &templates, &mut errors, &mut Vec::new());
            reports.push(PackReport {
                name: loaded
                    .name
                    .as_ref()
                    .map(|n| n.0.clone())
                    .or_else(|| loaded.pack.as_ref().map(|p| p.meta.name.clone())),
                version: loaded.pack.as_ref().map(|p| p.meta.version.clone()),
                dir,
                errors,
            });
        }
    }
    reports
}

/// Load several roots (e.g. built-in packs dir + user packs dir); duplicate pack names across roots are an error.
pub fn load_pack_roots(roots: &[PathBuf], opts: &LoadOptions) -> Result<Vec<Pack>, Vec<PackError>> {
    let templates = Templates::new();
    let mut errors = Vec::new();
    let mut loaded = Vec::new();
    for root in roots {
        for dir in discover(root, &mut errors) {
            loaded.push(load_pack(
                &dir,
                opts,
                &templates,
                &mut errors,
                &mut Vec::new(),
            ));
        }
    }
    check_unique_packs(&loaded, &mut errors);
    check_action_refs(&loaded, &mut errors);
    if errors.is_empty() {
        Ok(loaded.into_iter().filter_map(|l| l.pack).collect())
    } else {
        sort_errors(&mut errors);
        Err(errors)
    }
}

/// A pack that did not load, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusedPack {
    pub dir: PathBuf,
    /// The pack's name, when its pack.yaml could be read.
    pub name: Option<String>,
    pub version: Option<String>,
    pub errors: Vec<PackError>,
}

/// Packs loaded one by one, as StackStorm registers them: the good ones, the
/// refused ones with their errors, and what StackStorm lets pass but an
/// author should fix.
#[derive(Debug, Default)]
pub struct PackLoad {
    pub packs: Vec<Pack>,
    pub refused: Vec<RefusedPack>,
    pub warnings: Vec<PackError>,
}

/// Load every pack under `roots` on its own: a pack with a problem is
/// refused with all of its problems, the others load. Of two packs with one
/// name, the first (in `roots` order) wins. References between packs are
/// checked once the catalog is built (`crate::engine::load_catalog_lenient`).
pub fn load_packs(roots: &[PathBuf], opts: &LoadOptions) -> PackLoad {
    let templates = Templates::new();
    let mut load = PackLoad::default();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for root in roots {
        let mut errors = Vec::new();
        let dirs = discover(root, &mut errors);
        for e in errors {
            load.refused.push(RefusedPack {
                dir: e.file.clone(),
                name: None,
                version: None,
                errors: vec![e],
            });
        }
        for dir in dirs {
            let mut errors = Vec::new();
            let loaded = load_pack(&dir, opts, &templates, &mut errors, &mut load.warnings);
            // References inside the pack are its own problems; those into
            // other packs are judged once every pack is loaded.
            if let Some((name, ..)) = &loaded.name {
                for r in &loaded.action_refs {
                    let Some((pack, action)) = r.target.split_once('.') else {
                        continue;
                    };
                    if pack == name && !loaded.declared_actions.contains(action) {
                        errors.push(PackError {
                            file: r.file.clone(),
                            field: r.field.to_string(),
                            reason: format!(
                                "unknown action '{}' (no loaded pack defines it)",
                                r.target
                            ),
                            line: r.line,
                        });
                    }
                }
            }
            if let Some((name, file, field, line)) = &loaded.name {
                if let Some(first) = seen.get(name) {
                    errors.push(duplicate_pack(name, file, field, *line, first));
                } else {
                    seen.insert(name.clone(), file.clone());
                }
            }
            match loaded.pack {
                Some(pack) if errors.is_empty() => load.packs.push(pack),
                pack => {
                    sort_errors(&mut errors);
                    load.refused.push(RefusedPack {
                        name: loaded.name.map(|n| n.0),
                        version: pack.map(|p| p.meta.version),
                        dir,
                        errors,
                    });
                }
            }
        }
    }
    load
}

/// A pack as far as it could be loaded, plus what the tree-wide checks need.
struct LoadedPack {
    /// `None` when pack.yaml is broken.
    pack: Option<Pack>,
    /// Pack ref and where it was declared (file, key, line), when pack.yaml had one.
    name: Option<(String, PathBuf, &'static str, Option<usize>)>,
    dir: PathBuf,
    /// Every action name declared in the pack, including those of actions that failed
    /// validation: a rule pointing at a broken action should report the action's
    /// problem, not an additional "unknown action".
    declared_actions: BTreeSet<String>,
    /// Action references made by rules and aliases.
    action_refs: Vec<ActionRef>,
}

struct ActionRef {
    file: PathBuf,
    field: &'static str,
    line: Option<usize>,
    target: String,
}

fn error(file: &Path, reason: String) -> PackError {
    PackError {
        file: file.to_path_buf(),
        field: String::new(),
        reason,
        line: None,
    }
}

/// Non-hidden entries of `dir`, sorted by path.
fn list_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// The pack directories under `root`.
fn discover(root: &Path, errors: &mut Vec<PackError>) -> Vec<PathBuf> {
    if root.join("pack.yaml").is_file() {
        return vec![root.to_path_buf()];
    }
    let entries = match list_dir(root) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(error(root, format!("cannot read packs directory: {e}")));
            return Vec::new();
        }
    };
    let mut packs = Vec::new();
    for dir in entries.into_iter().filter(|p| p.is_dir()) {
        if dir.join("pack.yaml").is_file() {
            packs.push(dir);
        } else {
            // Everything in a packs directory is a pack; a directory without pack.yaml
            // is usually a misnamed pack.yml or a half-copied pack, never intended.
            errors.push(error(&dir, "not a pack: pack.yaml is missing".to_string()));
        }
    }
    packs
}

/// Content files (`*.yaml` / `*.yml`, not hidden) directly inside `dir`; an absent
/// directory simply has none.
fn content_files(dir: &Path, errors: &mut Vec<PackError>) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    match list_dir(dir) {
        Ok(entries) => entries
            .into_iter()
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(e) => {
            errors.push(error(dir, format!("cannot read directory: {e}")));
            Vec::new()
        }
    }
}

/// Records a content name, reporting a clash with an earlier file of the same kind.
fn check_unique_name(
    doc: &mut Doc,
    seen: &mut BTreeMap<String, PathBuf>,
    kind: &str,
    name: Option<&str>,
) {
    let Some(name) = name else { return };
    if let Some(first) = seen.get(name) {
        doc.err(
            &["name"],
            format!(
                "duplicate {kind} name '{name}' (also defined in {})",
                first.display()
            ),
        );
    } else {
        seen.insert(name.to_string(), doc.file.clone());
    }
}

fn declared_name(map: &serde_json::Map<String, serde_json::Value>) -> Option<&str> {
    map.get("name").and_then(|v| v.as_str())
}

fn load_pack(
    dir: &Path,
    opts: &LoadOptions,
    templates: &Templates,
    errors: &mut Vec<PackError>,
    warnings: &mut Vec<PackError>,
) -> LoadedPack {
    let meta_file = dir.join("pack.yaml");
    let (mut doc, map) = Doc::read(&meta_file);
    let meta = map.and_then(|m| validate::pack_meta(&mut doc, &m, dir));
    let name = meta.as_ref().map(|(m, field)| {
        let line = doc.line_of(&[field]);
        (m.name.clone(), meta_file.clone(), *field, line)
    });
    errors.append(&mut doc.errors);
    warnings.append(&mut doc.warnings);

    // The config schema and `configs/<pack>.yaml` checked against it: a config that
    // breaks its schema refuses the pack, as running its actions would go wrong.
    let config_schema = dir.join("config.schema.yaml");
    let mut schema = None;
    if config_schema.exists() {
        let (mut doc, map) = Doc::read(&config_schema);
        schema = map.map(serde_json::Value::Object);
        errors.append(&mut doc.errors);
        warnings.append(&mut doc.warnings);
    }
    let mut config = super::config::PackConfig::default();
    if let Some((meta, _)) = &meta {
        let mut loaded = super::config::load(
            dir,
            &meta.name,
            schema.as_ref(),
            opts.configs_dir.as_deref(),
        );
        let as_error = |p: super::config::ConfigProblem| PackError {
            file: p.file,
            field: p.field,
            reason: p.reason,
            line: None,
        };
        if !loaded.errors.is_empty() && super::builtin::is_builtin(dir) {
            // A built-in pack holds what every squall needs (core.local, the chat
            // commands): a broken setting in its config file must not take those
            // away. It loads without the broken settings (their schema defaults
            // apply), and says loudly why.
            let mut broken = std::mem::take(&mut loaded.errors);
            let skip: std::collections::BTreeSet<String> = broken
                .iter()
                .map(|p| p.field.split('.').next().unwrap_or_default().to_owned())
                .collect();
            loaded = super::config::load_without(
                dir,
                &meta.name,
                schema.as_ref(),
                opts.configs_dir.as_deref(),
                &skip,
            );
            // What is left (a required setting the file now lacks) warns too.
            broken.extend(std::mem::take(&mut loaded.errors));
            warnings.extend(broken.into_iter().map(|p| PackError {
                reason: format!(
                    "{}; the built-in pack {} loads without {} (the schema's default \
                     applies until it is fixed)",
                    p.reason,
                    meta.name,
                    if p.field.is_empty() {
                        "this file"
                    } else {
                        "this setting"
                    }
                ),
                ..as_error(p)
            }));
        }
        errors.extend(loaded.errors.into_iter().map(as_error));
        warnings.extend(loaded.warnings.into_iter().map(as_error));
        config = loaded.config;
    }

    let ctx = PackCtx {
        name: meta.as_ref().map(|(m, _)| m.name.as_str()),
        dir,
        opts,
        templates,
    };
    let mut declared_actions = BTreeSet::new();
    let mut action_refs = Vec::new();

    let mut actions = Vec::new();
    let mut seen = BTreeMap::new();
    for file in content_files(&dir.join("actions"), errors) {
        let (mut doc, map) = Doc::read(&file);
        if let Some(map) = map {
            declared_actions.extend(declared_name(&map).map(str::to_string));
            check_unique_name(&mut doc, &mut seen, "action", declared_name(&map));
            actions.extend(validate::action(&mut doc, &map, &ctx));
        }
        errors.append(&mut doc.errors);
        warnings.append(&mut doc.warnings);
    }

    let mut workflows = Vec::new();
    for file in content_files(&dir.join("actions").join("workflows"), errors) {
        let (mut doc, map) = Doc::read(&file);
        if let Some(map) = map {
            workflows.push(WorkflowFile {
                pack: ctx.name.unwrap_or_default().to_string(),
                file: file.clone(),
                definition: serde_json::Value::Object(map),
            });
        }
        errors.append(&mut doc.errors);
        warnings.append(&mut doc.warnings);
    }

    let mut rules = Vec::new();
    let mut seen = BTreeMap::new();
    for file in content_files(&dir.join("rules"), errors) {
        let (mut doc, map) = Doc::read(&file);
        if let Some(map) = map {
            check_unique_name(&mut doc, &mut seen, "rule", declared_name(&map));
            let target = map
                .get("action")
                .and_then(|a| a.get("ref"))
                .and_then(|r| r.as_str());
            if let Some(target) = target {
                action_refs.push(ActionRef {
                    file: file.clone(),
                    field: "action.ref",
                    line: doc.line_of(&["action", "ref"]),
                    target: target.to_string(),
                });
            }
            rules.extend(validate::rule(&mut doc, &map, &ctx));
        }
        errors.append(&mut doc.errors);
        warnings.append(&mut doc.warnings);
    }

    let mut aliases = Vec::new();
    let mut seen = BTreeMap::new();
    for file in content_files(&dir.join("aliases"), errors) {
        let (mut doc, map) = Doc::read(&file);
        if let Some(map) = map {
            check_unique_name(&mut doc, &mut seen, "alias", declared_name(&map));
            if let Some(target) = map.get("action_ref").and_then(|r| r.as_str()) {
                action_refs.push(ActionRef {
                    file: file.clone(),
                    field: "action_ref",
                    line: doc.line_of(&["action_ref"]),
                    target: target.to_string(),
                });
            }
            aliases.extend(validate::alias(&mut doc, &map, &ctx));
        }
        errors.append(&mut doc.errors);
        warnings.append(&mut doc.warnings);
    }

    LoadedPack {
        pack: meta.map(|(meta, _)| Pack {
            meta,
            config,
            actions,
            rules,
            aliases,
            workflows,
        }),
        name,
        dir: dir.to_path_buf(),
        declared_actions,
        action_refs,
    }
}

fn duplicate_pack(
    name: &str,
    file: &Path,
    field: &str,
    line: Option<usize>,
    first: &Path,
) -> PackError {
    PackError {
        file: file.to_path_buf(),
        field: field.to_string(),
        reason: format!(
            "duplicate pack '{name}' (also loaded from {})",
            first.display()
        ),
        line,
    }
}

/// Errors in file, field, line order, each once.
fn sort_errors(errors: &mut Vec<PackError>) {
    errors.sort_by(|a, b| {
        (&a.file, &a.field, a.line, &a.reason).cmp(&(&b.file, &b.field, b.line, &b.reason))
    });
    errors.dedup();
}

/// Pack refs are the namespace of every reference, so they must be unique across all roots.
fn check_unique_packs(loaded: &[LoadedPack], errors: &mut Vec<PackError>) {
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    for (name, file, field, line) in loaded.iter().filter_map(|l| l.name.as_ref()) {
        if let Some(first) = seen.get(name.as_str()) {
            errors.push(duplicate_pack(name, file, field, *line, first));
        } else {
            seen.insert(name, file);
        }
    }
}

/// Every rule/alias action reference must name an action declared somewhere in the
/// loaded tree. References into a pack whose pack.yaml is broken are not judged: its
/// ref is unknown, and its pack.yaml error is already reported.
fn check_action_refs(loaded: &[LoadedPack], errors: &mut Vec<PackError>) {
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut unknown_packs: BTreeSet<String> = BTreeSet::new();
    for l in loaded {
        match &l.name {
            Some((name, ..)) => {
                known.extend(l.declared_actions.iter().map(|a| format!("{name}.{a}")))
            }
            None => {
                unknown_packs.extend(l.dir.file_name().map(|n| n.to_string_lossy().into_owned()));
            }
        }
    }
    for r in loaded.iter().flat_map(|l| &l.action_refs) {
        let pack = r.target.split_once('.').map(|(p, _)| p).unwrap_or_default();
        if known.contains(&r.target) || unknown_packs.contains(pack) || !r.target.contains('.') {
            // Malformed refs (no dot) were already reported by the file's validation.
            continue;
        }
        errors.push(PackError {
            file: r.file.clone(),
            field: r.field.to_string(),
            reason: format!("unknown action '{}' (no loaded pack defines it)", r.target),
            line: r.line,
        });
    }
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
