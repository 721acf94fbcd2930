//! The `http-request` runner (`core.http`) against real servers on loopback:
//! methods, headers, body and query; timeouts; error answers; redirects;
//! responses over the output cap; TLS failures.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{any, get};
use serde_json::{Map, Value, json};
use squall_engine::execution::ExecutionContext;
use squall_engine::params::Casting;
use squall_engine::store::execution;
use squall_tests::{Backend, repo_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::TestServer;

/// Output cap of the test server's workers (bytes).
const CAP: usize = 1000;

async fn echo(
    method: Method,
    headers: HeaderMap,
    Query(query): Query<Map<String, Value>>,
    body: Bytes,
) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (
        [("x-echo", "yes")],
        axum::Json(json!({
            "method": method.as_str(),
            "x_custom": header("x-custom"),
            "content_type": header("content-type"),
            "user_agent": header("user-agent"),
            "query": query,
            "body": String::from_utf8_lossy(&body),
        })),
    )
}

/// An HTTP server for the runner to call; returns its base URL.
async fn http_server() -> Result<String> {
    let app = Router::new()
        .route("/echo", any(echo))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/fail",
            get(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "boom: the backend is down",
                )
            }),
        )
        .route("/moved", get(|| async { Redirect::to("/echo?from=moved") }))
        .route(
            "/big",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    format!("[\"{}\"]", "x".repeat(5 * CAP)),
                )
            }),
        )
        .fallback(|req: Request| async move { (StatusCode::NOT_FOUND, req.uri().to_string()) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// A TLS server with the self-signed certificate of tests/fixtures/tls: it
/// answers every request with `200 tls ok`. Returns its https URL.
async fn tls_server() -> Result<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    squall_engine::install_crypto_provider();
    let dir = repo_root().join("tests/fixtures/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("self-signed.crt"))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("self-signed.key"))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = vec![0u8; 4096];
                let _ = tls.read(&mut request).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\ntls ok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok(format!("https://localhost:{}", addr.port()))
}

async fn server() -> Result<TestServer> {
    TestServer::start_with(Backend::Sqlite, |c| c.worker.output_limit_bytes = CAP).await
}

/// Run core.http with `params` and wait for its end.
async fn call(server: &TestServer, params: Value) -> Result<(execution::Model, Value)> {
    let Value::Object(params) = params else {
        anyhow::bail!("parameters must be an object");
    };
    let id = server
        .engine
        .request_execution(
            "core.http",
            &params,
            Casting::Strict,
            ExecutionContext::default(),
        )
        .await?;
    let model = server.engine.wait_for(&id, Duration::from_secs(60)).await?;
    let result: Value = serde_json::from_str(model.result.as_deref().unwrap_or("null"))?;
    Ok((model, result))
}

#[tokio::test]
async fn methods_headers_body_and_query_reach_the_server() -> Result<()> {
    let server = server().await?;
    let base = http_server().await?;
    let (model, result) = call(
        &server,
        json!({
            "url": format!("{base}/echo"),
            "method": "POST",
            "headers": {"X-Custom": "one two", "Content-Type": "text/plain"},
            "params": {"q": "a b&c", "n": 3},
            "body": "plain text body",
        }),
    )
    .await?;
    assert_eq!(model.status, "succeeded", "{result}");
    assert_eq!(result["status_code"], 200);
    assert_eq!(result["headers"]["x-echo"], "yes");
    assert_eq!(result["parsed"], true);
    let seen = &result["body"];
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["x_custom"], "one two");
    assert_eq!(seen["content_type"], "text/plain");
    assert!(
        seen["user_agent"]
            .as_str()
            .unwrap_or("")
            .starts_with("squall/"),
        "{seen}"
    );
    assert_eq!(seen["query"], json!({"q": "a b&c", "n": "3"}));
    assert_eq!(seen["body"], "plain text body");

    // An object body goes as JSON; every method the runner offers arrives as itself.
    for method in ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let (model, result) = call(
            &server,
            json!({"url": format!("{base}/echo"), "method": method, "body": {"k": [1, 2]}}),
        )
        .await?;
        assert_eq!(model.status, "succeeded", "{method}: {result}");
        assert_eq!(result["body"]["method"], method);
        assert_eq!(result["body"]["content_type"], "application/json");
        assert_eq!(result["body"]["body"], r#"{"k":[1,2]}"#);
    }
    let (model, result) = call(
        &server,
        json!({"url": format!("{base}/echo"), "method": "HEAD"}),
    )
    .await?;
    assert_eq!(model.status, "succeeded", "{result}");
    assert_eq!(
        (result["status_code"].clone(), result["body"].clone()),
        (json!(200), json!(""))
    );

    // A method outside the list is refused before anything is sent.
    let err = server
        .engine
        .request_execution(
            "core.http",
            json!({"url": format!("{base}/echo"), "method": "BREW"})
                .as_object()
                .context("obj")?,
            Casting::Strict,
            ExecutionContext::default(),
        )
        .await
        .expect_err("BREW is no method");
    assert!(err.to_string().contains("method"), "{err}");
    server.stop().await
}

#[tokio::test]
async fn a_slow_server_times_out() -> Result<()> {
    let server = server().await?;
    let base = http_server().await?;
    let (model, result) = call(
        &server,
        json!({"url": format!("{base}/slow"), "timeout": 1}),
    )
    .await?;
    assert_eq!(model.status, "timeout", "{result}");
    assert_eq!(model.retry.as_deref(), Some("may_help"));
    let error = model.error.unwrap_or_default();
    assert!(error.contains("timed out after 1s"), "{error}");
    assert!(error.contains("/slow"), "{error}");
    server.stop().await
}

#[tokio::test]
async fn an_error_answer_fails_the_run_and_keeps_the_body() -> Result<()> {
    let server = server().await?;
    let base = http_server().await?;
    let (model, result) = call(&server, json!({"url": format!("{base}/fail")})).await?;
    assert_eq!(model.status, "failed");
    assert_eq!(result["status_code"], 500);
    assert_eq!(result["body"], "boom: the backend is down");
    assert_eq!(
        model.error.as_deref(),
        Some(format!("{base}/fail answered HTTP 500").as_str())
    );
    // The server's trouble may pass; the request's will not.
    assert_eq!(model.retry.as_deref(), Some("may_help"));
    let (model, result) = call(&server, json!({"url": format!("{base}/nowhere")})).await?;
    assert_eq!(
        (model.status.as_str(), result["status_code"].clone()),
        ("failed", json!(404))
    );
    assert_eq!(model.retry.as_deref(), Some("wont_help"));
    // Nobody listening: the connection is refused, which may pass.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    let (model, _) = call(&server, json!({"url": format!("http://{closed}/")})).await?;
    assert_eq!(model.status, "failed");
    assert_eq!(
        model.retry.as_deref(),
        Some("may_help"),
        "{:?}",
        model.error
    );
    // So do succeeded runs say nothing about retries.
    let (model, _) = call(&server, json!({"url": format!("{base}/echo")})).await?;
    assert_eq!((model.status.as_str(), model.retry), ("succeeded", None));
    server.stop().await
}

#[tokio::test]
async fn redirects_are_shown_unless_asked_to_follow() -> Result<()> {
    let server = server().await?;
    let base = http_server().await?;
    let (model, result) = call(&server, json!({"url": format!("{base}/moved")})).await?;
    assert_eq!(model.status, "succeeded", "{result}");
    assert_eq!(result["status_code"], 303);
    assert_eq!(result["headers"]["location"], "/echo?from=moved");
    let (model, result) = call(
        &server,
        json!({"url": format!("{base}/moved"), "allow_redirects": true}),
    )
    .await?;
    assert_eq!(model.status, "succeeded", "{result}");
    assert_eq!(result["status_code"], 200);
    assert_eq!(result["body"]["query"], json!({"from": "moved"}));
    // A 303 turns into a GET.
    assert_eq!(result["body"]["method"], "GET");
    server.stop().await
}

#[tokio::test]
async fn a_response_over_the_output_cap_is_cut_and_not_parsed() -> Result<()> {
    let server = server().await?;
    let base = http_server().await?;
    let (model, result) = call(&server, json!({"url": format!("{base}/big")})).await?;
    assert_eq!(model.status, "succeeded", "{result}");
    let total = 5 * CAP + 4;
    let body = result["body"].as_str().context("a cut body is text")?;
    assert_eq!(result["parsed"], false);
    assert!(
        body.starts_with(&format!("[\"{}", "x".repeat(CAP - 2))),
        "{body}"
    );
    assert!(
        body.ends_with(&format!("\n[output truncated: {} more bytes]", total - CAP)),
        "{body}"
    );
    let stdout = model.stdout.unwrap_or_default();
    assert_eq!(stdout, body, "stdout shows the same cut text");
    server.stop().await
}

#[tokio::test]
async fn tls_failures_say_what_was_wrong() -> Result<()> {
    let server = server().await?;
    let tls = tls_server().await?;
    // An untrusted (self-signed) certificate.
    let (model, _) = call(&server, json!({"url": format!("{tls}/")})).await?;
    assert_eq!(model.status, "failed");
    let error = model.error.unwrap_or_default();
    assert!(error.contains("certificate"), "{error}");
    assert!(error.contains("verify_ssl_cert: false"), "{error}");
    assert_eq!(model.retry.as_deref(), Some("wont_help"));
    // The same server with verification off answers.
    let (model, result) = call(
        &server,
        json!({"url": format!("{tls}/"), "verify_ssl_cert": false}),
    )
    .await?;
    assert_eq!(model.status, "succeeded", "{result}");
    assert_eq!(result["body"], "tls ok");
    // TLS spoken to a plain HTTP server.
    let plain = http_server().await?.replace("http://", "https://");
    let (model, _) = call(&server, json!({"url": format!("{plain}/echo")})).await?;
    assert_eq!(model.status, "failed");
    let error = model.error.unwrap_or_default();
    assert!(
        error.to_lowercase().contains("tls") || error.contains("corrupt message"),
        "{error}"
    );
    assert_eq!(model.retry.as_deref(), Some("wont_help"), "{error}");
    server.stop().await
}
