//! Webhook intake over real HTTP: authentication, body parsing, limits, and
//! the webhook -> rule -> action path (including shell injection attempts).

use anyhow::Result;
use serde_json::{Value, json};
use squall_tests::Backend;

use crate::server::TestServer;

#[tokio::test]
async fn webhook_without_a_valid_key_is_refused_and_stores_nothing() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let url = server.url("/api/v1/webhooks/deploy");
    let no_key = server
        .http
        .post(&url)
        .json(&json!({"app": "web"}))
        .send()
        .await?;
    assert_eq!(no_key.status().as_u16(), 401);
    let body: Value = no_key.json().await?;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("St2-Api-Key"),
        "{body}"
    );
    let wrong_key = server
        .http
        .post(&url)
        .header("St2-Api-Key", "sq_not_a_key")
        .json(&json!({"app": "web"}))
        .send()
        .await?;
    assert_eq!(wrong_key.status().as_u16(), 401);
    let wrong_bearer = server
        .http
        .post(&url)
        .bearer_auth("sq_not_a_key")
        .json(&json!({"app": "web"}))
        .send()
        .await?;
    assert_eq!(wrong_bearer.status().as_u16(), 401);
    assert_eq!(server.engine.store.count_trigger_instances().await?, 0);
    server.stop().await
}

#[tokio::test]
async fn bearer_token_is_accepted_like_the_st2_header() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let response = server
        .http
        .post(server.url("/api/v1/webhooks/deploy"))
        .bearer_auth(&server.key)
        .json(&json!({"app": "web"}))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 202);
    server.stop().await
}

#[tokio::test]
async fn malformed_json_is_a_400_that_says_why() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let (status, body) = server
        .post("/api/v1/webhooks/deploy", "{\"app\": \"web\",")
        .await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "malformed_json");
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("not valid JSON") && detail.contains("line 1"),
        "{detail}"
    );
    assert_eq!(server.engine.store.count_trigger_instances().await?, 0);
    server.stop().await
}

#[tokio::test]
async fn oversized_body_is_a_413() -> Result<()> {
    let server =
        TestServer::start_with(Backend::Sqlite, |c| c.api.body_limit_bytes = 64 * 1024).await?;
    let big = format!("{{\"app\": \"{}\"}}", "x".repeat(100 * 1024));
    let (status, _) = server.post("/api/v1/webhooks/deploy", &big).await?;
    assert_eq!(status, 413);
    assert_eq!(server.engine.store.count_trigger_instances().await?, 0);
    server.stop().await
}

#[tokio::test]
async fn unknown_webhook_is_a_404_listing_known_ones() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let (status, body) = server.post("/api/v1/webhooks/nope", "{}").await?;
    assert_eq!(status, 404);
    assert!(
        body["detail"].as_str().unwrap_or("").contains("deploy"),
        "{body}"
    );
    server.stop().await
}

#[tokio::test]
async fn example_webhook_runs_the_deploy_action_with_the_app_from_the_payload() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    // curl -d sends JSON labelled as a form; squall reads it as JSON.
    let response = server
        .http
        .post(server.url("/api/v1/webhooks/deploy"))
        .header("St2-Api-Key", &server.key)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(r#"{"app":"web"}"#)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 202);
    let accepted: Value = response.json().await?;
    let ti = accepted["trigger_instance_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let executions = server.finished_executions_of(&ti).await?;
    assert_eq!(executions.len(), 1);
    let e = &executions[0];
    assert_eq!(e["action"], "examples.deploy");
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["stdout"], "deploying web to staging\n");
    assert_eq!(e["parameters"]["app"], "web");
    assert_eq!(e["trigger_instance"]["id"], ti.as_str());
    assert_eq!(e["trigger_instance"]["payload"]["body"]["app"], "web");
    assert!(
        e["trigger_instance"]["payload"]["headers"]
            .get("st2-api-key")
            .is_none(),
        "credentials must not be stored"
    );
    assert_eq!(e["rule"]["ref"], "examples.deploy_on_webhook");
    server.stop().await
}

#[tokio::test]
async fn backstop_rule_fires_only_when_no_standard_rule_matched() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let (status, accepted) = server
        .post("/api/v1/webhooks/deploy", r#"{"application": "web"}"#)
        .await?;
    assert_eq!(status, 202);
    let executions = server
        .finished_executions_of(accepted["trigger_instance_id"].as_str().unwrap_or_default())
        .await?;
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0]["action"], "core.echo");
    assert_eq!(
        executions[0]["rule"]["ref"],
        "examples.unknown_deploy_payload"
    );
    server.stop().await
}

#[tokio::test]
async fn form_and_text_bodies_become_the_payload_body() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let form = server
        .http
        .post(server.url("/api/v1/webhooks/deploy"))
        .header("St2-Api-Key", &server.key)
        .form(&[("app", "api"), ("environment", "production")])
        .send()
        .await?;
    assert_eq!(form.status().as_u16(), 202);
    let ti: Value = form.json().await?;
    let executions = server
        .finished_executions_of(ti["trigger_instance_id"].as_str().unwrap_or_default())
        .await?;
    assert_eq!(executions[0]["stdout"], "deploying api to production\n");

    let text = server
        .http
        .post(server.url("/api/v1/webhooks/deploy"))
        .header("St2-Api-Key", &server.key)
        .header("Content-Type", "text/plain")
        .body("just text")
        .send()
        .await?;
    assert_eq!(text.status().as_u16(), 202);
    let ti: Value = text.json().await?;
    let stored = server
        .engine
        .store
        .get_trigger_instance(ti["trigger_instance_id"].as_str().unwrap_or_default())
        .await?
        .expect("stored");
    let payload: Value = serde_json::from_str(&stored.payload)?;
    assert_eq!(payload["body"], "just text");
    server.stop().await
}

#[tokio::test]
async fn payload_values_reach_the_shell_only_quoted() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let marker = std::env::temp_dir().join(format!("squall-injection-{}", ulid::Ulid::new()));
    let attempts = [
        format!("x; touch {}", marker.display()),
        format!("$(touch {})", marker.display()),
        format!("`touch {}`", marker.display()),
        format!("x' ; touch {} ; echo '", marker.display()),
        format!("x\ntouch {}", marker.display()),
    ];
    for attempt in &attempts {
        let (status, accepted) = server
            .post("/api/v1/webhooks/say", &json!({"msg": attempt}).to_string())
            .await?;
        assert_eq!(status, 202);
        let executions = server
            .finished_executions_of(accepted["trigger_instance_id"].as_str().unwrap_or_default())
            .await?;
        assert_eq!(executions[0]["status"], "succeeded", "{}", executions[0]);
        assert_eq!(
            executions[0]["stdout"],
            format!("{attempt}\n"),
            "the literal text is echoed"
        );
        assert!(!marker.exists(), "{attempt:?} ran a command");
    }
    server.stop().await
}

#[tokio::test]
async fn st2_endpoint_fires_named_triggers_and_refuses_unknown_ones() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let (status, body) = server
        .post(
            "/api/v1/webhooks/st2",
            r#"{"trigger": "mypack.thing", "payload": {"a": 1}}"#,
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let (status, body) = server
        .post(
            "/api/v1/webhooks/st2",
            r#"{"trigger": "core.nope", "payload": {}}"#,
        )
        .await?;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "unknown_trigger");
    let (status, body) = server
        .post("/api/v1/webhooks/st2", r#"{"payload": {}}"#)
        .await?;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap_or("").contains("trigger"),
        "{body}"
    );
    server.stop().await
}
