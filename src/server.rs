//! Assembling and running a gatehouse instance from its [`Config`].
//!
//! [`Gatehouse::build`] creates the store, the authenticator and the services; [`Gatehouse::serve`]
//! runs the HTTP server (and the metrics and gRPC listeners when configured) and the background
//! tasks (settings refresh and watch, owner-cache watch, the instance heartbeat; the audit
//! writer and the decision-stats flusher, stopped last) until the shutdown signal, then stops the tasks and waits for them. Tests use the same two calls on a listener bound to port 0.

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::app;
use crate::audit::Audit;
use crate::auth::{Authenticator, JwtVerifier, KeyError, TokenIssuer, TokenRequest};
use crate::config::{AuthConfig, Config};
use crate::enforcement::{Enforcement, Snapshot, store_identity};
use crate::gatekeeper::Gatekeeper;
use crate::http::{AppState, Services};
use crate::metrics::{MeteredStore, Metrics};
use crate::store::{CachedStore, MemoryStore, OwnerCache, RedisStore, Store, StoreError};
use crate::tasks::Tasks;

/// Lifetime of the admin token printed by the embedded default.
pub const BOOTSTRAP_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why an instance could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store could not be set up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A token could not be minted.
    #[error("cannot mint the bootstrap token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    /// The audit spool could not be opened.
    #[error("cannot open the audit spool: {0}")]
    Spool(#[from] std::io::Error),
}

/// A built instance, ready to serve.
pub struct Gatehouse {
    state: AppState,
    /// Settings refresh and watch, the owner-cache watch, backfill jobs.
    work: Tasks,
    /// The audit writer, running from the build on: stopped after `work`.
    writers: Tasks,
    owner_cache: Option<(Arc<OwnerCache>, Arc<dyn crate::store::OwnerChanges>)>,
    /// The Redis store, for its topology watch (Sentinel).
    redis: Option<Arc<RedisStore>>,
    connections: crate::http::ConnectionLimits,
    /// `GATEHOUSE_METRICS_LISTEN`: `/metrics` on an address of its own.
    metrics_listen: Option<std::net::SocketAddr>,
    /// `GATEHOUSE_GRPC_LISTEN`: Envoy's gRPC `Authorization/Check` on an address of its own.
    grpc_listen: Option<std::net::SocketAddr>,
    /// The admin token minted for the embedded default (no auth configured); print it once.
    pub bootstrap_token: Option<String>,
    /// Which store backs this instance, for the start-up log.
    pub store_kind: &'static str,
    /// `GATEHOUSE_INSTANCE`, for the heartbeat.
    instance: String,
}

impl Gatehouse {
    /// Builds the store, authenticator and services. Must run inside a Tokio runtime; does not
    /// need Redis to be up (readiness reports it).
    pub fn build(config: &Config) -> Result<Self, BuildError> {
        let mut owner_cache = None;
        let mut redis_store = None;
        let metrics = Metrics::new();
        // Every store call is measured; the owner cache sits in front (a hit is no call).
        let metered = |store: Arc<dyn Store>| -> Arc<dyn Store> {
            Arc::new(MeteredStore::new(store, metrics.store.clone()))
        };
        let (store, store_kind): (Arc<dyn Store>, _) = match config.redis_options() {
            Some(options) => {
                let redis = Arc::new(RedisStore::connect(&options)?);
                redis_store = Some(redis.clone());
                match config.owner_cache {
                    Some(settings) => {
                        let cache = OwnerCache::new(settings.capacity, settings.ttl);
                        let feed: Arc<dyn crate::store::OwnerChanges> = redis.clone();
                        owner_cache = Some((cache.clone(), feed));
                        (Arc::new(CachedStore::new(metered(redis), cache)), "redis")
                    }
                    None => (metered(redis), "redis"),
                }
            }
            None => (
                metered(Arc::new(
                    MemoryStore::new(config.owner_ttl).with_audit_maxlen(config.audit.maxlen),
                )),
                "memory",
            ),
        };
        let writers = Tasks::new();
        let audit = Audit::start(
            store.clone(),
            config.audit_config(),
            metrics.audit.clone(),
            &writers,
        )?;
        // The names counted on their own: `default`, the routes', the service's own
        // middleware's, `GATEHOUSE_STATS_ENDPOINTS` (and the overrides, which `record` asks
        // the settings in force about).
        let known = crate::stats::KnownEndpoints::new(
            config
                .forward_auth
                .routes
                .routes()
                .iter()
                .map(|route| route.name.clone())
                .chain(config.stats.endpoints.iter().cloned())
                .chain([
                    crate::gatekeeper::DEFAULT_ENDPOINT.to_owned(),
                    crate::sessions::SESSIONS_ENDPOINT.to_owned(),
                ]),
        );
        let stats = crate::stats::DecisionStats::start(
            store.clone(),
            &config.stats,
            known,
            crate::records::writer_id(&config.instance),
            metrics.stats_dropped.clone(),
            &writers,
        );
        let (authenticator, bootstrap_token) = authenticator(&config.auth)?;
        let mut enforcement = Enforcement::new(store.clone(), config.initial_mode)
            .with_refresh(config.settings_refresh)
            .with_instance(&config.instance)
            .with_audit(audit.clone());
        // The embedded store cannot be unreachable: it needs no snapshot either.
        if let (Some(redis), Some(path)) = (&config.redis, &config.settings_snapshot) {
            let store = store_identity(&redis.url, &config.keys.settings());
            enforcement = enforcement.with_snapshot(Snapshot::new(path, store));
        }
        let gatekeeper = Gatekeeper::new(store.clone(), enforcement.clone())
            .with_audit(audit.clone())
            .with_metrics(metrics.clone())
            .with_stats(stats)
            .with_session_ids(config.session_ids);
        let work = Tasks::new();
        let backfill = crate::backfill::Backfill::new(
            store.clone(),
            crate::backfill::sources::Roots::new(config.backfill_roots.clone()),
            audit.clone(),
        )
        .with_session_ids(config.session_ids)
        .with_jobs(work.clone());
        let state = AppState::new(Services {
            authenticator: Arc::new(authenticator),
            owner_cache: owner_cache.as_ref().map(|(cache, _)| cache.clone()),
            backfill,
            store,
            enforcement,
            gatekeeper,
            audit,
            metrics,
            forward_auth: config.forward_auth.clone(),
            request_timeout: config.request_timeout,
            claim: config.claim,
            trusted_proxies: config.trusted_proxies.clone(),
            metrics_elsewhere: config.metrics_listen.is_some(),
            stats_retention: config.stats.retention,
        });
        Ok(Self {
            state,
            work,
            writers,
            owner_cache,
            redis: redis_store,
            connections: config.connections.clone(),
            metrics_listen: config.metrics_listen,
            grpc_listen: config.grpc_listen,
            bootstrap_token,
            store_kind,
            instance: config.instance.clone(),
        })
    }

    /// [`Self::build`], then the identity providers' keys fetched once (all at once), unless
    /// `GATEHOUSE_JWT_WAIT_FOR_KEYS=on`: a provider whose keys cannot be had stops the start
    /// ([`BuildError::Key`], naming each). Built without this, an instance fetches them when
    /// it serves and refuses their tokens until then (503 `keys-unavailable`).
    pub async fn start(config: &Config) -> Result<Self, BuildError> {
        let gatehouse = Self::build(config)?;
        let wait = matches!(&config.auth, AuthConfig::Jwt { jwks, .. } if jwks.wait_for_keys);
        if !wait && let Authenticator::Jwt(verifier) = &*gatehouse.state.authenticator {
            verifier.load_keys().await?;
        }
        Ok(gatehouse)
    }

    /// The application state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves on `listener` until `shutdown` fires, then drains connections (bounded, see
    /// [`crate::http::serve`]), stops the background tasks and waits for them.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let (work, writers) = (self.work, self.writers);
        if let Some(redis) = &self.redis {
            if let Err(e) = redis.follow_master().await {
                tracing::warn!(error = %e, "Redis master not found yet: checks fail closed until the Sentinels name one");
            }
            if let Some(watch) = redis.spawn_topology_watch(work.token()) {
                work.spawn(watch);
            }
        }
        if let Err(e) = self.state.enforcement.reload().await {
            tracing::warn!(error = %e, "enforcement settings not read yet: until the store answers, the snapshot's settings apply (marked stale) or, without one, checks are denied with settings_unavailable");
        }
        // Not `shutdown`: requests still in flight during the drain must find the tasks
        // running; they stop once the server has drained, the work first, then the audit
        // writer (which records what the work did while stopping).
        work.spawn(self.state.enforcement.spawn_refresh(work.token()));
        if let Authenticator::Jwt(verifier) = &*self.state.authenticator {
            verifier.spawn_refresh(&work);
        }
        work.spawn(self.state.enforcement.spawn_watch(work.token()));
        work.spawn(crate::instances::heartbeat(
            self.state.store.clone(),
            self.state.enforcement.clone(),
            self.instance,
            work.token(),
        ));
        if let Some((cache, redis)) = &self.owner_cache {
            work.spawn(cache.spawn_watch(redis.clone(), work.token()));
        }
        if let Some(addr) = self.metrics_listen {
            let metrics = TcpListener::bind(addr).await?;
            tracing::info!(%addr, "serving /metrics");
            let router = crate::app::metrics_only(self.state.clone());
            let limits = self.connections.clone();
            work.spawn(crate::http::serve::serve(
                metrics,
                router,
                limits,
                shutdown.clone(),
            ));
        }
        if let Some(addr) = self.grpc_listen {
            let grpc = TcpListener::bind(addr).await?;
            tracing::info!(%addr, "serving gRPC envoy.service.auth.v3.Authorization/Check");
            let served = crate::forward_auth::grpc::serve(
                grpc,
                self.state.clone(),
                self.connections.clone(),
                shutdown.clone(),
            );
            work.spawn(async move {
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "gRPC server failed: checks over gRPC fail");
                }
            });
        }
        let router = app(self.state);
        let served =
            crate::http::serve::serve(listener, router, self.connections, shutdown.clone()).await;
        work.shutdown().await;
        writers.shutdown().await;
        served
    }
}

fn authenticator(config: &AuthConfig) -> Result<(Authenticator, Option<String>), BuildError> {
    let AuthConfig::Jwt {
        secret,
        public_keys,
        settings,
        providers,
        jwks,
    } = config
    else {
        return Ok((Authenticator::Disabled, None));
    };
    let public = public_keys.clone();
    // Identity providers are keys too: no random key and admin token beside them.
    if secret.is_none() && public.is_empty() && providers.is_empty() {
        // Embedded default: a key that lives as long as the process, and one admin token.
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let token = TokenIssuer::new(&key, settings).mint(&TokenRequest {
            sub: "admin".into(),
            roles: vec![crate::auth::ROLE_ADMIN.into()],
            scopes: Vec::new(),
            ttl: BOOTSTRAP_TOKEN_TTL,
        })?;
        let verifier = JwtVerifier::new(Some(&key), Vec::new(), settings)?;
        return Ok((Authenticator::Jwt(verifier), Some(token)));
    }
    let verifier = JwtVerifier::with_providers(
        secret.as_deref().map(str::as_bytes),
        public,
        settings,
        providers.clone(),
        jwks,
    )?;
    Ok((Authenticator::Jwt(verifier), None))
}
