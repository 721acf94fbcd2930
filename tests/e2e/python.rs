//! The python-script runner with a real interpreter and a real virtualenv
//! (pip from the package registry): StackStorm-style actions reading their
//! pack config and the datastore, tuple failures, timeouts, and secrets that
//! never reach `ps` or any view.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use squall_engine::datastore::KvSet;
use squall_tests::{Backend, repo_root};

use crate::server::TestServer;

on_both_backends!(python_actions_run_as_stackstorm_runs_them);

const WAIT: Duration = Duration::from_secs(600);

async fn start(backend: Backend) -> Result<TestServer> {
    TestServer::start_with(backend, |c| {
        c.packs = vec![repo_root().join("tests/fixtures/python-packs")];
    })
    .await
}

async fn run(server: &TestServer, action: &str, parameters: Value) -> Result<Value> {
    server.run_action(action, parameters, WAIT).await
}

async fn python_actions_run_as_stackstorm_runs_them(backend: Backend) -> Result<()> {
    let server = start(backend).await?;
    server
        .engine
        .datastore
        .set(&KvSet {
            scope: "system".into(),
            name: "greeting".into(),
            value: json!("hello"),
            secret: false,
            ttl: None,
        })
        .await?;

    // Config (schema defaults under configs/pyops.yaml), the datastore, a
    // helper from actions/lib importing a requirement from the pack's venv.
    // (`log_level` takes StackStorm's upper-case names.)
    let view = run(&server, "pyops.kv", json!({"log_level": "INFO"})).await?;
    assert_eq!(view["status"], "succeeded", "{view}");
    // Jinja defaults: config_context, and action_context.user (the API caller).
    let mut result = view["result"]["result"].clone();
    let endpoint = result["endpoint"].take();
    let endpoint = endpoint.as_str().unwrap_or_default();
    assert!(
        endpoint.starts_with("https://us-east-2.example.com/") && endpoint.len() > 30,
        "{view}"
    );
    assert_eq!(endpoint, endpoint.to_lowercase(), "{view}");
    assert_eq!(
        result,
        json!({
            "region": "us-east-2",
            "retries": 3,
            "greeting": "hello",
            "helper": "six-ok",
            "missing": null,
            "endpoint": null,
            "patience": "patient",
            "attempts": 4,
            "area": "in us-east-2",
        }),
        "{view}"
    );
    // The pack config's secret setting, printed by the action, is masked.
    let text = view.to_string();
    assert!(!text.contains("pyops-config-token-4711"), "{text}");
    assert!(
        view["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("calling {endpoint} with ********")),
        "{view}"
    );
    assert!(
        view["stderr"]
            .as_str()
            .unwrap_or_default()
            .contains("working in us-east-2"),
        "the logger writes to stderr: {view}"
    );
    // A local value is named for the pack and the action's class.
    let written = server
        .engine
        .datastore
        .get("system", "pyops.Kv:last_region", false)
        .await?;
    assert_eq!(written.value, json!("us-east-2"));
    let user = view["context"]["user"].as_str().context("user")?;
    let mine = server
        .engine
        .datastore
        .get(&format!("user:{user}"), "last_endpoint", false)
        .await?;
    assert_eq!(mine.value, json!(endpoint), "the user-scope value");

    // Secrets a shell command reads itself (a pack-config secret through
    // config_context when it runs; a datastore secret its default read before
    // it) reach the shell through its environment: never on a command line,
    // and masked in the views.
    server
        .engine
        .datastore
        .set(&KvSet {
            scope: "system".into(),
            name: "pyops_kv_token".into(),
            value: json!("kv-s3cret-5b1e"),
            secret: true,
            ttl: None,
        })
        .await?;
    for (action, secret, stdout) in [
        (
            "pyops.config_cmd",
            "pyops-config-token-4711",
            "config=******** length=23 quoted=********\n",
        ),
        ("pyops.kv_cmd", "kv-s3cret-5b1e", "kv=******** length=14\n"),
        // A filter sees the real value (not a stand-in for it).
        (
            "pyops.config_filter_cmd",
            "pyops-config-token-4711",
            "token=******** length=23\n",
        ),
    ] {
        let id = server.create_execution(action, json!({"hold": 2})).await?;
        crate::runners::wait_running_without(&server, &id, secret)
            .await
            .with_context(|| action.to_owned())?;
        server.engine.wait_for(&id, WAIT).await?;
        let (_, view) = server.get(&format!("/api/v1/executions/{id}")).await?;
        assert_eq!(view["status"], "succeeded", "{view}");
        assert_eq!(view["stdout"], stdout, "{view}");
        assert!(!view.to_string().contains(secret), "{view}");
    }

    // A shell action's own command reads the pack config too.
    let view = run(&server, "pyops.region_echo", json!({})).await?;
    assert_eq!(view["stdout"], "region=us-east-2 pack=pyops\n", "{view}");

    // The environment StackStorm gives an action, whether the interpreter was
    // started for the run or ahead of it (the first run of a pack's
    // interpreter starts spares; the next takes one). The `env` parameter
    // can change how an interpreter starts, so such a run starts its own.
    let names = json!([
        "ST2_ACTION_PACK_NAME",
        "ST2_ACTION_EXECUTION_ID",
        "GREETING"
    ]);
    for (parameters, warm) in [
        (json!({"names": names}), None),
        (json!({"names": names}), Some(true)),
        (
            json!({"names": names, "env": {"GREETING": "hi"}}),
            Some(false),
        ),
    ] {
        let view = run(&server, "pyops.environ", parameters.clone()).await?;
        assert_eq!(view["status"], "succeeded", "{view}");
        let result = &view["result"]["result"];
        assert_eq!(result["values"]["ST2_ACTION_PACK_NAME"], "pyops", "{view}");
        assert_eq!(
            result["values"]["ST2_ACTION_EXECUTION_ID"], view["id"],
            "{view}"
        );
        let greeting = if parameters.get("env").is_some() {
            json!("hi")
        } else {
            Value::Null
        };
        assert_eq!(result["values"]["GREETING"], greeting, "{view}");
        let actions = repo_root().join("tests/fixtures/python-packs/pyops/actions");
        assert_eq!(
            result["cwd"],
            json!(std::fs::canonicalize(actions)?),
            "{view}"
        );
        if let Some(warm) = warm {
            assert_eq!(result["warm"], warm, "{view}");
        }
    }

    // StackStorm's `(False, result)` tuple fails the execution.
    let view = run(&server, "pyops.kv", json!({"fail": true})).await?;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(view["result"]["result"], json!({"why": "asked to fail"}));
    assert_eq!(view["exit_code"], 1);
    // Only the action knows whether that may pass.
    assert_eq!(view["retry"], Value::Null, "{view}");

    // A pack whose requirements cannot be installed: a clear pack error,
    // not a hung execution.
    let view = run(&server, "pybroken.noop", json!({})).await?;
    assert_eq!(view["status"], "failed", "{view}");
    let error = view["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("pack pybroken: building its virtualenv from requirements.txt failed"),
        "{view}"
    );
    // pip found no such package: trying again cannot help.
    assert_eq!(view["retry"], "wont_help", "{view}");

    // A timeout kills the interpreter's process group.
    let view = run(
        &server,
        "pyops.sleepy",
        json!({"seconds": 60, "timeout": 1}),
    )
    .await?;
    assert_eq!(view["status"], "timeout", "{view}");

    // A secret parameter: never on a command line while the action runs, and
    // masked in every view of the execution afterwards.
    const SECRET: &str = "pY-s3cret-4c7f0e";
    let (status, created) = server
        .post(
            "/api/v1/executions",
            &json!({"action": "pyops.secret", "parameters": {"token": SECRET, "hold": 3}})
                .to_string(),
        )
        .await?;
    ensure!(status == 201, "{created}");
    let id = created["id"].as_str().context("id")?.to_owned();
    // "running" is stored before the interpreter has the parameters (venv
    // lookup, run directory), so look until the action has printed; every
    // look checks for the secret.
    crate::runners::wait_running_without(&server, &id, SECRET).await?;
    server.engine.wait_for(&id, WAIT).await?;
    let (_, view) = server.get(&format!("/api/v1/executions/{id}")).await?;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["result"]["result"]["length"], SECRET.len());
    let text = view.to_string();
    assert!(!text.contains(SECRET), "the view shows the secret: {text}");
    assert!(
        view["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("token is ********"),
        "{view}"
    );
    server.stop().await
}
