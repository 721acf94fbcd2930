//! `http-request`: one HTTP call; the response becomes the result.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{RunContext, RunOutcome, Runner, runner_param};
use crate::execution::ExecutionStatus;
use crate::pack::ParamSpec;
use crate::runner::Retry;

/// Redirects followed at most when `allow_redirects` is on.
const MAX_REDIRECTS: usize = 10;

pub struct HttpRequest {
    /// Indexed by [`HttpRequest::client_index`]: (verify certificates,
    /// follow redirects) in each combination.
    clients: [reqwest::Client; 4],
}

impl HttpRequest {
    pub fn new() -> Self {
        crate::install_crypto_provider();
        let client = |index: usize| {
            let (verify, follow) = (index & 1 == 0, index & 2 != 0);
            reqwest::Client::builder()
                .user_agent(concat!("squall/", env!("CARGO_PKG_VERSION")))
                .redirect(if follow {
                    reqwest::redirect::Policy::limited(MAX_REDIRECTS)
                } else {
                    reqwest::redirect::Policy::none()
                })
                .tls_danger_accept_invalid_certs(!verify)
                .build()
                .unwrap_or_default()
        };
        Self {
            clients: [client(0), client(1), client(2), client(3)],
        }
    }

    fn client_index(verify: bool, follow: bool) -> usize {
        usize::from(!verify) | (usize::from(follow) << 1)
    }
}

/// A request error with its causes: reqwest's own text ("error sending
/// request") says nothing of why; the cause chain says which TLS, DNS or
/// connection problem it was.
fn explain(err: &reqwest::Error, verify: bool) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    let lower = text.to_lowercase();
    if verify && (lower.contains("certificate") || lower.contains("unknownissuer")) {
        text.push_str(
            " (the server's TLS certificate was not accepted: trust its issuer, or set \
             verify_ssl_cert: false for this action)",
        );
    }
    text
}

/// A request that got no answer: a bad URL, a refused certificate, TLS
/// spoken to a plain port or a redirect loop stay so; a refused connection, a
/// reset or a name that did not resolve may pass. Read from the error's causes,
/// never from the URL (`https://ssl.example.com` says nothing).
fn send_failure_retry(err: &reqwest::Error) -> Retry {
    let mut causes = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        causes.push_str(&cause.to_string().to_lowercase());
        causes.push('\n');
        source = cause.source();
    }
    if err.is_builder()
        || err.is_redirect()
        || [
            "certificate",
            "unknownissuer",
            "corrupt message",
            "invalidcontenttype",
            "wrong version number",
        ]
        .iter()
        .any(|word| causes.contains(word))
    {
        Retry::WontHelp
    } else {
        Retry::MayHelp
    }
}

/// An HTTP error answer: the server's trouble (5xx) or a rate limit or
/// timeout (429, 408, 425) may pass; the request's (other 4xx) will not.
fn status_retry(status: u16) -> Retry {
    match status {
        408 | 425 | 429 => Retry::MayHelp,
        501 | 505 => Retry::WontHelp,
        500..=599 => Retry::MayHelp,
        _ => Retry::WontHelp,
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
            return RunOutcome::refused("parameter 'url' is required");
        };
        let method_name = ctx.param_str("method").unwrap_or("GET");
        let Ok(method) = reqwest::Method::from_bytes(method_name.as_bytes()) else {
            return RunOutcome::refused(format!(
                "parameter 'method': unknown method {method_name:?}"
            ));
        };
        let verify = ctx.parameters.get("verify_ssl_cert") != Some(&Value::Bool(false));
        let follow = ctx.parameters.get("allow_redirects") == Some(&Value::Bool(true));
        let client = &self.clients[Self::client_index(verify, follow)];
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
                    ..RunOutcome::unavailable(format!(
                        "request to {url} timed out after {:?}",
                        ctx.timeout()
                    ))
                };
            }
            Err(err) => {
                return RunOutcome::failed(format!(
                    "request to {url} failed: {}",
                    explain(&err, verify)
                ))
                .retry(send_failure_retry(&err));
            }
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
        let body = tokio::select! {
            read = tokio::time::timeout(ctx.timeout(), read_capped(response, ctx.limits.max_bytes)) => read,
            () = ctx.cancel.cancelled() => return RunOutcome { status: ExecutionStatus::Canceled, ..RunOutcome::failed("canceled") },
        };
        let (kept, total) = match body {
            Ok(Ok(read)) => read,
            Ok(Err(err)) => {
                return RunOutcome::unavailable(format!(
                    "reading the response from {url} failed: {}",
                    explain(&err, verify)
                ));
            }
            Err(_) => {
                return RunOutcome {
                    status: ExecutionStatus::Timeout,
                    ..RunOutcome::unavailable(format!(
                        "reading the response from {url} timed out after {:?}",
                        ctx.timeout()
                    ))
                };
            }
        };
        let truncated = total > kept.len();
        let mut text = String::from_utf8_lossy(&kept).into_owned();
        // Only a whole body is parsed: a cut one is shown as text.
        let parsed = (!truncated)
            .then(|| serde_json::from_slice::<Value>(&kept).ok())
            .flatten();
        if truncated {
            text.push_str(&format!(
                "\n[output truncated: {} more bytes]",
                total - kept.len()
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
                "parsed": parsed.is_some(),
                "body": parsed.unwrap_or_else(|| Value::String(text.clone())),
            }),
            stdout: text,
            stderr: String::new(),
            exit_code: None,
            error: None,
            retry: None,
        };
        if !ok {
            outcome.error = Some(format!("{url} answered HTTP {status_code}"));
            outcome.retry = Some(status_retry(status_code));
        }
        outcome
    }
}

/// Read at most `cap` bytes of the body and count the rest without keeping
/// it: a huge response costs time (bounded by the run's timeout), not memory.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, usize), reqwest::Error> {
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = response.chunk().await? {
        total += chunk.len();
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..room.min(chunk.len())]);
    }
    Ok((kept, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_say_whether_a_retry_can_help() {
        for status in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(status_retry(status), Retry::MayHelp, "{status}");
        }
        for status in [400, 401, 403, 404, 409, 422, 501, 505] {
            assert_eq!(status_retry(status), Retry::WontHelp, "{status}");
        }
    }
}
