//! Workflow engine benchmarks (not timed tests): the per-task overhead of a
//! 1,000-task sequential workflow of `core.noop`, and with-items over 10,000
//! items at concurrency 100. Durable SQLite (WAL, synchronous=FULL) by
//! default; `--postgres` runs them on PostgreSQL too.
//!
//! Run with `bash scripts/bench-workflows.sh` (release build).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};
use squall_engine::execution::ExecutionContext;
use squall_engine::params::Casting;
use squall_engine::worker::WorkerConfig;
use squall_engine::{Engine, EngineOptions};
use squall_tests::{Backend, TestDb, repo_root};

const SEQUENTIAL: usize = 1_000;
const ITEMS: usize = 10_000;

fn write_pack(dir: &std::path::Path) -> Result<()> {
    let pack = dir.join("wfbench");
    std::fs::create_dir_all(pack.join("actions/workflows"))?;
    std::fs::write(
        pack.join("pack.yaml"),
        "ref: wfbench\nname: wfbench\ndescription: workflow benchmarks\nversion: 0.1.0\n",
    )?;
    std::fs::write(
        pack.join("actions/sequence.yaml"),
        "name: sequence\nrunner_type: orquesta\nentry_point: workflows/sequence.yaml\nparameters: {}\n",
    )?;
    let mut tasks = String::from("version: 1.0\ntasks:\n");
    for i in 0..SEQUENTIAL {
        tasks.push_str(&format!("  t{i}:\n    action: core.noop\n"));
        if i + 1 < SEQUENTIAL {
            tasks.push_str(&format!(
                "    next:\n      - when: \"{{{{ succeeded }}}}\"\n        do: t{}\n",
                i + 1
            ));
        }
    }
    std::fs::write(pack.join("actions/workflows/sequence.yaml"), tasks)?;
    std::fs::write(
        pack.join("actions/items.yaml"),
        "name: items\nrunner_type: orquesta\nentry_point: workflows/items.yaml\nparameters:\n  items:\n    type: array\n    required: true\n",
    )?;
    std::fs::write(
        pack.join("actions/workflows/items.yaml"),
        "version: 1.0\ninput: [items]\ntasks:\n  each:\n    with:\n      items: \"{{ ctx.items }}\"\n      concurrency: 100\n    action: core.noop\n",
    )?;
    Ok(())
}

async fn run(engine: &Engine, action: &str, params: Value, tasks: usize) -> Result<Duration> {
    let params: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
    let started = Instant::now();
    let id = engine
        .request_execution(
            action,
            &params,
            Casting::Strict,
            ExecutionContext {
                source: "bench".into(),
                ..ExecutionContext::default()
            },
        )
        .await?;
    let model = engine.wait_for(&id, Duration::from_secs(600)).await?;
    if model.status != "succeeded" {
        bail!("{action} ended {}: {:?}", model.status, model.error);
    }
    // Everything was really stored: one child execution per task or item.
    let children = engine.store.children_of(&id).await?;
    let done = children.iter().filter(|c| c.status == "succeeded").count();
    if done != tasks {
        bail!("{action}: {done} of {tasks} task executions stored as succeeded");
    }
    // From the request to the stored end, as the database recorded them
    // (the polling in wait_for would add its own delay).
    let stored = model.finished_at.unwrap_or(0) - model.created_at;
    let stored = Duration::from_millis(u64::try_from(stored).unwrap_or(0));
    Ok(stored.min(started.elapsed()))
}

async fn bench(backend: Backend) -> Result<()> {
    let packs = tempfile::tempdir()?;
    write_pack(packs.path())?;
    let db = TestDb::new(backend).await?;
    let engine = Engine::start(EngineOptions {
        database_url: db.url.clone(),
        pack_roots: vec![repo_root().join("packs"), packs.path().to_path_buf()],
        worker: Some(WorkerConfig::default()),
        recover_at_start: true,
        datastore_key: squall_engine::datastore::KeySource::File(
            packs.path().join("datastore.key"),
        ),
    })
    .await?;
    println!("{backend:?}");
    for round in 1..=3 {
        let took = run(&engine, "wfbench.sequence", json!({}), SEQUENTIAL).await?;
        println!(
            "  sequential {SEQUENTIAL} noop tasks, round {round}: {:.3} s = {:.3} ms per task",
            took.as_secs_f64(),
            took.as_secs_f64() * 1000.0 / SEQUENTIAL as f64
        );
    }
    let items: Vec<u32> = (0..ITEMS as u32).collect();
    for round in 1..=2 {
        let took = run(&engine, "wfbench.items", json!({ "items": items }), ITEMS).await?;
        println!(
            "  with-items over {ITEMS} items at concurrency 100, round {round}: {:.3} s ({:.0} items/s)",
            took.as_secs_f64(),
            ITEMS as f64 / took.as_secs_f64()
        );
    }
    engine.shutdown();
    db.cleanup().await
}

#[tokio::main]
async fn main() -> Result<()> {
    squall_engine::install_crypto_provider();
    bench(Backend::Sqlite).await?;
    if std::env::args().any(|a| a == "--postgres") {
        bench(Backend::Postgres).await?;
    }
    Ok(())
}
