//! Timers: rules on `core.st2.IntervalTimer`, `core.st2.CronTimer` and
//! `core.st2.DateTimer` fire on their schedule.
//!
//! Each rule's last fired due time is stored (`timer_state`); a node fires a
//! due time only after claiming it there (compare-and-set), so across
//! restarts and several nodes a due time fires at most once. Fires missed
//! while squall was down are coalesced: at start-up a timer fires once, for
//! the latest due time it missed, and the older missed ones are skipped (and
//! logged). A DateTimer fires once, at its date, or at start-up when its date
//! passed while squall was down and it never fired.

pub mod schedule;

use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::catalog::CatalogHandle;
use crate::execution::{ms_to_rfc3339, now_ms};
use crate::intake::{Intake, TriggerFiring};
use crate::store::Store;
pub use schedule::{Schedule, is_timer};

/// Per-rule state the scheduler keeps between ticks.
struct Tracked {
    trigger: String,
    schedule: Schedule,
    /// Last fired due time (stored), if any.
    last: Option<i64>,
    /// The next due time to fire.
    next: Option<i64>,
}

/// Run the timer scheduler until `shutdown`.
pub async fn run(
    store: Store,
    catalog: CatalogHandle,
    intake: Intake,
    shutdown: CancellationToken,
) {
    let mut tracked: std::collections::HashMap<String, Tracked> = std::collections::HashMap::new();
    loop {
        let now = now_ms();
        let current = catalog.current();
        let rules: Vec<(String, String, Map<String, Value>)> = current
            .rules()
            .filter(|r| r.enabled && is_timer(&r.trigger_type))
            .map(|r| {
                (
                    r.reference(),
                    r.trigger_type.clone(),
                    r.trigger_parameters.clone(),
                )
            })
            .collect();
        tracked.retain(|name, _| rules.iter().any(|(r, _, _)| r == name));
        for (name, trigger, params) in rules {
            if !tracked.contains_key(&name) {
                let Ok(schedule) = Schedule::parse(&trigger, &params) else {
                    continue; // reported when the packs loaded
                };
                let last = match store.timer_last_due(&name).await {
                    Ok(last) => last,
                    Err(e) => {
                        tracing::warn!(rule = %name, error = %e, "reading timer state failed");
                        continue;
                    }
                };
                let next = match (&schedule, last) {
                    // Never fired: an interval counts from now; a date or cron
                    // from the past start of time (a missed date still fires).
                    (Schedule::Interval { every_ms }, None) => Some(now + every_ms),
                    (Schedule::Cron { .. }, None) => schedule.next_after(now),
                    (Schedule::Date { at_ms }, None) => Some(*at_ms),
                    (_, Some(last)) => match schedule.latest_due(last, now) {
                        Some(missed) => {
                            if schedule.next_after(last) != Some(missed) {
                                tracing::warn!(rule = %name, "timer missed several due times while squall was down; firing once for the latest");
                            }
                            Some(missed)
                        }
                        None => schedule.next_after(last),
                    },
                };
                tracked.insert(
                    name.clone(),
                    Tracked {
                        trigger,
                        schedule,
                        last,
                        next,
                    },
                );
            }
            let Some(t) = tracked.get_mut(&name) else {
                continue;
            };
            let Some(due) = t.next.filter(|d| *d <= now) else {
                continue;
            };
            match store.claim_timer(&name, t.last, due).await {
                Ok(true) => {
                    let payload = json!({
                        "executed_at": ms_to_rfc3339(now),
                        "scheduled_for": ms_to_rfc3339(due),
                        "rule": name,
                        "schedule": t.schedule.describe(),
                    });
                    if let Err(e) = intake
                        .fire(TriggerFiring {
                            trigger: t.trigger.clone(),
                            url: Some(name.clone()),
                            payload,
                            source: format!("timer/{name}"),
                        })
                        .await
                    {
                        tracing::error!(rule = %name, error = %e, "firing a timer failed");
                    }
                    t.last = Some(due);
                    t.next = t.schedule.next_after(due.max(now));
                }
                Ok(false) => {
                    // Another node (or an earlier run) fired it: reload.
                    tracked.remove(&name);
                }
                Err(e) => tracing::warn!(rule = %name, error = %e, "claiming a timer failed"),
            }
        }
        let wake = tracked
            .values()
            .filter_map(|t| t.next)
            .min()
            .map_or(1_000, |next| (next - now_ms()).clamp(10, 1_000));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(u64::try_from(wake).unwrap_or(1_000))) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Shared so the engine can start the scheduler.
pub fn spawn(store: Store, catalog: CatalogHandle, intake: Intake, shutdown: CancellationToken) {
    tokio::spawn(run(store, catalog, intake, shutdown));
}
