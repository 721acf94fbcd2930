//! Approvals in chat: what prompts and decisions say (the delivery loop
//! posts them where the execution was started), and votes from reactions,
//! buttons and `approve`/`deny`.

use std::sync::Arc;

use serde_json::Value;

use squall_engine::chat::{
    Button, ChannelRef, ChatAdapter, OutgoingMessage, StatusColor, VoteEvent, VoteTarget,
    vote_button_id,
};
use squall_engine::execution::ms_to_rfc3339;
use squall_engine::inquiry::{self, Vote, VoteOutcome, Voter};
use squall_engine::rbac::{Permission, Principal};
use squall_engine::store::inquiry as inquiry_row;

use super::{Dispatcher, Reply};

impl Dispatcher {
    pub(super) fn voter(&self, principal: &Principal) -> Voter {
        Voter {
            identity: principal.identity.clone(),
            roles: principal.roles.clone(),
            may_respond: self.rbac.allows(principal, &Permission::InquiryRespond),
        }
    }

    /// `approve <id> [json]` and `deny <id> [reason]`.
    pub(super) async fn vote_command(
        &self,
        reply: &Reply,
        principal: &Principal,
        approve: bool,
        rest: &str,
    ) {
        let (id, tail) = match rest.split_once(char::is_whitespace) {
            Some((id, tail)) => (id, tail.trim()),
            None => (rest, ""),
        };
        let verb = if approve { "approve" } else { "deny" };
        if id.is_empty() {
            reply
                .say(OutgoingMessage::text(format!(
                    "Usage: {p}approve <inquiry id> [response JSON] or {p}deny <inquiry id> [reason]",
                    p = self.settings.prefix
                )))
                .await;
            return;
        }
        let vote = if approve {
            if tail.is_empty() {
                Vote::Approve(None)
            } else {
                match serde_json::from_str::<Value>(tail) {
                    Ok(v) => Vote::Approve(Some(v)),
                    Err(e) => {
                        reply
                            .say(OutgoingMessage::text(format!(
                                "The response after the id must be JSON ({e}); leave it out to simply approve."
                            )))
                            .await;
                        return;
                    }
                }
            }
        } else {
            Vote::Deny((!tail.is_empty()).then(|| tail.to_owned()))
        };
        let id = match self.resolve_inquiry(id).await {
            Ok(id) => id,
            Err(text) => {
                reply.say(OutgoingMessage::text(text)).await;
                return;
            }
        };
        let voter = self.voter(principal);
        match self.engine.vote(&id, &voter, vote).await {
            Ok(outcome) => {
                let text = outcome_text(&voter.identity, verb, &id, &outcome);
                reply.say(OutgoingMessage::text(text)).await;
                self.engine.host.inquiries.notify_waiters();
            }
            Err(err) => reply.internal_error(&err).await,
        }
    }

    /// Accept a full id, or a unique prefix of at least 6 characters of a
    /// pending inquiry's id (ids are long to type in chat).
    async fn resolve_inquiry(&self, id: &str) -> Result<String, String> {
        if let Ok(Some(found)) = self.engine.store.get_inquiry(id).await {
            return Ok(found.id);
        }
        let upper = id.to_ascii_uppercase();
        if upper.len() >= 6 {
            let pending = self
                .engine
                .store
                .list_inquiries(Some("pending"), 500)
                .await
                .unwrap_or_default();
            let matches: Vec<&inquiry_row::Model> = pending
                .iter()
                .filter(|i| i.id.starts_with(&upper))
                .collect();
            match matches.as_slice() {
                [one] => return Ok(one.id.clone()),
                [] => {}
                many => {
                    return Err(format!(
                        "{id} matches {} pending requests; give more of the id.",
                        many.len()
                    ));
                }
            }
        }
        Err(format!("There is no approval request {id}."))
    }

    /// `inquiries`: the pending approval requests.
    pub(super) async fn list_inquiries(&self, reply: &Reply) {
        let pending = match self.engine.store.list_inquiries(Some("pending"), 20).await {
            Ok(list) => list,
            Err(err) => return reply.internal_error(&err).await,
        };
        let text = if pending.is_empty() {
            "No approval requests are waiting.".to_owned()
        } else {
            pending
                .iter()
                .map(|i| {
                    let p = inquiry::params(i);
                    format!(
                        "{}  {}  needs {} from {}",
                        i.id,
                        what(&p),
                        inquiry::required(&p),
                        inquiry::who_may_answer(&p)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        reply
            .say(OutgoingMessage {
                title: Some("Waiting for approval".into()),
                text,
                ..OutgoingMessage::default()
            })
            .await;
    }

    /// A vote on a prompt (a reaction, a button), or a vote taken back (a
    /// removed reaction: only the vote that reaction cast is withdrawn).
    pub(super) async fn handle_vote(&self, event: VoteEvent) {
        let inq = match &event.on {
            VoteTarget::Message(message_id) => {
                let key = format!("{}:{}", event.platform, message_id);
                self.prompt_inquiry(&key).await
            }
            VoteTarget::Inquiry(id) => self.engine.store.get_inquiry(id).await,
        };
        let Ok(Some(inq)) = inq else {
            return;
        };
        let from_reaction = matches!(event.on, VoteTarget::Message(_));
        if from_reaction && !event.withdrawn && inq.status != "pending" {
            return;
        }
        let identity = event.identity();
        let principal = self.rbac.principal(&identity);
        let voter = self.voter(&principal);
        let vote = match (event.withdrawn, event.approve) {
            (false, true) => Vote::Approve(None),
            (false, false) => Vote::Deny(None),
            (true, approve) => {
                let votes = self
                    .engine
                    .store
                    .inquiry_votes(&inq.id)
                    .await
                    .unwrap_or_default();
                if !votes
                    .iter()
                    .any(|v| v.voter == identity && v.approve == approve)
                {
                    return;
                }
                Vote::Withdraw
            }
        };
        let verb = if event.approve { "approve" } else { "deny" };
        let reply = self.reply_to(&event.platform, event.to.clone());
        match self.engine.vote(&inq.id, &voter, vote).await {
            Ok(outcome) => {
                // Votes of people who may not vote get a notice; a removed
                // reaction that changes nothing stays quiet.
                let quiet = event.withdrawn && matches!(outcome, VoteOutcome::Closed(_));
                if !quiet {
                    let text = outcome_text(&identity, verb, &inq.id, &outcome);
                    let mut message = OutgoingMessage::text(text);
                    // A refused click is the clicker's business: shown to
                    // them alone where the platform can.
                    if !from_reaction
                        && matches!(outcome, VoteOutcome::Refused(_) | VoteOutcome::Invalid(_))
                    {
                        message.only_for = Some(event.user.clone());
                    }
                    reply.say(message).await;
                }
                self.engine.host.inquiries.notify_waiters();
            }
            Err(err) => reply.internal_error(&err).await,
        }
    }

    /// The request a prompt message (`platform:message id`) asks about. A
    /// reaction can arrive before the prompt's send has returned: while
    /// prompts are being sent, wait (up to 10 s) for them to be recorded.
    async fn prompt_inquiry(
        &self,
        key: &str,
    ) -> Result<Option<inquiry_row::Model>, squall_engine::store::StoreError> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let delivered = self.delivered.notified();
            tokio::pin!(delivered);
            delivered.as_mut().enable();
            // Read before the lookup: a prompt recorded after it was in
            // flight before it.
            let in_flight = self
                .prompts_in_flight
                .load(std::sync::atomic::Ordering::SeqCst);
            let found = self.engine.store.inquiry_by_prompt(key).await?;
            if found.is_some() || in_flight == 0 {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, delivered).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Whether `name` is `platform:room` of a platform this node does not
    /// hold (another node delivers it).
    pub(super) fn held_elsewhere(&self, name: &str) -> bool {
        let name = self
            .settings
            .channels
            .get(name)
            .map_or(name, String::as_str);
        name.split_once(':').is_some_and(|(p, _)| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_lowercase())
                && !self.adapters.contains_key(p)
        })
    }

    /// A channel as actions and approvals name it: a name from
    /// `[chat.channels]`, `platform:room`, or a room id of the only adapter.
    pub(super) fn resolve_channel(&self, name: &str) -> Option<(Arc<dyn ChatAdapter>, ChannelRef)> {
        let mut channel = name.to_owned();
        if let Some(named) = self.settings.channels.get(&channel) {
            channel = named.clone();
        }
        let (adapter, room) = match channel.split_once(':') {
            Some((p, room)) if self.adapters.contains_key(p) => {
                (self.adapters.get(p)?.clone(), room.to_owned())
            }
            // `platform:room` of a platform another node holds: not ours
            // (a Matrix room id starts with `!`, never a bare word).
            Some((p, _)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()) => {
                return None;
            }
            _ if self.adapters.len() == 1 => (self.adapters.values().next()?.clone(), channel),
            _ => return None,
        };
        Some((
            adapter,
            ChannelRef {
                channel: room,
                thread: None,
            },
        ))
    }

    /// An approval request, with the ways to answer it the platform has.
    pub(super) fn prompt_message(
        &self,
        inq: &inquiry_row::Model,
        buttons: bool,
        reactions: bool,
    ) -> OutgoingMessage {
        let p = inquiry::params(inq);
        let required = inquiry::required(&p);
        let mut text = String::new();
        if let Some(message) = p.get("message").and_then(Value::as_str) {
            text.push_str(message);
            text.push_str("\n\n");
        }
        text.push_str(&format!(
            "Requested by {}. Needs {required} approval{} from {}.",
            inq.requester.as_deref().unwrap_or("squall"),
            if required == 1 { "" } else { "s" },
            inquiry::who_may_answer(&p),
        ));
        if p.get("allow_self_approval").and_then(Value::as_bool) != Some(true)
            && let Some(requester) = &inq.requester
        {
            text.push_str(&format!(" {requester} cannot approve their own request."));
        }
        if let Some(expires) = inq.expires_at {
            text.push_str(&format!(" Expires {}.", ms_to_rfc3339(expires)));
        }
        let prefix = &self.settings.prefix;
        let how = if reactions {
            format!(
                "\nReact ✅ to approve or ❌ to deny, or reply `{prefix}approve {id}` / `{prefix}deny {id} [reason]`.",
                id = inq.id
            )
        } else {
            format!(
                "\nReply `{prefix}approve {id}` or `{prefix}deny {id} [reason]`.",
                id = inq.id
            )
        };
        text.push_str(&how);
        OutgoingMessage {
            title: Some(format!("Approval needed: {}", what(&p))),
            text,
            fields: vec![("Inquiry".into(), inq.id.clone())],
            color: Some(StatusColor::Warning),
            buttons: if buttons {
                vec![
                    Button {
                        id: vote_button_id(&inq.id, true),
                        label: "Approve".into(),
                    },
                    Button {
                        id: vote_button_id(&inq.id, false),
                        label: "Deny".into(),
                    },
                ]
            } else {
                Vec::new()
            },
            ..OutgoingMessage::default()
        }
    }

    /// A decided prompt: the decision, who made it and when.
    pub(super) fn decision_message(&self, inq: &inquiry_row::Model) -> OutgoingMessage {
        let p = inquiry::params(inq);
        let by: Vec<String> = inq
            .decided_by
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        let at = inq.decided_at.map(ms_to_rfc3339).unwrap_or_default();
        let (title, color, text) = match inq.status.as_str() {
            "approved" => (
                "Approved",
                StatusColor::Success,
                format!("Approved by {} at {at}.", by.join(", ")),
            ),
            "denied" => {
                let reason = inq
                    .response
                    .as_deref()
                    .and_then(|r| serde_json::from_str::<Value>(r).ok())
                    .and_then(|r| r.get("reason").and_then(Value::as_str).map(str::to_owned))
                    .map(|r| format!(" Reason: {r}"))
                    .unwrap_or_default();
                (
                    "Denied",
                    StatusColor::Failure,
                    format!("Denied by {} at {at}.{reason}", by.join(", ")),
                )
            }
            "expired" => (
                "Expired",
                StatusColor::Warning,
                format!("No decision before it expired at {at}."),
            ),
            other => (
                "Closed",
                StatusColor::Warning,
                format!("The request was {other} at {at}."),
            ),
        };
        OutgoingMessage {
            title: Some(format!("{title}: {}", what(&p))),
            text,
            fields: vec![("Inquiry".into(), inq.id.clone())],
            color: Some(color),
            ..OutgoingMessage::default()
        }
    }
}

/// What an inquiry gates, for titles: the workflow action and task.
fn what(p: &Value) -> String {
    let workflow = p.get("workflow_action").and_then(Value::as_str);
    let task = p.get("task").and_then(Value::as_str);
    match (workflow, task) {
        (Some(w), Some(t)) => format!("{w} (task {t})"),
        (Some(w), None) => w.to_owned(),
        _ => "an action".to_owned(),
    }
}

fn outcome_text(identity: &str, verb: &str, id: &str, outcome: &VoteOutcome) -> String {
    match outcome {
        VoteOutcome::NotFound => format!("There is no approval request {id}."),
        VoteOutcome::Closed(status) => format!("Request {id} is already {status}."),
        VoteOutcome::Refused(reason) => {
            format!("{identity}: your vote to {verb} {id} was refused: {reason}")
        }
        VoteOutcome::Invalid(reason) => format!("{identity}: {reason}"),
        VoteOutcome::Recorded {
            approvals,
            required,
        } => {
            if verb == "approve" {
                format!("{identity} approved {id} ({approvals} of {required} approvals).")
            } else {
                format!("{identity} voted on {id} ({approvals} of {required} approvals).")
            }
        }
        VoteOutcome::Withdrawn {
            approvals,
            required,
        } => {
            format!("{identity} withdrew their vote on {id} ({approvals} of {required} approvals).")
        }
        VoteOutcome::Decided(d) => format!(
            "Request {id} is {} by {}.",
            d.status,
            d.decided_by.join(", ")
        ),
    }
}
