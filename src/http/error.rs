//! The one error type of the web layer, rendered as RFC 9457 `application/problem+json`.
//!
//! Every variant documents its status code and has a stable `type` URI
//! (`urn:gatehouse:problem:<kind>`) that clients can match on. Internal details (store errors,
//! bugs) are logged with the request's span, never sent to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::decision::Reason;
use crate::session_id::IdError;
use crate::store::StoreError;
use crate::throttle::Throttle;

/// Media type of problem responses.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, as sent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the error kind, e.g. `urn:gatehouse:problem:invalid-session-id`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for a human.
    pub detail: String,
    /// Extension members (e.g. `reason`, `current_version`).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: Map<String, Value>,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid-request`: malformed JSON, a missing or unknown field, a bad parameter.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `invalid-session-id` or `invalid-name`: an identifier outside its grammar.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// 401 `unauthorized`: no or bad credentials (with `WWW-Authenticate: Bearer`); 503
    /// `keys-unavailable` when the token's identity provider has not had its keys fetched yet
    /// ([`AuthError::Unavailable`]).
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// 403 `forbidden`: authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 403 from the admin API: authenticated, but not an admin (counted apart,
    /// `gatehouse_admin_forbidden_total`).
    #[error("this needs the admin role or the gatehouse:admin scope")]
    NotAdmin,
    /// 404 `not-found`.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method-not-allowed`.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 409 with a specific kind (`session-owned`, `owner-mismatch`, `version-conflict`).
    #[error("{detail}")]
    Conflict {
        /// The problem kind.
        kind: &'static str,
        /// What conflicted.
        detail: String,
        /// Extension members, e.g. the current version.
        extensions: Map<String, Value>,
    },
    /// A check decided against the caller: 403 `access-denied`, or 503 `store-unavailable` /
    /// `settings-unavailable` when it could not be made (the owner or the settings unknown);
    /// the decision's fields (`decision`, `reason`, `mode`, `session_id`...) are extension
    /// members. The ownership layer and forward-auth answer with it.
    #[error("{detail}")]
    Denied {
        /// Why: decides the status and the problem type.
        reason: Reason,
        /// What was denied, for a human.
        detail: String,
        /// The decision.
        extensions: Map<String, Value>,
    },
    /// 413 `payload-too-large`.
    #[error("request body too large (at most {0} bytes)")]
    PayloadTooLarge(usize),
    /// 415 `unsupported-media-type`: a body that is declared as something other than JSON.
    #[error("send JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// 503 `store-unavailable`: the store could not be reached; nothing was written. Try again.
    #[error("the ownership store is unavailable; nothing was written; try again")]
    StoreUnavailable(String),
    /// 504 `write-outcome-unknown`: a write was sent to the store and no answer came in time
    /// (or the connection dropped mid-call). It may or may not have been applied; repeating
    /// the same request is safe (claims, transfers and releases are idempotent).
    #[error(
        "the store did not confirm the write: it may or may not have been applied; \
         repeating the same request is safe"
    )]
    WriteOutcomeUnknown(String),
    /// 500 `internal`: a bug or corrupt data; details are in the log only.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 409 with extension members.
    pub fn conflict(kind: &'static str, detail: impl Into<String>, extensions: Value) -> Self {
        let extensions = match extensions {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        ApiError::Conflict {
            kind,
            detail: detail.into(),
            extensions,
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::InvalidRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Invalid request",
            ),
            ApiError::InvalidId(IdError::InvalidSessionId) => (
                StatusCode::BAD_REQUEST,
                "invalid-session-id",
                "Invalid session id",
            ),
            ApiError::InvalidId(IdError::InvalidName { .. }) => {
                (StatusCode::BAD_REQUEST, "invalid-name", "Invalid name")
            }
            ApiError::Unauthorized(AuthError::Unavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "keys-unavailable",
                "Keys unavailable",
            ),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) | ApiError::NotAdmin => {
                (StatusCode::FORBIDDEN, "forbidden", "Forbidden")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::Conflict { kind, .. } => (StatusCode::CONFLICT, kind, "Conflict"),
            ApiError::Denied { reason, .. } => match reason {
                Reason::StoreUnavailable => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Store unavailable",
                ),
                Reason::SettingsUnavailable => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "settings-unavailable",
                    "Settings unavailable",
                ),
                _ => (StatusCode::FORBIDDEN, "access-denied", "Access denied"),
            },
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Store unavailable",
            ),
            ApiError::WriteOutcomeUnknown(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "write-outcome-unknown",
                "Write outcome unknown",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => ApiError::StoreUnavailable(detail),
            StoreError::OutcomeUnknown(detail) => ApiError::WriteOutcomeUnknown(detail),
            StoreError::Corrupt(detail) => ApiError::Internal(detail),
            StoreError::InvalidCursor => ApiError::InvalidRequest(e.to_string()),
        }
    }
}

/// Builds a problem response; used by [`ApiError`] and by layers that answer on their own.
pub fn problem_response(
    status: StatusCode,
    kind: &str,
    title: &'static str,
    detail: String,
    extensions: Map<String, Value>,
) -> Response {
    let body = Problem {
        kind: format!("urn:gatehouse:problem:{kind}"),
        title,
        status: status.as_u16(),
        detail,
        extensions,
    };
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        match &self {
            ApiError::StoreUnavailable(detail) => {
                static UNAVAILABLE: Throttle = Throttle::new();
                if let Some(suppressed) = UNAVAILABLE.allow() {
                    tracing::warn!(error = %detail, suppressed, "store unavailable");
                }
            }
            ApiError::WriteOutcomeUnknown(detail) => {
                tracing::warn!(error = %detail, "store write outcome unknown");
            }
            ApiError::Unauthorized(e) => {
                // Never the token: the reason only.
                static REFUSED: Throttle = Throttle::new();
                if let Some(suppressed) = REFUSED.allow() {
                    tracing::info!(reason = e.reason(), suppressed, "authentication failed");
                }
            }
            ApiError::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            _ => {}
        }
        let detail = self.to_string();
        // What the request counter (`app::observe`) reads off the response.
        let marker = match &self {
            ApiError::Unauthorized(e) => Some(Refused::Credentials(e.reason())),
            ApiError::NotAdmin => Some(Refused::NotAdmin),
            _ => None,
        };
        let (extensions, challenge) = match self {
            ApiError::Conflict { extensions, .. } | ApiError::Denied { extensions, .. } => {
                (extensions, None)
            }
            ApiError::Unauthorized(AuthError::Missing) => {
                (Map::new(), Some("Bearer realm=\"gatehouse\"".to_owned()))
            }
            ApiError::Unauthorized(AuthError::Invalid(reason)) => (
                Map::new(),
                Some(format!(
                    "Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"{reason}\""
                )),
            ),
            _ => (Map::new(), None),
        };
        let mut response = problem_response(status, kind, title, detail, extensions);
        if let Some(marker) = marker {
            response.extensions_mut().insert(marker);
        }
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// Why a request was refused before anything else, on its response's extensions for the
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// 401: the credentials, by [`AuthError::reason`].
    Credentials(&'static str),
    /// 403 from the admin API.
    NotAdmin,
}

/// The rejection of the [`crate::auth::Principal`] extractor: a 401 problem.
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}
