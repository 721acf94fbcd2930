//! The worker pool: claims requested executions under a lease, runs them with
//! bounded concurrency, keeps leases alive with a heartbeat, and hands results
//! to the intake. Also recovers executions whose node died.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::execution::{ExecutionStatus, ms_to_rfc3339, now_ms};
use crate::intake::{ExecutionEvent, Intake};
use crate::runners::{OutputLimits, OutputSink, RunContext, RunHost, RunOutcome};
use crate::secrets::Secrets;
use crate::store::{Completion, execution};
use crate::template::Templates;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Executions run at once on this node.
    pub concurrency: usize,
    /// How long a claim stays valid without a heartbeat.
    pub lease: Duration,
    /// How often to look for work when nothing woke us.
    pub poll_interval: Duration,
    pub limits: OutputLimits,
    /// Python interpreters kept started ahead of runs, per pack interpreter
    /// that has run (0: each python action starts its own).
    pub warm_python: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            limits: OutputLimits::default(),
            warm_python: 2,
        }
    }
}

/// A run that ended, before its completion is stored.
struct Finished {
    model: execution::Model,
    outcome: RunOutcome,
    started_at: Option<i64>,
    finished_at: i64,
}

/// Shared by the claim loop and every run.
pub struct Worker {
    pub node_id: String,
    templates: Arc<Templates>,
    intake: Intake,
    host: Arc<RunHost>,
    config: WorkerConfig,
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl Worker {
    pub fn new(
        host: Arc<RunHost>,
        templates: Arc<Templates>,
        intake: Intake,
        config: WorkerConfig,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            node_id: host.node_id.clone(),
            templates,
            intake,
            host,
            config,
            running: Mutex::new(HashMap::new()),
        })
    }

    fn lease_until(&self) -> i64 {
        now_ms() + i64::try_from(self.config.lease.as_millis()).unwrap_or(30_000)
    }

    /// Run the claim loop and the heartbeat until `shutdown`.
    pub fn start(
        self: &Arc<Self>,
        work_available: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let heartbeat = tokio::spawn(self.clone().heartbeat(shutdown.clone()));
        let cancels = tokio::spawn(self.clone().watch_cancels(shutdown.clone()));
        let worker = self.clone();
        tokio::spawn(async move {
            worker.claim_loop(work_available, shutdown).await;
            heartbeat.abort();
            cancels.abort();
        })
    }

    async fn claim_loop(self: Arc<Self>, work_available: Arc<Notify>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            // Wait for at least one free slot before claiming.
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
                () = shutdown.cancelled() => return,
            };
            let free = slots.available_permits() + 1;
            let claimed = match self
                .host
                .store
                .claim_executions(&self.node_id, free as u64, self.lease_until())
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::error!(error = %err, "claiming executions failed");
                    drop(first);
                    tokio::time::sleep(self.config.poll_interval).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(first);
                tokio::select! {
                    () = work_available.notified() => {}
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                    () = shutdown.cancelled() => return,
                }
                continue;
            }
            let mut first = Some(first);
            let now = now_ms();
            for model in &claimed {
                // A re-queued (recovered) execution counts from its request too.
                self.host
                    .metrics
                    .claimed((now - model.created_at) as f64 / 1000.0);
            }
            for model in claimed {
                // A workflow's conductor mostly waits on its tasks, which need
                // slots of their own: it must not hold one, or a pool full of
                // workflows would wait forever on tasks that cannot start.
                let orchestrates = crate::workflow::is_workflow_runner(&model.runner);
                let permit = match first.take() {
                    Some(p) => p,
                    None => match slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        // Cannot happen (we claimed at most `free`), but never run unbounded.
                        Err(_) => match slots.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    },
                };
                let permit = if orchestrates {
                    drop(permit);
                    None
                } else {
                    Some(permit)
                };
                let worker = self.clone();
                tokio::spawn(async move {
                    let finished = worker.run_claimed(model).await;
                    // The slot is free once the run ends; recording the result
                    // waits on the intake's commit, which must not hold it.
                    drop(permit);
                    worker.record(finished).await;
                });
            }
        }
    }

    async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.config.lease / 3;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => return,
            }
            if let Err(err) = self
                .host
                .store
                .extend_leases(&self.node_id, self.lease_until())
                .await
            {
                tracing::warn!(error = %err, "extending execution leases failed");
            }
            match self.host.store.recover_orphans(&self.node_id, false).await {
                Ok(report) if report.abandoned + report.requeued > 0 => {
                    tracing::warn!(
                        abandoned = report.abandoned,
                        requeued = report.requeued,
                        "recovered executions whose node stopped"
                    );
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "recovering executions failed"),
            }
        }
    }

    /// Cancel requests can come from any node (API, chat, CLI): look for
    /// them in the database, briefly, while something runs here.
    async fn watch_cancels(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = shutdown.cancelled() => return,
            }
            let busy = self.running.lock().map(|r| !r.is_empty()).unwrap_or(false);
            if !busy {
                continue;
            }
            match self.host.store.canceling_owned_by(&self.node_id).await {
                Ok(ids) => {
                    for id in ids {
                        self.cancel_local(&id);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "checking for cancel requests failed"),
            }
        }
    }

    /// Run one claimed execution to its end and record the outcome.
    pub async fn execute(&self, model: execution::Model) {
        let finished = self.run_claimed(model).await;
        self.record(finished).await;
    }

    async fn run_claimed(&self, model: execution::Model) -> Finished {
        let cancel = CancellationToken::new();
        if let Ok(mut running) = self.running.lock() {
            running.insert(model.id.clone(), cancel.clone());
        }
        // A conductor resumed after a park keeps the start of its first run.
        let started_at = (!crate::workflow::is_workflow_runner(&model.runner)).then(now_ms);
        let outcome = self.run(&model, cancel).await;
        let finished_at = now_ms();
        if let Ok(mut running) = self.running.lock() {
            running.remove(&model.id);
        }
        Finished {
            model,
            outcome,
            started_at,
            finished_at,
        }
    }

    async fn record(
        &self,
        Finished {
            model,
            outcome,
            started_at,
            finished_at,
        }: Finished,
    ) {
        if matches!(
            outcome.status,
            ExecutionStatus::Pending | ExecutionStatus::Paused
        ) {
            // The run parked itself (waiting on people, or paused) and stored
            // that status; a later decision or resume puts it back in the queue.
            return;
        }
        self.host.metrics.execution_finished(
            &model.action,
            outcome.status.as_str(),
            started_at
                .or(model.started_at)
                .map(|s| (finished_at - s) as f64 / 1000.0),
        );
        let catalog = self.host.catalog.current();
        let (events, notices) = self
            .finish_events(&catalog, &model, &outcome, started_at, finished_at)
            .await;
        let notifies = !notices.is_empty();
        let completion = Completion {
            id: model.id.clone(),
            lease_owner: self.node_id.clone(),
            status: outcome.status,
            result: outcome.result,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            exit_code: outcome.exit_code,
            error: outcome.error,
            retry: outcome
                .retry
                .filter(|_| outcome.status != ExecutionStatus::Succeeded),
            started_at,
            finished_at,
            notices,
            follow_up: Default::default(),
        };
        tracing::debug!(execution = %model.id, action = %model.action, status = %completion.status, "execution finished");
        self.intake.complete(completion, events).await;
        if notifies {
            // Chat nodes wait for this to look at the outbox.
            self.host.inquiries.notify_waiters();
        }
    }

    /// The trigger events a finished run fires (only those some rule listens to), and
    /// its `notify:` messages, stored in the commit that records the end (so a node
    /// that lost its lease, whose end is not stored, posts nothing).
    async fn finish_events(
        &self,
        catalog: &crate::catalog::Catalog,
        model: &execution::Model,
        outcome: &RunOutcome,
        started_at: Option<i64>,
        finished_at: i64,
    ) -> (Vec<ExecutionEvent>, Vec<crate::store::NewOutboxRow>) {
        use crate::triggers::{ACTION_TRIGGER, EXECUTION, NOTIFY_TRIGGER};
        let action = catalog
            .action(&model.action)
            .map(|e| e.action.clone())
            .filter(|a| !a.notify.is_empty());
        // Most runs fire nothing and notify no one: they pay for none of this.
        if action.is_none()
            && !catalog.has_rules_for(EXECUTION)
            && !catalog.has_rules_for(ACTION_TRIGGER)
        {
            return (Vec::new(), Vec::new());
        }
        let secrets = Secrets::from_stored(model.secrets.as_deref());
        let params: Value = serde_json::from_str(&model.parameters).unwrap_or(Value::Null);
        let params = catalog.mask_parameters(&model.action, &params);
        let context = serde_json::from_str::<Value>(&model.context).unwrap_or(Value::Null);
        let started = started_at.or(model.started_at).map(ms_to_rfc3339);
        let mut events = Vec::new();
        let event = |trigger, payload| ExecutionEvent {
            trigger,
            payload,
            // Whatever the rules start from this event may carry them.
            secrets: secrets.clone(),
        };
        // The execution as rules (`squall.execution`) and notify messages see it.
        let record = json!({
            "id": model.id,
            "action": model.action,
            "status": outcome.status,
            "parameters": params,
            "result": outcome.result,
            "context": context,
        });
        if catalog.has_rules_for(EXECUTION) {
            events.push(event(EXECUTION, record.clone()));
        }
        if catalog.has_rules_for(ACTION_TRIGGER) {
            events.push(event(
                ACTION_TRIGGER,
                json!({
                    "execution_id": model.id,
                    "status": outcome.status,
                    "start_timestamp": started,
                    // StackStorm sends the reference here too.
                    "action_name": model.action,
                    "action_ref": model.action,
                    "runner_ref": model.runner,
                    "parameters": params,
                    "result": outcome.result,
                }),
            ));
        }
        let Some(action) = action else {
            return (events, Vec::new());
        };
        let mut notices = Vec::new();
        let succeeded = outcome.status == ExecutionStatus::Succeeded;
        let origin: Option<crate::execution::ChatOrigin> = context
            .get("chat")
            .cloned()
            .and_then(|c| serde_json::from_value(c).ok());
        for spec in action.notify.for_outcome(succeeded) {
            let mut ctx = json!({
                "execution": record,
                "context": context,
                "action_context": crate::execution::action_context(
                    &model.action,
                    context.get("user").and_then(Value::as_str),
                ),
                // StackStorm's names for the same.
                "action_results": outcome.result,
                "action_parameters": params,
            });
            let data = self
                .templates
                .render_json(&spec.data, &ctx)
                .unwrap_or_else(|_| spec.data.clone());
            ctx["data"] = data.clone();
            let default = format!(
                "{} {}: execution {}",
                model.action, outcome.status, model.id
            );
            let text = match &spec.message {
                Some(template) => self
                    .templates
                    .render_str(template, &ctx)
                    .unwrap_or_else(|e| format!("{default} (its notify message failed: {e})")),
                None => default,
            };
            let message = secrets.scrub_value(json!({"text": text}));
            let mut channels = spec.channels.clone();
            if channels.is_empty()
                && let Some(origin) = &origin
            {
                channels.push(format!("{}:{}", origin.platform, origin.channel));
            }
            for channel in &channels {
                notices.push(crate::store::NewOutboxRow::notice(
                    &model.id, channel, &message, None,
                ));
            }
            if catalog.has_rules_for(NOTIFY_TRIGGER) {
                let routes = if spec.routes.is_empty() {
                    vec![String::new()]
                } else {
                    spec.routes.clone()
                };
                for route in routes {
                    events.push(event(
                        NOTIFY_TRIGGER,
                        json!({
                            "execution_id": model.id,
                            "status": outcome.status,
                            "start_timestamp": started,
                            "end_timestamp": ms_to_rfc3339(finished_at),
                            "action_ref": model.action,
                            "runner_ref": model.runner,
                            "channel": route,
                            "route": route,
                            "message": message["text"],
                            "data": secrets.scrub_value(data.clone()),
                            "context": context,
                        }),
                    ));
                }
            }
        }
        (events, notices)
    }

    async fn run(&self, model: &execution::Model, cancel: CancellationToken) -> RunOutcome {
        let catalog = self.host.catalog.current();
        let Some(entry) = catalog.action(&model.action) else {
            return RunOutcome::refused(format!("action {} is no longer installed", model.action));
        };
        let parameters: Map<String, Value> = match serde_json::from_str(&model.parameters) {
            Ok(Value::Object(map)) => map,
            _ => return RunOutcome::refused("stored parameters are not a JSON object"),
        };
        let secrets = Secrets::from_stored(model.secrets.as_deref());
        let (output, writer) =
            OutputSink::to_store(self.host.store.clone(), model.id.clone(), secrets.clone());
        let user = serde_json::from_str::<crate::execution::ExecutionContext>(&model.context)
            .ok()
            .and_then(|c| c.user);
        let ctx = RunContext {
            execution_id: model.id.clone(),
            action: entry.action.clone(),
            user,
            parameters,
            templates: self.templates.clone(),
            limits: self.config.limits,
            cancel,
            host: self.host.clone(),
            secrets,
            output,
        };
        let Some(runner) = self.host.runners.get(entry.runner.name) else {
            return RunOutcome::refused(format!(
                "runner {} is not available on this node",
                entry.runner.name
            ));
        };
        // A runner that panics must still leave a record, not a stuck execution.
        let outcome = match tokio::spawn(async move { runner.run(ctx).await }).await {
            Ok(outcome) => outcome,
            Err(err) => RunOutcome {
                status: ExecutionStatus::Failed,
                ..RunOutcome::failed(format!("the runner crashed: {err}"))
            },
        };
        // Every streamed line is stored before the end is: a follower sees
        // all output, then the final status.
        writer.finish().await;
        outcome
    }

    /// Cancel a run on this node, if it is here.
    pub fn cancel_local(&self, id: &str) -> bool {
        match self.running.lock() {
            Ok(running) => running.get(id).map(CancellationToken::cancel).is_some(),
            Err(_) => false,
        }
    }
}
