//! `http-request`: one HTTP call; the response becomes the result.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{RunContext, RunOutcome, Runner, runner_param};
use crate::execution::ExecutionStatus;
use crate::pack::ParamSpec;

pub struct HttpRequest {
    client: reqwest::Client,
    insecure_client: reqwest::Client,
    redirecting_client: reqwest::Client,
}

impl HttpRequest {
    pub fn new() -> Self {
        crate::install_crypto_provider();
        let base = || {
            reqwest::Client::builder()
                .user_agent(concat!("squall/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
        };
        Self {
            client: base().build().unwrap_or_default(),
            insecure_client: base()
                .tls_danger_accept_invalid_certs(true)
                .build()
                .unwrap_or_default(),
            redirecting_client: reqwest::Client::builder()
                .user_agent(concat!("squall/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
        }
    }
}

#[async_trait::async_trait]
impl Runner for HttpRequest {
    fn name(&self) -> &'static str {
        "http-request"
    }

    fn parameters(&self) -> BTreeMap<String, ParamSpec> {
        let mut url = runner_param(json!({"type": "string"}), None, "URL to call.");
        url.required = true;
        BTreeMap::from([
            ("url".to_owned(), url),
            (
                "method".to_owned(),
                runner_param(
                    json!({"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]}),
                    Some(json!("GET")),
                    "HTTP method.",
                ),
            ),
            (
                "headers".to_owned(),
                runner_param(json!({"type": "object"}), None, "Request headers."),
            ),
            (
                "params".to_owned(),
                runner_param(json!({"type": "object"}), None, "Query string parameters."),
            ),
            (
                "body".to_owned(),
                runner_param(
                    json!({"type": ["string", "object", "array"]}),
                    None,
                    "Body: text as-is, objects and arrays as JSON.",
                ),
            ),
            (
                "timeout".to_owned(),
                runner_param(
                    json!({"type": "number", "minimum": 0}),
                    Some(json!(60)),
                    "Seconds.",
                ),
            ),
            (
                "allow_redirects".to_owned(),
                runner_param(
                    json!({"type": "boolean"}),
                    Some(json!(false)),
                    "Follow redirects.",
                ),
            ),
            (
                "verify_ssl_cert".to_owned(),
                runner_param(
                    json!({"type": "boolean"}),
                    Some(json!(true)),
                    "Verify TLS certificates.",
                ),
            ),
        ])
    }

    async fn run(&self, ctx: RunContext) -> RunOutcome {
        let Some(url) = ctx.param_str("url") else {
            return RunOutcome::failed("parameter 'url' is required");
        };
        let method_name = ctx.param_str("method").unwrap_or("GET");
        let Ok(method) = reqwest::Method::from_bytes(method_name.as_bytes()) else {
            return RunOutcome::failed(format!(
                "parameter 'method': unknown method {method_name:?}"
            ));
        };
        let client = if ctx.parameters.get("verify_ssl_cert") == Some(&Value::Bool(false)) {
            &self.insecure_client
        } else if ctx.parameters.get("allow_redirects") == Some(&Value::Bool(true)) {
            &self.redirecting_client
        } else {
            &self.client
        };
        let mut request = client.request(method, url).timeout(ctx.timeout());
        if let Some(Value::Object(headers)) = ctx.parameters.get("headers") {
            for (name, value) in headers {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                request = request.header(name.as_str(), text);
            }
        }
        if let Some(Value::Object(query)) = ctx.parameters.get("params") {
            let pairs: Vec<(String, String)> = query
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect();
            request = request.query(&pairs);
        }
        match ctx.parameters.get("body") {
            Some(Value::String(text)) => request = request.body(text.clone()),
            Some(body @ (Value::Object(_) | Value::Array(_))) => request = request.json(body),
            _ => {}
        }
        let response = tokio::select! {
            r = request.send() => r,
            () = ctx.cancel.cancelled() => return RunOutcome { status: ExecutionStatus::Canceled, ..RunOutcome::failed("canceled") },
        };
        let response = match response {
            Ok(r) => r,
            Err(err) if err.is_timeout() => {
                return RunOutcome {
                    status: ExecutionStatus::Timeout,
                    ..RunOutcome::failed(format!(
                        "request to {url} timed out after {:?}",
                        ctx.timeout()
                    ))
                };
            }
            Err(err) => return RunOutcome::failed(format!("request to {url} failed: {err}")),
        };
        let status_code = response.status().as_u16();
        let headers: Map<String, Value> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value::String(v.to_str().unwrap_or("").to_owned()),
                )
            })
            .collect();
        let bytes = match tokio::time::timeout(Duration::from_secs(300), response.bytes()).await {
            Ok(Ok(b)) => b,
            Ok(Err(err)) => {
                return RunOutcome::failed(format!("reading the response failed: {err}"));
            }
            Err(_) => return RunOutcome::failed("reading the response timed out"),
        };
        let cap = ctx.limits.max_bytes.min(bytes.len());
        let mut text = String::from_utf8_lossy(&bytes[..cap]).into_owned();
        let parsed = serde_json::from_slice::<Value>(&bytes).ok();
        if bytes.len() > cap {
            text.push_str(&format!(
                "\n[output truncated: {} more bytes]",
                bytes.len() - cap
            ));
        }
        let ok = status_code < 400;
        let mut outcome = RunOutcome {
            status: if ok {
                ExecutionStatus::Succeeded
            } else {
                ExecutionStatus::Failed
            },
            result: json!({
                "status_code": status_code,
                "headers": headers,
                "body": parsed.clone().filter(|_| bytes.len() <= ctx.limits.max_bytes).unwrap_or(Value::String(text.clone())),
                "parsed": parsed.is_some(),
            }),
            stdout: text,
            stderr: String::new(),
            exit_code: None,
            error: None,
        };
        if !ok {
            outcome.error = Some(format!("{url} answered HTTP {status_code}"));
        }
        outcome
    }
}
