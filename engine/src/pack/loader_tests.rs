//! Loader tests. Every fixture is written to a fresh temp dir by the test itself.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::pack::model::{Pack, RuleKind};

const RUNNERS: &[&str] = &[
    "local-shell-cmd",
    "local-shell-script",
    "http-request",
    "noop",
    "orquesta",
];
const TRIGGERS: &[&str] = &[
    "core.st2.webhook",
    "core.st2.generic.notifytrigger",
    "squall.chat.message",
];

fn opts() -> LoadOptions<'static> {
    LoadOptions {
        known_runners: RUNNERS,
        known_triggers: TRIGGERS,
        configs_dir: None,
    }
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn pack_yaml(root: &Path, dir: &str, name: &str) {
    write(
        root,
        &format!("{dir}/pack.yaml"),
        &format!("name: {name}\ndescription: test pack\nversion: 1.0.0\nauthor: tests\n"),
    );
}

/// A minimal valid action `<pack>.<name>`.
fn noop_action(root: &Path, dir: &str, name: &str) {
    write(
        root,
        &format!("{dir}/actions/{name}.yaml"),
        &format!("name: {name}\nrunner_type: noop\n"),
    );
}

fn load_err(root: &Path) -> Vec<PackError> {
    match load_pack_tree(root, &opts()) {
        Ok(packs) => panic!("expected errors, loaded {} packs", packs.len()),
        Err(errors) => errors,
    }
}

fn load_ok(root: &Path) -> Vec<Pack> {
    match load_pack_tree(root, &opts()) {
        Ok(packs) => packs,
        Err(errors) => panic!("unexpected errors:\n{}", render(&errors)),
    }
}

fn render(errors: &[PackError]) -> String {
    errors.iter().map(|e| format!("{e}\n")).collect()
}

/// (file relative to root, field) of each error, for compact assertions.
fn where_(errors: &[PackError], root: &Path) -> Vec<(String, String)> {
    errors
        .iter()
        .map(|e| {
            let file = e.file.strip_prefix(root).unwrap_or(&e.file);
            (file.display().to_string(), e.field.clone())
        })
        .collect()
}

fn find<'e>(errors: &'e [PackError], field: &str) -> &'e PackError {
    errors
        .iter()
        .find(|e| e.field == field)
        .unwrap_or_else(|| panic!("no error on {field}:\n{}", render(errors)))
}

fn relativize(pack: &mut Pack, root: &Path) {
    let rel = |p: &mut PathBuf| {
        if let Ok(r) = p.strip_prefix(root) {
            *p = r.to_path_buf();
        }
    };
    rel(&mut pack.meta.path);
    for a in &mut pack.actions {
        rel(&mut a.file);
        if let Some(e) = &mut a.entry_point {
            rel(e);
        }
    }
    pack.rules.iter_mut().for_each(|r| rel(&mut r.file));
    pack.aliases.iter_mut().for_each(|a| rel(&mut a.file));
    pack.workflows.iter_mut().for_each(|w| rel(&mut w.file));
}

const FULL_ACTION: &str = r#"---
name: deploy
pack: ops
description: Deploy a service.
runner_type: local-shell-script
entry_point: deploy.sh
idempotent: true
tags:
  - name: team
    value: ops
output_schema:
  result:
    type: string
parameters:
  service:
    type: string
    description: Service to deploy.
    required: true
    position: 0
  count:
    type: integer
    default: 3
    minimum: 1
    position: 1
  env:
    type: string
    enum: [staging, production]
    default: staging
  token:
    type: string
    secret: true
    default: "{{ config_context.token }}"
  mode:
    type: string
    default: fast
    immutable: true
  options:
    type: object
    properties:
      dry_run:
        type: boolean
        required: true
  sudo:
    immutable: true
"#;

fn write_full_pack(root: &Path) {
    write(
        root,
        "ops/pack.yaml",
        "---\nref: ops\nname: Ops Tools\ndescription: Operations.\nversion: 0.2.0\nauthor: Ops Team\nemail: ops@example.com\nkeywords: [ops]\npython_versions: [\"3\"]\n",
    );
    write(
        root,
        "ops/config.schema.yaml",
        "api_key:\n  type: string\n  secret: true\n",
    );
    write(root, "ops/actions/deploy.yaml", FULL_ACTION);
    write(root, "ops/actions/deploy.sh", "#!/bin/sh\necho deploy\n");
    write(
        root,
        "ops/actions/run_flow.yml",
        "name: run_flow\nrunner_type: orquesta\nentry_point: workflows/flow.yaml\nenabled: false\n",
    );
    write(
        root,
        "ops/actions/workflows/flow.yaml",
        "version: 1.0\ntasks:\n  first:\n    action: ops.deploy\n",
    );
    write(root, "ops/actions/.hidden.yaml", "this is not: [valid");
    write(
        root,
        "ops/actions/README.md",
        "scripts and docs beside actions are not content\n",
    );
    write(
        root,
        "ops/rules/on_push.yaml",
        r#"---
name: on_push
pack: ops
description: Deploy on push.
enabled: true
trigger:
  type: core.st2.webhook
  parameters:
    url: push
criteria:
  trigger.body.branch:
    type: equals
    pattern: main
action:
  ref: ops.deploy
  parameters:
    service: "{{ trigger.body.repo }}"
    count: 2
    options:
      dry_run: false
tags: []
"#,
    );
    write(
        root,
        "ops/rules/fallback.yaml",
        "name: fallback\ntype:\n  ref: backstop\ntrigger:\n  type: ops.custom_event\naction:\n  ref: ops.deploy\n",
    );
    write(
        root,
        "ops/aliases/deploy.yaml",
        r#"---
name: deploy
action_ref: ops.deploy
description: Deploy from chat.
formats:
  - "deploy {{ service }}"
  - display: "deploy <service> [count]"
    representation:
      - "deploy {{ service }} {{ count }}"
      - "ship {{ service }}"
ack:
  enabled: true
  append_url: false
  format: "On it."
result:
  format: "done: {{ execution.result }}"
immutable_parameters:
  env: production
match_multiple: true
"#,
    );
}

#[test]
fn valid_pack_loads_into_the_expected_model() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_full_pack(root);
    let mut packs = load_ok(root);
    assert_eq!(packs.len(), 1);
    let pack = &mut packs[0];
    relativize(pack, root);

    assert_eq!(pack.meta.name, "ops");
    assert_eq!(
        pack.actions.len(),
        2,
        "hidden files and scripts are not actions"
    );
    let deploy = &pack.actions[0];
    assert_eq!(deploy.reference(), "ops.deploy");
    assert_eq!(
        deploy.entry_point.as_deref(),
        Some(Path::new("ops/actions/deploy.sh"))
    );
    assert!(deploy.idempotent);
    let count = &deploy.parameters["count"];
    assert_eq!(count.default, Some(json!(3)));
    assert_eq!(count.position, Some(1));
    assert_eq!(
        count.schema,
        json!({"type": "integer", "default": 3, "minimum": 1})
    );
    assert!(deploy.parameters["token"].secret);
    assert!(deploy.parameters["service"].required);
    assert_eq!(
        deploy.parameters["options"].schema,
        json!({"type": "object", "required": ["dry_run"], "properties": {"dry_run": {"type": "boolean"}}}),
        "nested draft-03 `required: true` becomes draft-04 `required: [..]`"
    );
    assert!(!pack.actions[1].enabled);
    assert_eq!(pack.rules[0].name, "fallback");
    assert_eq!(pack.rules[0].kind, RuleKind::Backstop);
    assert_eq!(pack.rules[1].kind, RuleKind::Standard);
    assert_eq!(pack.workflows.len(), 1);
    assert_eq!(pack.aliases[0].formats.len(), 2);

    insta::assert_yaml_snapshot!(pack);
}

#[test]
fn stock_st2_core_files_load_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(
        root,
        "core/pack.yaml",
        "---\nname : core\ndescription : Basic core actions.\nversion: 3.4.0\npython_versions:\n  - \"2\"\n  - \"3\"\nauthor : StackStorm, Inc.\nemail : info@stackstorm.com\n",
    );
    // contrib/core/actions/local.yaml: `sudo` re-declares a runner parameter as immutable.
    write(
        root,
        "core/actions/local.yaml",
        "---\ndescription: Action that executes an arbitrary Linux command on the localhost.\nenabled: true\nentry_point: ''\nname: local\nparameters:\n  cmd:\n    description: Arbitrary Linux command to be executed on the local host.\n    required: true\n    type: string\n  sudo:\n    immutable: true\nrunner_type: \"local-shell-cmd\"\n",
    );
    write(
        root,
        "core/actions/http.yaml",
        "---\ndescription: Action that performs an http request.\nenabled: true\nentry_point: ''\nname: http\nparameters:\n  headers:\n    description: 'HTTP headers to use with the request.'\n    type: object\n  method:\n    description: HTTP method to use.\n    enum:\n    - HEAD\n    - GET\n    - POST\n  timeout:\n    default: 60\n    description: Timeout for the HTTP request.\n    type: number\nrunner_type: \"http-request\"\n",
    );
    write(
        root,
        "core/rules/notify_hubot.yaml",
        "---\nname: \"chatops.notify_hubot\"\nenabled: true\ndescription: \"Notification rule to send messages to Hubot\"\ntrigger:\n  type: \"core.st2.generic.notifytrigger\"\ncriteria:\n  trigger.channel:\n    type: \"equals\"\n    pattern: \"test2\"\naction:\n  ref: core.http\n  parameters:\n    channel: \"{{trigger.data.source_channel}}\"\n    user: \"{{trigger.data.user}}\"\n",
    );
    write(
        root,
        "core/aliases/pack_install.yaml",
        "---\nname: \"pack_install\"\naction_ref: \"core.local\"\npack: \"core\"\ndescription: \"Install packs.\"\nformats:\n  - display: \"pack install <pack>[,<pack>]\"\n  - display: \"pack install <pack>#<gitref>[,<pack#gitref>]\"\n    representation:\n      - \"pack install {{packs}}\"\nack:\n  enabled: true\n  append_url: false\n  format: \"Deploying the requested pack(s) for you.\"\nresult:\n  format: |\n    {% if execution.status == \"succeeded\" %}\n    Done.{~}\n    {% endif %}\n",
    );
    let packs = load_ok(root);
    let core = &packs[0];
    assert_eq!(core.actions.len(), 2);
    assert_eq!(
        core.actions[1].entry_point, None,
        "entry_point '' means none"
    );
    assert!(core.actions[1].parameters["sudo"].immutable);
    assert!(core.aliases[0].formats[0].representation.is_empty());
}

#[test]
fn three_mistakes_in_three_files_are_all_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "name: a\nrunner_type: local-shel-cmd\n",
    );
    write(
        root,
        "x/actions/b.yaml",
        "name: b\nrunner_type: noop\nparameters:\n  count:\n    type: integr\n    default: three\n",
    );
    write(
        root,
        "x/rules/r.yaml",
        "name: r\ntrigger:\n  type: core.st2.webhook\naction:\n  ref: x.missing\n",
    );
    let errors = load_err(root);
    assert_eq!(
        where_(&errors, root),
        vec![
            ("x/actions/a.yaml".into(), "runner_type".into()),
            ("x/actions/b.yaml".into(), "parameters.count.type".into()),
            ("x/rules/r.yaml".into(), "action.ref".into()),
        ],
        "{}",
        render(&errors)
    );
    assert!(
        errors[0]
            .reason
            .contains("unknown runner 'local-shel-cmd' (expected one of local-shell-cmd,")
    );
    assert!(
        errors[1].reason.contains("unknown type 'integr'"),
        "{}",
        errors[1]
    );
    assert_eq!(errors[1].line, Some(5));
    assert_eq!(
        errors[2].reason,
        "unknown action 'x.missing' (no loaded pack defines it)"
    );
    assert_eq!(errors[2].line, Some(5));
}

#[test]
fn display_shows_file_line_field_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "name: a\nrunner_type: noop\nparameters:\n  count:\n    type: integr\n",
    );
    let errors = load_err(root);
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    let file = root.join("x/actions/a.yaml");
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}:5: parameters.count.type: unknown type 'integr' (expected one of string, integer, number, boolean, object, array, null)",
            file.display()
        )
    );
    let no_line = PackError {
        line: None,
        ..errors[0].clone()
    };
    assert!(
        no_line
            .to_string()
            .starts_with(&format!("{}: parameters.count.type: ", file.display()))
    );
}

#[test]
fn unknown_keys_are_reported_with_the_accepted_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "name: a\nrunner_type: noop\nrunner: noop\nparameters:\n  p:\n    type: string\n    defualt: x\n",
    );
    write(
        root,
        "x/rules/r.yaml",
        "name: r\ntrigger:\n  type: core.st2.webhook\n  paramters: {}\naction:\n  ref: x.a\n",
    );
    let errors = load_err(root);
    assert_eq!(
        where_(&errors, root),
        vec![
            ("x/actions/a.yaml".into(), "parameters.p.defualt".into()),
            ("x/actions/a.yaml".into(), "runner".into()),
            ("x/rules/r.yaml".into(), "trigger.paramters".into()),
        ],
        "{}",
        render(&errors)
    );
    let runner = find(&errors, "runner");
    assert!(
        runner
            .reason
            .starts_with("unknown key (accepted keys: description, enabled, entry_point,")
    );
    assert!(runner.reason.contains("runner_type"));
    assert_eq!(runner.line, Some(3));
    assert!(
        find(&errors, "parameters.p.defualt")
            .reason
            .contains("default")
    );
    assert_eq!(
        find(&errors, "trigger.paramters").reason,
        "unknown key (accepted keys: description, parameters, ref, type)"
    );
}

#[test]
fn st2_keys_squall_does_not_implement_are_rejected_as_unsupported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "name: a\nrunner_type: noop\nnotify:\n  on-complete:\n    routes: [chat]\n",
    );
    write(
        root,
        "x/rules/r.yaml",
        "name: r\ncontext:\n  user: admin\ntrigger:\n  type: core.st2.webhook\naction:\n  ref: x.a\n",
    );
    let errors = load_err(root);
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    assert_eq!(find(&errors, "context").reason, "not supported by squall");
}

#[test]
fn yaml_syntax_error_reports_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "name: a\nrunner_type: noop\nparameters:\n  p: [unclosed\n",
    );
    write(root, "x/rules/r.yaml", "- just\n- a list\n");
    write(root, "x/aliases/empty.yaml", "");
    let errors = load_err(root);
    assert_eq!(errors.len(), 3, "{}", render(&errors));
    assert!(
        errors[0].reason.starts_with("invalid YAML: "),
        "{}",
        errors[0]
    );
    assert!(errors[0].line.is_some_and(|l| l >= 4), "{}", errors[0]);
    assert_eq!(errors[1].reason, "file is empty (expected a mapping)");
    assert_eq!(
        errors[2].reason,
        "top level must be a mapping, found a list"
    );
}

#[test]
fn duplicate_parameter_position_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "name: a\nrunner_type: noop\nparameters:\n  first:\n    position: 0\n  second:\n    position: 0\n  third:\n    position: -1\n",
    );
    let errors = load_err(root);
    assert_eq!(errors.len(), 2, "{}", render(&errors));
    let dup = find(&errors, "parameters.second.position");
    assert_eq!(
        dup.reason,
        "position 0 is already used by parameter 'first'"
    );
    assert_eq!(dup.line, Some(7));
    assert_eq!(
        find(&errors, "parameters.third.position").reason,
        "must be a non-negative integer, found -1"
    );
}

#[test]
fn entry_point_must_exist_and_stay_inside_the_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(root, "x/lib/shared.sh", "#!/bin/sh\n");
    write(
        root,
        "x/actions/missing.yaml",
        "name: missing\nrunner_type: local-shell-script\nentry_point: nope.sh\n",
    );
    write(
        root,
        "x/actions/none.yaml",
        "name: none\nrunner_type: local-shell-script\n",
    );
    write(
        root,
        "x/actions/escape.yaml",
        "name: escape\nrunner_type: local-shell-script\nentry_point: ../../y/evil.sh\n",
    );
    write(
        root,
        "x/actions/shared.yaml",
        "name: shared\nrunner_type: local-shell-script\nentry_point: ../lib/shared.sh\n",
    );
    let errors = load_err(root);
    assert_eq!(
        where_(&errors, root),
        vec![
            ("x/actions/escape.yaml".into(), "entry_point".into()),
            ("x/actions/missing.yaml".into(), "entry_point".into()),
            ("x/actions/none.yaml".into(), "entry_point".into()),
        ],
        "{}",
        render(&errors)
    );
    assert!(
        errors[0]
            .reason
            .contains("must be a relative path inside the pack")
    );
    assert!(errors[1].reason.contains("does not exist"));
    assert_eq!(
        errors[2].reason,
        "is required for runner 'local-shell-script'"
    );
}

#[test]
fn immutable_parameter_without_default_loads_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "name: a\nrunner_type: noop\nparameters:\n  locked:\n    type: string\n    immutable: true\n  nulled:\n    type: string\n    immutable: true\n    default: null\n",
    );
    let load = load_packs(&[root.to_path_buf()], &opts());
    assert!(load.refused.is_empty(), "{:?}", load.refused);
    assert_eq!(
        where_(&load.warnings, root),
        vec![
            (
                "x/actions/a.yaml".into(),
                "parameters.locked.immutable".into()
            ),
            (
                "x/actions/a.yaml".into(),
                "parameters.nulled.immutable".into()
            ),
        ],
        "{}",
        render(&load.warnings)
    );
}

/// StackStorm does not check defaults against their types: one that casts is
/// cast (with a warning), one that does not is kept (with a warning).
#[test]
fn a_default_of_the_wrong_type_is_cast_or_kept_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "name: a\nrunner_type: noop\nparameters:\n  flag:\n    type: boolean\n    default: 0\n  port:\n    type: string\n    default: 8080\n  count:\n    type: integer\n    default: \"5\"\n  many:\n    type: integer\n    default: lots\n",
    );
    let load = load_packs(&[root.to_path_buf()], &opts());
    assert!(load.refused.is_empty(), "{:?}", load.refused);
    let params = &load.packs[0].actions[0].parameters;
    assert_eq!(params["flag"].default, Some(json!(false)));
    assert_eq!(params["port"].default, Some(json!("8080")));
    assert_eq!(params["count"].default, Some(json!(5)));
    assert_eq!(params["many"].default, Some(json!("lots")));
    let fields: Vec<String> = load.warnings.iter().map(|w| w.field.clone()).collect();
    assert_eq!(
        fields,
        [
            "parameters.count.default",
            "parameters.flag.default",
            "parameters.many.default",
            "parameters.port.default"
        ]
    );
    assert!(render(&load.warnings).contains("will be refused"));
}

/// One broken pack does not take the others down: each loads or is refused
/// on its own, with all of its own errors.
#[test]
fn packs_load_or_are_refused_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "good", "good");
    write(root, "good/actions/a.yaml", "name: a\nrunner_type: noop\n");
    pack_yaml(root, "bad", "bad");
    write(root, "bad/actions/a.yaml", "name: a\nrunner_type: nope\n");
    write(
        root,
        "bad/rules/r.yaml",
        "name: r\ntrigger:\n  type: core.st2.webhook\naction:\n  ref: bad.missing\n",
    );
    std::fs::create_dir_all(root.join("stray")).unwrap();
    let load = load_packs(&[root.to_path_buf()], &opts());
    let loaded: Vec<&str> = load.packs.iter().map(|p| p.meta.name.as_str()).collect();
    assert_eq!(loaded, ["good"]);
    assert_eq!(load.refused.len(), 2, "{:?}", load.refused);
    let bad = load
        .refused
        .iter()
        .find(|r| r.name.as_deref() == Some("bad"))
        .unwrap();
    assert_eq!(
        where_(&bad.errors, root),
        vec![
            ("bad/actions/a.yaml".into(), "runner_type".into()),
            ("bad/rules/r.yaml".into(), "action.ref".into()),
        ]
    );
    assert!(
        load.refused
            .iter()
            .any(|r| r.name.is_none() && r.errors[0].reason.contains("pack.yaml is missing"))
    );
}

#[test]
fn parameter_schema_problems_are_each_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "name: a\nrunner_type: noop\nparameters:\n  e:\n    enum: []\n  s:\n    type: string\n    minLength: lots\n  f:\n    type: boolean\n    secret: yes please\n  bad-name:\n    type: string\n  scalar: 5\n  pick:\n    type: string\n    enum: [a, b]\n    default: c\n",
    );
    let errors = load_err(root);
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "parameters.bad-name",
            "parameters.e.enum",
            "parameters.f.secret",
            "parameters.s.minLength",
            "parameters.scalar",
        ],
        "{}",
        render(&errors)
    );
    assert!(
        find(&errors, "parameters.s.minLength")
            .reason
            .starts_with("invalid JSON schema: ")
    );
}

#[test]
fn duplicate_names_within_a_pack_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    noop_action(root, "x", "a");
    write(
        root,
        "x/actions/z_copy.yaml",
        "name: a\nrunner_type: noop\n",
    );
    let rule = "name: r\ntrigger:\n  type: core.st2.webhook\naction:\n  ref: x.a\n";
    write(root, "x/rules/r1.yaml", rule);
    write(root, "x/rules/r2.yaml", rule);
    let errors = load_err(root);
    assert_eq!(
        where_(&errors, root),
        vec![
            ("x/actions/z_copy.yaml".into(), "name".into()),
            ("x/rules/r2.yaml".into(), "name".into()),
        ],
        "{}",
        render(&errors)
    );
    assert!(
        errors[0]
            .reason
            .starts_with("duplicate action name 'a' (also defined in ")
    );
    assert!(errors[1].reason.starts_with("duplicate rule name 'r'"));
}

#[test]
fn duplicate_pack_across_roots_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let builtin = tmp.path().join("builtin");
    let user = tmp.path().join("user");
    pack_yaml(&builtin, "core", "core");
    pack_yaml(&user, "my_core", "core");
    pack_yaml(&user, "mine", "mine");
    let errors = load_pack_roots(&[builtin.clone(), user.clone()], &opts()).unwrap_err();
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    assert_eq!(errors[0].file, user.join("my_core/pack.yaml"));
    assert_eq!(errors[0].field, "name");
    assert_eq!(
        errors[0].reason,
        format!(
            "duplicate pack 'core' (also loaded from {})",
            builtin.join("core/pack.yaml").display()
        )
    );
    let packs = load_pack_roots(&[builtin, user.join("mine")], &opts()).unwrap();
    let names: Vec<&str> = packs.iter().map(|p| p.meta.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["core", "mine"],
        "a root may also be a single pack"
    );
}

#[test]
fn pack_key_must_match_the_pack_ref() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The directory name does not matter; the ref does.
    pack_yaml(root, "some-dir", "x");
    write(
        root,
        "some-dir/actions/a.yaml",
        "name: a\npack: y\nrunner_type: noop\n",
    );
    write(
        root,
        "some-dir/aliases/al.yaml",
        "name: al\npack: x\naction_ref: x.a\nformats: [\"do it\"]\n",
    );
    let errors = load_err(root);
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    assert_eq!(errors[0].field, "pack");
    assert_eq!(errors[0].reason, "'y' does not match the pack's ref 'x'");
}

#[test]
fn pack_yaml_needs_a_valid_ref_version_and_description() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(
        root,
        "a/pack.yaml",
        "name: My Pack\ndescription: d\nversion: 1.0.0\n",
    );
    write(
        root,
        "b/pack.yaml",
        "name: B Pack\nref: b-pack\ndescription: d\nversion: 1.0.0\n",
    );
    write(root, "c/pack.yaml", "name: c\nversion: 1.0\n");
    write(
        root,
        "d/pack.yaml",
        "name: D Pack\nref: d\ndescription: d\nversion: 2.1.3-rc1\n",
    );
    write(root, "e/README.md", "not a pack\n");
    let errors = load_err(root);
    assert_eq!(
        where_(&errors, root),
        vec![
            ("a/pack.yaml".into(), "name".into()),
            ("b/pack.yaml".into(), "ref".into()),
            ("c/pack.yaml".into(), "description".into()),
            ("c/pack.yaml".into(), "version".into()),
            ("e".into(), "".into()),
        ],
        "{}",
        render(&errors)
    );
    assert_eq!(
        errors[3].reason,
        "'1.0' is not a semantic version like 1.0.0"
    );
    assert_eq!(errors[4].reason, "not a pack: pack.yaml is missing");
}

#[test]
fn rule_triggers_criteria_and_templates_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    noop_action(root, "x", "a");
    write(
        root,
        "x/rules/r.yaml",
        "name: r\ntype:\n  ref: sometimes\ntrigger:\n  type: core.st2.webhok\ncriteria:\n  trigger.body.x:\n    pattern: 1\naction:\n  ref: x.a\n  parameters:\n    msg: \"hello {{ trigger.body.name\"\n    list:\n      - ok\n      - \"{{ broken\"\n",
    );
    write(
        root,
        "x/rules/custom.yaml",
        "name: custom\ntrigger:\n  type: github.push\naction:\n  ref: x.a\n",
    );
    write(
        root,
        "x/rules/bare.yaml",
        "name: bare\ntrigger:\n  type: push\naction:\n  ref: a\n",
    );
    let errors = load_err(root);
    assert_eq!(
        where_(&errors, root),
        vec![
            ("x/rules/bare.yaml".into(), "action.ref".into()),
            ("x/rules/bare.yaml".into(), "trigger.type".into()),
            ("x/rules/r.yaml".into(), "action.parameters.list.1".into()),
            ("x/rules/r.yaml".into(), "action.parameters.msg".into()),
            (
                "x/rules/r.yaml".into(),
                "criteria.\"trigger.body.x\".type".into()
            ),
            ("x/rules/r.yaml".into(), "trigger.type".into()),
            ("x/rules/r.yaml".into(), "type.ref".into()),
        ],
        "{}",
        render(&errors)
    );
    let trig = &errors[5];
    assert!(
        trig.reason.starts_with(
            "unknown trigger type 'core.st2.webhok' (expected one of core.st2.webhook,"
        )
    );
    assert!(errors[3].reason.starts_with("invalid template: "));
    assert_eq!(
        errors[4].line,
        Some(7),
        "criteria keys with dots are found as one key"
    );
}

#[test]
fn alias_shape_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    noop_action(root, "x", "a");
    write(
        root,
        "x/aliases/none.yaml",
        "name: none\naction_ref: x.a\nformats: []\n",
    );
    write(
        root,
        "x/aliases/bad.yaml",
        "name: bad\naction_ref: x.a\nformats:\n  - 3\n  - {}\n  - display: d\n    representation: [1]\nack:\n  formt: x\nresult:\n  append_url: true\n",
    );
    write(
        root,
        "x/aliases/dangling.yaml",
        "name: dangling\naction_ref: y.b\nformats: [go]\n",
    );
    let errors = load_err(root);
    assert_eq!(
        where_(&errors, root),
        vec![
            ("x/aliases/bad.yaml".into(), "ack.formt".into()),
            ("x/aliases/bad.yaml".into(), "formats.0".into()),
            ("x/aliases/bad.yaml".into(), "formats.1".into()),
            (
                "x/aliases/bad.yaml".into(),
                "formats.2.representation.0".into()
            ),
            ("x/aliases/bad.yaml".into(), "result.append_url".into()),
            ("x/aliases/dangling.yaml".into(), "action_ref".into()),
            ("x/aliases/none.yaml".into(), "formats".into()),
        ],
        "{}",
        render(&errors)
    );
}

#[test]
fn workflow_and_config_schema_must_be_mappings() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(root, "x/config.schema.yaml", "- not\n- a mapping\n");
    write(root, "x/actions/workflows/wf.yaml", "just a string\n");
    let errors = load_err(root);
    assert_eq!(
        where_(&errors, root),
        vec![
            ("x/actions/workflows/wf.yaml".into(), "".into()),
            ("x/config.schema.yaml".into(), "".into()),
        ],
        "{}",
        render(&errors)
    );
}

#[test]
fn a_broken_action_does_not_also_make_its_references_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(root, "x/actions/a.yaml", "name: a\nrunner_type: teleport\n");
    write(
        root,
        "x/rules/r.yaml",
        "name: r\ntrigger:\n  type: core.st2.webhook\naction:\n  ref: x.a\n",
    );
    let errors = load_err(root);
    assert_eq!(
        where_(&errors, root),
        vec![("x/actions/a.yaml".into(), "runner_type".into())],
        "{}",
        render(&errors)
    );
}

#[test]
fn yaml_features_json_cannot_hold_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "base: &base\n  runner_type: noop\n<<: *base\nname: a\nparameters:\n  n:\n    type: number\n    default: .nan\n  t:\n    default: !secret x\n",
    );
    let errors = load_err(root);
    assert_eq!(
        where_(&errors, root),
        vec![
            ("x/actions/a.yaml".into(), "base".into()),
            ("x/actions/a.yaml".into(), "parameters.n.default".into()),
            ("x/actions/a.yaml".into(), "parameters.t.default".into()),
        ],
        "{}",
        render(&errors)
    );
}

#[test]
fn a_missing_root_is_an_error_and_an_empty_one_loads_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let errors = load_pack_tree(&tmp.path().join("nope"), &opts()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .reason
            .starts_with("cannot read packs directory: ")
    );
    assert_eq!(
        load_pack_tree(tmp.path(), &opts()).unwrap(),
        Vec::<Pack>::new()
    );
}

#[test]
fn a_pack_with_an_incomplete_pack_yaml_still_resolves_references_into_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, "dir_a/pack.yaml", "ref: a\nname: A\nversion: 1.0.0\n");
    noop_action(root, "dir_a", "act");
    pack_yaml(root, "b", "b");
    write(
        root,
        "b/rules/r.yaml",
        "name: r\ntrigger:\n  type: core.st2.webhook\naction:\n  ref: a.act\n",
    );
    let errors = load_err(root);
    assert_eq!(
        where_(&errors, root),
        vec![("dir_a/pack.yaml".into(), "description".into())],
        "{}",
        render(&errors)
    );
}

#[test]
fn notify_blocks_are_checked_key_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "name: a\nrunner_type: noop\nnotify:\n  on-done: {}\n  on-success:\n    routes: chat\n    message: \"{{ x | nope }}\"\n",
    );
    let errors = load_err(root);
    assert_eq!(errors.len(), 3, "{}", render(&errors));
    assert!(
        find(&errors, "notify.on-done")
            .reason
            .starts_with("unknown key"),
        "{}",
        render(&errors)
    );
    assert_eq!(
        find(&errors, "notify.on-success.routes").reason,
        "expected a list of names"
    );
    assert!(
        find(&errors, "notify.on-success.message")
            .reason
            .contains("no filter named `nope`"),
        "{}",
        render(&errors)
    );
}

#[test]
fn a_boolean_required_on_an_items_schema_is_accepted_as_stackstorm_does() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(
        root,
        "x/actions/a.yaml",
        "name: a\nrunner_type: noop\nparameters:\n  policies:\n    type: array\n    items:\n      type: string\n      required: true\n",
    );
    let load = load_packs(&[root.to_path_buf()], &opts());
    assert!(load.refused.is_empty(), "{:?}", load.refused);
    assert_eq!(load.packs.len(), 1);
}

#[test]
fn alias_formats_are_checked_when_the_pack_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    pack_yaml(root, "x", "x");
    write(root, "x/actions/a.yaml", "name: a\nrunner_type: noop\n");
    write(
        root,
        "x/aliases/a.yaml",
        "name: a\naction_ref: x.a\nformats: [\"do a\"]\nack:\n  format: \"{% if x %}open\"\nresult:\n  format: \"{{ execution.result | to_json_string }}\"\n",
    );
    let errors = load_err(root);
    assert_eq!(errors.len(), 1, "{}", render(&errors));
    assert!(
        find(&errors, "ack.format")
            .reason
            .starts_with("invalid template"),
        "{}",
        render(&errors)
    );
}
