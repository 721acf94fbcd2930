//! Approvals in chat: post inquiry prompts where the execution was started,
//! take votes from reactions, buttons and `approve`/`deny`, and edit the
//! prompt with the decision.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use squall_engine::chat::{
    Button, ChannelRef, ChatAdapter, InteractionEvent, OutgoingMessage, ReactionEvent, SentMessage,
    StatusColor,
};
use squall_engine::execution::ms_to_rfc3339;
use squall_engine::inquiry::{self, Vote, VoteOutcome, Voter};
use squall_engine::rbac::{Permission, Principal};
use squall_engine::store::inquiry as inquiry_row;

use super::{Dispatcher, Reply};

/// Reactions that approve or deny (platforms send the emoji or its name).
const APPROVE: &[&str] = &[
    "✅",
    "✔️",
    "👍",
    "white_check_mark",
    "heavy_check_mark",
    "+1",
    "thumbsup",
];
const DENY: &[&str] = &["❌", "👎", "x", "-1", "thumbsdown", "no_entry"];

fn reaction_vote(emoji: &str) -> Option<bool> {
    let e = emoji.trim().trim_matches(':');
    if APPROVE.contains(&e) {
        Some(true)
    } else if DENY.contains(&e) {
        Some(false)
    } else {
        None
    }
}

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

    /// A reaction on a prompt votes; removing it withdraws the vote.
    pub(super) async fn handle_reaction(&self, event: ReactionEvent) {
        let Some(approve) = reaction_vote(&event.emoji) else {
            return;
        };
        let key = format!("{}:{}", event.platform, event.message_id);
        let Ok(Some(inq)) = self.engine.store.inquiry_by_prompt(&key).await else {
            return;
        };
        let Some(adapter) = self.adapters.get(event.platform.as_str()).cloned() else {
            return;
        };
        let identity = format!("{}:{}", event.platform, event.user);
        if self.bot_identity(&adapter, &event.user) {
            return;
        }
        if event.added && inq.status != "pending" {
            return;
        }
        let principal = self.rbac.principal(&identity);
        let voter = self.voter(&principal);
        let vote = match (event.added, approve) {
            (true, true) => Vote::Approve(None),
            (true, false) => Vote::Deny(None),
            (false, _) => {
                // Only withdraw the vote this reaction cast.
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
        let verb = if approve { "approve" } else { "deny" };
        let reply = Reply {
            adapter,
            to: event.to.clone(),
        };
        match self.engine.vote(&inq.id, &voter, vote).await {
            Ok(outcome) => {
                // Reactions of people who may not vote get a notice; a removed
                // reaction that changes nothing stays quiet.
                let quiet = !event.added && matches!(outcome, VoteOutcome::Closed(_));
                if !quiet {
                    let text = outcome_text(&identity, verb, &inq.id, &outcome);
                    reply.say(OutgoingMessage::text(text)).await;
                }
                self.engine.host.inquiries.notify_waiters();
            }
            Err(err) => reply.internal_error(&err).await,
        }
    }

    /// Buttons under a prompt: `inquiry:<id>:approve|deny`.
    pub(super) async fn handle_interaction(&self, event: InteractionEvent) {
        let mut parts = event.button_id.splitn(3, ':');
        let (Some("inquiry"), Some(id), Some(action)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let Some(adapter) = self.adapters.get(event.platform.as_str()).cloned() else {
            return;
        };
        let identity = format!("{}:{}", event.platform, event.user);
        let principal = self.rbac.principal(&identity);
        let voter = self.voter(&principal);
        let (vote, verb) = match action {
            "approve" => (Vote::Approve(None), "approve"),
            "deny" => (Vote::Deny(None), "deny"),
            _ => return,
        };
        let reply = Reply {
            adapter,
            to: event.to.clone(),
        };
        match self.engine.vote(id, &voter, vote).await {
            Ok(outcome) => {
                reply
                    .say(OutgoingMessage::text(outcome_text(
                        &identity, verb, id, &outcome,
                    )))
                    .await;
                self.engine.host.inquiries.notify_waiters();
            }
            Err(err) => reply.internal_error(&err).await,
        }
    }

    fn bot_identity(&self, adapter: &Arc<dyn ChatAdapter>, user: &str) -> bool {
        adapter.bot_user().as_deref() == Some(user)
    }

    /// Post new prompts and edit decided ones, until the process ends.
    pub(super) async fn prompt_loop(self: Arc<Self>) {
        loop {
            let notified = self.engine.host.inquiries.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.engine.store.inquiries_needing_prompt().await {
                Ok(list) => {
                    for inq in list {
                        if inq.prompt_state == "new" {
                            self.post_prompt(&inq).await;
                        } else {
                            self.finish_prompt(&inq).await;
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "looking for approval prompts failed"),
            }
            self.deliver_notices().await;
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Where an inquiry's prompt goes: the chat it was started from, or its
    /// `channel` (a platform room id, `platform:room`, or a named channel).
    fn prompt_target(
        &self,
        inq: &inquiry_row::Model,
    ) -> Option<(Arc<dyn ChatAdapter>, ChannelRef)> {
        let target: Value = inq
            .target
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())?;
        let channel = target.get("channel")?.as_str()?;
        let thread = target
            .get("thread")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match target.get("platform").and_then(Value::as_str) {
            Some(platform) => {
                let adapter = self.adapters.get(platform)?.clone();
                Some((
                    adapter,
                    ChannelRef {
                        channel: channel.to_owned(),
                        thread,
                    },
                ))
            }
            None => {
                let (adapter, mut to) = self.resolve_channel(channel)?;
                to.thread = thread;
                Some((adapter, to))
            }
        }
    }

    /// The root message of a thread key in a channel, when it has one.
    async fn thread_root(
        &self,
        key: &str,
        adapter: &Arc<dyn ChatAdapter>,
        to: &ChannelRef,
    ) -> Option<String> {
        let key = format!("{key}|{}|{}", adapter.platform(), to.channel);
        self.engine.store.chat_thread(&key).await.ok().flatten()
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

    /// Send the notices actions queued (`chatops.post_message`).
    async fn deliver_notices(&self) {
        let queued = match self.engine.store.chat_messages_to_send().await {
            Ok(q) => q,
            Err(err) => {
                tracing::warn!(error = %err, "looking for chat notices failed");
                return;
            }
        };
        for notice in queued {
            let Some((adapter, mut to)) = self.resolve_channel(&notice.target) else {
                // Another node may have the adapter for this channel.
                if self.adapters.is_empty() {
                    continue;
                }
                let _ = self
                    .engine
                    .store
                    .move_chat_message(
                        &notice.id,
                        "new",
                        "failed",
                        None,
                        Some(&format!(
                            "unknown channel {:?}: name it in [chat.channels] or write platform:room",
                            notice.target
                        )),
                    )
                    .await;
                continue;
            };
            match self
                .engine
                .store
                .move_chat_message(&notice.id, "new", "sending", None, None)
                .await
            {
                Ok(true) => {}
                _ => continue,
            }
            let body: Value = serde_json::from_str(&notice.message).unwrap_or(Value::Null);
            let message = OutgoingMessage {
                title: body["title"].as_str().map(str::to_owned),
                text: body["text"].as_str().unwrap_or_default().to_owned(),
                ..OutgoingMessage::default()
            };
            let thread_key = notice
                .thread_key
                .as_ref()
                .map(|k| format!("{k}|{}|{}", adapter.platform(), to.channel));
            if let Some(key) = &thread_key
                && let Ok(Some(root)) = self.engine.store.chat_thread(key).await
            {
                to.thread = Some(root);
            }
            match adapter.send(&to, &message).await {
                Ok(sent) => {
                    if let Some(key) = &thread_key
                        && to.thread.is_none()
                        && let Err(err) = self
                            .engine
                            .store
                            .set_chat_thread(key, &sent.message_id)
                            .await
                    {
                        tracing::warn!(error = %err, "recording a notice thread failed");
                    }
                    let reference = json!({
                        "platform": adapter.platform(),
                        "channel": sent.to.channel,
                        "thread": to.thread,
                        "message_id": sent.message_id,
                    });
                    let _ = self
                        .engine
                        .store
                        .move_chat_message(&notice.id, "sending", "sent", Some(&reference), None)
                        .await;
                }
                Err(squall_engine::chat::AdapterError::Transient { reason, .. }) => {
                    // The connection is down for now: try again on the next round.
                    tracing::warn!(notice = %notice.id, %reason, "sending a notice failed; will retry");
                    let _ = self
                        .engine
                        .store
                        .move_chat_message(&notice.id, "sending", "new", None, None)
                        .await;
                }
                Err(err) => {
                    let _ = self
                        .engine
                        .store
                        .move_chat_message(
                            &notice.id,
                            "sending",
                            "failed",
                            None,
                            Some(&err.to_string()),
                        )
                        .await;
                }
            }
        }
    }

    async fn post_prompt(&self, inq: &inquiry_row::Model) {
        let Some((adapter, mut to)) = self.prompt_target(inq) else {
            // Started outside chat (API, CLI, rule): answered with
            // `squall inquiry respond` or the API.
            let _ = self
                .engine
                .store
                .move_prompt(&inq.id, "new", "none", None)
                .await;
            return;
        };
        match self
            .engine
            .store
            .move_prompt(&inq.id, "new", "posting", None)
            .await
        {
            Ok(true) => {}
            _ => return,
        }
        let thread_key = inq
            .target
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .and_then(|t| {
                t.get("thread_key")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        if let Some(key) = thread_key
            && let Some(root) = self.thread_root(&key, &adapter, &to).await
        {
            to.thread = Some(root);
        }
        let caps = adapter.capabilities();
        let message = self.prompt_message(inq, caps.buttons, caps.reactions);
        let Ok(sent) = adapter.send(&to, &message).await else {
            tracing::warn!(inquiry = %inq.id, "posting an approval prompt failed; will retry");
            let _ = self
                .engine
                .store
                .move_prompt(&inq.id, "posting", "new", None)
                .await;
            return;
        };
        if caps.reactions {
            for emoji in ["✅", "❌"] {
                if let Err(err) = adapter.react(&sent, emoji).await {
                    tracing::debug!(error = %err, "adding a vote reaction failed");
                }
            }
        }
        let reference = json!({
            "platform": adapter.platform(),
            "channel": sent.to.channel,
            "thread": sent.to.thread,
            "message_id": sent.message_id,
            "poster": self.instance,
        });
        let key = format!("{}:{}", adapter.platform(), sent.message_id);
        if let Err(err) = self
            .engine
            .store
            .move_prompt(&inq.id, "posting", "posted", Some((&reference, &key)))
            .await
        {
            tracing::warn!(error = %err, "recording an approval prompt failed");
        }
    }

    fn prompt_message(
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
                        id: format!("inquiry:{}:approve", inq.id),
                        label: "Approve".into(),
                    },
                    Button {
                        id: format!("inquiry:{}:deny", inq.id),
                        label: "Deny".into(),
                    },
                ]
            } else {
                Vec::new()
            },
            ..OutgoingMessage::default()
        }
    }

    /// Edit a decided prompt to show the decision, who made it and when.
    async fn finish_prompt(&self, inq: &inquiry_row::Model) {
        let Some(reference) = inq
            .prompt_ref
            .as_deref()
            .and_then(|r| serde_json::from_str::<Value>(r).ok())
        else {
            return;
        };
        let platform = reference["platform"].as_str().unwrap_or_default();
        let Some(adapter) = self.adapters.get(platform).cloned() else {
            return;
        };
        // A console prompt belongs to the process that printed it.
        if platform == "console" && reference["poster"].as_str() != Some(self.instance.as_str()) {
            return;
        }
        match self
            .engine
            .store
            .move_prompt(&inq.id, "posted", "final", None)
            .await
        {
            Ok(true) => {}
            _ => return,
        }
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
        let message = OutgoingMessage {
            title: Some(format!("{title}: {}", what(&p))),
            text,
            fields: vec![("Inquiry".into(), inq.id.clone())],
            color: Some(color),
            ..OutgoingMessage::default()
        };
        let sent = SentMessage {
            to: ChannelRef {
                channel: reference["channel"].as_str().unwrap_or_default().to_owned(),
                thread: reference["thread"].as_str().map(str::to_owned),
            },
            message_id: reference["message_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        let edited = if adapter.capabilities().edits {
            adapter.edit(&sent, &message).await.is_ok()
        } else {
            false
        };
        if !edited {
            let _ = adapter.send(&sent.to, &message).await;
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
