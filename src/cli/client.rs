//! A thin client of the admin REST API, behind `gatehouse mode` and `gatehouse rollout`.
//!
//! It speaks plain HTTP to one gatehouse (the REST API is the only way settings change, so the
//! CLI and curl do exactly the same thing); put a TLS-terminating proxy in front for remote use.
//! Answers are returned as JSON values for printing; problem+json answers become
//! [`ClientError::Problem`] with their title and detail.
//!
//! A gatehouse on this machine (a loopback address, `0.0.0.0`, `[::]` or `localhost`) is
//! called directly whatever the environment says: the bearer token must not travel to a proxy
//! for a local server, and the proxy would not reach this machine's loopback anyway. Any other
//! is called through the proxy the environment names (`HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`),
//! as curl would.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::decision::Mode;

/// Why a call failed. Each says what failed once, in words (no transport error chains, no
/// raw bodies).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an `http://` URL.
    #[error("invalid gatehouse URL {0:?} (write e.g. http://127.0.0.1:8080)")]
    InvalidUrl(String),
    /// gatehouse could not be reached, or its answer could not be read.
    #[error("cannot reach gatehouse at {url}: {why}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// What failed: `connection refused`, `no answer within 30s`...
        why: String,
    },
    /// gatehouse answered with an error: `401 Unauthorized: the token has expired`.
    #[error("{}", problem_line(*status, title, detail.as_deref()))]
    Problem {
        /// The HTTP status.
        status: StatusCode,
        /// The problem title (or the status text).
        title: String,
        /// The problem detail, when given.
        detail: Option<String>,
    },
}

/// `{code} {title}: {detail}`, the title once even when it is the status's own text.
fn problem_line(status: StatusCode, title: &str, detail: Option<&str>) -> String {
    let mut line = format!("{} {title}", status.as_u16());
    if let Some(detail) = detail.filter(|d| !d.is_empty() && *d != title) {
        line.push_str(": ");
        line.push_str(detail);
    }
    line
}

/// What a transport error means, in words: the innermost I/O error (connection refused,
/// reset...) or a timeout, not reqwest's chain of wrappers.
pub(super) fn transport_failure(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}s", timeout.as_secs());
    }
    let mut innermost: Option<&(dyn std::error::Error + 'static)> = None;
    let mut io_kind = None;
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        innermost = Some(cause);
        source = cause.source();
    }
    use std::io::ErrorKind;
    match io_kind {
        Some(ErrorKind::ConnectionRefused) => {
            "connection refused (is gatehouse running and listening there?)".into()
        }
        Some(ErrorKind::ConnectionReset) => "connection reset".into(),
        Some(ErrorKind::ConnectionAborted) => "connection aborted".into(),
        Some(ErrorKind::TimedOut) => "timed out".into(),
        _ => match innermost {
            Some(cause) => cause.to_string(),
            None if e.is_body() || e.is_decode() => "the answer could not be read".into(),
            None => e.to_string(),
        },
    }
}

/// Whether `url` names this machine: a loopback address (IPv4-mapped included), `0.0.0.0`
/// or `[::]` (which Linux connects to this machine), or `localhost`.
fn is_local(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // An IPv6 host comes in brackets; a name has been lower-cased by the parser.
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    match unbracketed.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback())
        }
        Err(_) => host.trim_end_matches('.') == "localhost",
    }
}

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one gatehouse instance.
pub struct AdminClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl AdminClient {
    /// A client of the gatehouse at `base` (e.g. `http://127.0.0.1:8080`), sending `token` as
    /// the bearer token when given.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = Url::parse(base)
            .ok()
            .filter(|url| url.scheme() == "http" && url.has_host())
            .ok_or_else(|| ClientError::InvalidUrl(base.to_owned()))?;
        let mut http = reqwest::Client::builder().timeout(TIMEOUT);
        if is_local(&base) {
            http = http.no_proxy();
        }
        let http = http.build().map_err(|e| ClientError::Unreachable {
            url: base.to_string(),
            why: transport_failure(&e, TIMEOUT),
        })?;
        Ok(Self { http, base, token })
    }

    /// `GET /v1/enforcement`.
    pub async fn settings(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, &["v1", "enforcement"], None).await
    }

    /// `PUT /v1/enforcement`.
    pub async fn set_global(
        &self,
        mode: Mode,
        enforce_percent: Option<u8>,
        reason: &str,
        expected_version: Option<u64>,
    ) -> Result<Value, ClientError> {
        let body = json!({
            "mode": mode, "enforce_percent": enforce_percent,
            "reason": reason, "expected_version": expected_version,
        });
        self.call(Method::PUT, &["v1", "enforcement"], Some(body))
            .await
    }

    /// `PUT` (with a mode) or `DELETE` (without) `/v1/enforcement/endpoints/{name}`.
    pub async fn set_endpoint(
        &self,
        name: &str,
        mode: Option<Mode>,
        reason: &str,
        expected_version: Option<u64>,
    ) -> Result<Value, ClientError> {
        let path = ["v1", "enforcement", "endpoints", name];
        match mode {
            Some(mode) => {
                let body =
                    json!({ "mode": mode, "reason": reason, "expected_version": expected_version });
                self.call(Method::PUT, &path, Some(body)).await
            }
            None => {
                let body = json!({ "reason": reason, "expected_version": expected_version });
                self.call(Method::DELETE, &path, Some(body)).await
            }
        }
    }

    /// `POST` (on) or `DELETE` (off) `/v1/enforcement/kill-switch`.
    pub async fn kill_switch(&self, on: bool, reason: &str) -> Result<Value, ClientError> {
        let method = if on { Method::POST } else { Method::DELETE };
        let body = json!({ "reason": reason });
        self.call(method, &["v1", "enforcement", "kill-switch"], Some(body))
            .await
    }

    /// `GET /v1/enforcement/history?limit=`.
    pub async fn history(&self, limit: usize) -> Result<Value, ClientError> {
        let mut url = self.url(&["v1", "enforcement", "history"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        self.send(Method::GET, url, None).await
    }

    /// `GET /v1/rollout`.
    pub async fn rollout(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, &["v1", "rollout"], None).await
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // Each segment is percent-encoded: an endpoint name with `/` stays one segment.
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.send(method, self.url(segments), body).await
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: url.to_string(),
            why: transport_failure(&e, TIMEOUT),
        };
        let mut request = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
        let reason = status.canonical_reason().unwrap_or("error").to_owned();
        Err(match field("title") {
            Some(title) => ClientError::Problem {
                status,
                title,
                detail: field("detail"),
            },
            // Not a problem document: whatever answered is probably not gatehouse.
            None => ClientError::Problem {
                status,
                title: reason,
                detail: Some(format!("not a gatehouse answer (is {url} a gatehouse?)")),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_localhost_are_local() {
        let local = |url: &str| is_local(&Url::parse(url).unwrap());
        for url in [
            "http://127.0.0.1:8080",
            "http://127.9.8.7",
            "http://[::1]:8080",
            "http://[::ffff:127.0.0.1]:8080",
            "http://localhost:8080",
            "http://LocalHost./gatehouse",
            "http://0.0.0.0:8080",
            "http://[::]:8080",
        ] {
            assert!(local(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:8080",
            "http://[fd00::2]:8080",
            "http://[::ffff:10.0.0.1]",
            "http://gatehouse.internal:8080",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
        ] {
            assert!(!local(url), "{url}");
        }
    }
}
