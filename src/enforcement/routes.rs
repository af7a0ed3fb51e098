//! `/v1/enforcement`: read and change the enforcement settings (admin only).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ChangeError, EnforcementSettings, GlobalChange, HistoryEntry};
use crate::auth::Principal;
use crate::decision::Mode;
use crate::http::{ApiError, AppState, JsonBody, Problem, Query, require_admin};

/// The enforcement routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_enforcement, put_enforcement))
        .routes(routes!(get_history))
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::InvalidReason => ApiError::InvalidRequest(e.to_string()),
            ChangeError::VersionConflict { current, .. } => ApiError::conflict(
                "version-conflict",
                e.to_string(),
                json!({ "current_version": current }),
            ),
            ChangeError::Store(e) => e.into(),
        }
    }
}

/// Body of `PUT /v1/enforcement`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutEnforcement {
    /// The new global mode.
    pub mode: Mode,
    /// Why the change is made (required, recorded in the history).
    pub reason: String,
    /// Apply only if the settings are still at this version (409 otherwise).
    #[serde(default)]
    pub expected_version: Option<u64>,
}

/// The current enforcement settings.
#[utoipa::path(get, path = "/v1/enforcement", tag = "enforcement",
    responses(
        (status = 200, body = EnforcementSettings),
        (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = [])))]
async fn get_enforcement(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<EnforcementSettings>, ApiError> {
    require_admin(&principal)?;
    Ok(Json((*state.enforcement.current()).clone()))
}

/// Changes the global mode. Setting the mode already in force is a no-op (same version).
#[utoipa::path(put, path = "/v1/enforcement", tag = "enforcement",
    request_body = PutEnforcement,
    responses(
        (status = 200, description = "The settings now in force", body = EnforcementSettings),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem),
        (status = 409, description = "`expected_version` is stale", body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn put_enforcement(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<PutEnforcement>,
) -> Result<Json<EnforcementSettings>, ApiError> {
    require_admin(&principal)?;
    let change = GlobalChange {
        mode: body.mode,
        reason: body.reason,
        expected_version: body.expected_version,
    };
    Ok(Json(
        state.enforcement.set_global(&principal.sub, change).await?,
    ))
}

/// Query of `GET /v1/enforcement/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Entries at most (1-1000, default 100).
    pub limit: Option<usize>,
    /// Only entries with a version below this one (for paging: the last version seen).
    pub before: Option<u64>,
}

/// A page of the change history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    /// Entries, newest first.
    pub entries: Vec<HistoryEntry>,
}

/// The change history, newest first.
#[utoipa::path(get, path = "/v1/enforcement/history", tag = "enforcement",
    params(HistoryQuery),
    responses(
        (status = 200, body = HistoryPage),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn get_history(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    require_admin(&principal)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidRequest("limit must be 1-1000".into()));
    }
    let entries = state.enforcement.history(query.before, limit).await?;
    Ok(Json(HistoryPage { entries }))
}
