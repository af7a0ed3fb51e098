//! The forward-auth check, whatever carried the question: the HTTP auth subrequest
//! ([`super::routes`]) or Envoy's gRPC `Authorization/Check` ([`super::grpc`]).
//!
//! Each transport reads the original request its own way into a [`Question`] (the original
//! method and raw URI, or why they cannot be read; the original request's headers; the client's
//! address and the request id for the audit) and calls [`answer`], which refuses ambiguous
//! requests and refused spellings, matches the route table, authenticates the caller, decides
//! through the [`crate::gatekeeper`] and returns the HTTP answer: status, problem body and the
//! six `X-Gatehouse-*` headers. The HTTP handler sends it as it is; the gRPC service translates
//! it into a `CheckResponse` field by field, so the two cannot decide differently.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;

use crate::audit::{AuditDecision, AuditEvent, Source};
use crate::auth::{AuthError, Principal, bearer_token};
use crate::decision::{Mode, Outcome, Reason, Verdict};
use crate::gatekeeper::{Check, Origin};
use crate::http::{ApiError, AppState, problem_response};
use crate::session_id::SessionId;
use crate::timestamp::Timestamp;

use super::matcher::{self, Matched};
use super::original::{OriginalRequest, Refusal};
use super::{Preflight, Unmatched};

/// The names of the six identity headers every answer sets, in their order.
pub const IDENTITY_HEADERS: [&str; 6] = [
    "x-gatehouse-user",
    "x-gatehouse-session",
    "x-gatehouse-endpoint",
    "x-gatehouse-mode",
    "x-gatehouse-decision",
    "x-gatehouse-reason",
];

/// What a proxy asks about, as its transport read it.
#[derive(Debug)]
pub struct Question<'a> {
    /// The original request's method and raw URI, or why the transport could not read them.
    pub original: Result<OriginalRequest, Refusal>,
    /// The method of the asking request itself, audited when the original cannot be read.
    pub asked_method: &'a Method,
    /// The original request's headers: the credentials (`Authorization`, the configured
    /// cookie), method overrides, a preflight's `Origin` and `Access-Control-Request-Method`.
    pub headers: &'a HeaderMap,
    /// The client's address for the audit (forwarded addresses only from trusted proxies).
    pub client_ip: Option<IpAddr>,
    /// The request id for the audit.
    pub request_id: Option<String>,
}

/// The caller: the bearer token, else the configured cookie.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    cookie: Option<&str>,
) -> Result<Principal, AuthError> {
    if bearer_token(headers)?.is_some() || cookie.is_none() {
        return state.authenticator.authenticate(headers).await;
    }
    let name = cookie.unwrap_or_default();
    let mut tokens = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == name)
        .map(|c| c.value().to_owned());
    let token = tokens.next().ok_or(AuthError::Missing)?;
    // Like two `Authorization` headers: which cookie counts would differ between hops (and a
    // cookie set for a parent domain or another path can sit beside the user's own).
    if tokens.next().is_some() {
        return Err(AuthError::Invalid(format!(
            "the {name} cookie is given more than once"
        )));
    }
    let mut as_header = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| AuthError::Invalid("malformed token".into()))?;
    as_header.insert(header::AUTHORIZATION, value);
    state.authenticator.authenticate(&as_header).await
}

/// A header value: as is when it is visible ASCII without `%`, else percent-encoded (UTF-8,
/// every byte but letters and digits), so that decoding always gives the value back: a user
/// named `j%C3%BCrgen` cannot reach a decoding backend as `jürgen`.
fn header_value(value: &str) -> HeaderValue {
    let plain = value.bytes().all(|b| b.is_ascii_graphic() && b != b'%');
    let encoded;
    let value = if plain {
        value
    } else {
        encoded = utf8_percent_encode(value, NON_ALPHANUMERIC).to_string();
        &encoded
    };
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
#[test]
fn identity_values_decode_to_themselves() {
    for (value, sent) in [
        ("alice", "alice"),
        ("auth0|42", "auth0|42"),
        ("", ""),
        ("jürgen", "j%C3%BCrgen"),
        ("j%C3%BCrgen", "j%25C3%25BCrgen"),
    ] {
        assert_eq!(header_value(value), sent, "{value}");
        let decoded = percent_encoding::percent_decode_str(sent)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, value);
    }
}

/// The `X-Gatehouse-*` headers of an answer. Every answer carries all six, empty where none
/// applies, so a proxy that copies them replaces whatever the client sent.
#[derive(Debug, Clone, Copy, Default)]
struct Identity<'a> {
    user: &'a str,
    session: &'a str,
    endpoint: &'a str,
    mode: &'a str,
    decision: &'a str,
    reason: &'a str,
}

impl Identity<'_> {
    fn apply(&self, mut response: Response) -> Response {
        let values = [
            self.user,
            self.session,
            self.endpoint,
            self.mode,
            self.decision,
            self.reason,
        ];
        for (name, value) in IDENTITY_HEADERS.into_iter().zip(values) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), header_value(value));
        }
        response
    }
}

/// An answer that decided nothing (`decision: deny`, `reason`, no identity).
fn undecided(response: Response, reason: &str) -> Response {
    Identity {
        decision: "deny",
        reason,
        ..Identity::default()
    }
    .apply(response)
}

/// A kind of refused request: its audit reason, problem type and title.
#[derive(Debug, Clone, Copy)]
struct RefusalKind {
    reason: &'static str,
    kind: &'static str,
    title: &'static str,
}

/// The original method and URI came in more than one way (audit reason `ambiguous_request`).
const AMBIGUOUS: RefusalKind = RefusalKind {
    reason: "ambiguous_request",
    kind: "ambiguous-request",
    title: "Ambiguous forward-auth request",
};

/// The original URI failed the path checks of [`matcher::normalize`] (`refused_uri`).
const REFUSED_URI: RefusalKind = RefusalKind {
    reason: "refused_uri",
    kind: "refused-uri",
    title: "Refused original URI",
};

/// Longest raw path kept in an audit event of a refused request.
const AUDITED_PATH_MAX: usize = 512;

/// Refuses a request that smells of an attempt (two conventions, a refused spelling): 400
/// problem+json, and an audit event (`decision: deny`, `reason`) with who it was, when the
/// credentials say so.
async fn refuse(
    state: &AppState,
    question: &Question<'_>,
    request: (&Method, Option<&str>),
    refusal: RefusalKind,
    detail: String,
) -> Response {
    let RefusalKind {
        reason,
        kind,
        title,
    } = refusal;
    let config = &state.forward_auth;
    let user = authenticate(state, question.headers, config.cookie.as_deref())
        .await
        .map(|p| p.sub)
        .unwrap_or_default();
    let (method, path) = request;
    let path = path.map(|p| {
        let p = p.split('?').next().unwrap_or("");
        let mut end = p.len().min(AUDITED_PATH_MAX);
        while !p.is_char_boundary(end) {
            end -= 1;
        }
        p[..end].to_owned()
    });
    state.audit.record(AuditEvent {
        ts: Timestamp::now(),
        decision: AuditDecision::Deny,
        reason: reason.to_owned(),
        user,
        session_id: None,
        owner: None,
        endpoint: None,
        method: Some(method.as_str().to_owned()),
        path,
        mode: None,
        source: Source::ForwardAuth,
        request_id: question.request_id.clone(),
        client_ip: question.client_ip.map(|ip| ip.to_string()),
        instance: state.audit.instance().to_owned(),
        detail: Some(json!({ "why": detail })),
    });
    tracing::info!(reason, %detail, "forward-auth request refused");
    let mut extensions = serde_json::Map::new();
    extensions.insert("reason".into(), json!(reason));
    undecided(
        problem_response(StatusCode::BAD_REQUEST, kind, title, detail, extensions),
        reason,
    )
}

/// The endpoint, among those the request's readings match, whose mode is the strictest for
/// `user` (ENFORCED over LOG_ONLY over DISABLED; the request's own reading on a tie), so that
/// no reading a backend may give the request is decided under a laxer mode than it runs
/// under. With the settings unknown, the check denies whatever the endpoint: the first.
fn strictest<'a>(state: &AppState, user: &str, readings: &[Matched<'a>]) -> &'a str {
    let rank = |mode: Mode| match mode {
        Mode::Disabled => 0,
        Mode::LogOnly => 1,
        Mode::Enforced => 2,
    };
    let names = readings.iter().map(|m| m.route.name.as_str());
    match state.enforcement.in_force() {
        Some(settings) => names
            .rev()
            .max_by_key(|name| rank(settings.mode_for(name, user)))
            .unwrap_or_default(),
        None => names.into_iter().next().unwrap_or_default(),
    }
}

/// Whether the original request is a CORS preflight.
fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        // An `OPTIONS` a backend may run as another method is no preflight.
        && !matcher::METHOD_OVERRIDE_HEADERS
            .iter()
            .any(|name| headers.contains_key(*name))
}

/// The answer to `question` (see the [module docs](self) and [`super`] for the statuses).
pub async fn answer(state: &AppState, question: &Question<'_>) -> Response {
    match decide(state, question).await {
        Ok(response) | Err(response) => response,
    }
}

async fn decide(state: &AppState, question: &Question<'_>) -> Result<Response, Response> {
    let config = &state.forward_auth;
    let headers = question.headers;
    let original = match &question.original {
        Ok(original) => original,
        Err(Refusal::Ambiguous(why)) => {
            let asked = (question.asked_method, None);
            return Err(refuse(state, question, asked, AMBIGUOUS, why.clone()).await);
        }
        Err(Refusal::Missing(why)) => return Err(reject(ApiError::InvalidRequest(why.clone()))),
    };
    let original_method = &original.method;
    let refused = |why: String| {
        let asked = (original_method, Some(original.uri.as_str()));
        refuse(state, question, asked, REFUSED_URI, why)
    };
    let path = match matcher::normalize(&original.uri) {
        Ok(path) => path,
        Err(e) => return Err(refused(e.to_string()).await),
    };
    if config.preflight != Preflight::Check && is_preflight(original_method, headers) {
        return Ok(preflight_answer(config.preflight));
    }
    // A POST may be run as any method (a `_method` form field, unseen here), and so may a
    // request carrying an override header, whatever its method (Slim 4 honours them on all).
    let overridable = *original_method == Method::POST
        || matcher::METHOD_OVERRIDE_HEADERS
            .iter()
            .any(|name| headers.contains_key(*name));
    let readings = config
        .routes
        .find_readings(original_method, &path, overridable);
    if readings
        .iter()
        .any(|m| m.session_id != readings[0].session_id)
    {
        return Err(refused(
            "backends may read this request as another session (a format suffix on the id)".into(),
        )
        .await);
    }
    let Some(first) = readings.first() else {
        return Ok(unmatched_answer(config.unmatched, original_method, &path));
    };
    let principal = authenticate(state, headers, config.cookie.as_deref())
        .await
        .map_err(|e| reject(ApiError::from(e)))?;
    let session = state
        .session_ids()
        .parse(&first.session_id)
        .map_err(|e| reject(e.into()))?;
    let endpoint = strictest(state, &principal.sub, &readings);
    let origin = Origin {
        method: Some(original_method.as_str().to_owned()),
        path: Some(path.clone()),
        client_ip: question.client_ip,
        request_id: question.request_id.clone(),
        source: Source::ForwardAuth,
    };
    let check = Check {
        user: &principal.sub,
        is_admin: principal.is_admin(),
        session: &session,
        endpoint,
        origin: &origin,
    };
    let outcome = state.gatekeeper.check(&check, None).await.outcome;
    Ok(decision_answer(&principal.sub, &session, endpoint, outcome))
}

/// A request refused before any decision (bad credentials, an invalid id): its answer, with
/// the reason in the identity headers.
fn reject(e: ApiError) -> Response {
    let reason = match &e {
        ApiError::Unauthorized(_) => "unauthenticated",
        _ => "invalid_request",
    };
    undecided(e.into_response(), reason)
}

/// The answer to a CORS preflight under `GATEHOUSE_FORWARD_AUTH_PREFLIGHT=allow|deny`.
fn preflight_answer(preflight: Preflight) -> Response {
    let allow = preflight == Preflight::Allow;
    let identity = Identity {
        decision: if allow { "allow" } else { "deny" },
        reason: "preflight",
        ..Identity::default()
    };
    identity.apply(if allow {
        (
            StatusCode::OK,
            axum::Json(json!({ "allowed": true, "reason": "preflight" })),
        )
            .into_response()
    } else {
        ApiError::Forbidden(
            "CORS preflights are refused (GATEHOUSE_FORWARD_AUTH_PREFLIGHT=deny)".into(),
        )
        .into_response()
    })
}

/// The answer for a URI no reading of which any route matches.
fn unmatched_answer(unmatched: Unmatched, method: &Method, path: &str) -> Response {
    match unmatched {
        Unmatched::Allow => Identity {
            decision: "allow",
            reason: "unprotected",
            ..Identity::default()
        }
        .apply(
            (
                StatusCode::OK,
                axum::Json(
                    json!({ "allowed": true, "decision": "allow", "reason": "unprotected" }),
                ),
            )
                .into_response(),
        ),
        Unmatched::Deny => undecided(
            ApiError::Forbidden(format!(
                "no route protects {method} {path}, and unmatched URIs are denied"
            ))
            .into_response(),
            "unmatched",
        ),
    }
}

/// The answer to a decided check: 200 (allow, would-deny), 403, or 503 (settings or owner
/// unknown), with the decision in the body and all six identity headers.
fn decision_answer(user: &str, session: &SessionId, endpoint: &str, outcome: Outcome) -> Response {
    let identity = Identity {
        user,
        session: session.as_str(),
        endpoint,
        mode: outcome.mode.as_str(),
        decision: outcome.verdict.as_str(),
        reason: outcome.reason.as_str(),
    };
    let mut body = serde_json::Map::new();
    body.insert("allowed".into(), json!(outcome.verdict.allowed()));
    body.insert("decision".into(), json!(outcome.verdict));
    body.insert("reason".into(), json!(outcome.reason));
    body.insert("mode".into(), json!(outcome.mode));
    body.insert("user".into(), json!(user));
    body.insert("session_id".into(), json!(session.as_str()));
    body.insert("endpoint".into(), json!(endpoint));
    let response = if outcome.verdict == Verdict::Deny {
        let detail = match outcome.reason {
            Reason::SettingsUnavailable => "the enforcement settings have not been read yet".into(),
            Reason::StoreUnavailable => {
                "the session's owner cannot be read and the mode is ENFORCED".into()
            }
            _ => format!("{user} may not use session {}", session.as_str()),
        };
        ApiError::Denied {
            reason: outcome.reason,
            detail,
            extensions: body,
        }
        .into_response()
    } else {
        (StatusCode::OK, axum::Json(serde_json::Value::Object(body))).into_response()
    };
    identity.apply(response)
}
