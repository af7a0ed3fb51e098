//! A chat API of its own, protected by gatehouse's [`OwnershipLayer`], sharing gatehouse's Redis:
//! the same owners, the same enforcement settings (followed live through pub/sub), and its
//! denials recorded in the same audit stream.
//!
//! ```sh
//! export GATEHOUSE_JWT_SECRET=$(head -c 32 /dev/urandom | base64) REDIS_URL=redis://127.0.0.1:6379
//! cargo run --release &                                  # gatehouse itself, on :8080
//! CHAT_LISTEN=127.0.0.1:8000 cargo run --example chat_api
//! ALICE=$(cargo run -q -- token --sub alice)
//! BACKEND=$(cargo run -q -- token --sub chat-backend --scope gatehouse:claim)
//! curl -XPOST localhost:8080/v1/sessions/chat-1/claim -H "authorization: Bearer $BACKEND" -d '{"user":"alice"}'
//! curl -XPOST localhost:8000/api/chat/sessions/chat-1/messages -H "authorization: Bearer $ALICE" -d 'hello'
//! curl localhost:8000/api/chat/sessions/chat-1/messages -H "authorization: Bearer $ALICE"
//! ```
//!
//! Without `REDIS_URL` it runs on its own in-memory store (then claim through `POST
//! /api/chat/sessions/{id}/claim` here). Run by `tests/integration/example.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Router};
use gatehouse::audit::{Audit, AuditConfig};
use gatehouse::auth::{Authenticator, JwtSettings, JwtVerifier, Principal};
use gatehouse::config::Config;
use gatehouse::decision::Mode;
use gatehouse::enforcement::Enforcement;
use gatehouse::gatekeeper::Gatekeeper;
use gatehouse::metrics::Metrics;
use gatehouse::middleware::{AccessDecision, OwnershipLayer};
use gatehouse::store::{MemoryStore, RedisStore, Store};
use gatehouse::tasks::Tasks;

/// The chat data this example serves: messages per session.
type Messages = Arc<Mutex<HashMap<String, Vec<String>>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("GATEHOUSE_JWT_SECRET")
        .map_err(|_| "set GATEHOUSE_JWT_SECRET (the same secret as gatehouse)")?;
    let listen: SocketAddr = std::env::var("CHAT_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8000".into())
        .parse()?;
    // gatehouse's own configuration (REDIS_URL, GATEHOUSE_REDIS_*, GATEHOUSE_KEY_PREFIX...),
    // so both read the same keys the same way.
    let config = Config::from_env()?;
    // Owned background work (stopped first at the end), and the audit writer (stopped last).
    let (work, writers) = (Tasks::new(), Tasks::new());
    let store: Arc<dyn Store> = match config.redis_options() {
        Some(options) => {
            let redis = Arc::new(RedisStore::connect(&options)?);
            // With Sentinel: follows the master through failovers.
            if let Some(watch) = redis.spawn_topology_watch(work.token()) {
                work.spawn(watch);
            }
            redis
        }
        None => Arc::new(MemoryStore::default()),
    };

    // The settings gatehouse's admins change, applied here within milliseconds.
    let enforcement = Enforcement::new(store.clone(), Mode::LogOnly);
    if let Err(e) = enforcement.reload().await {
        eprintln!("settings not read yet ({e}); checks are denied until the store answers");
    }
    work.spawn(enforcement.spawn_watch(work.token()));
    work.spawn(enforcement.spawn_refresh(work.token()));

    // Denials go to gatehouse's audit stream, written off the request path.
    // Its own spool (gatehouse's is locked by gatehouse).
    let audit_config = AuditConfig {
        instance: "chat-api".into(),
        spool: std::env::var_os("CHAT_AUDIT_SPOOL").map(Into::into),
        spool_max_bytes: 256 * 1024 * 1024,
        ..config.audit_config()
    };
    let metrics = Metrics::new().audit.clone();
    let audit = Audit::start(store.clone(), audit_config, metrics, &writers)?;

    let gatekeeper = Gatekeeper::new(store.clone(), enforcement).with_audit(audit);
    let authenticator = Arc::new(Authenticator::Jwt(JwtVerifier::new(
        Some(secret.as_bytes()),
        Vec::new(),
        &JwtSettings::default(),
    )?));
    let guard = |endpoint: &str| {
        OwnershipLayer::new(gatekeeper.clone(), authenticator.clone(), endpoint)
            .session_from_path("session_id")
    };
    let messages: Messages = Arc::default();
    let app = Router::new()
        .route(
            "/api/chat/sessions/{session_id}/messages",
            get(list_messages).post(post_message),
        )
        .route_layer(guard("chat.messages"))
        .merge(
            // This API is the chat backend: creating a session here claims it for the caller
            // (gatehouse's own claim endpoint takes the scope gatehouse:claim for that).
            Router::new().route("/api/chat/sessions/{session_id}/claim", post(claim)),
        )
        .with_state(AppState {
            messages,
            store,
            authenticator,
            session_ids: gatekeeper.session_ids(),
        });

    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("chat api listening on {listen}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    // Stop the background work, then the audit writer, which flushes what it holds.
    work.shutdown().await;
    writers.shutdown().await;
    Ok(())
}

#[derive(Clone)]
struct AppState {
    messages: Messages,
    store: Arc<dyn Store>,
    authenticator: Arc<Authenticator>,
    /// How session ids are read: the layer's own policy, so the claim and the check agree.
    session_ids: gatehouse::session_id::SessionIds,
}

/// The session's messages. Only reached when the layer allowed it (or, in LOG_ONLY, would
/// have denied it: `decision.outcome` says which).
async fn list_messages(
    State(state): State<AppState>,
    Extension(decision): Extension<AccessDecision>,
) -> String {
    let messages = state.messages.lock().unwrap_or_else(|p| p.into_inner());
    messages
        .get(decision.session.as_str())
        .map(|m| m.join("\n"))
        .unwrap_or_default()
}

async fn post_message(
    State(state): State<AppState>,
    Extension(decision): Extension<AccessDecision>,
    Extension(principal): Extension<Principal>,
    body: String,
) -> StatusCode {
    let mut messages = state.messages.lock().unwrap_or_else(|p| p.into_inner());
    messages
        .entry(decision.session.as_str().to_owned())
        .or_default()
        .push(format!("{}: {body}", principal.sub));
    StatusCode::CREATED
}

async fn claim(
    State(state): State<AppState>,
    axum::extract::Path(session_id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> StatusCode {
    let Ok(principal) = state.authenticator.authenticate(&headers).await else {
        return StatusCode::UNAUTHORIZED;
    };
    let Ok(session) = state.session_ids.parse(&session_id) else {
        return StatusCode::BAD_REQUEST;
    };
    match state.store.claim(&session, &principal.sub).await {
        Ok(gatehouse::store::ClaimOutcome::Claimed) => StatusCode::CREATED,
        Ok(gatehouse::store::ClaimOutcome::AlreadyOwned) => StatusCode::OK,
        Ok(gatehouse::store::ClaimOutcome::OwnedByOther(_)) => StatusCode::CONFLICT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}
