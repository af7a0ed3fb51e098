//! [`OwnershipLayer`]: a tower layer that lets a request through only if its caller may use
//! the session it names (DESIGN §7).
//!
//! It authenticates the caller (or reuses a [`Principal`] an earlier layer put in the request
//! extensions), finds the session id (path parameter, header or query parameter), asks the
//! [`Gatekeeper`] under the endpoint's mode, and either answers itself (401, 400, 403 or 503
//! as a problem document) or calls the inner service with the [`Principal`] and the
//! [`AccessDecision`] in the request extensions.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use gatehouse::{auth::Authenticator, decision::Mode, enforcement::Enforcement,
//!     gatekeeper::Gatekeeper, middleware::OwnershipLayer, store::MemoryStore};
//!
//! let store = Arc::new(MemoryStore::new(None));
//! let enforcement = Enforcement::new(store.clone(), Mode::Enforced);
//! // Until the settings are read (`enforcement.reload()`, `spawn_watch`), checks are denied
//! // with `settings_unavailable`.
//! let gatekeeper = Gatekeeper::new(store, enforcement);
//! let authenticator = Arc::new(Authenticator::Disabled);
//! let app: Router = Router::new()
//!     .route("/api/chat/sessions/{session_id}/messages", get(|| async { "messages" }))
//!     // route_layer: unknown paths stay 404 instead of being checked.
//!     .route_layer(OwnershipLayer::new(gatekeeper, authenticator, "chat.messages")
//!         .session_from_path("session_id"));
//! ```
//!
//! Attach it with `route_layer` so that it runs after routing (path parameters are known
//! then, and unknown paths stay 404). Handlers should take the session from the
//! [`AccessDecision`] extension rather than parse it again; a header or query parameter given
//! twice is refused with a 400 so the two can never disagree. The id is read with the
//! gatekeeper's [`crate::session_id::SessionIds`] policy, like at every other entry point: a
//! UUID in any common spelling is checked (and handed on) as its canonical id.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::HeaderName;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde_json::json;
use tower::{Layer, Service};

use crate::auth::{Authenticator, Principal};
use crate::decision::{Mode, Outcome, Reason, Verdict};
use crate::gatekeeper::{Check, Gatekeeper, Origin};
use crate::http::{ApiError, RequestMeta};
use crate::records::Source;
use crate::session_id::SessionId;

/// Where the layer finds the session id.
#[derive(Debug, Clone)]
pub enum SessionIdSource {
    /// A path parameter of the matched route, e.g. `session_id` in `/chats/{session_id}`.
    Path(String),
    /// A request header.
    Header(HeaderName),
    /// A query parameter.
    Query(String),
}

/// What the layer decided, for the inner service (request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessDecision {
    /// The session checked.
    pub session: SessionId,
    /// The decision (allow or would_deny: denials never reach the inner service).
    pub outcome: Outcome,
    /// The owner, when looked up.
    pub owner: Option<String>,
    /// The owner lookup failed (an admin was let through without it): `owner` is unknown.
    pub lookup_failed: bool,
}

struct Settings {
    gatekeeper: Gatekeeper,
    authenticator: Arc<Authenticator>,
    endpoint: String,
    source: SessionIdSource,
    pinned: Option<Mode>,
}

/// Enforces session ownership on the routes it wraps. Cheap to clone.
#[derive(Clone)]
pub struct OwnershipLayer {
    settings: Arc<Settings>,
}

impl OwnershipLayer {
    /// A layer for the endpoint named `endpoint` (its mode is looked up under that name),
    /// reading the session id from the path parameter `session_id` unless told otherwise.
    pub fn new(
        gatekeeper: Gatekeeper,
        authenticator: Arc<Authenticator>,
        endpoint: impl Into<String>,
    ) -> Self {
        Self {
            settings: Arc::new(Settings {
                gatekeeper,
                authenticator,
                endpoint: endpoint.into(),
                source: SessionIdSource::Path("session_id".into()),
                pinned: None,
            }),
        }
    }

    fn with(self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Arc::try_unwrap(self.settings).unwrap_or_else(|shared| Settings {
            gatekeeper: shared.gatekeeper.clone(),
            authenticator: Arc::clone(&shared.authenticator),
            endpoint: shared.endpoint.clone(),
            source: shared.source.clone(),
            pinned: shared.pinned,
        });
        change(&mut settings);
        Self {
            settings: Arc::new(settings),
        }
    }

    /// Read the session id from the path parameter `name`.
    pub fn session_from_path(self, name: impl Into<String>) -> Self {
        let source = SessionIdSource::Path(name.into());
        self.with(|s| s.source = source)
    }

    /// Read the session id from the header `name`.
    pub fn session_from_header(self, name: HeaderName) -> Self {
        self.with(|s| s.source = SessionIdSource::Header(name))
    }

    /// Read the session id from the query parameter `name`.
    pub fn session_from_query(self, name: impl Into<String>) -> Self {
        let source = SessionIdSource::Query(name.into());
        self.with(|s| s.source = source)
    }

    /// Apply `mode` whatever the settings say (kill switch included). For routes that must
    /// never be opened by a rollout switch, such as gatehouse's own session API.
    pub fn pin_mode(self, mode: Mode) -> Self {
        self.with(|s| s.pinned = Some(mode))
    }
}

impl<S> Layer<S> for OwnershipLayer {
    type Service = OwnershipService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OwnershipService {
            inner,
            settings: Arc::clone(&self.settings),
        }
    }
}

/// The service produced by [`OwnershipLayer`].
#[derive(Clone)]
pub struct OwnershipService<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> Service<Request> for OwnershipService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone is not ready yet; keep the ready one for this call (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = Arc::clone(&self.settings);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            match settings.admit(&mut parts).await {
                Ok((principal, decision)) => {
                    parts.extensions.insert(principal);
                    parts.extensions.insert(decision);
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(response) => Ok(response),
            }
        })
    }
}

impl Settings {
    async fn admit(&self, parts: &mut Parts) -> Result<(Principal, AccessDecision), Response> {
        let principal = match parts.extensions.get::<Principal>() {
            Some(p) => p.clone(),
            None => self
                .authenticator
                .authenticate(&parts.headers)
                .await
                .map_err(|e| ApiError::from(e).into_response())?,
        };
        let session = self.session_id(parts).await?;
        let origin = Origin {
            method: Some(parts.method.as_str().to_owned()),
            path: Some(parts.uri.path().to_owned()),
            ..RequestMeta::of(parts).origin(Source::Middleware)
        };
        let check = Check {
            user: &principal.sub,
            is_admin: principal.is_admin(),
            session: &session,
            endpoint: &self.endpoint,
            origin: &origin,
        };
        let result = self.gatekeeper.check(&check, self.pinned).await;
        if result.outcome.verdict == Verdict::Deny {
            return Err(denied(&session, result.outcome));
        }
        Ok((
            principal,
            AccessDecision {
                session,
                outcome: result.outcome,
                owner: result.owner,
                lookup_failed: result.lookup_failed,
            },
        ))
    }

    async fn session_id(&self, parts: &mut Parts) -> Result<SessionId, Response> {
        let raw = match &self.source {
            SessionIdSource::Path(name) => RawPathParams::from_request_parts(parts, &())
                .await
                .ok()
                .and_then(|params| {
                    params
                        .iter()
                        .find(|(key, _)| key == name)
                        .map(|(_, value)| value.to_owned())
                }),
            SessionIdSource::Header(name) => {
                let mut values = parts.headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (Some(value), None) => value.to_str().ok().map(str::to_owned),
                    (Some(_), Some(_)) => return Err(ambiguous(&self.source)),
                    _ => None,
                }
            }
            SessionIdSource::Query(name) => {
                let query = parts.uri.query().unwrap_or("");
                let mut values = form_urlencoded::parse(query.as_bytes())
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned());
                match (values.next(), values.next()) {
                    (Some(value), None) => Some(value),
                    (Some(_), Some(_)) => return Err(ambiguous(&self.source)),
                    _ => None,
                }
            }
        };
        let raw = raw.ok_or_else(|| {
            ApiError::InvalidRequest(format!("no session id in the request ({:?})", self.source))
                .into_response()
        })?;
        self.gatekeeper
            .session_ids()
            .parse(&raw)
            .map_err(|e| ApiError::from(e).into_response())
    }
}

/// A session id given twice: the check and the handler could disagree on which one counts.
fn ambiguous(source: &SessionIdSource) -> Response {
    ApiError::InvalidRequest(format!(
        "the session id is given more than once ({source:?})"
    ))
    .into_response()
}

/// The answer to a denied check (403 `access-denied`, or 503 `store-unavailable`).
pub(crate) fn denied(session: &SessionId, outcome: Outcome) -> Response {
    let detail = match outcome.reason {
        Reason::StoreUnavailable => "ownership cannot be checked right now; try again".to_owned(),
        Reason::SettingsUnavailable => {
            "the enforcement settings have not been read yet; try again".to_owned()
        }
        _ => format!("you may not use session {session}"),
    };
    let mut extensions = serde_json::Map::new();
    extensions.insert("decision".into(), json!(outcome.verdict));
    extensions.insert("reason".into(), json!(outcome.reason));
    extensions.insert("mode".into(), json!(outcome.mode));
    extensions.insert("session_id".into(), json!(session));
    ApiError::Denied {
        reason: outcome.reason,
        detail,
        extensions,
    }
    .into_response()
}

#[cfg(test)]
mod tests;
