//! The chat adapter conformance suite: one list of cases every adapter must
//! pass, run against the real `squall` binary and the platform's own server
//! (the console: a terminal; Matrix: a real Synapse). A new adapter gets a
//! `Harness` (how a person talks to squall on that platform) and a test that
//! calls `suite`; see docs/chat.md.
//!
//! Cases: command → ack → result (in the command's thread where the platform
//! has threads); progress edits; output too long for one message; an unknown
//! command and an oversized message; votes (a reaction added and removed, a
//! button, a typed approve) and a refused self-approval; a restart of the
//! platform's server with no duplicate answers; `kill -9` of squall
//! mid-command with the final message delivered once after the restart; and
//! twenty commands in flight at a `kill -9`, each with exactly one final
//! message afterwards.

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use matrix_sdk::room::Room;
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::relation::Annotation;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedEventId, OwnedUserId};
use squall_engine::chat::{Capabilities, vote_button_id};
use squall_engine::store::Store;
use squall_tests::{eventually, free_port, pack_dirs_env, repo_root, squall_binary, wait_http_ok};

use crate::matrix::{Human, MatrixEnv, ONE_AT_A_TIME, bot_joined, matrix_env, synapse_ctl};

/// Output longer than this is cut in results (set for the suite).
const TAIL: usize = 100;
/// How long any one thing may take to show up in chat.
const WAIT: Duration = Duration::from_secs(60);

/// Something squall said, as the person in the channel sees it.
#[derive(Debug, Clone)]
pub(crate) struct Said {
    /// The platform's message id (empty where it has none).
    pub(crate) id: String,
    pub(crate) text: String,
    /// The thread it is in.
    pub(crate) thread: Option<String>,
    /// An edit of an earlier message.
    pub(crate) edit: bool,
    /// The ids of the buttons under it.
    pub(crate) buttons: Vec<String>,
}

/// How a person talks to squall on one platform, and how to start and kill
/// the squall serving it.
pub(crate) trait Harness {
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// Start `squall serve` for this platform (again, after `kill9`).
    async fn start(&mut self) -> Result<()>;
    /// SIGKILL: no shutdown code runs.
    fn kill9(&mut self) -> Result<()>;
    /// The requester types `text`; returns the message's id (if any).
    async fn say(&mut self, text: &str) -> Result<String>;
    /// A second person, allowed to approve, types `text`.
    async fn say_as_approver(&mut self, text: &str) -> Result<()>;
    /// Everything squall said to the requester's channel so far, in order.
    fn said(&self) -> Vec<Said>;
    /// React to a message; returns the reaction's id.
    async fn react(&mut self, approver: bool, message_id: &str, emoji: &str) -> Result<String>;
    async fn unreact(&mut self, approver: bool, reaction: &str) -> Result<()>;
    /// Press a button under a message (platforms with buttons).
    async fn press(&mut self, _approver: bool, _message: &Said, _button: &str) -> Result<()> {
        bail!("{} has no buttons", self.name())
    }
    /// Restart the platform's server (or, without one, squall, gracefully).
    async fn restart_platform(&mut self) -> Result<()>;
    /// The database squall uses (to see its outbox drained).
    fn database_url(&self) -> String;
}

pub(crate) fn ids(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\b[0-9A-HJKMNP-TV-Z]{26}\b").expect("regex");
    re.find_iter(text).map(|m| m.as_str().to_owned()).collect()
}

pub(crate) async fn wait_said<H: Harness>(
    h: &H,
    what: &str,
    pred: impl Fn(&Said) -> bool,
) -> Result<Said> {
    eventually(WAIT, &format!("{}: {what}", h.name()), || {
        let found = h.said().into_iter().find(|s| pred(s));
        async move { Ok(found) }
    })
    .await
    .with_context(|| format!("squall said:\n{:#?}", h.said()))
}

pub(crate) fn position<H: Harness>(h: &H, pred: impl Fn(&Said) -> bool) -> Option<usize> {
    h.said().iter().position(pred)
}

/// The final message of execution `id` (its result, or that it was
/// abandoned): the title `<id> <action> <status>`.
pub(crate) fn is_final(s: &Said, id: &str) -> bool {
    !s.edit
        && regex::Regex::new(&format!(
            r"{id}\**\s+\S+\s+(succeeded|failed|timeout|canceled|abandoned)"
        ))
        .is_ok_and(|re| re.is_match(&s.text))
}

pub(crate) fn is_ack(s: &Said, action: &str) -> bool {
    !s.edit && s.text.contains(&format!("Running {action} as execution"))
}

/// Wait until squall has nothing left to send: every outbox row is sent,
/// refused or skipped. After that no message can still arrive late.
pub(crate) async fn outbox_drained(url: &str) -> Result<()> {
    let store = Store::connect(url).await?;
    eventually(WAIT, "the chat outbox to drain", || {
        let store = store.clone();
        async move {
            let unsent = store.chat_messages_unsent().await?;
            Ok(unsent.is_empty().then_some(()))
        }
    })
    .await
}

/// Every case, in order, against one platform.
pub(crate) async fn suite<H: Harness>(h: &mut H) -> Result<()> {
    let caps = h.capabilities();
    h.start().await?;

    // Command → ack → result, in the command's thread where there are threads.
    let command = h.say("!say conformance-hello").await?;
    let ack = wait_said(h, "the ack", |s| is_ack(s, "testing.say")).await?;
    let id = ids(&ack.text).pop().context("an execution id in the ack")?;
    let result = wait_said(h, "the result", |s| is_final(s, &id)).await?;
    assert!(result.text.contains("succeeded"), "{result:?}");
    assert!(result.text.contains("conformance-hello"), "{result:?}");
    assert!(
        position(h, |s| is_ack(s, "testing.say")) < position(h, |s| is_final(s, &id)),
        "the ack comes before the result"
    );
    if caps.threads {
        assert_eq!(ack.thread.as_deref(), Some(command.as_str()), "{ack:?}");
        assert_eq!(
            result.thread.as_deref(),
            Some(command.as_str()),
            "{result:?}"
        );
    }

    // Progress: a slow command's ack is edited with the time so far.
    if caps.edits {
        h.say("!sleep 3").await?;
        let ack = wait_said(h, "the sleep's ack", |s| is_ack(s, "testing.sleep")).await?;
        let id = ids(&ack.text).pop().context("an execution id")?;
        let probe = id.clone();
        wait_said(h, "a progress edit", move |s| {
            s.edit && s.text.contains(&format!("{probe} is running ("))
        })
        .await?;
        wait_said(h, "the sleep's result", |s| is_final(s, &id)).await?;
    }

    // Output too long for one message: the tail, and how to get the rest.
    h.say(&format!("!say {}END", "x".repeat(300))).await?;
    let long = wait_said(h, "the cut result", |s| {
        !s.edit && s.text.contains("Output truncated")
    })
    .await?;
    let id = ids(&long.text).pop().context("an execution id")?;
    assert!(
        long.text.contains(&format!(
            "last {TAIL} characters; `!status {id}` shows all of it"
        )),
        "{long:?}"
    );
    assert!(long.text.contains("END"), "{long:?}");

    // An unknown command and an oversized message are answered politely.
    h.say("!frobnicate the widgets").await?;
    wait_said(h, "the unknown-command answer", |s| {
        s.text.contains("I don't know that command")
    })
    .await?;
    h.say(&format!("!say {}", "y".repeat(5000))).await?;
    wait_said(h, "the oversized-message answer", |s| {
        s.text.contains("commands are limited to 4000 bytes")
    })
    .await?;

    // Votes: the requester may not approve their own request; an approver's
    // reaction is a vote, its removal withdraws it; a typed deny decides.
    h.say("!release web to production approvers=2").await?;
    let prompt = wait_said(h, "the approval prompt", |s| {
        !s.edit && s.text.contains("Approval needed: examples.release")
    })
    .await?;
    let inquiry = ids(&prompt.text)
        .into_iter()
        .next()
        .context("the inquiry id in the prompt")?;
    if caps.reactions {
        h.react(false, &prompt.id, "✅").await?;
    } else {
        h.say(&format!("!approve {inquiry}")).await?;
    }
    wait_said(h, "the refused self-approval", |s| {
        s.text.contains("was refused") && s.text.contains("cannot approve it")
    })
    .await?;
    if caps.reactions {
        let reaction = h.react(true, &prompt.id, "✅").await?;
        let probe = inquiry.clone();
        wait_said(h, "the reaction's vote", move |s| {
            s.text
                .contains(&format!("approved {probe} (1 of 2 approvals)"))
        })
        .await?;
        h.unreact(true, &reaction).await?;
        let probe = inquiry.clone();
        wait_said(h, "the vote withdrawn", move |s| {
            s.text.contains(&format!(
                "withdrew their vote on {probe} (0 of 2 approvals)"
            ))
        })
        .await?;
    }
    if caps.buttons {
        // A click is a vote by whoever clicked: the requester's is refused,
        // the approver's counts.
        let refusals = |h: &H| {
            h.said()
                .iter()
                .filter(|s| s.text.contains("was refused") && s.text.contains("cannot approve it"))
                .count()
        };
        let approvals = |h: &H, probe: &str| {
            h.said()
                .iter()
                .filter(|s| {
                    s.text
                        .contains(&format!("approved {probe} (1 of 2 approvals)"))
                })
                .count()
        };
        let (refused_before, approved_before) = (refusals(h), approvals(h, &inquiry));
        let approve = vote_button_id(&inquiry, true);
        assert!(prompt.buttons.contains(&approve), "{prompt:?}");
        h.press(false, &prompt, &approve).await?;
        eventually(WAIT, "the refused click", || {
            let n = refusals(h);
            async move { Ok((n > refused_before).then_some(())) }
        })
        .await?;
        h.press(true, &prompt, &approve).await?;
        let probe = inquiry.clone();
        eventually(WAIT, "the click's vote", || {
            let n = approvals(h, &probe);
            async move { Ok((n > approved_before).then_some(())) }
        })
        .await?;
    }
    h.say_as_approver(&format!("!deny {inquiry} conformance"))
        .await?;
    let decided = wait_said(h, "the decision on the prompt", |s| {
        s.text.contains("Denied by") && s.text.contains("Reason: conformance")
    })
    .await?;
    if caps.edits {
        assert!(decided.edit, "the prompt is edited: {decided:?}");
        assert!(
            decided.buttons.is_empty(),
            "no buttons after the decision: {decided:?}"
        );
    }

    // The platform's server restarts: squall reconnects and answers once.
    h.restart_platform().await?;
    h.say("!say after-restart").await?;
    let after = wait_said(h, "the answer after the restart", |s| {
        !s.edit && s.text.contains("after-restart") && s.text.contains("succeeded")
    })
    .await?;
    let id = ids(&after.text).pop().context("an execution id")?;
    outbox_drained(&h.database_url()).await?;
    let finals: Vec<Said> = h.said().into_iter().filter(|s| is_final(s, &id)).collect();
    assert_eq!(finals.len(), 1, "one answer after the restart: {finals:#?}");

    // kill -9 mid-command: after the restart, the final message, once.
    h.say("!sleep 4").await?;
    let before = position(h, |s| is_ack(s, "testing.sleep")).unwrap_or(0);
    let probe = before;
    let ack = eventually(WAIT, "the second sleep's ack", || {
        let found = h
            .said()
            .into_iter()
            .enumerate()
            .filter(|(i, s)| *i > probe && is_ack(s, "testing.sleep"))
            .map(|(_, s)| s)
            .last();
        async move { Ok(found) }
    })
    .await?;
    let id = ids(&ack.text).pop().context("an execution id")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.kill9()?;
    h.start().await?;
    let abandoned = wait_said(h, "the abandoned notice", |s| is_final(s, &id)).await?;
    assert!(
        abandoned.text.contains("abandoned when squall stopped")
            && abandoned.text.contains(&format!("!retry {id}")),
        "{abandoned:?}"
    );
    outbox_drained(&h.database_url()).await?;
    let finals = h.said().into_iter().filter(|s| is_final(s, &id)).count();
    assert_eq!(finals, 1, "one final message after kill -9");

    twenty_in_flight(h).await
}

/// Twenty commands in flight (ten fast, ten slow) at a `kill -9`: after
/// the restart, every acknowledged command has exactly one final message.
async fn twenty_in_flight<H: Harness>(h: &mut H) -> Result<()> {
    let seen_before = h.said().len();
    for n in 0..10 {
        h.say(&format!("!say burst-{n}")).await?;
        h.say("!sleep 3").await?;
    }
    let acks = eventually(WAIT, "twenty acks", || {
        let acks: Vec<String> = h.said()[seen_before..]
            .iter()
            .filter(|s| is_ack(s, "testing.say") || is_ack(s, "testing.sleep"))
            .filter_map(|s| ids(&s.text).pop())
            .collect();
        async move { Ok((acks.len() >= 20).then_some(acks)) }
    })
    .await
    .with_context(|| format!("squall said:\n{:#?}", &h.said()[seen_before..]))?;
    h.kill9()?;
    h.start().await?;
    for id in &acks {
        wait_said(h, &format!("the final message of {id}"), |s| {
            is_final(s, id)
        })
        .await?;
    }
    outbox_drained(&h.database_url()).await?;
    let said = h.said();
    for id in &acks {
        let finals = said.iter().filter(|s| is_final(s, id)).count();
        assert_eq!(finals, 1, "{}: {id} has {finals} final messages", h.name());
    }
    eprintln!(
        "{}: {} commands acknowledged before kill -9, each with one final message",
        h.name(),
        acks.len()
    );
    Ok(())
}

/// `squall serve` for the suite: SQLite in `data`, the repository's packs,
/// the test RBAC, results cut at `TAIL`, progress every second.
/// A firing alert's notices reach `channel` (e.g. `slack:C0123`) threaded
/// under the firing notice: the diagnosis, the approval prompt (approved
/// with a ✅ by the approver), the cleanup, and the resolved notice. `base`
/// and `key` are squall's API address and admin key.
pub(crate) async fn alert_notices_threaded<H: Harness>(
    h: &mut H,
    base: &str,
    key: &str,
    channel: &str,
) -> Result<()> {
    let disk = tempfile::tempdir()?;
    std::fs::write(disk.path().join("old.tmp"), "x")?;
    let alert = |status: &str| {
        let mut a = serde_json::json!({
            "status": status,
            "labels": {"alertname": "HighDiskUsage", "instance": "db7:9100"},
            "annotations": {"summary": "/var is 95% full on db7", "cleanup_path": disk.path(),
                            "chat_channel": channel},
            "startsAt": "2026-12-03T10:00:00Z", "fingerprint": format!("{channel}-d7"),
        });
        if status == "resolved" {
            a["endsAt"] = serde_json::json!(chrono::Utc::now().to_rfc3339());
        }
        serde_json::json!({"version": "4", "status": status, "receiver": "squall",
                           "groupKey": "{}:{}", "alerts": [a]})
    };
    let post = |body: serde_json::Value| {
        let (url, key) = (
            format!("{base}/api/v1/alerts/alertmanager"),
            key.trim().to_owned(),
        );
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await?
                .error_for_status()
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }
    };
    post(alert("firing")).await?;
    let firing = wait_said(&*h, "the firing notice", |s| {
        !s.edit && s.text.contains("HighDiskUsage firing on db7:9100")
    })
    .await?;
    assert_eq!(firing.thread, None, "the firing notice starts the thread");
    let root = firing.id.clone();
    let in_thread = async |h: &H, what: &str, text: &str| {
        let said = wait_said(h, what, |s| !s.edit && s.text.contains(text)).await?;
        assert_eq!(
            said.thread.as_deref(),
            Some(root.as_str()),
            "{what}: {said:?}"
        );
        Ok::<Said, anyhow::Error>(said)
    };
    in_thread(
        &*h,
        "the diagnosis",
        "Diagnosis on db7:9100: 1 temporary files",
    )
    .await?;
    let prompt = in_thread(
        &*h,
        "the prompt",
        "Approval needed: remediation.disk_remediate",
    )
    .await?;
    h.react(true, &prompt.id, "✅").await?;
    in_thread(
        &*h,
        "the cleanup",
        "Cleanup done on db7:9100: removed 1 temporary files",
    )
    .await?;
    assert!(!disk.path().join("old.tmp").exists());
    post(alert("resolved")).await?;
    in_thread(
        &*h,
        "the resolved notice",
        "Resolved: HighDiskUsage on db7:9100",
    )
    .await?;
    Ok(())
}

pub(crate) fn serve(
    data: &std::path::Path,
    args: &[&str],
    env: &[(String, String)],
) -> Result<(Child, String)> {
    let port = free_port()?;
    let child = Command::new(squall_binary()?)
        .arg("serve")
        .args(args)
        .env("SQUALL_LISTEN", format!("127.0.0.1:{port}"))
        .env("SQUALL_DATA_DIR", data)
        .env("SQUALL_PACKS", pack_dirs_env())
        .env(
            "SQUALL_CHAT__RBAC_DIR",
            repo_root().join("tests/fixtures/rbac"),
        )
        .env("SQUALL_CHAT__OUTPUT_TAIL_CHARS", TAIL.to_string())
        .env("SQUALL_CHAT__PROGRESS_SECONDS", "1")
        .env("SQUALL_CHAT__RATE_LIMIT_PER_MINUTE", "0")
        .env("SQUALL_LOG", "warn,matrix_sdk_crypto=error")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting squall serve")?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

pub(crate) async fn healthy(base: &str) -> Result<()> {
    wait_http_ok(&format!("{base}/healthz"), "squall to answer /healthz").await
}

/// Collect a child's stdout lines into `sink`, on a thread.
pub(crate) fn collect_lines(child: &mut Child, sink: Arc<Mutex<Vec<String>>>) -> Result<()> {
    let stdout = child.stdout.take().context("stdout")?;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Ok(mut sink) = sink.lock() {
                sink.push(line);
            }
        }
    });
    Ok(())
}

pub(crate) fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

// ---------------------------------------------------------------- console

/// A person at `squall serve --console` (alice), and an approver at
/// `squall chat` (carol) on the same database.
struct ConsoleHarness {
    data: tempfile::TempDir,
    squall: Option<Child>,
    stdin: Option<ChildStdin>,
    approver: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ConsoleHarness {
    fn new() -> Result<Self> {
        Ok(Self {
            data: tempfile::tempdir()?,
            squall: None,
            stdin: None,
            approver: None,
            lines: Arc::default(),
        })
    }

    fn stop_graceful(&mut self) -> Result<()> {
        if let Some(mut child) = self.squall.take() {
            // End of input ends the console session; SIGTERM the server.
            self.stdin = None;
            Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for ConsoleHarness {
    fn drop(&mut self) {
        kill(&mut self.squall);
        kill(&mut self.approver);
    }
}

/// Console output lines to messages: `squall> ` starts one, `squall (edit
/// out-N)> ` an edit, two spaces continue the last.
fn console_said(lines: &[String]) -> Vec<Said> {
    let mut said: Vec<Said> = Vec::new();
    for line in lines {
        if let Some(text) = line.strip_prefix("squall> ") {
            said.push(Said {
                id: String::new(),
                text: text.to_owned(),
                thread: None,
                edit: false,
                buttons: Vec::new(),
            });
        } else if line.starts_with("squall (edit ")
            && let Some((_, text)) = line.split_once(")> ")
        {
            said.push(Said {
                id: String::new(),
                text: text.to_owned(),
                thread: None,
                edit: true,
                buttons: Vec::new(),
            });
        } else if let Some(more) = line.strip_prefix("  ")
            && let Some(last) = said.last_mut()
        {
            last.text.push('\n');
            last.text.push_str(more);
        }
    }
    said
}

fn type_line(stdin: &mut Option<ChildStdin>, text: &str) -> Result<()> {
    let stdin = stdin.as_mut().context("the console is not running")?;
    // A terminal is a conversation with squall: no prefix needed, but a
    // typed prefix is fine too.
    writeln!(stdin, "{text}")?;
    stdin.flush()?;
    Ok(())
}

impl Harness for ConsoleHarness {
    fn name(&self) -> &'static str {
        "console"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edits: true,
            ..Capabilities::default()
        }
    }

    async fn start(&mut self) -> Result<()> {
        let (mut child, base) = serve(self.data.path(), &["--console", "--user", "alice"], &[])?;
        collect_lines(&mut child, self.lines.clone())?;
        self.stdin = child.stdin.take();
        self.squall = Some(child);
        healthy(&base).await?;
        Ok(())
    }

    fn kill9(&mut self) -> Result<()> {
        let mut child = self.squall.take().context("squall is not running")?;
        child.kill()?;
        child.wait()?;
        self.stdin = None;
        Ok(())
    }

    async fn say(&mut self, text: &str) -> Result<String> {
        type_line(&mut self.stdin, text)?;
        Ok(String::new())
    }

    async fn say_as_approver(&mut self, text: &str) -> Result<()> {
        // carol at `squall chat` beside the server, only for this: its
        // workers would otherwise run alice's commands too (and a kill -9
        // of the server would not stop them).
        let mut approver = Command::new(squall_binary()?)
            .args(["chat", "--user", "carol"])
            .env("SQUALL_DATA_DIR", self.data.path())
            .env(
                "SQUALL_CHAT__RBAC_DIR",
                repo_root().join("tests/fixtures/rbac"),
            )
            .env("SQUALL_PACKS", pack_dirs_env())
            .env("SQUALL_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting squall chat")?;
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        collect_lines(&mut approver, lines.clone())?;
        let mut stdin = approver.stdin.take();
        self.approver = Some(approver);
        type_line(&mut stdin, text)?;
        eventually(WAIT, "the approver's answer", || {
            let answered = lines
                .lock()
                .map(|l| {
                    console_said(&l)
                        .iter()
                        .any(|s| s.text.contains("is denied by"))
                })
                .unwrap_or(false);
            async move { Ok(answered.then_some(())) }
        })
        .await?;
        // End of input ends `squall chat`.
        drop(stdin);
        if let Some(mut approver) = self.approver.take() {
            approver.wait()?;
        }
        Ok(())
    }

    fn said(&self) -> Vec<Said> {
        self.lines
            .lock()
            .map(|l| console_said(&l))
            .unwrap_or_default()
    }

    async fn react(&mut self, _: bool, _: &str, _: &str) -> Result<String> {
        bail!("nobody can react at a terminal")
    }

    async fn unreact(&mut self, _: bool, _: &str) -> Result<()> {
        bail!("nobody can react at a terminal")
    }

    async fn restart_platform(&mut self) -> Result<()> {
        // The terminal has no server of its own: restart squall gracefully.
        self.stop_graceful()?;
        self.start().await
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.data.path().join("squall.db").display())
    }
}

#[tokio::test]
async fn console_passes_the_conformance_suite() -> Result<()> {
    let mut h = ConsoleHarness::new()?;
    suite(&mut h).await
}

// ----------------------------------------------------------------- matrix

/// alice in a room with squall on a real Synapse, carol (an approver) in it
/// too; squall configured through `SQUALL_ADAPTERS__MATRIX__*` variables.
struct MatrixHarness {
    env: MatrixEnv,
    data: tempfile::TempDir,
    squall: Option<Child>,
    base: String,
    alice: Human,
    carol: Human,
    room: Room,
    carol_room: Room,
}

impl MatrixHarness {
    async fn new() -> Result<Self> {
        let env = matrix_env()?;
        let bot: OwnedUserId = format!("@{}:localhost", env.bot_user).try_into()?;
        let alice = Human::login(&env, bot.clone()).await?;
        let carol =
            Human::login_as(&env, &env.second_user, &env.second_password, bot.clone()).await?;
        let room = alice.invite_bot(&bot, false).await?;
        let carol_room = carol.join(&env, &room).await?;
        Ok(Self {
            env,
            data: tempfile::tempdir()?,
            squall: None,
            base: String::new(),
            alice,
            carol,
            room,
            carol_room,
        })
    }
}

impl Drop for MatrixHarness {
    fn drop(&mut self) {
        kill(&mut self.squall);
    }
}

impl Harness for MatrixHarness {
    fn name(&self) -> &'static str {
        "matrix"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: true,
            edits: true,
            reactions: true,
            typing: true,
            ..Capabilities::default()
        }
    }

    async fn start(&mut self) -> Result<()> {
        let var = |k: &str, v: &str| (format!("SQUALL_ADAPTERS__MATRIX__{k}"), v.to_owned());
        let store = self.data.path().join("matrix");
        let env = [
            var("HOMESERVER", &self.env.homeserver),
            var("USER", &self.env.bot_user),
            var("PASSWORD", &self.env.bot_password),
            var("STORE_DIR", &store.display().to_string()),
            var("THREADS", "true"),
        ];
        let (mut child, base) = serve(self.data.path(), &[], &env)?;
        collect_lines(&mut child, Arc::default())?;
        self.squall = Some(child);
        healthy(&base).await?;
        self.base = base;
        let bot: OwnedUserId = format!("@{}:localhost", self.env.bot_user).try_into()?;
        bot_joined(&self.room, &bot).await
    }

    fn kill9(&mut self) -> Result<()> {
        let mut child = self.squall.take().context("squall is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    async fn say(&mut self, text: &str) -> Result<String> {
        let id = self
            .alice
            .send(&self.room, RoomMessageEventContent::text_plain(text))
            .await?;
        Ok(id.to_string())
    }

    async fn say_as_approver(&mut self, text: &str) -> Result<()> {
        self.carol
            .send(&self.carol_room, RoomMessageEventContent::text_plain(text))
            .await?;
        Ok(())
    }

    fn said(&self) -> Vec<Said> {
        let room = self.room.room_id().to_owned();
        self.alice
            .seen
            .lock()
            .map(|seen| {
                seen.iter()
                    .filter(|s| s.room == room)
                    .map(|s| Said {
                        id: s.event_id.to_string(),
                        text: s.body.clone(),
                        thread: s.thread_root.as_ref().map(ToString::to_string),
                        edit: s.is_edit,
                        buttons: Vec::new(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn react(&mut self, approver: bool, message_id: &str, emoji: &str) -> Result<String> {
        let room = if approver {
            &self.carol_room
        } else {
            &self.room
        };
        let target: OwnedEventId = message_id.try_into()?;
        let sent = room
            .send(ReactionEventContent::new(Annotation::new(
                target,
                emoji.to_owned(),
            )))
            .await?;
        Ok(sent.response.event_id.to_string())
    }

    async fn unreact(&mut self, approver: bool, reaction: &str) -> Result<()> {
        let room = if approver {
            &self.carol_room
        } else {
            &self.room
        };
        let id: OwnedEventId = reaction.try_into()?;
        room.redact(&id, None, None).await?;
        Ok(())
    }

    async fn restart_platform(&mut self) -> Result<()> {
        synapse_ctl(&self.env, "stop")?;
        synapse_ctl(&self.env, "start")?;
        Ok(())
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.data.path().join("squall.db").display())
    }
}

#[tokio::test]
async fn matrix_passes_the_conformance_suite() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut h = MatrixHarness::new().await?;
    suite(&mut h).await?;
    a_refused_message_is_marked_failed_and_later_ones_go_out(&h).await
}

/// Synapse refuses an event over 64 KiB (M_TOO_LARGE): that outbox row is
/// marked failed with the homeserver's reason, and the next one is sent.
async fn a_refused_message_is_marked_failed_and_later_ones_go_out(h: &MatrixHarness) -> Result<()> {
    let key = std::fs::read_to_string(h.data.path().join("admin-api-key"))?;
    let client = reqwest::Client::new();
    let channel = format!("matrix:{}", h.room.room_id());
    let mut executions = Vec::new();
    for message in ["z".repeat(70_000), "after the refusal".to_owned()] {
        let created: serde_json::Value = client
            .post(format!("{}/api/v1/executions", h.base))
            .bearer_auth(key.trim())
            .json(&serde_json::json!({
                "action": "chatops.post_message",
                "parameters": {"channel": channel, "message": message, "timeout": 20},
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        executions.push(
            created["id"]
                .as_str()
                .context("an execution id")?
                .to_owned(),
        );
    }
    wait_said(h, "the notice after the refused one", |s| {
        s.text.contains("after the refusal")
    })
    .await?;
    outbox_drained(&h.database_url()).await?;
    let store = Store::connect(&h.database_url()).await?;
    let refused = store.chat_messages_of(&executions[0]).await?;
    let sent = store.chat_messages_of(&executions[1]).await?;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].state, "failed", "{refused:?}");
    let reason = refused[0].error.as_deref().unwrap_or_default();
    assert!(
        reason.contains("M_TOO_LARGE") || reason.contains("too large"),
        "{reason}"
    );
    assert_eq!(sent[0].state, "sent", "{sent:?}");
    Ok(())
}
