//! Shared harness for the integration tests: a real `redis-server` per test on a free port,
//! and gatehouse itself served on a real socket, on either backend.
//!
//! Tests that need Redis skip (with a message) when `redis-server` cannot be started, except
//! when `CI` is set: then they fail.

#![allow(dead_code)]

pub mod browser;
pub mod census;
pub mod cluster;
pub mod ext_authz;
pub mod idp;
pub mod nginx;
pub mod processes;
pub mod promql;
pub mod promtool;
pub mod proxies;
pub mod sentinel;
pub mod skip;
pub mod stage;
pub mod tls;
pub mod upstream;

pub use processes::{RedisServer, free_port};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gatehouse::auth::{JwtSettings, TokenIssuer, TokenRequest};
use gatehouse::config::Config;
use gatehouse::server::Gatehouse;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The HS256 secret every test instance verifies with.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// Writes `request` (request line, headers and all, byte for byte) to the server at `base`
/// (`http://host:port`) and reads the whole answer (the request should say
/// `Connection: close`).
pub async fn exchange(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to gatehouse");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read response");
    String::from_utf8_lossy(&response).into_owned()
}

/// `token` with its signature's first character changed: all 6 of its bits count (the last
/// one's low bits do not, so changing that one may leave the signature as it was).
pub fn forged(token: &str) -> String {
    let sig = token.rfind('.').expect("a JWT") + 1;
    let flipped = if token[sig..].starts_with('A') {
        "B"
    } else {
        "A"
    };
    format!("{}{flipped}{}", &token[..sig], &token[sig + 1..])
}

/// Polls `probe` until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The store a test runs against.
pub enum Backend {
    /// The embedded in-memory store.
    Memory,
    /// A private redis-server.
    Redis(RedisServer),
    /// A private redis-server spoken to over TLS (the test CA given as
    /// `GATEHOUSE_REDIS_CA_FILE`).
    RedisTls(tls::TlsRedis),
    /// A master found through Sentinels (`GATEHOUSE_REDIS_SENTINELS`).
    Sentinel(sentinel::SentinelSet),
    /// The test binary's Redis Cluster (`GATEHOUSE_REDIS_CLUSTER`), with key names of this
    /// test's own.
    Cluster {
        /// The shared cluster.
        cluster: &'static cluster::RedisCluster,
        /// The instance settings: seeds and key prefixes.
        env: Vec<(String, String)>,
    },
}

impl Backend {
    /// The embedded store (always there).
    pub fn memory() -> Option<Self> {
        Some(Backend::Memory)
    }

    /// A private Redis, or `None` to skip.
    pub fn redis() -> Option<Self> {
        RedisServer::start().map(Backend::Redis)
    }

    /// A private Redis over TLS, or `None` to skip.
    pub fn redis_tls() -> Option<Self> {
        tls::TlsRedis::start(tls::ClientAuth::Optional).map(Backend::RedisTls)
    }

    /// A master and one Sentinel (no replica: the store contract needs discovery, not a
    /// failover), or `None` to skip.
    pub fn sentinel() -> Option<Self> {
        sentinel::SentinelSet::start(0, 1).map(Backend::Sentinel)
    }

    /// The shared 3-primary cluster, with key prefixes of this test's own, or `None` to skip.
    pub fn cluster() -> Option<Self> {
        let cluster = cluster::RedisCluster::shared()?;
        let env = cluster.isolated_env();
        Some(Backend::Cluster { cluster, env })
    }

    /// The Redis server, for tests that inspect or stop it.
    pub fn redis_server(&mut self) -> Option<&mut RedisServer> {
        match self {
            Backend::Redis(r) => Some(r),
            Backend::RedisTls(t) => Some(&mut t.server),
            Backend::Sentinel(s) => s.servers.first_mut(),
            Backend::Memory | Backend::Cluster { .. } => None,
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        match self {
            Backend::Memory => Vec::new(),
            Backend::Redis(r) => vec![("REDIS_URL".into(), r.url())],
            Backend::RedisTls(t) => vec![
                ("REDIS_URL".into(), t.url()),
                (
                    "GATEHOUSE_REDIS_CA_FILE".into(),
                    tls::certs().ca().to_string_lossy().into_owned(),
                ),
            ],
            Backend::Sentinel(s) => s.env(),
            Backend::Cluster { env, .. } => env.clone(),
        }
    }
}

/// Runs each async test body once per backend in the list: `tests_on!([memory, redis];
/// name)` expects `async fn name(backend: Backend)` and makes `name::memory` and
/// `name::redis` (a backend that cannot start outside CI skips, see [`RedisServer::start`]).
#[macro_export]
macro_rules! tests_on {
    ($backends:tt; $($name:ident),+ $(,)?) => {$(
        $crate::tests_on!(@one $backends $name);
    )+};
    (@one [$($backend:ident),+] $name:ident) => {
        mod $name {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $backend() {
                if let Some(backend) = $crate::common::Backend::$backend() {
                    super::$name(backend).await;
                }
            }
        )+}
    };
}

/// The tests of a capability on both stores, the embedded one and Redis, and on Redis
/// Cluster (the test binary's shared cluster, with key names of each test's own).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $crate::tests_on!([memory, redis, cluster]; $($name),+);
    };
}

/// The store contract on every store gatehouse runs on: memory, Redis, Redis over TLS, Redis
/// found through Sentinel, Redis Cluster.
#[macro_export]
macro_rules! every_store {
    ($($name:ident),+ $(,)?) => {
        $crate::tests_on!([memory, redis, redis_tls, sentinel, cluster]; $($name),+);
    };
}

/// A gatehouse instance served on a real loopback socket.
pub struct TestApp {
    /// `http://127.0.0.1:{port}`.
    pub base: String,
    /// The gRPC listener (`GATEHOUSE_GRPC_LISTEN`), when the instance has one.
    pub grpc: Option<SocketAddr>,
    /// A plain HTTP client.
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    issuer: TokenIssuer,
    metrics: std::sync::Arc<gatehouse::metrics::Metrics>,
    /// Holds the instance's audit spool unless the test chose its own path.
    _spool_dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts an instance on `backend` with the test secret and `extra` settings.
    pub async fn spawn(backend: &Backend, extra: &[(&str, &str)]) -> Self {
        let spool_dir = tempfile::tempdir().expect("temporary directory");
        let spool = spool_dir.path().join("audit.spool");
        let mut vars: Vec<(String, String)> = vec![
            (
                "GATEHOUSE_AUDIT_SPOOL".into(),
                spool.to_string_lossy().into_owned(),
            ),
            ("GATEHOUSE_JWT_SECRET".into(), SECRET.into()),
            ("GATEHOUSE_SETTINGS_REFRESH".into(), "200ms".into()),
            ("GATEHOUSE_LOG".into(), "warn".into()),
        ];
        vars.extend(backend.env());
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        // With Redis: generous, the whole suite shares 2 cores in CI (tests of a frozen Redis
        // set less). Without, the setting is refused.
        let named = |name: &str| vars.iter().any(|(k, _)| k == name);
        if named("REDIS_URL") && !named("GATEHOUSE_REDIS_TIMEOUT") {
            vars.push(("GATEHOUSE_REDIS_TIMEOUT".into(), "2s".into()));
        }
        let grpc = vars
            .iter()
            .find(|(k, _)| k == "GATEHOUSE_GRPC_LISTEN")
            .map(|(_, v)| v.parse::<SocketAddr>().expect("a gRPC address"));
        let config = Config::from_vars(vars).expect("test configuration is valid");
        // As `gatehouse serve` does: the identity providers' keys fetched before serving.
        let gatehouse = Gatehouse::start(&config).await.expect("gatehouse starts");
        let metrics = gatehouse.state().metrics.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr: SocketAddr = listener.local_addr().expect("bound address");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(gatehouse.serve(listener, shutdown.clone()));
        if let Some(grpc) = grpc {
            eventually(
                Duration::from_secs(10),
                "the gRPC listener",
                || async move { tokio::net::TcpStream::connect(grpc).await.ok().map(|_| ()) },
            )
            .await;
        }
        Self {
            base: format!("http://{addr}"),
            grpc,
            http: reqwest::Client::new(),
            shutdown,
            server,
            issuer: TokenIssuer::new(SECRET.as_bytes(), &JwtSettings::default()),
            metrics,
            _spool_dir: spool_dir,
        }
    }

    /// [`Self::spawn`] with a gRPC listener too (`GATEHOUSE_GRPC_LISTEN` on a free loopback
    /// port), in [`Self::grpc`].
    pub async fn spawn_with_grpc(backend: &Backend, extra: &[(&str, &str)]) -> Self {
        let grpc = format!("127.0.0.1:{}", free_port());
        let mut extra = extra.to_vec();
        extra.push(("GATEHOUSE_GRPC_LISTEN", &grpc));
        Self::spawn(backend, &extra).await
    }

    /// Stops the instance, waits for it, and checks that its audit writer lost nothing.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        let counts = self.metrics.audit.counts();
        assert_eq!(counts.dropped, 0, "audit events dropped: {counts:?}");
        assert_eq!(
            counts.queued,
            counts.written + counts.spooled,
            "every queued event was written or spooled: {counts:?}"
        );
    }

    /// A token for `sub` with `roles` and `scopes`, valid for an hour.
    pub fn token(&self, sub: &str, roles: &[&str], scopes: &[&str]) -> String {
        self.issuer
            .mint(&TokenRequest {
                sub: sub.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ttl: Duration::from_secs(3600),
            })
            .expect("mint")
    }

    /// A user token.
    pub fn user(&self, sub: &str) -> String {
        self.token(sub, &[], &[])
    }

    /// An admin token.
    pub fn admin(&self) -> String {
        self.token("root", &["admin"], &[])
    }

    /// Sends a request and returns (status, JSON body or Null, content type).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::read(request.send().await.expect("request is sent")).await
    }

    /// Sends a raw body with a content type.
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Reply::read(request.send().await.expect("request is sent")).await
    }

    /// The text of `GET /metrics` (the Prometheus text format).
    pub async fn scrape(&self) -> String {
        let reply = self.http.get(format!("{}/metrics", self.base)).send().await;
        reply
            .expect("/metrics answers")
            .text()
            .await
            .expect("a body")
    }

    /// POST /v1/validate as `token`.
    pub async fn validate(&self, token: &str, body: Value) -> Reply {
        self.call(
            reqwest::Method::POST,
            "/v1/validate",
            Some(token),
            Some(body),
        )
        .await
    }

    /// Sets the global mode as an admin.
    pub async fn set_mode(&self, mode: &str) {
        let reply = self
            .call(
                reqwest::Method::PUT,
                "/v1/enforcement",
                Some(&self.admin()),
                Some(serde_json::json!({ "mode": mode, "reason": "test" })),
            )
            .await;
        assert_eq!(reply.status, 200, "set mode {mode}: {:?}", reply.body);
    }

    /// The chat backend's token: the scope `gatehouse:claim`, as `GATEHOUSE_CLAIM=service`
    /// (the default) requires of claimants.
    pub fn claimer(&self) -> String {
        self.token("chat-backend", &[], &["gatehouse:claim"])
    }

    /// Claims `session` for `user` as the chat backend does (the service flow).
    pub async fn claim_for(&self, session: &str, user: &str) -> Reply {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/sessions/{session}/claim"),
            Some(&self.claimer()),
            Some(serde_json::json!({ "user": user })),
        )
        .await
    }

    /// Claims `session` for `user` (service flow), expecting success.
    pub async fn claim(&self, session: &str, user: &str) {
        let reply = self.claim_for(session, user).await;
        assert!(
            reply.status == 201 || reply.status == 200,
            "claim {session}: {reply:?}"
        );
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// The body as JSON (Null when empty or not JSON).
    pub body: Value,
    /// The Content-Type header.
    pub content_type: String,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            body,
            content_type,
            headers,
        }
    }

    /// Asserts a problem document with `status` and type kind `kind`.
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        assert_eq!(
            self.body["type"],
            format!("urn:gatehouse:problem:{kind}"),
            "{self:?}"
        );
        assert_eq!(self.body["status"], status, "{self:?}");
    }
}

/// A TCP proxy on loopback that a test can cut (close every connection through it and refuse
/// new ones), stall (keep every connection open but pass nothing: a silent partition, a
/// half-open connection) and restore: a network partition of whatever connects through it.
pub struct TcpProxy {
    port: u16,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
    /// Connections that may still pass bytes (connecting or copying).
    passing: std::sync::Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// Counts a connection in [`TcpProxy::passing`] until dropped.
struct Passing(std::sync::Arc<AtomicUsize>);

impl Passing {
    fn new(count: &std::sync::Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(std::sync::Arc::clone(count))
    }
}

impl Drop for Passing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct ProxyState {
    open: bool,
    stalled: bool,
    /// Cancelled on cut and on restore: ends every connection opened before it.
    generation: CancellationToken,
    /// Cancelled on stall: connections stop passing bytes but stay open.
    stall: CancellationToken,
}

impl TcpProxy {
    /// Proxies a fresh loopback port to `target` (`host:port`).
    pub async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let port = listener.local_addr().expect("bound address").port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState {
            open: true,
            stalled: false,
            generation: CancellationToken::new(),
            stall: CancellationToken::new(),
        }));
        let shared = std::sync::Arc::clone(&state);
        let passing = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&passing);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (open, stalled, generation, stall, passing) = {
                    let state = shared.lock().unwrap();
                    let (g, s) = (state.generation.clone(), state.stall.clone());
                    // Counted under the lock, so that a stall sees it.
                    let passing = (state.open && !state.stalled).then(|| Passing::new(&counted));
                    (state.open, state.stalled, g, s, passing)
                };
                if !open {
                    drop(inbound);
                    continue;
                }
                if stalled {
                    // Accepted, never answered, until restored.
                    tokio::spawn(async move {
                        generation.cancelled().await;
                        drop(inbound);
                    });
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = generation.cancelled() => {}
                        () = stall.cancelled() => {
                            // Both sockets stay open and silent until restored.
                            drop(passing);
                            generation.cancelled().await;
                        }
                    }
                });
            }
        });
        Self {
            port,
            state,
            passing,
            task,
        }
    }

    /// The proxy's `redis://` URL (for a Redis target).
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.open = false;
        state.generation.cancel();
        state.generation = CancellationToken::new();
    }

    /// Keeps every connection through the proxy open but passes nothing more, and holds new
    /// ones unanswered: nothing tells either side that the link is gone. Returns once no
    /// connection passes bytes any more (a task still copying could pass a last message on).
    pub async fn stall(&self) {
        {
            let mut state = self.state.lock().unwrap();
            state.stalled = true;
            state.stall.cancel();
            state.stall = CancellationToken::new();
        }
        eventually(
            Duration::from_secs(5),
            "every connection through the proxy to stop passing bytes",
            || async { (self.passing.load(Ordering::SeqCst) == 0).then_some(()) },
        )
        .await;
    }

    /// Lets connections through again. Connections held by a stall are closed (as the kernel
    /// eventually would, by keepalive or retransmission timeout), so clients reconnect.
    pub fn restore(&self) {
        let mut state = self.state.lock().unwrap();
        if state.stalled {
            state.generation.cancel();
            state.generation = CancellationToken::new();
        }
        state.open = true;
        state.stalled = false;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
