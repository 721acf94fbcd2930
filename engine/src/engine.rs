//! The engine facade: connects the store, loads packs into a catalog, starts
//! the intake and (optionally) the worker pool. The binary and the tests wire
//! everything through this one type.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogHandle};
use crate::execution::{ExecutionContext, ExecutionStatus, new_id, now_ms};
use crate::intake::{Intake, IntakeError, new_execution};
use crate::pack::{LoadOptions, Pack, PackError, RefusedPack, load_pack_roots, load_packs};
use crate::params::{Casting, ParamError};
use crate::runners::{RunHost, RunnerRegistry};
use crate::secrets::Secrets;
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
    #[error("execution {0} is not a workflow")]
    NotAWorkflow(String),
    #[error("execution {id} did not finish within {waited:?}")]
    WaitTimeout { id: String, waited: Duration },
    #[error("datastore: {0}")]
    Datastore(String),
    #[error("no rule {0}")]
    NoRule(String),
}

/// What a pause or resume did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOutcome {
    /// Done; the workflow's new status.
    Done(String),
    /// Not possible in the workflow's current status.
    NotApplicable(String),
}

/// Rebuild the catalog when the stored rule states differ from it.
async fn apply_rule_states(store: &Store, catalog: &CatalogHandle) -> Result<(), EngineError> {
    let states = store.rule_states().await?;
    let current = catalog.current();
    if current.has_rule_states(&states) {
        return Ok(());
    }
    let rebuilt = current
        .with_rule_states(&states)
        .map_err(EngineError::Packs)?;
    catalog.replace(rebuilt);
    tracing::info!("rules enabled or disabled at run time applied");
    Ok(())
}

/// Another node (or the CLI) may toggle rules: follow the stored states.
async fn follow_rule_states(store: Store, catalog: CatalogHandle, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(err) = apply_rule_states(&store, &catalog).await {
            tracing::warn!(error = %err, "applying rule states failed");
        }
    }
}

/// Expire inquiries whose ttl passed, promptly (every 250 ms), and wake the
/// workflows waiting on them.
async fn expire_inquiries(host: Arc<RunHost>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = shutdown.cancelled() => return,
        }
        match host.store.expire_inquiries(now_ms()).await {
            Ok(expired) if !expired.is_empty() => {
                tracing::info!(count = expired.len(), "inquiries expired");
                host.work_available.notify_one();
                host.finished.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring inquiries failed"),
        }
    }
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
    /// The datastore's encryption key.
    pub datastore_key: crate::datastore::KeySource,
}

/// A running engine.
pub struct Engine {
    pub node_id: String,
    pub host: Arc<RunHost>,
    pub store: Store,
    pub catalog: CatalogHandle,
    pub templates: Arc<Templates>,
    pub intake: Intake,
    pub datastore: Arc<crate::datastore::Datastore>,
    worker: Option<Arc<Worker>>,
    inline_worker: Arc<Worker>,
    shutdown: CancellationToken,
}

/// The runners this squall ships, set up for a worker configured by `worker`:
/// the one place that names them all, so the runner shape (`runner`), the
/// runners (`runners/`) and the workflow engine need not know each other.
pub fn builtin_runner_list_for(worker: &WorkerConfig) -> Vec<Arc<dyn crate::runner::Runner>> {
    use crate::runners::{chat_post, core, echo, http, noop, python, shell};
    vec![
        Arc::new(shell::LocalShellCmd),
        Arc::new(shell::LocalShellScript),
        Arc::new(http::HttpRequest::new()),
        Arc::new(noop::Noop),
        Arc::new(echo::Echo),
        Arc::new(crate::workflow::WorkflowRunner::ORQUESTA),
        Arc::new(crate::workflow::WorkflowRunner::WORKFLOW),
        Arc::new(crate::workflow::inquirer::Inquirer),
        Arc::new(chat_post::ChatPost),
        Arc::new(python::PythonScript::new(worker.warm_python)),
        Arc::new(core::UuidRunner),
        Arc::new(core::PauseRunner),
        Arc::new(core::InjectTrigger),
        Arc::new(core::Announcement),
        Arc::new(core::Sendmail),
    ]
}

/// The built-in runners as a registry, with a default worker's settings.
pub fn builtin_runners() -> RunnerRegistry {
    builtin_runners_for(&WorkerConfig::default())
}

/// [`builtin_runner_list_for`] as a registry.
pub fn builtin_runners_for(worker: &WorkerConfig) -> RunnerRegistry {
    RunnerRegistry::new(builtin_runner_list_for(worker))
        .unwrap_or_else(|dup| panic!("the built-in runner list is broken: {dup}"))
}

/// Load the built-in packs and those under `roots` into a catalog, reporting
/// every problem at once. A pack under `roots` named like a built-in one
/// replaces it.
pub fn load_catalog(
    roots: &[PathBuf],
    runners: &RunnerRegistry,
) -> Result<Catalog, Vec<PackError>> {
    let mut all = crate::pack::builtin::builtin_pack_dirs(roots).map_err(|e| vec![e])?;
    all.extend(roots.iter().cloned());
    let packs = with_load_options(roots, runners, |opts| load_pack_roots(&all, opts))?;
    Catalog::build(packs, runners.kinds())
}

/// Call `f` with how packs under `roots` load: the runners and triggers this
/// squall knows, and the pack configs' directory.
fn with_load_options<T>(
    roots: &[PathBuf],
    runners: &RunnerRegistry,
    f: impl FnOnce(&LoadOptions) -> T,
) -> T {
    let names = runners.names();
    let triggers = crate::triggers::builtin_names();
    f(&LoadOptions {
        known_runners: &names,
        known_triggers: &triggers,
        configs_dir: LoadOptions::configs_dir_for(roots),
    })
}

/// Load the built-in packs and those under `roots` pack by pack, as
/// StackStorm registers them: a pack with a problem is refused with all of
/// its problems (`Catalog::refused`), the rest load. A pack whose rules or
/// aliases name an action no loaded pack has is refused too, and so on until
/// what is left holds together.
pub fn load_catalog_lenient(roots: &[PathBuf], runners: &RunnerRegistry) -> Catalog {
    let mut refused = Vec::new();
    let mut all = match crate::pack::builtin::builtin_pack_dirs(roots) {
        Ok(dirs) => dirs,
        Err(e) => {
            refused.push(RefusedPack {
                dir: e.file.clone(),
                name: None,
                version: None,
                errors: vec![e],
            });
            Vec::new()
        }
    };
    all.extend(roots.iter().cloned());
    let load = with_load_options(roots, runners, |opts| load_packs(&all, opts));
    refused.extend(load.refused);
    let mut packs = load.packs;
    let catalog = loop {
        refuse_dangling_refs(&mut packs, &mut refused);
        match Catalog::build(packs.clone(), runners.kinds()) {
            Ok(catalog) => break catalog,
            Err(errors) => {
                let before = packs.len();
                refuse_packs_with(&mut packs, errors, &mut refused);
                if packs.len() == before {
                    // Errors no pack owns (cannot happen today): refuse nothing
                    // silently, load nothing.
                    packs.clear();
                }
            }
        }
    };
    let mut catalog = catalog;
    refused.sort_by(|a, b| a.dir.cmp(&b.dir));
    catalog.refused = refused;
    catalog.warnings = load.warnings;
    catalog
}

/// Move the packs whose rules or aliases name an action no remaining pack
/// has to `refused`, until none does.
fn refuse_dangling_refs(packs: &mut Vec<Pack>, refused: &mut Vec<RefusedPack>) {
    loop {
        let known: BTreeSet<String> = packs
            .iter()
            .flat_map(|p| p.actions.iter().map(|a| a.reference()))
            .collect();
        let refused_names: BTreeSet<String> =
            refused.iter().filter_map(|r| r.name.clone()).collect();
        let mut errors_by_pack: BTreeMap<usize, Vec<PackError>> = BTreeMap::new();
        for (i, pack) in packs.iter().enumerate() {
            let refs = pack
                .rules
                .iter()
                .map(|r| (&r.file, "action.ref", &r.action_ref))
                .chain(
                    pack.aliases
                        .iter()
                        .map(|a| (&a.file, "action_ref", &a.action_ref)),
                );
            for (file, field, target) in refs {
                if known.contains(target) {
                    continue;
                }
                let owner = target.split('.').next().unwrap_or_default();
                let reason = if refused_names.contains(owner) {
                    format!("action '{target}' is in pack '{owner}', which was refused")
                } else {
                    format!("unknown action '{target}' (no loaded pack defines it)")
                };
                errors_by_pack.entry(i).or_default().push(PackError {
                    file: file.clone(),
                    field: field.into(),
                    reason,
                    line: None,
                });
            }
        }
        if errors_by_pack.is_empty() {
            return;
        }
        refuse(packs, errors_by_pack, refused);
    }
}

/// Move the packs that own any of `errors` (by file) to `refused`.
fn refuse_packs_with(
    packs: &mut Vec<Pack>,
    errors: Vec<PackError>,
    refused: &mut Vec<RefusedPack>,
) {
    let mut by_pack: BTreeMap<usize, Vec<PackError>> = BTreeMap::new();
    for error in errors {
        if let Some(i) = packs
            .iter()
            .position(|p| error.file.starts_with(&p.meta.path))
        {
            by_pack.entry(i).or_default().push(error);
        }
    }
    refuse(packs, by_pack, refused);
}

/// Move the packs at the indices of `errors` (each with its errors) from
/// `packs` to `refused`.
fn refuse(
    packs: &mut Vec<Pack>,
    errors: BTreeMap<usize, Vec<PackError>>,
    refused: &mut Vec<RefusedPack>,
) {
    for (i, errors) in errors.into_iter().rev() {
        let pack = packs.remove(i);
        refused.push(RefusedPack {
            dir: pack.meta.path.clone(),
            name: Some(pack.meta.name),
            version: Some(pack.meta.version),
            errors,
        });
    }
}

impl Engine {
    pub async fn start(options: EngineOptions) -> Result<Engine, EngineError> {
        let runners = builtin_runners_for(&options.worker.clone().unwrap_or_default());
        let catalog = load_catalog_lenient(&options.pack_roots, &runners);
        for refused in &catalog.refused {
            tracing::error!(
                pack = refused.name.as_deref().unwrap_or("?"),
                dir = %refused.dir.display(),
                errors = refused.errors.len(),
                "pack refused; the other packs load. Its problems:\n{}",
                refused.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
            );
        }
        for warning in &catalog.warnings {
            tracing::warn!("pack: {warning}");
        }
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
        // Rules enabled or disabled at run time override the pack files.
        apply_rule_states(&store, &catalog).await?;
        let templates = Arc::new(Templates::new());
        let datastore = Arc::new(
            crate::datastore::Datastore::open(
                store.clone(),
                options.datastore_key.clone(),
                templates.kv_handle(),
                true,
            )
            .await
            .map_err(|e| EngineError::Datastore(e.to_string()))?,
        );
        let work_available = Arc::new(Notify::new());
        let finished = Arc::new(Notify::new());
        let (intake, _task) = Intake::start(
            store.clone(),
            catalog.clone(),
            templates.clone(),
            work_available.clone(),
            finished.clone(),
        );
        let host = Arc::new(RunHost {
            node_id: node_id.clone(),
            store: store.clone(),
            catalog: catalog.clone(),
            work_available: work_available.clone(),
            finished,
            inquiries: Arc::new(Notify::new()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            datastore: datastore.clone(),
            intake: intake.clone(),
            runners,
        });
        let shutdown = CancellationToken::new();
        datastore.spawn_refresh(shutdown.clone());
        tokio::spawn(follow_rule_states(
            store.clone(),
            catalog.clone(),
            shutdown.clone(),
        ));
        let make_worker = |config: WorkerConfig| {
            Worker::new(host.clone(), templates.clone(), intake.clone(), config)
        };
        let worker = options.worker.map(|config| {
            let worker = make_worker(config);
            worker.start(work_available.clone(), shutdown.clone());
            tokio::spawn(expire_inquiries(host.clone(), shutdown.clone()));
            crate::timers::spawn(
                store.clone(),
                catalog.clone(),
                intake.clone(),
                shutdown.clone(),
            );
            worker
        });
        let inline_worker = make_worker(WorkerConfig::default());
        Ok(Engine {
            node_id,
            host,
            store,
            catalog,
            templates,
            intake,
            datastore,
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
        self.request_inheriting(action_ref, provided, casting, context, &Secrets::default())
            .await
    }

    /// [`Engine::request_execution`] for a run that inherits secret values
    /// (a re-run of an execution that had them).
    async fn request_inheriting(
        &self,
        action_ref: &str,
        provided: &Map<String, Value>,
        casting: Casting,
        context: ExecutionContext,
        inherited: &Secrets,
    ) -> Result<String, EngineError> {
        let catalog = self.catalog.current();
        let planned = catalog
            .plan(
                action_ref,
                provided,
                casting,
                &self.templates,
                context.user.as_deref(),
            )
            .map_err(EngineError::Parameters)?;
        let id = new_id();
        let secrets = planned.secrets.clone().union(inherited);
        let masked = secrets.scrub_value(
            catalog.mask_parameters(action_ref, &Value::Object(planned.parameters.clone())),
        );
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
                new_execution(id.clone(), planned, &context, None, inherited),
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

    /// Cancel an execution (and kill its process when it runs here). A
    /// workflow's tasks are canceled with it: by its conductor when it runs,
    /// here when it was parked (waiting on an approval, or paused).
    pub async fn cancel(&self, id: &str) -> Result<crate::store::CancelOutcome, EngineError> {
        let outcome = self.store.request_cancel(id).await?;
        match outcome {
            crate::store::CancelOutcome::Canceling => {
                if let Some(worker) = &self.worker {
                    worker.cancel_local(id);
                }
            }
            crate::store::CancelOutcome::Canceled => {
                let mut stack = vec![id.to_owned()];
                while let Some(parent) = stack.pop() {
                    for child in self.store.active_children(&parent).await? {
                        let child_outcome = self.store.request_cancel(&child).await?;
                        if child_outcome == crate::store::CancelOutcome::Canceling
                            && let Some(worker) = &self.worker
                        {
                            worker.cancel_local(&child);
                        }
                        stack.push(child);
                    }
                }
            }
            _ => {}
        }
        Ok(outcome)
    }

    /// Pause a workflow: running tasks finish, no new task starts.
    pub async fn pause(&self, id: &str) -> Result<ControlOutcome, EngineError> {
        let model = self.workflow_model(id).await?;
        // One that has not started yet pauses at once; a running one once
        // its running tasks end (its conductor parks it).
        if self.store.move_status(id, &["requested"], "paused").await? {
            return Ok(ControlOutcome::Done("paused".into()));
        }
        if self.store.move_status(id, &["running"], "pausing").await? {
            return Ok(ControlOutcome::Done("pausing".into()));
        }
        Ok(ControlOutcome::NotApplicable(model.status))
    }

    /// Resume a paused workflow where it stopped.
    pub async fn resume(&self, id: &str) -> Result<ControlOutcome, EngineError> {
        let model = self.workflow_model(id).await?;
        if self.store.move_status(id, &["paused"], "requested").await? {
            self.host.work_available.notify_one();
            return Ok(ControlOutcome::Done("requested".into()));
        }
        if self.store.move_status(id, &["pausing"], "running").await? {
            return Ok(ControlOutcome::Done("running".into()));
        }
        Ok(ControlOutcome::NotApplicable(model.status))
    }

    async fn workflow_model(&self, id: &str) -> Result<execution::Model, EngineError> {
        let Some(model) = self.store.get_execution(id).await? else {
            return Err(EngineError::NoExecution(id.to_owned()));
        };
        if !crate::workflow::is_workflow_runner(&model.runner) {
            return Err(EngineError::NotAWorkflow(id.to_owned()));
        }
        Ok(model)
    }

    /// Run an execution again with the same parameters.
    pub async fn rerun(&self, id: &str, context: ExecutionContext) -> Result<String, EngineError> {
        self.rerun_with(id, context, false).await
    }

    /// Run an execution again. With `failed_only`, a workflow keeps the tasks
    /// that succeeded (and what they published) and runs the failed ones again.
    pub async fn rerun_with(
        &self,
        id: &str,
        mut context: ExecutionContext,
        failed_only: bool,
    ) -> Result<String, EngineError> {
        let Some(model) = self.store.get_execution(id).await? else {
            return Err(EngineError::NoExecution(id.to_owned()));
        };
        if failed_only && !crate::workflow::is_workflow_runner(&model.runner) {
            return Err(EngineError::NotAWorkflow(id.to_owned()));
        }
        let params: Map<String, Value> =
            serde_json::from_str(&model.parameters).unwrap_or_default();
        context.rerun_of = Some(id.to_owned());
        context.rerun_failed = failed_only;
        let inherited = Secrets::from_stored(model.secrets.as_deref());
        self.request_inheriting(&model.action, &params, Casting::Strict, context, &inherited)
            .await
    }

    /// Vote on an inquiry.
    pub async fn vote(
        &self,
        inquiry_id: &str,
        voter: &crate::inquiry::Voter,
        vote: crate::inquiry::Vote,
    ) -> Result<crate::inquiry::VoteOutcome, EngineError> {
        let outcome = crate::inquiry::vote(&self.store, inquiry_id, voter, vote).await?;
        if matches!(outcome, crate::inquiry::VoteOutcome::Decided(_)) {
            self.host.work_available.notify_one();
            self.host.finished.notify_waiters();
        }
        Ok(outcome)
    }

    /// Stop claiming new work.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Enable or disable a rule at run time (it overrides the pack file),
    /// recording who did it and from where. Returns whether it was enabled.
    pub async fn set_rule_enabled(
        &self,
        reference: &str,
        enabled: bool,
        actor: &str,
        source: &str,
    ) -> Result<bool, EngineError> {
        let catalog = self.catalog.current();
        let Some(rule) = catalog.rule(reference) else {
            return Err(EngineError::NoRule(reference.to_owned()));
        };
        let was = rule.enabled;
        self.store
            .set_rule_state(
                reference,
                enabled,
                AuditEntry {
                    actor: actor.to_owned(),
                    kind: if enabled {
                        "rule.enable"
                    } else {
                        "rule.disable"
                    }
                    .into(),
                    subject: reference.to_owned(),
                    detail: json!({"source": source, "was_enabled": was}),
                },
            )
            .await?;
        apply_rule_states(&self.store, &self.catalog).await?;
        Ok(was)
    }

    /// Record a control action (cancel, pause, resume, rerun, ...) in the
    /// audit log: who did it, to what, and from where (`api`, `cli`, `chat`).
    /// A failed write is logged, not returned: the action itself happened.
    pub async fn record_control(&self, actor: &str, kind: &str, subject: &str, source: &str) {
        let entry = AuditEntry {
            actor: actor.to_owned(),
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            detail: json!({"source": source}),
        };
        if let Err(err) = self.store.append_audit(&[entry]).await {
            tracing::warn!(error = %err, kind, subject, "writing an audit row failed");
        }
    }

    /// Cancelled when the engine shuts down (for services beside it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
