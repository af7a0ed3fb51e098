//! The whole application, assembled once: every capability's routes, the OpenAPI document
//! and docs page, the rollout dashboard, health and metrics, and the layers every request goes
//! through.
//!
//! [`app`] returns the `Router`, so tests drive it through real sockets and `main` only wires
//! configuration and serving. Layers are stacked in one place, [`app`]. The OpenAPI document
//! comes from the same route declarations, without any state ([`openapi_document`]).

mod dashboard;
mod health;
mod observe;
mod openapi;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode, header};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::http::{ApiError, AppState, MAX_JSON_BODY, REQUEST_ID, problem_response};

pub use self::openapi::ApiDoc;

/// The API routes with their OpenAPI description, except those behind the ownership layer
/// ([`crate::sessions::owner_routes`]).
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::validate::routes())
        .merge(crate::sessions::routes())
        .merge(crate::enforcement::routes())
        .merge(crate::rollout::routes())
        .merge(crate::stats::routes())
        .merge(crate::instances::routes())
        .merge(crate::audit::routes())
        .merge(crate::forward_auth::routes())
        .merge(crate::backfill::routes())
        .merge(health::routes())
}

/// The OpenAPI document of the API (what `/openapi.json` serves).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::published(
        api()
            .merge(crate::sessions::owner_routes())
            .split_for_parts()
            .1,
    )
}

/// The whole application.
pub fn app(state: AppState) -> Router {
    let guarded = crate::sessions::owner_routes().route_layer(crate::sessions::guard(&state));
    let (router, spec) = api().merge(guarded).split_for_parts();
    let sensitive = Arc::new([header::AUTHORIZATION, header::COOKIE, header::SET_COOKIE]);
    // One stack: axum wraps every route (and the fallback) in what `Router::layer` is given and
    // boxes it, so a second `layer` call would box and clone each request's service again.
    let layers = ServiceBuilder::new()
        // Outermost: counts every answer, those of the layers below included.
        .layer(observe::CountLayer::new(state.metrics.clone()))
        .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
            })
            .on_response(LogAnswer)
            // A 5xx is an answer, not a failure of this process: its cause is logged where it
            // arises (the store unavailable at WARN, one line per second; an internal error at
            // ERROR). tower-http's default logged every 503 of an outage at ERROR.
            .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response_boxed()
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.request_timeout,
            bound_request,
        ))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::Extension(state.trusted_proxies.clone()));
    router
        .merge(openapi::routes(openapi::published(spec)))
        .merge(dashboard::routes())
        .fallback(crate::http::not_found)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .with_state(state)
        .layer(layers)
}

/// Logs each answer at DEBUG with its status and latency as numbers (tower-http's default
/// writes the latency as a string, `"18 ms"`).
#[derive(Clone, Copy)]
struct LogAnswer;

impl<B> tower_http::trace::OnResponse<B> for LogAnswer {
    fn on_response(self, response: &axum::http::Response<B>, latency: Duration, _: &tracing::Span) {
        tracing::debug!(
            status = response.status().as_u16(),
            latency_ms = latency.as_secs_f64() * 1e3,
            "answered"
        );
    }
}

/// The application of `GATEHOUSE_METRICS_LISTEN`: `GET /metrics` and nothing else.
pub fn metrics_only(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(health::metrics_anywhere))
        .fallback(crate::http::not_found)
        .with_state(state)
}

/// The problem `type` of a request that was not handled within `GATEHOUSE_REQUEST_TIMEOUT`.
pub const REQUEST_TIMEOUT_KIND: &str = "request-timeout";

/// Bounds a request's whole handling, body included. Store calls have their own, shorter bound
/// (`GATEHOUSE_REDIS_TIMEOUT`, answered 503), so what runs out of this one is a client too slow
/// to send its request: 408 `request-timeout`, and the connection is closed (RFC 9110 §15.5.9),
/// since the rest of the body may still be on its way.
async fn bound_request(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = problem_response(
                StatusCode::REQUEST_TIMEOUT,
                REQUEST_TIMEOUT_KIND,
                "Request timeout",
                format!(
                    "the request was not received and handled within {}",
                    humantime::format_duration(limit)
                ),
                serde_json::Map::new(),
            );
            response.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

impl ApiError {
    fn into_response_boxed(self) -> axum::response::Response {
        axum::response::IntoResponse::into_response(self)
    }
}
