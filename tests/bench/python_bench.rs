//! python-script runner benchmark (not a timed test): the overhead of a
//! StackStorm python action that does nothing (`pyops.nothing`), one run at a
//! time (per-run overhead: the run's duration as squall records it, p50/p90)
//! and many at once (runs per second from the first request to the last
//! stored end, as the database recorded them). Measured twice: with every
//! run starting its interpreter (`worker.warm_python = 0`) and with
//! interpreters started ahead of the runs (`warm_python`, default 2).
//!
//! Run with `cargo run --release -p squall-tests --bin python-bench [runs] [concurrent] [warm]`.

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Map;
use squall_engine::execution::ExecutionContext;
use squall_engine::params::Casting;
use squall_engine::worker::WorkerConfig;
use squall_engine::{Engine, EngineOptions};
use squall_tests::{Backend, TestDb, repo_root};

fn arg(index: usize, default: usize) -> usize {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

async fn request(engine: &Engine) -> Result<String> {
    Ok(engine
        .request_execution(
            "pyops.nothing",
            &Map::new(),
            Casting::Strict,
            ExecutionContext {
                source: "bench".into(),
                ..ExecutionContext::default()
            },
        )
        .await?)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<()> {
    squall_engine::install_crypto_provider();
    let runs = arg(1, 50);
    let concurrent = arg(2, 200);
    let warm = arg(3, WorkerConfig::default().warm_python);
    for warm_python in [0, warm] {
        println!("warm_python = {warm_python}:");
        measure(warm_python, runs, concurrent).await?;
    }
    Ok(())
}

async fn measure(warm_python: usize, runs: usize, concurrent: usize) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let db = TestDb::new(Backend::Sqlite).await?;
    let engine = Engine::start(EngineOptions {
        database_url: db.url.clone(),
        pack_roots: vec![repo_root().join("tests/fixtures/python-packs")],
        worker: Some(WorkerConfig {
            warm_python,
            ..WorkerConfig::default()
        }),
        recover_at_start: true,
        datastore_key: squall_engine::datastore::KeySource::File(
            scratch.path().join("datastore.key"),
        ),
    })
    .await?;

    // Warm-up: the pack's virtualenv is built (or found) once.
    let id = request(&engine).await?;
    let model = engine.wait_for(&id, Duration::from_secs(900)).await?;
    if model.status != "succeeded" {
        bail!("pyops.nothing ended {}: {:?}", model.status, model.error);
    }

    // One at a time: what a run costs, start to end of the interpreter.
    let mut durations = Vec::with_capacity(runs);
    for _ in 0..runs {
        let id = request(&engine).await?;
        let model = engine.wait_for(&id, Duration::from_secs(60)).await?;
        if model.status != "succeeded" {
            bail!("pyops.nothing ended {}: {:?}", model.status, model.error);
        }
        durations.push(model.finished_at.unwrap_or(0) - model.started_at.unwrap_or(0));
    }
    durations.sort_unstable();
    println!(
        "one at a time, {runs} runs: per-run overhead p50 {} ms, p90 {} ms (start to end, as stored)",
        percentile(&durations, 0.5),
        percentile(&durations, 0.9)
    );

    // Many at once, as the worker's concurrency allows.
    let mut ids = Vec::with_capacity(concurrent);
    for _ in 0..concurrent {
        ids.push(request(&engine).await?);
    }
    let mut first_created = i64::MAX;
    let mut last_finished = 0;
    for id in &ids {
        let model = engine.wait_for(id, Duration::from_secs(600)).await?;
        if model.status != "succeeded" {
            bail!("pyops.nothing ended {}: {:?}", model.status, model.error);
        }
        first_created = first_created.min(model.created_at);
        last_finished = last_finished.max(model.finished_at.unwrap_or(0));
    }
    let seconds = (last_finished - first_created) as f64 / 1000.0;
    println!(
        "{concurrent} at once: {seconds:.2} s = {:.1} runs/s (first request to last stored end)",
        concurrent as f64 / seconds
    );
    engine.shutdown();
    db.cleanup().await
}
