//! The ownership layer exercised through a real `Service` (tower-http style).

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
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

async fn through_every_source(f: &Fixture, alias: &str, user: &str) -> Vec<(StatusCode, String)> {
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
