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
