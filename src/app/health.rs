//! `/healthz` (the process answers) and `/readyz` (the store answers, the settings are
//! loaded, every identity provider's keys are), for orchestrators and load balancers;
//! `/metrics` for Prometheus.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::AppState;
use crate::metrics::{JwksGauges, SettingsGauges};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Prometheus metrics (OpenMetrics text): decisions by decision, reason and source, and their
/// latency; HTTP requests by route template and status, and their latency; store calls by
/// operation (latency, errors); the owner cache; refused credentials and admin 403s; the
/// identity providers' keys (count, age, last fetch failed, fetches by outcome); audit
/// events by outcome and the backlog; the enforcement settings in force (mode per endpoint,
/// kill switch, `enforce_percent`, version, staleness, source, the store's record); the build.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "The metrics: OpenMetrics text when the Accept header asks for application/openmetrics-text (as Prometheus does), else the Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if state.metrics_elsewhere {
        return crate::http::ApiError::NotFound(
            "/metrics is served on GATEHOUSE_METRICS_LISTEN".into(),
        )
        .into_response();
    }
    scrape(&state, &headers).into_response()
}

/// `/metrics` on `GATEHOUSE_METRICS_LISTEN`.
pub(super) async fn metrics_anywhere(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    scrape(&state, &headers).into_response()
}

/// The exposition, with the gauges set from the state now: OpenMetrics when the scraper asks
/// for it (Prometheus does), else the Prometheus text format.
pub fn scrape(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> impl axum::response::IntoResponse + use<> {
    if let Some(cache) = &state.owner_cache {
        let (hits, misses) = cache.stats();
        state.metrics.cache.observe(hits, misses, cache.entries());
    }
    let providers = state.authenticator.identity_providers();
    let gauges: Vec<JwksGauges<'_>> = providers
        .iter()
        .map(|p| JwksGauges {
            issuer: &p.issuer,
            keys: p.keys,
            age: p.age,
            failed: p.last_error.is_some(),
            fetches: [p.fetches.ok, p.fetches.error, p.fetches.invalid],
        })
        .collect();
    state.metrics.jwks.observe(&gauges);
    match state.enforcement.in_force() {
        Some(settings) => {
            let modes: Vec<(String, &'static str)> =
                std::iter::once(("*".to_owned(), settings.mode.as_str()))
                    .chain(
                        settings
                            .endpoints
                            .iter()
                            .map(|(name, mode)| (name.clone(), mode.as_str())),
                    )
                    .collect();
            state.metrics.enforcement.observe(
                &modes,
                settings.kill_switch,
                settings.enforce_percent.unwrap_or(100),
            );
        }
        None => state.metrics.enforcement.observe(&[], false, 0),
    }
    let settings = state.enforcement.status();
    state.metrics.settings.observe(&SettingsGauges {
        version: settings.version,
        stale: settings.stale,
        source: settings.source.as_str(),
        record: settings.record.as_str(),
        restores: settings.restores,
    });
    let openmetrics = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.render(),
        )
    } else {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.render_text(),
        )
    }
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
    /// Whether the settings in force may be out of date: they come from the local snapshot,
    /// or this instance is not subscribed to changes, or has not confirmed them against the
    /// store for three refresh periods. They stay in force meanwhile.
    pub settings_stale: bool,
    /// Where the settings in force come from: `none` (not read yet and no snapshot: checks
    /// are denied with `settings_unavailable`), `snapshot` (the local snapshot, not yet
    /// confirmed) or `store`.
    pub settings_source: String,
    /// The store's settings record at the last read: `unknown` (not read, or unreadable),
    /// `ok`, `missing` (it vanished), `behind` (an older version than the one in force) or
    /// `diverged` (other settings at the version in force). In the last three the settings in
    /// force are kept and the record is being restored; they do not make the instance unready.
    pub settings_record: String,
    /// The version the store held when `settings_record` is `behind` or `diverged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_record_version: Option<u64>,
    /// The owner cache: `live` (in use), `bypassed` (invalidations not received: every
    /// lookup reads the store) or `off`.
    pub owner_cache: String,
    /// Owner cache hits and misses since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_cache_hits: Option<u64>,
    /// See `owner_cache_hits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_cache_misses: Option<u64>,
    /// The identity providers' keys (absent without identity providers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_providers: Vec<ProviderReadiness>,
}

/// Where one identity provider's keys stand.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderReadiness {
    /// The issuer (`iss`).
    pub issuer: String,
    /// `fresh` (the last fetch worked), `stale` (the last fetch failed: the last good keys
    /// stay in force and the instance stays ready; the log says why) or `missing` (never
    /// fetched: its tokens are refused with 503 `keys-unavailable` and the instance is not
    /// ready).
    pub state: String,
    /// Keys in force.
    pub keys: usize,
    /// Seconds since the keys in force were fetched (absent while `missing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<u64>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The store answers, the settings have been read from it and every identity provider's keys
/// have been fetched (503 otherwise). A settings record that vanished or went back is reported
/// (`settings_record`) but keeps the instance ready: it keeps its settings and restores the
/// record; so does an identity provider that cannot be reached after its keys were fetched
/// (they stay in force; `identity_providers` says how old they are).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let store_ok = state.store.ping().await.is_ok();
    if store_ok && !state.enforcement.is_loaded() {
        // Recover from an outage at start without waiting for the next refresh tick.
        let _ = state.enforcement.reload().await;
    }
    let settings = state.enforcement.status();
    let loaded = settings.loaded;
    // A record missing or behind does not make the instance unready: the whole fleet sees it
    // at once, and its settings in force are the right ones (it restores the record itself).
    let providers: Vec<ProviderReadiness> = state
        .authenticator
        .identity_providers()
        .into_iter()
        .map(|p| ProviderReadiness {
            state: match (&p.age, &p.last_error) {
                (None, _) => "missing",
                (Some(_), Some(_)) => "stale",
                (Some(_), None) => "fresh",
            }
            .into(),
            keys: p.keys,
            age_seconds: p.age.map(|age| age.as_secs()),
            issuer: p.issuer,
        })
        .collect();
    let keys_loaded = providers.iter().all(|p| p.age_seconds.is_some());
    let ready = store_ok && loaded && keys_loaded;
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
            settings_version: settings.version,
            settings_stale: settings.stale,
            settings_source: settings.source.as_str().into(),
            settings_record: settings.record.as_str().into(),
            settings_record_version: settings.record_version,
            owner_cache: match &state.owner_cache {
                None => "off",
                Some(cache) if cache.is_live() => "live",
                Some(_) => "bypassed",
            }
            .into(),
            owner_cache_hits: state.owner_cache.as_ref().map(|c| c.stats().0),
            owner_cache_misses: state.owner_cache.as_ref().map(|c| c.stats().1),
            identity_providers: providers,
        }),
    )
}
