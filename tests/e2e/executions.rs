//! Executions through the API: parameter validation, secrets, rule chains.

use anyhow::Result;
use serde_json::{Value, json};
use squall_tests::{Backend, eventually};

use crate::server::TestServer;

#[tokio::test]
async fn parameter_of_the_wrong_type_is_an_error_naming_it() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let (status, body) = server
        .post(
            "/api/v1/executions",
            r#"{"action": "testing.typed", "parameters": {"count": "many"}}"#,
        )
        .await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_parameters");
    assert_eq!(
        body["detail"],
        "parameter 'count': expected integer (got \"many\")"
    );

    let (status, body) = server
        .post(
            "/api/v1/executions",
            r#"{"action": "testing.typed", "parameters": {}}"#,
        )
        .await?;
    assert_eq!(status, 400);
    assert_eq!(body["detail"], "parameter 'count': is required");

    let (status, body) = server
        .post("/api/v1/executions", r#"{"action": "nope.nothing"}"#)
        .await?;
    assert_eq!(status, 404);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("nope.nothing")
    );
    server.stop().await
}

#[tokio::test]
async fn rule_with_a_badly_typed_value_records_a_failed_enforcement() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let (status, accepted) = server
        .post("/api/v1/webhooks/typed", r#"{"count": "lots"}"#)
        .await?;
    assert_eq!(status, 202);
    let ti = accepted["trigger_instance_id"].as_str().unwrap_or_default();
    let enforcements = server.engine.store.enforcements_for_trigger(ti).await?;
    assert_eq!(enforcements.len(), 1);
    assert_eq!(enforcements[0].status, "failed");
    assert_eq!(enforcements[0].execution_id, None);
    assert_eq!(
        enforcements[0].failure_reason.as_deref(),
        Some("parameter 'count': expected integer (got \"lots\")")
    );
    server.stop().await
}

#[tokio::test]
async fn secrets_are_masked_in_api_responses() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let (status, created) = server
        .post(
            "/api/v1/executions",
            r#"{"action": "testing.typed", "parameters": {"count": 1, "token": "hunter2-secret"}}"#,
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    server
        .engine
        .wait_for(&id, std::time::Duration::from_secs(10))
        .await?;
    let (_, view) = server.get(&format!("/api/v1/executions/{id}")).await?;
    assert_eq!(view["parameters"]["token"], "********");
    assert!(!view.to_string().contains("hunter2-secret"));
    let (_, list) = server
        .get("/api/v1/executions?action=testing.typed")
        .await?;
    assert!(!list.to_string().contains("hunter2-secret"));
    server.stop().await
}

#[tokio::test]
async fn completed_executions_fire_squall_execution_so_rules_chain() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let (status, created) = server
        .post(
            "/api/v1/executions",
            r#"{"action": "testing.typed", "parameters": {"count": 7}}"#,
        )
        .await?;
    assert_eq!(status, 201);
    let first = created["id"].as_str().unwrap_or_default().to_owned();
    let chained = eventually(
        std::time::Duration::from_secs(10),
        "the chained execution",
        || async {
            let (_, list) = server
                .get("/api/v1/executions?action=core.echo&status=succeeded")
                .await?;
            Ok(list.as_array().and_then(|l| l.first().cloned()))
        },
    )
    .await?;
    assert_eq!(
        chained["result"]["message"],
        format!("chained after {first} with count 7")
    );
    assert_eq!(chained["context"]["rule"], "testing.chain");
    server.stop().await
}

#[tokio::test]
async fn list_filters_and_bad_filters() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    for n in 0..3 {
        let (status, _) = server
            .post(
                "/api/v1/executions",
                &json!({"action": "core.echo", "parameters": {"message": format!("m{n}")}})
                    .to_string(),
            )
            .await?;
        assert_eq!(status, 201);
    }
    let (status, list) = server
        .get("/api/v1/executions?action=core.echo&limit=2")
        .await?;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let (status, body) = server.get("/api/v1/executions?status=bogus").await?;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap_or("").contains("succeeded"));
    let (status, _) = server.get("/api/v1/executions/01NOPE").await?;
    assert_eq!(status, 404);
    let (status, body): (u16, Value) = server.get("/healthz").await?;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    server.stop().await
}

#[tokio::test]
async fn text_parameters_are_cast_only_when_asked() -> Result<()> {
    let server = TestServer::start(Backend::Sqlite).await?;
    let body =
        r#"{"action": "testing.typed", "parameters": {"count": "3"}, "parameters_are_text": true}"#;
    let (status, created) = server.post("/api/v1/executions", body).await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["parameters"]["count"], 3);
    let (status, _) = server
        .post(
            "/api/v1/executions",
            r#"{"action": "testing.typed", "parameters": {"count": "3"}}"#,
        )
        .await?;
    assert_eq!(status, 400, "JSON callers must send JSON types");
    let (status, body) = server
        .post("/api/v1/executions", r#"{"action": "testing.typed", "parameters": {"count": "x"}, "parameters_are_text": true}"#)
        .await?;
    assert_eq!(status, 400);
    assert_eq!(
        body["detail"],
        "parameter 'count': expected integer (got \"x\")"
    );
    server.stop().await
}
