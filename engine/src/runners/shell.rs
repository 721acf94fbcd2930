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
    }
}

fn refuse_sudo(params: &Map<String, Value>) -> Option<RunOutcome> {
    (params.get("sudo") == Some(&Value::Bool(true))).then(|| {
        RunOutcome::failed(
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
            return RunOutcome::failed("parameter 'cmd' is required");
        };
        let params = Value::Object(ctx.parameters.clone());
        let command = match ctx.templates.render_shell(template, &params) {
            Ok(c) => c,
            Err(err) => return RunOutcome::failed(format!("parameter 'cmd': {err}")),
        };
        let env = match action_env(&ctx) {
            Ok(env) => env,
            Err(err) => return RunOutcome::failed(err),
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

pub struct LocalShellScript;

#[async_trait::async_trait]
impl Runner for LocalShellScript {
    fn name(&self) -> &'static str {
        "local-shell-script"
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
            return RunOutcome::failed("action has no entry_point script");
        };
        // Packs may be loaded from a relative directory, and the script runs
        // with its own directory as working directory.
        let script = match std::fs::canonicalize(&script) {
            Ok(path) => path,
            Err(err) => {
                return RunOutcome::failed(format!("entry_point {}: {err}", script.display()));
            }
        };
        let env = match action_env(&ctx) {
            Ok(env) => env,
            Err(err) => return RunOutcome::failed(err),
        };
        let args = script_arguments(&ctx);
        let (program, mut argv) = match interpreter_for(&script) {
            Ok(found) => found,
            Err(err) => return RunOutcome::failed(err),
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
/// true, omitted when false).
fn script_arguments(ctx: &RunContext) -> Vec<String> {
    let kwarg_op = ctx.param_str("kwarg_op").unwrap_or("--");
    let mut positional: Vec<(u32, String)> = Vec::new();
    let mut named = Vec::new();
    for (name, value) in &ctx.parameters {
        if RUNNER_PARAMS.contains(&name.as_str()) || name == "sudo" {
            continue;
        }
        let position = ctx.action.parameters.get(name).and_then(|p| p.position);
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
