//! The chat dispatcher: turns chat messages into commands, checks who may run
//! them, runs them, and queues what squall answers in the chat outbox (the
//! ack and the result of a command are written with the execution itself).
//! The delivery loop (`delivery`) sends the outbox. Platform-neutral: it
//! speaks to adapters only through `ChatAdapter`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_util::task::TaskTracker;

use squall_engine::Engine;
use squall_engine::chat::{
    ChannelRef, ChatAdapter, ChatEvent, IncomingMessage, OutgoingMessage, StatusColor,
};
use squall_engine::describe::execution_summary;
use squall_engine::execution::{ChatOrigin, ExecutionContext, ExecutionStatus};
use squall_engine::params::Casting;
use squall_engine::rbac::{Permission, Principal, Rbac};
use squall_engine::store::{CancelOutcome, ExecutionFilter, NewOutboxRow, OutboxKind, execution};
use squall_engine::{EngineError, pack::Alias};

use crate::config::ChatSection;

mod approvals;
mod delivery;
mod keys;

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
    /// This dispatcher's name as the claimer of outbox rows.
    instance: String,
    /// Wakes the delivery loop after a row was queued here.
    outbox: Arc<Notify>,
    /// Notified after each delivery (`wait_idle` waits on it).
    delivered: Arc<Notify>,
    /// Commands from here still running: typing notices and progress edits.
    running: Mutex<HashMap<String, Running>>,
    /// The delivery loop and the progress ticker, once started.
    started: std::sync::OnceLock<()>,
    /// Approval prompts being sent and not yet recorded: a vote by reaction
    /// on a message squall does not know waits for them.
    prompts_in_flight: std::sync::atomic::AtomicUsize,
}

/// A command from here whose result is not delivered yet: `wait_idle`
/// waits for these (not for every command anywhere), and the progress
/// ticker shows typing and edits the ack for them.
struct Running {
    platform: String,
    to: ChannelRef,
    started: Instant,
    typing: bool,
    /// The platform shows typing notices.
    may_type: bool,
    /// Its ack can be edited with the time so far.
    progress: bool,
    next_progress: Duration,
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
            outbox: Arc::new(Notify::new()),
            delivered: Arc::new(Notify::new()),
            running: Mutex::new(HashMap::new()),
            started: std::sync::OnceLock::new(),
            prompts_in_flight: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Handle events until the channel closes.
    pub async fn run(self: Arc<Self>, mut events: mpsc::Receiver<ChatEvent>) {
        self.start();
        // One queue per channel: a channel's commands are handled, and so
        // answered, in the order they were typed (handling only stores; it
        // never waits for an execution); channels do not wait for each other.
        let mut queues: HashMap<(String, String), mpsc::UnboundedSender<ChatEvent>> =
            HashMap::new();
        while let Some(event) = events.recv().await {
            let key = match &event {
                ChatEvent::Message(m) => (m.platform.clone(), m.to.channel.clone()),
                ChatEvent::Vote(v) => (v.platform.clone(), v.to.channel.clone()),
            };
            let queue = queues.entry(key).or_insert_with(|| {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let me = self.clone();
                self.tasks.spawn(async move {
                    while let Some(event) = rx.recv().await {
                        me.handle(event).await;
                    }
                });
                tx
            });
            if let Err(lost) = queue.send(event) {
                // Its task ended (a panic in a handler): handle this one here.
                self.handle(lost.0).await;
            }
        }
    }

    /// Start delivering the outbox and ticking progress (once; `run` and
    /// `handle` do it).
    pub fn start(self: &Arc<Self>) {
        self.started.get_or_init(|| {
            tokio::spawn(self.clone().delivery_loop());
            tokio::spawn(self.clone().progress_loop());
        });
    }

    /// A single node starting up: what an earlier process of it was sending
    /// when it stopped goes out again, and results it never released (it
    /// died between the end and the release) are released. Several nodes on
    /// one database leave this to lease expiry instead.
    pub async fn recover_outbox(&self) {
        match self.engine.store.release_stale_outbox(&self.instance).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                rows = n,
                "chat messages a stopped squall was sending go out again"
            ),
            Err(err) => tracing::warn!(error = %err, "recovering the chat outbox failed"),
        }
    }

    /// Wait until every command in progress has had its answers delivered
    /// (results included) to the channels this dispatcher holds.
    pub async fn wait_idle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
        self.wait_delivered(true).await;
    }

    /// Wait until what has been queued so far is delivered: replies and
    /// acks, not the results of commands still running.
    pub async fn flush(&self) {
        self.wait_delivered(false).await;
    }

    async fn wait_delivered(&self, held_too: bool) {
        loop {
            let delivered = self.delivered.notified();
            tokio::pin!(delivered);
            delivered.as_mut().enable();
            match self.undelivered(held_too).await {
                Ok(0) => return,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "reading the chat outbox failed");
                    return;
                }
            }
            tokio::select! {
                () = &mut delivered => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Handle one event: immediate replies are queued before this returns;
    /// results follow when their executions end.
    pub async fn handle(self: &Arc<Self>, event: ChatEvent) {
        self.start();
        match event {
            ChatEvent::Message(message) => self.handle_message(message).await,
            // Votes (reactions, buttons) answer approval prompts.
            ChatEvent::Vote(vote) => self.handle_vote(vote).await,
        }
    }

    /// Where an answer to `to` on `platform` goes.
    fn reply_to(&self, platform: &str, to: ChannelRef) -> Reply {
        Reply {
            engine: self.engine.clone(),
            outbox: self.outbox.clone(),
            platform: platform.to_owned(),
            to,
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
        if let Some(result) = self.handle_command(&message).await {
            self.engine
                .host
                .metrics
                .chat_command(&message.platform, result);
        }
    }

    /// Answer one chat message; what became of it, if it was a command.
    async fn handle_command(self: &Arc<Self>, message: &IncomingMessage) -> Option<&'static str> {
        if !self.adapters.contains_key(message.platform.as_str()) {
            tracing::warn!(platform = %message.platform, "message from a platform without an adapter");
            return None;
        }
        let command = self.command_text(message)?;
        tracing::debug!(platform = %message.platform, message = %message.message_id, "chat command");
        // Replies go to the command's thread; whether a command starts a
        // thread is the adapter's call (a platform convention).
        let reply = self.reply_to(&message.platform, message.to.clone());
        if message.text.len() > self.settings.max_message_bytes {
            reply
                .say(OutgoingMessage::text(format!(
                    "That message is {} bytes long; commands are limited to {} bytes. Please shorten it.",
                    message.text.len(),
                    self.settings.max_message_bytes
                )))
                .await;
            return Some("too_long");
        }
        if command.is_empty() {
            return None;
        }
        let identity = message.identity();
        if let Some(notice) = self.rate_limited(&identity) {
            if let Some(notice) = notice {
                reply.say(OutgoingMessage::text(notice)).await;
            }
            return Some("rate_limited");
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
            "retry" => self.retry(&reply, &principal, rest, message).await,
            "executions" => self.executions(&reply, &principal, rest).await,
            "approve" => self.vote_command(&reply, &principal, true, rest).await,
            "deny" => self.vote_command(&reply, &principal, false, rest).await,
            "inquiries" => self.list_inquiries(&reply).await,
            "key" => self.key_command(&reply, &principal, rest).await,
            _ => return Some(self.run_alias(reply, &principal, command, message).await),
        }
        Some("builtin")
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
            "built-in: {p}help [filter], {p}status <id>, {p}cancel <id>, {p}retry <id> [failed], {p}executions [n], {p}approve <id>, {p}deny <id> [reason], {p}inquiries, {p}key list|get|set|delete [system] ..., {p}whoami"
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
        let owner = serde_json::from_str::<ExecutionContext>(&model.context)
            .ok()
            .and_then(|c| c.user);
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
        // The answer sorts before the canceled result the cancel releases.
        let asked = squall_engine::execution::now_ms();
        let outcome = self.engine.cancel(id).await;
        if matches!(
            outcome,
            Ok(CancelOutcome::Canceled | CancelOutcome::Canceling)
        ) {
            self.engine
                .record_control(&principal.identity, "execution.cancel", id, "chat")
                .await;
        }
        let text = match outcome {
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
        reply.say_at(OutgoingMessage::text(text), Some(asked)).await;
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
        // The ack ("Retrying ... as execution ...") and the result are
        // written with the new execution.
        match self
            .engine
            .rerun_with(id, chat_context(message, None, true, true), failed_only)
            .await
        {
            Ok(new_id) => {
                self.engine
                    .record_control(&principal.identity, "execution.rerun", id, "chat")
                    .await;
                self.started_command(&new_id, message, true, true);
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
    ) -> &'static str {
        let catalog = self.engine.catalog.current();
        let matched = match catalog.aliases.match_command(command) {
            Ok(m) => m,
            Err(err) => {
                reply.say(OutgoingMessage::text(err.to_string())).await;
                return "no_match";
            }
        };
        if let Err(denied) = self.rbac.check(
            &principal.identity,
            &Permission::Alias(matched.alias_id.clone()),
        ) {
            reply.say(OutgoingMessage::text(denied.to_string())).await;
            return "denied";
        }
        let Some(alias) = catalog.alias(&matched.alias_id).cloned() else {
            return "no_match";
        };
        let mut result_label = "started";
        let ack = alias.ack.as_ref().and_then(|a| a.get("enabled")) != Some(&Value::Bool(false));
        let result =
            alias.result.as_ref().and_then(|r| r.get("enabled")) != Some(&Value::Bool(false));
        // `result: {extra: {thread: false}}`: the pack wants its answers in
        // the channel, not in a thread under the command.
        let threaded = alias
            .result
            .as_ref()
            .and_then(|r| r.get("extra"))
            .and_then(|e| e.get("thread"))
            != Some(&Value::Bool(false));
        for params in matched.parameter_sets() {
            // The ack and the (held) result are written with the execution.
            let mut context = chat_context(message, Some(alias.reference()), ack, result);
            if !threaded && let Some(chat) = context.chat.as_mut() {
                chat.thread = None;
            }
            match self
                .engine
                .request_execution(&alias.action_ref, params, Casting::FromText, context)
                .await
            {
                Ok(id) => self.started_command(&id, message, ack, result),
                Err(err) => {
                    result_label = "rejected";
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
        result_label
    }

    /// A command's execution is stored (with its ack and held result):
    /// wake the delivery loop, and watch it for typing and progress.
    fn started_command(&self, id: &str, message: &IncomingMessage, ack: bool, result: bool) {
        tracing::debug!(execution = %id, message = %message.message_id, "chat command stored");
        self.outbox.notify_one();
        // Without a result to wait for, nothing would ever end its typing.
        if !result {
            return;
        }
        let Some(adapter) = self.adapters.get(message.platform.as_str()) else {
            return;
        };
        let caps = adapter.capabilities();
        if let Ok(mut running) = self.running.lock() {
            running.insert(
                id.to_owned(),
                Running {
                    platform: message.platform.clone(),
                    to: message.to.clone(),
                    started: Instant::now(),
                    typing: false,
                    may_type: caps.typing,
                    progress: caps.edits && ack,
                    next_progress: Duration::from_secs(self.settings.progress_seconds.max(1)),
                },
            );
        }
    }

    /// Typing notices for commands still running after `TYPING_AFTER`, and
    /// a progress edit of their ack every `progress_seconds`. In memory: a
    /// restart loses only these courtesies, never a message.
    async fn progress_loop(self: Arc<Self>) {
        let every = Duration::from_secs(self.settings.progress_seconds.max(1));
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let mut typing_on = Vec::new();
            let mut progress = Vec::new();
            if let Ok(mut running) = self.running.lock() {
                // A result another node delivered never reaches this one.
                running.retain(|_, r| r.started.elapsed() < WATCH_AT_MOST);
                for (id, r) in running.iter_mut() {
                    let elapsed = r.started.elapsed();
                    if r.may_type && !r.typing && elapsed >= TYPING_AFTER {
                        r.typing = true;
                        typing_on.push((r.platform.clone(), r.to.clone()));
                    }
                    if r.progress && elapsed >= r.next_progress {
                        r.next_progress += every;
                        progress.push((id.clone(), elapsed.as_secs()));
                    }
                }
            }
            for (platform, to) in typing_on {
                if let Some(adapter) = self.adapters.get(platform.as_str())
                    && let Err(err) = adapter.typing(&to, true).await
                {
                    tracing::debug!(error = %err, "typing notice failed");
                }
            }
            let mut queued = false;
            for (id, secs) in progress {
                let text = format!("{id} is running ({secs} s so far)");
                match self.engine.store.queue_progress(&id, &text).await {
                    Ok(true) => queued = true,
                    Ok(false) => {}
                    Err(err) => tracing::warn!(error = %err, "queueing a progress edit failed"),
                }
            }
            if queued {
                self.outbox.notify_one();
            }
        }
    }

    /// The result of a command was delivered: stop its typing notice (after
    /// the result, so the result is not kept waiting for it).
    async fn command_answered(&self, id: &str) {
        let stopped = self.running.lock().ok().and_then(|mut r| r.remove(id));
        if let Some(r) = stopped
            && r.typing
            && let Some(adapter) = self.adapters.get(r.platform.as_str())
            && let Err(err) = adapter.typing(&r.to, false).await
        {
            tracing::debug!(error = %err, "typing notice failed");
        }
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
        let view = execution_summary(model, &catalog);
        let color = match view.status {
            Some(ExecutionStatus::Succeeded) => StatusColor::Success,
            Some(
                ExecutionStatus::Failed | ExecutionStatus::Timeout | ExecutionStatus::Abandoned,
            ) => StatusColor::Failure,
            Some(ExecutionStatus::Canceled) => StatusColor::Warning,
            _ => StatusColor::Running,
        };
        let template = alias
            .and_then(|a| a.result.as_ref())
            .and_then(|r| r.get("format"))
            .and_then(Value::as_str);
        if let Some(template) = template {
            let ctx = json!({
                "execution": view,
                "context": serde_json::from_str::<Value>(&model.context).unwrap_or(Value::Null),
                "alias": alias.map(|a| json!({"ref": a.reference(), "action_ref": a.action_ref})),
            });
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
        let duration = view
            .duration_ms
            .map(|ms| format!(" in {ms} ms"))
            .unwrap_or_default();
        let more = format!(
            "`{}status {}` shows all of it",
            self.settings.prefix, model.id
        );
        let mut message = OutgoingMessage {
            title: Some(format!(
                "{} {} {}{duration}",
                model.id, model.action, model.status
            )),
            color: Some(color),
            more: Some(more.clone()),
            ..OutgoingMessage::default()
        };
        if let Some(error) = &view.error {
            message.text = match view.retry {
                Some(retry) => format!("{error}\n({})", retry.advice()),
                None => error.clone(),
            };
        }
        // Output first; a structured result only for runners that print
        // nothing (echo, http) and only when it succeeded: a failure already
        // said why in the text.
        let non_empty = |text: &Option<String>| text.clone().filter(|s| !s.trim().is_empty());
        let output = match (non_empty(&view.stdout), non_empty(&view.stderr)) {
            (Some(out), _) | (None, Some(out)) => out.trim_end().to_owned(),
            (None, None)
                if view.status == Some(ExecutionStatus::Succeeded)
                    && !view.result.is_null()
                    && view.result != json!({}) =>
            {
                serde_json::to_string_pretty(&view.result).unwrap_or_default()
            }
            (None, None) => String::new(),
        };
        if !output.is_empty() {
            let chars = output.chars().count();
            if chars > tail {
                let kept: String = output.chars().skip(chars - tail).collect();
                message.code_blocks.push(format!("…{kept}"));
                message.text.push_str(&format!(
                    "Output truncated to the last {tail} characters; {more}."
                ));
            } else {
                message.code_blocks.push(output);
            }
        }
        message
    }
}

/// The context of an execution a chat command starts: who asked, where, and
/// what the outbox should say (`ack`, `result`) for it.
fn chat_context(
    message: &IncomingMessage,
    alias: Option<String>,
    ack: bool,
    result: bool,
) -> ExecutionContext {
    ExecutionContext {
        source: "chat".into(),
        user: Some(message.identity()),
        chat: Some(ChatOrigin {
            platform: message.platform.clone(),
            channel: message.to.channel.clone(),
            thread: message.to.thread.clone(),
            user: message.user.clone(),
            message_id: message.message_id.clone(),
            alias,
            ack,
            result,
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

/// Typing and progress stop for a command running longer than this.
const WATCH_AT_MOST: Duration = Duration::from_secs(6 * 3600);

/// Where replies go: a channel (and thread) on a platform, through the outbox.
#[derive(Clone)]
struct Reply {
    engine: Arc<Engine>,
    outbox: Arc<Notify>,
    platform: String,
    to: ChannelRef,
}

impl Reply {
    /// Queue a reply; the delivery loop sends it, in order with everything
    /// else said in that channel.
    async fn say(&self, message: OutgoingMessage) {
        self.say_at(message, None).await;
    }

    /// `say`, in the channel's order as of `ready_at`.
    async fn say_at(&self, message: OutgoingMessage, ready_at: Option<i64>) {
        let origin = ChatOrigin {
            platform: self.platform.clone(),
            channel: self.to.channel.clone(),
            thread: self.to.thread.clone(),
            ..ChatOrigin::default()
        };
        let body = serde_json::to_value(&message).unwrap_or(Value::Null);
        let mut row = NewOutboxRow::to_origin(OutboxKind::Reply, &origin, body);
        row.ready_at = ready_at;
        match self.engine.store.queue_outbox(row).await {
            Ok(_) => self.outbox.notify_one(),
            Err(err) => {
                tracing::error!(error = %err, channel = %self.to.channel, "queueing a chat reply failed")
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
