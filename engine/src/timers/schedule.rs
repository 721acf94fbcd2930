//! Timer schedules: `core.st2.IntervalTimer`, `core.st2.CronTimer` and
//! `core.st2.DateTimer` rule parameters parsed and stepped (what the catalog
//! checks when it loads a rule, without the scheduler that fires them).

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use crate::execution::ms_to_rfc3339;
use crate::triggers;

/// Whether `trigger` is a timer type.
pub fn is_timer(trigger: &str) -> bool {
    matches!(
        trigger,
        triggers::INTERVAL_TIMER | triggers::CRON_TIMER | triggers::DATE_TIMER
    )
}

/// A parsed timer schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    Interval {
        every_ms: i64,
    },
    Cron {
        cron: Box<croner::Cron>,
        tz: Tz,
        pattern: String,
    },
    Date {
        at_ms: i64,
    },
}

fn field_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn timezone(params: &Map<String, Value>) -> Result<Tz, String> {
    match params.get("timezone").and_then(Value::as_str) {
        None => Ok(Tz::UTC),
        Some(name) => Tz::from_str(name).map_err(|_| {
            format!("unknown timezone {name:?} (use an IANA name like Europe/Berlin)")
        }),
    }
}

/// APScheduler numbers weekdays from Monday = 0; cron from Sunday = 0.
fn cron_weekdays(expr: &str) -> Result<String, String> {
    if expr.chars().any(|c| c.is_ascii_alphabetic()) {
        return Ok(expr.to_ascii_uppercase());
    }
    let shift = |n: &str| -> Result<u32, String> {
        let n: u32 = n
            .parse()
            .map_err(|_| format!("day_of_week {expr:?} is not valid"))?;
        if n > 6 {
            return Err(format!(
                "day_of_week {n} is out of range 0 (Monday) to 6 (Sunday)"
            ));
        }
        Ok((n + 1) % 7)
    };
    let mut parts = Vec::new();
    for part in expr.split(',') {
        if part == "*" || part.starts_with("*/") {
            parts.push(part.to_owned());
        } else if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (shift(a)?, shift(b)?);
            if a <= b {
                parts.push(format!("{a}-{b}"));
            } else {
                // A range across Sunday: list the days.
                let mut d = a;
                loop {
                    parts.push(d.to_string());
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
        } else {
            parts.push(shift(part)?.to_string());
        }
    }
    Ok(parts.join(","))
}

impl Schedule {
    /// Parse a rule's `trigger.parameters` for a timer type.
    pub fn parse(trigger: &str, params: &Map<String, Value>) -> Result<Schedule, String> {
        match trigger {
            triggers::INTERVAL_TIMER => {
                let unit = params
                    .get("unit")
                    .and_then(Value::as_str)
                    .unwrap_or("seconds");
                let unit_ms: i64 = match unit {
                    "seconds" => 1_000,
                    "minutes" => 60_000,
                    "hours" => 3_600_000,
                    "days" => 86_400_000,
                    "weeks" => 604_800_000,
                    other => {
                        return Err(format!(
                            "unit {other:?} is not one of seconds, minutes, hours, days, weeks"
                        ));
                    }
                };
                let delta = params
                    .get("delta")
                    .and_then(Value::as_f64)
                    .filter(|d| *d > 0.0)
                    .ok_or("delta must be a positive number")?;
                let every_ms = (delta * unit_ms as f64) as i64;
                if every_ms < 1_000 {
                    return Err("an interval must be at least one second".into());
                }
                Ok(Schedule::Interval { every_ms })
            }
            triggers::CRON_TIMER => {
                let tz = timezone(params)?;
                for key in params.keys() {
                    if ![
                        "timezone",
                        "year",
                        "month",
                        "day",
                        "week",
                        "day_of_week",
                        "hour",
                        "minute",
                        "second",
                    ]
                    .contains(&key.as_str())
                    {
                        return Err(format!("unknown CronTimer parameter {key:?}"));
                    }
                }
                if params.contains_key("week") {
                    return Err(
                        "`week` (ISO week number) is not supported; use day and month".into(),
                    );
                }
                // APScheduler's rule: fields more significant than the least
                // significant one given default to `*`, less significant to
                // their minimum.
                let order = [
                    "year",
                    "month",
                    "day",
                    "day_of_week",
                    "hour",
                    "minute",
                    "second",
                ];
                let least = order
                    .iter()
                    .rposition(|k| params.contains_key(*k))
                    .ok_or("a CronTimer needs at least one of year, month, day, day_of_week, hour, minute, second")?;
                let get = |k: &str, min: &str| -> String {
                    match params.get(k).and_then(field_text) {
                        Some(v) => v,
                        None if order.iter().position(|o| *o == k) > Some(least) => min.to_owned(),
                        None => "*".to_owned(),
                    }
                };
                let dow = match params.get("day_of_week").and_then(field_text) {
                    Some(v) => cron_weekdays(&v)?,
                    None => "*".to_owned(),
                };
                let mut pattern = format!(
                    "{} {} {} {} {} {dow}",
                    get("second", "0"),
                    get("minute", "0"),
                    get("hour", "0"),
                    get("day", "1"),
                    get("month", "1"),
                );
                if let Some(year) = params.get("year").and_then(field_text) {
                    pattern.push(' ');
                    pattern.push_str(&year);
                }
                let cron = croner::Cron::from_str(&pattern)
                    .map_err(|e| format!("the schedule {pattern:?} is not valid: {e}"))?;
                Ok(Schedule::Cron {
                    cron: Box::new(cron),
                    tz,
                    pattern,
                })
            }
            triggers::DATE_TIMER => {
                let tz = timezone(params)?;
                let date = params
                    .get("date")
                    .and_then(Value::as_str)
                    .ok_or("a DateTimer needs `date` (e.g. \"2026-12-24 18:00:00\")")?;
                let at = if let Ok(t) = DateTime::parse_from_rfc3339(date) {
                    t.with_timezone(&Utc)
                } else {
                    let naive = NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M:%S")
                        .or_else(|_| NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%S"))
                        .map_err(|_| {
                            format!("date {date:?} is not \"YYYY-MM-DD HH:MM:SS\" or RFC 3339")
                        })?;
                    tz.from_local_datetime(&naive)
                        .earliest()
                        .ok_or_else(|| format!("date {date:?} does not exist in {tz}"))?
                        .with_timezone(&Utc)
                };
                Ok(Schedule::Date {
                    at_ms: at.timestamp_millis(),
                })
            }
            other => Err(format!("{other} is not a timer")),
        }
    }

    /// The first due time strictly after `after` (ms).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        match self {
            Schedule::Interval { every_ms } => Some(after + every_ms),
            Schedule::Cron { cron, tz, .. } => {
                let at = tz.timestamp_millis_opt(after).single()?;
                cron.find_next_occurrence(&at, false)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
            Schedule::Date { at_ms } => (after < *at_ms).then_some(*at_ms),
        }
    }

    /// The latest due time at or before `now`, after `last` (ms): what a
    /// timer that missed fires for. `None` when nothing is due.
    pub fn latest_due(&self, last: i64, now: i64) -> Option<i64> {
        let first = self.next_after(last)?;
        if first > now {
            return None;
        }
        match self {
            Schedule::Interval { every_ms } => Some(last + (now - last) / every_ms * every_ms),
            Schedule::Cron { cron, tz, .. } => {
                let at = tz.timestamp_millis_opt(now).single()?;
                cron.find_previous_occurrence(&at, true)
                    .ok()
                    .map(|t| t.timestamp_millis())
                    .filter(|t| *t > last)
            }
            Schedule::Date { at_ms } => Some(*at_ms),
        }
    }

    pub(super) fn describe(&self) -> Value {
        match self {
            Schedule::Interval { every_ms } => json!({"every_seconds": every_ms / 1000}),
            Schedule::Cron { tz, pattern, .. } => json!({"cron": pattern, "timezone": tz.name()}),
            Schedule::Date { at_ms } => json!({"date": ms_to_rfc3339(*at_ms)}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .unwrap_or(0)
    }

    #[test]
    fn interval_counts_from_the_last_fire_and_coalesces_missed_ones() {
        let s = Schedule::parse(
            triggers::INTERVAL_TIMER,
            &params(json!({"unit": "minutes", "delta": 5})),
        )
        .expect("ok");
        assert_eq!(s.next_after(0), Some(300_000));
        // Down for 17 minutes after a fire at 0: one fire, for minute 15.
        assert_eq!(s.latest_due(0, 17 * 60_000), Some(15 * 60_000));
        assert_eq!(s.latest_due(0, 60_000), None);
        assert!(
            Schedule::parse(
                triggers::INTERVAL_TIMER,
                &params(json!({"unit": "fortnights", "delta": 1}))
            )
            .is_err()
        );
        assert!(
            Schedule::parse(
                triggers::INTERVAL_TIMER,
                &params(json!({"unit": "seconds", "delta": 0}))
            )
            .is_err()
        );
    }

    #[test]
    fn cron_fields_follow_apscheduler_defaults_and_timezones() {
        let s = Schedule::parse(
            triggers::CRON_TIMER,
            &params(json!({"hour": 9, "day_of_week": "0-4", "timezone": "Europe/Berlin"})),
        )
        .expect("ok");
        let Schedule::Cron { pattern, .. } = &s else {
            panic!("cron")
        };
        assert_eq!(pattern, "0 0 9 * * 1-5");
        // Friday 2026-11-27 10:00 UTC = 11:00 Berlin: next is Monday 09:00 Berlin = 08:00 UTC.
        let next = s.next_after(at("2026-11-27T10:00:00Z")).expect("next");
        assert_eq!(ms_to_rfc3339(next), "2026-11-30T08:00:00.000Z");
        // Missed Monday to Wednesday: one fire, for Wednesday.
        let latest = s
            .latest_due(at("2026-11-27T10:00:00Z"), at("2026-12-02T12:00:00Z"))
            .expect("due");
        assert_eq!(ms_to_rfc3339(latest), "2026-12-02T08:00:00.000Z");
        let every =
            Schedule::parse(triggers::CRON_TIMER, &params(json!({"second": "*/10"}))).expect("ok");
        let Schedule::Cron { pattern, .. } = &every else {
            panic!("cron")
        };
        assert_eq!(pattern, "*/10 * * * * *");
        let sunday = cron_weekdays("5-6").expect("ok");
        assert_eq!(sunday, "6,0");
        assert!(
            Schedule::parse(
                triggers::CRON_TIMER,
                &params(json!({"hour": 9, "timezone": "Mars/Olympus"}))
            )
            .is_err()
        );
        assert!(Schedule::parse(triggers::CRON_TIMER, &params(json!({"week": 3}))).is_err());
        assert!(Schedule::parse(triggers::CRON_TIMER, &params(json!({"minute": "61"}))).is_err());
    }

    #[test]
    fn date_fires_once() {
        let s = Schedule::parse(
            triggers::DATE_TIMER,
            &params(json!({"date": "2026-12-24 18:00:00", "timezone": "America/New_York"})),
        )
        .expect("ok");
        let due = at("2026-12-24T23:00:00Z");
        assert_eq!(s.next_after(0), Some(due));
        assert_eq!(s.next_after(due), None, "never again after it fired");
        assert_eq!(s.latest_due(0, due + 5), Some(due));
        assert!(
            Schedule::parse(triggers::DATE_TIMER, &params(json!({"date": "tomorrow"}))).is_err()
        );
    }
}
