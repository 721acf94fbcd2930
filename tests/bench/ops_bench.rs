//! Operations-surface benchmarks (not timed tests), on a release build:
//!
//! - SSE fan-out: 100 clients on `/api/v1/stream` while 1,000 executions of
//!   `core.local cmd=true` run; delivery lag per event and client is the
//!   receipt time minus the event's own `at` (written by squall when the
//!   change was made), p50/p99, and every client must see every event once.
//! - `/metrics` scrape time with 10,000 executions in the store.
//!
//! Run with `cargo run --release -p squall-tests --bin ops-bench [sqlite|postgres]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use squall::config::{Config, Sensitive};
use squall_tests::{Backend, TestDb, pack_dirs};

/// Clients (`OPS_BENCH_SUBSCRIBERS` overrides, to see what fan-out costs).
fn subscribers() -> usize {
    std::env::var("OPS_BENCH_SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}
const EXECUTIONS: usize = 1_000;
const STORED: usize = 10_000;

fn now_ms() -> i64 {
    squall_engine::execution::now_ms()
}

/// One SSE client: every event's lag (ms), until `want` executions ended.
async fn subscribe(
    client: reqwest::Client,
    url: String,
    key: String,
    want: usize,
) -> Result<(Vec<i64>, usize)> {
    let mut response = client.get(url).header("St2-Api-Key", key).send().await?;
    ensure!(
        response.status() == 200,
        "stream answered {}",
        response.status()
    );
    let mut buffer = String::new();
    let mut lags = Vec::new();
    let mut ended = 0;
    let mut last_id = 0i64;
    let mut events = 0;
    while ended < want {
        let chunk = tokio::time::timeout(Duration::from_secs(120), response.chunk())
            .await
            .context("no event for 2 minutes")??
            .context("the stream ended")?;
        let received = now_ms();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(pos) = buffer.find("\n\n") {
            let block: String = buffer.drain(..pos + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let event: Value = serde_json::from_str(data)?;
            let id = event["id"].as_i64().context("id")?;
            ensure!(
                id > last_id,
                "event {id} after {last_id}: out of order or twice"
            );
            last_id = id;
            events += 1;
            lags.push(received - event["at"].as_i64().context("at")?);
            if event["kind"] == "execution.changed" && event["data"]["status"] == "succeeded" {
                ended += 1;
            }
        }
    }
    Ok((lags, events))
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

async fn create_many(
    base: &str,
    key: &str,
    action: &str,
    n: usize,
    cmd: Option<&str>,
) -> Result<()> {
    let client = reqwest::Client::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let client = client.clone();
        let url = format!("{base}/api/v1/executions");
        let key = key.to_owned();
        let mut body = json!({"action": action, "parameters": {}});
        if let Some(cmd) = cmd {
            body["parameters"]["cmd"] = json!(cmd);
        }
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let r = client
                .post(url)
                .header("St2-Api-Key", key)
                .json(&body)
                .send()
                .await?;
            ensure!(r.status() == 201, "create answered {}", r.status());
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn wait_drained(engine: &squall_engine::Engine, total: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let by_status = engine.store.count_executions_by_status().await?;
        let done: u64 = by_status
            .iter()
            .filter(|(s, _)| s == "succeeded")
            .map(|(_, n)| n)
            .sum();
        if done >= total {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {done} of {total} executions succeeded: {by_status:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(backend: Backend) -> Result<()> {
    squall_engine::install_crypto_provider();
    let db = TestDb::new(backend).await?;
    let data = tempfile::tempdir()?;
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data.path().to_path_buf(),
        database_url: Some(Sensitive(db.url.clone())),
        packs: pack_dirs(),
        ..Config::default()
    };
    config.worker.concurrency = 64;
    let server = squall::server::start(&config).await?;
    let base = format!("http://{}", server.addr);
    let key = std::fs::read_to_string(data.path().join("admin-api-key"))?
        .trim()
        .to_owned();

    // SSE fan-out.
    let client = reqwest::Client::new();
    let count = subscribers();
    let mut clients = Vec::new();
    for _ in 0..count {
        clients.push(tokio::spawn(subscribe(
            client.clone(),
            format!("{base}/api/v1/stream"),
            key.clone(),
            EXECUTIONS,
        )));
    }
    // Every client is connected before the first execution.
    let want = format!("squall_stream_subscribers {count}\n");
    loop {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        if text.contains(&want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    create_many(&base, &key, "core.local", EXECUTIONS, Some("true")).await?;
    wait_drained(&server.engine, EXECUTIONS as u64).await?;
    let mut lags = Vec::new();
    let mut per_client = Vec::new();
    for s in clients {
        let (l, events) = s.await??;
        per_client.push(events);
        lags.extend(l);
    }
    let elapsed = started.elapsed();
    lags.sort_unstable();
    let min_events = per_client.iter().min().copied().unwrap_or(0);
    let max_events = per_client.iter().max().copied().unwrap_or(0);
    println!(
        "backend={backend:?} SSE fan-out: {count} clients, {EXECUTIONS} executions of core.local true in {:.2} s; \
         {} deliveries ({min_events}..{max_events} events per client); lag p50 {} ms, p99 {} ms, max {} ms",
        elapsed.as_secs_f64(),
        lags.len(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0),
    );
    ensure!(
        min_events == max_events,
        "clients saw different numbers of events"
    );

    // /metrics with 10,000 executions stored.
    create_many(&base, &key, "core.noop", STORED - EXECUTIONS, None).await?;
    wait_drained(&server.engine, STORED as u64).await?;
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        times.push(t.elapsed().as_micros() as i64);
        size = text.len();
        ensure!(
            text.contains("squall_executions_stored{status=\"succeeded\"} 10000"),
            "{text}"
        );
    }
    times.sort_unstable();
    println!(
        "backend={backend:?} /metrics with {STORED} executions stored: {} bytes; scrape p50 {:.2} ms, p99 {:.2} ms (200 scrapes)",
        size,
        percentile(&times, 0.50) as f64 / 1000.0,
        percentile(&times, 0.99) as f64 / 1000.0,
    );
    server.engine.shutdown();
    db.cleanup().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let backend = match std::env::args().nth(1).as_deref() {
        None | Some("sqlite") => Backend::Sqlite,
        Some("postgres") => Backend::Postgres,
        Some(other) => bail!("backend must be sqlite or postgres, not {other}"),
    };
    run(backend).await
}
