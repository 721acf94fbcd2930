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
        let (command, hidden) = match render_command(&ctx, template) {
            Ok(c) => c,
            Err(err) => return RunOutcome::refused(format!("parameter 'cmd': {err}")),
        };
        let mut env = match action_env(&ctx) {
            Ok(env) => env,
            Err(err) => return RunOutcome::refused(err),
        };
        env.extend(hidden);
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

/// Render `cmd` with every value quoted as one `sh` word, except that secret
/// values become references to environment variables the shell expands when
/// it runs, so no secret sits on a command line `ps` shows:
/// - a secret parameter, as its `ST2_ACTION_<NAME>`;
/// - a secret setting of the pack config read through `config_context`, and a
///   datastore secret a `cmd` default read (rendered before the run, quoted),
///   as `SQUALL_SECRET_<n>`, returned with the command for the process's
///   environment.
fn render_command(
    ctx: &RunContext,
    template: &str,
) -> Result<(String, BTreeMap<String, String>), String> {
    let nonce: u64 = rand::random();
    let mut params = ctx.parameters.clone();
    // (placeholder rendered into the command, variable it stands for)
    let mut hidden: Vec<(String, String)> = Vec::new();
    let mut extra_env = BTreeMap::new();
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
        let placeholder = format!("__squall_secret_{nonce:016x}_{}__", hidden.len());
        params.insert(name.clone(), Value::String(placeholder.clone()));
        hidden.push((placeholder, format!("ST2_ACTION_{}", name.to_uppercase())));
    }
    // What an action's own `cmd` default may read besides its parameters, as
    // StackStorm renders defaults (looked up only for a command that reads them).
    if template.contains("config_context") && !params.contains_key("config_context") {
        let catalog = ctx.host.catalog.current();
        let config = catalog.pack_config(&ctx.action.pack);
        let mut values = config.map_or_else(|| serde_json::json!({}), |c| c.values.clone());
        if let Some(config) = config {
            let secrets = config.secrets();
            replace_strings(&mut values, &mut |text| {
                if !secrets.contains(text) {
                    return None;
                }
                let n = extra_env.len();
                let placeholder = format!("__squall_secret_{nonce:016x}_c{n}__");
                let var = format!("SQUALL_SECRET_{n}");
                extra_env.insert(var.clone(), text.to_owned());
                hidden.push((placeholder.clone(), var));
                Some(placeholder)
            });
        }
        params.insert("config_context".into(), values);
    }
    if template.contains("action_context") {
        params.entry("action_context").or_insert_with(|| {
            crate::execution::action_context(&ctx.action.reference(), ctx.user.as_deref())
        });
    }
    let mut command = ctx
        .templates
        .render_shell(template, &Value::Object(params))
        .map_err(|e| e.to_string())?;
    for (placeholder, var) in &hidden {
        command = refer_to_variable(&command, placeholder, var, false);
    }
    // Secret values already in the command: a `cmd` default that read the
    // datastore was rendered (each value quoted as one word) before the run.
    for secret in ctx.secrets.iter() {
        if secret.len() < crate::secrets::MIN_SCRUB_LEN {
            continue;
        }
        let Ok(word) = crate::template::shell_word(secret) else {
            continue;
        };
        if !command.contains(&word) {
            continue;
        }
        let var = format!("SQUALL_SECRET_{}", extra_env.len());
        let bare = word == secret;
        let replaced = refer_to_variable(&command, &word, &var, bare);
        if replaced != command {
            extra_env.insert(var, secret.to_owned());
            command = replaced;
        }
    }
    Ok((command, extra_env))
}

/// Replace every string in `value` that `f` maps to something.
fn replace_strings(value: &mut Value, f: &mut impl FnMut(&str) -> Option<String>) {
    match value {
        Value::String(s) => {
            if let Some(new) = f(s) {
                *s = new;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace_strings(v, f)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_strings(v, f)),
        _ => {}
    }
}

/// Replace each `word` in `command` with a reference to `var` that expands to
/// the same text, whatever quotes it sits in. A `bare` word (one that needed no
/// quoting) is replaced only where it stands alone, not inside a longer word
/// (nor where it would be a shell keyword, which a variable cannot be).
fn refer_to_variable(command: &str, word: &str, var: &str, bare: bool) -> String {
    const KEYWORDS: [&str; 16] = [
        "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
        "in", "function", "select", "time",
    ];
    if bare && KEYWORDS.contains(&word) {
        return command.to_owned();
    }
    let standalone =
        |c: Option<char>| c.is_none_or(|c| c.is_whitespace() || ";|&()<>=\"'`,".contains(c));
    let mut out = String::with_capacity(command.len());
    let mut done = 0;
    for (at, _) in command.match_indices(word) {
        if at < done {
            continue;
        }
        let before = &command[..at];
        let after = &command[at + word.len()..];
        if bare && !(standalone(before.chars().next_back()) && standalone(after.chars().next())) {
            continue;
        }
        out.push_str(&command[done..at]);
        out.push_str(&match quote_state(before) {
            Quote::None => format!("\"${{{var}}}\""),
            Quote::Double => format!("${{{var}}}"),
            // Close the quotes, expand, reopen: the same word.
            Quote::Single => format!("'\"${{{var}}}\"'"),
        });
        done = at + word.len();
    }
    out.push_str(&command[done..]);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_word_becomes_a_variable_in_any_quotes() {
        let var = "SQUALL_SECRET_0";
        assert_eq!(
            refer_to_variable("curl -H 'X: 'tok3n'' --t=tok3n", "tok3n", var, true),
            "curl -H 'X: '\"${SQUALL_SECRET_0}\"'' --t=\"${SQUALL_SECRET_0}\""
        );
        assert_eq!(
            refer_to_variable("echo \"a tok3n b\"", "tok3n", var, true),
            "echo \"a ${SQUALL_SECRET_0} b\""
        );
        // Quoted words are replaced whole, quotes and all.
        assert_eq!(
            refer_to_variable("echo 'se cret' x", "'se cret'", var, false),
            "echo \"${SQUALL_SECRET_0}\" x"
        );
    }

    #[test]
    fn a_bare_secret_inside_a_longer_word_or_a_keyword_is_left_alone() {
        let var = "V";
        assert_eq!(
            refer_to_variable("ls /tok3n/x tok3nx", "tok3n", var, true),
            "ls /tok3n/x tok3nx"
        );
        assert_eq!(
            refer_to_variable("if true; then :; fi", "then", var, true),
            "if true; then :; fi"
        );
    }

    #[test]
    fn rendered_commands_run_the_same_through_the_variable() {
        // What the shell makes of both forms is the same word.
        for (command, word, bare) in [
            ("printf %s tok3n", "tok3n", true),
            ("printf %s 'x'tok3n'y'", "tok3n", true),
            ("printf %s 'se '\\''cret'", "'se '\\''cret'", false),
            ("printf %s \"a tok3n\"", "tok3n", true),
            ("printf %s 'a tok3n b'", "tok3n", true),
        ] {
            let replaced = refer_to_variable(command, word, "SQUALL_SECRET_0", bare);
            assert_ne!(replaced, command);
            let value = if bare {
                word.to_owned()
            } else {
                "se 'cret".to_owned()
            };
            let run = |cmd: &str| {
                std::process::Command::new("/bin/sh")
                    .args(["-c", cmd])
                    .env("SQUALL_SECRET_0", &value)
                    .output()
                    .unwrap()
                    .stdout
            };
            assert_eq!(run(&replaced), run(command), "{command} -> {replaced}");
        }
    }
}
