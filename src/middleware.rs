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
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde_json::json;
use tower::{Layer, Service};

use crate::auth::{Authenticator, Principal};
use crate::decision::{Mode, Outcome, Reason, Verdict};
use crate::gatekeeper::{Check, Gatekeeper, Origin};
use crate::http::{ApiError, RequestMeta, problem_response};
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
    let (status, kind, title, detail) = if outcome.reason == Reason::StoreUnavailable {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Store unavailable",
            "ownership cannot be checked right now; try again".to_owned(),
        )
    } else if outcome.reason == Reason::SettingsUnavailable {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "settings-unavailable",
            "Settings unavailable",
            "the enforcement settings have not been read yet; try again".to_owned(),
        )
    } else {
        (
            StatusCode::FORBIDDEN,
            "access-denied",
            "Access denied",
            format!("you may not use session {session}"),
        )
    };
    let mut extensions = serde_json::Map::new();
    extensions.insert("decision".into(), json!(outcome.verdict));
    extensions.insert("reason".into(), json!(outcome.reason));
    extensions.insert("mode".into(), json!(outcome.mode));
    extensions.insert("session_id".into(), json!(session));
    problem_response(status, kind, title, detail, extensions)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::routing::get;
    use axum::{Extension, Router};
    use tower::ServiceExt;

    use super::*;
    use crate::auth::{JwtSettings, JwtVerifier, TokenIssuer, TokenRequest};
    use crate::enforcement::Enforcement;
    use crate::session_id::SessionIds;
    use crate::store::{MemoryStore, OwnershipStore};

    const SECRET: &[u8] = b"middleware-test-secret-0123456789";

    struct Fixture {
        gatekeeper: Gatekeeper,
        authenticator: Arc<Authenticator>,
    }

    const UUID: &str = "3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77";

    async fn fixture(mode: Mode) -> Fixture {
        fixture_with(mode, SessionIds::Canonical).await
    }

    async fn fixture_with(mode: Mode, ids: SessionIds) -> Fixture {
        let store = Arc::new(MemoryStore::new(None));
        for id in ["s1", UUID] {
            store
                .claim(&SessionId::parse(id).unwrap(), "alice")
                .await
                .unwrap();
        }
        let enforcement = Enforcement::new(store.clone(), mode);
        // A fresh store: the first read initialises it with `mode`.
        enforcement.reload().await.unwrap();
        let verifier = JwtVerifier::new(Some(SECRET), vec![], &JwtSettings::default()).unwrap();
        Fixture {
            gatekeeper: Gatekeeper::new(store, enforcement).with_session_ids(ids),
            authenticator: Arc::new(Authenticator::Jwt(verifier)),
        }
    }

    fn token(sub: &str) -> String {
        TokenIssuer::new(SECRET, &JwtSettings::default())
            .mint(&TokenRequest {
                sub: sub.into(),
                roles: vec![],
                scopes: vec![],
                ttl: Duration::from_secs(60),
            })
            .unwrap()
    }

    /// The inner handler reports what the layer let through.
    async fn inner(Extension(access): Extension<AccessDecision>) -> String {
        format!("{:?}:{:?}", access.outcome.verdict, access.owner)
    }

    async fn send(app: Router, uri: &str, user: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::builder().uri(uri);
        if let Some(user) = user {
            request = request.header("authorization", format!("Bearer {}", token(user)));
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn path_app(f: &Fixture) -> Router {
        Router::new()
            .route("/chats/{session_id}", get(inner))
            .route_layer(OwnershipLayer::new(
                f.gatekeeper.clone(),
                f.authenticator.clone(),
                "chat",
            ))
    }

    #[tokio::test]
    async fn path_parameter_owner_passes_other_is_denied() {
        let f = fixture(Mode::Enforced).await;
        let (status, body) = send(path_app(&f), "/chats/s1", Some("alice")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "Allow:Some(\"alice\")")
        );
        let (status, body) = send(path_app(&f), "/chats/s1", Some("bob")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            body.contains("urn:gatehouse:problem:access-denied"),
            "{body}"
        );
        assert!(body.contains("\"reason\":\"not_owner\""), "{body}");
        let (status, _) = send(path_app(&f), "/chats/s1", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = send(path_app(&f), "/chats/bad*id", Some("alice")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // route_layer: an unknown path is a plain 404, not a check.
        let (status, _) = send(path_app(&f), "/elsewhere", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn log_only_lets_the_request_through_as_would_deny() {
        let f = fixture(Mode::LogOnly).await;
        let (status, body) = send(path_app(&f), "/chats/s1", Some("bob")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "WouldDeny:Some(\"alice\")")
        );
    }

    #[tokio::test]
    async fn header_and_query_sources() {
        let f = fixture(Mode::Enforced).await;
        let by_query = Router::new().route("/messages", get(inner)).route_layer(
            OwnershipLayer::new(f.gatekeeper.clone(), f.authenticator.clone(), "chat")
                .session_from_query("session"),
        );
        let (status, _) = send(by_query.clone(), "/messages?x=1&session=s1", Some("alice")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = send(by_query.clone(), "/messages?session=s1", Some("bob")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = send(by_query.clone(), "/messages", Some("alice")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = send(by_query, "/messages?session=s2&session=s1", Some("alice")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let by_header = Router::new().route("/messages", get(inner)).route_layer(
            OwnershipLayer::new(f.gatekeeper.clone(), f.authenticator.clone(), "chat")
                .session_from_header(HeaderName::from_static("x-session-id")),
        );
        let request = Request::builder()
            .uri("/messages")
            .header("x-session-id", "s1")
            .header("authorization", format!("Bearer {}", token("alice")))
            .body(Body::empty())
            .unwrap();
        let response = by_header.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// The inner handler reports the session the layer checked.
    async fn checked(Extension(access): Extension<AccessDecision>) -> String {
        access.session.as_str().to_owned()
    }

    async fn through_every_source(
        f: &Fixture,
        alias: &str,
        user: &str,
    ) -> Vec<(StatusCode, String)> {
        let layer = || OwnershipLayer::new(f.gatekeeper.clone(), f.authenticator.clone(), "chat");
        let by_path = Router::new()
            .route("/chats/{session_id}", get(checked))
            .route_layer(layer());
        let by_query = Router::new()
            .route("/messages", get(checked))
            .route_layer(layer().session_from_query("session"));
        let by_header = Router::new()
            .route("/messages", get(checked))
            .route_layer(layer().session_from_header(HeaderName::from_static("x-session-id")));
        let encoded: String = form_urlencoded::byte_serialize(alias.as_bytes()).collect();
        let mut out = vec![
            send(by_path, &format!("/chats/{encoded}"), Some(user)).await,
            send(
                by_query,
                &format!("/messages?session={encoded}"),
                Some(user),
            )
            .await,
        ];
        let request = Request::builder()
            .uri("/messages")
            .header("x-session-id", alias)
            .header("authorization", format!("Bearer {}", token(user)))
            .body(Body::empty())
            .unwrap();
        let response = by_header.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        out.push((status, String::from_utf8_lossy(&body).into_owned()));
        out
    }

    const ALIASES: [&str; 4] = [
        "3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77",
        "3f2b8c1e6a4d4a439d362f0e6c1b8a77",
        "URN:UUID:3f2b8c1e-6a4d-4a43-9d36-2f0e6c1b8a77",
        "{3F2B8C1E-6A4D-4A43-9D36-2F0E6C1B8A77}",
    ];

    #[tokio::test]
    async fn every_source_reads_aliases_as_the_canonical_id() {
        let f = fixture(Mode::Enforced).await;
        for alias in ALIASES {
            for (status, body) in through_every_source(&f, alias, "bob").await {
                assert_eq!(status, StatusCode::FORBIDDEN, "{alias}: {body}");
                assert!(body.contains("\"reason\":\"not_owner\""), "{alias}: {body}");
            }
            for (status, body) in through_every_source(&f, alias, "alice").await {
                assert_eq!((status, body.as_str()), (StatusCode::OK, UUID), "{alias}");
            }
        }
    }

    #[tokio::test]
    async fn exact_ids_keep_todays_behaviour() {
        let f = fixture_with(Mode::Enforced, SessionIds::Exact).await;
        for (status, body) in through_every_source(&f, ALIASES[0], "alice").await {
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert!(body.contains("\"reason\":\"no_owner\""), "{body}");
        }
        for (status, _) in through_every_source(&f, ALIASES[3], "alice").await {
            assert_eq!(status, StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn pinned_mode_ignores_the_settings() {
        let f = fixture(Mode::Disabled).await;
        let pinned = Router::new()
            .route("/chats/{session_id}", get(inner))
            .route_layer(
                OwnershipLayer::new(f.gatekeeper.clone(), f.authenticator.clone(), "chat")
                    .pin_mode(Mode::Enforced),
            );
        let (status, _) = send(pinned, "/chats/s1", Some("bob")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = send(path_app(&f), "/chats/s1", Some("bob")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "Allow:None"));
    }

    #[tokio::test]
    async fn a_principal_from_an_earlier_layer_is_reused() {
        let f = fixture(Mode::Enforced).await;
        let alice = Principal {
            sub: "alice".into(),
            roles: vec![],
            scopes: vec![],
        };
        let app = path_app(&f).layer(Extension(alice));
        let (status, _) = send(app, "/chats/s1", None).await;
        assert_eq!(status, StatusCode::OK);
    }
}
