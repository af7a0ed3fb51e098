//! `GET /v1/stats/decisions` (admin): the time series of [`super::series`].

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::series::{DecisionSeries, Plan, assemble};
use crate::audit::{parse_since, since_schema};
use crate::http::{Admin, ApiError, AppState, Problem, Query};
use crate::session_id::{Name, check_name};
use crate::timestamp::Timestamp;

/// The stats routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_decisions))
}

/// Query of `GET /v1/stats/decisions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DecisionsQuery {
    /// Start: an RFC 3339 time in UTC (`2026-11-23T10:00:00Z`) or a window back from now
    /// (`1h`, `24h`, `7d`; default `1h`). Rounded down to the step.
    #[param(schema_with = since_schema)]
    pub since: Option<String>,
    /// End, written like `since` (default: now). Rounded up to the step.
    #[param(schema_with = since_schema)]
    pub until: Option<String>,
    /// Bucket width: a whole number of minutes written as a window (`1m`, `15m`, `1h`, `1d`;
    /// default `1m`). Whole hours read the hour buckets, kept longer. At most 1,440 buckets;
    /// a step of minutes covers at most two days.
    #[param(schema_with = step_schema)]
    pub step: Option<String>,
    /// Only this endpoint.
    #[param(value_type = Option<Name>)]
    pub endpoint: Option<String>,
}

/// A window of whole minutes: [`crate::timestamp::WINDOW_PATTERN`] without seconds.
const STEP_PATTERN: &str = "^[1-9][0-9]{0,5}[mhdw]$";

/// The schema of `step`: a window of whole minutes.
fn step_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(STEP_PATTERN.to_owned()))
        .examples(["1m", "15m", "1h"])
        .build()
}

/// Every decision (allow too) counted per endpoint, decision and reason in time buckets,
/// merged across instances. Counts reach the store about once a second
/// (`GATEHOUSE_STATS_FLUSH`), so the newest bucket lags by that much.
///
/// 400 when `since` is not before `until`, when the range holds more than 1,440 buckets of the
/// step, or when it reads more than 2,880 stored buckets (two days of minutes, 120 days of
/// hours): rules across the parameters that their schemas cannot state.
#[utoipa::path(get, path = "/v1/stats/decisions", tag = "rollout",
    params(DecisionsQuery),
    responses(
        (status = 200, body = DecisionSeries),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn get_decisions(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<DecisionsQuery>,
) -> Result<Json<DecisionSeries>, ApiError> {
    let invalid = |what: &str, why: String| ApiError::InvalidRequest(format!("{what}: {why}"));
    let since =
        parse_since(query.since.as_deref().unwrap_or("1h")).map_err(|w| invalid("since", w))?;
    let until = match query.until.as_deref() {
        Some(raw) => parse_since(raw).map_err(|w| invalid("until", w))?,
        None => Timestamp::now(),
    };
    let step_raw = query.step.as_deref().unwrap_or("1m");
    let step = crate::timestamp::parse_window(step_raw)
        .filter(|_| !step_raw.ends_with('s'))
        .ok_or_else(|| {
            invalid(
                "step",
                format!("{step_raw:?}: write a whole number of minutes, e.g. 1m, 15m, 1h"),
            )
        })?;
    if let Some(endpoint) = &query.endpoint {
        check_name("endpoint", endpoint).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    }
    let plan = Plan::new(
        since.unix_millis() / 1000,
        until.unix_millis() / 1000,
        step.as_secs(),
    )
    .map_err(ApiError::InvalidRequest)?;
    let read = state
        .store
        .decision_buckets(plan.resolution, plan.start, plan.reads())
        .await?;
    Ok(Json(assemble(
        &plan,
        read,
        query.endpoint.as_deref(),
        Timestamp::now().unix_millis() / 1000,
        state.stats_retention,
    )))
}
