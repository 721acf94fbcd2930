//! The Slack adapter against a local server speaking Slack's wire protocol
//! (`squall_tests::slack`): the conformance suite over Socket Mode and over
//! the Events API, signed requests (valid, tampered, stale, replayed),
//! mention injection, slash commands, socket loss and a load benchmark with
//! forced 429s. squall is the real binary, configured only through
//! `SQUALL_SLACK__*` variables.

use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use squall_engine::chat::Capabilities;
use squall_tests::eventually;
use squall_tests::slack::{self, Delivery, FakeSlack, Kind, Posted};

use crate::conformance::{
    Harness, Said, alert_notices_threaded, collect_lines, healthy, ids, is_final, kill,
    outbox_drained, serve, suite, wait_said,
};

const CHANNEL: &str = "C0CONFORM";
const ALICE: &str = "U0ALICE";
const CAROL: &str = "U0CAROL";
const WAIT: Duration = Duration::from_secs(60);

pub(crate) struct SlackHarness {
    pub(crate) fake: FakeSlack,
    delivery: Delivery,
    data: tempfile::TempDir,
    squall: Option<Child>,
    pub(crate) base: String,
    /// Extra `SQUALL_*` variables for every start.
    extra: Vec<(String, String)>,
}

impl SlackHarness {
    pub(crate) async fn new(delivery: Delivery) -> Result<Self> {
        let fake = FakeSlack::start(delivery).await?;
        fake.add_user(ALICE, "Alice Adams");
        fake.add_user(CAROL, "Carol Chen");
        Ok(Self {
            fake,
            delivery,
            data: tempfile::tempdir()?,
            squall: None,
            base: String::new(),
            extra: Vec::new(),
        })
    }

    /// What squall did in `channel`, as `user` sees it (ephemeral messages
    /// only to whom they are for).
    pub(crate) fn said_in(&self, channel: &str, user: &str) -> Vec<Said> {
        self.fake
            .posted()
            .into_iter()
            .filter(|p| p.channel == channel && p.only_for.as_deref().is_none_or(|u| u == user))
            .map(|p| Said {
                id: p.ts,
                text: p.text,
                thread: p.thread_ts,
                edit: p.kind == Kind::Update,
                buttons: p.buttons,
            })
            .collect()
    }
}

impl Drop for SlackHarness {
    fn drop(&mut self) {
        kill(&mut self.squall);
    }
}

impl Harness for SlackHarness {
    fn name(&self) -> &'static str {
        match self.delivery {
            Delivery::Socket => "slack (Socket Mode)",
            Delivery::Events => "slack (Events API)",
        }
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
        let var = |k: &str, v: &str| (format!("SQUALL_SLACK__{k}"), v.to_owned());
        let mut env = vec![
            var("BOT_TOKEN", slack::BOT_TOKEN),
            var("API_URL", &self.fake.api_url),
            var("RECONNECT_SECONDS", "1"),
        ];
        match self.delivery {
            Delivery::Socket => env.push(var("APP_TOKEN", slack::APP_TOKEN)),
            Delivery::Events => {
                env.push(var("MODE", "events"));
                env.push(var("SIGNING_SECRET", slack::SIGNING_SECRET));
            }
        }
        env.extend(self.extra.iter().cloned());
        let opened = self.fake.connections_opened();
        let (mut child, base) = serve(self.data.path(), &[], &env)?;
        collect_lines(&mut child, Arc::default())?;
        self.squall = Some(child);
        healthy(&base).await?;
        self.base = base;
        match self.delivery {
            Delivery::Socket => {
                let fake = &self.fake;
                eventually(WAIT, "squall's Socket Mode connection", || {
                    let up = fake.connections_opened() > opened && fake.open_sockets() > 0;
                    async move { Ok(up.then_some(())) }
                })
                .await
            }
            Delivery::Events => {
                self.fake
                    .set_events_url(&format!("{}/api/v1/chat/slack/events", self.base));
                Ok(())
            }
        }
    }

    fn kill9(&mut self) -> Result<()> {
        let mut child = self.squall.take().context("squall is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    async fn say(&mut self, text: &str) -> Result<String> {
        self.fake.say(ALICE, CHANNEL, text, None).await
    }

    async fn say_as_approver(&mut self, text: &str) -> Result<()> {
        self.fake.say(CAROL, CHANNEL, text, None).await.map(|_| ())
    }

    fn said(&self) -> Vec<Said> {
        self.said_in(CHANNEL, ALICE)
    }

    async fn react(&mut self, approver: bool, message_id: &str, emoji: &str) -> Result<String> {
        let user = if approver { CAROL } else { ALICE };
        let name = match emoji {
            "✅" => "white_check_mark",
            "❌" => "x",
            other => other,
        };
        self.fake
            .react(user, CHANNEL, message_id, name, true)
            .await?;
        Ok(format!("{user} {message_id} {name}"))
    }

    async fn unreact(&mut self, _approver: bool, reaction: &str) -> Result<()> {
        let mut parts = reaction.split(' ');
        let (Some(user), Some(ts), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("not a reaction of this harness: {reaction}");
        };
        self.fake.react(user, CHANNEL, ts, name, false).await
    }

    async fn press(&mut self, approver: bool, message: &Said, button: &str) -> Result<()> {
        let user = if approver { CAROL } else { ALICE };
        self.fake.click(user, CHANNEL, &message.id, button).await
    }

    async fn restart_platform(&mut self) -> Result<()> {
        // Slack is down for a while: the API answers 503, sockets drop.
        self.fake.outage(Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(3)).await;
        if self.delivery == Delivery::Socket {
            let fake = &self.fake;
            eventually(WAIT, "squall reconnecting after the outage", || {
                let up = fake.open_sockets() > 0;
                async move { Ok(up.then_some(())) }
            })
            .await?;
        }
        Ok(())
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.data.path().join("squall.db").display())
    }
}

/// Every envelope squall was given was acked, none more often than it was
/// delivered (a late ack makes the fake redeliver, as Slack does).
fn all_acked(fake: &FakeSlack) {
    let (acked, open, twice, redelivered) = fake.envelopes();
    assert!(acked > 0);
    assert_eq!(open, 0, "envelopes never acked");
    assert_eq!(
        twice, 0,
        "acks beyond deliveries ({redelivered} redeliveries)"
    );
}

#[tokio::test]
async fn slack_socket_mode_passes_the_conformance_suite() -> Result<()> {
    let mut h = SlackHarness::new(Delivery::Socket).await?;
    suite(&mut h).await?;
    after_the_suite(&mut h).await?;
    eventually(WAIT, "every envelope acked", || {
        let (_, open, _, _) = h.fake.envelopes();
        async move { Ok((open == 0).then_some(())) }
    })
    .await?;
    all_acked(&h.fake);
    Ok(())
}

#[tokio::test]
async fn slack_events_api_passes_the_conformance_suite() -> Result<()> {
    let mut h = SlackHarness::new(Delivery::Events).await?;
    suite(&mut h).await?;
    after_the_suite(&mut h).await?;
    signed_requests(&h).await
}

/// Slack-specific checks on a harness that has run the suite: names from
/// users.info, refusals of clicks shown only to the clicker, no mention
/// injection, bots ignored, slash commands.
async fn after_the_suite(h: &mut SlackHarness) -> Result<()> {
    let posted = h.fake.posted();
    // Display names from users.info beside the identity.
    assert!(
        posted
            .iter()
            .any(|p| p.text.contains("Requested by Alice Adams (slack:U0ALICE)")),
        "no display name in the prompt"
    );
    // The refused click was shown to the clicker alone.
    let refused: Vec<&Posted> = posted
        .iter()
        .filter(|p| p.text.contains("was refused") && p.kind == Kind::Ephemeral)
        .collect();
    assert!(
        refused.iter().any(|p| p.only_for.as_deref() == Some(ALICE)),
        "the click's refusal is ephemeral to its clicker: {posted:#?}"
    );
    // The decided prompt names who decided and when, without buttons.
    let decided = posted
        .iter()
        .rev()
        .find(|p| p.kind == Kind::Update && p.text.contains("Denied by"))
        .context("the decided prompt")?;
    assert!(decided.buttons.is_empty(), "{decided:?}");
    assert!(
        decided.text.contains("Carol Chen (slack:U0CAROL)") && decided.text.contains(" at 20"),
        "{decided:?}"
    );

    // Mention injection: parameters and output can never mention anyone.
    h.say("!say <!channel> and <@U0CAROL> and <!here>").await?;
    let said = wait_said(&*h, "the injected result", |s| {
        s.text.contains("<!channel> and") && s.text.contains("succeeded")
    })
    .await?;
    let id = ids(&said.text).pop().context("an execution id")?;
    // The same typed as real mentions (Slack's own markup in the event).
    h.fake
        .push_event(
            json!({"type": "message", "channel": CHANNEL, "user": ALICE,
                   "text": "!say raw <!everyone>", "ts": "1700000000.999999",
                   "channel_type": "channel"}),
            "Ev-raw-mention",
        )
        .await?;
    wait_said(&*h, "the raw mention result", |s| {
        s.text.contains("raw <!everyone>") && s.text.contains("succeeded")
    })
    .await?;
    for p in h.fake.posted() {
        let raw = p.raw.to_string();
        for bad in ["<!channel>", "<!here>", "<@U0CAROL>", "<!everyone>"] {
            assert!(!raw.contains(bad), "{bad} reached Slack unescaped: {raw}");
        }
    }
    assert!(
        h.fake
            .posted()
            .iter()
            .any(|p| p.raw.to_string().contains("&lt;!channel&gt;")),
        "the escaped form is shown"
    );
    let finals = h.said().into_iter().filter(|s| is_final(s, &id)).count();
    assert_eq!(finals, 1);

    // A pack that asks for answers in the channel gets them there.
    let typed = h.say("!announce top-level-hello").await?;
    let top = wait_said(&*h, "the top-level result", |s| {
        s.text.contains("top-level-hello") && s.text.contains("succeeded")
    })
    .await?;
    assert_eq!(top.thread, None, "{top:?} (the command was {typed})");

    // A notice (chatops.post_message) to a Slack channel.
    let key = std::fs::read_to_string(h.data.path().join("admin-api-key"))?;
    reqwest::Client::new()
        .post(format!("{}/api/v1/executions", h.base))
        .bearer_auth(key.trim())
        .json(&json!({"action": "chatops.post_message",
                      "parameters": {"channel": format!("slack:{CHANNEL}"), "message": "notice <b>from</b> the API"}}))
        .send()
        .await?
        .error_for_status()?;
    wait_said(&*h, "the notice", |s| {
        s.text.contains("notice <b>from</b> the API")
    })
    .await?;

    // Another bot's message is never a command (squall's own are echoed by
    // the fake all along).
    h.fake
        .push_event(
            json!({"type": "message", "channel": CHANNEL, "bot_id": "B0OTHER",
                   "subtype": "bot_message", "text": "!say from-a-bot", "ts": "1700000001.000001"}),
            "Ev-other-bot",
        )
        .await?;
    // A slash command in the channel, and one in a channel squall is not in
    // (answered through its response_url).
    h.fake.slash(ALICE, CHANNEL, "say slashed").await?;
    wait_said(&*h, "the slash command's result", |s| {
        s.text.contains("slashed") && s.text.contains("succeeded")
    })
    .await?;
    h.fake.set_not_in("C0NOTIN");
    h.fake.slash(ALICE, "C0NOTIN", "say elsewhere").await?;
    eventually(WAIT, "the answer through response_url", || {
        let found = h.fake.posted().into_iter().any(|p| {
            p.kind == Kind::Response && p.text.contains("elsewhere") && p.text.contains("succeeded")
        });
        async move { Ok(found.then_some(())) }
    })
    .await?;
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

/// Signed requests on the Events API route: only the valid one is acted on.
async fn signed_requests(h: &SlackHarness) -> Result<()> {
    let url = format!("{}/api/v1/chat/slack/events", h.base);
    let client = reqwest::Client::new();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let body_for = |text: &str, id: &str, ts: &str| {
        json!({"token": "XXYYZZ", "team_id": slack::TEAM, "api_app_id": "A0SQUALL",
               "type": "event_callback", "event_id": id, "event_time": now(),
               "event": {"type": "message", "channel": CHANNEL, "user": ALICE, "text": text,
                         "ts": ts, "channel_type": "channel"}})
        .to_string()
    };
    let send = |body: String, ts: String, sig: String| {
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-slack-request-timestamp", ts)
                .header("x-slack-signature", sig)
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    // url_verification is answered with its challenge.
    let challenge = json!({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let ts = now().to_string();
    let answer: serde_json::Value = client
        .post(&url)
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", &ts)
        .header(
            "x-slack-signature",
            slack::sign(slack::SIGNING_SECRET, &ts, &challenge),
        )
        .body(challenge)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        answer["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    let ts = now().to_string();
    let valid = body_for("!say signed-valid", "Ev-signed-1", "1700000002.000001");
    let sig = slack::sign(slack::SIGNING_SECRET, &ts, &valid);
    assert_eq!(send(valid.clone(), ts.clone(), sig.clone()).await?, 200);
    // Replayed: the same request again.
    assert_eq!(send(valid, ts.clone(), sig).await?, 401);
    // Tampered: signed for one body, sent with another.
    let tampered = body_for("!say signed-tampered", "Ev-signed-2", "1700000002.000002");
    let sig = slack::sign(
        slack::SIGNING_SECRET,
        &ts,
        &body_for("!say harmless", "Ev-signed-2", "1700000002.000002"),
    );
    assert_eq!(send(tampered, ts, sig).await?, 401);
    // Stale: correctly signed, ten minutes old.
    let old = (now() - 600).to_string();
    let stale = body_for("!say signed-stale", "Ev-signed-3", "1700000002.000003");
    let sig = slack::sign(slack::SIGNING_SECRET, &old, &stale);
    assert_eq!(send(stale, old, sig).await?, 401);
    // Unsigned.
    let ts = now().to_string();
    assert_eq!(
        send(
            body_for("!say signed-none", "Ev-signed-4", "1700000002.000004"),
            ts,
            String::new()
        )
        .await?,
        401
    );
    wait_said(h, "the valid request's result", |s| {
        s.text.contains("signed-valid") && s.text.contains("succeeded")
    })
    .await?;
    outbox_drained(&h.database_url()).await?;
    let said = h.said();
    let valid = said
        .iter()
        .filter(|s| !s.edit && s.text.contains("signed-valid") && s.text.contains("succeeded"))
        .count();
    assert_eq!(valid, 1, "the valid request acted on once");
    for bad in ["signed-tampered", "signed-stale", "signed-none"] {
        assert!(
            !said.iter().any(|s| s.text.contains(bad)),
            "{bad} was acted on"
        );
    }
    Ok(())
}

/// A dropped socket, then a `disconnect` envelope: squall reconnects each
/// time, and every command sent around the loss is answered exactly once.
#[tokio::test]
async fn slack_socket_loss_loses_and_doubles_nothing() -> Result<()> {
    let mut h = SlackHarness::new(Delivery::Socket).await?;
    h.start().await?;
    let mut sent = Vec::new();
    for round in 0..2 {
        let before = h.fake.connections_opened();
        // Commands on the wire as the socket goes.
        for n in 0..5 {
            let text = format!("loss-{round}-{n}");
            h.say(&format!("!say {text}")).await?;
            sent.push(text);
        }
        if round == 0 {
            h.fake.drop_sockets();
        } else {
            h.fake.disconnect();
        }
        for n in 5..10 {
            let text = format!("loss-{round}-{n}");
            h.say(&format!("!say {text}")).await?;
            sent.push(text);
        }
        let fake = &h.fake;
        eventually(WAIT, "squall reconnected", || {
            let up = fake.connections_opened() > before && fake.open_sockets() > 0;
            async move { Ok(up.then_some(())) }
        })
        .await?;
    }
    for text in &sent {
        let probe = text.clone();
        wait_said(&h, &format!("the answer to {text}"), move |s| {
            s.text.contains(&format!("{probe}\n")) && s.text.contains("succeeded")
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
    let fake = &h.fake;
    eventually(WAIT, "every envelope acked", || {
        let (_, open, _, _) = fake.envelopes();
        async move { Ok((open == 0).then_some(())) }
    })
    .await?;
    let (acked, _, twice, redelivered) = h.fake.envelopes();
    assert_eq!(twice, 0);
    eprintln!(
        "socket loss: {} commands, {acked} envelopes acked, {redelivered} redelivered, {} connections opened",
        sent.len(),
        h.fake.connections_opened()
    );
    Ok(())
}

/// Load: 1,000 commands from 50 people in 10 channels through the fake,
/// which allows 5 posts per channel per second and answers the rest with
/// 429. Every command is answered exactly once; the time to the last
/// answer is printed (a benchmark, not an assertion).
#[tokio::test]
async fn slack_load_1000_commands_50_users_10_channels() -> Result<()> {
    let mut h = SlackHarness::new(Delivery::Socket).await?;
    h.fake.set_rate_limit(Some(5));
    h.start().await?;
    let channels: Vec<String> = (0..10).map(|c| format!("C0LOAD{c:02}")).collect();
    let started = Instant::now();
    for n in 0..1000 {
        let user = format!("U0LOAD{:02}", n % 50);
        let channel = &channels[n % 10];
        h.fake
            .say(&user, channel, &format!("!say load-{n}"), None)
            .await?;
    }
    let sent_in = started.elapsed();
    let fake = &h.fake;
    let answered = |fake: &FakeSlack| {
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
    let limited = h.fake.rate_limited();
    assert!(
        limited > 0,
        "the fake never answered 429: the test did not test rate limits"
    );
    eprintln!(
        "slack load: 1000 commands (50 users, 10 channels) sent in {:.1} s; last answer after {:.1} s; \
         {} posts in all, {limited} answered 429",
        sent_in.as_secs_f64(),
        last.as_secs_f64(),
        h.fake.posted().len()
    );
    Ok(())
}

/// A firing alert's notices reach a Slack channel threaded under the
/// firing notice.
#[tokio::test]
async fn slack_alert_notices_are_threaded_per_alert() -> Result<()> {
    let mut h = SlackHarness::new(Delivery::Socket).await?;
    h.start().await?;
    let key = std::fs::read_to_string(h.data.path().join("admin-api-key"))?;
    let base = h.base.clone();
    alert_notices_threaded(&mut h, &base, &key, &format!("slack:{CHANNEL}")).await
}
