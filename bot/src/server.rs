//! `squall serve`: the engine, the worker pool and the HTTP API in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use squall_engine::{Engine, EngineError, EngineOptions};

use squall_adapters::console::ConsoleAdapter;
use squall_engine::chat::{ChatAdapter, ChatEvent};
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, router};
use crate::config::Config;
use crate::dispatcher::Dispatcher;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("chat: {0}")]
    Chat(String),
}

/// A running server.
pub struct Server {
    pub engine: Arc<Engine>,
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
    /// The configured chat adapters, built but not connected: `start_chat`
    /// connects them (take it). Their HTTP ingress routes are mounted.
    pub chat: Option<ChatEdge>,
}

/// Chat adapters and the one channel their events reach the dispatcher by.
pub struct ChatEdge {
    pub adapters: Vec<Arc<dyn ChatAdapter>>,
    events: tokio::sync::mpsc::Sender<ChatEvent>,
    receiver: tokio::sync::mpsc::Receiver<ChatEvent>,
}

impl ChatEdge {
    /// Build every adapter the configuration names (`[adapters.*]`).
    pub fn from_config(config: &Config) -> Result<ChatEdge, String> {
        Ok(Self::new(config.adapters.build_all()?))
    }

    pub fn new(adapters: Vec<Arc<dyn ChatAdapter>>) -> ChatEdge {
        let (events, receiver) = tokio::sync::mpsc::channel(1024);
        ChatEdge {
            adapters,
            events,
            receiver,
        }
    }

    /// The next event an adapter delivered (for a caller driving a
    /// dispatcher itself; `start_chat` hands them to one).
    pub async fn next_event(&mut self) -> Option<ChatEvent> {
        self.receiver.recv().await
    }

    /// The HTTP routes of adapters with HTTP ingress, each under
    /// `/api/v1/chat/<platform>/`. They authenticate the platform's requests
    /// themselves (signatures), so no API key is asked of them.
    pub fn routes(&self, body_limit: usize) -> axum::Router {
        let mut routes = axum::Router::new();
        for adapter in &self.adapters {
            if !adapter.capabilities().http_ingress {
                continue;
            }
            if let Some(router) = adapter.http_routes(self.events.clone()) {
                routes = routes.nest(&format!("/api/v1/chat/{}", adapter.platform()), router);
            }
        }
        routes.layer(axum::extract::DefaultBodyLimit::max(body_limit))
    }
}

/// Load the RBAC model from `chat.rbac_dir`. Without the directory only the
/// built-in commands work, and a warning says so.
pub fn load_rbac(config: &Config) -> Result<squall_engine::rbac::Rbac, String> {
    let dir = &config.chat.rbac_dir;
    if !dir.exists() {
        tracing::warn!(dir = %dir.display(), "no RBAC directory: chat users may run built-in commands only");
        return Ok(squall_engine::rbac::Rbac::default());
    }
    squall_engine::rbac::Rbac::load_dir(dir).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Whether this process is the only node on its database: then what an
/// earlier process left half-sent in the chat outbox is its to resend at
/// start (several nodes on PostgreSQL wait for the lease to expire instead).
fn single_node(engine: &Engine) -> bool {
    engine.store.is_single_node()
}

/// Start chat: every adapter's events go to one dispatcher, which delivers
/// the outbox. Adapter connections retry on their own; one that gives up is
/// logged.
pub async fn start_chat(
    engine: Arc<Engine>,
    config: &Config,
    edge: ChatEdge,
    shutdown: &CancellationToken,
) -> Result<Arc<Dispatcher>, String> {
    let rbac = Arc::new(load_rbac(config).map_err(|e| format!("RBAC: {e}"))?);
    let single = single_node(&engine);
    let dispatcher = Dispatcher::new(engine, rbac, edge.adapters.clone(), config.chat.clone());
    if single {
        dispatcher.recover_outbox().await;
    }
    tokio::spawn(dispatcher.clone().run(edge.receiver));
    spawn_adapters(edge.adapters, &edge.events, shutdown);
    Ok(dispatcher)
}

fn spawn_adapters(
    adapters: Vec<Arc<dyn ChatAdapter>>,
    events: &tokio::sync::mpsc::Sender<squall_engine::chat::ChatEvent>,
    shutdown: &CancellationToken,
) {
    for adapter in adapters {
        let tx = events.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(err) = adapter.run(tx, shutdown).await {
                tracing::error!(platform = adapter.platform(), error = %err, "chat adapter stopped");
            }
        });
    }
}

/// A console chat session on this terminal, beside the configured adapters.
/// Returns when the console input ends and every command has answered.
///
/// `recover`: this is the server's own session (`squall serve --console`),
/// not `squall chat` beside a running server, so the outbox an earlier
/// process left half-sent is its to resend.
pub async fn console_session(
    engine: Arc<Engine>,
    config: &Config,
    user: &str,
    edge: ChatEdge,
    recover: bool,
) -> Result<(), String> {
    let console = Arc::new(ConsoleAdapter::new(
        user,
        Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
        Box::new(tokio::io::stdout()),
    ));
    let rbac = Arc::new(load_rbac(config).map_err(|e| format!("RBAC: {e}"))?);
    let ChatEdge {
        mut adapters,
        events: tx,
        receiver: rx,
    } = edge;
    adapters.push(console.clone());
    let recover = recover && single_node(&engine);
    let dispatcher = Dispatcher::new(engine, rbac, adapters.clone(), config.chat.clone());
    if recover {
        dispatcher.recover_outbox().await;
    }
    let running = tokio::spawn(dispatcher.clone().run(rx));
    let shutdown = CancellationToken::new();
    // The console runs here, in the foreground: its end of input ends the session.
    let others = adapters
        .into_iter()
        .filter(|a| a.platform() != "console")
        .collect();
    spawn_adapters(others, &tx, &shutdown);
    let result = console.run(tx, shutdown.clone()).await;
    shutdown.cancel();
    let _ = running.await;
    dispatcher.wait_idle().await;
    result.map_err(|e| e.to_string())
}

/// Open the engine for CLI use (no workers, no recovery).
pub async fn open_engine(config: &Config) -> Result<Engine, EngineError> {
    ensure_data_dir(config);
    Engine::start(EngineOptions {
        database_url: config.database_url(),
        pack_roots: config.packs.clone(),
        worker: None,
        recover_at_start: false,
        datastore_key: config.datastore_key(),
    })
    .await
}

fn ensure_data_dir(config: &Config) {
    if config.database_url.is_none() {
        // Best effort: a failure shows up as a clear database error next.
        let _ = std::fs::create_dir_all(&config.data_dir);
    }
}

/// An engine with a worker pool but no HTTP, for `squall chat`. It does not
/// recover other nodes' executions: a server may be running on the same
/// database.
pub async fn open_engine_with_worker(config: &Config) -> Result<Engine, EngineError> {
    ensure_data_dir(config);
    Engine::start(EngineOptions {
        database_url: config.database_url(),
        pack_roots: config.packs.clone(),
        worker: Some(config.worker_config()),
        recover_at_start: false,
        datastore_key: config.datastore_key(),
    })
    .await
}

/// Start everything and serve HTTP in the background.
pub async fn start(config: &Config) -> Result<Server, ServeError> {
    ensure_data_dir(config);
    let engine = Arc::new(
        Engine::start(EngineOptions {
            database_url: config.database_url(),
            pack_roots: config.packs.clone(),
            worker: config.worker.enabled.then(|| config.worker_config()),
            recover_at_start: true,
            datastore_key: config.datastore_key(),
        })
        .await?,
    );
    if config.api.auth {
        ensure_first_api_key(&engine, config).await?;
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    let chat = ChatEdge::from_config(config).map_err(ServeError::Chat)?;
    let state = AppState::new(engine.clone(), config.api.auth, config.api.body_limit_bytes)
        .with_hooks(config.webhooks.clone(), config.alerts.clone())
        .with_rbac(Arc::new(
            load_rbac(config).map_err(|e| ServeError::Chat(format!("RBAC: {e}")))?,
        ))
        .with_adapters(chat.adapters.clone())
        .with_stream(
            crate::stream::StreamHub::start(
                engine.store.clone(),
                std::time::Duration::from_secs(config.stream.retention_hours.saturating_mul(3600)),
                engine.shutdown_token(),
            )
            .await
            .map_err(EngineError::from)?,
        );
    let app = router(state).merge(chat.routes(config.api.body_limit_bytes));
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "HTTP server stopped");
        }
    });
    let catalog = engine.catalog.current();
    tracing::info!(
        %addr,
        packs = catalog.packs.len(),
        actions = catalog.action_refs().len(),
        rules = catalog.rules().count(),
        webhooks = ?catalog.webhook_urls(),
        "squall is serving"
    );
    Ok(Server {
        engine,
        addr,
        task,
        chat: Some(chat),
    })
}

/// On the very first start there is no way to authenticate, so squall makes
/// an `admin` key and writes it to a file only the owner can read. It is never
/// logged.
async fn ensure_first_api_key(engine: &Engine, config: &Config) -> Result<(), ServeError> {
    if engine
        .store
        .count_api_keys()
        .await
        .map_err(EngineError::from)?
        > 0
    {
        return Ok(());
    }
    let (_, key) = engine
        .store
        .create_api_key("admin")
        .await
        .map_err(EngineError::from)?;
    let path = config.data_dir.join("admin-api-key");
    write_private(&path, &format!("{key}\n")).map_err(|source| ServeError::Write {
        path: path.clone(),
        source,
    })?;
    tracing::info!(path = %path.display(), "created the first API key (name: admin)");
    Ok(())
}

fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())
}
