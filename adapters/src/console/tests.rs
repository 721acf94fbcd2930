//! Unit tests of the console's rendering and input; the adapter as a whole
//! runs the conformance suite (tests/e2e).

use squall_engine::chat::{ChatEvent, OutgoingMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::render::framed;

#[test]
fn continuation_lines_are_indented() {
    let message = OutgoingMessage {
        title: Some("title".into()),
        text: "one\ntwo".into(),
        ..OutgoingMessage::default()
    };
    assert_eq!(
        framed("squall> ", &message),
        "squall> title\n  one\n  two\n"
    );
    assert_eq!(
        framed("squall> ", &OutgoingMessage::default()),
        "squall> \n"
    );
}

#[tokio::test]
async fn lines_become_direct_messages_and_blank_lines_are_skipped() {
    let input: super::Reader =
        Box::new(tokio::io::BufReader::new(&b"help\n\n  \nstatus 1\r\n"[..]));
    let (tx, mut rx) = mpsc::channel(8);
    let n = std::sync::atomic::AtomicU64::new(0);
    super::inbound::read_lines(
        input,
        |text| {
            let id = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            super::inbound::incoming("ops", "console-1", text, id)
        },
        tx,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut texts = Vec::new();
    while let Ok(ChatEvent::Message(m)) = rx.try_recv() {
        assert!(m.direct);
        assert_eq!(m.identity(), "console:ops");
        texts.push(m.text);
    }
    assert_eq!(texts, ["help", "status 1"]);
}
