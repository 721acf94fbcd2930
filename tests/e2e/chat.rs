//! Chat transcripts through the console adapter: the dispatcher, aliases,
//! permissions and built-in commands, end to end on a real engine.
//! Execution ids and durations are replaced by placeholders in snapshots.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use anyhow::Result;
use squall::config::ChatSection;
use squall::dispatcher::Dispatcher;
use squall_adapters::console::ConsoleAdapter;
use squall_engine::chat::{ChatAdapter, ChatEvent};
use squall_engine::rbac::Rbac;
use squall_tests::{Backend, repo_root};

use crate::server::TestServer;

/// Console output collected in memory.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for Output {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Ok(mut out) = self.0.lock() {
            out.extend_from_slice(buf);
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Output {
    fn take(&self) -> String {
        self.0
            .lock()
            .map(|mut out| String::from_utf8_lossy(&std::mem::take(&mut *out)).into_owned())
            .unwrap_or_default()
    }
}

/// One console user talking to squall.
pub(crate) struct Session {
    pub(crate) dispatcher: Arc<Dispatcher>,
    console: Arc<ConsoleAdapter>,
    output: Output,
    transcript: String,
    ids: regex::Regex,
    durations: regex::Regex,
    waits: regex::Regex,
}

impl Session {
    pub(crate) fn new(server: &TestServer, user: &str, settings: ChatSection) -> Result<Session> {
        let rbac = Rbac::load_dir(&repo_root().join("tests/fixtures/rbac"))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Self::with_rbac(server, user, settings, rbac)
    }

    pub(crate) fn with_rbac(
        server: &TestServer,
        user: &str,
        settings: ChatSection,
        rbac: Rbac,
    ) -> Result<Session> {
        let output = Output::default();
        let console = Arc::new(ConsoleAdapter::new(
            user,
            Box::new(tokio::io::BufReader::new(tokio::io::empty())),
            Box::new(output.clone()),
        ));
        let adapters: Vec<Arc<dyn ChatAdapter>> = vec![console.clone()];
        Ok(Session {
            dispatcher: Dispatcher::new(server.engine.clone(), Arc::new(rbac), adapters, settings),
            console,
            output,
            transcript: String::new(),
            ids: regex::Regex::new(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")?,
            durations: regex::Regex::new(r"in \d+ ms")?,
            waits: regex::Regex::new(r"Try again in \d+ s")?,
        })
    }

    /// Type a line and wait until everything it started has answered.
    pub(crate) async fn say(&mut self, line: &str) -> String {
        let immediate = self.send(line).await;
        self.dispatcher.wait_idle().await;
        immediate + self.collect().as_str()
    }

    /// Type a line and return once the immediate replies are out.
    pub(crate) async fn send(&mut self, line: &str) -> String {
        let shown = self.redact(line);
        self.transcript.push_str(&format!("> {shown}\n"));
        self.dispatcher
            .handle(ChatEvent::Message(self.console.incoming(line)))
            .await;
        self.dispatcher.flush().await;
        self.collect()
    }

    pub(crate) async fn settle(&mut self) -> String {
        self.dispatcher.wait_idle().await;
        self.collect()
    }

    fn redact(&self, text: &str) -> String {
        let text = self.ids.replace_all(text, "<id>");
        let text = self.durations.replace_all(&text, "in <n> ms");
        self.waits
            .replace_all(&text, "Try again in <n> s")
            .into_owned()
    }

    fn collect(&mut self) -> String {
        let raw = self.output.take();
        let redacted = self.redact(&raw);
        self.transcript.push_str(&redacted);
        raw
    }

    pub(crate) fn last_id(&self, text: &str) -> String {
        self.ids
            .find_iter(text)
            .last()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default()
    }
}

async fn server() -> Result<TestServer> {
    TestServer::start(Backend::Sqlite).await
}

#[tokio::test]
async fn help_without_any_grant_says_how_to_grant_commands() -> Result<()> {
    let server = server().await?;
    // No rbac/ directory: nobody is granted anything.
    let mut bob = Session::with_rbac(&server, "bob", ChatSection::default(), Rbac::default())?;
    let help = bob.say("help").await;
    assert!(
        help.contains("There are no commands you may run. You are console:bob"),
        "{help}"
    );
    assert!(help.contains("rbac/ directory (`chat.rbac_dir`)"), "{help}");
    assert!(help.contains("`default_role`"), "{help}");
    server.stop().await
}

#[tokio::test]
async fn help_lists_only_what_the_user_may_run() -> Result<()> {
    let server = server().await?;
    let mut alice = Session::new(&server, "alice", ChatSection::default())?;
    alice.say("whoami").await;
    alice.say("help").await;
    alice.say("help deploy").await;
    let mut bob = Session::new(&server, "bob", ChatSection::default())?;
    bob.say("whoami").await;
    bob.say("help").await;
    insta::assert_snapshot!("help_admin", alice.transcript);
    insta::assert_snapshot!("help_guest", bob.transcript);
    server.stop().await
}

#[tokio::test]
async fn aliases_take_defaults_extras_quotes_and_json() -> Result<()> {
    let server = server().await?;
    let mut alice = Session::new(&server, "alice", ChatSection::default())?;
    alice.say("deploy web").await;
    alice.say("!deploy api to production").await;
    alice.say("greet ada shout=true times=2").await;
    alice.say("say \"two words; echo injected\"").await;
    alice.say("say 'single quoted'").await;
    alice
        .say(r#"store {"a": 1, "b": [true, null]} as doc1 tags=x,y"#)
        .await;
    alice.say("greet ada times=many").await;
    insta::assert_snapshot!(alice.transcript);
    let recorded = server
        .engine
        .store
        .list_executions(&squall_engine::store::ExecutionFilter {
            action: Some("testing.store".into()),
            limit: 1,
            ..Default::default()
        })
        .await?;
    let params: serde_json::Value = serde_json::from_str(&recorded[0].parameters)?;
    assert_eq!(
        params["doc"],
        serde_json::json!({"a": 1, "b": [true, null]})
    );
    assert_eq!(params["tags"], serde_json::json!(["x", "y"]));
    let context: serde_json::Value = serde_json::from_str(&recorded[0].context)?;
    assert_eq!(context["user"], "console:alice");
    assert_eq!(context["chat"]["platform"], "console");
    server.stop().await
}

#[tokio::test]
async fn refusals_say_what_is_wrong() -> Result<()> {
    let server = server().await?;
    let mut alice = Session::new(&server, "alice", ChatSection::default())?;
    alice.say("ping host1").await;
    alice.say("count things count=3").await;
    alice.say("deploy").await;
    alice.say("deplyo web").await;
    alice.say("frobnicate the widgets").await;
    let mut bob = Session::new(&server, "bob", ChatSection::default())?;
    bob.say("deploy web").await;
    bob.say("say hello from a guest").await;
    insta::assert_snapshot!("refusals_admin", alice.transcript);
    insta::assert_snapshot!("refusals_guest", bob.transcript);
    server.stop().await
}

#[tokio::test]
async fn status_cancel_and_retry() -> Result<()> {
    let server = server().await?;
    // No progress edits of the sleep's ack in the transcript, however long
    // a busy machine takes to cancel it.
    let settings = ChatSection {
        progress_seconds: 3600,
        ..ChatSection::default()
    };
    let mut alice = Session::new(&server, "alice", settings)?;
    let done = alice.say("say first").await;
    let first = alice.last_id(&done);
    alice.say(&format!("status {first}")).await;
    alice.say(&format!("retry {first}")).await;
    alice.say("executions 2").await;
    alice.say("executions lots").await;
    let ack = alice.send("sleep 30").await;
    let sleeping = alice.last_id(&ack);
    // Cancel it while it runs (not while it is still queued).
    let engine = server.engine.clone();
    squall_tests::eventually(
        std::time::Duration::from_secs(10),
        "the sleep to start",
        || {
            let engine = engine.clone();
            let id = sleeping.clone();
            async move {
                let status = engine.store.get_execution(&id).await?.map(|m| m.status);
                Ok((status.as_deref() == Some("running")).then_some(()))
            }
        },
    )
    .await?;
    alice.send(&format!("cancel {sleeping}")).await;
    alice.settle().await;
    alice.say(&format!("cancel {sleeping}")).await;
    alice.say("status 01ZZZZZZZZZZZZZZZZZZZZZZZZ").await;
    alice.say("status").await;
    let mut bob = Session::new(&server, "bob", ChatSection::default())?;
    bob.say(&format!("cancel {sleeping}")).await;
    insta::assert_snapshot!("status_cancel_retry", alice.transcript);
    insta::assert_snapshot!("status_other_user", bob.transcript);
    let model = server
        .engine
        .store
        .get_execution(&sleeping)
        .await?
        .expect("stored");
    assert_eq!(model.status, "canceled");
    server.stop().await
}

#[tokio::test]
async fn floods_are_rate_limited_and_huge_messages_refused() -> Result<()> {
    let server = server().await?;
    let settings = ChatSection {
        rate_limit_per_minute: 3,
        max_message_bytes: 100,
        ..ChatSection::default()
    };
    let mut alice = Session::new(&server, "alice", settings)?;
    alice.say(&format!("say {}", "x".repeat(120))).await;
    for _ in 0..5 {
        alice.say("whoami").await;
    }
    insta::assert_snapshot!(alice.transcript);
    server.stop().await
}

#[tokio::test]
async fn long_output_is_cut_with_a_hint_and_slow_runs_edit_their_ack() -> Result<()> {
    let server = server().await?;
    let settings = ChatSection {
        output_tail_chars: 20,
        progress_seconds: 1,
        ..ChatSection::default()
    };
    let mut alice = Session::new(&server, "alice", settings)?;
    let long = alice.say(&format!("say {}END", "a".repeat(200))).await;
    let id = alice.last_id(&long);
    assert!(
        long.contains(&format!(
            "Output truncated to the last 20 characters; `!status {id}` shows all of it."
        )),
        "{long}"
    );
    assert!(long.contains(&format!("…{}END", "a".repeat(17))), "{long}");
    let full = alice.say(&format!("status {id}")).await;
    assert!(
        full.contains(&format!("{}END", "a".repeat(200))),
        "status shows everything: {full}"
    );

    let slow = alice.say("sleep 2").await;
    let edits: Vec<&str> = slow
        .lines()
        .filter(|l| l.starts_with("squall (edit "))
        .collect();
    assert!(!edits.is_empty(), "no progress edit in:\n{slow}");
    assert!(edits[0].contains("is running ("), "{slow}");
    assert!(slow.contains("testing.sleep succeeded"), "{slow}");
    server.stop().await
}

/// Wait until `session` has printed something matching `pattern`; returns
/// everything printed so far.
pub(crate) async fn wait_output(
    session: &mut Session,
    seen: &mut String,
    pattern: &str,
) -> Result<String> {
    let re = regex::Regex::new(pattern)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        seen.push_str(&session.collect());
        if let Some(m) = re.find(seen) {
            return Ok(m.as_str().to_owned());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("no {pattern:?} in the console output:\n{seen}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn approvals_in_the_console_resume_or_stop_a_workflow() -> Result<()> {
    let server = server().await?;
    let mut alice = Session::new(&server, "alice", ChatSection::default())?;
    alice.dispatcher.start();
    let mut carol = Session::new(&server, "carol", ChatSection::default())?;
    let mut seen = String::new();

    alice.send("release web to production").await;
    let prompt = wait_output(&mut alice, &mut seen, r"approve [0-9A-Z]{26}").await?;
    let inquiry = prompt.trim_start_matches("approve ").to_owned();
    assert!(
        seen.contains("Approval needed: examples.release (task approve)"),
        "{seen}"
    );
    assert!(seen.contains("Deploy web to production?"), "{seen}");
    assert!(
        seen.contains("console:alice cannot approve their own request"),
        "{seen}"
    );

    // The requester's own approval is refused, with a notice.
    let refused = alice.send(&format!("approve {inquiry}")).await;
    assert!(
        refused.contains("was refused: console:alice started this execution and cannot approve it"),
        "{refused}"
    );
    // A guest may not answer at all.
    let mut bob = Session::new(&server, "bob", ChatSection::default())?;
    let refused = bob.send(&format!("approve {inquiry}")).await;
    assert!(
        refused.contains("lacks the inquiry:respond permission"),
        "{refused}"
    );

    // Someone else approves (by a short prefix of the id): the prompt shows
    // the decision and the workflow deploys.
    let approved = carol.send(&format!("approve {}", &inquiry[..10])).await;
    assert!(
        approved.contains("is approved by console:carol"),
        "{approved}"
    );
    wait_output(
        &mut alice,
        &mut seen,
        r"Approved by console:carol at \d{4}-",
    )
    .await?;
    wait_output(&mut alice, &mut seen, r"examples\.release succeeded").await?;
    let workflow = server
        .engine
        .store
        .get_inquiry(&inquiry)
        .await?
        .and_then(|i| i.workflow_id)
        .unwrap_or_default();
    let children = server.engine.store.children_of(&workflow).await?;
    let ran: Vec<&str> = children.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(
        ran,
        vec!["core.local", "core.ask", "examples.deploy", "core.local"]
    );

    // A denial stops the next release before it deploys.
    seen.clear();
    alice.send("release api").await;
    let prompt = wait_output(&mut alice, &mut seen, r"approve [0-9A-Z]{26}").await?;
    let inquiry = prompt.trim_start_matches("approve ").to_owned();
    let denied = carol
        .send(&format!("deny {inquiry} not during the freeze"))
        .await;
    assert!(denied.contains("is denied by console:carol"), "{denied}");
    wait_output(
        &mut alice,
        &mut seen,
        r"Denied by console:carol at .*Reason: not during the freeze",
    )
    .await?;
    wait_output(&mut alice, &mut seen, r"examples\.release failed").await?;
    let workflow = server
        .engine
        .store
        .get_inquiry(&inquiry)
        .await?
        .and_then(|i| i.workflow_id)
        .unwrap_or_default();
    let children = server.engine.store.children_of(&workflow).await?;
    assert!(!children.iter().any(|c| c.action == "examples.deploy"));
    server.stop().await
}

#[tokio::test]
async fn retry_failed_reruns_a_workflow_from_its_failed_tasks() -> Result<()> {
    let server = server().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("steps");
    let id = crate::workflows::start(
        &server.engine,
        "testing.wf_steps",
        serde_json::json!({"file": file, "steps": 3, "seconds": 0, "fail_at": 1}),
        "console:alice",
    )
    .await?;
    let failed = server
        .engine
        .wait_for(&id, std::time::Duration::from_secs(30))
        .await?;
    assert_eq!(failed.status, "failed");
    std::fs::write(format!("{}.fix", file.display()), "")?;
    let mut alice = Session::new(&server, "alice", ChatSection::default())?;
    let answer = alice.say(&format!("retry {id} failed")).await;
    assert!(
        answer.contains("from its failed tasks as execution"),
        "{answer}"
    );
    assert!(answer.contains("testing.wf_steps succeeded"), "{answer}");
    let lines = std::fs::read_to_string(&file)?;
    assert_eq!(lines, "step 0\nstep 1\nstep 2\n", "step 0 ran once");
    let plain = crate::workflows::start(
        &server.engine,
        "core.noop",
        serde_json::json!({}),
        "console:alice",
    )
    .await?;
    let answer = alice.say(&format!("retry {plain} failed")).await;
    assert!(answer.contains("is not a workflow"), "{answer}");
    server.stop().await
}

/// An adapter whose platform calls squall over HTTP (as Slack's Events API
/// and Discord's Interactions endpoint do): its routes are mounted under
/// `/api/v1/chat/<platform>/`, and what they receive reaches the dispatcher.
struct Hooked;

#[async_trait::async_trait]
impl ChatAdapter for Hooked {
    fn platform(&self) -> &'static str {
        "hooked"
    }
    fn capabilities(&self) -> squall_engine::chat::Capabilities {
        squall_engine::chat::Capabilities {
            http_ingress: true,
            ..Default::default()
        }
    }
    async fn run(
        &self,
        _: tokio::sync::mpsc::Sender<ChatEvent>,
        _: tokio_util::sync::CancellationToken,
    ) -> std::result::Result<(), squall_engine::chat::AdapterError> {
        Ok(())
    }
    async fn send(
        &self,
        to: &squall_engine::chat::ChannelRef,
        _: &squall_engine::chat::OutgoingMessage,
        key: &str,
    ) -> std::result::Result<squall_engine::chat::SentMessage, squall_engine::chat::AdapterError>
    {
        Ok(squall_engine::chat::SentMessage {
            to: to.clone(),
            message_id: key.to_owned(),
        })
    }
    fn http_routes(&self, events: tokio::sync::mpsc::Sender<ChatEvent>) -> Option<axum::Router> {
        let route = axum::routing::post(move |body: String| {
            let events = events.clone();
            async move {
                let message = squall_engine::chat::IncomingMessage {
                    platform: "hooked".into(),
                    to: squall_engine::chat::ChannelRef {
                        channel: "c".into(),
                        thread: None,
                    },
                    user: "u".into(),
                    text: body,
                    message_id: "m".into(),
                    direct: true,
                    mentions_bot: false,
                };
                let _ = events.send(ChatEvent::Message(message)).await;
                "ok"
            }
        });
        Some(axum::Router::new().route("/events", route))
    }
}

#[tokio::test]
async fn adapters_with_http_ingress_get_their_routes_mounted() -> Result<()> {
    use tower::ServiceExt;
    let mut edge = squall::server::ChatEdge::new(vec![Arc::new(Hooked)]);
    let app = edge.routes(1024);
    let post = |path: &str, body: String| {
        axum::http::Request::post(path)
            .body(axum::body::Body::from(body))
            .expect("request")
    };
    let answer = app
        .clone()
        .oneshot(post("/api/v1/chat/hooked/events", "!help".into()))
        .await?;
    assert_eq!(answer.status(), 200);
    let Some(ChatEvent::Message(message)) = edge.next_event().await else {
        anyhow::bail!("no event from the ingress route");
    };
    assert_eq!(message.text, "!help");
    let elsewhere = app
        .clone()
        .oneshot(post("/api/v1/chat/other/events", String::new()))
        .await?;
    assert_eq!(elsewhere.status(), 404);
    let huge = app
        .oneshot(post("/api/v1/chat/hooked/events", "x".repeat(4096)))
        .await?;
    assert_eq!(huge.status(), 413, "the API's body limit applies");
    Ok(())
}

#[tokio::test]
async fn people_keep_their_own_datastore_pairs_in_chat() -> Result<()> {
    use squall_engine::datastore::KvSet;
    let server = server().await?;
    let mut alice = Session::new(&server, "alice", ChatSection::default())?;
    let mut bob = Session::new(&server, "bob", ChatSection::default())?;

    let said = alice.say("key set favourite tea").await;
    assert!(
        said.contains("user:console:alice/favourite = tea"),
        "{said}"
    );
    let said = alice.say("key set limits {\"cpu\": 2}").await;
    assert!(said.contains(r#"limits = {"cpu":2}"#), "{said}");
    // Bob has his own scope: he cannot see Alice's pairs.
    let said = bob.say("key get favourite").await;
    assert!(
        said.contains("not found") || said.contains("no key"),
        "{said}"
    );
    let said = bob.say("key list").await;
    assert!(said.contains("No pairs in user:console:bob."), "{said}");
    // The system scope needs the grants: Bob (guest) has none, Alice (admin) all.
    let said = bob.say("key list system").await;
    assert!(said.contains("needs the `key:read` grant"), "{said}");
    let said = bob.say("key set system region eu").await;
    assert!(said.contains("needs the `key:write` grant"), "{said}");
    let said = alice.say("key set system region eu-west-1").await;
    assert!(said.contains("system/region = eu-west-1"), "{said}");

    // A secret in Alice's scope (set through the API or CLI) stays masked.
    server
        .engine
        .datastore
        .set(&KvSet {
            scope: "user:console:alice".into(),
            name: "token".into(),
            value: serde_json::json!("s3cr3t-value"),
            secret: true,
            ttl: None,
        })
        .await?;
    let said = alice.say("key list").await;
    assert!(said.contains("token = ********  (secret)"), "{said}");
    assert!(said.contains("favourite = tea"), "{said}");
    assert!(!alice.transcript.contains("s3cr3t-value"));
    let said = alice.say("key decrypt token").await;
    assert!(said.contains("not shown decrypted in chat"), "{said}");

    let said = alice.say("key delete favourite").await;
    assert!(
        said.contains("Deleted user:console:alice/favourite."),
        "{said}"
    );
    let said = alice.say("key frobnicate").await;
    assert!(said.contains("Usage: `key list [system]`"), "{said}");

    // Writes are audited with who did it and from where.
    let audit = server
        .engine
        .store
        .audit_for("key:user:console:alice/favourite")
        .await?;
    let rows: Vec<(&str, &str)> = audit
        .iter()
        .map(|a| (a.kind.as_str(), a.actor.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("key.set", "console:alice"),
            ("key.delete", "console:alice")
        ]
    );
    assert!(audit.iter().all(|a| a.detail.contains("chat")), "{audit:?}");
    server.stop().await
}
