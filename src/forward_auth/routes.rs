//! The `/v1/forward-auth` handler: reads the original request, matches it, decides it.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;
use utoipa::PartialSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::audit::{AuditDecision, AuditEvent, Source};
use crate::auth::{AuthError, Principal, bearer_token};
use crate::decision::{Mode, Outcome, Reason, Verdict};
use crate::gatekeeper::{Check, Origin};
use crate::http::{AddressHeader, ApiError, AppState, RequestMeta, problem_response};
use crate::session_id::SessionId;
use crate::timestamp::Timestamp;

use super::matcher::{self, Matched};
use super::original::{self, PATH, Style};
use super::{Preflight, Unmatched};

/// The forward-auth routes: every method, and the Envoy prefix form.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route(PATH, any(forward_auth))
        .route(&format!("{PATH}/{{*path}}"), any(forward_auth))
}

/// The client's address: from a trusted proxy, the header the style's proxy sets (nginx's
/// recipe sets `X-Real-IP` and passes a client's `X-Forwarded-For` through; Traefik, Caddy
/// and Envoy write `X-Forwarded-For`); in `auto`, the [`RequestMeta`]'s.
fn client_ip(state: &AppState, meta: &RequestMeta, headers: &HeaderMap) -> Option<IpAddr> {
    let from = match state.forward_auth.style {
        Style::Nginx => AddressHeader::RealIp,
        Style::Traefik | Style::Caddy | Style::Envoy => AddressHeader::ForwardedFor,
        Style::Auto => return meta.client_ip,
    };
    meta.peer_ip
        .map(|peer| state.trusted_proxies.client_ip_from(peer, headers, from))
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
        for (name, value) in [
            ("x-gatehouse-user", self.user),
            ("x-gatehouse-session", self.session),
            ("x-gatehouse-endpoint", self.endpoint),
            ("x-gatehouse-mode", self.mode),
            ("x-gatehouse-decision", self.decision),
            ("x-gatehouse-reason", self.reason),
        ] {
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
    meta: &RequestMeta,
    headers: &HeaderMap,
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
    let user = authenticate(state, headers, config.cookie.as_deref())
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
        request_id: meta.request_id.clone(),
        client_ip: client_ip(state, meta, headers).map(|ip| ip.to_string()),
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

/// The `X-Gatehouse-*` headers set on every answer, and what each says.
const IDENTITY_HEADERS: [(&str, &str); 6] = [
    (
        "X-Gatehouse-User",
        "The authenticated user (percent-encoded unless visible ASCII without `%`); empty when none",
    ),
    (
        "X-Gatehouse-Session",
        "The session id, as gatehouse spells it; empty when the URI names none",
    ),
    (
        "X-Gatehouse-Endpoint",
        "The endpoint name of the matched route; empty when none matched",
    ),
    (
        "X-Gatehouse-Mode",
        "The mode applied (DISABLED, LOG_ONLY, ENFORCED); empty when nothing was decided",
    ),
    ("X-Gatehouse-Decision", "allow, deny or would_deny"),
    (
        "X-Gatehouse-Reason",
        "Why: a decision reason, or unprotected, unmatched, preflight, unauthenticated, invalid_request, ambiguous_request, refused_uri",
    ),
];

/// The request headers forward-auth reads (besides the path, for Envoy).
const READ_HEADERS: [(&str, &str); 12] = [
    (
        "X-Original-Method",
        "nginx (`auth_request`): the original method; required with X-Original-URI",
    ),
    (
        "X-Original-URI",
        "nginx: the original URI, raw (path and query); required with X-Original-Method",
    ),
    (
        "X-Forwarded-Method",
        "Traefik, Caddy: the original method; required with X-Forwarded-Uri",
    ),
    (
        "X-Forwarded-Uri",
        "Traefik, Caddy: the original URI, raw (path and query); required with X-Forwarded-Method",
    ),
    (
        "X-Forwarded-For",
        "The client's address, believed only from GATEHOUSE_TRUSTED_PROXIES (audit `client_ip`)",
    ),
    (
        "X-Real-IP",
        "The client's address as nginx's recipe sets it, believed only from a trusted proxy",
    ),
    (
        "Origin",
        "With Access-Control-Request-Method on an OPTIONS: a CORS preflight (GATEHOUSE_FORWARD_AUTH_PREFLIGHT)",
    ),
    ("Access-Control-Request-Method", "See Origin"),
    (
        "X-HTTP-Method-Override",
        "Present: the request may run as another method, so every method's routes are matched",
    ),
    ("X-HTTP-Method", "As X-HTTP-Method-Override"),
    ("X-Method-Override", "As X-HTTP-Method-Override"),
    (
        "Cookie",
        "The GATEHOUSE_FORWARD_AUTH_COOKIE cookie carries the token when there is no Authorization header (given twice: 401)",
    ),
];

/// The forward-auth operations as the server answers them, added to the document: every method
/// (`any`), at `/v1/forward-auth` with the headers read, and at `/v1/forward-auth/{path}` for
/// Envoy (the original method is the request's, the original path the rest of the path; the
/// header conventions are not read there in `auto`, where they would make it ambiguous), each
/// answer with the six `X-Gatehouse-*` headers.
pub struct ForwardAuthDocs;

impl utoipa::Modify for ForwardAuthDocs {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::path::{HttpMethod, ParameterBuilder, ParameterIn, PathItem};
        use utoipa::openapi::{Required, path::Operation};
        let Some(mut operation) = openapi
            .paths
            .paths
            .get(PATH)
            .and_then(|item| item.get.clone())
        else {
            return;
        };
        for response in operation.responses.responses.values_mut() {
            if let utoipa::openapi::RefOr::T(response) = response {
                for (name, description) in IDENTITY_HEADERS {
                    response.headers.insert(
                        name.into(),
                        HeaderBuilder::new()
                            .description(Some(description))
                            .build()
                            .into(),
                    );
                }
            }
        }
        let header = |(name, description): (&str, &str)| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(String::schema()))
                .build()
                .into()
        };
        let mut with_headers = operation.clone();
        with_headers.parameters = Some(READ_HEADERS.into_iter().map(header).collect());
        let mut envoy = operation.clone();
        envoy.parameters = Some(vec![
            ParameterBuilder::new()
                .name("path")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(
                    "The original path after `/` (Envoy `path_prefix: /v1/forward-auth`), and \
                     its query",
                ))
                .schema(Some(String::schema()))
                .build()
                .into(),
        ]);
        operation.parameters = None;
        let methods = [
            (HttpMethod::Get, "get"),
            (HttpMethod::Post, "post"),
            (HttpMethod::Put, "put"),
            (HttpMethod::Delete, "delete"),
            (HttpMethod::Patch, "patch"),
            (HttpMethod::Head, "head"),
            (HttpMethod::Options, "options"),
            (HttpMethod::Trace, "trace"),
        ];
        let item = |template: &Operation, id: &str| {
            methods
                .iter()
                .fold(PathItem::default(), |mut item, (method, name)| {
                    let mut operation = template.clone();
                    operation.operation_id = Some(format!("{id}_{name}"));
                    item.merge_operations(PathItem::new(method.clone(), operation));
                    item
                })
        };
        let paths = &mut openapi.paths.paths;
        paths.insert(PATH.into(), item(&with_headers, "forward_auth"));
        paths.insert(
            format!("{PATH}/{{path}}"),
            item(&envoy, "forward_auth_envoy"),
        );
    }
}

/// The forward-auth decision for the original request (any method; see the module docs).
#[utoipa::path(get, path = "/v1/forward-auth", tag = "forward-auth",
    description = "Any method. The original method and URI come from `X-Original-Method` / \
        `X-Original-URI` (nginx), `X-Forwarded-Method` / `X-Forwarded-Uri` (Traefik, Caddy), \
        or, for Envoy, the request's own method and the path after `/v1/forward-auth`, as \
        `GATEHOUSE_FORWARD_AUTH_STYLE` says: exactly one convention, both of its headers (none \
        given: 400). In `auto`, two conventions or a header given twice are refused (400 \
        `ambiguous-request`). A URI that backends may read differently is refused (400 \
        `refused-uri`: dot segments raw or encoded, `;`, backslashes, encoded slashes, `%25`, \
        empty segments, control bytes, ...; see the README). Credentials are needed only for a \
        URI a route protects (a bearer token, or the configured cookie). Every answer sets all \
        six `X-Gatehouse-*` headers (User, Session, Endpoint, Mode, Decision, Reason), empty \
        where none applies.",
    responses(
        (status = 200, description = "Allowed (or would-deny, or unprotected): forward the request"),
        (status = 400, body = crate::http::Problem),
        (status = 401, body = crate::http::Problem),
        (status = 403, description = "Denied", body = crate::http::Problem),
        (status = 503, description = "Owner unknown under ENFORCED: fail closed", body = crate::http::Problem),
    ),
    security((), ("bearer" = [])))]
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
    let config = &state.forward_auth;
    let original = match original::original(config.style, method, uri, headers) {
        Ok(original) => original,
        Err(original::Refusal::Ambiguous(why)) => {
            return Err(refuse(state, meta, headers, (method, None), AMBIGUOUS, why).await);
        }
        Err(original::Refusal::Missing(why)) => {
            return Err(reject(ApiError::InvalidRequest(why)));
        }
    };
    let original_method = &original.method;
    let refused = |why: String| {
        refuse(
            state,
            meta,
            headers,
            (original_method, Some(&original.uri)),
            REFUSED_URI,
            why,
        )
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
        client_ip: client_ip(state, meta, headers),
        ..meta.origin(Source::ForwardAuth)
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
