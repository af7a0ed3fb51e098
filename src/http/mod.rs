//! The web layer: application state, the router, and what every route shares (errors,
//! extractors, health, the OpenAPI document).
//!
//! [`app`] returns the whole `Router`, so tests can drive it through real sockets and `main`
//! only wires configuration and serving. Layers are stacked in one place, [`app`].

mod error;
mod extract;
mod health;
mod openapi;
pub mod serve;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{HeaderName, Request, StatusCode, header};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::audit::Audit;
use crate::auth::{Authenticator, Principal};
use crate::enforcement::Enforcement;
use crate::gatekeeper::Gatekeeper;
use crate::metrics::Metrics;
use crate::store::Store;

pub use self::error::{ApiError, PROBLEM_JSON, Problem, problem_response};
pub use self::extract::{
    AddressHeader, JsonBody, MAX_JSON_BODY, Path, Query, RequestMeta, TrustedProxies,
};
pub use self::openapi::ApiDoc;
pub use self::serve::ConnectionLimits;

/// The header carrying the request id (set when absent, echoed on the response).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach.
pub struct Services {
    /// Authenticates callers.
    pub authenticator: Arc<Authenticator>,
    /// The ownership (and settings) store.
    pub store: Arc<dyn Store>,
    /// The enforcement settings in force.
    pub enforcement: Enforcement,
    /// Decides checks.
    pub gatekeeper: Gatekeeper,
    /// Records audit events.
    pub audit: Audit,
    /// The owner cache, when on.
    pub owner_cache: Option<Arc<crate::store::OwnerCache>>,
    /// Backfill jobs.
    pub backfill: crate::backfill::Backfill,
    /// The forward-auth route table and policy.
    pub forward_auth: crate::forward_auth::ForwardAuth,
    /// This instance's metrics.
    pub metrics: Arc<Metrics>,
    /// Bound on a request's whole handling.
    pub request_timeout: Duration,
    /// Who may claim sessions (`GATEHOUSE_CLAIM`).
    pub claim: crate::sessions::ClaimPolicy,
    /// Whose forwarded client address is believed (inserted into every request).
    pub trusted_proxies: TrustedProxies,
}

impl Services {
    /// How session ids sent by callers are read: the gatekeeper's policy, for every entry
    /// point alike.
    pub fn session_ids(&self) -> crate::session_id::SessionIds {
        self.gatekeeper.session_ids()
    }
}

/// Shared application state: one `Arc`, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// Wraps the services.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.authenticator)
    }
}

/// Refuses principals that are not admins.
pub fn require_admin(principal: &Principal) -> Result<(), ApiError> {
    if principal.may_administer() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this needs the admin role or the gatehouse:admin scope".into(),
        ))
    }
}

/// The API routes with their OpenAPI description.
fn api(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::validate::routes())
        .merge(crate::sessions::routes(state))
        .merge(crate::enforcement::routes())
        .merge(crate::rollout::routes())
        .merge(crate::audit::routes())
        .merge(crate::forward_auth::routes())
        .merge(crate::backfill::routes())
        .merge(health::routes())
}

/// The OpenAPI document of the API (what `/openapi.json` serves).
pub fn openapi_document(state: &AppState) -> utoipa::openapi::OpenApi {
    api(state).split_for_parts().1
}

/// The whole application.
pub fn app(state: AppState) -> Router {
    let (router, spec) = api(&state).split_for_parts();
    let sensitive = Arc::new([header::AUTHORIZATION, header::COOKIE, header::SET_COOKIE]);
    let layers = ServiceBuilder::new()
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
            }),
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
        .merge(openapi::routes(spec))
        .fallback(extract::not_found)
        .method_not_allowed_fallback(extract::method_not_allowed)
        .with_state(state)
        .layer(layers)
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
