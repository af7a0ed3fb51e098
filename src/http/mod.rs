//! The web toolkit every capability's routes use: the application state, errors
//! (problem+json), extractors, and the HTTP/1 server loop ([`serve`]).
//!
//! It imports no capability's routes: the router is assembled once, in [`crate::app`].

mod error;
mod extract;
pub mod integer;
pub mod serve;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::http::HeaderName;

use crate::audit::Audit;
use crate::auth::{Authenticator, Principal};
use crate::enforcement::Enforcement;
use crate::gatekeeper::Gatekeeper;
use crate::metrics::Metrics;
use crate::store::Store;

pub use self::error::{ApiError, PROBLEM_JSON, Problem, Refused, problem_response};
pub use self::extract::{
    AddressHeader, JsonBody, MAX_JSON_BODY, OptionalJsonBody, Path, Query, RequestMeta,
    TrustedProxies, method_not_allowed, not_found,
};
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
    /// `/metrics` is served on `GATEHOUSE_METRICS_LISTEN` only (404 on the API's address).
    pub metrics_elsewhere: bool,
    /// How long the decision time series is kept (whether a range asked for is whole).
    pub stats_retention: crate::records::Retention,
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

/// An authenticated caller with the admin role or the `gatehouse:admin` scope. Extracting it
/// answers 401 without valid credentials and 403 for anyone else, before any other extractor
/// after it (a non-admin learns nothing about what their query would have got).
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

impl<S> axum::extract::FromRequestParts<S> for Admin
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if principal.may_administer() {
            Ok(Self(principal))
        } else {
            Err(ApiError::NotAdmin)
        }
    }
}

/// The size of a page of a listing (`?limit=`): 1–1000, 100 when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(usize);

impl PageLimit {
    /// The size when none is asked for.
    pub const DEFAULT: usize = 100;
    /// The largest size.
    pub const MAX: usize = 1000;

    /// Reads `?limit=` (a 400 outside 1–1000).
    pub fn read(limit: Option<usize>) -> Result<Self, ApiError> {
        match limit.unwrap_or(Self::DEFAULT) {
            n @ 1..=Self::MAX => Ok(Self(n)),
            _ => Err(ApiError::InvalidRequest(format!(
                "limit must be 1-{}",
                Self::MAX
            ))),
        }
    }

    /// The size.
    pub fn get(self) -> usize {
        self.0
    }
}
