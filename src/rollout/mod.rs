//! `GET /v1/rollout`: where the rollout stands and whether to take the next step.
//!
//! The recommended path is DISABLED → LOG_ONLY (at least [`MIN_OBSERVATION`] of "would deny"
//! data) → ENFORCED for [`PERCENT_STEPS`] of users (at least [`MIN_STEP`] each) → ENFORCED for
//! everyone. The recommendation is a pure function of the settings, the ownership coverage and
//! when the current global mode was set ([`recommend`]), so it is unit-tested without a server.
//! Counts of would-deny and deny decisions over a window (default 24 h) come from the audit
//! stream.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::decision::{Mode, Reason};
use crate::enforcement::{EnforcementSettings, HistoryChange};
use crate::http::{Admin, ApiError, AppState, Problem, Query};
use crate::records::AuditDecision;
use crate::timestamp::Timestamp;

pub use self::recommend::{phase, recommend};

mod recommend;

/// Shortest LOG_ONLY observation before enforcing is recommended.
pub const MIN_OBSERVATION: Duration = Duration::from_secs(24 * 3600);

/// Shortest time at one partial-enforcement step before the next is recommended.
pub const MIN_STEP: Duration = Duration::from_secs(3600);

/// The partial-enforcement steps, in percent of users; after the last comes everyone.
pub const PERCENT_STEPS: [u8; 3] = [10, 50, 100];

/// History entries read to find when the global mode was last set.
const HISTORY_LOOKBACK: usize = 500;

/// The rollout routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_rollout))
}

/// The rollout report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rollout {
    /// The settings in force on this instance.
    pub settings: EnforcementSettings,
    /// Which step of the rollout the settings are at.
    pub phase: Phase,
    /// When the global mode (and percentage) were last set; absent when never set or older
    /// than the history read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Timestamp>,
    /// How many sessions have an owner.
    pub ownership: Ownership,
    /// Audited decisions over the window.
    pub decisions: WindowCounts,
    /// What to do next, and why.
    pub recommendation: Recommendation,
}

/// The rollout step the settings are at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The kill switch is on: nothing is checked.
    Killed,
    /// Global DISABLED.
    Disabled,
    /// Global LOG_ONLY: deciding, recording, refusing nobody.
    Observing,
    /// Global ENFORCED for a share of users.
    Partial,
    /// Global ENFORCED for everyone.
    Enforced,
}

/// Ownership coverage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ownership {
    /// Sessions with an owner (counted with SCAN on Redis).
    pub owned_sessions: u64,
    /// The latest `GET /v1/backfill/verify`, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify: Option<crate::records::VerifySummary>,
}

/// Audited decisions over a window, from the audit stream.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WindowCounts {
    /// The window, as asked (`24h` by default).
    pub window: String,
    /// Its start.
    pub since: Timestamp,
    /// Would-deny decisions (LOG_ONLY).
    pub would_deny: u64,
    /// Deny decisions (ENFORCED), `store_unavailable` included.
    pub deny: u64,
    /// Of those, how many were `store_unavailable` (the store, not the user).
    pub store_unavailable: u64,
    /// False when the window held more entries than one report examines.
    pub complete: bool,
}

/// Query of `GET /v1/rollout`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RolloutQuery {
    /// The window the decisions are counted over: a whole number (1-999999) of `s`, `m`,
    /// `h`, `d` or `w`, e.g. `1h`, `24h`, `7d` (default `24h`).
    #[param(schema_with = window_schema)]
    pub window: Option<String>,
}

/// The schema of `window` ([`crate::timestamp::parse_window`]).
fn window_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(format!("^{}$", crate::timestamp::WINDOW_PATTERN)))
        .examples(["24h"])
        .build()
}

/// Advance or hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Take the next step (`next`).
    Advance,
    /// Stay where you are.
    Hold,
}

/// The global settings a step leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    /// The global mode.
    pub mode: Mode,
    /// The share of users enforced (absent: everyone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce_percent: Option<u8>,
}

/// The recommendation with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Recommendation {
    /// Advance or hold.
    pub action: Action,
    /// With `advance`: the settings to `PUT /v1/enforcement` next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Step>,
    /// Why, in words an operator can act on.
    pub reasons: Vec<String>,
}

/// The latest verification's summary; one that cannot be read is left out (and logged), not
/// a failure of the whole report.
async fn last_verify(
    store: &dyn crate::store::Store,
) -> Result<Option<crate::records::VerifySummary>, crate::store::StoreError> {
    match store.last_verification().await {
        Err(crate::store::StoreError::Corrupt(why)) => {
            tracing::warn!(error = %why, "the last verification's summary is unreadable; left out of the rollout report");
            Ok(None)
        }
        other => other,
    }
}

/// The rollout report: settings, ownership coverage and a recommendation.
#[utoipa::path(get, path = "/v1/rollout", tag = "enforcement",
    params(RolloutQuery),
    responses(
        (status = 200, body = Rollout),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn get_rollout(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<RolloutQuery>,
) -> Result<Json<Rollout>, ApiError> {
    let window = query.window.unwrap_or_else(|| "24h".into());
    let back = crate::timestamp::parse_window(&window).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "window: {window:?}: write a whole number of s, m, h, d or w, e.g. 1h, 24h, 7d"
        ))
    })?;
    let back = u64::try_from(back.as_millis()).unwrap_or(u64::MAX);
    let since = Timestamp::from_unix_millis(Timestamp::now().unix_millis().saturating_sub(back));
    let summary = crate::audit::summarize(state.store.as_ref(), since).await?;
    let count = |key| summary.by_decision.get(&key).copied().unwrap_or(0);
    let decisions = WindowCounts {
        window,
        since,
        would_deny: count(AuditDecision::WouldDeny),
        deny: count(AuditDecision::Deny),
        store_unavailable: summary
            .by_reason
            .get(Reason::StoreUnavailable.as_str())
            .copied()
            .unwrap_or(0),
        complete: summary.complete,
    };
    let settings = (*state.enforcement.current()).clone();
    let history = state.enforcement.history(None, HISTORY_LOOKBACK).await?;
    let phase_since = history
        .iter()
        .find(|entry| {
            matches!(
                entry.change,
                HistoryChange::Global | HistoryChange::KillSwitch
            )
        })
        .map(|entry| entry.at);
    let owned_sessions = state.store.count_owned().await?;
    let in_phase = phase_since.map(|since| {
        Duration::from_millis(
            Timestamp::now()
                .unix_millis()
                .saturating_sub(since.unix_millis()),
        )
    });
    Ok(Json(Rollout {
        phase: phase(&settings),
        recommendation: recommend(&settings, owned_sessions, in_phase, Some(&decisions)),
        settings,
        phase_since,
        ownership: Ownership {
            owned_sessions,
            last_verify: last_verify(state.store.as_ref()).await?,
        },
        decisions,
    }))
}
