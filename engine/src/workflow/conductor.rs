//! The conductor: drives one workflow execution from its stored state.
//!
//! Durability rules:
//! - a task whose action runs through the queue is written `running` together
//!   with its child execution, in one transaction, before anything waits on it;
//!   after a restart the conductor finds the child and waits for it again;
//! - a task's end, its published variables and the tasks its transitions
//!   schedule are written together; the context is rebuilt on resume by
//!   replaying published variables in completion order;
//! - tasks whose action runs in-process without side effects (`noop`, `echo`)
//!   are written in groups (at most 512 rows or 50 ms apart, and always before
//!   the conductor waits, parks or finishes): losing an unwritten group to a
//!   crash only means running those side-effect-free actions again.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::spec::{Join, WorkflowSpec};
use crate::catalog::Catalog;
use crate::execution::{ExecutionContext, ExecutionStatus, WorkflowRef, new_id, now_ms};
use crate::params::Casting;
use crate::runner::{OutputLimits, RunContext, RunHost, RunOutcome};
use crate::store::{NewExecution, workflow_task};
use crate::template::{TASK_STATUS_KEY, TASK_STATUSES_KEY, Templates};

/// Most task rows kept unwritten while in-process tasks run back to back.
const FLUSH_ROWS: usize = 512;
/// Longest time task rows stay unwritten while in-process tasks run.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// How often the conductor looks at its own status (pause requests) and at
/// children finished on other nodes.
const POLL: Duration = Duration::from_millis(250);
/// `do: retry` runs a task at most this many times without a `retry.count`.
const MAX_COMMAND_RETRIES: i32 = 10;

const WAITING: &str = "waiting";
const SCHEDULED: &str = "scheduled";
const RUNNING: &str = "running";

fn is_failure(status: &str) -> bool {
    matches!(status, "failed" | "timeout" | "abandoned" | "canceled")
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::String(s) => !(s.is_empty() || s.eq_ignore_ascii_case("false")),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

struct Items {
    list: Vec<Value>,
    results: Vec<Option<(String, Value)>>,
    todo: VecDeque<usize>,
    active: usize,
    concurrency: usize,
}

/// A stored item execution: (item index, execution id, status, result).
type ItemChild = (usize, String, String, Option<String>);

struct Running {
    row: usize,
    item: Option<usize>,
    deadline: Option<Instant>,
}

struct Conductor {
    host: Arc<RunHost>,
    catalog: Arc<Catalog>,
    templates: Arc<Templates>,
    limits: OutputLimits,
    spec: Arc<WorkflowSpec>,
    wf_id: String,
    context: ExecutionContext,
    /// The workflow's secret values: every task it starts inherits them.
    secrets: crate::secrets::Secrets,
    root: String,
    ctx: Map<String, Value>,
    statuses: Map<String, Value>,
    rows: Vec<workflow_task::Model>,
    dirty: BTreeSet<usize>,
    new_execs: Vec<NewExecution>,
    seq: i64,
    errors: Vec<Value>,
    failing: bool,
    pausing: bool,
    running: HashMap<String, Running>,
    all_pending: bool,
    items: HashMap<usize, Items>,
    timed_out: HashSet<String>,
    deadline: Option<Instant>,
    cancel: CancellationToken,
    last_flush: Instant,
    last_control: Instant,
}

/// Run (or resume) the workflow execution `ctx` describes.
pub(super) async fn run(ctx: RunContext) -> RunOutcome {
    let host = ctx.host.clone();
    let catalog = host.catalog.current();
    let reference = ctx.action.reference();
    let Some(spec) = catalog.workflow(&reference).cloned() else {
        return RunOutcome::refused(format!("no workflow definition is loaded for {reference}"));
    };
    let model = match host.store.get_execution(&ctx.execution_id).await {
        Ok(Some(model)) => model,
        Ok(None) => return RunOutcome::failed("the workflow execution disappeared"),
        Err(e) => return RunOutcome::unavailable(format!("loading the workflow execution: {e}")),
    };
    let context: ExecutionContext = serde_json::from_str(&model.context).unwrap_or_default();
    let root = context
        .workflow
        .as_ref()
        .map_or_else(|| ctx.execution_id.clone(), |w| w.root.clone());
    // The workflow's timeout counts from when it was requested, across restarts.
    let deadline = spec.timeout.map(|secs| {
        let elapsed =
            Duration::from_millis(u64::try_from(now_ms() - model.created_at).unwrap_or(0));
        Instant::now() + Duration::from_secs_f64(secs).saturating_sub(elapsed)
    });
    let mut c = Conductor {
        host: host.clone(),
        catalog,
        templates: ctx.templates.clone(),
        limits: ctx.limits,
        spec,
        wf_id: ctx.execution_id.clone(),
        context,
        secrets: ctx.secrets.clone(),
        root,
        ctx: Map::new(),
        statuses: Map::new(),
        rows: Vec::new(),
        dirty: BTreeSet::new(),
        new_execs: Vec::new(),
        seq: 0,
        errors: Vec::new(),
        failing: false,
        pausing: false,
        running: HashMap::new(),
        all_pending: false,
        items: HashMap::new(),
        timed_out: HashSet::new(),
        deadline,
        cancel: ctx.cancel.clone(),
        last_flush: Instant::now(),
        last_control: Instant::now(),
    };
    if let Err(e) = c.load(ctx.parameters).await {
        return RunOutcome::failed(e);
    }
    c.drive().await
}

impl Conductor {
    // ----- start and resume -------------------------------------------------

    async fn load(&mut self, params: Map<String, Value>) -> Result<(), String> {
        self.ctx = params;
        for (name, default) in self.spec.input.clone() {
            if self.ctx.get(&name).is_none_or(Value::is_null) {
                let value = match default {
                    Some(d) => self
                        .templates
                        .render_json(&d, &self.data(None, &Value::Null, None))
                        .map_err(|e| format!("input {name}: {e}"))?,
                    None => Value::Null,
                };
                self.ctx.insert(name, value);
            }
        }
        for (name, value) in self.spec.vars.clone() {
            let value = self
                .templates
                .render_json(&value, &self.data(None, &Value::Null, None))
                .map_err(|e| format!("vars.{name}: {e}"))?;
            self.ctx.insert(name, value);
        }
        let rows = self
            .host
            .store
            .workflow_tasks(&self.wf_id)
            .await
            .map_err(|e| format!("loading task states: {e}"))?;
        if !rows.is_empty() {
            self.rows = rows;
            self.replay();
            return self.reattach().await;
        }
        if self.context.rerun_failed
            && let Some(old) = self.context.rerun_of.clone()
        {
            return self.copy_for_rerun(&old).await;
        }
        for start in self.spec.start.clone() {
            self.arrive(&start);
        }
        Ok(())
    }

    /// Rebuild the context from published variables, in completion order.
    fn replay(&mut self) {
        let mut done: Vec<usize> = (0..self.rows.len())
            .filter(|&i| self.rows[i].seq.is_some())
            .collect();
        done.sort_by_key(|&i| self.rows[i].seq);
        for i in done {
            let row = &self.rows[i];
            if let Some(Value::Object(publish)) = row
                .publish
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
            {
                self.ctx.extend(publish);
            }
            self.statuses
                .insert(row.name.clone(), Value::String(row.status.clone()));
            self.seq = self.seq.max(row.seq.unwrap_or(0));
            if is_failure(&row.status) {
                // A failure stored without a handling transition failed the run.
                if row.error.as_deref() == Some("unhandled") {
                    self.failing = true;
                    self.errors
                        .push(json!({"task": row.name, "status": row.status}));
                }
            }
        }
    }

    /// Find the child executions of tasks that were running.
    async fn reattach(&mut self) -> Result<(), String> {
        let children = self
            .host
            .store
            .children_of(&self.wf_id)
            .await
            .map_err(|e| format!("loading child executions: {e}"))?;
        let mut by_task: HashMap<String, Vec<ItemChild>> = HashMap::new();
        for child in children {
            let Ok(cx) = serde_json::from_str::<ExecutionContext>(&child.context) else {
                continue;
            };
            if let Some(w) = cx.workflow
                && let Some(item) = w.item
            {
                by_task.entry(w.task_id).or_default().push((
                    item,
                    child.id,
                    child.status,
                    child.result,
                ));
            }
        }
        for pos in 0..self.rows.len() {
            if self.rows[pos].status != RUNNING {
                continue;
            }
            // The task's timeout counts from when it was stored running
            // (its row's last write), not from this restart.
            let elapsed = Duration::from_millis(
                u64::try_from(now_ms() - self.rows[pos].updated_at).unwrap_or(0),
            );
            let timeout = self
                .task_deadline(&self.rows[pos].name.clone())
                .map(|d| d.checked_sub(elapsed).unwrap_or_else(Instant::now));
            if self.rows[pos].items_total.is_some() {
                let name = self.rows[pos].name.clone();
                let Some(list) = self.items_list(&name)? else {
                    continue;
                };
                let concurrency = self.items_concurrency(&name, list.len());
                let mut items = Items {
                    results: vec![None; list.len()],
                    list,
                    todo: VecDeque::new(),
                    active: 0,
                    concurrency,
                };
                let mut started = vec![false; items.list.len()];
                for (item, id, status, result) in
                    by_task.remove(&self.rows[pos].id).unwrap_or_default()
                {
                    if item >= items.list.len() {
                        continue;
                    }
                    started[item] = true;
                    let terminal =
                        ExecutionStatus::parse(&status).is_some_and(ExecutionStatus::is_terminal);
                    if terminal {
                        let result = result
                            .and_then(|r| serde_json::from_str(&r).ok())
                            .unwrap_or(Value::Null);
                        items.results[item] = Some((status, result));
                    } else {
                        items.active += 1;
                        self.running.insert(
                            id,
                            Running {
                                row: pos,
                                item: Some(item),
                                deadline: timeout,
                            },
                        );
                    }
                }
                items.todo = (0..items.list.len()).filter(|&i| !started[i]).collect();
                self.items.insert(pos, items);
            } else if let Some(id) = self.rows[pos].execution_id.clone() {
                self.running.insert(
                    id,
                    Running {
                        row: pos,
                        item: None,
                        deadline: timeout,
                    },
                );
            } else {
                self.rows[pos].status = SCHEDULED.into();
                self.dirty.insert(pos);
            }
        }
        // Items tasks whose every item had finished before the restart.
        let finished: Vec<usize> = self
            .items
            .iter()
            .filter(|(_, it)| it.todo.is_empty() && it.active == 0)
            .map(|(pos, _)| *pos)
            .collect();
        for pos in finished {
            self.finish_items(pos);
        }
        Ok(())
    }

    /// A re-run from the failed tasks: keep what succeeded, run the rest again.
    async fn copy_for_rerun(&mut self, old: &str) -> Result<(), String> {
        let old_rows = self
            .host
            .store
            .workflow_tasks(old)
            .await
            .map_err(|e| format!("loading the re-run workflow's tasks: {e}"))?;
        if old_rows.is_empty() {
            for start in self.spec.start.clone() {
                self.arrive(&start);
            }
            return Ok(());
        }
        let now = now_ms();
        let mut latest: HashMap<String, usize> = HashMap::new();
        for (i, row) in old_rows.iter().enumerate() {
            latest.insert(row.name.clone(), i);
        }
        for (i, row) in old_rows.iter().enumerate() {
            let keep = row.status == "succeeded"
                || (row.seq.is_some() && latest.get(&row.name) != Some(&i));
            let mut copy = row.clone();
            copy.id = new_id();
            copy.workflow_id = self.wf_id.clone();
            copy.created_at = now;
            copy.execution_id = None;
            if keep {
                if copy.error.as_deref() == Some("unhandled") {
                    copy.error = Some("handled by a re-run".into());
                }
            } else if is_failure(&row.status) || row.status == RUNNING || row.status == SCHEDULED {
                copy.status = SCHEDULED.into();
                copy.attempt = 1;
                copy.items_total = None;
                copy.result = None;
                copy.publish = None;
                copy.error = None;
                copy.seq = None;
                copy.not_before = None;
            }
            self.rows.push(copy);
            self.dirty.insert(self.rows.len() - 1);
        }
        self.replay();
        Ok(())
    }

    // ----- the loop ---------------------------------------------------------

    async fn drive(mut self) -> RunOutcome {
        loop {
            if self.cancel.is_cancelled() {
                return self.stop(ExecutionStatus::Canceled).await;
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.errors
                    .push(json!({"error": "the workflow ran past its timeout"}));
                return self.stop(ExecutionStatus::Timeout).await;
            }
            if self.last_control.elapsed() >= POLL {
                self.last_control = Instant::now();
                if let Ok(Some(model)) = self.host.store.get_execution(&self.wf_id).await {
                    match model.status.as_str() {
                        "canceling" => return self.stop(ExecutionStatus::Canceled).await,
                        "pausing" => self.pausing = true,
                        _ => self.pausing = false,
                    }
                }
            }
            let progressed = self.start_due().await;
            if progressed {
                if self.dirty.len() >= FLUSH_ROWS || self.last_flush.elapsed() >= FLUSH_EVERY {
                    self.flush().await;
                }
                continue;
            }
            if self.is_done() {
                return self.finish().await;
            }
            self.flush().await;
            if self.pausing && self.running.is_empty() {
                match self
                    .host
                    .store
                    .park_workflow(&self.wf_id, &self.host.node_id, "pausing", "paused")
                    .await
                {
                    Ok(true) => return parked(ExecutionStatus::Paused),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(workflow = %self.wf_id, error = %e, "pausing failed"),
                }
            }
            let host = self.host.clone();
            let notified = host.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.poll_children().await {
                continue;
            }
            if !self.running.is_empty() && self.all_pending && !self.has_scheduled() {
                match self
                    .host
                    .store
                    .park_workflow(&self.wf_id, &self.host.node_id, "running", "pending")
                    .await
                {
                    Ok(true) => return parked(ExecutionStatus::Pending),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(workflow = %self.wf_id, error = %e, "parking failed"),
                }
            }
            let wake = self.next_wake();
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(wake) => {}
                () = self.cancel.cancelled() => {}
            }
        }
    }

    fn has_scheduled(&self) -> bool {
        self.rows.iter().any(|r| r.status == SCHEDULED)
    }

    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        let mut wake = POLL;
        let now_ms = now_ms();
        for r in &self.rows {
            if r.status == SCHEDULED
                && let Some(nb) = r.not_before
            {
                wake = wake.min(Duration::from_millis(
                    u64::try_from(nb - now_ms).unwrap_or(0),
                ));
            }
        }
        for r in self.running.values() {
            if let Some(d) = r.deadline {
                wake = wake.min(d.saturating_duration_since(now));
            }
        }
        if let Some(d) = self.deadline {
            wake = wake.min(d.saturating_duration_since(now));
        }
        wake.max(Duration::from_millis(1))
    }

    fn is_done(&self) -> bool {
        if !self.running.is_empty() {
            return false;
        }
        if self.failing {
            return true;
        }
        !self.has_scheduled() && self.items.values().all(|it| it.todo.is_empty())
    }

    /// Start every task that is due; returns whether anything happened.
    async fn start_due(&mut self) -> bool {
        if self.failing || self.pausing {
            return false;
        }
        let now = now_ms();
        let mut progressed = false;
        let due: Vec<usize> = (0..self.rows.len())
            .filter(|&i| {
                self.rows[i].status == SCHEDULED && self.rows[i].not_before.is_none_or(|t| t <= now)
            })
            .collect();
        for pos in due {
            if self.failing {
                break;
            }
            self.start_row(pos).await;
            progressed = true;
        }
        let open: Vec<usize> = self
            .items
            .iter()
            .filter(|(_, it)| !it.todo.is_empty() && it.active < it.concurrency)
            .map(|(pos, _)| *pos)
            .collect();
        for pos in open {
            if self.failing {
                break;
            }
            self.launch_items(pos).await;
            progressed = true;
        }
        progressed
    }

    async fn start_row(&mut self, pos: usize) {
        let name = self.rows[pos].name.clone();
        let Some(task) = self.spec.tasks.get(&name).cloned() else {
            self.complete_row(pos, "failed", json!({"error": format!("no task {name}")}));
            return;
        };
        let Some(action) = task.action.clone() else {
            // A task without an action only routes (e.g. a join point).
            self.complete_row(pos, "succeeded", Value::Null);
            return;
        };
        if task.with.is_some() {
            self.start_items(pos).await;
            return;
        }
        let data = self.data(None, &Value::Null, None);
        match self.plan(&action, &task.input, &data) {
            Ok(planned) => {
                if let Some((status, result)) = self.launch(pos, None, planned).await {
                    self.complete_row(pos, &status, result);
                }
            }
            Err(error) => self.complete_row(pos, "failed", json!({ "error": error })),
        }
    }

    fn plan(
        &self,
        action: &str,
        input: &Map<String, Value>,
        data: &Value,
    ) -> Result<crate::catalog::PlannedExecution, String> {
        let provided = self
            .catalog
            .render_input(
                action,
                input,
                data,
                &self.templates,
                self.context.user.as_deref(),
            )
            .map_err(|e| format!("rendering the task input: {e}"))?;
        self.catalog
            .plan(
                action,
                &provided,
                Casting::FromText,
                &self.templates,
                self.context.user.as_deref(),
            )
            .map_err(|errors| {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
    }

    /// Start one action for a task (or one item of it). In-process actions
    /// finish here and their outcome is returned; the rest go to the queue.
    async fn launch(
        &mut self,
        pos: usize,
        item: Option<usize>,
        planned: crate::catalog::PlannedExecution,
    ) -> Option<(String, Value)> {
        let id = new_id();
        let name = self.rows[pos].name.clone();
        let context = ExecutionContext {
            source: "workflow".into(),
            user: self.context.user.clone(),
            chat: self.context.chat.clone(),
            workflow: Some(WorkflowRef {
                id: self.wf_id.clone(),
                root: self.root.clone(),
                task: name.clone(),
                task_id: self.rows[pos].id.clone(),
                item,
            }),
            ..ExecutionContext::default()
        };
        let mut new = crate::intake::new_execution(
            id.clone(),
            planned.clone(),
            &context,
            Some(self.wf_id.clone()),
            &self.secrets,
        );
        if let Some((entry, runner)) = self
            .catalog
            .action(&planned.action)
            .filter(|e| e.runner.traits().inline)
            .and_then(|e| Some((e, self.host.runners.get(e.runner.name)?)))
        {
            let outcome = runner
                .run(RunContext {
                    execution_id: id,
                    action: entry.action.clone(),
                    user: context.user.clone(),
                    parameters: planned.parameters,
                    templates: self.templates.clone(),
                    limits: self.limits,
                    cancel: CancellationToken::new(),
                    host: self.host.clone(),
                    secrets: new.secrets.clone(),
                    output: crate::runners::output::OutputSink::default(),
                })
                .await;
            let status = outcome.status.as_str().to_owned();
            new.outcome = Some((outcome.status, outcome.result.clone()));
            self.new_execs.push(new);
            return Some((status, outcome.result));
        }
        self.new_execs.push(new);
        let deadline = self.task_deadline(&name);
        self.running.insert(
            id.clone(),
            Running {
                row: pos,
                item,
                deadline,
            },
        );
        if item.is_none() {
            self.rows[pos].execution_id = Some(id);
            self.rows[pos].status = RUNNING.into();
            self.dirty.insert(pos);
        }
        None
    }

    fn task_deadline(&self, name: &str) -> Option<Instant> {
        self.spec
            .tasks
            .get(name)
            .and_then(|t| t.timeout)
            .map(|secs| Instant::now() + Duration::from_secs_f64(secs))
    }

    fn items_list(&mut self, name: &str) -> Result<Option<Vec<Value>>, String> {
        let Some(with) = self.spec.tasks.get(name).and_then(|t| t.with.clone()) else {
            return Ok(None);
        };
        let data = self.data(None, &Value::Null, None);
        match self.templates.render_value(&with.items, &data) {
            Ok(Value::Array(list)) => Ok(Some(list)),
            Ok(Value::Null) => Ok(Some(Vec::new())),
            Ok(other) => Err(format!(
                "tasks.{name}.with.items must yield a list, got {other}"
            )),
            Err(e) => Err(format!("tasks.{name}.with.items: {e}")),
        }
    }

    fn items_concurrency(&self, name: &str, len: usize) -> usize {
        let configured = self
            .spec
            .tasks
            .get(name)
            .and_then(|t| t.with.as_ref())
            .and_then(|w| w.concurrency.clone());
        let n = match configured {
            None => len,
            Some(Value::String(s)) => self
                .templates
                .render_value(&s, &self.data(None, &Value::Null, None))
                .ok()
                .and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .map_or(len, |n| usize::try_from(n).unwrap_or(len)),
            Some(v) => v
                .as_u64()
                .map_or(len, |n| usize::try_from(n).unwrap_or(len)),
        };
        n.max(1)
    }

    async fn start_items(&mut self, pos: usize) {
        let name = self.rows[pos].name.clone();
        let list = match self.items_list(&name) {
            Ok(Some(list)) => list,
            Ok(None) => Vec::new(),
            Err(error) => {
                self.complete_row(pos, "failed", json!({ "error": error }));
                return;
            }
        };
        let concurrency = self.items_concurrency(&name, list.len());
        self.rows[pos].items_total = Some(i32::try_from(list.len()).unwrap_or(i32::MAX));
        self.rows[pos].status = RUNNING.into();
        self.dirty.insert(pos);
        if list.is_empty() {
            self.complete_row(pos, "succeeded", json!([]));
            return;
        }
        self.items.insert(
            pos,
            Items {
                results: vec![None; list.len()],
                todo: (0..list.len()).collect(),
                list,
                active: 0,
                concurrency,
            },
        );
        self.launch_items(pos).await;
    }

    async fn launch_items(&mut self, pos: usize) {
        let name = self.rows[pos].name.clone();
        let Some(task) = self.spec.tasks.get(&name).cloned() else {
            return;
        };
        let action = task.action.clone().unwrap_or_default();
        // The context does not change while items start: copy it once.
        let mut data = self.data(None, &Value::Null, None);
        loop {
            let Some(items) = self.items.get_mut(&pos) else {
                return;
            };
            if items.active >= items.concurrency || self.failing || self.pausing {
                break;
            }
            let Some(i) = items.todo.pop_front() else {
                break;
            };
            data["item"] = items.list[i].clone();
            let outcome = match self.plan(&action, &task.input, &data) {
                Ok(planned) => self.launch(pos, Some(i), planned).await,
                Err(error) => Some(("failed".to_owned(), json!({ "error": error }))),
            };
            let Some(items) = self.items.get_mut(&pos) else {
                return;
            };
            match outcome {
                Some(done) => items.results[i] = Some(done),
                None => items.active += 1,
            }
        }
        self.maybe_finish_items(pos);
    }

    fn maybe_finish_items(&mut self, pos: usize) {
        if self
            .items
            .get(&pos)
            .is_some_and(|it| it.active == 0 && it.todo.is_empty())
        {
            self.finish_items(pos);
        }
    }

    fn finish_items(&mut self, pos: usize) {
        let Some(items) = self.items.remove(&pos) else {
            return;
        };
        let failed = items
            .results
            .iter()
            .any(|r| r.as_ref().is_none_or(|(s, _)| is_failure(s)));
        let results: Vec<Value> = items
            .results
            .into_iter()
            .map(|r| r.map_or(Value::Null, |(_, v)| v))
            .collect();
        let status = if failed { "failed" } else { "succeeded" };
        self.complete_row(pos, status, Value::Array(results));
    }

    /// Check on children running elsewhere; returns whether any finished.
    async fn poll_children(&mut self) -> bool {
        if self.running.is_empty() {
            return false;
        }
        let now = Instant::now();
        let expired: Vec<String> = self
            .running
            .iter()
            .filter(|(id, r)| r.deadline.is_some_and(|d| d <= now) && !self.timed_out.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(workflow = %self.wf_id, execution = %id, "task timed out; canceling its action");
            let _ = self.host.store.request_cancel(&id).await;
            self.timed_out.insert(id);
        }
        let ids: Vec<String> = self.running.keys().cloned().collect();
        let states = match self.host.store.execution_states(&ids).await {
            Ok(states) => states,
            Err(e) => {
                tracing::warn!(workflow = %self.wf_id, error = %e, "checking task executions failed");
                return false;
            }
        };
        let mut changed = false;
        self.all_pending = !states.is_empty();
        for state in states {
            let terminal =
                ExecutionStatus::parse(&state.status).is_some_and(ExecutionStatus::is_terminal);
            if state.status != "pending" {
                self.all_pending = false;
            }
            if !terminal {
                continue;
            }
            changed = true;
            let Some(running) = self.running.remove(&state.id) else {
                continue;
            };
            let mut status = state.status.clone();
            if self.timed_out.remove(&state.id) && status == "canceled" {
                status = "timeout".into();
            }
            let mut result = state
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(Value::Null);
            if result.is_null()
                && let Some(error) = state.error
            {
                result = json!({ "error": error });
            }
            match running.item {
                Some(i) => {
                    if let Some(items) = self.items.get_mut(&running.row) {
                        items.results[i] = Some((status, result));
                        items.active = items.active.saturating_sub(1);
                    }
                    self.maybe_finish_items(running.row);
                }
                None => self.complete_row(running.row, &status, result),
            }
        }
        changed
    }

    // ----- transitions ------------------------------------------------------

    fn complete_row(&mut self, pos: usize, status: &str, result: Value) {
        let name = self.rows[pos].name.clone();
        let Some(task) = self.spec.tasks.get(&name).cloned() else {
            return;
        };
        self.dirty.insert(pos);
        if let Some(retry) = &task.retry
            && u32::try_from(self.rows[pos].attempt).unwrap_or(u32::MAX) <= retry.count
        {
            let again = match &retry.when {
                Some(when) => self
                    .templates
                    .render_value(when, &self.data(Some(status), &result, None))
                    .is_ok_and(|v| truthy(&v)),
                None => is_failure(status),
            };
            if again {
                let row = &mut self.rows[pos];
                row.attempt += 1;
                row.status = SCHEDULED.into();
                row.execution_id = None;
                row.items_total = None;
                row.result = Some(result.to_string());
                row.not_before = Some(now_ms() + (retry.delay * 1000.0) as i64);
                return;
            }
        }
        self.seq += 1;
        {
            let row = &mut self.rows[pos];
            row.status = status.to_owned();
            row.result = Some(result.to_string());
            row.seq = Some(self.seq);
        }
        self.statuses
            .insert(name.clone(), Value::String(status.to_owned()));
        let mut data = self.data(Some(status), &result, None);
        let mut handled = false;
        let mut published = Map::new();
        for transition in &task.next {
            let matched = match &transition.when {
                None => true,
                Some(when) => match self.templates.render_value(when, &data) {
                    Ok(v) => truthy(&v),
                    Err(e) => {
                        self.fail(json!({"task": name, "error": e.to_string()}));
                        false
                    }
                },
            };
            if !matched {
                continue;
            }
            handled = true;
            for (key, value) in &transition.publish {
                match self.templates.render_json(value, &data) {
                    Ok(v) => {
                        self.ctx.insert(key.clone(), v.clone());
                        published.insert(key.clone(), v.clone());
                        if let Some(Value::Object(ctx)) = data.get_mut("ctx") {
                            ctx.insert(key.clone(), v);
                        }
                    }
                    Err(e) => {
                        self.fail(json!({"task": name, "publish": key, "error": e.to_string()}))
                    }
                }
            }
            for target in &transition.targets {
                match target.as_str() {
                    "fail" => {
                        self.fail(json!({"task": name, "error": "failed by a `fail` transition"}))
                    }
                    "noop" | "continue" => {}
                    "retry" => self.retry_command(pos),
                    other => self.arrive(other),
                }
            }
        }
        if !published.is_empty() {
            self.rows[pos].publish = Some(Value::Object(published).to_string());
        }
        if !handled && is_failure(status) {
            self.rows[pos].error = Some("unhandled".into());
            self.fail(json!({"task": name, "status": status, "result": result}));
        }
    }

    fn fail(&mut self, error: Value) {
        self.failing = true;
        self.errors.push(error);
    }

    fn retry_command(&mut self, pos: usize) {
        let attempt = self.rows[pos].attempt + 1;
        let name = self.rows[pos].name.clone();
        let limit = self
            .spec
            .tasks
            .get(&name)
            .and_then(|t| t.retry.as_ref())
            .map_or(MAX_COMMAND_RETRIES, |r| {
                i32::try_from(r.count).unwrap_or(MAX_COMMAND_RETRIES) + 1
            });
        if attempt > limit {
            self.fail(json!({"task": name, "error": format!("`do: retry` gave up after {limit} attempts")}));
            return;
        }
        let new = self.new_row(&name, SCHEDULED, 0, None);
        self.rows[new].attempt = attempt;
    }

    fn arrive(&mut self, target: &str) {
        let Some(task) = self.spec.tasks.get(target) else {
            return;
        };
        let not_before = task.delay.map(|d| now_ms() + (d * 1000.0) as i64);
        let Some(join) = task.join else {
            self.new_row(target, SCHEDULED, 1, not_before);
            return;
        };
        let required = match join {
            Join::All => task.inbound,
            Join::Count(n) => n,
        };
        let latest = self.rows.iter().rposition(|r| r.name == target);
        let pos = match latest {
            Some(pos) if self.rows[pos].status == WAITING => {
                self.rows[pos].inbound += 1;
                pos
            }
            // The join already ran (its count was reached): a later branch
            // arriving belongs to that same join and starts nothing.
            Some(pos) if usize::try_from(self.rows[pos].inbound).unwrap_or(0) < task.inbound => {
                self.rows[pos].inbound += 1;
                self.dirty.insert(pos);
                return;
            }
            _ => self.new_row(target, WAITING, 1, None),
        };
        self.dirty.insert(pos);
        if usize::try_from(self.rows[pos].inbound).unwrap_or(0) >= required {
            self.rows[pos].status = SCHEDULED.into();
            self.rows[pos].not_before = not_before;
        }
    }

    fn new_row(
        &mut self,
        name: &str,
        status: &str,
        inbound: i32,
        not_before: Option<i64>,
    ) -> usize {
        let now = now_ms();
        self.rows.push(workflow_task::Model {
            id: new_id(),
            workflow_id: self.wf_id.clone(),
            name: name.to_owned(),
            status: status.to_owned(),
            attempt: 1,
            execution_id: None,
            items_total: None,
            inbound,
            not_before,
            result: None,
            publish: None,
            error: None,
            seq: None,
            created_at: now,
            updated_at: now,
        });
        let pos = self.rows.len() - 1;
        self.dirty.insert(pos);
        pos
    }

    fn data(&self, status: Option<&str>, result: &Value, item: Option<&Value>) -> Value {
        let mut data = json!({
            "ctx": self.ctx,
            "result": result,
            "item": item,
            TASK_STATUS_KEY: status,
        });
        // Every task's status is copied only for definitions that ask for it.
        if self.spec.uses_task_status {
            data[TASK_STATUSES_KEY] = Value::Object(self.statuses.clone());
        }
        data
    }

    // ----- the end ----------------------------------------------------------

    async fn flush(&mut self) {
        if self.dirty.is_empty() && self.new_execs.is_empty() {
            return;
        }
        let rows: Vec<workflow_task::Model> =
            self.dirty.iter().map(|&i| self.rows[i].clone()).collect();
        let queued = self.new_execs.iter().any(|e| e.outcome.is_none());
        let mut delay = Duration::from_millis(100);
        while let Err(e) = self.host.store.write_workflow(&self.new_execs, &rows).await {
            tracing::error!(workflow = %self.wf_id, error = %e, "storing workflow state failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        self.new_execs.clear();
        self.dirty.clear();
        self.last_flush = Instant::now();
        if queued {
            self.host.work_available.notify_one();
        }
    }

    async fn finish(mut self) -> RunOutcome {
        for pos in 0..self.rows.len() {
            match self.rows[pos].status.as_str() {
                WAITING => {
                    let name = self.rows[pos].name.clone();
                    let required = match self.spec.tasks.get(&name).and_then(|t| t.join) {
                        Some(Join::Count(n)) => n,
                        _ => self.spec.tasks.get(&name).map_or(0, |t| t.inbound),
                    };
                    let arrived = self.rows[pos].inbound;
                    if !self.failing {
                        self.errors.push(json!({
                            "task": name,
                            "error": format!("join waited for {required} inbound transitions; {arrived} arrived"),
                        }));
                    }
                    self.rows[pos].status = "failed".into();
                    self.dirty.insert(pos);
                }
                SCHEDULED => {
                    self.rows[pos].status = "canceled".into();
                    self.dirty.insert(pos);
                }
                _ => {}
            }
        }
        self.flush().await;
        let data = self.data(None, &Value::Null, None);
        let mut output = Map::new();
        let mut output_error = None;
        for (key, value) in &self.spec.output {
            match self.templates.render_json(value, &data) {
                Ok(v) => {
                    output.insert(key.clone(), v);
                }
                Err(e) => output_error = Some(format!("output {key}: {e}")),
            }
        }
        if self.errors.is_empty()
            && let Some(e) = &output_error
        {
            self.errors.push(json!({ "error": e }));
        }
        if self.errors.is_empty() {
            return RunOutcome::succeeded(json!({ "output": output }));
        }
        let summary = summarise(&self.errors);
        RunOutcome {
            status: ExecutionStatus::Failed,
            result: json!({ "output": output, "errors": self.errors }),
            stdout: String::new(),
            stderr: String::new(),
            exit_code: None,
            error: Some(summary),
            retry: None,
        }
    }

    /// Cancel (or time out) the whole workflow: stop starting tasks, cancel
    /// the running ones (which kills their processes and cascades into
    /// sub-workflows), and wait for them to end.
    async fn stop(mut self, status: ExecutionStatus) -> RunOutcome {
        for id in self.running.keys() {
            if let Err(e) = self.host.store.request_cancel(id).await {
                tracing::warn!(execution = %id, error = %e, "canceling a task failed");
            }
        }
        let give_up = Instant::now() + Duration::from_secs(60);
        while !self.running.is_empty() && Instant::now() < give_up {
            let ids: Vec<String> = self.running.keys().cloned().collect();
            if let Ok(states) = self.host.store.execution_states(&ids).await {
                for s in states {
                    if ExecutionStatus::parse(&s.status).is_some_and(ExecutionStatus::is_terminal)
                        && let Some(r) = self.running.remove(&s.id)
                    {
                        self.rows[r.row].status = s.status.clone();
                        self.dirty.insert(r.row);
                    }
                }
            }
            if !self.running.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for pos in 0..self.rows.len() {
            if matches!(
                self.rows[pos].status.as_str(),
                WAITING | SCHEDULED | RUNNING
            ) {
                self.rows[pos].status = "canceled".into();
                self.dirty.insert(pos);
            }
        }
        self.flush().await;
        let error = match status {
            ExecutionStatus::Timeout => "the workflow ran past its timeout",
            _ => "canceled",
        };
        RunOutcome {
            status,
            result: json!({ "output": Value::Null, "errors": self.errors }),
            stdout: String::new(),
            stderr: String::new(),
            exit_code: None,
            error: Some(error.into()),
            retry: None,
        }
    }
}

/// The outcome of a run that parked itself: its status is already stored, so
/// the worker records nothing.
pub(crate) fn parked(status: ExecutionStatus) -> RunOutcome {
    RunOutcome {
        status,
        result: Value::Null,
        stdout: String::new(),
        stderr: String::new(),
        exit_code: None,
        error: None,
        retry: None,
    }
}

fn summarise(errors: &[Value]) -> String {
    errors
        .iter()
        .map(|e| {
            let task = e.get("task").and_then(Value::as_str);
            let what = e
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    e.get("status")
                        .and_then(Value::as_str)
                        .map(|s| format!("ended {s}"))
                })
                .unwrap_or_else(|| e.to_string());
            match task {
                Some(t) => format!("task {t}: {what}"),
                None => what,
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
