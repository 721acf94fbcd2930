//! `python-script`: StackStorm's python actions, run unchanged.
//!
//! squall ships a small compatibility layer (`st2compat/`: the `Action` base
//! class at `st2common.runners.base_action`, and the script that runs one
//! action), written once under the user's cache directory. Each run starts
//! the pack's interpreter (its own virtualenv when the pack has a
//! `requirements.txt`, built once and cached; else `python3`) in its own
//! process group, or takes one started ahead of it (`warm`):
//! - what to run, the parameters and the pack config go in on stdin (never
//!   on a command line where `ps` shows them);
//! - the outcome comes back in a result file: the returned value, or
//!   StackStorm's `(succeeded, result)` tuple;
//! - `self.action_service` reads and writes squall's datastore through a
//!   Unix socket that lives as long as the run;
//! - timeout and cancel kill the whole process group, as for the shell runners.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

mod warm;

use super::process::{ProcessSpec, supervise};
use super::{RunContext, RunOutcome, Runner, runner_param};
use crate::datastore::{Datastore, KvSet, SYSTEM};
use crate::execution::ExecutionStatus;
use crate::pack::ParamSpec;
use crate::runner::Retry;

/// The compatibility layer, path relative to its root and contents.
const COMPAT: &[(&str, &str)] = &[
    (
        "squall_python_action.py",
        include_str!("st2compat/squall_python_action.py"),
    ),
    (
        "st2common/__init__.py",
        include_str!("st2compat/st2common/__init__.py"),
    ),
    (
        "st2common/runners/__init__.py",
        include_str!("st2compat/st2common/runners/__init__.py"),
    ),
    (
        "st2common/runners/base_action.py",
        include_str!("st2compat/st2common/runners/base_action.py"),
    ),
    (
        "st2common/exceptions/__init__.py",
        include_str!("st2compat/st2common/exceptions/__init__.py"),
    ),
    (
        "st2common/exceptions/action.py",
        include_str!("st2compat/st2common/exceptions/action.py"),
    ),
    (
        "st2common/exceptions/actionrunner.py",
        include_str!("st2compat/st2common/exceptions/actionrunner.py"),
    ),
    (
        "st2common/exceptions/param.py",
        include_str!("st2compat/st2common/exceptions/param.py"),
    ),
    (
        "st2common/exceptions/keyvalue.py",
        include_str!("st2compat/st2common/exceptions/keyvalue.py"),
    ),
    (
        "st2common/exceptions/db.py",
        include_str!("st2compat/st2common/exceptions/db.py"),
    ),
    (
        "st2common/exceptions/content.py",
        include_str!("st2compat/st2common/exceptions/content.py"),
    ),
    (
        "st2actions/__init__.py",
        include_str!("st2compat/st2actions/__init__.py"),
    ),
    (
        "st2actions/runners/__init__.py",
        include_str!("st2compat/st2actions/runners/__init__.py"),
    ),
    (
        "st2actions/runners/pythonrunner.py",
        include_str!("st2compat/st2actions/runners/pythonrunner.py"),
    ),
];

/// Runner parameters (StackStorm's python-script runner's), not passed to
/// the action's `run()`.
const RUNNER_PARAMS: [&str; 5] = ["env", "timeout", "log_level", "debug", "content_version"];

/// How long building a pack's virtualenv may take.
const VENV_TIMEOUT: Duration = Duration::from_secs(900);

pub struct PythonScript {
    warm: warm::WarmPool,
}

impl PythonScript {
    /// The runner, keeping `warm` interpreters ready per pack interpreter
    /// that has run (0: every run starts its own).
    pub fn new(warm: usize) -> Self {
        Self {
            warm: warm::WarmPool::new(warm),
        }
    }
}

#[async_trait::async_trait]
impl Runner for PythonScript {
    fn name(&self) -> &'static str {
        "python-script"
    }

    fn traits(&self) -> super::RunnerTraits {
        super::RunnerTraits {
            process: true,
            reads_pack_config: true,
            ..Default::default()
        }
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        BTreeMap::from([
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
                    Some(json!(600)),
                    "Seconds before the interpreter's process group is killed.",
                ),
            ),
            (
                "log_level".to_owned(),
                runner_param(
                    json!({"type": "string", "enum": ["AUDIT", "CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]}),
                    Some(json!("DEBUG")),
                    "Level of the action's logger (its lines go to stderr).",
                ),
            ),
            (
                "content_version".to_owned(),
                runner_param(
                    json!({"type": "string"}),
                    None,
                    "Accepted for StackStorm compatibility (squall runs the pack as loaded).",
                ),
            ),
            (
                "debug".to_owned(),
                runner_param(
                    json!({"type": "boolean"}),
                    Some(json!(false)),
                    "Accepted for StackStorm compatibility.",
                ),
            ),
        ])
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        prepare_and_run(&ctx, &self.warm)
            .await
            .unwrap_or_else(|refused| refused)
    }
}

/// The run's outcome; `Err` when it failed before the action started.
async fn prepare_and_run(
    ctx: &RunContext,
    pool: &warm::WarmPool,
) -> Result<RunOutcome, RunOutcome> {
    let script =
        ctx.action.entry_point.clone().ok_or_else(|| {
            RunOutcome::refused("the action has no entry_point (its python file)")
        })?;
    let script = std::fs::canonicalize(&script)
        .map_err(|e| RunOutcome::refused(format!("entry_point {}: {e}", script.display())))?;
    let pack_dir = pack_dir_of(&ctx.action.file).map_err(RunOutcome::refused)?;
    let compat = compat_dir().map_err(RunOutcome::unavailable)?;
    let python = interpreter(&pack_dir, &ctx.action.pack)
        .await
        .map_err(|e| RunOutcome::failed(e.message).retry(e.retry))?;
    // Checked against config.schema.yaml when the pack loaded.
    let config = ctx
        .host
        .catalog
        .current()
        .pack_config(&ctx.action.pack)
        .map_or_else(|| json!({}), |c| c.values.clone());

    let run_dir = RunDir::create().map_err(RunOutcome::unavailable)?;
    let socket = run_dir.path.join("service.sock");
    let listener = tokio::net::UnixListener::bind(&socket).map_err(|e| {
        RunOutcome::unavailable(format!("could not open the action service socket: {e}"))
    })?;
    // `scope="user"` values belong to whom the execution runs for.
    let service = tokio::spawn(serve_action_service(
        listener,
        ctx.host.datastore.clone(),
        ctx.user.clone(),
    ));

    let parameters: Map<String, Value> = ctx
        .parameters
        .iter()
        .filter(|(name, _)| !RUNNER_PARAMS.contains(&name.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let result_file = run_dir.path.join("result.json");
    let input = json!({
        "entry_point": script,
        "parameters": parameters,
        "config": config,
        "pack": ctx.action.pack,
        "service_socket": socket,
        "result_file": result_file,
        "cwd": script.parent(),
        "env": {
            "ST2_ACTION_PACK_NAME": ctx.action.pack,
            "ST2_ACTION_EXECUTION_ID": ctx.execution_id,
        },
        "log_level": ctx.param_str("log_level").unwrap_or("DEBUG"),
    });
    let mut spec = ProcessSpec {
        program: python.display().to_string(),
        args: vec![compat.join("squall_python_action.py").display().to_string()],
        env: BTreeMap::from([
            ("PYTHONPATH".to_owned(), compat.display().to_string()),
            ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
            // No __pycache__ written into pack directories (read-only, shared
            // or under version control).
            ("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()),
        ]),
        cwd: None,
        timeout: ctx.timeout(),
        stdin: None,
    };
    let extra_env = match ctx.parameters.get("env") {
        Some(Value::Object(extra)) if !extra.is_empty() => Some(extra),
        _ => None,
    };
    // The `env` parameter can change how the interpreter starts
    // (PYTHONPATH, LD_PRELOAD, ...): such a run starts its own.
    let spare = extra_env.is_none().then(|| pool.take(&spec)).flatten();
    let child = match spare {
        Some(child) => child,
        None => {
            // As StackStorm starts it: in the action's directory (a relative
            // PYTHONPATH in `env` resolves there).
            spec.cwd = script.parent().map(Path::to_path_buf);
            for (k, v) in extra_env.into_iter().flatten() {
                spec.env.insert(k.clone(), super::shell::value_to_arg(v));
            }
            spec.start(true)
                .map_err(|e| RunOutcome::failed(e.message).retry(e.retry))?
        }
    };
    let process = supervise(
        child,
        Some(input.to_string().into_bytes()),
        spec.timeout,
        ctx.limits,
        &ctx.cancel,
        &ctx.output,
    )
    .await;
    service.abort();

    let reported: Option<Value> = std::fs::read_to_string(&result_file)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let (status, error) = match (&process.status, &reported) {
        (ExecutionStatus::Timeout | ExecutionStatus::Canceled, _) => {
            (process.status, process.error.clone())
        }
        (_, Some(r)) if r["succeeded"] == true => (ExecutionStatus::Succeeded, None),
        (_, Some(r)) => (
            ExecutionStatus::Failed,
            Some(
                r["result"]["error"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| "the action reported failure".to_owned()),
            ),
        ),
        (_, None) => (
            ExecutionStatus::Failed,
            Some(
                process
                    .error
                    .clone()
                    .unwrap_or_else(|| "the action ended without reporting a result".to_owned()),
            ),
        ),
    };
    let result = reported
        .as_ref()
        .map_or(Value::Null, |r| r["result"].clone());
    Ok(RunOutcome {
        result: json!({
            "result": result,
            "exit_code": process.exit_code,
            "stdout": process.stdout,
            "stderr": process.stderr,
        }),
        status,
        stdout: process.stdout,
        stderr: process.stderr,
        exit_code: process.exit_code,
        error,
        retry: process.retry,
    })
}

/// `<pack>/actions/<name>.yaml` -> `<pack>`.
fn pack_dir_of(action_file: &Path) -> Result<PathBuf, String> {
    action_file
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no pack directory above {}", action_file.display()))
}

/// A private directory for one run (socket, result file), removed after it.
struct RunDir {
    path: PathBuf,
}

/// Longest temporary directory a run directory goes under: a Unix socket path
/// (`<dir>/squall-py-<id>/service.sock`) must fit in 108 bytes.
const MAX_TMP_DIR_LEN: usize = 60;

impl RunDir {
    fn create() -> Result<RunDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let tmp = std::env::temp_dir();
        let base = if tmp.as_os_str().len() <= MAX_TMP_DIR_LEN {
            tmp
        } else {
            PathBuf::from("/tmp")
        };
        let path = base.join(format!("squall-py-{}", crate::execution::new_id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("could not create {}: {e}", path.display()))?;
        Ok(RunDir { path })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The compatibility layer, written once per version under the cache and
/// looked up once per process.
fn compat_dir() -> Result<PathBuf, String> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir.clone());
    }
    let dir = write_compat_dir()?;
    Ok(DIR.get_or_init(|| dir).clone())
}

fn write_compat_dir() -> Result<PathBuf, String> {
    let mut hasher = Sha256::new();
    for (path, text) in COMPAT {
        hasher.update(path.as_bytes());
        hasher.update(text.as_bytes());
    }
    let hash = hex::encode(hasher.finalize());
    let base = crate::pack::builtin::squall_cache_dir().map_err(|e| e.reason)?;
    let dir = base.join(format!("python-compat-{}", &hash[..16]));
    let done = dir.join(".complete");
    if done.is_file() {
        return Ok(dir);
    }
    let staging = base.join(format!(
        "python-compat-{}.{}",
        &hash[..16],
        crate::execution::new_id()
    ));
    let write = || -> std::io::Result<()> {
        for (path, text) in COMPAT {
            let file = staging.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(file, text)?;
        }
        std::fs::write(staging.join(".complete"), "")?;
        Ok(())
    };
    write().map_err(|e| format!("could not write the python compatibility layer: {e}"))?;
    // Another process may have finished first: theirs is as good as ours.
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    if done.is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "the python compatibility layer is missing from {}",
            dir.display()
        ))
    }
}

/// Build (or find) the virtualenv of the pack in `pack_dir` ahead of its first run
/// (`squall pack install`): the python its actions will run with.
pub async fn prepare_pack(pack_dir: &Path, pack: &str) -> Result<PathBuf, String> {
    interpreter(pack_dir, pack).await.map_err(|e| e.message)
}

/// A pack's virtualenv that could not be built.
struct VenvError {
    message: String,
    retry: Retry,
}

impl VenvError {
    /// Something on this machine failed (a directory, a missing python3): fix it first.
    fn local(message: String) -> Self {
        Self {
            message,
            retry: Retry::WontHelp,
        }
    }
}

/// The pack's python: its own virtualenv when it has a `requirements.txt`
/// (built on first use, cached by the file's hash), else `python3`.
async fn interpreter(pack_dir: &Path, pack: &str) -> Result<PathBuf, VenvError> {
    let requirements = pack_dir.join("requirements.txt");
    let Ok(wanted) = std::fs::read(&requirements) else {
        return Ok(PathBuf::from("python3"));
    };
    let hash = hex::encode(Sha256::digest(&wanted));
    let base = crate::pack::builtin::squall_cache_dir().map_err(|e| VenvError::local(e.reason))?;
    let venv = base
        .join("virtualenvs")
        .join(format!("{pack}-{}", &hash[..16]));
    let python = venv.join("bin").join("python");
    let done = venv.join(".squall-complete");
    if done.is_file() {
        return Ok(python);
    }
    // One build at a time in this process; a finished one is reused.
    static BUILDING: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    let _turn = BUILDING
        .get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await;
    if done.is_file() {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| VenvError::local(format!("{}: {e}", parent.display())))?;
    }
    let venv_text = venv.display().to_string();
    run_setup(pack, "python3", &["-m", "venv", &venv_text]).await?;
    let req_text = requirements.display().to_string();
    run_setup(
        pack,
        &python.display().to_string(),
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            &req_text,
        ],
    )
    .await?;
    std::fs::write(&done, "").map_err(|e| VenvError::local(format!("{}: {e}", done.display())))?;
    tracing::info!(pack, venv = %venv.display(), "built the pack's virtualenv");
    Ok(python)
}

/// One step of building a virtualenv; a failure says what pip said, and
/// whether it looks like the network (may pass) or the requirements (will not).
async fn run_setup(pack: &str, program: &str, args: &[&str]) -> Result<(), VenvError> {
    let mut command = tokio::process::Command::new(program);
    command.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(VENV_TIMEOUT, command.output())
        .await
        .map_err(|_| VenvError {
            message: format!(
                "pack {pack}: building its virtualenv took over {} s and was stopped",
                VENV_TIMEOUT.as_secs()
            ),
            retry: Retry::MayHelp,
        })?
        .map_err(|e| VenvError::local(format!("pack {pack}: could not run {program}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
    Err(VenvError {
        retry: pip_failure_retry(&stderr),
        message: format!(
            "pack {pack}: building its virtualenv from requirements.txt failed ({} {}): {}",
            program,
            args.join(" "),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ),
    })
}

/// pip's words for a package index it could not reach (the next try may),
/// as opposed to requirements that cannot be met (no try will).
fn pip_failure_retry(stderr: &str) -> Retry {
    const NETWORK: [&str; 7] = [
        "Temporary failure in name resolution",
        "Failed to establish a new connection",
        "Connection refused",
        "Read timed out",
        "Connection reset",
        "NewConnectionError",
        "ConnectTimeoutError",
    ];
    if NETWORK.iter().any(|word| stderr.contains(word)) {
        Retry::MayHelp
    } else {
        Retry::WontHelp
    }
}

/// Answer `action_service` calls from the running action: one JSON request
/// per line, one JSON answer per line.
async fn serve_action_service(
    listener: tokio::net::UnixListener,
    datastore: Arc<Datastore>,
    user: Option<String>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let datastore = datastore.clone();
        let user = user.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match serde_json::from_str::<Value>(&line) {
                    Ok(request) => {
                        match service_call(&datastore, user.as_deref(), &request).await {
                            Ok(value) => json!({"ok": true, "value": value}),
                            Err(error) => json!({"ok": false, "error": error}),
                        }
                    }
                    Err(e) => json!({"ok": false, "error": format!("not JSON: {e}")}),
                };
                let mut text = answer.to_string();
                text.push('\n');
                if write.write_all(text.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn service_call(
    datastore: &Datastore,
    user: Option<&str>,
    request: &Value,
) -> Result<Value, String> {
    let user_scope;
    let scope = match request["scope"].as_str().unwrap_or(SYSTEM) {
        SYSTEM => SYSTEM,
        "user" => match user {
            Some(user) => {
                user_scope = format!("user:{user}");
                user_scope.as_str()
            }
            None => return Err("scope \"user\": this execution runs for no user".into()),
        },
        other => return Err(format!("scope {other:?}: use \"system\" or \"user\"")),
    };
    let name = request["name"].as_str().unwrap_or_default();
    match request["op"].as_str().unwrap_or_default() {
        "get" => {
            let decrypt = request["decrypt"].as_bool().unwrap_or(false);
            match datastore.get(scope, name, decrypt).await {
                Ok(pair) => Ok(match pair.value {
                    Value::String(s) => Value::String(s),
                    other => Value::String(other.to_string()),
                }),
                Err(crate::datastore::KvError::NotFound { .. }) => Ok(Value::Null),
                Err(e) => Err(e.to_string()),
            }
        }
        "set" => {
            let value = match &request["value"] {
                Value::String(s) => Value::String(s.clone()),
                Value::Null => Value::String(String::new()),
                other => Value::String(other.to_string()),
            };
            datastore
                .set(&KvSet {
                    scope: scope.to_owned(),
                    name: name.to_owned(),
                    value,
                    secret: request["secret"].as_bool().unwrap_or(false),
                    ttl: request["ttl"].as_u64(),
                })
                .await
                .map(|_| Value::Bool(true))
                .map_err(|e| e.to_string())
        }
        "delete" => match datastore.delete(scope, name).await {
            Ok(()) => Ok(Value::Bool(true)),
            Err(crate::datastore::KvError::NotFound { .. }) => Ok(Value::Bool(false)),
            Err(e) => Err(e.to_string()),
        },
        "list" => {
            let prefix = request["prefix"].as_str().filter(|p| !p.is_empty());
            let pairs = datastore
                .list(Some(scope), prefix, false, 1000)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Value::Array(
                pairs
                    .into_iter()
                    .map(|p| json!({"name": p.name, "value": p.value, "secret": p.secret}))
                    .collect(),
            ))
        }
        other => Err(format!("unknown operation {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_failures_say_whether_a_retry_can_help() {
        let unreachable = "WARNING: Retrying (Retry(total=4)) after connection broken by \
            'NewConnectionError(...: Failed to establish a new connection: [Errno 111] Connection refused')";
        assert_eq!(pip_failure_retry(unreachable), Retry::MayHelp);
        let no_such = "ERROR: Could not find a version that satisfies the requirement nope==1\n\
            ERROR: No matching distribution found for nope==1";
        assert_eq!(pip_failure_retry(no_such), Retry::WontHelp);
    }

    #[test]
    fn the_service_socket_path_fits_a_unix_socket() {
        let dir = RunDir::create().unwrap();
        let socket = dir.path.join("service.sock");
        assert!(socket.as_os_str().len() < 108, "{}", socket.display());
        assert!(dir.path.is_dir());
    }
}
