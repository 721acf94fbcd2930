//! The registry of trigger types squall knows. Sources (webhooks, timers,
//! alert receivers, execution events) fire these; rules name them.

/// A trigger type and what its payload looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerType {
    pub name: &'static str,
    pub description: &'static str,
}

/// `core.st2.webhook`: payload `{headers, body}`; rule parameter `url` names the webhook.
pub const WEBHOOK: &str = "core.st2.webhook";
/// `squall.execution`: fired when an execution finishes; payload is the execution record.
pub const EXECUTION: &str = "squall.execution";
/// StackStorm's: fired when an execution finishes (st2's payload shape).
pub const ACTION_TRIGGER: &str = "core.st2.generic.actiontrigger";
/// StackStorm's: fired for each `notify:` of a finished execution.
pub const NOTIFY_TRIGGER: &str = "core.st2.generic.notifytrigger";
/// StackStorm's: fired when an approval (inquiry) is requested.
pub const INQUIRY: &str = "core.st2.generic.inquiry";
/// StackStorm's: what `core.announcement` fires; payload is its parameters and `route`.
pub const ANNOUNCEMENT: &str = "core.st2.generic.announcement";
/// `squall.alert`: one alert from a monitoring tool, normalized.
pub const ALERT: &str = "squall.alert";
/// Timers: fire on a schedule given by the rule's trigger parameters.
pub const INTERVAL_TIMER: &str = "core.st2.IntervalTimer";
pub const CRON_TIMER: &str = "core.st2.CronTimer";
pub const DATE_TIMER: &str = "core.st2.DateTimer";

/// Every built-in trigger type. Later sources add theirs here.
pub const BUILTIN: &[TriggerType] = &[
    TriggerType {
        name: WEBHOOK,
        description: "An HTTP POST to /api/v1/webhooks/{url}; payload {headers, body}.",
    },
    TriggerType {
        name: EXECUTION,
        description: "An execution finished; payload {id, action, status, parameters, result, context}.",
    },
    TriggerType {
        name: ACTION_TRIGGER,
        description: "An execution finished (StackStorm's shape); payload {execution_id, status, start_timestamp, action_name, action_ref, runner_ref, parameters, result}.",
    },
    TriggerType {
        name: NOTIFY_TRIGGER,
        description: "An action's `notify:` fired; payload {execution_id, status, start_timestamp, end_timestamp, action_ref, runner_ref, channel, route, message, data, context}.",
    },
    TriggerType {
        name: INQUIRY,
        description: "An approval was requested; payload {id, route, execution_id}.",
    },
    TriggerType {
        name: ANNOUNCEMENT,
        description: "core.announcement ran; payload is its parameters and `route`.",
    },
    TriggerType {
        name: ALERT,
        description: "An alert from /api/v1/alerts/{source}; payload {source, status, name, severity, summary, labels, annotations, fingerprint, starts_at, ends_at, url, raw}.",
    },
    TriggerType {
        name: INTERVAL_TIMER,
        description: "Every `delta` `unit`s (seconds, minutes, hours, days, weeks); payload {executed_at, schedule}.",
    },
    TriggerType {
        name: CRON_TIMER,
        description: "On a cron schedule (second, minute, hour, day, month, day_of_week, timezone); payload {executed_at, schedule}.",
    },
    TriggerType {
        name: DATE_TIMER,
        description: "Once, at `date` (in `timezone`); payload {executed_at, schedule}.",
    },
];

pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|t| t.name).collect()
}

/// Whether rules may name this trigger type: a built-in, or a custom
/// `pack.name` trigger outside the reserved `core.` and `squall.` spaces.
pub fn is_known(name: &str) -> bool {
    BUILTIN.iter().any(|t| t.name == name)
        || (name.contains('.') && !name.starts_with("core.") && !name.starts_with("squall."))
}
