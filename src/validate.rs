//! `POST /v1/validate` and `/v1/validate/batch`: ownership checks for backend services.
//!
//! Status codes: 200 when the request may go ahead (allow or would_deny) and whenever a service
//! asks about another user (the answer is in the body); 403 when the caller is the user and is
//! denied; 503 when the store is unreachable under ENFORCED (`store_unavailable`: fail
//! closed). The body is the decision in every case, so a caller can log the reason.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Principal;
use crate::decision::{Mode, Reason, Verdict};
use crate::gatekeeper::{Check, CheckResult, DEFAULT_ENDPOINT, Origin};
use crate::http::{ApiError, AppState, JsonBody, Problem, RequestMeta};
use crate::records::Source;
use crate::session_id::{Name, SessionId, SessionIds, check_name};

/// Most checks in one batch.
pub const MAX_BATCH: usize = 100;

/// The validate routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(validate))
        .routes(routes!(validate_batch))
}

/// One check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The session: 1-256 characters of `[A-Za-z0-9._:-]`; a UUID in any common spelling
    /// (upper case, no hyphens, `{...}`, `urn:uuid:`) is the same session.
    #[schema(value_type = SessionId)]
    pub session_id: String,
    /// The user to check; defaults to the caller. Naming another user needs the scope
    /// `gatehouse:validate` (or admin).
    #[serde(default)]
    #[schema(value_type = Option<Name>)]
    pub user: Option<String>,
    /// The endpoint name whose mode applies (default `default`).
    #[serde(default)]
    #[schema(value_type = Option<Name>)]
    pub endpoint: Option<String>,
}

/// The decision.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ValidateResponse {
    /// Whether the request may go ahead (true for allow and would_deny).
    pub allowed: bool,
    /// allow, deny or would_deny.
    pub decision: Verdict,
    /// Why.
    pub reason: Reason,
    /// The mode applied.
    pub mode: Mode,
    /// The session's owner, when it was looked up, the session has one, and the caller may
    /// know it (the owner themself, an admin, or a service with `gatehouse:validate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The session checked, as gatehouse spells it (a UUID lower case with hyphens, unless
    /// `GATEHOUSE_SESSION_IDS=exact`).
    pub session_id: String,
    /// The user checked.
    pub user: String,
    /// The endpoint whose mode applied.
    pub endpoint: String,
}

/// Body of `POST /v1/validate/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to 100 checks.
    #[schema(max_items = 100)]
    pub checks: Vec<ValidateRequest>,
}

/// Answer of `POST /v1/validate/batch`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// One decision per check, in order.
    pub results: Vec<ValidateResponse>,
}

/// A check whose input is valid and whose caller may ask it.
struct Accepted {
    session: SessionId,
    user: String,
    is_admin: bool,
    endpoint: String,
    is_self: bool,
    /// Whether the caller may learn who owns the session (admins and services may; a user
    /// only learns it about their own sessions).
    may_see_owner: bool,
}

fn accept(
    ids: SessionIds,
    principal: &Principal,
    request: ValidateRequest,
) -> Result<Accepted, ApiError> {
    let session = ids.parse(&request.session_id)?;
    let endpoint = request.endpoint.unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    check_name("endpoint", &endpoint)?;
    let user = match request.user {
        Some(user) => {
            check_name("user", &user)?;
            user
        }
        None => principal.sub.clone(),
    };
    let is_self = user == principal.sub;
    if !is_self && !principal.may_check_others() {
        return Err(ApiError::Forbidden(format!(
            "naming another user needs the scope {}",
            crate::auth::SCOPE_VALIDATE
        )));
    }
    Ok(Accepted {
        may_see_owner: principal.may_check_others(),
        session,
        // Admin rights are the caller's: a service naming a user cannot vouch for theirs.
        is_admin: is_self && principal.is_admin(),
        user,
        endpoint,
        is_self,
    })
}

impl Accepted {
    fn check<'a>(&'a self, origin: &'a Origin) -> Check<'a> {
        Check {
            user: &self.user,
            is_admin: self.is_admin,
            session: &self.session,
            endpoint: &self.endpoint,
            origin,
        }
    }

    fn respond(self, result: CheckResult) -> ValidateResponse {
        ValidateResponse {
            allowed: result.outcome.verdict.allowed(),
            decision: result.outcome.verdict,
            reason: result.outcome.reason,
            mode: result.outcome.mode,
            owner: result
                .owner
                .filter(|owner| self.may_see_owner || *owner == self.user),
            session_id: self.session.as_str().to_owned(),
            user: self.user,
            endpoint: self.endpoint,
        }
    }
}

/// May the user use the session?
#[utoipa::path(post, path = "/v1/validate", tag = "validate",
    request_body = ValidateRequest,
    responses(
        (status = 200, description = "Allowed, or a service's check of another user", body = ValidateResponse),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "The caller is the user and is denied (body: the decision), or may not name another user (problem)", body = ValidateResponse),
        (status = 503, description = "Store unreachable under ENFORCED, or settings not read yet (`settings_unavailable`)", body = ValidateResponse),
    ),
    security(("bearer" = [])))]
async fn validate(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    JsonBody(request): JsonBody<ValidateRequest>,
) -> Result<(StatusCode, Json<ValidateResponse>), ApiError> {
    let accepted = accept(state.gatekeeper.session_ids(), &principal, request)?;
    let origin = meta.origin(Source::Validate);
    let result = state.gatekeeper.check(&accepted.check(&origin), None).await;
    let status = match (result.outcome.verdict, result.outcome.reason) {
        (Verdict::Deny, reason) if reason.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        (Verdict::Deny, _) if accepted.is_self => StatusCode::FORBIDDEN,
        _ => StatusCode::OK,
    };
    Ok((status, Json(accepted.respond(result))))
}

/// Several checks in one call (up to 100), answered in order.
///
/// Always 200 when the input is valid: each result carries its own decision, including
/// `store_unavailable` denials. Invalid input anywhere rejects the whole batch.
#[utoipa::path(post, path = "/v1/validate/batch", tag = "validate",
    request_body = BatchRequest,
    responses(
        (status = 200, body = BatchResponse),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem),
    ),
    security(("bearer" = [])))]
async fn validate_batch(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    JsonBody(request): JsonBody<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    if request.checks.len() > MAX_BATCH {
        return Err(ApiError::InvalidRequest(format!(
            "at most {MAX_BATCH} checks per batch, got {}",
            request.checks.len()
        )));
    }
    let accepted = request
        .checks
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            accept(state.gatekeeper.session_ids(), &principal, r).map_err(|e| match e {
                ApiError::InvalidId(id) => ApiError::InvalidRequest(format!("checks[{i}]: {id}")),
                ApiError::Forbidden(why) => ApiError::Forbidden(format!("checks[{i}]: {why}")),
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let origin = meta.origin(Source::Validate);
    let checks: Vec<Check<'_>> = accepted.iter().map(|a| a.check(&origin)).collect();
    let results = state.gatekeeper.check_many(&checks).await;
    drop(checks);
    let results = accepted
        .into_iter()
        .zip(results)
        .map(|(a, r)| a.respond(r))
        .collect();
    Ok(Json(BatchResponse { results }))
}
