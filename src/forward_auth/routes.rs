//! The `/v1/forward-auth` handler: reads the original request from the proxy's convention and
//! asks [`check::answer`].

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::any;
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

/// The forward-auth decision for the original request (any method; see the module docs).
#[utoipa::path(get, path = "/v1/forward-auth", tag = "forward-auth",
    description = "Any method. The original method and URI come from `X-Original-Method` / \
        `X-Original-URI` (nginx), `X-Forwarded-Method` / `X-Forwarded-Uri` (Traefik, Caddy), \
        or, for Envoy, the request's own method and the path after `/v1/forward-auth`, as \
        `GATEHOUSE_FORWARD_AUTH_STYLE` says; in `auto`, two conventions or a header given \
        twice are refused (400 `ambiguous-request`). A URI that backends may read differently \
        is refused (400 `refused-uri`). Every answer sets all six `X-Gatehouse-*` headers \
        (User, Session, Endpoint, Mode, Decision, Reason), empty where none applies.",
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
    let question = Question {
        original: original::original(state.forward_auth.style, &method, &uri, &headers),
        asked_method: &method,
        headers: &headers,
        client_ip: client_ip(&state, &meta, &headers),
        request_id: meta.request_id.clone(),
    };
    check::answer(&state, &question).await
}
