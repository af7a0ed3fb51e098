//! Counts every HTTP request by route template, method and status, with its latency
//! (`gatehouse_http_requests_total`, `gatehouse_http_request_duration_seconds`).
//!
//! The route is known only once the router matched one, inside the outer layers; so an inner
//! route layer ([`tag_route`]) hands the matched template to the outer one ([`count`]) on the
//! response. A request no route matched (404, 405 from the fallbacks) counts as `unmatched`:
//! paths a client made up never become label values.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::http::Refused;
use crate::metrics::Metrics;

/// Copies the matched route template onto the response.
pub async fn tag_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// Times the whole handling and counts it.
pub async fn count(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let response = next.run(request).await;
    match response.extensions().get::<Refused>() {
        Some(Refused::Credentials(reason)) => metrics.auth.failed(reason),
        Some(Refused::NotAdmin) => metrics.auth.forbidden(),
        None => {}
    }
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    metrics
        .http
        .answered(route, method, response.status().as_u16(), started.elapsed());
    response
}

/// The method, or `other` for a method the API does not use (bounded label values).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
