//! Which instances are in service, and with which settings: each instance writes a heartbeat
//! to the store every [`HEARTBEAT_EVERY`] (its name, build, the settings version in force and
//! where it comes from), and `GET /v1/instances` (admin) lists those heard from within
//! [`LISTED_FOR`]. The dashboard shows it, so an operator sees a change reach every instance.
//!
//! Instances are told apart by `GATEHOUSE_INSTANCE` (default: the host name): two that share
//! a name show as one.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::enforcement::Enforcement;
use crate::http::{Admin, ApiError, AppState, Problem};
use crate::records::InstanceRecord;
use crate::store::StatsStore;
use crate::throttle::Throttle;
use crate::timestamp::Timestamp;

/// How often an instance writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// How long after its last heartbeat an instance is still listed.
pub const LISTED_FOR: Duration = Duration::from_secs(30);

/// The instances routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_instances))
}

/// `GET /v1/instances`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Instances {
    /// The instances heard from in the last 30 s, by name.
    pub instances: Vec<InstanceRecord>,
}

/// The instances in service (heard from in the last 30 s) and the settings version each has
/// in force.
#[utoipa::path(get, path = "/v1/instances", tag = "rollout",
    responses(
        (status = 200, body = Instances),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn list_instances(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Instances>, ApiError> {
    let back = u64::try_from(LISTED_FOR.as_millis()).unwrap_or(u64::MAX);
    let since = Timestamp::from_unix_millis(Timestamp::now().unix_millis().saturating_sub(back));
    let instances = state.store.instances(since).await?;
    Ok(Json(Instances { instances }))
}

/// Writes this instance's heartbeat every [`HEARTBEAT_EVERY`] until `cancel` fires.
pub async fn heartbeat(
    store: std::sync::Arc<dyn StatsStore>,
    enforcement: Enforcement,
    name: String,
    cancel: CancellationToken,
) {
    let started_at = Timestamp::now();
    let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let status = enforcement.status();
        let record = InstanceRecord {
            instance: name.clone(),
            build_version: env!("CARGO_PKG_VERSION").to_owned(),
            settings_version: status.version,
            settings_source: status.source.as_str().to_owned(),
            started_at,
            seen_at: Timestamp::now(),
        };
        if let Err(e) = store.heartbeat(&record).await {
            static FAILED: Throttle = Throttle::new();
            if let Some(suppressed) = FAILED.allow() {
                tracing::debug!(error = %e, suppressed, "instance heartbeat not written");
            }
        }
    }
}
