//! The Discord adapter against a local server speaking Discord's REST API
//! and gateway protocol (`squall_tests::discord`): the conformance suite
//! over the gateway, signed requests to the Interactions endpoint (valid,
//! tampered, wrong key), mentions, and gateway faults. squall is the real
//! binary, configured only through `SQUALL_DISCORD__*` variables.

use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use squall_engine::chat::Capabilities;
use squall_tests::discord::{self, FakeDiscord, Fault, Kind};
use squall_tests::eventually;

use crate::conformance::{
    Harness, Said, alert_notices_threaded, collect_lines, healthy, ids, is_final, kill,
    outbox_drained, serve, suite, wait_said,
};

const CHANNEL: &str = "1190000000000000200";
const ALICE: &str = "1190000000000000010";
const CAROL: &str = "1190000000000000020";
const WAIT: Duration = Duration::from_secs(60);

pub(crate) struct DiscordHarness {
    pub(crate) fake: FakeDiscord,
    data: tempfile::TempDir,
    squall: Option<Child>,
    pub(crate) base: String,
}

impl DiscordHarness {
    pub(crate) async fn new() -> Result<Self> {
        Ok(Self {
            fake: FakeDiscord::start().await?,
            data: tempfile::tempdir()?,
            squall: None,
            base: String::new(),
        })
    }

    /// What squall said in `channel` (and its threads, and answers to
    /// interactions), as `user` sees it.
    pub(crate) fn said_in(&self, channel: &str, user: &str) -> Vec<Said> {
        self.fake
            .posted()
            .into_iter()
            .filter(|p| {
                let parent = self.fake.thread_parent(&p.channel);
                (p.channel == channel
                    || parent.as_deref() == Some(channel)
                    || p.interaction.is_some())
                    && p.only_for.as_deref().is_none_or(|u| u == user)
            })
            .map(|p| Said {
                thread: if self.fake.thread_parent(&p.channel).is_some() {
                    Some(p.channel.clone())
                } else {
                    p.reference.clone().or(p.interaction.clone())
                },
                id: p.id,
                text: p.text,
                edit: p.kind == Kind::Edit,
                buttons: p.buttons,
            })
            .collect()
    }

    fn channel_of(&self, message_id: &str) -> String {
        self.fake
            .posted()
            .into_iter()
            .find(|p| p.id == message_id && p.kind != Kind::Edit)
            .map_or_else(|| CHANNEL.to_owned(), |p| p.channel)
    }
}

impl Drop for DiscordHarness {
    fn drop(&mut self) {
        kill(&mut self.squall);
    }
}

impl Harness for DiscordHarness {
    fn name(&self) -> &'static str {
        "discord (gateway)"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            threads: true,
            edits: true,
            reactions: true,
            buttons: true,
            ..Capabilities::default()
        }
    }

    async fn start(&mut self) -> Result<()> {
        let var = |k: &str, v: &str| (format!("SQUALL_DISCORD__{k}"), v.to_owned());
        let env = vec![
            var("TOKEN", discord::TOKEN),
            var("APPLICATION_ID", discord::APPLICATION_ID),
            var("API_URL", &self.fake.api_url),
            var("PUBLIC_KEY", &discord::public_key()),
        ];
        let (identified, _, _, _) = self.fake.gateway_counts();
        let (mut child, base) = serve(self.data.path(), &[], &env)?;
        collect_lines(&mut child, Arc::default())?;
        self.squall = Some(child);
        healthy(&base).await?;
        self.base = base;
        let fake = &self.fake;
        eventually(WAIT, "squall's gateway session", || {
            let up = fake.gateway_counts().0 > identified && fake.connected();
            async move { Ok(up.then_some(())) }
        })
        .await
    }

    fn kill9(&mut self) -> Result<()> {
        let mut child = self.squall.take().context("squall is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    async fn say(&mut self, text: &str) -> Result<String> {
        Ok(self.fake.say(ALICE, CHANNEL, text))
    }

    async fn say_as_approver(&mut self, text: &str) -> Result<()> {
        self.fake.say(CAROL, CHANNEL, text);
        Ok(())
    }

    fn said(&self) -> Vec<Said> {
        self.said_in(CHANNEL, ALICE)
    }

    async fn react(&mut self, approver: bool, message_id: &str, emoji: &str) -> Result<String> {
        let user = if approver { CAROL } else { ALICE };
        let channel = self.channel_of(message_id);
        self.fake.react(user, &channel, message_id, emoji, true);
        Ok(format!("{user} {channel} {message_id} {emoji}"))
    }

    async fn unreact(&mut self, _approver: bool, reaction: &str) -> Result<()> {
        let parts: Vec<&str> = reaction.split(' ').collect();
        let [user, channel, message, emoji] = parts[..] else {
            anyhow::bail!("not a reaction of this harness: {reaction}");
        };
        self.fake.react(user, channel, message, emoji, false);
        Ok(())
    }

    async fn press(&mut self, approver: bool, message: &Said, button: &str) -> Result<()> {
        let user = if approver { CAROL } else { ALICE };
        let channel = self.channel_of(&message.id);
        self.fake.click(user, &channel, &message.id, button)
    }

    async fn restart_platform(&mut self) -> Result<()> {
        self.fake.outage(Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let fake = &self.fake;
        eventually(WAIT, "squall reconnecting after the outage", || {
            let up = fake.connected();
            async move { Ok(up.then_some(())) }
        })
        .await
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.data.path().join("squall.db").display())
    }
}

#[tokio::test]
async fn discord_gateway_passes_the_conformance_suite() -> Result<()> {
    let mut h = DiscordHarness::new().await?;
    suite(&mut h).await?;
    after_the_suite(&mut h).await?;
    signed_interactions(&h).await
}

/// Discord-specific checks on a harness that has run the suite.
async fn after_the_suite(h: &mut DiscordHarness) -> Result<()> {
    // squall identified with the intents it needs, and registered /squall.
    let intents = h.fake.identify_intents();
    let wanted = squall_adapters::discord::intents().bits();
    assert!(
        intents.iter().all(|i| u64::from(wanted) == *i),
        "{intents:?}"
    );
    assert!(
        h.fake
            .commands()
            .iter()
            .any(|c| c["name"] == "squall" && c["options"][0]["name"] == "command"),
        "{:?}",
        h.fake.commands()
    );
    // Every post says no mentions, and the refused click was ephemeral.
    let posted = h.fake.posted();
    for p in &posted {
        assert_eq!(
            p.raw["allowed_mentions"]["parse"],
            serde_json::json!([]),
            "{p:?}"
        );
    }
    assert!(
        posted.iter().any(|p| p.kind == Kind::Ephemeral
            && p.only_for.as_deref() == Some(ALICE)
            && p.text.contains("was refused")),
        "the refused click is shown to its clicker alone"
    );
    let decided = posted
        .iter()
        .rev()
        .find(|p| p.kind == Kind::Edit && p.text.contains("Denied by"))
        .context("the decided prompt")?;
    assert!(decided.buttons.is_empty(), "{decided:?}");
    assert_eq!(decided.raw["components"], serde_json::json!([]));

    // @everyone in output posts with no mention.
    h.say("!say @everyone look @here").await?;
    let said = wait_said(&*h, "the @everyone result", |s| {
        s.text.contains("@everyone look") && s.text.contains("succeeded")
    })
    .await?;
    let id = ids(&said.text).pop().context("an execution id")?;
    let p = h
        .fake
        .posted()
        .into_iter()
        .find(|p| p.text.contains("@everyone look") && p.text.contains("succeeded"))
        .context("the post")?;
    assert_eq!(p.raw["allowed_mentions"]["parse"], serde_json::json!([]));
    assert_eq!(h.said().into_iter().filter(|s| is_final(s, &id)).count(), 1);

    // Another bot's message is never a command.
    h.fake.say_with(
        "1190000000000000099",
        CHANNEL,
        "!say from-a-bot",
        &serde_json::json!({"author": {"id": "1190000000000000099", "username": "otherbot",
            "discriminator": "0", "global_name": null, "avatar": null, "bot": true}}),
    );
    // A mention and a DM are commands without the prefix.
    h.fake.say_with(
        ALICE,
        CHANNEL,
        &format!("<@{}> say by-mention", discord::BOT_USER),
        &serde_json::json!({"mentions": [{"id": discord::BOT_USER, "username": "squall",
            "discriminator": "0", "global_name": null, "avatar": null, "bot": true}]}),
    );
    wait_said(&*h, "the mention's result", |s| {
        s.text.contains("by-mention") && s.text.contains("succeeded")
    })
    .await?;

    // /squall over the gateway: a deferred answer, then the reply.
    let interaction = h.fake.slash(ALICE, CHANNEL, "say slashed");
    eventually(WAIT, "the slash command's answer", || {
        let found = h.fake.posted().into_iter().any(|p| {
            p.interaction.as_deref() == Some(interaction.as_str())
                && p.text.contains("slashed")
                && p.text.contains("succeeded")
        });
        async move { Ok(found.then_some(())) }
    })
    .await?;
    assert!(
        h.fake
            .callbacks()
            .iter()
            .any(|(id, kind)| *id == interaction && *kind == 5),
        "deferred: {:?}",
        h.fake.callbacks()
    );
    outbox_drained(&h.database_url()).await?;
    assert!(
        !h.fake
            .posted()
            .iter()
            .any(|p| p.text.contains("from-a-bot")),
        "a bot's message was taken as a command"
    );
    Ok(())
}

/// Signed requests to the Interactions endpoint: only the valid one is
/// acted on.
async fn signed_interactions(h: &DiscordHarness) -> Result<()> {
    let url = format!("{}/api/v1/chat/discord/interactions", h.base);
    let seed = discord::key_seed();
    let ping = h.fake.ping_interaction();
    let (status, body) = h.fake.post_interaction(&url, &ping, seed, false).await?;
    assert_eq!(
        (status, body["type"].as_u64()),
        (200, Some(1)),
        "PING → PONG"
    );
    let valid = h.fake.slash_interaction(ALICE, CHANNEL, "say signed-valid");
    let (status, body) = h.fake.post_interaction(&url, &valid, seed, false).await?;
    assert_eq!((status, body["type"].as_u64()), (200, Some(5)), "{body}");
    let tampered = h.fake.slash_interaction(ALICE, CHANNEL, "say signed-x");
    let (status, _) = h.fake.post_interaction(&url, &tampered, seed, true).await?;
    assert_eq!(status, 401, "tampered");
    let wrong = h
        .fake
        .slash_interaction(ALICE, CHANNEL, "say signed-wrong-key");
    let (status, _) = h
        .fake
        .post_interaction(&url, &wrong, [9; 32], false)
        .await?;
    assert_eq!(status, 401, "wrong key");
    let id = valid["id"].as_str().unwrap_or_default().to_owned();
    eventually(WAIT, "the valid interaction's answer", || {
        let found = h.fake.posted().into_iter().any(|p| {
            p.interaction.as_deref() == Some(id.as_str())
                && p.text.contains("signed-valid")
                && p.text.contains("succeeded")
        });
        async move { Ok(found.then_some(())) }
    })
    .await?;
    outbox_drained(&h.database_url()).await?;
    for bad in ["signed-tampered", "signed-x", "signed-wrong-key"] {
        assert!(
            !h.fake.posted().iter().any(|p| p.text.contains(bad)),
            "{bad} was acted on"
        );
    }
    Ok(())
}

/// The gateway closes resumably, then not resumably, then withholds a
/// heartbeat ack: squall reconnects each time, and every command is
/// answered exactly once.
#[tokio::test]
async fn discord_gateway_faults_lose_and_double_nothing() -> Result<()> {
    let mut h = DiscordHarness::new().await?;
    h.start().await?;
    let mut sent = Vec::new();
    for (round, fault) in [
        Some(Fault::Close(4000)),
        Some(Fault::Reconnect),
        Some(Fault::Close(4009)),
        Some(Fault::InvalidSession),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let (identifies, resumes, _, _) = h.fake.gateway_counts();
        for n in 0..3 {
            let text = format!("fault-{round}-{n}");
            h.say(&format!("!say {text}")).await?;
            sent.push(text);
        }
        match fault {
            Some(f) => h.fake.fault(f),
            None => h.fake.withhold_heartbeat_acks(true),
        }
        let resumable = matches!(fault, Some(Fault::Close(4000) | Fault::Reconnect));
        if resumable {
            // Said while the connection is down: replayed on resume.
            for n in 3..5 {
                let text = format!("fault-{round}-{n}");
                h.say(&format!("!say {text}")).await?;
                sent.push(text);
            }
        }
        let fake = &h.fake;
        eventually(WAIT, "squall reconnected", || {
            let (i, r, _, _) = fake.gateway_counts();
            let up = (i > identifies || r > resumes) && fake.connected();
            async move { Ok(up.then_some(())) }
        })
        .await?;
        h.fake.withhold_heartbeat_acks(false);
        if resumable {
            assert!(h.fake.gateway_counts().1 > resumes, "round {round} resumed");
        }
        for n in 5..7 {
            let text = format!("fault-{round}-{n}");
            h.say(&format!("!say {text}")).await?;
            sent.push(text);
        }
    }
    for text in &sent {
        let probe = text.clone();
        wait_said(&h, &format!("the answer to {text}"), move |s| {
            s.text.contains(&probe) && s.text.contains("succeeded")
        })
        .await?;
    }
    outbox_drained(&h.database_url()).await?;
    let said = h.said();
    for text in &sent {
        let answers = said
            .iter()
            .filter(|s| {
                !s.edit && s.text.contains(&format!("{text}\n")) && s.text.contains("succeeded")
            })
            .count();
        assert_eq!(answers, 1, "{text}: {answers} answers");
    }
    let (i, r, c, _) = h.fake.gateway_counts();
    eprintln!(
        "discord gateway faults: {} commands answered once each; {i} identifies, {r} resumes, {c} connections",
        sent.len()
    );
    Ok(())
}

/// Load: 1,000 commands from 50 people in 10 channels through the fake,
/// which allows 5 posts per channel per second, and once 400 are answered
/// also only 20 requests per second in all, answering the rest with 429
/// (per route, then global as well). Every command is answered exactly
/// once; the time to the last answer is printed (a benchmark, not an
/// assertion).
#[tokio::test]
async fn discord_load_1000_commands_50_users_10_channels() -> Result<()> {
    let mut h = DiscordHarness::new().await?;
    h.fake.set_rate_limit(Some(5));
    h.start().await?;
    let channels: Vec<String> = (0..10)
        .map(|c| format!("11900000000000003{c:02}"))
        .collect();
    let started = Instant::now();
    for n in 0..1000 {
        let user = format!("11900000000000010{:02}", n % 50);
        h.fake
            .say(&user, &channels[n % 10], &format!("!say load-{n}"));
    }
    let sent_in = started.elapsed();
    let answered = |fake: &FakeDiscord| {
        let mut seen = std::collections::HashMap::<String, usize>::new();
        for p in fake.posted() {
            if p.kind == Kind::Post && p.text.contains("succeeded") {
                for w in p.text.split_whitespace() {
                    if let Some(n) = w.strip_prefix("load-") {
                        *seen.entry(n.to_owned()).or_default() += 1;
                    }
                }
            }
        }
        seen
    };
    let fake = &h.fake;
    eventually(Duration::from_secs(600), "400 answers", || {
        let n = answered(fake).len();
        async move { Ok((n >= 400).then_some(())) }
    })
    .await?;
    fake.set_global_limit(Some(20));
    eventually(Duration::from_secs(600), "1,000 answers", || {
        let n = answered(fake).len();
        async move { Ok((n >= 1000).then_some(())) }
    })
    .await?;
    let last = started.elapsed();
    outbox_drained(&h.database_url()).await?;
    let seen = answered(&h.fake);
    assert_eq!(seen.len(), 1000);
    let doubled: Vec<_> = seen.iter().filter(|(_, c)| **c != 1).collect();
    assert!(doubled.is_empty(), "answered more than once: {doubled:?}");
    let (route, global) = h.fake.rate_limited();
    assert!(
        route > 0 && global > 0,
        "the fake answered {route} per-route and {global} global 429s: \
         the test did not test both limits"
    );
    eprintln!(
        "discord load: 1000 commands (50 users, 10 channels) sent in {:.1} s; last answer after {:.1} s; \
         {} posts in all, {route} per-route and {global} global 429s",
        sent_in.as_secs_f64(),
        last.as_secs_f64(),
        h.fake.posted().len()
    );
    Ok(())
}

/// A firing alert's notices reach a Discord channel in one thread started
/// from the firing notice (in Discord, a thread started from a message has
/// that message's id).
#[tokio::test]
async fn discord_alert_notices_are_threaded_per_alert() -> Result<()> {
    let mut h = DiscordHarness::new().await?;
    h.start().await?;
    let key = std::fs::read_to_string(h.data.path().join("admin-api-key"))?;
    let base = h.base.clone();
    alert_notices_threaded(&mut h, &base, &key, &format!("discord:{CHANNEL}")).await?;
    let threads: Vec<String> = h
        .fake
        .posted()
        .iter()
        .filter_map(|p| h.fake.thread_parent(&p.channel).map(|_| p.channel.clone()))
        .collect();
    assert!(!threads.is_empty() && threads.iter().all(|t| *t == threads[0]));
    assert_eq!(h.fake.thread_parent(&threads[0]).as_deref(), Some(CHANNEL));
    let started = h
        .fake
        .calls()
        .iter()
        .filter(|(m, p)| m == "POST" && p.ends_with("/threads"))
        .count();
    assert_eq!(started, 1, "one thread per alert: {:?}", h.fake.calls());
    Ok(())
}
