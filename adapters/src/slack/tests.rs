//! Unit tests of the Slack adapter's pure parts: signatures, escaping,
//! Block Kit limits and Slack's documented payloads. The adapter itself is
//! tested against a local server speaking Slack's wire protocol by the
//! conformance suite (tests/e2e).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

use squall_engine::chat::{ChatEvent, OutgoingMessage, StatusColor, VoteTarget};

use super::inbound::{Inbound, Me, unescape};
use super::render;

fn inbound() -> Inbound {
    let inbound = Inbound::new(
        true,
        Some("8f742231b10e8888abcd99yyyzzz85a5".into()),
        Duration::from_secs(300),
    );
    let _ = inbound.me.set(Me {
        user_id: "UBOT".into(),
    });
    inbound
}

fn sign(secret: &str, ts: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    squall_engine::execution::now_ms() / 1000
}

#[test]
fn signatures_valid_tampered_stale_and_replayed() {
    let inbound = inbound();
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let body = "token=x&team_id=T1&command=%2Fsquall&text=help";
    let ts = now().to_string();
    let sig = sign(secret, &ts, body);
    assert_eq!(
        inbound.verify(Some(&ts), Some(&sig), body.as_bytes()),
        Ok(())
    );
    // The same request again is a replay.
    let err = inbound
        .verify(Some(&ts), Some(&sig), body.as_bytes())
        .unwrap_err();
    assert!(err.contains("replayed"), "{err}");
    // A changed body.
    let ts2 = (now() - 1).to_string();
    let sig2 = sign(secret, &ts2, body);
    let err = inbound
        .verify(Some(&ts2), Some(&sig2), b"token=x&text=deploy")
        .unwrap_err();
    assert!(err.contains("does not match"), "{err}");
    // Signed with another secret.
    let err = inbound
        .verify(
            Some(&ts2),
            Some(&sign("other", &ts2, body)),
            body.as_bytes(),
        )
        .unwrap_err();
    assert!(err.contains("does not match"), "{err}");
    // Old.
    let old = (now() - 301).to_string();
    let err = inbound
        .verify(Some(&old), Some(&sign(secret, &old, body)), body.as_bytes())
        .unwrap_err();
    assert!(err.contains("outside the signature window"), "{err}");
    // Missing headers.
    assert!(inbound.verify(None, Some(&sig), body.as_bytes()).is_err());
}

#[test]
fn text_is_escaped_so_nothing_becomes_a_mention() {
    let message = OutgoingMessage {
        title: Some("**deploy** <!here>".into()),
        text: "hi <!channel> & <@U123> <https://evil|click>".into(),
        fields: vec![("app".into(), "<!everyone>".into())],
        code_blocks: vec!["a < b && c > d\n```\ninjected".into()],
        color: Some(StatusColor::Success),
        ..OutgoingMessage::default()
    };
    let content = render::content(&message).to_string();
    for bad in [
        "<!channel>",
        "<!here>",
        "<@U123>",
        "<!everyone>",
        "<https://evil",
    ] {
        assert!(!content.contains(bad), "{bad} in {content}");
    }
    assert!(content.contains("&lt;!channel&gt;"), "{content}");
    assert!(content.contains("*deploy*"), "{content}");
    assert!(content.contains("#2eb67d"), "{content}");
    // The content parses as slack-morphism's model of a message.
    let parsed: slack_morphism::prelude::SlackMessageContent =
        serde_json::from_value(render::content(&message)).expect("Block Kit");
    assert!(parsed.attachments.is_some());
}

#[test]
fn long_messages_are_split_and_cut_never_refused() {
    let long = "line of output\n".repeat(2000); // 30 000 characters
    let message = OutgoingMessage {
        text: "x".repeat(7000),
        fields: (0..25)
            .map(|i| (format!("f{i}"), "v".repeat(2500)))
            .collect(),
        code_blocks: vec![long.clone(), long],
        buttons: vec![squall_engine::chat::Button {
            id: squall_engine::chat::vote_button_id("01X", true),
            label: "Approve".into(),
        }],
        ..OutgoingMessage::default()
    };
    let blocks = render::blocks(&message);
    assert!(blocks.len() <= 50, "{} blocks", blocks.len());
    for b in &blocks {
        if let Some(t) = b["text"]["text"].as_str() {
            assert!(
                t.chars().count() <= 3000,
                "{} characters",
                t.chars().count()
            );
        }
        for f in b["fields"].as_array().into_iter().flatten() {
            assert!(f["text"].as_str().expect("text").chars().count() <= 2000);
        }
        if let Some(fields) = b["fields"].as_array() {
            assert!(fields.len() <= 10);
        }
    }
    // The buttons survive the cut, last.
    assert_eq!(blocks.last().expect("blocks")["type"], "actions");
    assert_eq!(
        blocks.last().expect("blocks")["elements"][0]["style"],
        "primary"
    );
    assert!(render::fallback(&message).chars().count() <= 3000);
    let parsed: slack_morphism::prelude::SlackMessageContent =
        serde_json::from_value(render::content(&message)).expect("Block Kit");
    assert!(parsed.blocks.is_some());
}

#[test]
fn pieces_cut_at_line_breaks() {
    let text = format!("{}\n{}", "a".repeat(2500), "b".repeat(2500));
    let parts = render::pieces(&text, 3000);
    assert_eq!(parts.len(), 2);
    assert!(parts[0].ends_with('\n') && parts[1].starts_with('b'));
    assert_eq!(render::pieces("", 10), vec![String::new()]);
    assert_eq!(render::pieces("é".repeat(7).as_str(), 3).len(), 3);
}

#[test]
fn typed_text_is_unescaped() {
    assert_eq!(unescape("deploy &lt;web&gt; &amp; db"), "deploy <web> & db");
    assert_eq!(
        unescape("fetch <https://example.com/x|example.com/x> now"),
        "fetch https://example.com/x now"
    );
    assert_eq!(unescape("hi <@U123>"), "hi <@U123>");
}

async fn events_of(inbound: &Inbound, body: serde_json::Value) -> Vec<ChatEvent> {
    let (tx, mut rx) = mpsc::channel(16);
    inbound.push_event(&body, &tx).await;
    drop(tx);
    let mut out = Vec::new();
    while let Some(e) = rx.recv().await {
        out.push(e);
    }
    out
}

fn callback(event: serde_json::Value, id: &str) -> serde_json::Value {
    json!({
        "token": "XXYYZZ", "team_id": "T123ABC456", "api_app_id": "A123ABC456",
        "event": event, "type": "event_callback", "event_id": id, "event_time": 1_355_517_523,
    })
}

#[tokio::test]
async fn messages_mentions_and_bots() {
    let inbound = inbound();
    // A channel message (Slack's documented `message` event).
    let got = events_of(
        &inbound,
        callback(
            json!({"type": "message", "channel": "C123ABC456", "user": "U123ABC456",
                   "text": "!deploy web", "ts": "1355517523.000005",
                   "event_ts": "1355517523.000005", "channel_type": "channel"}),
            "Ev1",
        ),
    )
    .await;
    let [ChatEvent::Message(m)] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert_eq!(m.text, "!deploy web");
    assert_eq!(m.identity(), "slack:U123ABC456");
    assert_eq!(m.to.thread.as_deref(), Some("1355517523.000005"));
    assert!(!m.direct && !m.mentions_bot);
    // The same event again (a retry) and the same message as app_mention: once.
    assert!(
        events_of(
            &inbound,
            callback(
                json!({"type": "message", "channel": "C123ABC456", "user": "U123ABC456",
                            "text": "!deploy web", "ts": "1355517523.000005"}),
                "Ev1"
            )
        )
        .await
        .is_empty()
    );
    assert!(
        events_of(
            &inbound,
            callback(
                json!({"type": "app_mention", "channel": "C123ABC456", "user": "U123ABC456",
                            "text": "!deploy web", "ts": "1355517523.000005"}),
                "Ev2"
            )
        )
        .await
        .is_empty()
    );
    // A mention, in a thread.
    let got = events_of(
        &inbound,
        callback(
            json!({"type": "app_mention", "user": "U061F7AUR", "text": "<@UBOT> status 01ABC",
                   "ts": "1515449522.000016", "thread_ts": "1515449400.000001",
                   "channel": "C123ABC456", "event_ts": "1515449522000016"}),
            "Ev3",
        ),
    )
    .await;
    let [ChatEvent::Message(m)] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert!(m.mentions_bot);
    assert_eq!(m.text, "status 01ABC");
    assert_eq!(m.to.thread.as_deref(), Some("1515449400.000001"));
    // A DM: a command whatever its form; no thread.
    let got = events_of(
        &inbound,
        callback(
            json!({"type": "message", "channel": "D024BE91L", "user": "U2147483697",
                   "text": "help", "ts": "1355517524.000005", "channel_type": "im"}),
            "Ev4",
        ),
    )
    .await;
    let [ChatEvent::Message(m)] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert!(m.direct && m.to.thread.is_none());
    // Bots (another, or squall itself) and edits are not commands.
    for (n, event) in [
        json!({"type": "message", "subtype": "bot_message", "bot_id": "B1", "channel": "C1",
               "text": "!deploy", "ts": "1.1"}),
        json!({"type": "message", "bot_id": "BBOT", "user": "UBOT", "channel": "C1",
               "text": "!deploy", "ts": "1.2"}),
        json!({"type": "message", "user": "UBOT", "channel": "C1", "text": "!deploy", "ts": "1.3"}),
        json!({"type": "message", "subtype": "message_changed", "channel": "C1", "ts": "1.4",
               "message": {"user": "U1", "text": "!deploy"}}),
    ]
    .into_iter()
    .enumerate()
    {
        let got = events_of(&inbound, callback(event, &format!("EvB{n}"))).await;
        assert!(got.is_empty(), "{n}: {got:?}");
    }
}

#[tokio::test]
async fn reactions_and_clicks_are_votes_by_who_did_them() {
    let inbound = inbound();
    let got = events_of(
        &inbound,
        callback(
            json!({"type": "reaction_added", "user": "U123ABC456", "reaction": "white_check_mark",
                   "item_user": "UBOT", "item": {"type": "message", "channel": "C123ABC456",
                   "ts": "1360782400.498405"}, "event_ts": "1360782804.083113"}),
            "EvR1",
        ),
    )
    .await;
    let [ChatEvent::Vote(v)] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert!(v.approve && !v.withdrawn);
    assert_eq!(v.on, VoteTarget::Message("1360782400.498405".into()));
    assert_eq!(v.identity(), "slack:U123ABC456");
    // The bot's own reactions under its prompt are not votes.
    let got = events_of(
        &inbound,
        callback(
            json!({"type": "reaction_added", "user": "UBOT", "reaction": "x",
                   "item": {"type": "message", "channel": "C1", "ts": "1.5"}, "event_ts": "2.0"}),
            "EvR2",
        ),
    )
    .await;
    assert!(got.is_empty());
    // A click (block_actions, as Slack documents it).
    let (tx, mut rx) = mpsc::channel(4);
    let button = squall_engine::chat::vote_button_id("01INQUIRY", false);
    inbound
        .interaction(
            &json!({"type": "block_actions", "user": {"id": "U0CAROL", "username": "carol"},
                    "api_app_id": "A1", "token": "t", "trigger_id": "12466734323.1395872398",
                    "container": {"type": "message", "message_ts": "1.6", "channel_id": "C1"},
                    "channel": {"id": "C1", "name": "ops"},
                    "message": {"type": "message", "ts": "1.6", "thread_ts": "1.0", "text": "x"},
                    "response_url": "https://hooks.slack.com/actions/T1/1/x",
                    "actions": [{"action_id": button, "block_id": "b", "type": "button",
                                 "value": button, "action_ts": "1548426417.840180"}]}),
            &tx,
        )
        .await;
    drop(tx);
    let Some(ChatEvent::Vote(v)) = rx.recv().await else {
        panic!("no vote")
    };
    assert_eq!(v.identity(), "slack:U0CAROL");
    assert_eq!(v.on, VoteTarget::Inquiry("01INQUIRY".into()));
    assert!(!v.approve);
    assert_eq!(v.to.thread.as_deref(), Some("1.0"));
}

#[tokio::test]
async fn slash_commands_are_commands() {
    let inbound = inbound();
    let (tx, mut rx) = mpsc::channel(4);
    let form: std::collections::HashMap<String, String> = [
        ("command", "/squall"),
        ("text", "deploy web &amp; db"),
        ("user_id", "U2147483697"),
        ("channel_id", "C2147483705"),
        ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
        ("response_url", "https://hooks.slack.com/commands/1234/5678"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    inbound.command(&form, &tx).await;
    inbound.command(&form, &tx).await; // a retry: once
    drop(tx);
    let Some(ChatEvent::Message(m)) = rx.recv().await else {
        panic!("no command")
    };
    assert!(rx.recv().await.is_none());
    assert_eq!(m.text, "deploy web & db");
    assert!(m.mentions_bot);
    assert_eq!(
        inbound.response_url("C2147483705").as_deref(),
        Some("https://hooks.slack.com/commands/1234/5678")
    );
}

#[test]
fn config_needs_a_way_in() {
    let base = json!({"bot_token": "xoxb-1"});
    let c: super::SlackConfig = serde_json::from_value(base).expect("parses");
    assert!(c.validate().unwrap_err().contains("signing_secret"));
    let c: super::SlackConfig =
        serde_json::from_value(json!({"bot_token": "xoxb-1", "app_token": "xapp-1"}))
            .expect("parses");
    assert_eq!(c.mode(), super::SlackMode::Socket);
    assert!(c.validate().is_ok());
    let c: super::SlackConfig = serde_json::from_value(
        json!({"bot_token": "xoxb-1", "mode": "events", "signing_secret": "s"}),
    )
    .expect("parses");
    assert_eq!(c.mode(), super::SlackMode::Events);
    assert!(c.validate().is_ok());
    let c: super::SlackConfig = serde_json::from_value(
        json!({"bot_token": "abc", "app_token": "xapp-1", "api_url": "slack"}),
    )
    .expect("parses");
    let err = c.validate().unwrap_err();
    assert!(err.contains("xoxb-") && err.contains("api_url"), "{err}");
}
