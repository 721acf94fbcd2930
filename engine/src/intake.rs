//! The intake: every write that turns an event into work goes through one
//! group-commit loop. A trigger instance, the rule enforcements it causes and
//! the executions they request are written in ONE transaction, so a webhook
//! answered 202 can never be left without its execution, and a crash can
//! never create it twice. Many requests share one commit (and one fsync),
//! which is what makes durable intake fast.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::catalog::{CatalogHandle, PlannedExecution};
use crate::execution::{ExecutionContext, new_id, now_ms};
use crate::secrets::Secrets;
use crate::store::{
    AuditEntry, Completion, NewEnforcement, NewExecution, NewTriggerInstance, Store, StoreError,
    WriteBatch,
};
use crate::template::Templates;

/// Most items one commit takes: bounds latency and transaction size.
const MAX_BATCH: usize = 4096;

/// Queue depth before callers are told to back off (HTTP 503).
const QUEUE_DEPTH: usize = 65_536;

/// A trigger firing, as sources hand it over.
#[derive(Debug, Clone)]
pub struct TriggerFiring {
    pub trigger: String,
    /// Webhook URL for `core.st2.webhook`.
    pub url: Option<String>,
    pub payload: Value,
    /// Where it came from (`webhook/<url>`, `api`, `timer/<rule>`...).
    pub source: String,
}

/// The `squall.execution` event of a finished execution: its record, and the
/// secret values that record may carry (the trigger instance and whatever its
/// rules start inherit them).
#[derive(Debug, Clone)]
pub struct ExecutionEvent {
    /// `squall.execution`, `core.st2.generic.actiontrigger` or `...notifytrigger`.
    pub trigger: &'static str,
    pub payload: Value,
    pub secrets: Secrets,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    #[error("squall is overloaded; retry later")]
    Overloaded,
    #[error("squall is shutting down")]
    Closed,
    #[error("could not store the request: {0}")]
    Store(String),
}

enum Item {
    Trigger {
        firing: TriggerFiring,
        reply: oneshot::Sender<Result<String, IntakeError>>,
    },
    Enqueue {
        execution: NewExecution,
        audit: Option<AuditEntry>,
        reply: oneshot::Sender<Result<(), IntakeError>>,
    },
    Complete {
        completion: Completion,
        events: Vec<ExecutionEvent>,
        reply: oneshot::Sender<Result<(), IntakeError>>,
    },
}

/// Handle to the intake loop; cheap to clone.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Item>,
}

impl Intake {
    /// Start the loop. `work_available` is notified after each commit that
    /// created executions, so idle workers claim at once instead of polling.
    pub fn start(
        store: Store,
        catalog: CatalogHandle,
        templates: Arc<Templates>,
        work_available: Arc<Notify>,
        finished: Arc<Notify>,
    ) -> (Intake, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(run_loop(
            rx,
            store,
            catalog,
            templates,
            work_available,
            finished,
        ));
        (Intake { tx }, task)
    }

    /// Store a trigger instance (and what its rules request) durably; returns
    /// the trigger instance id once committed.
    pub async fn fire(&self, firing: TriggerFiring) -> Result<String, IntakeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Item::Trigger { firing, reply })
            .map_err(send_error)?;
        rx.await.map_err(|_| IntakeError::Closed)?
    }

    /// Store several trigger instances: they are queued together, so they
    /// normally share one commit. Returns their ids in order.
    pub async fn fire_many(&self, firings: Vec<TriggerFiring>) -> Result<Vec<String>, IntakeError> {
        let mut replies = Vec::with_capacity(firings.len());
        for firing in firings {
            let (reply, rx) = oneshot::channel();
            self.tx
                .try_send(Item::Trigger { firing, reply })
                .map_err(send_error)?;
            replies.push(rx);
        }
        let mut ids = Vec::with_capacity(replies.len());
        for rx in replies {
            ids.push(rx.await.map_err(|_| IntakeError::Closed)??);
        }
        Ok(ids)
    }

    /// Enqueue one execution durably.
    pub async fn enqueue(
        &self,
        execution: NewExecution,
        audit: Option<AuditEntry>,
    ) -> Result<(), IntakeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Item::Enqueue {
                execution,
                audit,
                reply,
            })
            .map_err(send_error)?;
        rx.await.map_err(|_| IntakeError::Closed)?
    }

    /// Record the end of a run; `event` is the `squall.execution` event.
    /// Retries until stored: a lost completion would leave the execution
    /// running forever.
    pub async fn complete(&self, completion: Completion, events: Vec<ExecutionEvent>) {
        let mut delay = Duration::from_millis(50);
        loop {
            let (reply, rx) = oneshot::channel();
            let sent = self
                .tx
                .send(Item::Complete {
                    completion: completion.clone(),
                    events: events.clone(),
                    reply,
                })
                .await;
            if sent.is_err() {
                return;
            }
            match rx.await {
                Ok(Ok(())) => return,
                Ok(Err(err)) => {
                    tracing::warn!(execution = %completion.id, error = %err, "storing a completion failed; retrying");
                }
                Err(_) => return,
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

fn send_error<T>(err: mpsc::error::TrySendError<T>) -> IntakeError {
    match err {
        mpsc::error::TrySendError::Full(_) => IntakeError::Overloaded,
        mpsc::error::TrySendError::Closed(_) => IntakeError::Closed,
    }
}

enum Reply {
    Trigger(oneshot::Sender<Result<String, IntakeError>>, String),
    Unit(oneshot::Sender<Result<(), IntakeError>>),
}

async fn run_loop(
    mut rx: mpsc::Receiver<Item>,
    store: Store,
    catalog: CatalogHandle,
    templates: Arc<Templates>,
    work_available: Arc<Notify>,
    finished: Arc<Notify>,
) {
    let mut items = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut items, MAX_BATCH).await > 0 {
        let catalog = catalog.current();
        let mut batch = WriteBatch::default();
        let mut replies = Vec::with_capacity(items.len());
        for item in items.drain(..) {
            match item {
                Item::Trigger { firing, reply } => {
                    let id = add_trigger(&mut batch, &catalog, &templates, firing);
                    replies.push(Reply::Trigger(reply, id));
                }
                Item::Enqueue {
                    execution,
                    audit,
                    reply,
                } => {
                    batch.executions.push(execution);
                    batch.audit.extend(audit);
                    replies.push(Reply::Unit(reply));
                }
                Item::Complete {
                    mut completion,
                    events,
                    reply,
                } => {
                    for event in events {
                        // Execution events are recorded only when a rule
                        // matched them: storing one per execution would double
                        // the write load for nothing. They are stored only
                        // with the completion (not when its lease was lost).
                        add_trigger_if_matched(
                            &mut completion.follow_up,
                            &catalog,
                            &templates,
                            TriggerFiring {
                                trigger: event.trigger.into(),
                                url: None,
                                payload: event.payload,
                                source: format!("execution/{}", completion.id),
                            },
                            &event.secrets,
                        );
                    }
                    batch.completions.push(completion);
                    replies.push(Reply::Unit(reply));
                }
            }
        }
        let created_work = !batch.executions.is_empty()
            || batch
                .completions
                .iter()
                .any(|c| !c.follow_up.executions.is_empty());
        let completed = !batch.completions.is_empty();
        let started = std::time::Instant::now();
        let result = store.write_batch(&batch).await.map_err(store_error);
        let took = started.elapsed();
        if took > Duration::from_millis(100) {
            tracing::warn!(
                ?took,
                triggers = batch.trigger_instances.len(),
                executions = batch.executions.len(),
                completions = batch.completions.len(),
                "slow intake commit"
            );
        }
        if let Err(err) = &result {
            tracing::error!(error = %err, "intake commit failed");
        }
        for reply in replies {
            match reply {
                Reply::Trigger(tx, id) => {
                    let _ = tx.send(result.clone().map(|()| id));
                }
                Reply::Unit(tx) => {
                    let _ = tx.send(result.clone());
                }
            }
        }
        if created_work && result.is_ok() {
            work_available.notify_one();
        }
        if completed && result.is_ok() {
            // Workflow conductors waiting on these runs look now, not at their next poll.
            finished.notify_waiters();
        }
    }
}

fn store_error(err: StoreError) -> IntakeError {
    IntakeError::Store(err.to_string())
}

/// Add a trigger instance and everything its rules decide to the batch.
fn add_trigger(
    batch: &mut WriteBatch,
    catalog: &crate::catalog::Catalog,
    templates: &Templates,
    firing: TriggerFiring,
) -> String {
    let decisions = catalog.evaluate(
        &firing.trigger,
        firing.url.as_deref(),
        &firing.payload,
        templates,
    );
    add_decided(batch, firing, decisions, &Secrets::default())
}

fn add_trigger_if_matched(
    batch: &mut WriteBatch,
    catalog: &crate::catalog::Catalog,
    templates: &Templates,
    firing: TriggerFiring,
    secrets: &Secrets,
) {
    let decisions = catalog.evaluate(&firing.trigger, None, &firing.payload, templates);
    if !decisions.is_empty() {
        add_decided(batch, firing, decisions, secrets);
    }
}

fn add_decided(
    batch: &mut WriteBatch,
    firing: TriggerFiring,
    decisions: Vec<crate::catalog::RuleDecision>,
    secrets: &Secrets,
) -> String {
    let id = new_id();
    for decision in decisions {
        let enforcement_id = new_id();
        match decision.outcome {
            Ok(planned) => {
                let execution_id = new_id();
                let context = ExecutionContext {
                    source: "rule".into(),
                    user: None,
                    trigger_instance_id: Some(id.clone()),
                    rule: Some(decision.rule.clone()),
                    rule_enforcement_id: Some(enforcement_id.clone()),
                    ..ExecutionContext::default()
                };
                batch.executions.push(new_execution(
                    execution_id.clone(),
                    planned,
                    &context,
                    None,
                    secrets,
                ));
                batch.enforcements.push(NewEnforcement {
                    id: enforcement_id,
                    rule: decision.rule,
                    trigger_instance_id: id.clone(),
                    execution_id: Some(execution_id),
                    failure_reason: None,
                });
            }
            Err(reason) => {
                tracing::warn!(rule = %decision.rule, trigger_instance = %id, %reason, "rule matched but could not request its action");
                batch.enforcements.push(NewEnforcement {
                    id: enforcement_id,
                    rule: decision.rule,
                    trigger_instance_id: id.clone(),
                    execution_id: None,
                    failure_reason: Some(reason),
                });
            }
        }
    }
    batch.trigger_instances.push(NewTriggerInstance {
        id: id.clone(),
        trigger: firing.trigger,
        payload: firing.payload,
        source: firing.source,
        occurred_at: now_ms(),
        secrets: secrets.clone(),
    });
    id
}

/// The row for a planned execution. `inherited` are the secret values of
/// whatever caused it (its workflow, or the trigger instance of its rule).
pub fn new_execution(
    id: String,
    planned: PlannedExecution,
    context: &ExecutionContext,
    parent_id: Option<String>,
    inherited: &Secrets,
) -> NewExecution {
    NewExecution {
        secrets: planned.secrets.union(inherited),
        id,
        action: planned.action,
        runner: planned.runner,
        parameters: Value::Object(planned.parameters),
        context: serde_json::to_value(context).unwrap_or_else(|_| json!({})),
        parent_id,
        idempotent: planned.idempotent,
        outcome: None,
    }
}
