//! `/v1/enforcement`: read and change the enforcement settings (admin only).
//!
//! Every change needs a `reason`, may carry an `expected_version` (409 when stale), bumps the
//! version, is recorded in the history and announced to every instance. A change that changes
//! nothing returns the current settings and records nothing.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{Change, ChangeError, EnforcementSettings, HistoryEntry};
use crate::auth::Principal;
use crate::decision::Mode;
use crate::http::{
    Admin, ApiError, AppState, JsonBody, PageLimit, Path, Problem, Query, RequestMeta, integer,
};
use crate::records::AuditEvent;
use crate::session_id::Name;

/// The enforcement routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_enforcement, put_enforcement))
        .routes(routes!(put_endpoint, delete_endpoint))
        .routes(routes!(kill_switch_on, kill_switch_off))
        .routes(routes!(get_history))
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::InvalidReason | ChangeError::InvalidPercent => {
                ApiError::InvalidRequest(e.to_string())
            }
            ChangeError::InvalidEndpoint(id) => ApiError::InvalidId(id),
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
    /// With ENFORCED, enforce only for this share of users (0-100, by a stable per-user
    /// bucket); the others get LOG_ONLY. Absent or null: everyone.
    #[serde(default, deserialize_with = "integer::option_u8")]
    #[schema(minimum = 0, maximum = 100)]
    pub enforce_percent: Option<u8>,
    /// Why the change is made (required, recorded in the history; 1-1000 characters, not all
    /// whitespace, trimmed).
    #[schema(schema_with = reason_schema)]
    pub reason: String,
    /// Apply only if the settings are still at this version (409 otherwise).
    #[serde(default, deserialize_with = "integer::option_u64")]
    pub expected_version: Option<u64>,
}

/// Body of `PUT /v1/enforcement/endpoints/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutEndpoint {
    /// The endpoint's mode (overrides the global mode).
    pub mode: Mode,
    /// Why (required; 1-1000 characters, not all whitespace, trimmed).
    #[schema(schema_with = reason_schema)]
    pub reason: String,
    /// Apply only if the settings are still at this version.
    #[serde(default, deserialize_with = "integer::option_u64")]
    pub expected_version: Option<u64>,
}

/// Body of the changes that need only a reason (removing an override, the kill switch).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reasoned {
    /// Why (required; 1-1000 characters, not all whitespace, trimmed).
    #[schema(schema_with = reason_schema)]
    pub reason: String,
    /// Apply only if the settings are still at this version.
    #[serde(default, deserialize_with = "integer::option_u64")]
    pub expected_version: Option<u64>,
}

/// The schema of a change's reason ([`Enforcement::change`](super::Enforcement::change)
/// checks it).
fn reason_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(super::MAX_REASON_LEN))
        .pattern(Some(crate::session_id::schema::not_blank_pattern()))
        .description(Some(format!(
            "Why the change is made (recorded in the history): 1-{} characters, not all \
             whitespace; stored trimmed.",
            super::MAX_REASON_LEN
        )))
        .build()
}

async fn make_change(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    change: Change,
    reason: &str,
    expected_version: Option<u64>,
) -> Result<Json<EnforcementSettings>, ApiError> {
    let (settings, entry) = state
        .enforcement
        .change(&principal.sub, change, reason, expected_version)
        .await?;
    if let Some(entry) = entry {
        state.audit.record(change_event(state, meta, &entry));
    }
    Ok(Json(settings))
}

/// The audit event of a recorded settings change.
fn change_event(state: &AppState, meta: &RequestMeta, entry: &HistoryEntry) -> AuditEvent {
    AuditEvent {
        request_id: meta.request_id.clone(),
        client_ip: meta.client_ip.map(|ip| ip.to_string()),
        ..entry.audit_event(state.audit.instance())
    }
}

/// The enforcement settings in force on this instance (503 while none are known: not read
/// from the store yet, and no snapshot).
#[utoipa::path(get, path = "/v1/enforcement", tag = "enforcement",
    responses(
        (status = 200, body = EnforcementSettings),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 503, description = "The settings are not known yet", body = Problem),
    ),
    security(("bearer" = [])))]
async fn get_enforcement(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<EnforcementSettings>, ApiError> {
    if state.enforcement.in_force().is_none() {
        // Maybe the store is back: do not wait for the next refresh.
        let _ = state.enforcement.reload().await;
    }
    let settings = state.enforcement.in_force().ok_or_else(|| {
        ApiError::StoreUnavailable("the enforcement settings have not been read yet".into())
    })?;
    Ok(Json((*settings).clone()))
}

/// Sets the global mode and partial-rollout percentage.
#[utoipa::path(put, path = "/v1/enforcement", tag = "enforcement",
    request_body = PutEnforcement,
    responses(
        (status = 200, description = "The settings now in force", body = EnforcementSettings),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem),
        (status = 409, description = "`expected_version` is stale", body = Problem),
        (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = [])))]
async fn put_enforcement(
    State(state): State<AppState>,
    Admin(principal): Admin,
    meta: RequestMeta,
    JsonBody(body): JsonBody<PutEnforcement>,
) -> Result<Json<EnforcementSettings>, ApiError> {
    let change = Change::Global {
        mode: body.mode,
        enforce_percent: body.enforce_percent,
    };
    make_change(
        &state,
        &principal,
        &meta,
        change,
        &body.reason,
        body.expected_version,
    )
    .await
}

/// Overrides the mode of one endpoint.
#[utoipa::path(put, path = "/v1/enforcement/endpoints/{name}", tag = "enforcement",
    params(("name" = Name, Path, description = "The endpoint name")),
    request_body = PutEndpoint,
    responses(
        (status = 200, body = EnforcementSettings),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = [])))]
async fn put_endpoint(
    State(state): State<AppState>,
    Admin(principal): Admin,
    meta: RequestMeta,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PutEndpoint>,
) -> Result<Json<EnforcementSettings>, ApiError> {
    let change = Change::Endpoint {
        name,
        mode: Some(body.mode),
    };
    make_change(
        &state,
        &principal,
        &meta,
        change,
        &body.reason,
        body.expected_version,
    )
    .await
}

/// Removes an endpoint's override: it follows the global mode again.
#[utoipa::path(delete, path = "/v1/enforcement/endpoints/{name}", tag = "enforcement",
    params(("name" = Name, Path, description = "The endpoint name")),
    request_body = Reasoned,
    responses(
        (status = 200, body = EnforcementSettings),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = [])))]
async fn delete_endpoint(
    State(state): State<AppState>,
    Admin(principal): Admin,
    meta: RequestMeta,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Reasoned>,
) -> Result<Json<EnforcementSettings>, ApiError> {
    let change = Change::Endpoint { name, mode: None };
    make_change(
        &state,
        &principal,
        &meta,
        change,
        &body.reason,
        body.expected_version,
    )
    .await
}

/// Turns the kill switch on: every endpoint resolves to DISABLED until it is turned off.
#[utoipa::path(post, path = "/v1/enforcement/kill-switch", tag = "enforcement",
    request_body = Reasoned,
    responses(
        (status = 200, body = EnforcementSettings),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = [])))]
async fn kill_switch_on(
    State(state): State<AppState>,
    Admin(principal): Admin,
    meta: RequestMeta,
    JsonBody(body): JsonBody<Reasoned>,
) -> Result<Json<EnforcementSettings>, ApiError> {
    let change = Change::KillSwitch(true);
    make_change(
        &state,
        &principal,
        &meta,
        change,
        &body.reason,
        body.expected_version,
    )
    .await
}

/// Turns the kill switch off: the configured modes apply again.
#[utoipa::path(delete, path = "/v1/enforcement/kill-switch", tag = "enforcement",
    request_body = Reasoned,
    responses(
        (status = 200, body = EnforcementSettings),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = [])))]
async fn kill_switch_off(
    State(state): State<AppState>,
    Admin(principal): Admin,
    meta: RequestMeta,
    JsonBody(body): JsonBody<Reasoned>,
) -> Result<Json<EnforcementSettings>, ApiError> {
    let change = Change::KillSwitch(false);
    make_change(
        &state,
        &principal,
        &meta,
        change,
        &body.reason,
        body.expected_version,
    )
    .await
}

/// Query of `GET /v1/enforcement/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Entries at most (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
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
    _admin: Admin,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let limit = PageLimit::read(query.limit)?.get();
    if query
        .before
        .is_some_and(|before| before > integer::INT64_MAX)
    {
        return Err(ApiError::InvalidRequest(format!(
            "before must be 0-{}",
            integer::INT64_MAX
        )));
    }
    let entries = state.enforcement.history(query.before, limit).await?;
    Ok(Json(HistoryPage { entries }))
}
