//! `/v1/forward-auth`: the auth subrequest of reverse proxies (DESIGN §3).
//!
//! A proxy asks before forwarding a request: gatehouse reads the original method and URI from
//! the proxy's convention, finds the route (and so the endpoint name and the session id) in the
//! [route table](matcher), authenticates the caller (bearer token or a configured cookie) and
//! answers with the decision:
//!
//! | answer | when | proxy does |
//! | --- | --- | --- |
//! | 200 | allowed, would-deny (LOG_ONLY), or an unprotected URI | forwards the request |
//! | 401 | a protected URI without valid credentials | refuses (401) |
//! | 403 | denied (ENFORCED), or unmatched with `unmatched = deny` | refuses (403) |
//! | 503 | the owner could not be read under ENFORCED | fails closed |
//! | 400 | no original URI, a refused path, an invalid session id | fails closed |
//!
//! Every answer carries `X-Gatehouse-Decision` and `X-Gatehouse-Reason`; checked ones also
//! `X-Gatehouse-User`, `-Mode`, `-Endpoint` and `-Session` (proxies can pass them upstream).
//!
//! | convention | method from | URI from |
//! | --- | --- | --- |
//! | nginx `auth_request` | `X-Original-Method` | `X-Original-URI` |
//! | Traefik ForwardAuth, Caddy `forward_auth` | `X-Forwarded-Method` | `X-Forwarded-Uri` |
//! | Envoy `ext_authz` (`path_prefix: /v1/forward-auth`) | the request's own | the path after the prefix |

pub mod matcher;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;

use crate::audit::Source;
use crate::auth::{AuthError, Principal, bearer_token};
use crate::decision::{Reason, Verdict};
use crate::gatekeeper::{Check, Origin};
use crate::http::{ApiError, AppState, RequestMeta, problem_response};
use crate::session_id::SessionId;

pub use self::matcher::{DEFAULT_ROUTES, RouteTable};

/// The path of the endpoint (and the Envoy prefix).
pub const PATH: &str = "/v1/forward-auth";

/// What to answer for a URI that no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// 200: the URI is not protected (the default).
    Allow,
    /// 403: everything behind the proxy must be routed.
    Deny,
}

/// Forward-auth settings.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    /// The route table.
    pub routes: RouteTable,
    /// What unmatched URIs get.
    pub unmatched: Unmatched,
    /// A cookie that may carry the token when there is no `Authorization` header.
    pub cookie: Option<String>,
}

impl Default for ForwardAuth {
    fn default() -> Self {
        Self {
            routes: RouteTable::parse(DEFAULT_ROUTES).unwrap_or_else(|_| unreachable!()),
            unmatched: Unmatched::Allow,
            cookie: None,
        }
    }
}

/// The forward-auth routes: every method, and the Envoy prefix form.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route(PATH, any(forward_auth))
        .route(&format!("{PATH}/{{*path}}"), any(forward_auth))
}

const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The original request's method and URI, by the proxy's convention.
fn original(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(Method, String), ApiError> {
    let raw_method = header_str(headers, &X_ORIGINAL_METHOD)
        .or_else(|| header_str(headers, &X_FORWARDED_METHOD));
    let method = match raw_method {
        Some(raw) => Method::from_bytes(raw.to_ascii_uppercase().as_bytes())
            .map_err(|_| ApiError::InvalidRequest(format!("invalid original method {raw:?}")))?,
        None => method.clone(),
    };
    let from_header = header_str(headers, &X_ORIGINAL_URI)
        .or_else(|| header_str(headers, &X_FORWARDED_URI))
        .map(str::to_owned);
    // Envoy: the raw path after the prefix (not axum's decoded capture: normalisation must
    // see the bytes the proxy saw).
    let from_path = uri
        .path()
        .strip_prefix(PATH)
        .filter(|rest| rest.starts_with('/'))
        .map(|rest| match uri.query() {
            Some(query) => format!("{rest}?{query}"),
            None => rest.to_owned(),
        });
    let uri = from_header.or(from_path).ok_or_else(|| {
        ApiError::InvalidRequest(
            "no original URI: send X-Original-URI (nginx) or X-Forwarded-Uri (Traefik, Caddy), \
             or call /v1/forward-auth/{path} (Envoy)"
                .into(),
        )
    })?;
    Ok((method, uri))
}

/// The client's address as the proxy saw it: `X-Real-IP`, else the last `X-Forwarded-For`
/// entry (the one the proxy itself appended), else the proxy's own address.
fn client_ip(headers: &HeaderMap, meta: &RequestMeta) -> Option<std::net::IpAddr> {
    header_str(headers, &X_REAL_IP)
        .or_else(|| {
            header_str(headers, &X_FORWARDED_FOR)
                .and_then(|all| all.rsplit(',').next())
                .map(str::trim)
        })
        .and_then(|ip| ip.parse().ok())
        .or(meta.client_ip)
}

/// The caller: the bearer token, else the configured cookie.
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    cookie: Option<&str>,
) -> Result<Principal, AuthError> {
    if bearer_token(headers).is_some() || cookie.is_none() {
        return state.authenticator.authenticate(headers);
    }
    let name = cookie.unwrap_or_default();
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
        .ok_or(AuthError::Missing)?;
    let mut as_header = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| AuthError::Invalid("malformed token".into()))?;
    as_header.insert(header::AUTHORIZATION, value);
    state.authenticator.authenticate(&as_header)
}

/// A header value; names and ids that are not visible ASCII are percent-encoded.
fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| {
        HeaderValue::from_str(&utf8_percent_encode(value, NON_ALPHANUMERIC).to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("-"))
    })
}

fn with_headers(mut response: Response, pairs: &[(&'static str, &str)]) -> Response {
    for (name, value) in pairs {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), header_value(value));
    }
    response
}

/// The forward-auth decision for the original request (any method; see the module docs).
#[utoipa::path(get, path = "/v1/forward-auth", tag = "forward-auth",
    description = "Any method. The original method and URI come from `X-Original-Method` / \
        `X-Original-URI` (nginx), `X-Forwarded-Method` / `X-Forwarded-Uri` (Traefik, Caddy), \
        or, for Envoy, the request's own method and the path after `/v1/forward-auth`.",
    responses(
        (status = 200, description = "Allowed (or would-deny, or unprotected): forward the request"),
        (status = 400, body = crate::http::Problem),
        (status = 401, body = crate::http::Problem),
        (status = 403, description = "Denied", body = crate::http::Problem),
        (status = 503, description = "Owner unknown under ENFORCED: fail closed", body = crate::http::Problem),
    ),
    security(("bearer" = [])))]
pub(crate) async fn forward_auth(
    State(state): State<AppState>,
    meta: RequestMeta,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match decide(&state, &meta, &method, &uri, &headers).await {
        Ok(response) | Err(response) => response,
    }
}

async fn decide(
    state: &AppState,
    meta: &RequestMeta,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, Response> {
    let reject = |e: ApiError| {
        let reason = match &e {
            ApiError::Unauthorized(_) => "unauthenticated",
            _ => "invalid_request",
        };
        with_headers(
            e.into_response(),
            &[
                ("x-gatehouse-decision", "deny"),
                ("x-gatehouse-reason", reason),
            ],
        )
    };
    let config = &state.forward_auth;
    let (original_method, original_uri) = original(method, uri, headers).map_err(reject)?;
    let path = matcher::normalize(&original_uri)
        .map_err(|e| reject(ApiError::InvalidRequest(e.to_string())))?;
    let Some(matched) = config.routes.find(&original_method, &path) else {
        return Ok(match config.unmatched {
            Unmatched::Allow => with_headers(
                (
                    StatusCode::OK,
                    axum::Json(json!({ "allowed": true, "reason": "unprotected" })),
                )
                    .into_response(),
                &[
                    ("x-gatehouse-decision", "allow"),
                    ("x-gatehouse-reason", "unprotected"),
                ],
            ),
            Unmatched::Deny => with_headers(
                ApiError::Forbidden(format!(
                    "no route protects {original_method} {path}, and unmatched URIs are denied"
                ))
                .into_response(),
                &[
                    ("x-gatehouse-decision", "deny"),
                    ("x-gatehouse-reason", "unmatched"),
                ],
            ),
        });
    };
    let principal = authenticate(state, headers, config.cookie.as_deref())
        .map_err(|e| reject(ApiError::from(e)))?;
    let session = SessionId::parse(&matched.session_id).map_err(|e| reject(e.into()))?;
    let endpoint = matched.route.name.as_str();
    let origin = Origin {
        method: Some(original_method.as_str().to_owned()),
        path: Some(path.clone()),
        client_ip: client_ip(headers, meta),
        ..meta.origin(Source::ForwardAuth)
    };
    let check = Check {
        user: &principal.sub,
        is_admin: principal.is_admin(),
        session: &session,
        endpoint,
        origin: &origin,
    };
    let result = state.gatekeeper.check(&check, None).await;
    let outcome = result.outcome;
    let fields = [
        ("x-gatehouse-user", principal.sub.as_str()),
        ("x-gatehouse-decision", outcome.verdict.as_str()),
        ("x-gatehouse-reason", outcome.reason.as_str()),
        ("x-gatehouse-mode", outcome.mode.as_str()),
        ("x-gatehouse-endpoint", endpoint),
        ("x-gatehouse-session", session.as_str()),
    ];
    let mut body = serde_json::Map::new();
    body.insert("allowed".into(), json!(outcome.verdict.allowed()));
    body.insert("decision".into(), json!(outcome.verdict));
    body.insert("reason".into(), json!(outcome.reason));
    body.insert("mode".into(), json!(outcome.mode));
    body.insert("user".into(), json!(principal.sub));
    body.insert("session_id".into(), json!(session.as_str()));
    body.insert("endpoint".into(), json!(endpoint));
    let response = match (outcome.verdict, outcome.reason) {
        (Verdict::Deny, Reason::SettingsUnavailable) => problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "settings-unavailable",
            "Settings unavailable",
            "the enforcement settings have not been read yet".into(),
            body,
        ),
        (Verdict::Deny, Reason::StoreUnavailable) => problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Store unavailable",
            "the session's owner cannot be read and the mode is ENFORCED".into(),
            body,
        ),
        (Verdict::Deny, _) => problem_response(
            StatusCode::FORBIDDEN,
            "access-denied",
            "Access denied",
            format!("{} may not use session {}", principal.sub, session.as_str()),
            body,
        ),
        _ => (StatusCode::OK, axum::Json(serde_json::Value::Object(body))).into_response(),
    };
    Ok(with_headers(response, &fields))
}
