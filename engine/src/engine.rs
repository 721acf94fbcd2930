//! The engine facade: connects the store, loads packs into a catalog, starts
//! the intake and (optionally) the worker pool. The binary and the tests wire
//! everything through this one type.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogHandle};
use crate::execution::{ExecutionContext, ExecutionStatus, new_id, now_ms};
use crate::intake::{Intake, IntakeError, new_execution};
use crate::pack::{LoadOptions, PackError, load_pack_roots};
use crate::params::{Casting, ParamError};
use crate::runners::RunnerRegistry;
use crate::store::{AuditEntry, Store, StoreError, execution};
use crate::template::Templates;
use crate::worker::{Worker, WorkerConfig};

/// Errors at the engine boundary.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the packs have {} problem(s):\n{}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Packs(Vec<PackError>),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Parameters(Vec<ParamError>),
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error("no execution {0}")]
    NoExecution(String),
    #[error("execution {id} did not finish within {waited:?}")]
    WaitTimeout { id: String, waited: Duration },
}

/// How to start an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub database_url: String,
    pub pack_roots: Vec<PathBuf>,
    /// Start a worker pool on this node.
    pub worker: Option<WorkerConfig>,
    /// Recover executions a crash left running (only the server does this; a
    /// CLI invocation must not touch executions a running server owns).
    pub recover_at_start: bool,
}

/// A running engine.
pub struct Engine {
    pub node_id: String,
    pub store: Store,
    pub catalog: CatalogHandle,
    pub templates: Arc<Templates>,
    pub intake: Intake,
    worker: Option<Arc<Worker>>,
    inline_worker: Arc<Worker>,
    shutdown: CancellationToken,
}

/// Load packs from `roots` into a catalog, reporting every problem at once.
pub fn load_catalog(
    roots: &[PathBuf],
    runners: &RunnerRegistry,
) -> Result<Catalog, Vec<PackError>> {
    let names = runners.names();
    let triggers = crate::triggers::builtin_names();
    let opts = LoadOptions {
        known_runners: &names,
        known_triggers: &triggers,
    };
    let packs = load_pack_roots(roots, &opts)?;
    Catalog::build(packs, runners)
}

impl Engine {
    pub async fn start(options: EngineOptions) -> Result<Engine, EngineError> {
        let runners = RunnerRegistry::builtin();
        let catalog = load_catalog(&options.pack_roots, &runners).map_err(EngineError::Packs)?;
        let store = Store::connect(&options.database_url).await?;
        let node_id = format!("node-{}", new_id());
        if options.recover_at_start {
            // SQLite has one node by construction: whatever was running belonged
            // to a process that is gone. PostgreSQL nodes wait for leases to expire.
            let all = store.backend() == sea_orm::DbBackend::Sqlite;
            let report = store.recover_orphans(&node_id, all).await?;
            if report.abandoned + report.requeued > 0 {
                tracing::warn!(
                    abandoned = report.abandoned,
                    requeued = report.requeued,
                    "recovered executions left running by a stopped node"
                );
            }
        }
        let catalog = CatalogHandle::new(catalog);
        let templates = Arc::new(Templates::new());
        let work_available = Arc::new(Notify::new());
        let (intake, _task) = Intake::start(
            store.clone(),
            catalog.clone(),
            templates.clone(),
            work_available.clone(),
        );
        let shutdown = CancellationToken::new();
        let make_worker = |config: WorkerConfig| {
            Worker::new(
                node_id.clone(),
                store.clone(),
                catalog.clone(),
                templates.clone(),
                intake.clone(),
                config,
            )
        };
        let worker = options.worker.map(|config| {
            let worker = make_worker(config);
            worker.start(work_available.clone(), shutdown.clone());
            worker
        });
        let inline_worker = make_worker(WorkerConfig::default());
        Ok(Engine {
            node_id,
            store,
            catalog,
            templates,
            intake,
            worker,
            inline_worker,
            shutdown,
        })
    }

    /// Validate parameters and enqueue a run of `action_ref`; returns its id.
    pub async fn request_execution(
        &self,
        action_ref: &str,
        provided: &Map<String, Value>,
        casting: Casting,
        context: ExecutionContext,
    ) -> Result<String, EngineError> {
        let catalog = self.catalog.current();
        let planned = catalog
            .plan(action_ref, provided, casting)
            .map_err(EngineError::Parameters)?;
        let id = new_id();
        let masked =
            catalog.mask_parameters(action_ref, &Value::Object(planned.parameters.clone()));
        let audit = AuditEntry {
            actor: context
                .user
                .clone()
                .unwrap_or_else(|| context.source.clone()),
            kind: "execution.requested".into(),
            subject: id.clone(),
            detail: json!({"action": action_ref, "parameters": masked, "source": context.source}),
        };
        self.intake
            .enqueue(
                new_execution(id.clone(), planned, &context, None),
                Some(audit),
            )
            .await?;
        Ok(id)
    }

    /// Run one requested execution here and now (the CLI without a server).
    pub async fn run_inline(&self, id: &str) -> Result<(), EngineError> {
        let lease = now_ms() + 3_600_000;
        if let Some(model) = self
            .store
            .claim_execution_by_id(&self.inline_worker.node_id, id, lease)
            .await?
        {
            self.inline_worker.execute(model).await;
        }
        Ok(())
    }

    /// Wait until an execution reaches a terminal status.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<execution::Model, EngineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(5);
        loop {
            let Some(model) = self.store.get_execution(id).await? else {
                return Err(EngineError::NoExecution(id.to_owned()));
            };
            if ExecutionStatus::parse(&model.status).is_some_and(ExecutionStatus::is_terminal) {
                return Ok(model);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::WaitTimeout {
                    id: id.to_owned(),
                    waited: timeout,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// Cancel an execution (and kill its process when it runs here).
    pub async fn cancel(&self, id: &str) -> Result<crate::store::CancelOutcome, EngineError> {
        let outcome = self.store.request_cancel(id).await?;
        if outcome == crate::store::CancelOutcome::Canceling
            && let Some(worker) = &self.worker
        {
            worker.cancel_local(id);
        }
        Ok(outcome)
    }

    /// Run an execution again with the same parameters.
    pub async fn rerun(
        &self,
        id: &str,
        mut context: ExecutionContext,
    ) -> Result<String, EngineError> {
        let Some(model) = self.store.get_execution(id).await? else {
            return Err(EngineError::NoExecution(id.to_owned()));
        };
        let params: Map<String, Value> =
            serde_json::from_str(&model.parameters).unwrap_or_default();
        context.rerun_of = Some(id.to_owned());
        self.request_execution(&model.action, &params, Casting::Strict, context)
            .await
    }

    /// Stop claiming new work.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}
