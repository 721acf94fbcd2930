//! `squall`: entry point of the CLI and the server.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use serde_json::{Value, json};

use squall::cli::{
    AliasCommand, ApikeyCommand, Cli, Command, ExecutionCommand, PackCommand, RbacCommand,
    RuleCommand, RunArgs, TriggerCommand, parse_assignments,
};

mod control;
mod keys;
mod ops;
mod tail;
use squall::config::Config;
use squall::{output, server};
use squall_engine::describe::{execution_detail, execution_view};
use squall_engine::execution::{ExecutionContext, ExecutionStatus};
use squall_engine::params::Casting;
use squall_engine::store::ExecutionFilter;

/// Libraries that log the values they handle at debug level: handlebars
/// prints every rendered parameter (secrets included). They are held at
/// `warn` whatever `SQUALL_LOG` asks for, so that no log level leaks a secret.
const VALUE_LOGGING_TARGETS: &[&str] = &["handlebars"];

/// Warnings that say nothing about squall: matrix-sdk warns after every sync
/// that it has no room-key backup key, and squall never sets up key backup.
const NOISE_TARGETS: &[&str] = &["matrix_sdk_crypto::backups"];

/// `SQUALL_LOG` (EnvFilter syntax) or `default`, with
/// [`VALUE_LOGGING_TARGETS`] capped at `warn` and [`NOISE_TARGETS`] at `error`.
fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("SQUALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let caps = VALUE_LOGGING_TARGETS
        .iter()
        .map(|target| format!("{target}=warn"))
        .chain(NOISE_TARGETS.iter().map(|target| format!("{target}=error")));
    for directive in caps {
        if let Ok(cap) = directive.parse() {
            // A directive for the same target replaces the user's.
            filter = filter.add_directive(cap);
        }
    }
    filter
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs what it does; one-shot commands only warn.
    let default_filter = match cli.command {
        Command::Serve { console: false, .. } => "info,sea_orm_migration=warn",
        _ => "warn",
    };
    // The log format comes from the configuration; a configuration that
    // does not load is reported by the command itself, in text.
    let format = Config::load(cli.config.as_deref())
        .map(|c| c.log.format)
        .unwrap_or_default();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(log_filter(default_filter))
        .with_writer(std::io::stderr);
    match format {
        squall::config::LogFormat::Json => logs.json().flatten_event(true).init(),
        squall::config::LogFormat::Text => logs.init(),
    }
    squall_engine::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Pack(PackCommand::Validate { dirs }) = &cli.command {
        return validate_packs(&cli, dirs);
    }
    if let Command::Pack(PackCommand::Install { dirs }) = &cli.command {
        return install_packs(&cli, dirs).await;
    }
    let config = Config::load(cli.config.as_deref()).map_err(|e| anyhow!("configuration: {e}"))?;
    let remote = cli
        .server
        .as_deref()
        .map(|url| Remote::new(url, cli.api_key.clone()));
    match cli.command {
        Command::Serve { console, user } => serve(&config, console.then_some(user)).await,
        Command::Chat { user } => {
            let engine = std::sync::Arc::new(server::open_engine_with_worker(&config).await?);
            eprintln!("squall chat: you are console:{user}; type `help`, end with Ctrl-D.");
            let edge = server::ChatEdge::from_config(&config).map_err(|e| anyhow!(e))?;
            server::console_session(engine, &config, &user, edge, false)
                .await
                .map_err(|e| anyhow!(e))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_action(&config, remote, args).await,
        Command::Execution(cmd) => execution(&config, remote, cmd).await,
        Command::Inquiry(cmd) => control::inquiry(&config, remote, cmd).await,
        Command::Rule(RuleCommand::List { json }) => {
            let rules = match remote {
                Some(r) => r.get("/api/v1/rules").await?,
                None => {
                    // On the database: rules enabled or disabled at run time count.
                    let engine = server::open_engine(&config).await?;
                    let catalog = engine.catalog.current();
                    Value::Array(catalog.rules().map(|r| json!({
                        "ref": r.reference(), "enabled": r.enabled,
                        "trigger": {"type": r.trigger_type, "parameters": r.trigger_parameters},
                        "action": {"ref": r.action_ref},
                    })).collect())
                }
            };
            print_json_or(json, &rules, || {
                output::rule_table(rules.as_array().map_or(&[], Vec::as_slice))
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Apikey(ApikeyCommand::Create { name }) => {
            if remote.is_some() {
                bail!(
                    "API keys are created on the database directly: run without --server on the server's machine"
                );
            }
            let engine = server::open_engine(&config).await?;
            let (id, key) = engine.store.create_api_key(&name).await?;
            eprintln!("created API key {id} named {name:?}; it is shown once:");
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Rule(RuleCommand::Enable { reference }) => {
            ops::rule_toggle(&config, remote, &reference, true).await
        }
        Command::Rule(RuleCommand::Disable { reference }) => {
            ops::rule_toggle(&config, remote, &reference, false).await
        }
        Command::Apikey(ApikeyCommand::List { json }) => {
            ops::apikey_list(&config, remote, json).await
        }
        Command::Apikey(ApikeyCommand::Revoke { key }) => {
            ops::apikey_revoke(&config, remote, &key).await
        }
        Command::Trigger(TriggerCommand::Fire { trigger, payload }) => {
            ops::trigger_fire(&config, remote, &trigger, &payload).await
        }
        Command::Audit(cmd) => ops::audit(&config, remote, cmd).await,
        Command::Alias(AliasCommand::List { filter }) => {
            ops::alias_help(&config, remote, filter).await
        }
        Command::Alias(AliasCommand::Execute {
            text,
            timeout,
            json,
        }) => ops::alias_execute(&config, remote, &text, timeout, json).await,
        Command::Key(cmd) => keys::key(&config, remote, cmd).await,
        Command::Pack(PackCommand::List { json }) => ops::pack_list(&config, remote, json).await,
        Command::Pack(PackCommand::Validate { .. } | PackCommand::Install { .. }) => {
            unreachable_validate()
        }
        Command::Rbac(cmd) => rbac(&config, cmd),
        Command::Alias(AliasCommand::Match { text }) if remote.is_some() => {
            let command = text.trim_start_matches(config.chat.prefix.as_str());
            let matched = remote
                .as_ref()
                .context("a server")?
                .post("/api/v1/actionalias/match", &json!({"command": command}))
                .await?;
            println!("{}", serde_json::to_string_pretty(&matched)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Alias(AliasCommand::Match { text }) => {
            let runners = squall_engine::builtin_runners();
            let catalog = squall_engine::load_catalog_lenient(&config.packs, &runners);
            match catalog
                .aliases
                .match_command(text.trim_start_matches(config.chat.prefix.as_str()))
            {
                Ok(m) => {
                    let action = catalog
                        .alias(&m.alias_id)
                        .map(|a| a.action_ref.clone())
                        .unwrap_or_default();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json!({
                            "alias": m.alias_id, "format": m.representation, "action": action,
                            "parameters": m.parameters,
                        }))?
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    eprintln!("{err}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

fn rbac(config: &Config, cmd: RbacCommand) -> Result<ExitCode> {
    use squall_engine::rbac::Permission;
    let model = server::load_rbac(config).map_err(|e| anyhow!("RBAC: {e}"))?;
    match cmd {
        RbacCommand::Show => {
            for (name, role) in model.roles() {
                let grants: Vec<&str> = role.grants.iter().map(String::as_str).collect();
                println!(
                    "{name}: {}",
                    if grants.is_empty() {
                        "(no grants)".to_owned()
                    } else {
                        grants.join(", ")
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RbacCommand::Check { identity, grant } => {
            let permission = match grant.split_once(':') {
                Some(("alias", r)) => Permission::Alias(r.to_owned()),
                Some(("action", r)) => Permission::Action(r.to_owned()),
                _ if grant == "inquiry:respond" => Permission::InquiryRespond,
                _ if grant == "key:read" => Permission::KeyRead,
                _ if grant == "key:write" => Permission::KeyWrite,
                _ if grant == "key:decrypt" => Permission::KeyDecrypt,
                _ => bail!(
                    "{grant:?} is not alias:<pack>.<name>, action:<pack>.<name>, inquiry:respond, key:read, key:write or key:decrypt"
                ),
            };
            match model.check(&identity, &permission) {
                Ok(principal) => {
                    println!(
                        "allowed: {identity} (user {}, roles {})",
                        principal.user.as_deref().unwrap_or("-"),
                        principal.roles.join(", ")
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(denied) => {
                    println!("denied: {denied}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

fn unreachable_validate() -> Result<ExitCode> {
    bail!("pack validate is handled before configuration is loaded")
}

fn print_json_or(as_json: bool, value: &Value, human: impl FnOnce() -> String) {
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{}", human());
    }
}

/// The pack directories a `squall pack` command works on: those given, else the
/// configured ones.
fn pack_dirs(cli: &Cli, dirs: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>> {
    Ok(if dirs.is_empty() {
        Config::load(cli.config.as_deref())
            .map_err(|e| anyhow!("configuration: {e}"))?
            .packs
    } else {
        dirs.to_vec()
    })
}

/// `squall pack install`: build the virtualenvs of the loaded python packs now, so
/// no first run waits for pip; a pack whose install fails is named with pip's reason.
async fn install_packs(cli: &Cli, dirs: &[std::path::PathBuf]) -> Result<ExitCode> {
    let dirs = pack_dirs(cli, dirs)?;
    let catalog = squall_engine::load_catalog_lenient(&dirs, &squall_engine::builtin_runners());
    print_refused(&catalog.refused);
    let mut failed = !catalog.refused.is_empty();
    for pack in &catalog.packs {
        let python = pack
            .actions
            .iter()
            .any(|a| a.runner_type == "python-script");
        if !python || !pack.meta.path.join("requirements.txt").is_file() {
            continue;
        }
        match squall_engine::runners::prepare_python_pack(&pack.meta.path, &pack.meta.name).await {
            Ok(python) => println!(
                "{}: virtualenv ready ({})",
                pack.meta.name,
                python.display()
            ),
            Err(e) => {
                eprintln!("{}: {e}", pack.meta.name);
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Each refused pack with all of its errors, on stderr; the number of errors.
fn print_refused(refused: &[squall_engine::pack::RefusedPack]) -> usize {
    let mut count = 0;
    for pack in refused {
        eprintln!(
            "refused: {} ({})",
            pack.name.as_deref().unwrap_or("?"),
            pack.dir.display()
        );
        for e in &pack.errors {
            eprintln!("{e}");
            count += 1;
        }
    }
    count
}

fn validate_packs(cli: &Cli, dirs: &[std::path::PathBuf]) -> Result<ExitCode> {
    let dirs = pack_dirs(cli, dirs)?;
    // Loaded as `serve` loads them (each pack on its own); any refused pack
    // fails the validation, with every problem of every pack.
    let catalog = squall_engine::load_catalog_lenient(&dirs, &squall_engine::builtin_runners());
    for warning in &catalog.warnings {
        eprintln!("warning: {warning}");
    }
    if catalog.refused.is_empty() {
        println!(
            "ok: {} pack(s), {} action(s), {} rule(s)",
            catalog.packs.len(),
            catalog.action_refs().len(),
            catalog.rules().count()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let count = print_refused(&catalog.refused);
    if !catalog.packs.is_empty() {
        eprintln!(
            "{} pack(s) load: {}",
            catalog.packs.len(),
            catalog
                .packs
                .iter()
                .map(|p| p.meta.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!("{count} error(s)");
    Ok(ExitCode::FAILURE)
}

async fn serve(config: &Config, console_user: Option<String>) -> Result<ExitCode> {
    let mut server = server::start(config).await?;
    let chat_shutdown = tokio_util::sync::CancellationToken::new();
    let edge = match server.chat.take() {
        Some(edge) => edge,
        None => server::ChatEdge::from_config(config).map_err(|e| anyhow!(e))?,
    };
    match console_user {
        // The console session brings the configured adapters with it.
        Some(user) => {
            let engine = server.engine.clone();
            let config = config.clone();
            tokio::spawn(async move {
                if let Err(err) = server::console_session(engine, &config, &user, edge, true).await
                {
                    tracing::error!(error = %err, "the console stopped");
                }
            });
        }
        None => {
            if !edge.adapters.is_empty() {
                server::start_chat(server.engine.clone(), config, edge, &chat_shutdown)
                    .await
                    .map_err(|e| anyhow!(e))?;
            }
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = server.task => bail!("the HTTP server stopped unexpectedly"),
    }
    tracing::info!("shutting down");
    chat_shutdown.cancel();
    server.engine.shutdown();
    Ok(ExitCode::SUCCESS)
}

fn status_exit(view: &Value) -> ExitCode {
    if view["status"] == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run_action(config: &Config, remote: Option<Remote>, args: RunArgs) -> Result<ExitCode> {
    let params = parse_assignments(&args.parameters).map_err(|e| anyhow!(e))?;
    let timeout = Duration::from_secs(args.timeout);
    let view = match remote {
        Some(remote) => {
            // `name=value` arguments are text: the server casts them with the
            // action's parameter types, as it does for chat commands.
            let created = remote
                .post(
                    "/api/v1/executions",
                    &json!({"action": args.action, "parameters": params, "parameters_are_text": true}),
                )
                .await?;
            let id = created["id"]
                .as_str()
                .context("the server returned no execution id")?
                .to_owned();
            remote.wait(&id, timeout).await?
        }
        None => {
            let engine = server::open_engine(config).await?;
            let context = ExecutionContext {
                source: "cli".into(),
                user: std::env::var("USER").ok().map(|u| format!("cli:{u}")),
                ..ExecutionContext::default()
            };
            let id = engine
                .request_execution(&args.action, &params, Casting::FromText, context)
                .await?;
            engine.run_inline(&id).await?;
            let model = engine.wait_for(&id, timeout).await?;
            execution_detail(&engine.store, &model, &engine.catalog.current()).await?
        }
    };
    print_json_or(args.json, &view, || output::execution_detail(&view));
    Ok(status_exit(&view))
}

async fn execution(
    config: &Config,
    remote: Option<Remote>,
    cmd: ExecutionCommand,
) -> Result<ExitCode> {
    match cmd {
        ExecutionCommand::List {
            action,
            status,
            limit,
            json,
        } => {
            let list = match remote {
                Some(remote) => {
                    let mut path = format!("/api/v1/executions?limit={limit}");
                    if let Some(a) = &action {
                        path.push_str(&format!("&action={a}"));
                    }
                    if let Some(s) = &status {
                        path.push_str(&format!("&status={s}"));
                    }
                    remote.get(&path).await?
                }
                None => {
                    let status = match status.as_deref() {
                        None => None,
                        Some(s) => Some(ExecutionStatus::parse(s).ok_or_else(|| {
                            anyhow!(
                                "unknown status {s:?}; one of: {}",
                                ExecutionStatus::ALL.map(|s| s.as_str()).join(", ")
                            )
                        })?),
                    };
                    let engine = server::open_engine(config).await?;
                    let models = engine
                        .store
                        .list_executions(&ExecutionFilter {
                            action,
                            status,
                            limit,
                        })
                        .await?;
                    let catalog = engine.catalog.current();
                    Value::Array(models.iter().map(|m| execution_view(m, &catalog)).collect())
                }
            };
            print_json_or(json, &list, || {
                output::execution_table(list.as_array().map_or(&[], Vec::as_slice))
            });
            Ok(ExitCode::SUCCESS)
        }
        ExecutionCommand::Get { id, json } => {
            let (view, _) = execution_of(config, remote.as_ref(), &id).await?;
            print_json_or(json, &view, || output::execution_detail(&view));
            Ok(ExitCode::SUCCESS)
        }
        ExecutionCommand::Tail { id } => {
            let (view, engine) = execution_of(config, remote.as_ref(), &id).await?;
            if is_finished(&view) {
                return Ok(tail::print_finished(&id, &view));
            }
            match (remote, engine) {
                (Some(remote), _) => {
                    tail::follow_remote(&remote.client, &remote.base, remote.key.as_deref(), &id)
                        .await
                }
                (None, Some(engine)) => tail::follow_local(&engine.store, &id).await,
                (None, None) => bail!("no server and no database to follow {id} on"),
            }
        }
        other => control::execution_control(config, remote, other).await,
    }
}

/// One execution's detail, from the server or the database (with the
/// engine opened on it).
async fn execution_of(
    config: &Config,
    remote: Option<&Remote>,
    id: &str,
) -> Result<(Value, Option<squall_engine::Engine>)> {
    if let Some(remote) = remote {
        return Ok((remote.get(&format!("/api/v1/executions/{id}")).await?, None));
    }
    let engine = server::open_engine(config).await?;
    let model = engine
        .store
        .get_execution(id)
        .await?
        .ok_or_else(|| anyhow!("no execution {id}"))?;
    let view = execution_detail(&engine.store, &model, &engine.catalog.current()).await?;
    Ok((view, Some(engine)))
}

fn is_finished(view: &Value) -> bool {
    view["status"]
        .as_str()
        .and_then(ExecutionStatus::parse)
        .is_some_and(ExecutionStatus::is_terminal)
}

/// A running server, over HTTP.
struct Remote {
    base: String,
    key: Option<String>,
    client: reqwest::Client,
}

impl Remote {
    fn new(base: &str, key: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
            client: reqwest::Client::new(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let request = match &self.key {
            Some(key) => request.header("St2-Api-Key", key),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach squall at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body["detail"].as_str().unwrap_or("no detail");
            bail!("the server answered {status}: {detail}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    async fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.client.put(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.client.delete(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn wait(&self, id: &str, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = self.get(&format!("/api/v1/executions/{id}")).await?;
            if is_finished(&view) {
                return Ok(view);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "execution {id} did not finish within {timeout:?}; see `squall execution get {id}`"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
