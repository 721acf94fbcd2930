//! Harness for squall's end-to-end tests: fresh databases on SQLite and
//! PostgreSQL, in-process servers on loopback, and the real `squall` binary
//! as a child process.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod discord;
pub mod slack;

use anyhow::{Context, Result, bail};
use sea_orm::{ConnectionTrait, Database};

/// Repository root (tests run with the `tests/` crate as working directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The shipped packs plus the test fixtures.
/// A GET of `url` answering 2xx, within 30 s (a server starting up).
pub async fn wait_http_ok(url: &str, what: &str) -> Result<()> {
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(30), what, || {
        let client = client.clone();
        let url = url.to_owned();
        async move {
            Ok(client
                .get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        }
    })
    .await
}

/// [`pack_dirs`] as the value of `SQUALL_PACKS` (a TOML array).
pub fn pack_dirs_env() -> String {
    let quoted: Vec<String> = pack_dirs()
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!("[{}]", quoted.join(","))
}

pub fn pack_dirs() -> Vec<PathBuf> {
    vec![
        repo_root().join("packs"),
        repo_root().join("tests/fixtures/packs"),
    ]
}

/// PostgreSQL server URL for tests (a database on it is created per test).
pub fn postgres_server_url() -> String {
    std::env::var("SQUALL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test and is removed afterwards, whether
/// the test passed or not: a PostgreSQL database is dropped when the value is
/// dropped, during a failing test's unwinding too.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    pg_name: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Result<TestDb> {
        let dir = tempfile::tempdir()?;
        match backend {
            Backend::Sqlite => Ok(TestDb {
                url: format!("sqlite://{}", dir.path().join("squall.db").display()),
                backend,
                pg_name: None,
                _dir: dir,
            }),
            Backend::Postgres => {
                let server = postgres_server_url();
                let admin = Database::connect(format!("{server}/postgres")).await.with_context(|| {
                    format!(
                        "PostgreSQL is not reachable at {server} (set SQUALL_TEST_POSTGRES to another server, \
                         or start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)"
                    )
                })?;
                let name = format!(
                    "squall_test_{}",
                    ulid::Ulid::new().to_string().to_lowercase()
                );
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .context("creating the test database")?;
                admin.close().await.ok();
                Ok(TestDb {
                    url: format!("{server}/{name}"),
                    backend,
                    pg_name: Some(name),
                    _dir: dir,
                })
            }
        }
    }

    /// The PostgreSQL database's name (`None` on SQLite).
    pub fn postgres_name(&self) -> Option<&str> {
        self.pg_name.as_deref()
    }

    /// Drop the PostgreSQL database now and report a failure (SQLite files
    /// go with the temp dir). Without this call, `Drop` still drops it.
    pub async fn cleanup(mut self) -> Result<()> {
        if let Some(name) = self.pg_name.take() {
            drop_postgres_database(&name).await?;
        }
        Ok(())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime (or while it unwinds), where
        // blocking on async work is not allowed: use a runtime of its own on
        // another thread, and wait for it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(drop_postgres_database(&name))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop a test database: {err:#}"),
            Err(_) => eprintln!("dropping a test database panicked"),
        }
    }
}

async fn drop_postgres_database(name: &str) -> Result<()> {
    let admin = Database::connect(format!("{}/postgres", postgres_server_url())).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .with_context(|| format!("dropping test database {name}"))?;
    admin.close().await.ok();
    Ok(())
}

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Path of the `squall` binary built beside this test binary.
pub fn squall_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/squall
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected test binary location")?;
    let bin = profile_dir.join("squall");
    if !bin.exists() {
        bail!(
            "{} is missing: build it first with `cargo build -p squall` (scripts/test.sh does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Poll `check` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real Prometheus Alertmanager on loopback whose one webhook receiver
/// posts to `webhook_url` with `Authorization: Bearer <key>`; stopped on drop.
pub struct Alertmanager {
    pub url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    pub async fn start(webhook_url: &str, key: &str) -> Result<Alertmanager> {
        let binary = which("prometheus-alertmanager").context(
            "prometheus-alertmanager is not installed: run `bash scripts/testenv/alertmanager.sh` \
             (apt-get install prometheus-alertmanager; scripts/test.sh does it)",
        )?;
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let config = format!(
            "route:\n  receiver: squall\n  group_by: ['alertname']\n  group_wait: 0s\n  \
             group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: squall\n    \
             webhook_configs:\n      - url: {webhook_url}\n        send_resolved: true\n        \
             http_config:\n          authorization:\n            credentials: {key}\n"
        );
        std::fs::write(dir.path().join("alertmanager.yml"), config)?;
        let url = format!("http://127.0.0.1:{port}");
        let child = std::process::Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--web.external-url={url}"))
            // An empty cluster address turns clustering (and its gossip port) off.
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting prometheus-alertmanager")?;
        let am = Alertmanager {
            url: url.clone(),
            child,
            _dir: dir,
        };
        wait_http_ok(&format!("{url}/-/ready"), "Alertmanager to be ready").await?;
        Ok(am)
    }

    /// Post alerts to Alertmanager's API (`/api/v2/alerts`).
    pub async fn post(&self, alerts: &serde_json::Value) -> Result<()> {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(alerts)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("Alertmanager answered {}", response.status());
        }
        Ok(())
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// A real Prometheus server on loopback scraping one target every second.
pub struct Prometheus {
    pub url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrape `target` (`host:port`) at `/metrics` as job `squall`.
    pub async fn start(target: &str) -> Result<Prometheus> {
        let binary = which("prometheus").context(
            "prometheus is not installed: run `bash scripts/testenv/prometheus.sh` \
             (apt-get install prometheus; scripts/test.sh does it)",
        )?;
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: squall\n    metrics_path: /metrics\n    static_configs:\n      \
             - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        let url = format!("http://127.0.0.1:{port}");
        let child = std::process::Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting prometheus")?;
        let prometheus = Prometheus {
            url: url.clone(),
            child,
            _dir: dir,
        };
        wait_http_ok(&format!("{url}/-/ready"), "Prometheus to be ready").await?;
        Ok(prometheus)
    }

    /// The value of an instant query that returns one series, if it does.
    pub async fn query_one(&self, query: &str) -> Result<Option<f64>> {
        let body: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await?
            .json()
            .await?;
        if body["status"] != "success" {
            bail!("Prometheus refused {query:?}: {body}");
        }
        let result = body["data"]["result"]
            .as_array()
            .context("no result array")?;
        match result.as_slice() {
            [] => Ok(None),
            [one] => Ok(one["value"][1].as_str().and_then(|v| v.parse::<f64>().ok())),
            more => bail!("{query:?} returned {} series: {body}", more.len()),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
