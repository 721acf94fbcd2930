//! The Matrix adapter against a real Synapse, with a real human-side client
//! (matrix-sdk logged in as alice): invite and join, help, an alias with a
//! formatted result, threads, reactions and their removal, an encrypted room,
//! and a homeserver restart mid-session.
//!
//! Needs Synapse: `eval "$(scripts/testenv/synapse.sh up)"` (scripts/test.sh
//! does it).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::room::Room;
use matrix_sdk::ruma::api::client::room::create_room::v3::{Request as CreateRoom, RoomPreset};
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::relation::{Annotation, Thread};
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, Relation, RoomMessageEventContent,
};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use matrix_sdk::{Client, RoomMemberships};
use squall::config::ChatSection;
use squall::dispatcher::Dispatcher;
use squall_adapters::matrix::{MatrixAdapter, MatrixConfig};
use squall_engine::chat::{ChatAdapter, ChatEvent, VoteEvent, VoteTarget};
use squall_engine::rbac::Rbac;
use squall_engine::sensitive::Sensitive;
use squall_tests::{Backend, eventually, repo_root};
use tokio_util::sync::CancellationToken;

use crate::server::TestServer;

/// The Matrix tests share one bot account (and one test restarts the
/// homeserver): they take turns.
pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) struct MatrixEnv {
    pub(crate) homeserver: String,
    pub(crate) bot_user: String,
    pub(crate) bot_password: String,
    pub(crate) human_user: String,
    pub(crate) human_password: String,
    pub(crate) second_user: String,
    pub(crate) second_password: String,
    pub(crate) ctl: String,
}

pub(crate) fn matrix_env() -> Result<MatrixEnv> {
    let var = |name: &str| {
        std::env::var(name).with_context(|| {
            format!(
                "{name} is not set: the Matrix tests need a running Synapse. Start it with \
                 `eval \"$(scripts/testenv/synapse.sh up)\"` (scripts/test.sh does this)"
            )
        })
    };
    let env = MatrixEnv {
        homeserver: var("SQUALL_TEST_MATRIX_HOMESERVER")?,
        bot_user: var("SQUALL_TEST_MATRIX_BOT_USER")?,
        bot_password: var("SQUALL_TEST_MATRIX_BOT_PASSWORD")?,
        human_user: var("SQUALL_TEST_MATRIX_HUMAN_USER")?,
        human_password: var("SQUALL_TEST_MATRIX_HUMAN_PASSWORD")?,
        second_user: var("SQUALL_TEST_MATRIX_ECHO_USER")?,
        second_password: var("SQUALL_TEST_MATRIX_ECHO_PASSWORD")?,
        ctl: var("SQUALL_TEST_MATRIX_CTL")?,
    };
    Ok(env)
}

/// What alice sees the bot say.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) room: OwnedRoomId,
    pub(crate) event_id: OwnedEventId,
    pub(crate) body: String,
    pub(crate) html: Option<String>,
    pub(crate) thread_root: Option<OwnedEventId>,
    pub(crate) is_edit: bool,
}

pub(crate) struct Human {
    pub(crate) client: Client,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    _store: tempfile::TempDir,
}

impl Human {
    pub(crate) async fn login(env: &MatrixEnv, bot: OwnedUserId) -> Result<Human> {
        Self::login_as(env, &env.human_user, &env.human_password, bot).await
    }

    pub(crate) async fn login_as(
        env: &MatrixEnv,
        user: &str,
        password: &str,
        bot: OwnedUserId,
    ) -> Result<Human> {
        let store = tempfile::tempdir()?;
        let client = Client::builder()
            .homeserver_url(&env.homeserver)
            .sqlite_store(store.path(), None)
            .build()
            .await?;
        client
            .matrix_auth()
            .login_username(user, password)
            .initial_device_display_name(&format!("squall tests ({user})"))
            .send()
            .await?;
        client
            .sync_once(SyncSettings::default().timeout(Duration::from_secs(0)))
            .await?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent, room: Room| {
            let sink = sink.clone();
            let bot = bot.clone();
            async move {
                if ev.sender != bot {
                    return;
                }
                let (body, html) = match &ev.content.msgtype {
                    MessageType::Notice(n) => {
                        (n.body.clone(), n.formatted.as_ref().map(|f| f.body.clone()))
                    }
                    MessageType::Text(t) => {
                        (t.body.clone(), t.formatted.as_ref().map(|f| f.body.clone()))
                    }
                    _ => return,
                };
                let (thread_root, is_edit) = match &ev.content.relates_to {
                    Some(Relation::Thread(t)) => (Some(t.event_id.clone()), false),
                    Some(Relation::Replacement(_)) => (None, true),
                    _ => (None, false),
                };
                if let Ok(mut seen) = sink.lock() {
                    seen.push(Seen {
                        room: room.room_id().to_owned(),
                        event_id: ev.event_id.clone(),
                        body,
                        html,
                        thread_root,
                        is_edit,
                    });
                }
            }
        });
        // Keep syncing, across homeserver restarts too.
        let syncing = client.clone();
        tokio::spawn(async move {
            loop {
                // A large timeline limit: bursts of commands and answers
                // must not fall into a limited-timeline gap (Synapse's
                // default is 10 events per sync).
                let mut filter = matrix_sdk::ruma::api::client::filter::FilterDefinition::default();
                filter.room.timeline.limit = Some(500u32.into());
                let _ = syncing
                    .sync(
                        SyncSettings::default()
                            .timeout(Duration::from_secs(10))
                            .filter(filter.into()),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Human {
            client,
            seen,
            _store: store,
        })
    }

    /// Get invited to `room` (by its owner) and join it; returns the room as
    /// this client sees it.
    pub(crate) async fn join(&self, env: &MatrixEnv, room: &Room) -> Result<Room> {
        let me: OwnedUserId = format!("@{}:localhost", env.second_user).try_into()?;
        room.invite_user_by_id(&me).await?;
        let room_id = room.room_id().to_owned();
        eventually(Duration::from_secs(30), "the second user to join", || {
            let client = self.client.clone();
            let room_id = room_id.clone();
            async move {
                client
                    .sync_once(SyncSettings::default().timeout(Duration::from_secs(1)))
                    .await?;
                Ok(client.join_room_by_id(&room_id).await.ok())
            }
        })
        .await
    }

    pub(crate) async fn room_with_bot(&self, bot: &OwnedUserId, encrypted: bool) -> Result<Room> {
        let room = self.invite_bot(bot, encrypted).await?;
        bot_joined(&room, bot).await?;
        Ok(room)
    }

    /// A new room with the bot invited (it joins when it sees the invite).
    pub(crate) async fn invite_bot(&self, bot: &OwnedUserId, encrypted: bool) -> Result<Room> {
        let mut request = CreateRoom::new();
        request.invite = vec![bot.clone()];
        request.preset = Some(RoomPreset::PrivateChat);
        if encrypted {
            request.initial_state = vec![
                InitialStateEvent::new(
                    Default::default(),
                    RoomEncryptionEventContent::with_recommended_defaults(),
                )
                .to_raw_any(),
            ];
        }
        Ok(self.client.create_room(request).await?)
    }

    fn said(&self, room: &Room, contains: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .map(|seen| {
                seen.iter()
                    .filter(|s| s.room == room.room_id() && s.body.contains(contains))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn wait_for(&self, room: &Room, contains: &str, what: &str) -> Result<Seen> {
        eventually(Duration::from_secs(30), what, || {
            let found = self.said(room, contains).into_iter().find(|s| !s.is_edit);
            async move { Ok(found) }
        })
        .await
    }

    pub(crate) async fn send(
        &self,
        room: &Room,
        content: RoomMessageEventContent,
    ) -> Result<OwnedEventId> {
        // After a homeserver restart the first sends can fail: retry.
        let mut last = None;
        for _ in 0..40 {
            match room.send(content.clone()).await {
                Ok(response) => return Ok(response.response.event_id),
                Err(err) => last = Some(err),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("sending failed: {last:?}")
    }
}

/// squall's chat side: the Matrix adapter feeding the dispatcher, with the
/// reactions it delivered recorded on the way.
/// Wait until the bot is a member of `room`.
pub(crate) async fn bot_joined(room: &Room, bot: &OwnedUserId) -> Result<()> {
    eventually(
        Duration::from_secs(30),
        "the bot to join after the invite",
        || {
            let room = room.clone();
            let bot = bot.clone();
            async move {
                let members = room.members(RoomMemberships::JOIN).await?;
                Ok(members.iter().any(|m| m.user_id() == bot).then_some(()))
            }
        },
    )
    .await
}

struct Bot {
    reactions: Arc<Mutex<Vec<VoteEvent>>>,
    shutdown: CancellationToken,
    _store: tempfile::TempDir,
}

async fn start_bot(server: &TestServer, env: &MatrixEnv) -> Result<Bot> {
    let store = tempfile::tempdir()?;
    let adapter = Arc::new(MatrixAdapter::new(MatrixConfig {
        homeserver: env.homeserver.clone(),
        user: env.bot_user.clone(),
        password: Some(Sensitive(env.bot_password.clone())),
        access_token: None,
        device_id: None,
        store_dir: store.path().to_path_buf(),
        store_passphrase: None,
        rooms: Vec::new(),
        threads: false,
    })?);
    let rbac = Rbac::load_dir(&repo_root().join("tests/fixtures/rbac"))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let adapters: Vec<Arc<dyn ChatAdapter>> = vec![adapter.clone()];
    let dispatcher = Dispatcher::new(
        server.engine.clone(),
        Arc::new(rbac),
        adapters,
        ChatSection::default(),
    );
    let (adapter_tx, mut adapter_rx) = tokio::sync::mpsc::channel(256);
    let (dispatch_tx, dispatch_rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(dispatcher.run(dispatch_rx));
    let reactions = Arc::new(Mutex::new(Vec::new()));
    let recorded = reactions.clone();
    tokio::spawn(async move {
        while let Some(event) = adapter_rx.recv().await {
            if let ChatEvent::Vote(reaction) = &event
                && let Ok(mut r) = recorded.lock()
            {
                r.push(reaction.clone());
            }
            if dispatch_tx.send(event).await.is_err() {
                return;
            }
        }
    });
    let shutdown = CancellationToken::new();
    let running = shutdown.clone();
    tokio::spawn(async move {
        if let Err(err) = adapter.run(adapter_tx, running).await {
            eprintln!("matrix adapter stopped: {err}");
        }
    });
    Ok(Bot {
        reactions,
        shutdown,
        _store: store,
    })
}

pub(crate) fn synapse_ctl(env: &MatrixEnv, verb: &str) -> Result<()> {
    let status = std::process::Command::new("bash")
        .arg(&env.ctl)
        .arg(verb)
        .status()?;
    if !status.success() {
        bail!("synapse.sh {verb} failed");
    }
    Ok(())
}

#[tokio::test]
async fn matrix_round_trip_with_threads_reactions_encryption_and_a_restart() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = matrix_env()?;
    let server = TestServer::start(Backend::Sqlite).await?;
    let bot = start_bot(&server, &env).await?;
    let bot_id: OwnedUserId = format!("@{}:localhost", env.bot_user).try_into()?;
    let alice = Human::login(&env, bot_id.clone()).await?;

    // Invite -> join; help; an alias with a formatted result.
    let room = alice.room_with_bot(&bot_id, false).await?;
    alice
        .send(&room, RoomMessageEventContent::text_plain("!help"))
        .await?;
    let help = alice
        .wait_for(&room, "Commands you can run", "the help answer")
        .await?;
    assert!(help.body.contains("!say"), "{}", help.body);
    assert!(
        help.html
            .as_deref()
            .unwrap_or("")
            .contains("<strong>Commands you can run</strong>"),
        "{help:?}"
    );

    alice
        .send(
            &room,
            RoomMessageEventContent::text_plain("!say hello <b>matrix</b>"),
        )
        .await?;
    let result = alice
        .wait_for(&room, "testing.say succeeded", "the say result")
        .await?;
    let html = result.html.clone().unwrap_or_default();
    assert!(
        html.contains("<code>hello &lt;b&gt;matrix&lt;/b&gt;"),
        "output is code, never markup: {html}"
    );
    assert_eq!(result.thread_root, None);

    // A command in a thread is answered in that thread.
    let root = alice
        .send(&room, RoomMessageEventContent::text_plain("thread root"))
        .await?;
    let mut threaded = RoomMessageEventContent::text_plain("!say in a thread");
    threaded.relates_to = Some(Relation::Thread(Thread::plain(root.clone(), root.clone())));
    alice.send(&room, threaded).await?;
    let answer = alice
        .wait_for(&room, "in a thread", "the threaded result")
        .await?;
    assert_eq!(answer.thread_root.as_ref(), Some(&root), "{answer:?}");
    let ack = alice
        .said(&room, "Running testing.say")
        .into_iter()
        .last()
        .context("an ack")?;
    assert_eq!(ack.thread_root.as_ref(), Some(&root));

    // A reaction reaches the dispatcher as a Reaction event; its redaction as a removal.
    let reaction = room
        .send(ReactionEventContent::new(Annotation::new(
            result.event_id.clone(),
            "👍".into(),
        )))
        .await?
        .response
        .event_id;
    let target = result.event_id.to_string();
    let seen = bot.reactions.clone();
    eventually(
        Duration::from_secs(20),
        "the reaction at the dispatcher",
        || {
            let found = seen
                .lock()
                .map(|r| {
                    r.iter().any(|e| {
                        !e.withdrawn
                            && e.on == VoteTarget::Message(target.clone())
                            && e.approve
                            && e.user == "@alice:localhost"
                    })
                })
                .unwrap_or(false);
            async move { Ok(found.then_some(())) }
        },
    )
    .await?;
    room.redact(&reaction, None, None).await?;
    let target = result.event_id.to_string();
    eventually(
        Duration::from_secs(20),
        "the reaction's removal at the dispatcher",
        || {
            let found = seen
                .lock()
                .map(|r| {
                    r.iter()
                        .any(|e| e.withdrawn && e.on == VoteTarget::Message(target.clone()))
                })
                .unwrap_or(false);
            async move { Ok(found.then_some(())) }
        },
    )
    .await?;

    // The same round trip in an end-to-end encrypted room.
    let secret_room = alice.room_with_bot(&bot_id, true).await?;
    assert!(secret_room.latest_encryption_state().await?.is_encrypted());
    alice
        .send(
            &secret_room,
            RoomMessageEventContent::text_plain("!say encrypted hello"),
        )
        .await?;
    let encrypted = alice
        .wait_for(&secret_room, "encrypted hello", "the encrypted result")
        .await?;
    assert!(
        encrypted.body.contains("testing.say succeeded"),
        "{encrypted:?}"
    );

    // Stop the homeserver mid-session, start it again: a command sent after
    // the restart is answered, and nothing is answered twice.
    synapse_ctl(&env, "stop")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    synapse_ctl(&env, "start")?;
    alice
        .send(
            &room,
            RoomMessageEventContent::text_plain("!say after the restart"),
        )
        .await?;
    alice
        .wait_for(&room, "after the restart\n", "the answer after the restart")
        .await?;
    // The bot takes a room's events in timeline order: once a later command
    // is answered, a duplicate of an earlier one would have been too.
    alice
        .send(&room, RoomMessageEventContent::text_plain("!say barrier"))
        .await?;
    alice
        .wait_for(&room, "barrier\n", "the answer to the barrier")
        .await?;
    // squall's own record: each command ran once.
    for msg in ["after the restart", "hello <b>matrix"] {
        let runs = server
            .engine
            .store
            .list_executions(&squall_engine::store::ExecutionFilter {
                action: Some("testing.say".into()),
                limit: 1000,
                ..Default::default()
            })
            .await?
            .into_iter()
            .filter(|e| e.parameters.contains(msg))
            .count();
        assert_eq!(runs, 1, "{msg:?} ran {runs} times");
    }
    let results = alice.said(&room, "testing.say succeeded");
    let after: Vec<&Seen> = results
        .iter()
        .filter(|s| s.body.contains("after the restart"))
        .collect();
    assert_eq!(after.len(), 1, "answered once: {after:?}");
    let before: Vec<&Seen> = results
        .iter()
        .filter(|s| s.body.contains("hello <b>matrix"))
        .collect();
    assert_eq!(
        before.len(),
        1,
        "earlier commands were not answered again: {before:?}"
    );

    bot.shutdown.cancel();
    server.stop().await
}

/// An invite sent while squall is not running is accepted when it starts,
/// and the room then works like any other.
#[tokio::test]
async fn matrix_invites_sent_while_squall_was_down_are_accepted_at_start() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = matrix_env()?;
    let server = TestServer::start(Backend::Sqlite).await?;
    let bot_id: OwnedUserId = format!("@{}:localhost", env.bot_user).try_into()?;
    let alice = Human::login(&env, bot_id.clone()).await?;
    let room = alice.invite_bot(&bot_id, false).await?;
    let bot = start_bot(&server, &env).await?;
    bot_joined(&room, &bot_id).await?;
    alice
        .send(
            &room,
            RoomMessageEventContent::text_plain("!say joined late"),
        )
        .await?;
    alice
        .wait_for(
            &room,
            "joined late\n",
            "the answer in the room joined at start",
        )
        .await?;
    bot.shutdown.cancel();
    server.stop().await
}

/// React to an event as `human`; returns the reaction's event id.
async fn react(room: &Room, target: &OwnedEventId, emoji: &str) -> Result<OwnedEventId> {
    Ok(room
        .send(ReactionEventContent::new(Annotation::new(
            target.clone(),
            emoji.into(),
        )))
        .await?
        .response
        .event_id)
}

/// Approvals with real reactions: the requester's own ✅ is refused, a second
/// person's ✅ resumes the workflow, a removed ✅ withdraws a vote, a ❌ stops
/// the workflow; the prompt is edited to show each decision.
#[tokio::test]
async fn matrix_approvals_by_reaction() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = matrix_env()?;
    let server = TestServer::start(Backend::Sqlite).await?;
    let _bot = start_bot(&server, &env).await?;
    let bot_id: OwnedUserId = format!("@{}:localhost", env.bot_user).try_into()?;
    let alice = Human::login(&env, bot_id.clone()).await?;
    let carol =
        Human::login_as(&env, &env.second_user, &env.second_password, bot_id.clone()).await?;

    let room = alice.room_with_bot(&bot_id, false).await?;
    let carol_room = carol.join(&env, &room).await?;

    // 1. Approved by someone else; the requester's own approval is refused.
    alice
        .send(
            &room,
            RoomMessageEventContent::text_plain("!release web to production"),
        )
        .await?;
    let prompt = alice
        .wait_for(
            &room,
            "Approval needed: examples.release",
            "the approval prompt",
        )
        .await?;
    assert!(
        prompt
            .body
            .contains("matrix:@alice:localhost cannot approve their own request"),
        "{}",
        prompt.body
    );
    react(&room, &prompt.event_id, "✅").await?;
    alice
        .wait_for(
            &room,
            "started this execution and cannot approve it",
            "the self-approval refusal",
        )
        .await?;
    react(&carol_room, &prompt.event_id, "✅").await?;
    alice
        .wait_for(
            &room,
            "approved by matrix:@echobot:localhost",
            "the approval notice",
        )
        .await?;
    eventually(
        Duration::from_secs(30),
        "the prompt edited with the decision",
        || {
            let edited = alice
                .said(&room, "Approved by matrix:@echobot:localhost at ")
                .into_iter()
                .any(|s| s.is_edit);
            async move { Ok(edited.then_some(())) }
        },
    )
    .await?;
    alice
        .wait_for(
            &room,
            "examples.release succeeded",
            "the released workflow's result",
        )
        .await?;

    // 2. With two approvers needed, a removed reaction withdraws the vote.
    alice
        .send(
            &room,
            RoomMessageEventContent::text_plain("!release db approvers=2"),
        )
        .await?;
    let prompt2 = eventually(Duration::from_secs(30), "the second prompt", || {
        let found = alice
            .said(&room, "Needs 2 approvals")
            .into_iter()
            .find(|s| !s.is_edit);
        async move { Ok(found) }
    })
    .await?;
    let vote = react(&carol_room, &prompt2.event_id, "✅").await?;
    alice
        .wait_for(&room, "(1 of 2 approvals)", "the recorded vote")
        .await?;
    carol_room.redact(&vote, None, None).await?;
    alice
        .wait_for(&room, "withdrew their vote", "the withdrawn vote")
        .await?;

    // 3. A denial stops the workflow before it deploys.
    react(&carol_room, &prompt2.event_id, "❌").await?;
    alice
        .wait_for(
            &room,
            "is denied by matrix:@echobot:localhost",
            "the denial notice",
        )
        .await?;
    alice
        .wait_for(
            &room,
            "examples.release failed",
            "the stopped workflow's result",
        )
        .await?;
    let denied = server
        .engine
        .store
        .list_inquiries(Some("denied"), 10)
        .await?;
    assert_eq!(denied.len(), 1);
    let workflow = denied[0].workflow_id.clone().unwrap_or_default();
    let children = server.engine.store.children_of(&workflow).await?;
    assert!(!children.iter().any(|c| c.action == "examples.deploy"));
    server.stop().await
}

/// An alert posted to a real Alertmanager reaches squall; the remediation
/// notices appear in a real room, threaded under the firing notice; a ✅
/// approves the cleanup; the resolved alert lands in the same thread.
#[tokio::test]
async fn matrix_alert_notices_are_threaded_per_alert() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = matrix_env()?;
    let server = TestServer::start(Backend::Sqlite).await?;
    let bot_id: OwnedUserId = format!("@{}:localhost", env.bot_user).try_into()?;
    let _bot = start_bot(&server, &env).await?;
    let alice = Human::login(&env, bot_id.clone()).await?;
    let carol =
        Human::login_as(&env, &env.second_user, &env.second_password, bot_id.clone()).await?;
    let room = alice.room_with_bot(&bot_id, false).await?;
    let carol_room = carol.join(&env, &room).await?;
    let room_id = room.room_id().to_owned();

    let am =
        squall_tests::Alertmanager::start(&server.url("/api/v1/alerts/alertmanager"), &server.key)
            .await?;
    let disk = tempfile::tempdir()?;
    std::fs::write(disk.path().join("old.tmp"), "x")?;
    let alert = serde_json::json!([{
        "labels": {"alertname": "HighDiskUsage", "instance": "db7:9100"},
        // The alert names its room (the example pack's rules default to `ops`).
        "annotations": {
            "summary": "/var is 95% full on db7",
            "cleanup_path": disk.path(),
            "chat_channel": format!("matrix:{room_id}")
        }
    }]);
    am.post(&alert).await?;
    let firing = match alice
        .wait_for(
            &room,
            "HighDiskUsage firing on db7:9100",
            "the firing notice in the room",
        )
        .await
    {
        Ok(seen) => seen,
        Err(err) => {
            let executions = server
                .engine
                .store
                .list_executions(&squall_engine::store::ExecutionFilter {
                    limit: 20,
                    ..Default::default()
                })
                .await?;
            for e in executions {
                eprintln!(
                    "{} {} {} {:?} {:?}",
                    e.id, e.action, e.status, e.error, e.result
                );
            }
            return Err(err);
        }
    };
    assert_eq!(
        firing.thread_root, None,
        "the firing notice starts the thread"
    );
    let diagnosis = alice
        .wait_for(
            &room,
            "Diagnosis on db7:9100: 1 temporary files",
            "the diagnosis",
        )
        .await?;
    assert_eq!(diagnosis.thread_root.as_ref(), Some(&firing.event_id));
    let prompt = alice
        .wait_for(
            &room,
            "Approval needed: remediation.disk_remediate",
            "the approval prompt",
        )
        .await?;
    assert_eq!(
        prompt.thread_root.as_ref(),
        Some(&firing.event_id),
        "asked in the alert's thread"
    );
    react(&carol_room, &prompt.event_id, "✅").await?;
    let done = alice
        .wait_for(
            &room,
            "Cleanup done on db7:9100: removed 1 temporary files",
            "the cleanup result",
        )
        .await?;
    assert_eq!(done.thread_root.as_ref(), Some(&firing.event_id));
    assert!(!disk.path().join("old.tmp").exists());

    let mut resolved = alert.clone();
    resolved[0]["endsAt"] = serde_json::json!(chrono::Utc::now().to_rfc3339());
    am.post(&resolved).await?;
    let resolved = alice
        .wait_for(
            &room,
            "Resolved: HighDiskUsage on db7:9100",
            "the resolved notice",
        )
        .await?;
    assert_eq!(
        resolved.thread_root.as_ref(),
        Some(&firing.event_id),
        "resolved lands under its firing"
    );
    server.stop().await
}
