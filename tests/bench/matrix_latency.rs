//! Matrix command -> result latency: squall beside the floor, and the time
//! to the final message after a crash.
//!
//! alice (a matrix-sdk client) sends 100 commands to squall in one room and
//! 100 messages to a minimal echo client in another, alternating, one at a
//! time; each latency runs from alice's send to the reply arriving in her
//! sync. squall's reply is the result of `!bench ping` (an alias running
//! `core.echo` with the ack off): the execution is stored, run, finished and
//! its result delivered through the outbox. The echo client replies from its
//! sync handler at once: no bot can do better on the same homeserver.
//!
//! Then, five times, the real `squall` binary gets `!sleep 30`, is killed
//! with SIGKILL once it acknowledged, and started again: the time from the
//! new process's start to the "abandoned when squall stopped" message in
//! alice's sync is the time to the final message after a restart.
//!
//! Run through `scripts/bench-matrix.sh` (Synapse with its database on tmpfs).

// matrix-sdk's futures are deeply nested.
#![recursion_limit = "256"]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::room::Room;
use matrix_sdk::ruma::OwnedUserId;
use matrix_sdk::ruma::api::client::room::create_room::v3::{Request as CreateRoom, RoomPreset};
use matrix_sdk::ruma::events::room::member::{MembershipState, StrippedRoomMemberEvent};
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent,
};
use matrix_sdk::{Client, RoomMemberships};
use squall::config::{Config, Sensitive};
use squall_adapters::matrix::MatrixConfig;
use squall_tests::{eventually, pack_dirs, repo_root};
use tokio::sync::mpsc;

const ROUNDS: usize = 100;

fn var(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: run scripts/bench-matrix.sh"))
}

async fn login(
    homeserver: &str,
    user: &str,
    password: &str,
    store: &std::path::Path,
) -> Result<Client> {
    let client = Client::builder()
        .homeserver_url(homeserver)
        .sqlite_store(store, None)
        .build()
        .await?;
    client
        .matrix_auth()
        .login_username(user, password)
        .send()
        .await?;
    client
        .sync_once(SyncSettings::default().timeout(Duration::from_secs(0)))
        .await?;
    Ok(client)
}

/// Sync continuously with no pause between syncs (matrix-sdk's own loop
/// sleeps a second after a quick sync, which would swamp the measurement).
fn keep_syncing(client: &Client) {
    let client = client.clone();
    tokio::spawn(async move {
        let mut token: Option<String> = None;
        loop {
            let mut settings = SyncSettings::default().timeout(Duration::from_secs(30));
            if let Some(t) = &token {
                settings = settings.token(t.clone());
            }
            match client.sync_once(settings).await {
                Ok(response) => token = Some(response.next_batch),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
}

async fn room_with(alice: &Client, other: &OwnedUserId) -> Result<Room> {
    let mut request = CreateRoom::new();
    request.invite = vec![other.clone()];
    request.preset = Some(RoomPreset::PrivateChat);
    let room = alice.create_room(request).await?;
    let joined = room.clone();
    let other = other.clone();
    eventually(Duration::from_secs(60), "the invitee to join", || {
        let room = joined.clone();
        let other = other.clone();
        async move {
            let members = room.members(RoomMemberships::JOIN).await?;
            Ok(members.iter().any(|m| m.user_id() == other).then_some(()))
        }
    })
    .await?;
    Ok(room)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    squall_engine::install_crypto_provider();
    // SQUALL_LOG (e.g. `squall=debug`) shows where a command's time goes.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("SQUALL_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let homeserver = var("SQUALL_TEST_MATRIX_HOMESERVER")?;
    let server_name = "localhost";
    let dir = tempfile::tempdir()?;

    // squall, all-in-one, with the Matrix adapter.
    let bot_user = var("SQUALL_TEST_MATRIX_BOT_USER")?;
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().join("data"),
        database_url: Some(Sensitive(format!(
            "sqlite://{}",
            dir.path().join("squall.db").display()
        ))),
        packs: bench_packs(dir.path())?,
        ..Config::default()
    };
    config.chat.rbac_dir = repo_root().join("tests/fixtures/rbac");
    config.chat.rate_limit_per_minute = 0;
    config.adapters.0.insert(
        "matrix".into(),
        squall_adapters::config::AdapterConfig::Matrix(MatrixConfig {
            homeserver: homeserver.clone(),
            user: bot_user.clone(),
            password: Some(Sensitive(var("SQUALL_TEST_MATRIX_BOT_PASSWORD")?)),
            access_token: None,
            device_id: None,
            store_dir: dir.path().join("matrix"),
            store_passphrase: None,
            rooms: Vec::new(),
            threads: false,
        }),
    );
    let mut server = squall::server::start(&config).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let edge = server.chat.take().context("the server's chat adapters")?;
    squall::server::start_chat(server.engine.clone(), &config, edge, &shutdown)
        .await
        .map_err(anyhow::Error::msg)?;

    // The floor: a client that echoes every text message the moment its sync delivers it.
    let echo_user = var("SQUALL_TEST_MATRIX_ECHO_USER")?;
    let echo = login(
        &homeserver,
        &echo_user,
        &var("SQUALL_TEST_MATRIX_ECHO_PASSWORD")?,
        &dir.path().join("echo"),
    )
    .await?;
    echo.add_event_handler(
        |ev: StrippedRoomMemberEvent, room: Room, client: Client| async move {
            if client.user_id() == Some(&ev.state_key)
                && ev.content.membership == MembershipState::Invite
            {
                let _ = room.join().await;
            }
        },
    );
    echo.add_event_handler(
        |ev: OriginalSyncRoomMessageEvent, room: Room, client: Client| async move {
            if client.user_id() == Some(&ev.sender) {
                return;
            }
            if let MessageType::Text(text) = &ev.content.msgtype {
                let _ = room
                    .send(RoomMessageEventContent::notice_plain(format!(
                        "echo {}",
                        text.body
                    )))
                    .await;
            }
        },
    );
    keep_syncing(&echo);

    // alice, timing replies as her sync delivers them.
    let alice = login(
        &homeserver,
        &var("SQUALL_TEST_MATRIX_HUMAN_USER")?,
        &var("SQUALL_TEST_MATRIX_HUMAN_PASSWORD")?,
        &dir.path().join("alice"),
    )
    .await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, String, Instant)>();
    let me = alice.user_id().context("alice's id")?.to_owned();
    let tx = Arc::new(tx);
    alice.add_event_handler(move |ev: OriginalSyncRoomMessageEvent, room: Room| {
        let tx = tx.clone();
        let me = me.clone();
        async move {
            if ev.sender != me {
                let body = match &ev.content.msgtype {
                    MessageType::Notice(n) => n.body.clone(),
                    MessageType::Text(t) => t.body.clone(),
                    _ => String::new(),
                };
                let _ = tx.send((room.room_id().to_string(), body, Instant::now()));
            }
        }
    });
    keep_syncing(&alice);

    let squall_id: OwnedUserId = format!("@{bot_user}:{server_name}").try_into()?;
    let echo_id: OwnedUserId = format!("@{echo_user}:{server_name}").try_into()?;
    let squall_room = room_with(&alice, &squall_id).await?;
    let echo_room = room_with(&alice, &echo_id).await?;

    let mut squall_times = Vec::with_capacity(ROUNDS);
    let mut echo_times = Vec::with_capacity(ROUNDS);
    // A few unmeasured rounds first (connections, caches).
    for round in 0..ROUNDS + 5 {
        for (room, text, times) in [
            (&squall_room, "!bench ping".to_owned(), &mut squall_times),
            (&echo_room, format!("n{round}"), &mut echo_times),
        ] {
            let started = Instant::now();
            room.send(RoomMessageEventContent::text_plain(text)).await?;
            let arrived = loop {
                let Some((room_id, _, at)) =
                    tokio::time::timeout(Duration::from_secs(30), rx.recv()).await?
                else {
                    bail!("alice's sync stopped");
                };
                if room_id == room.room_id().as_str() {
                    break at;
                }
            };
            if round >= 5 {
                times.push(arrived - started);
            }
        }
    }
    squall_times.sort();
    echo_times.sort();
    let (sq50, sq95) = (
        percentile(&squall_times, 0.5),
        percentile(&squall_times, 0.95),
    );
    let (ec50, ec95) = (percentile(&echo_times, 0.5), percentile(&echo_times, 0.95));
    println!("command -> result over {ROUNDS} commands, alternating, same homeserver, same run:");
    println!(
        "  echo floor: median {:>7.1} ms   p95 {:>7.1} ms",
        ec50.as_secs_f64() * 1e3,
        ec95.as_secs_f64() * 1e3
    );
    println!(
        "  squall:     median {:>7.1} ms   p95 {:>7.1} ms",
        sq50.as_secs_f64() * 1e3,
        sq95.as_secs_f64() * 1e3
    );
    println!(
        "  squall median / floor median = {:.2}",
        sq50.as_secs_f64() / ec50.as_secs_f64()
    );
    shutdown.cancel();
    server.engine.shutdown();

    let restarts =
        after_restarts(&homeserver, &bot_user, dir.path(), &squall_room, &mut rx).await?;
    let mut sorted = restarts.clone();
    sorted.sort();
    println!(
        "time to the final message after kill -9 and a restart ({} runs): median {:.0} ms, max {:.0} ms",
        sorted.len(),
        percentile(&sorted, 0.5).as_secs_f64() * 1e3,
        sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}

/// The repository's packs and a `bench` pack: `bench ping` runs `core.echo`
/// with the ack off, so the result is the command's only reply.
fn bench_packs(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let pack = dir.join("packs/bench");
    std::fs::create_dir_all(pack.join("aliases"))?;
    std::fs::write(
        pack.join("pack.yaml"),
        "name: bench\nref: bench\ndescription: latency bench\nversion: 0.1.0\nauthor: squall\n",
    )?;
    std::fs::write(
        pack.join("aliases/ping.yaml"),
        "name: ping\npack: bench\ndescription: ping\naction_ref: core.echo\nformats:\n  - \"bench ping\"\nimmutable_parameters:\n  message: pong\nack:\n  enabled: false\n",
    )?;
    let mut packs = pack_dirs();
    packs.push(dir.join("packs"));
    Ok(packs)
}

/// `squall serve` (the binary beside this one) with the Matrix adapter.
fn spawn_squall(
    homeserver: &str,
    bot_user: &str,
    dir: &std::path::Path,
) -> Result<std::process::Child> {
    let exe = std::env::current_exe()?;
    let binary = exe.parent().context("bench location")?.join("squall");
    if !binary.exists() {
        bail!(
            "{} is missing: build it with `cargo build -p squall`",
            binary.display()
        );
    }
    let port = squall_tests::free_port()?;
    let data = dir.join("restarts");
    Ok(std::process::Command::new(binary)
        .arg("serve")
        .env("SQUALL_LISTEN", format!("127.0.0.1:{port}"))
        .env("SQUALL_DATA_DIR", &data)
        .env("SQUALL_PACKS", squall_tests::pack_dirs_env())
        .env(
            "SQUALL_CHAT__RBAC_DIR",
            repo_root().join("tests/fixtures/rbac"),
        )
        .env("SQUALL_ADAPTERS__MATRIX__HOMESERVER", homeserver)
        .env("SQUALL_ADAPTERS__MATRIX__USER", bot_user)
        .env(
            "SQUALL_ADAPTERS__MATRIX__PASSWORD",
            var("SQUALL_TEST_MATRIX_BOT_PASSWORD")?,
        )
        .env("SQUALL_ADAPTERS__MATRIX__STORE_DIR", data.join("matrix"))
        .env("SQUALL_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()?)
}

type Replies = mpsc::UnboundedReceiver<(String, String, Instant)>;

/// The next reply in `room` whose body contains `needle`.
async fn reply_containing(rx: &mut Replies, room: &Room, needle: &str) -> Result<Instant> {
    loop {
        let Some((room_id, body, at)) =
            tokio::time::timeout(Duration::from_secs(60), rx.recv()).await?
        else {
            bail!("alice's sync stopped");
        };
        if room_id == room.room_id().as_str() && body.contains(needle) {
            return Ok(at);
        }
    }
}

async fn after_restarts(
    homeserver: &str,
    bot_user: &str,
    dir: &std::path::Path,
    room: &Room,
    rx: &mut Replies,
) -> Result<Vec<Duration>> {
    let mut squall = spawn_squall(homeserver, bot_user, dir)?;
    let mut times = Vec::new();
    for _ in 0..5 {
        // The process may still be connecting: repeat the command until acked.
        loop {
            room.send(RoomMessageEventContent::text_plain("!sleep 30"))
                .await?;
            match tokio::time::timeout(
                Duration::from_secs(10),
                reply_containing(rx, room, "Running testing.sleep"),
            )
            .await
            {
                Ok(acked) => {
                    acked?;
                    break;
                }
                Err(_) => {
                    if let Some(status) = squall.try_wait()? {
                        bail!("squall serve exited ({status})");
                    }
                }
            }
        }
        squall.kill()?;
        squall.wait()?;
        let started = Instant::now();
        squall = spawn_squall(homeserver, bot_user, dir)?;
        let arrived = reply_containing(rx, room, "abandoned when squall stopped").await?;
        times.push(arrived - started);
    }
    squall.kill()?;
    squall.wait()?;
    Ok(times)
}
