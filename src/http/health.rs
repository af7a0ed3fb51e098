//! `/healthz` (the process answers) and `/readyz` (the store answers and the settings are
//! loaded), for orchestrators and load balancers; `/metrics` for Prometheus.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Prometheus metrics (OpenMetrics text): decisions by decision, reason and source; audit
/// events by outcome (queued, written, spooled, replayed, dropped) and the backlog.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Liveness.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Readiness, with what it is made of.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// `ok` or `unavailable`.
    pub store: String,
    /// Whether the enforcement settings have been read from the store since start.
    pub settings_loaded: bool,
    /// The settings version in force.
    pub settings_version: u64,
    /// Whether the settings in force may be out of date: this instance is not subscribed to
    /// changes, or has not confirmed them against the store for three refresh periods. They
    /// stay in force meanwhile.
    pub settings_stale: bool,
    /// The owner cache: `live` (in use), `bypassed` (invalidations not received: every
    /// lookup reads the store) or `off`.
    pub owner_cache: String,
    /// Owner cache hits and misses since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_cache_hits: Option<u64>,
    /// See `owner_cache_hits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_cache_misses: Option<u64>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The store answers and the settings are loaded (503 otherwise).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let store_ok = state.store.ping().await.is_ok();
    if store_ok && !state.enforcement.is_loaded() {
        // Recover from an outage at start without waiting for the next refresh tick.
        let _ = state.enforcement.reload().await;
    }
    let loaded = state.enforcement.is_loaded();
    let ready = store_ok && loaded;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ready { "ready" } else { "not_ready" }.into(),
            store: if store_ok { "ok" } else { "unavailable" }.into(),
            settings_loaded: loaded,
            settings_version: state.enforcement.current().version,
            settings_stale: state.enforcement.may_be_stale(),
            owner_cache: match &state.owner_cache {
                None => "off",
                Some(cache) if cache.is_live() => "live",
                Some(_) => "bypassed",
            }
            .into(),
            owner_cache_hits: state.owner_cache.as_ref().map(|c| c.stats().0),
            owner_cache_misses: state.owner_cache.as_ref().map(|c| c.stats().1),
        }),
    )
}
