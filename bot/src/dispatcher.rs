//! The chat dispatcher: turns chat messages into commands, checks who may run
//! them, runs them, acknowledges, and posts results back where they were
//! asked. Platform-neutral: it speaks to adapters only through `ChatAdapter`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use squall_engine::Engine;
use squall_engine::chat::{
    ChannelRef, ChatAdapter, ChatEvent, IncomingMessage, OutgoingMessage, SentMessage, StatusColor,
};
use squall_engine::describe::execution_view;
use squall_engine::execution::{ChatOrigin, ExecutionContext, ExecutionStatus};
use squall_engine::params::Casting;
use squall_engine::rbac::{Permission, Principal, Rbac};
use squall_engine::store::{CancelOutcome, ExecutionFilter, execution};
use squall_engine::{EngineError, pack::Alias};

use crate::config::ChatSection;

mod approvals;

/// Per-user command log for rate limiting.
#[derive(Default)]
struct UserWindow {
    commands: VecDeque<Instant>,
    warned: bool,
}

const RATE_WINDOW: Duration = Duration::from_secs(60);

pub struct Dispatcher {
    engine: Arc<Engine>,
    rbac: Arc<Rbac>,
    adapters: HashMap<&'static str, Arc<dyn ChatAdapter>>,
    settings: ChatSection,
    windows: Mutex<HashMap<String, UserWindow>>,
    tasks: TaskTracker,
    /// Tells this dispatcher's prompts from another process's (console
    /// prompts live in one process's terminal).
    instance: String,
}

impl Dispatcher {
    pub fn new(
        engine: Arc<Engine>,
        rbac: Arc<Rbac>,
        adapters: Vec<Arc<dyn ChatAdapter>>,
        settings: ChatSection,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            engine,
            rbac,
            adapters: adapters.into_iter().map(|a| (a.platform(), a)).collect(),
            settings,
            windows: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            instance: squall_engine::execution::new_id(),
        })
    }

    /// Handle events until the channel closes.
    pub async fn run(self: Arc<Self>, mut events: mpsc::Receiver<ChatEvent>) {
        let prompts = self.spawn_prompts();
        while let Some(event) = events.recv().await {
            let me = self.clone();
            self.tasks.spawn(async move { me.handle(event).await });
        }
        prompts.abort();
    }

    /// Post approval prompts and their decisions (`run` does this; a caller
    /// driving `handle` directly starts it here).
    pub fn spawn_prompts(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().prompt_loop())
    }

    /// Wait until every command in progress has posted its result.
    pub async fn wait_idle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    /// Handle one event: immediate replies are sent before this returns;
    /// results of executions follow from tracked background tasks.
    pub async fn handle(self: &Arc<Self>, event: ChatEvent) {
        match event {
            ChatEvent::Message(message) => self.handle_message(message).await,
            // Reactions and buttons answer approval prompts.
            ChatEvent::Reaction(reaction) => self.handle_reaction(reaction).await,
            ChatEvent::Interaction(interaction) => self.handle_interaction(interaction).await,
        }
    }

    fn command_text<'a>(&self, message: &'a IncomingMessage) -> Option<&'a str> {
        let text = message.text.trim();
        if let Some(rest) = text.strip_prefix(self.settings.prefix.as_str()) {
            return Some(rest.trim());
        }
        (message.direct || message.mentions_bot).then_some(text)
    }

    async fn handle_message(self: &Arc<Self>, message: IncomingMessage) {
        let Some(adapter) = self.adapters.get(message.platform.as_str()).cloned() else {
            tracing::warn!(platform = %message.platform, "message from a platform without an adapter");
            return;
        };
        let Some(command) = self.command_text(&message) else {
            return;
        };
        // Replies go to the command's thread; whether a command starts a
        // thread is the adapter's call (a platform convention).
        let reply_to = message.to.clone();
        let reply = Reply {
            adapter: adapter.clone(),
            to: reply_to,
        };
        if message.text.len() > self.settings.max_message_bytes {
            reply
                .say(OutgoingMessage::text(format!(
                    "That message is {} bytes long; commands are limited to {} bytes. Please shorten it.",
                    message.text.len(),
                    self.settings.max_message_bytes
                )))
                .await;
            return;
        }
        if command.is_empty() {
            return;
        }
        let identity = message.identity();
        if let Some(notice) = self.rate_limited(&identity) {
            if let Some(notice) = notice {
                reply.say(OutgoingMessage::text(notice)).await;
            }
            return;
        }
        let principal = self.rbac.principal(&identity);
        let (word, rest) = match command.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (command, ""),
        };
        match word.to_ascii_lowercase().as_str() {
            "help" => self.help(&reply, &principal, rest).await,
            "whoami" => self.whoami(&reply, &principal).await,
            "status" => self.status(&reply, &principal, rest).await,
            "cancel" => self.cancel(&reply, &principal, rest).await,
            "retry" => self.retry(&reply, &principal, rest, &message).await,
            "executions" => self.executions(&reply, &principal, rest).await,
            "approve" => self.vote_command(&reply, &principal, true, rest).await,
            "deny" => self.vote_command(&reply, &principal, false, rest).await,
            "inquiries" => self.list_inquiries(&reply).await,
            _ => self.run_alias(reply, &principal, command, &message).await,
        }
    }

    /// `None`: go ahead. `Some(notice)`: refused; the notice is sent once per
    /// window so a flood does not turn into a flood of notices.
    fn rate_limited(&self, identity: &str) -> Option<Option<String>> {
        let limit = self.settings.rate_limit_per_minute;
        if limit == 0 {
            return None;
        }
        let mut windows = self.windows.lock().ok()?;
        let window = windows.entry(identity.to_owned()).or_default();
        let now = Instant::now();
        while window
            .commands
            .front()
            .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
        {
            window.commands.pop_front();
        }
        if window.commands.len() < limit {
            window.commands.push_back(now);
            window.warned = false;
            return None;
        }
        if window.warned {
            return Some(None);
        }
        window.warned = true;
        let wait = window
            .commands
            .front()
            .map(|t| RATE_WINDOW.saturating_sub(now.duration_since(*t)).as_secs() + 1)
            .unwrap_or(60);
        Some(Some(format!(
            "You are sending commands too fast: at most {limit} per minute. Try again in {wait} s."
        )))
    }

    async fn help(&self, reply: &Reply, principal: &Principal, filter: &str) {
        let catalog = self.engine.catalog.current();
        let filter = (!filter.is_empty()).then_some(filter);
        let mut by_pack: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in catalog.aliases.help_entries(filter) {
            if !self
                .rbac
                .allows(principal, &Permission::Alias(entry.alias_id.clone()))
            {
                continue;
            }
            let pack = entry
                .alias_id
                .split('.')
                .next()
                .unwrap_or_default()
                .to_owned();
            let line = if entry.description.is_empty() {
                format!("{}{}", self.settings.prefix, entry.display)
            } else {
                format!(
                    "{}{} — {}",
                    self.settings.prefix, entry.display, entry.description
                )
            };
            by_pack.entry(pack).or_default().push(line);
        }
        let mut text = String::new();
        if by_pack.is_empty() {
            text.push_str(
                match filter {
                    Some(f) => format!("No commands you may run match {f:?}.\n"),
                    None => format!(
                        "There are no commands you may run. You are {}: an admin grants commands \
                         in the rbac/ directory (`chat.rbac_dir`), by naming you under `users` with \
                         a role, or with a `default_role` for everyone.\n",
                        principal.identity
                    ),
                }
                .as_str(),
            );
        }
        for (pack, lines) in &by_pack {
            text.push_str(&format!("{pack}:\n"));
            for line in lines {
                text.push_str(&format!("  {line}\n"));
            }
        }
        let p = &self.settings.prefix;
        text.push_str(&format!(
            "built-in: {p}help [filter], {p}status <id>, {p}cancel <id>, {p}retry <id> [failed], {p}executions [n], {p}approve <id>, {p}deny <id> [reason], {p}inquiries, {p}whoami"
        ));
        reply
            .say(OutgoingMessage {
                title: Some("Commands you can run".into()),
                text,
                ..OutgoingMessage::default()
            })
            .await;
    }

    async fn whoami(&self, reply: &Reply, principal: &Principal) {
        let user = principal
            .user
            .as_deref()
            .unwrap_or("not linked to a squall user");
        let roles = if principal.roles.is_empty() {
            "none".to_owned()
        } else {
            principal.roles.join(", ")
        };
        reply
            .say(OutgoingMessage::text(format!(
                "You are {} ({user}); roles: {roles}.",
                principal.identity
            )))
            .await;
    }

    /// Whether `principal` may see or act on an execution: their own, or one
    /// of an action they may run.
    fn may_touch(&self, principal: &Principal, model: &execution::Model) -> bool {
        let owner = serde_json::from_str::<Value>(&model.context)
            .ok()
            .and_then(|c| c.get("user").and_then(Value::as_str).map(str::to_owned));
        owner.as_deref() == Some(principal.identity.as_str())
            || self
                .rbac
                .allows(principal, &Permission::Action(model.action.clone()))
    }

    async fn find_execution(
        &self,
        reply: &Reply,
        principal: &Principal,
        id: &str,
        verb: &str,
    ) -> Option<execution::Model> {
        if id.is_empty() || id.contains(char::is_whitespace) {
            reply
                .say(OutgoingMessage::text(format!(
                    "Usage: {}{verb} <execution id>",
                    self.settings.prefix
                )))
                .await;
            return None;
        }
        match self.engine.store.get_execution(id).await {
            Ok(Some(model)) if self.may_touch(principal, &model) => Some(model),
            Ok(Some(model)) => {
                reply
                    .say(OutgoingMessage::text(format!(
                        "You may not {verb} {id}: it needs the permission `action:{}`.",
                        model.action
                    )))
                    .await;
                None
            }
            Ok(None) => {
                reply
                    .say(OutgoingMessage::text(format!(
                        "There is no execution {id}."
                    )))
                    .await;
                None
            }
            Err(err) => {
                reply.internal_error(&err).await;
                None
            }
        }
    }

    async fn status(&self, reply: &Reply, principal: &Principal, id: &str) {
        if let Some(model) = self.find_execution(reply, principal, id, "status").await {
            let message = self.result_message(&model, None, usize::MAX);
            reply.say(message).await;
        }
    }

    async fn cancel(&self, reply: &Reply, principal: &Principal, id: &str) {
        if self
            .find_execution(reply, principal, id, "cancel")
            .await
            .is_none()
        {
            return;
        }
        let text = match self.engine.cancel(id).await {
            Ok(CancelOutcome::Canceled) => format!("Canceled {id} before it started."),
            Ok(CancelOutcome::Canceling) => {
                format!("Canceling {id}; its process is being stopped.")
            }
            Ok(CancelOutcome::AlreadyFinished(status)) => {
                format!("{id} already finished ({status}); nothing to cancel.")
            }
            Ok(CancelOutcome::NotFound) => format!("There is no execution {id}."),
            Err(err) => return reply.internal_error(&err).await,
        };
        reply.say(OutgoingMessage::text(text)).await;
    }

    async fn retry(
        self: &Arc<Self>,
        reply: &Reply,
        principal: &Principal,
        args: &str,
        message: &IncomingMessage,
    ) {
        // `retry <id> failed`: a workflow from its failed tasks.
        let (id, failed_only) = match args.split_once(char::is_whitespace) {
            Some((id, "failed")) => (id, true),
            _ => (args, false),
        };
        if self
            .find_execution(reply, principal, id, "retry")
            .await
            .is_none()
        {
            return;
        }
        match self
            .engine
            .rerun_with(id, chat_context(message), failed_only)
            .await
        {
            Ok(new_id) => {
                let how = if failed_only {
                    " from its failed tasks"
                } else {
                    ""
                };
                let sent = reply
                    .say(OutgoingMessage::text(format!(
                        "Retrying {id}{how} as execution {new_id}."
                    )))
                    .await;
                self.follow(reply.clone(), new_id, sent, None);
            }
            Err(err) => reply.engine_error(&err).await,
        }
    }

    async fn executions(&self, reply: &Reply, principal: &Principal, arg: &str) {
        let n = if arg.is_empty() {
            5
        } else {
            match arg.parse::<usize>() {
                Ok(n) if (1..=50).contains(&n) => n,
                _ => {
                    reply
                        .say(OutgoingMessage::text(format!(
                            "Usage: {}executions [n] with n from 1 to 50.",
                            self.settings.prefix
                        )))
                        .await;
                    return;
                }
            }
        };
        let recent = match self
            .engine
            .store
            .list_executions(&ExecutionFilter {
                limit: 200,
                ..ExecutionFilter::default()
            })
            .await
        {
            Ok(list) => list,
            Err(err) => return reply.internal_error(&err).await,
        };
        let lines: Vec<String> = recent
            .iter()
            .filter(|m| self.may_touch(principal, m))
            .take(n)
            .map(|m| format!("{}  {}  {}", m.id, m.action, m.status))
            .collect();
        let text = if lines.is_empty() {
            "No executions you may see.".to_owned()
        } else {
            lines.join("\n")
        };
        reply
            .say(OutgoingMessage {
                title: Some("Recent executions".into()),
                text,
                ..OutgoingMessage::default()
            })
            .await;
    }

    async fn run_alias(
        self: &Arc<Self>,
        reply: Reply,
        principal: &Principal,
        command: &str,
        message: &IncomingMessage,
    ) {
        let catalog = self.engine.catalog.current();
        let matched = match catalog.aliases.match_command(command) {
            Ok(m) => m,
            Err(err) => {
                reply.say(OutgoingMessage::text(err.to_string())).await;
                return;
            }
        };
        if let Err(denied) = self.rbac.check(
            &principal.identity,
            &Permission::Alias(matched.alias_id.clone()),
        ) {
            reply.say(OutgoingMessage::text(denied.to_string())).await;
            return;
        }
        let Some(alias) = catalog.alias(&matched.alias_id).cloned() else {
            return;
        };
        for params in matched.parameter_sets() {
            match self
                .engine
                .request_execution(
                    &alias.action_ref,
                    params,
                    Casting::FromText,
                    chat_context(message),
                )
                .await
            {
                Ok(id) => {
                    let sent = match ack_text(&self.engine, &alias, &id, &principal.identity) {
                        Some(text) => reply.say(OutgoingMessage::text(text)).await,
                        None => None,
                    };
                    self.follow(reply.clone(), id, sent, Some(alias.clone()));
                }
                Err(err) => {
                    reply
                        .say(OutgoingMessage::text(format!(
                            "Cannot run {}: {err}",
                            alias.action_ref
                        )))
                        .await;
                    if !matches!(err, EngineError::Parameters(_)) {
                        tracing::error!(error = %err, "requesting an execution from chat failed");
                    }
                }
            }
        }
    }

    /// Watch an execution and post its result; edit the ack with the elapsed
    /// time while it runs, where the platform can edit.
    fn follow(
        self: &Arc<Self>,
        reply: Reply,
        id: String,
        ack: Option<SentMessage>,
        alias: Option<Alias>,
    ) {
        let me = self.clone();
        self.tasks.spawn(async move {
            let started = Instant::now();
            let progress_every = Duration::from_secs(me.settings.progress_seconds.max(1));
            let mut next_progress = progress_every;
            // Each typing notice is a homeserver event: only a command still
            // running after a moment gets one (and then its "stopped").
            let mut typing = false;
            let mut delay = Duration::from_millis(10);
            let finished = me.engine.host.finished.clone();
            let model = loop {
                // Registered before the read, so a completion stored between
                // the read and the wait still wakes us.
                let stored = finished.notified();
                tokio::pin!(stored);
                stored.as_mut().enable();
                match me.engine.store.get_execution(&id).await {
                    Ok(Some(model))
                        if ExecutionStatus::parse(&model.status)
                            .is_some_and(ExecutionStatus::is_terminal) =>
                    {
                        break model;
                    }
                    Ok(Some(model)) => {
                        if !typing && started.elapsed() >= TYPING_AFTER {
                            typing = true;
                            if let Err(err) = reply.adapter.typing(&reply.to, true).await {
                                tracing::debug!(error = %err, "typing notice failed");
                            }
                        }
                        if started.elapsed() >= next_progress && reply.adapter.capabilities().edits
                        {
                            if let Some(ack) = &ack {
                                let text = format!(
                                    "{} is {} ({} s so far)",
                                    id,
                                    model.status,
                                    started.elapsed().as_secs()
                                );
                                if let Err(err) =
                                    reply.adapter.edit(ack, &OutgoingMessage::text(text)).await
                                {
                                    tracing::warn!(error = %err, "editing the ack failed");
                                }
                            }
                            next_progress += progress_every;
                        }
                    }
                    Ok(None) => return,
                    Err(err) => {
                        tracing::warn!(error = %err, execution = %id, "polling an execution failed")
                    }
                }
                // Completions stored by this node wake us at once; the poll
                // covers executions that finish on another node.
                tokio::select! {
                    () = &mut stored => {}
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_millis(500));
            };
            if typing && let Err(err) = reply.adapter.typing(&reply.to, false).await {
                tracing::debug!(error = %err, "typing notice failed");
            }
            let message = me.result_message(&model, alias.as_ref(), me.settings.output_tail_chars);
            let disabled = alias
                .as_ref()
                .and_then(|a| a.result.as_ref())
                .and_then(|r| r.get("enabled"))
                == Some(&Value::Bool(false));
            if !disabled {
                reply.say(message).await;
            }
        });
    }

    /// The result of an execution: the alias's `result.format` when it has one,
    /// otherwise status, duration and the tail of the output.
    fn result_message(
        &self,
        model: &execution::Model,
        alias: Option<&Alias>,
        tail: usize,
    ) -> OutgoingMessage {
        let catalog = self.engine.catalog.current();
        let view = execution_view(model, &catalog);
        let status = model.status.as_str();
        let color = match status {
            "succeeded" => StatusColor::Success,
            "failed" | "timeout" | "abandoned" => StatusColor::Failure,
            "canceled" => StatusColor::Warning,
            _ => StatusColor::Running,
        };
        let template = alias
            .and_then(|a| a.result.as_ref())
            .and_then(|r| r.get("format"))
            .and_then(Value::as_str);
        if let Some(template) = template {
            let ctx = json!({"execution": view, "alias": alias.map(|a| json!({"ref": a.reference(), "action_ref": a.action_ref}))});
            match self.engine.templates.render_str(template, &ctx) {
                Ok(text) => {
                    return OutgoingMessage {
                        text,
                        color: Some(color),
                        ..OutgoingMessage::default()
                    };
                }
                Err(err) => tracing::warn!(error = %err, "rendering an alias result format failed"),
            }
        }
        let duration = view["duration_ms"]
            .as_i64()
            .map(|ms| format!(" in {ms} ms"))
            .unwrap_or_default();
        let mut message = OutgoingMessage {
            title: Some(format!("{} {} {status}{duration}", model.id, model.action)),
            color: Some(color),
            ..OutgoingMessage::default()
        };
        if let Some(error) = view["error"].as_str() {
            message.text = error.to_owned();
        }
        // Output first; a structured result only for runners that print
        // nothing (echo, http) and only when it succeeded: a failure already
        // said why in the text.
        let non_empty = |key: &str| view[key].as_str().filter(|s| !s.trim().is_empty());
        let output = match (non_empty("stdout"), non_empty("stderr")) {
            (Some(out), _) | (None, Some(out)) => out.trim_end().to_owned(),
            (None, None)
                if status == "succeeded"
                    && !view["result"].is_null()
                    && view["result"] != json!({}) =>
            {
                serde_json::to_string_pretty(&view["result"]).unwrap_or_default()
            }
            (None, None) => String::new(),
        };
        if !output.is_empty() {
            let chars = output.chars().count();
            if chars > tail {
                let kept: String = output.chars().skip(chars - tail).collect();
                message.code_blocks.push(format!("…{kept}"));
                message.text.push_str(&format!(
                    "Output truncated to the last {tail} characters; `{}status {}` shows all of it.",
                    self.settings.prefix, model.id
                ));
            } else {
                message.code_blocks.push(output);
            }
        }
        message
    }
}

fn chat_context(message: &IncomingMessage) -> ExecutionContext {
    ExecutionContext {
        source: "chat".into(),
        user: Some(message.identity()),
        chat: Some(ChatOrigin {
            platform: message.platform.clone(),
            channel: message.to.channel.clone(),
            thread: message.to.thread.clone(),
            user: message.user.clone(),
            message_id: message.message_id.clone(),
        }),
        ..ExecutionContext::default()
    }
}

fn ack_text(engine: &Engine, alias: &Alias, id: &str, identity: &str) -> Option<String> {
    let ack = alias.ack.as_ref();
    if ack.and_then(|a| a.get("enabled")) == Some(&Value::Bool(false)) {
        return None;
    }
    let default = format!("Running {} as execution {id}.", alias.action_ref);
    let Some(format) = ack.and_then(|a| a.get("format")).and_then(Value::as_str) else {
        return Some(default);
    };
    let ctx = json!({
        "execution": {"id": id, "action": alias.action_ref},
        "actionalias": {"ref": alias.reference()},
        "user": identity,
    });
    Some(engine.templates.render_str(format, &ctx).unwrap_or(default))
}

/// How long a command runs before its channel is told squall is typing.
const TYPING_AFTER: Duration = Duration::from_secs(1);

/// Where replies go, and through which adapter.
#[derive(Clone)]
struct Reply {
    adapter: Arc<dyn ChatAdapter>,
    to: ChannelRef,
}

impl Reply {
    async fn say(&self, message: OutgoingMessage) -> Option<SentMessage> {
        match self.adapter.send(&self.to, &message).await {
            Ok(sent) => Some(sent),
            Err(err) => {
                tracing::warn!(error = %err, channel = %self.to.channel, "sending a chat reply failed");
                None
            }
        }
    }

    async fn internal_error(&self, err: &(dyn std::fmt::Display + Sync)) {
        let id = squall_engine::execution::new_id();
        tracing::error!(correlation_id = %id, error = %err, "internal error handling a chat command");
        self.say(OutgoingMessage::text(format!(
            "Something went wrong on my side (reference {id})."
        )))
        .await;
    }

    async fn engine_error(&self, err: &EngineError) {
        match err {
            EngineError::Parameters(_)
            | EngineError::NoExecution(_)
            | EngineError::NotAWorkflow(_) => {
                self.say(OutgoingMessage::text(err.to_string())).await;
            }
            other => self.internal_error(other).await,
        }
    }
}
