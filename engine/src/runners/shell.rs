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

/// A parameter value as one argument or environment value: a string as it
/// is, null as nothing, anything else as its JSON text.
pub(super) fn value_to_arg(value: &Value) -> String {
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
///   environment (only those the command uses).
///
/// Secret parameters and config settings are rendered as placeholders first;
/// when a filter or an expression changed one (`| urlencode`, `| length`), the
/// placeholder rendering would run something else, so the command is rendered
/// with the real values and only whole occurrences of each secret are hidden.
fn render_command(
    ctx: &RunContext,
    template: &str,
) -> Result<(String, BTreeMap<String, String>), String> {
    let nonce: u64 = rand::random();
    let mut real = ctx.parameters.clone();
    // What an action's own `cmd` default may read besides its parameters, as
    // StackStorm renders defaults (looked up only for a command that reads them).
    let mut config_secrets = crate::secrets::Secrets::default();
    if template.contains("config_context") && !real.contains_key("config_context") {
        let catalog = ctx.host.catalog.current();
        let config = catalog.pack_config(&ctx.action.pack);
        config_secrets = config.map(|c| c.secrets()).unwrap_or_default();
        real.insert(
            "config_context".into(),
            config.map_or_else(|| serde_json::json!({}), |c| c.values.clone()),
        );
    }
    if template.contains("action_context") {
        real.entry("action_context").or_insert_with(|| {
            crate::execution::action_context(&ctx.action.reference(), ctx.user.as_deref())
        });
    }
    let mut masked = real.clone();
    let mut hidden: Vec<Hidden> = Vec::new();
    for (name, spec) in &ctx.action.parameters {
        let Some(value) = real.get(name).filter(|v| spec.secret && !v.is_null()) else {
            continue;
        };
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "secret parameter {name:?} cannot be passed through the environment; \
                 name it with letters, digits and `_` only"
            ));
        }
        let placeholder = format!("__squall_secret_{nonce:016x}_{}__", hidden.len());
        hidden.push(Hidden {
            placeholder: placeholder.clone(),
            value: value_to_arg(value),
            var: Some(format!("ST2_ACTION_{}", name.to_uppercase())),
        });
        masked.insert(name.clone(), Value::String(placeholder));
    }
    if let Some(config) = masked.get_mut("config_context") {
        replace_strings(config, &mut |text| {
            if !config_secrets.contains(text) {
                return None;
            }
            let placeholder = format!("__squall_secret_{nonce:016x}_{}__", hidden.len());
            hidden.push(Hidden {
                placeholder: placeholder.clone(),
                value: text.to_owned(),
                var: None,
            });
            Some(placeholder)
        });
    }
    let render = |params: Map<String, Value>| {
        ctx.templates
            .render_shell(template, &Value::Object(params))
            .map_err(|e| e.to_string())
    };
    let plain = render(real)?;
    let mut extra_env = BTreeMap::new();
    let mut command = plain.clone();
    let mut search: Vec<String> = ctx.secrets.iter().map(str::to_owned).collect();
    if !hidden.is_empty() {
        // A template that fails on a placeholder (`{{ token.key }}` of a secret
        // object) renders with the real values only.
        let with_placeholders = render(masked).ok();
        if let Some(with_placeholders) =
            with_placeholders.filter(|p| same_words(p, &plain, &hidden))
        {
            command = with_placeholders;
            for h in &hidden {
                if !command.contains(&h.placeholder) {
                    continue;
                }
                let var = h.var.clone().unwrap_or_else(|| {
                    let var = format!("SQUALL_SECRET_{}", extra_env.len());
                    extra_env.insert(var.clone(), h.value.clone());
                    var
                });
                command = refer_to_variable(&command, &h.placeholder, &var, Match::Anywhere);
            }
        } else {
            search.extend(hidden.iter().map(|h| h.value.clone()));
        }
    }
    // Secret values in the command as they are: a `cmd` default that read the
    // datastore was rendered (each value quoted as one word) before the run.
    for secret in search {
        if secret.len() < crate::secrets::MIN_SCRUB_LEN {
            continue;
        }
        let Ok(word) = crate::template::shell_word(&secret) else {
            continue;
        };
        if !command.contains(&word) {
            continue;
        }
        let var = format!("SQUALL_SECRET_{}", extra_env.len());
        let how = if word == secret {
            Match::Bare
        } else {
            Match::Anywhere
        };
        let replaced = refer_to_variable(&command, &word, &var, how);
        if replaced != command {
            extra_env.insert(var, secret);
            command = replaced;
        }
    }
    Ok((command, extra_env))
}

/// A secret rendered as a placeholder.
struct Hidden {
    placeholder: String,
    value: String,
    /// The variable already holding it (a secret parameter's `ST2_ACTION_*`).
    var: Option<String>,
}

/// Whether the command rendered with placeholders is the one rendered with
/// the real values once each placeholder stands for its value: the same shell
/// words (no filter or expression changed a secret on the way).
fn same_words(with_placeholders: &str, plain: &str, hidden: &[Hidden]) -> bool {
    let (Some(words), Some(plain)) = (shlex::split(with_placeholders), shlex::split(plain)) else {
        return false;
    };
    let words: Vec<String> = words
        .into_iter()
        .map(|word| {
            hidden
                .iter()
                .fold(word, |w, h| w.replace(&h.placeholder, &h.value))
        })
        .collect();
    words == plain
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

/// Where [`refer_to_variable`] may replace a word.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Match {
    /// A placeholder or a quoted word: wherever it occurs.
    Anywhere,
    /// A word that needed no quoting: also inside longer words (`-p<secret>`,
    /// `user:<secret>`, which expand to the same text), but not where the
    /// shell would read it as something else: part of a `$name`, `${name}` or
    /// `~user`, an assignment's name, or a keyword.
    Bare,
}

/// Replace each `word` in `command` with a reference to `var` that expands to
/// the same text, whatever quotes it sits in. In a comment, or a heredoc that
/// expands nothing, it is left as it is.
fn refer_to_variable(command: &str, word: &str, var: &str, how: Match) -> String {
    const KEYWORDS: [&str; 16] = [
        "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
        "in", "function", "select", "time",
    ];
    if how == Match::Bare && KEYWORDS.contains(&word) {
        return command.to_owned();
    }
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(command.len());
    let mut done = 0;
    for (at, _) in command.match_indices(word) {
        if at < done {
            continue;
        }
        let before = &command[..at];
        let after = &command[at + word.len()..];
        if how == Match::Bare {
            // The name-ish run this occurrence continues, and what precedes it.
            let run_start = before.trim_end_matches(is_name);
            let lead = run_start.chars().next_back();
            let starts_word = lead.is_none_or(|c| c.is_whitespace() || ";|&(".contains(c));
            if matches!(lead, Some('$' | '{' | '~'))
                || (starts_word && run_start.len() == before.len() && after.starts_with('='))
            {
                continue;
            }
        }
        let reference = match quote_state(before) {
            Quote::None => format!("\"${{{var}}}\""),
            Quote::Double | Quote::Heredoc { expands: true } => format!("${{{var}}}"),
            // Close the quotes, expand, reopen: the same word.
            Quote::Single => format!("'\"${{{var}}}\"'"),
            Quote::Comment | Quote::Heredoc { expands: false } => continue,
        };
        out.push_str(&command[done..at]);
        out.push_str(&reference);
        done = at + word.len();
    }
    out.push_str(&command[done..]);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
    /// After a `#` that starts a comment, to the end of its line.
    Comment,
    /// In a heredoc's body; `expands` unless its delimiter was quoted.
    Heredoc {
        expands: bool,
    },
}

/// What the end of `prefix` lies in: quotes, a comment, a heredoc or nothing.
fn quote_state(prefix: &str) -> Quote {
    // Heredocs whose bodies start after the current line: (delimiter, expands, strip tabs).
    let mut pending: Vec<(String, bool, bool)> = Vec::new();
    let mut body: Option<(String, bool, bool)> = None;
    let mut state = Quote::None;
    let mut escaped = false;
    let mut line_start = 0;
    let bytes = prefix.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some((delim, _, strip)) = &body {
            if c == b'\n' {
                let line = &prefix[line_start..i];
                let line = if *strip {
                    line.trim_start_matches('\t')
                } else {
                    line
                };
                if line == delim {
                    body = (!pending.is_empty()).then(|| pending.remove(0));
                    state = body
                        .as_ref()
                        .map_or(Quote::None, |(_, expands, _)| Quote::Heredoc {
                            expands: *expands,
                        });
                }
                line_start = i + 1;
            }
            i += 1;
            continue;
        }
        match state {
            Quote::Single => {
                if c == b'\'' {
                    state = Quote::None;
                }
            }
            Quote::Double => {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    state = Quote::None;
                }
            }
            Quote::Comment => {
                if c == b'\n' {
                    state = Quote::None;
                }
            }
            Quote::Heredoc { .. } => {}
            Quote::None => {
                if escaped {
                    escaped = false;
                } else {
                    match c {
                        b'\\' => escaped = true,
                        b'\'' => state = Quote::Single,
                        b'"' => state = Quote::Double,
                        b'#' if i == 0
                            || matches!(
                                bytes[i - 1],
                                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'('
                            ) =>
                        {
                            state = Quote::Comment;
                        }
                        b'<' if bytes.get(i + 1) == Some(&b'<')
                            && bytes.get(i + 2) != Some(&b'<') =>
                        {
                            let (heredoc, next) = heredoc_delimiter(prefix, i + 2);
                            pending.extend(heredoc);
                            i = next;
                            continue;
                        }
                        _ => {}
                    }
                }
            }
        }
        if c == b'\n' {
            line_start = i + 1;
            if state == Quote::None && !pending.is_empty() {
                let next = pending.remove(0);
                state = Quote::Heredoc { expands: next.1 };
                body = Some(next);
            }
        }
        i += 1;
    }
    state
}

/// The heredoc delimiter after `<<` (at `from`): (delimiter, expands, strips
/// tabs), and where the scan goes on.
fn heredoc_delimiter(text: &str, from: usize) -> (Option<(String, bool, bool)>, usize) {
    let bytes = text.as_bytes();
    let mut i = from;
    let strip = bytes.get(i) == Some(&b'-');
    if strip {
        i += 1;
    }
    while matches!(bytes.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    let mut delimiter = String::new();
    let mut quoted = false;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'\'' | b'"' => {
                quoted = true;
                let end = text[i + 1..]
                    .find(c as char)
                    .map_or(text.len(), |e| i + 1 + e);
                delimiter.push_str(&text[i + 1..end]);
                i = (end + 1).min(text.len());
            }
            b'\\' => {
                quoted = true;
                i += 1;
            }
            c if c.is_ascii_whitespace() || b";&|()<>".contains(&c) => break,
            _ => {
                let ch = text[i..].chars().next().unwrap_or_default();
                delimiter.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    let heredoc = (!delimiter.is_empty()).then_some((delimiter, !quoted, strip));
    (heredoc, i)
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
            refer_to_variable("curl -H 'X: 'tok3n'' --t=tok3n", "tok3n", var, Match::Bare),
            "curl -H 'X: '\"${SQUALL_SECRET_0}\"'' --t=\"${SQUALL_SECRET_0}\""
        );
        assert_eq!(
            refer_to_variable("echo \"a tok3n b\"", "tok3n", var, Match::Bare),
            "echo \"a ${SQUALL_SECRET_0} b\""
        );
        // Quoted words are replaced whole, quotes and all.
        assert_eq!(
            refer_to_variable("echo 'se cret' x", "'se cret'", var, Match::Anywhere),
            "echo \"${SQUALL_SECRET_0}\" x"
        );
        // Inside a longer word too: it expands to the same word.
        assert_eq!(
            refer_to_variable("mysql -ptok3n -u admin:tok3n", "tok3n", var, Match::Bare),
            "mysql -p\"${SQUALL_SECRET_0}\" -u admin:\"${SQUALL_SECRET_0}\""
        );
    }

    #[test]
    fn a_bare_secret_the_shell_reads_as_something_else_is_left_alone() {
        let var = "V";
        for command in [
            "echo $tok3n ${tok3n} $xtok3n ~tok3n",
            "tok3n=1 env",
            "if true; then :; fi",
        ] {
            let word = if command.starts_with("if") {
                "then"
            } else {
                "tok3n"
            };
            assert_eq!(refer_to_variable(command, word, var, Match::Bare), command);
        }
    }

    #[test]
    fn comments_and_heredocs_are_read_as_the_shell_reads_them() {
        let var = "V";
        // An apostrophe in a comment opens no quotes.
        assert_eq!(
            refer_to_variable(
                "# don't log it\ncurl -H \"Bearer tok3n\"",
                "tok3n",
                var,
                Match::Bare
            ),
            "# don't log it\ncurl -H \"Bearer ${V}\""
        );
        // In a comment it stays; in a heredoc that expands, no quotes are added;
        // one that expands nothing keeps it.
        assert_eq!(
            refer_to_variable(
                "cat <<EOF >f\npassword tok3n\nEOF\ncat <<'X'\nkeep tok3n\nX\necho tok3n # tok3n",
                "tok3n",
                var,
                Match::Bare
            ),
            "cat <<EOF >f\npassword ${V}\nEOF\ncat <<'X'\nkeep tok3n\nX\necho \"${V}\" # tok3n"
        );
    }

    #[test]
    fn rendered_commands_run_the_same_through_the_variable() {
        // What the shell makes of both forms is the same.
        for (command, word, how) in [
            ("printf %s tok3n", "tok3n", Match::Bare),
            ("printf %s 'x'tok3n'y'", "tok3n", Match::Bare),
            (
                "printf %s 'se '\\''cret'",
                "'se '\\''cret'",
                Match::Anywhere,
            ),
            ("printf %s \"a tok3n\"", "tok3n", Match::Bare),
            ("printf %s 'a tok3n b'", "tok3n", Match::Bare),
            ("printf %s -ptok3n:x", "tok3n", Match::Bare),
            ("# it's\nprintf %s \"tok3n\"", "tok3n", Match::Bare),
            ("cat <<EOF\na tok3n b\nEOF", "tok3n", Match::Bare),
            (
                "cat <<-EOF\n\ta tok3n\n\tEOF\nprintf %s tok3n",
                "tok3n",
                Match::Bare,
            ),
        ] {
            let replaced = refer_to_variable(command, word, "SQUALL_SECRET_0", how);
            assert_ne!(replaced, command);
            let value = if how == Match::Bare {
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

    #[test]
    fn a_filtered_secret_is_not_run_as_its_placeholder() {
        let hidden = [Hidden {
            placeholder: "__ph_0__".into(),
            value: "p@ss w".into(),
            var: None,
        }];
        // The same words once the placeholder stands for its value.
        assert!(same_words(
            "login --password=__ph_0__",
            "login '--password=p@ss w'",
            &hidden
        ));
        // A filter saw the placeholder, not the secret.
        assert!(!same_words("login 8", "login 6", &hidden));
        assert!(!same_words("login __PH_0__", "login 'P@SS W'", &hidden));
    }
}
