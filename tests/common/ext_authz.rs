//! Asking one forward-auth question over both transports and reading the answers in the same
//! terms: `/v1/forward-auth` in the `envoy` style, written byte for byte on a plain socket, and
//! Envoy's gRPC `Authorization/Check` through tonic with the `envoy-types` protos, the
//! `CheckRequest` shaped like Envoy's (pseudo-headers in the map; `header_map` when raw).

use std::collections::HashMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{
    Address as EnvoyAddress, HeaderMap as RawHeaders, HeaderValue as RawHeader, HeaderValueOption,
    SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use gatehouse::forward_auth::check::IDENTITY_HEADERS as GATEHOUSE_HEADERS;
use serde_json::Value;

use super::TestApp;

/// One question, as a proxy would ask it: the original method, raw path, and the headers the
/// proxy passes on (in order; a name may repeat).
#[derive(Debug, Clone)]
pub struct Ask {
    /// What the row is, for failure messages.
    pub label: String,
    /// The original method.
    pub method: String,
    /// The original raw path (and query).
    pub path: String,
    /// The headers the proxy passes on, in order.
    pub headers: Vec<(String, String)>,
}

impl Ask {
    /// A question from `token` (none: no credentials), through a proxy at 203.0.113.5.
    pub fn new(label: &str, token: Option<&str>, method: &str, path: &str) -> Self {
        let mut headers = vec![("x-forwarded-for".to_owned(), "203.0.113.5".to_owned())];
        if let Some(token) = token {
            headers.push(("authorization".into(), format!("Bearer {token}")));
        }
        Self {
            label: label.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            headers,
        }
    }

    /// One more header.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn repeats_a_header(&self) -> bool {
        let mut seen = std::collections::HashSet::new();
        !self.headers.iter().all(|(k, _)| seen.insert(k.clone()))
    }
}

/// What an answer says, in the terms both transports carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// The HTTP status (of the `denied_response`, 200 for an `ok_response`).
    pub status: u16,
    /// The six identity headers, in order (`None`: absent).
    pub identity: Vec<Option<String>>,
    /// The challenge of a 401.
    pub www_authenticate: Option<String>,
    /// The problem body of a refusal (`Null` for a 2xx: Envoy forwards no body then).
    pub body: Value,
}

impl Answered {
    fn from_headers(status: u16, headers: &HashMap<String, String>, body: Value) -> Self {
        let refused = !(200..300).contains(&status);
        Self {
            status,
            identity: GATEHOUSE_HEADERS
                .iter()
                .map(|name| headers.get(*name).cloned())
                .collect(),
            www_authenticate: headers.get("www-authenticate").cloned(),
            body: if refused { body } else { Value::Null },
        }
    }

    /// One identity header's value (empty when absent).
    pub fn header(&self, name: &str) -> &str {
        let i = GATEHOUSE_HEADERS.iter().position(|n| *n == name).unwrap();
        self.identity[i].as_deref().unwrap_or("")
    }
}

/// Asks over HTTP as Envoy's `http_service` does (`path_prefix: /v1/forward-auth`), writing
/// the request line and headers byte for byte.
pub async fn over_http(app: &TestApp, ask: &Ask) -> Answered {
    let addr = app.base.trim_start_matches("http://");
    let mut request = format!(
        "{} /v1/forward-auth{} HTTP/1.1\r\nHost: {addr}\r\n",
        ask.method, ask.path
    );
    for (name, value) in &ask.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let text = super::exchange(&app.base, &request).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    Answered::from_headers(status, &headers, body)
}

/// How the gRPC `CheckRequest` carries the headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoding {
    /// Envoy's default: a map, repeats joined with `,`, the pseudo-headers in it.
    Map,
    /// `encode_raw_headers: true`: a list, repeats kept.
    Raw,
}

/// The `CheckRequest` Envoy builds for `ask`.
pub fn check_request(ask: &Ask, encoding: Encoding) -> CheckRequest {
    let mut all: Vec<(String, String)> = vec![
        (":authority".into(), "chat.example".into()),
        (":path".into(), ask.path.clone()),
        (":method".into(), ask.method.clone()),
        (":scheme".into(), "http".into()),
    ];
    all.extend(ask.headers.iter().cloned());
    let mut http = HttpRequest {
        id: "12345".into(),
        method: ask.method.clone(),
        path: ask.path.clone(),
        host: "chat.example".into(),
        scheme: "http".into(),
        protocol: "HTTP/1.1".into(),
        size: -1,
        ..Default::default()
    };
    match encoding {
        Encoding::Map => {
            for (name, value) in all {
                http.headers
                    .entry(name.to_ascii_lowercase())
                    .and_modify(|v| {
                        v.push(',');
                        v.push_str(&value);
                    })
                    .or_insert(value);
            }
        }
        Encoding::Raw => {
            http.header_map = Some(RawHeaders {
                headers: all
                    .into_iter()
                    .map(|(key, value)| RawHeader {
                        key: key.to_ascii_lowercase(),
                        raw_value: value.into_bytes(),
                        ..Default::default()
                    })
                    .collect(),
            })
        }
    }
    let peer = |address: &str| Peer {
        address: Some(EnvoyAddress {
            address: Some(Address::SocketAddress(SocketAddress {
                address: address.into(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            // Not read: a client's own address says nothing about who it is.
            source: Some(peer("198.51.100.99")),
            destination: Some(peer("127.0.0.1")),
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// A tonic client of the instance's gRPC listener.
pub async fn client(addr: SocketAddr) -> AuthorizationClient<tonic::transport::Channel> {
    AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect over gRPC")
}

/// One Check on a new connection: the answer, or why there was none.
pub async fn try_check(addr: SocketAddr, request: CheckRequest) -> Result<CheckResponse, String> {
    let mut client = AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    client
        .check(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| format!("check: {e}"))
}

/// One Check on a new connection, which must be answered.
pub async fn check(addr: SocketAddr, request: CheckRequest) -> CheckResponse {
    client(addr)
        .await
        .check(request)
        .await
        .expect("the Check call succeeds")
        .into_inner()
}

/// The gRPC code a refusal of each HTTP status must carry.
fn expected_code(status: u16) -> i32 {
    match status {
        200..=299 => 0,
        400 => 3,
        401 => 16,
        403 => 7,
        503 => 14,
        other => panic!("no gRPC code expected for {other}"),
    }
}

/// Asks over gRPC and reads the answer in HTTP terms; checks the parts HTTP has no word for
/// (the code, how headers are set, `headers_to_remove`, what reaches the upstream).
pub async fn over_grpc(app: &TestApp, ask: &Ask, encoding: Encoding) -> Answered {
    let addr = app.grpc.expect("an instance with a gRPC listener");
    let response = check(addr, check_request(ask, encoding)).await;
    let code = response.status.as_ref().map_or(-1, |s| s.code);
    let what = format!("{} ({encoding:?})", ask.label);
    let answered = match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            let mut headers = HashMap::new();
            for option in &ok.headers {
                #[allow(deprecated)]
                let append = option.append.as_ref().map(|b| b.value);
                assert_eq!(append, Some(false), "{what}: set, never appended");
                assert_eq!(
                    option.append_action,
                    HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                    "{what}"
                );
                let header = option.header.as_ref().expect("a header");
                headers.insert(header.key.clone(), header.value.clone());
            }
            for name in &ok.headers_to_remove {
                assert!(
                    !GATEHOUSE_HEADERS.contains(&name.as_str()),
                    "{what}: {name} is set, then removed: Envoy would drop gatehouse's value"
                );
            }
            let upstream = upstream_headers(ask, &ok.headers, &ok.headers_to_remove);
            let identity_like: Vec<(String, String)> = upstream
                .into_iter()
                .filter(|(k, _)| k.replace('_', "-").starts_with("x-gatehouse-"))
                .collect();
            let expected: Vec<(String, String)> = GATEHOUSE_HEADERS
                .iter()
                .filter_map(|n| headers.get(*n).map(|v| (n.to_string(), v.clone())))
                .collect();
            assert_eq!(
                identity_like, expected,
                "{what}: the upstream gets exactly gatehouse's X-Gatehouse-* headers"
            );
            Answered::from_headers(200, &headers, Value::Null)
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            let status = denied.status.map_or(0, |s| s.code);
            let status = u16::try_from(status).expect("an HTTP status");
            let headers = denied
                .headers
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
            let body = serde_json::from_str(&denied.body).unwrap_or(Value::Null);
            Answered::from_headers(status, &headers, body)
        }
        other => panic!("{what}: no http_response: {other:?}"),
    };
    assert_eq!(code, expected_code(answered.status), "{what}: {answered:?}");
    answered
}

/// The request headers Envoy forwards upstream after an `ok_response`: the client's, then
/// each header set (replacing its name), then `headers_to_remove` (`ext_authz.cc`).
fn upstream_headers(
    ask: &Ask,
    set: &[HeaderValueOption],
    remove: &[String],
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = ask
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    for option in set {
        let header = option.header.as_ref().expect("a header");
        headers.retain(|(k, _)| *k != header.key);
        headers.push((header.key.clone(), header.value.clone()));
    }
    headers.retain(|(k, _)| !remove.contains(k));
    headers.sort_by_key(|(k, _)| GATEHOUSE_HEADERS.iter().position(|n| n == k));
    headers
}

/// Asks `ask` over HTTP and over gRPC both ways and asserts the same answer; returns it.
pub async fn same_over_both(app: &TestApp, ask: &Ask) -> Answered {
    let http = over_http(app, ask).await;
    assert_ne!(http.status, 0, "{}: no HTTP answer", ask.label);
    // An answer to a HEAD has no body over HTTP (nor from Envoy's local reply to a HEAD).
    let head = ask.method == "HEAD";
    let without_body = |mut a: Answered| {
        if head {
            a.body = Value::Null;
        }
        a
    };
    let raw = without_body(over_grpc(app, ask, Encoding::Raw).await);
    assert_eq!(raw, http, "{}: gRPC (raw headers) vs HTTP", ask.label);
    let map = without_body(over_grpc(app, ask, Encoding::Map).await);
    if ask.repeats_a_header() {
        // Envoy's map joins repeats with `,`: a second Authorization or cookie is then a
        // malformed one, refused all the same (the detail says why differently).
        assert_eq!(
            (map.status, &map.identity),
            (http.status, &http.identity),
            "{}: gRPC (map) vs HTTP",
            ask.label
        );
    } else {
        assert_eq!(map, http, "{}: gRPC (map) vs HTTP", ask.label);
    }
    http
}

/// Runs every row over both transports; returns how many were compared.
pub async fn compare(app: &TestApp, rows: &[(Ask, u16, &str)]) -> usize {
    for (ask, status, reason) in rows {
        let answered = same_over_both(app, ask).await;
        assert_eq!(
            (answered.status, answered.header("x-gatehouse-reason")),
            (*status, *reason),
            "{}: {answered:?}",
            ask.label
        );
    }
    rows.len()
}
