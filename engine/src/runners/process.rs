//! Child processes for the shell runners: own process group, argv/env only,
//! capped output with a truncation marker, and timeout/cancel that kill the
//! whole group (a shell's grandchildren included).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::output::{LineSplitter, OutputSink};
use crate::execution::ExecutionStatus;
use crate::runner::{OutputLimits, Retry};

/// What to start: a program and its arguments, never a spliced string.
#[derive(Clone)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub timeout: Duration,
    /// Written to the child's stdin, which is then closed (else stdin is
    /// empty). How parameters reach a process without showing in `ps`.
    pub stdin: Option<Vec<u8>>,
}

/// How a process ended.
pub struct ProcessOutcome {
    pub status: ExecutionStatus,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub error: Option<String>,
    /// Set when the process could not start: whether that may pass.
    pub retry: Option<Retry>,
}

/// Variables passed through from squall's environment to every child.
const INHERITED_ENV: [&str; 9] = [
    "PATH", "HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ",
];

/// How long to keep reading output after the main process exited, for
/// background children that still hold the pipes open.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

impl ProcessSpec {
    /// Start the process: its own process group, a minimal environment plus
    /// `env`, output piped. Its stdin is a pipe when `piped_stdin` (what
    /// [`supervise`] is given is written to it), else empty.
    pub fn start(&self, piped_stdin: bool) -> Result<Child, StartError> {
        let mut command = Command::new(&self.program);
        // Children get a minimal environment, never squall's own (which can hold
        // database URLs and tokens).
        command.env_clear();
        for name in INHERITED_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .args(&self.args)
            .envs(&self.env)
            .stdin(if piped_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        command.spawn().map_err(|err| StartError {
            // A program that is not there, or not runnable, stays so; a full
            // process table or memory may not.
            retry: match err.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    Retry::WontHelp
                }
                _ => Retry::MayHelp,
            },
            message: format!("could not start {}: {err}", self.program),
        })
    }
}

/// A process that could not start.
#[derive(Debug)]
pub struct StartError {
    pub message: String,
    pub retry: Retry,
}

/// Start `spec` and see it through: [`ProcessSpec::start`], then [`supervise`].
pub async fn run_process(
    spec: ProcessSpec,
    limits: OutputLimits,
    cancel: &CancellationToken,
    output: &OutputSink,
) -> ProcessOutcome {
    match spec.start(spec.stdin.is_some()) {
        Ok(child) => supervise(child, spec.stdin, spec.timeout, limits, cancel, output).await,
        Err(error) => ProcessOutcome {
            status: ExecutionStatus::Failed,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            error: Some(error.message),
            retry: Some(error.retry),
        },
    }
}

/// See a started process through: write `stdin` to it (then close it),
/// capture and cap its output, and kill its whole process group at `timeout`
/// or on cancel. `timeout` counts from this call, not from the start.
pub async fn supervise(
    mut child: Child,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    limits: OutputLimits,
    cancel: &CancellationToken,
    output: &OutputSink,
) -> ProcessOutcome {
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let pipe = child.stdin.take();
    if let (Some(bytes), Some(mut pipe)) = (stdin, pipe) {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // A child that exits without reading makes this fail: harmless.
            let _ = pipe.write_all(&bytes).await;
        });
    }
    let stdout = tokio::spawn(read_capped(
        child.stdout.take(),
        limits.max_bytes,
        output.clone(),
        "stdout",
    ));
    let stderr = tokio::spawn(read_capped(
        child.stderr.take(),
        limits.max_bytes,
        output.clone(),
        "stderr",
    ));

    let (status, exit_code, error) = tokio::select! {
        waited = child.wait() => match waited {
            Ok(code) => {
                let exit = code.code();
                if code.success() {
                    (ExecutionStatus::Succeeded, exit, None)
                } else {
                    let reason = match exit {
                        Some(c) => format!("exited with code {c}"),
                        None => "killed by a signal".to_owned(),
                    };
                    (ExecutionStatus::Failed, exit, Some(reason))
                }
            }
            Err(err) => (ExecutionStatus::Failed, None, Some(format!("could not wait for the process: {err}"))),
        },
        () = tokio::time::sleep(timeout) => {
            kill_group(pgid);
            let _ = child.wait().await;
            (ExecutionStatus::Timeout, None, Some(format!("timed out after {timeout:?}; the process group was killed")))
        }
        () = cancel.cancelled() => {
            kill_group(pgid);
            let _ = child.wait().await;
            (ExecutionStatus::Canceled, None, Some("canceled; the process group was killed".to_owned()))
        }
    };

    let stdout = finish_reader(stdout, pgid).await;
    let stderr = finish_reader(stderr, pgid).await;
    ProcessOutcome {
        status,
        exit_code,
        stdout,
        stderr,
        error,
        retry: None,
    }
}

async fn finish_reader(reader: tokio::task::JoinHandle<String>, pgid: Option<i32>) -> String {
    let abort = reader.abort_handle();
    match tokio::time::timeout(DRAIN_GRACE, reader).await {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => String::new(),
        Err(_) => {
            // A background child kept the pipe open: stop it and keep what we have.
            kill_group(pgid);
            abort.abort();
            "[output incomplete: a background process kept the output open]".to_owned()
        }
    }
}

/// Kill the process group `pgid` leads (nothing when it is gone).
pub fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid {
        // ESRCH just means the group is already gone.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Read a stream to the end, keeping at most `max` bytes; the rest is drained
/// and counted so the child never blocks on a full pipe. What is kept is also
/// passed on line by line to `output` as it arrives.
async fn read_capped<R: AsyncRead + Unpin>(
    stream: Option<R>,
    max: usize,
    output: OutputSink,
    name: &'static str,
) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut lines = LineSplitter::new(&output, name);
    let mut kept = Vec::new();
    let mut dropped: u64 = 0;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                let take = room.min(n);
                kept.extend_from_slice(&buf[..take]);
                lines.feed(&buf[..take]);
                dropped += (n - take) as u64;
            }
        }
    }
    lines.finish();
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!("\n[output truncated: {dropped} more bytes]"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str, timeout: Duration) -> ProcessSpec {
        ProcessSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: BTreeMap::new(),
            cwd: None,
            timeout,
            stdin: None,
        }
    }

    #[tokio::test]
    async fn output_over_the_cap_is_truncated_with_a_marker() {
        let out = run_process(
            spec(
                "head -c 5000 /dev/zero | tr '\\0' a",
                Duration::from_secs(10),
            ),
            OutputLimits { max_bytes: 100 },
            &CancellationToken::new(),
            &OutputSink::default(),
        )
        .await;
        assert_eq!(out.status, ExecutionStatus::Succeeded);
        assert!(out.stdout.starts_with(&"a".repeat(100)));
        assert!(
            out.stdout.ends_with("[output truncated: 4900 more bytes]"),
            "{}",
            out.stdout
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let marker = std::env::temp_dir().join(format!("squall-grandchild-{}", ulid::Ulid::new()));
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let out = run_process(
            spec(&script, Duration::from_millis(300)),
            OutputLimits::default(),
            &CancellationToken::new(),
            &OutputSink::default(),
        )
        .await;
        assert_eq!(out.status, ExecutionStatus::Timeout);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !marker.exists(),
            "the background grandchild survived the timeout"
        );
    }

    #[tokio::test]
    async fn cancel_kills_the_process() {
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.cancel();
        });
        let out = run_process(
            spec("sleep 30", Duration::from_secs(60)),
            OutputLimits::default(),
            &cancel,
            &OutputSink::default(),
        )
        .await;
        assert_eq!(out.status, ExecutionStatus::Canceled);
    }

    #[tokio::test]
    async fn nonzero_exit_is_a_failure_with_the_code() {
        let out = run_process(
            spec("echo oops >&2; exit 3", Duration::from_secs(10)),
            OutputLimits::default(),
            &CancellationToken::new(),
            &OutputSink::default(),
        )
        .await;
        assert_eq!(out.status, ExecutionStatus::Failed);
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.stderr.trim(), "oops");
    }
}
