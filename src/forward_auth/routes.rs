//! The `/v1/forward-auth` handler: reads the original request from the proxy's convention and
//! asks [`check::answer`].

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::any;
use utoipa::PartialSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::http::{AddressHeader, AppState, RequestMeta};

use super::check::{self, Question};
use super::original::{self, PATH, Style};

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
    let question = Question {
        original: original::original(state.forward_auth.style, &method, &uri, &headers),
        asked_method: &method,
        headers: &headers,
        client_ip: client_ip(&state, &meta, &headers),
        request_id: meta.request_id.clone(),
    };
    check::answer(&state, &question).await
}
