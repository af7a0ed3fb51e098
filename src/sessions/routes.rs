//! The handlers of the session API (module docs in [`super`]).

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ClaimRefused, SESSIONS_ENDPOINT};
use crate::auth::Principal;
use crate::decision::Mode;
use crate::gatekeeper::{Check, Origin};
use crate::http::{
    Admin, ApiError, AppState, JsonBody, OptionalJsonBody, PageLimit, Path, Problem, Query,
    RequestMeta,
};
use crate::middleware::{AccessDecision, OwnershipLayer, denied};
use crate::records::Source;
use crate::session_id::{Name, SessionId, check_name};
use crate::store::{ClaimOutcome, Expected, OwnerChange};

/// The session routes that check ownership themselves (or need none).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(claim_session))
        .routes(routes!(delete_session))
        .routes(routes!(put_owner))
        .routes(routes!(list_user_sessions))
}

/// The routes behind the ownership layer ([`guard`]): the router applies it, so that the
/// OpenAPI document is built from these without any state.
pub fn owner_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_session))
}

/// The ownership layer of [`owner_routes`], pinned to ENFORCED.
pub fn guard(state: &AppState) -> OwnershipLayer {
    OwnershipLayer::new(
        state.gatekeeper.clone(),
        state.authenticator.clone(),
        SESSIONS_ENDPOINT,
    )
    .session_from_path("session_id")
    .pin_mode(Mode::Enforced)
}

/// A refused claim is a 403 (the caller may not claim so) or a 400 (the body is incomplete).
impl From<ClaimRefused> for ApiError {
    fn from(refused: ClaimRefused) -> Self {
        match refused {
            ClaimRefused::Forbidden(why) => ApiError::Forbidden(why),
            ClaimRefused::Incomplete(why) => ApiError::InvalidRequest(why),
            ClaimRefused::InvalidUser(e) => ApiError::InvalidId(e),
        }
    }
}

/// A session and its owner.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionOwner {
    /// The session.
    pub session_id: String,
    /// Its owner.
    pub owner: String,
}

/// Body of `POST /v1/sessions/{session_id}/claim` (may be empty under `GATEHOUSE_CLAIM=self`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The user who becomes the owner. Required under `GATEHOUSE_CLAIM=service` (the default),
    /// where the caller needs the scope `gatehouse:claim`. Under `self`, absent means the
    /// caller, and naming someone else needs the scope.
    // Published as the default policy has it: required (and so the body).
    #[serde(default)]
    #[schema(value_type = Name, required = true)]
    pub user: Option<String>,
}

/// Makes a user the owner of a session that has none.
///
/// Under `GATEHOUSE_CLAIM=service` (the default) only a caller with the scope
/// `gatehouse:claim` claims, naming the user; others get 403. Under `self` the caller claims
/// for themselves. 201 when the user became the owner, 200 when it already was, 409 when
/// another user owns it. Of concurrent claims exactly one gets 201. The answer names the
/// session as gatehouse spells it (a UUID lower case with hyphens).
#[utoipa::path(post, path = "/v1/sessions/{session_id}/claim", tag = "sessions",
    params(("session_id" = SessionId, Path, description = "The session")),
    request_body(content = ClaimRequest, description = "Required under `GATEHOUSE_CLAIM=service` (the default); under `self` it may be left out (an empty body), and so may `user`"),
    responses(
        (status = 201, description = "Claimed", body = SessionOwner),
        (status = 200, description = "Already the user's", body = SessionOwner),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "The caller may not claim (the detail says what is needed)", body = Problem),
        (status = 409, description = "Owned by another user", body = Problem),
        (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = [])))]
async fn claim_session(
    State(state): State<AppState>,
    principal: Principal,
    Path(session_id): Path<String>,
    OptionalJsonBody(request): OptionalJsonBody<ClaimRequest>,
) -> Result<(StatusCode, Json<SessionOwner>), ApiError> {
    let request = request.unwrap_or_default();
    let owner = state.claim.owner_for(&principal, request.user)?;
    let session = state.session_ids().parse(&session_id)?;
    let status = match state.store.claim(&session, &owner).await? {
        ClaimOutcome::Claimed => StatusCode::CREATED,
        ClaimOutcome::AlreadyOwned => StatusCode::OK,
        ClaimOutcome::OwnedByOther(_) => {
            return Err(ApiError::conflict(
                "session-owned",
                format!("session {session} is owned by another user"),
                json!({ "session_id": session }),
            ));
        }
    };
    if status == StatusCode::CREATED {
        tracing::info!(actor = %principal.sub, session_id = %session, owner = %owner, "session claimed");
    }
    Ok((
        status,
        Json(SessionOwner {
            session_id: session.as_str().to_owned(),
            owner,
        }),
    ))
}

/// Who owns the session (its owner or an admin; 403 for anyone else).
#[utoipa::path(get, path = "/v1/sessions/{session_id}", tag = "sessions",
    params(("session_id" = SessionId, Path, description = "The session")),
    responses(
        (status = 200, body = SessionOwner),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem),
        (status = 404, description = "No owner (admins only; others get 403)", body = Problem),
        (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn get_session(
    Extension(access): Extension<AccessDecision>,
) -> Result<Json<SessionOwner>, ApiError> {
    if access.lookup_failed {
        return Err(ApiError::StoreUnavailable("owner lookup failed".into()));
    }
    match access.owner {
        Some(owner) => Ok(Json(SessionOwner {
            session_id: access.session.as_str().to_owned(),
            owner,
        })),
        None => Err(ApiError::NotFound(format!(
            "session {} has no owner",
            access.session
        ))),
    }
}

/// Releases the session (its owner or an admin): it has no owner afterwards.
///
/// 204 also when the session already had no owner (a release repeated after it was applied
/// answers like the first one); 403 when another user owns it.
#[utoipa::path(delete, path = "/v1/sessions/{session_id}", tag = "sessions",
    params(("session_id" = SessionId, Path, description = "The session")),
    responses(
        (status = 204, description = "Released, or it had no owner"),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "Another user owns the session", body = Problem),
        (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = [])))]
async fn delete_session(
    State(state): State<AppState>,
    principal: Principal,
    Path(session_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    meta: RequestMeta,
) -> Result<StatusCode, Response> {
    let session = state
        .session_ids()
        .parse(&session_id)
        .map_err(|e| ApiError::from(e).into_response())?;
    // Admins release whatever is there; anyone else only what is theirs, checked in the same
    // atomic step as the release.
    let expected = if principal.is_admin() {
        Expected::Any
    } else {
        Expected::Owner(principal.sub.clone())
    };
    let change = state
        .store
        .release(&session, &expected)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    // The compare-and-delete read the owner: the check is decided (counted, audited) from it,
    // as the ownership layer would have decided it. A release of a session that already had
    // no owner decides nothing: it changed nothing, and answers as the release before it did.
    let (owner, released) = match change {
        OwnerChange::Done { previous } => (previous, true),
        OwnerChange::Mismatch { actual: None } => return Ok(StatusCode::NO_CONTENT),
        OwnerChange::Mismatch { actual } => (actual, false),
    };
    let origin = Origin {
        method: Some("DELETE".into()),
        path: Some(uri.path().to_owned()),
        ..meta.origin(Source::Middleware)
    };
    let check = Check {
        user: &principal.sub,
        is_admin: principal.is_admin(),
        session: &session,
        endpoint: SESSIONS_ENDPOINT,
        origin: &origin,
    };
    let result = state
        .gatekeeper
        .conclude(&check, Mode::Enforced, Some(Ok(owner)));
    if released {
        Ok(StatusCode::NO_CONTENT)
    } else {
        // Another user's: the decision is a denial (a refusal whatever it says).
        Err(denied(&session, result.outcome))
    }
}

/// Body of `PUT /v1/sessions/{session_id}/owner`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutOwner {
    /// The new owner.
    #[schema(value_type = Name)]
    pub owner: String,
    /// Transfer only if this is the current owner (compare-and-set; 409 otherwise).
    #[serde(default)]
    #[schema(value_type = Option<Name>)]
    pub expected_owner: Option<String>,
}

/// The result of a transfer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OwnerTransferred {
    /// The session.
    pub session_id: String,
    /// Its owner now.
    pub owner: String,
    /// Its owner before (absent: it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_owner: Option<String>,
}

/// Sets the owner of a session (admin or `gatehouse:admin`).
///
/// Idempotent: when the session already has the requested owner the answer is 200 (with
/// `previous_owner` equal to `owner`) even if `expected_owner` no longer matches, so a
/// transfer repeated after it was applied succeeds instead of conflicting.
#[utoipa::path(put, path = "/v1/sessions/{session_id}/owner", tag = "sessions",
    params(("session_id" = SessionId, Path, description = "The session")),
    request_body = PutOwner,
    responses(
        (status = 200, body = OwnerTransferred),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem),
        (status = 409, description = "`expected_owner` is not the owner (`current_owner` says who is)", body = Problem),
        (status = 503, body = Problem), (status = 504, body = Problem),
    ),
    security(("bearer" = [])))]
async fn put_owner(
    State(state): State<AppState>,
    Admin(principal): Admin,
    Path(session_id): Path<String>,
    JsonBody(body): JsonBody<PutOwner>,
) -> Result<Json<OwnerTransferred>, ApiError> {
    let session = state.session_ids().parse(&session_id)?;
    check_name("owner", &body.owner)?;
    let expected = match body.expected_owner {
        Some(owner) => {
            check_name("expected_owner", &owner)?;
            Expected::Owner(owner)
        }
        None => Expected::Any,
    };
    match state
        .store
        .set_owner(&session, &body.owner, &expected)
        .await?
    {
        OwnerChange::Done { previous } => {
            tracing::info!(actor = %principal.sub, session_id = %session, owner = %body.owner, previous = previous.as_deref(), "session owner set");
            Ok(Json(OwnerTransferred {
                session_id: session.as_str().to_owned(),
                owner: body.owner,
                previous_owner: previous,
            }))
        }
        // Already done (a retry after an unknown outcome, or someone else got there first):
        // the session has the requested owner, which is what the caller asked for.
        OwnerChange::Mismatch {
            actual: Some(actual),
        } if actual == body.owner => Ok(Json(OwnerTransferred {
            session_id: session.as_str().to_owned(),
            previous_owner: Some(actual),
            owner: body.owner,
        })),
        OwnerChange::Mismatch { actual } => Err(ApiError::conflict(
            "owner-mismatch",
            "expected_owner is not the session's owner; nothing changed",
            json!({ "session_id": session, "current_owner": actual }),
        )),
    }
}

/// Query of `GET /v1/users/{user}/sessions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Sessions per page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A page of a user's sessions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserSessions {
    /// The user.
    pub user: String,
    /// Session ids (in no particular order).
    pub sessions: Vec<String>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The sessions a user owns (the user or an admin).
#[utoipa::path(get, path = "/v1/users/{user}/sessions", tag = "sessions",
    params(("user" = Name, Path, description = "The user"), PageQuery),
    responses(
        (status = 200, body = UserSessions),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn list_user_sessions(
    State(state): State<AppState>,
    principal: Principal,
    Path(user): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<UserSessions>, ApiError> {
    check_name("user", &user)?;
    if user != principal.sub && !principal.may_administer() {
        return Err(ApiError::Forbidden(
            "only the user or an admin may list a user's sessions".into(),
        ));
    }
    let limit = PageLimit::read(query.limit)?.get();
    let page = state
        .store
        .user_sessions(&user, query.cursor.as_deref(), limit)
        .await?;
    Ok(Json(UserSessions {
        user,
        sessions: page.sessions,
        next_cursor: page.next_cursor,
    }))
}
