//! `local-shell-cmd` and `local-shell-script`, with StackStorm's argument
//! conventions. Parameters reach the process only as argv or environment; a
//! `cmd` template gets every interpolated value shell-quoted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::process::{ProcessOutcome, ProcessSpec, run_process};
use super::{RunContext, RunOutcome, Runner, runner_param};
use crate::execution::ExecutionStatus;
use crate::pack::ParamSpec;

/// Parameters of the shell runners that are not passed to the script.
const RUNNER_PARAMS: [&str; 5] = ["cmd", "cwd", "env", "timeout", "kwarg_op"];

fn common_parameters() -> BTreeMap<String, ParamSpec> {
    BTreeMap::from([
        (
            "cwd".to_owned(),
            runner_param(json!({"type": "string"}), None, "Working directory."),
        ),
        (
            "env".to_owned(),
            runner_param(
                json!({"type": "object"}),
                None,
                "Extra environment variables.",
            ),
        ),
        (
            "timeout".to_owned(),
            runner_param(
                json!({"type": "integer", "minimum": 1}),
                Some(json!(60)),
                "Seconds before the process group is killed.",
            ),
        ),
        (
            "sudo".to_owned(),
            runner_param(
                json!({"type": "boolean"}),
                Some(json!(false)),
                "Not supported: squall never runs actions through sudo.",
            ),
        ),
    ])
}

/// `ST2_ACTION_<NAME>` variables for the action's own parameters, plus the
/// `env` parameter.
fn action_env(ctx: &RunContext) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    for (name, value) in &ctx.parameters {
        if RUNNER_PARAMS.contains(&name.as_str()) || name == "sudo" || value.is_null() {
            continue;
        }
        env.insert(
            format!("ST2_ACTION_{}", name.to_uppercase()),
            value_to_arg(value),
        );
    }
    env.insert("ST2_ACTION_PACK_NAME".into(), ctx.action.pack.clone());
    env.insert("ST2_ACTION_EXECUTION_ID".into(), ctx.execution_id.clone());
    if let Some(extra) = ctx.parameters.get("env") {
        match extra {
            Value::Object(map) => {
                for (k, v) in map {
                    env.insert(k.clone(), value_to_arg(v));
                }
            }
            Value::Null => {}
            _ => return Err("parameter 'env' must be an object of strings".into()),
        }
    }
    Ok(env)
}

fn value_to_arg(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn outcome(process: ProcessOutcome) -> RunOutcome {
    let succeeded = process.status == ExecutionStatus::Succeeded;
    RunOutcome {
        result: json!({
            "succeeded": succeeded,
            "failed": !succeeded,
            "return_code": process.exit_code,
            "stdout": process.stdout,
            "stderr": process.stderr,
        }),
        status: process.status,
        stdout: process.stdout,
        stderr: process.stderr,
        exit_code: process.exit_code,
        error: process.error,
        retry: process.retry,
    }
}

fn refuse_sudo(params: &Map<String, Value>) -> Option<RunOutcome> {
    (params.get("sudo") == Some(&Value::Bool(true))).then(|| {
        RunOutcome::refused(
            "parameter 'sudo': squall does not run actions through sudo; run squall as the user the action needs",
        )
    })
}

fn shell() -> &'static str {
    if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
}

pub struct LocalShellCmd;

#[async_trait::async_trait]
impl Runner for LocalShellCmd {
    fn name(&self) -> &'static str {
        "local-shell-cmd"
    }

    fn traits(&self) -> super::RunnerTraits {
        super::RunnerTraits {
            shell_command: true,
            process: true,
            ..Default::default()
        }
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        let mut params = common_parameters();
        let mut cmd = runner_param(
            json!({"type": "string"}),
            None,
            "Command line; {{ param }} values are shell-quoted, {{{ param }}} are inserted raw.",
        );
        cmd.required = true;
        params.insert("cmd".into(), cmd);
        params
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        if let Some(refused) = refuse_sudo(&ctx.parameters) {
            return refused;
        }
        let Some(template) = ctx.param_str("cmd") else {
            return RunOutcome::refused("parameter 'cmd' is required");
        };
        let command = match render_command(&ctx, template) {
            Ok(c) => c,
            Err(err) => return RunOutcome::refused(format!("parameter 'cmd': {err}")),
        };
        let env = match action_env(&ctx) {
            Ok(env) => env,
            Err(err) => return RunOutcome::refused(err),
        };
        let spec = ProcessSpec {
            program: shell().to_owned(),
            args: vec!["-c".into(), command],
            env,
            cwd: Some(
                ctx.param_str("cwd")
                    .map(PathBuf::from)
                    .unwrap_or_else(std::env::temp_dir),
            ),
            timeout: ctx.timeout(),
            stdin: None,
        };
        outcome(run_process(spec, ctx.limits, &ctx.cancel, &ctx.output).await)
    }
}

/// Render `cmd` with every value quoted as one `sh` word, except that a secret
/// parameter becomes a reference to its `ST2_ACTION_<NAME>` variable: the shell expands
/// it when it runs, so the value never sits on a command line `ps` shows.
fn render_command(ctx: &RunContext, template: &str) -> Result<String, String> {
    let nonce: u64 = rand::random();
    let mut params = ctx.parameters.clone();
    let mut secrets = Vec::new();
    for (name, spec) in &ctx.action.parameters {
        if !spec.secret || params.get(name).is_none_or(Value::is_null) {
            continue;
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "secret parameter {name:?} cannot be passed through the environment; \
                 name it with letters, digits and `_` only"
            ));
        }
        let placeholder = format!("__squall_secret_{nonce:016x}_{}__", secrets.len());
        params.insert(name.clone(), Value::String(placeholder.clone()));
        secrets.push((placeholder, format!("ST2_ACTION_{}", name.to_uppercase())));
    }
    // What an action's own `cmd` default may read besides its parameters, as
    // StackStorm renders defaults (looked up only for a command that reads them).
    if template.contains("config_context") {
        let config = ctx
            .host
            .catalog
            .current()
            .pack_config(&ctx.action.pack)
            .map_or_else(|| serde_json::json!({}), |c| c.values.clone());
        params.entry("config_context").or_insert(config);
    }
    if template.contains("action_context") {
        params.entry("action_context").or_insert_with(|| {
            crate::execution::action_context(&ctx.action.reference(), ctx.user.as_deref())
        });
    }
    let rendered = ctx
        .templates
        .render_shell(template, &Value::Object(params))
        .map_err(|e| e.to_string())?;
    let mut command = rendered.clone();
    for (placeholder, var) in &secrets {
        let mut out = String::with_capacity(command.len());
        let mut rest = command.as_str();
        while let Some(at) = rest.find(placeholder.as_str()) {
            let before = &command[..command.len() - rest.len() + at];
            out.push_str(&rest[..at]);
            match quote_state(before) {
                Quote::None => out.push_str(&format!("\"${{{var}}}\"")),
                Quote::Double => out.push_str(&format!("${{{var}}}")),
                Quote::Single => {
                    return Err(
                        "a secret parameter is used inside single quotes (or combined into a \
                         larger value); write it on its own, as `{{ name }}`, so the shell \
                         can read it from the environment"
                            .into(),
                    );
                }
            }
            rest = &rest[at + placeholder.len()..];
        }
        out.push_str(rest);
        command = out;
    }
    Ok(command)
}

enum Quote {
    None,
    Single,
    Double,
}

/// Whether the end of `prefix` lies inside single quotes, double quotes or neither.
fn quote_state(prefix: &str) -> Quote {
    let mut state = Quote::None;
    let mut escaped = false;
    for c in prefix.chars() {
        state = match (state, c) {
            (Quote::Single, '\'') => Quote::None,
            (Quote::Single, _) => Quote::Single,
            (s, _) if escaped => {
                escaped = false;
                s
            }
            (s, '\\') => {
                escaped = true;
                s
            }
            (Quote::None, '\'') => Quote::Single,
            (Quote::None, '"') => Quote::Double,
            (Quote::Double, '"') => Quote::None,
            (s, _) => s,
        };
    }
    state
}

pub struct LocalShellScript;

#[async_trait::async_trait]
impl Runner for LocalShellScript {
    fn name(&self) -> &'static str {
        "local-shell-script"
    }

    fn traits(&self) -> super::RunnerTraits {
        super::RunnerTraits {
            process: true,
            ..Default::default()
        }
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        let mut params = common_parameters();
        params.insert(
            "kwarg_op".into(),
            runner_param(
                json!({"type": "string"}),
                Some(json!("--")),
                "Prefix of named arguments.",
            ),
        );
        params
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        if let Some(refused) = refuse_sudo(&ctx.parameters) {
            return refused;
        }
        let Some(script) = ctx.action.entry_point.clone() else {
            return RunOutcome::refused("action has no entry_point script");
        };
        // Packs may be loaded from a relative directory, and the script runs
        // with its own directory as working directory.
        let script = match std::fs::canonicalize(&script) {
            Ok(path) => path,
            Err(err) => {
                return RunOutcome::refused(format!("entry_point {}: {err}", script.display()));
            }
        };
        let env = match action_env(&ctx) {
            Ok(env) => env,
            Err(err) => return RunOutcome::refused(err),
        };
        let args = script_arguments(&ctx);
        let (program, mut argv) = match interpreter_for(&script) {
            Ok(found) => found,
            Err(err) => return RunOutcome::refused(err),
        };
        argv.extend(args);
        let cwd = ctx
            .param_str("cwd")
            .map(PathBuf::from)
            .or_else(|| script.parent().map(Path::to_path_buf));
        let spec = ProcessSpec {
            program,
            args: argv,
            env,
            cwd,
            timeout: ctx.timeout(),
            stdin: None,
        };
        outcome(run_process(spec, ctx.limits, &ctx.cancel, &ctx.output).await)
    }
}

/// StackStorm's script argument order: positional parameters by `position`,
/// then named ones as `--name=value` (booleans as a bare `--name` flag when
/// true, omitted when false). Secret parameters are left out: a command line is
/// world-readable (`ps`), so the script reads them from `ST2_ACTION_<NAME>`.
fn script_arguments(ctx: &RunContext) -> Vec<String> {
    let kwarg_op = ctx.param_str("kwarg_op").unwrap_or("--");
    let mut positional: Vec<(u32, String)> = Vec::new();
    let mut named = Vec::new();
    for (name, value) in &ctx.parameters {
        if RUNNER_PARAMS.contains(&name.as_str()) || name == "sudo" {
            continue;
        }
        let spec = ctx.action.parameters.get(name);
        if spec.is_some_and(|p| p.secret) {
            continue;
        }
        let position = spec.and_then(|p| p.position);
        match (position, value) {
            (Some(pos), v) => positional.push((pos, value_to_arg(v))),
            (None, Value::Null) | (None, Value::Bool(false)) => {}
            (None, Value::Bool(true)) => named.push(format!("{kwarg_op}{name}")),
            (None, v) => named.push(format!("{kwarg_op}{name}={}", value_to_arg(v))),
        }
    }
    positional.sort_by_key(|(pos, _)| *pos);
    positional
        .into_iter()
        .map(|(_, v)| v)
        .chain(named)
        .collect()
}

/// Run the script directly when it is executable; otherwise through the
/// interpreter its `#!` line names, or `/bin/sh`.
fn interpreter_for(script: &Path) -> Result<(String, Vec<String>), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(script).map_err(|e| format!("entry_point {}: {e}", script.display()))?;
    let path = script.display().to_string();
    if meta.permissions().mode() & 0o111 != 0 {
        return Ok((path, Vec::new()));
    }
    let head = std::fs::read(script).map_err(|e| format!("entry_point {path}: {e}"))?;
    let first_line = head
        .split(|b| *b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_default();
    if let Some(shebang) = first_line.strip_prefix("#!") {
        let mut parts = shebang.split_whitespace().map(str::to_owned);
        if let Some(interpreter) = parts.next() {
            let mut args: Vec<String> = parts.collect();
            args.push(path);
            return Ok((interpreter, args));
        }
    }
    Ok(("/bin/sh".into(), vec![path]))
}
