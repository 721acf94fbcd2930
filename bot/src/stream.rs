//! The live event stream behind `GET /api/v1/stream` (server-sent events).
//!
//! One tailer per server reads the event log in id order and fans events out
//! to every subscriber over a broadcast channel. A subscriber first replays
//! from the log what it asked to resume from (`Last-Event-ID`), then takes
//! live events, skipping ids it already sent: nothing is sent twice and,
//! because the tailer publishes its position before the events, nothing
//! falls between the replay and the live part. A subscriber that falls
//! behind the channel replays the missed part from the log.
//!
//! Event ids come from the database. On PostgreSQL two transactions can
//! commit their ids out of order, so an id missing from the sequence is
//! waited for briefly before the tailer moves past it (`GAP_WAIT`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use squall_engine::store::{Event, Store};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How often the tailer reads the log while someone listens.
const POLL: Duration = Duration::from_millis(50);
/// How long a missing id is waited for (a transaction still committing).
const GAP_WAIT: Duration = Duration::from_secs(3);
/// An id missing before an event this old is gone for good (rolled back).
const GAP_AGE_MS: i64 = 10_000;
const PAGE: u64 = 1000;
/// How often events older than the retention are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The fan-out point for event subscribers.
pub struct StreamHub {
    store: Store,
    /// Events with their SSE data text, serialized once for every client.
    tx: broadcast::Sender<Arc<(Event, String)>>,
    /// The id up to which events were published (or are being published).
    head: AtomicI64,
    /// How long events are kept.
    retention: Duration,
}

impl StreamHub {
    /// Start the tailer; it stops when `shutdown` is cancelled. Events
    /// older than `retention` are purged.
    pub async fn start(
        store: Store,
        retention: Duration,
        shutdown: CancellationToken,
    ) -> Result<Arc<StreamHub>, squall_engine::store::StoreError> {
        let head = store.last_event_id().await?;
        let (tx, _) = broadcast::channel(8192);
        let hub = Arc::new(StreamHub {
            store,
            tx,
            head: AtomicI64::new(head),
            retention,
        });
        tokio::spawn(hub.clone().tail(shutdown));
        Ok(hub)
    }

    pub fn head(&self) -> i64 {
        self.head.load(Ordering::Acquire)
    }

    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    async fn tail(self: Arc<Self>, shutdown: CancellationToken) {
        let mut gap_since: Option<Instant> = None;
        // The first purge comes soon after a start.
        let mut last_purge = Instant::now()
            .checked_sub(PURGE_EVERY - Duration::from_secs(30))
            .unwrap_or_else(Instant::now);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
            if last_purge.elapsed() >= PURGE_EVERY {
                last_purge = Instant::now();
                let keep = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
                let before = squall_engine::execution::now_ms().saturating_sub(keep);
                match self.store.purge_events_before(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(purged = n, "purged old stream events"),
                    Err(err) => tracing::warn!(error = %err, "purging old stream events failed"),
                }
            }
            if self.tx.receiver_count() == 0 {
                // Nobody listens: keep the position current, publish nothing.
                match self.store.last_event_id().await {
                    Ok(id) => self.head.store(id, Ordering::Release),
                    Err(err) => tracing::warn!(error = %err, "reading the event log failed"),
                }
                gap_since = None;
                continue;
            }
            let head = self.head();
            let events = match self.store.events_after(head, PAGE, None).await {
                Ok(events) => events,
                Err(err) => {
                    tracing::warn!(error = %err, "reading the event log failed");
                    continue;
                }
            };
            let ready = publishable(
                head,
                events,
                squall_engine::execution::now_ms(),
                &mut gap_since,
                Instant::now(),
            );
            if let Some(last) = ready.last() {
                // Position first, then the events: a subscriber joining in
                // between replays them from the log and skips the duplicates.
                self.head.store(last.id, Ordering::Release);
                for event in ready {
                    let text = data_text(&event);
                    let _ = self.tx.send(Arc::new((event, text)));
                }
            }
        }
    }

    /// Events after `after` that pass `filter`, replayed from the log and
    /// then live, as an SSE response.
    pub fn subscribe(
        self: &Arc<Self>,
        after: i64,
        filter: Filter,
    ) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
        let rx = self.tx.subscribe();
        let (out, out_rx) = tokio::sync::mpsc::channel::<SseEvent>(256);
        tokio::spawn(self.clone().feed(after, filter, rx, out));
        let stream = futures::stream::unfold(out_rx, |mut rx| async move {
            rx.recv().await.map(|event| (Ok(event), rx))
        });
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
    }

    async fn feed(
        self: Arc<Self>,
        mut last: i64,
        filter: Filter,
        mut rx: broadcast::Receiver<Arc<(Event, String)>>,
        out: tokio::sync::mpsc::Sender<SseEvent>,
    ) {
        // Replay what was published before this subscription.
        if self.replay(&mut last, &filter, &out).await.is_err() {
            return;
        }
        loop {
            match rx.recv().await {
                Ok(published) => {
                    let (event, data) = &*published;
                    if event.id <= last {
                        continue;
                    }
                    last = event.id;
                    if filter.admits(event) && out.send(sse(event, data.clone())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if self.replay(&mut last, &filter, &out).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Send logged events after `last` up to the published head.
    async fn replay(
        &self,
        last: &mut i64,
        filter: &Filter,
        out: &tokio::sync::mpsc::Sender<SseEvent>,
    ) -> Result<(), ()> {
        let head = self.head();
        while *last < head {
            let page = match self
                .store
                .events_after(*last, PAGE, filter.execution.as_deref())
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = %err, "replaying the event log failed");
                    let _ = out
                        .send(SseEvent::default().event("error").data(
                            json!({"error": "internal_error", "detail": "the event log could not be read; reconnect with Last-Event-ID"}).to_string(),
                        ))
                        .await;
                    return Err(());
                }
            };
            let done = (page.len() as u64) < PAGE;
            for event in page {
                if event.id > head {
                    *last = head;
                    return Ok(());
                }
                *last = event.id;
                if filter.admits(&event) && out.send(sse(&event, data_text(&event))).await.is_err()
                {
                    return Err(());
                }
            }
            if done {
                *last = head;
            }
        }
        Ok(())
    }
}

/// The events after `head` that may be published now, in order: up to the
/// first missing id, unless that id has been waited for long enough
/// (`gap_since`, when the gap was first seen) or the event after it is old
/// (the missing id's transaction rolled back long ago).
fn publishable(
    head: i64,
    events: Vec<Event>,
    now_ms: i64,
    gap_since: &mut Option<Instant>,
    now: Instant,
) -> Vec<Event> {
    let mut ready = Vec::with_capacity(events.len());
    let mut expected = head + 1;
    for event in events {
        if event.id != expected {
            let waited = now.saturating_duration_since(*gap_since.get_or_insert(now));
            if waited < GAP_WAIT && event.at > now_ms - GAP_AGE_MS {
                break;
            }
        }
        *gap_since = None;
        expected = event.id + 1;
        ready.push(event);
    }
    ready
}

fn data_text(event: &Event) -> String {
    json!({
        "id": event.id,
        "at": event.at,
        "kind": event.kind,
        "subject": event.subject,
        "data": event.data,
    })
    .to_string()
}

fn sse(event: &Event, data: String) -> SseEvent {
    SseEvent::default()
        .id(event.id.to_string())
        .event(&event.kind)
        .data(data)
}

/// What a subscriber wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Event kinds or kind families (`execution` takes every `execution.*`).
    pub kinds: Vec<String>,
    /// Only events about this execution.
    pub execution: Option<String>,
}

/// Kinds of events the stream carries.
pub const KINDS: [&str; 7] = [
    "execution.created",
    "execution.changed",
    "execution.output",
    "trigger.instance",
    "inquiry.opened",
    "inquiry.decided",
    "chat.delivery",
];

impl Filter {
    fn admits(&self, event: &Event) -> bool {
        if let Some(id) = &self.execution
            && event.subject != *id
        {
            return false;
        }
        self.kinds.is_empty()
            || self.kinds.iter().any(|k| {
                event.kind == *k
                    || event
                        .kind
                        .strip_prefix(k.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
    }

    /// Check requested kinds against [`KINDS`].
    pub fn validate(&self) -> Result<(), String> {
        for kind in &self.kinds {
            let known = KINDS
                .iter()
                .any(|k| k == kind || k.split('.').next() == Some(kind.as_str()));
            if !known {
                return Err(format!(
                    "unknown event kind {kind:?}; kinds: {} (or a family: execution, trigger, inquiry, chat)",
                    KINDS.join(", ")
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, at: i64) -> Event {
        Event {
            id,
            at,
            kind: "execution.changed".into(),
            subject: "x".into(),
            data: serde_json::Value::Null,
        }
    }

    fn ids(ready: &[Event]) -> Vec<i64> {
        ready.iter().map(|e| e.id).collect()
    }

    #[test]
    fn a_missing_id_holds_back_what_follows_until_it_commits_or_times_out() {
        let now_ms = 1_000_000;
        let t0 = Instant::now();
        let mut gap = None;
        // 7 is missing (its transaction has not committed yet): 8 waits.
        let got = publishable(
            5,
            vec![event(6, now_ms), event(8, now_ms)],
            now_ms,
            &mut gap,
            t0,
        );
        assert_eq!(ids(&got), vec![6]);
        assert!(gap.is_some());
        // 7 commits: both go out in order.
        let got = publishable(
            6,
            vec![event(7, now_ms), event(8, now_ms)],
            now_ms,
            &mut gap,
            t0 + Duration::from_millis(100),
        );
        assert_eq!(ids(&got), vec![7, 8]);
        assert!(gap.is_none());
        // 9 never comes (rolled back): after GAP_WAIT, 10 goes out.
        let got = publishable(8, vec![event(10, now_ms)], now_ms, &mut gap, t0);
        assert!(got.is_empty());
        let got = publishable(8, vec![event(10, now_ms)], now_ms, &mut gap, t0 + GAP_WAIT);
        assert_eq!(ids(&got), vec![10]);
    }

    #[test]
    fn a_gap_before_an_old_event_is_skipped_at_once() {
        let now_ms = 1_000_000;
        let mut gap = None;
        let old = now_ms - GAP_AGE_MS - 1;
        let got = publishable(
            1,
            vec![event(3, old), event(4, old)],
            now_ms,
            &mut gap,
            Instant::now(),
        );
        assert_eq!(ids(&got), vec![3, 4]);
    }

    #[test]
    fn kind_filters_take_families_and_exact_kinds() {
        let filter = Filter {
            kinds: vec!["inquiry".into(), "execution.output".into()],
            execution: None,
        };
        let mut e = event(1, 0);
        assert!(!filter.admits(&e));
        e.kind = "execution.output".into();
        assert!(filter.admits(&e));
        e.kind = "inquiry.decided".into();
        assert!(filter.admits(&e));
        e.kind = "inquiryx.decided".into();
        assert!(!filter.admits(&e));
        assert!(filter.validate().is_ok());
        let bad = Filter {
            kinds: vec!["executions".into()],
            execution: None,
        };
        assert!(bad.validate().unwrap_err().contains("unknown event kind"));
    }
}
