//! Which Redis server the store talks to: one named by the URL, or the master a set of
//! Sentinels names, found again after a failover.
//!
//! The store's connections, its owner-lookup pipeline and its client for subscriptions form a
//! [`Node`]. With a URL the node is made once. With Sentinel, every round of
//! [`RedisStore::follow_master`] asks all Sentinels at once (`SENTINEL
//! get-master-addr-by-name`) and believes only an address a majority of the configured
//! Sentinels names (a Sentinel cut off with the old master still names it), then asks that
//! server `ROLE`. [`RedisStore::spawn_topology_watch`] runs a round every [`RECHECK`] and at
//! once when a call fails in a way a failover explains (a refused or dropped connection, a
//! timeout, `READONLY`, `MASTERDOWN`).
//!
//! The node in use is retired (and no master is known: every call fails, so checks under
//! ENFORCED answer 503, never allow) when the majority names another server, when the server
//! says it is no longer a master, and when no round has confirmed it for [`LEASE`] (this
//! instance may be cut off with an old master: it stops reading from it before the Sentinels
//! on the other side can have promoted another, which takes their `down-after-milliseconds`).
//! Retiring ends the subscriptions on the old node, so the watchers subscribe again on the
//! next one (the owner cache is dropped, the settings are re-read), as after any lost
//! subscription.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::RedisStore;
use super::calls::unavailable;
use super::cluster::SlotMap;
use super::conn::Conn;
use super::connect::{self, TlsOptions};
use super::lookups::Lookups;
use crate::store::StoreError;

/// How often the Sentinels are asked again when nothing failed.
pub const RECHECK: Duration = Duration::from_millis(500);

/// How long a master stays in use without a round confirming it.
pub const LEASE: Duration = Duration::from_secs(3);

/// Sentinels and the master they watch.
#[derive(Clone)]
pub struct SentinelOptions {
    /// `host:port` of each Sentinel.
    pub sentinels: Vec<(String, u16)>,
    /// The master's name (`sentinel monitor <name> ...`).
    pub master: String,
    /// Speak TLS to the Sentinels (with the same CA and client certificate as the master).
    pub tls: bool,
    /// The Sentinels' own `AUTH` user.
    pub username: Option<String>,
    /// The Sentinels' own `AUTH` password.
    pub password: Option<String>,
}

/// Names what is set, never the password.
impl std::fmt::Debug for SentinelOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelOptions")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// One server's connections (or a Cluster's).
pub(super) struct Node {
    /// `host:port`, or the URL for a fixed server.
    pub(super) addr: String,
    /// For subscriptions (each on a dedicated connection): the server, or a Cluster's seed
    /// nodes (any node delivers every message: Cluster broadcasts `PUBLISH`), tried in turn.
    pub(super) subscribers: Vec<redis::Client>,
    pub(super) connections: Vec<Conn>,
    next: AtomicUsize,
    pub(super) lookups: Lookups,
    /// Ownership writes followed by `WAIT` (`GATEHOUSE_REDIS_MIN_REPLICAS`): `WAIT` blocks the
    /// connection it runs on, so it runs on its own, never ahead of reads or audit writes.
    pub(super) waited_writes: Conn,
    /// A Cluster's slot table (`None`: one server).
    pub(super) slots: Option<Arc<SlotMap>>,
    /// Cancelled when another node replaces this one: its subscriptions end.
    pub(super) retired: CancellationToken,
    /// When a round last confirmed this node (Sentinel only; see [`LEASE`]).
    confirmed: std::sync::Mutex<tokio::time::Instant>,
}

/// What making a node needs.
pub(super) struct NodeOptions {
    pub(super) url: String,
    pub(super) tls: TlsOptions,
    pub(super) connections: usize,
    pub(super) timeout: Duration,
    /// Told when a call fails in a way a failover explains.
    pub(super) suspect: Arc<Notify>,
}

impl Node {
    /// Lazy connections to `client` (nothing is sent until the first call).
    pub(super) fn new(
        addr: String,
        client: redis::Client,
        options: &NodeOptions,
    ) -> Result<Self, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            // Every call is bounded by our own timeout (`bounded`, `read_on`): a second timer
            // per call in the manager would only cost (measured: ~0.5 us of CPU per check).
            .set_response_timeout(None)
            // One reconnection attempt per call, after a short pause (the default 100 ms,
            // with jitter, made every check during a failover wait ~250 ms for its 503).
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(options.timeout);
        let manager = |client: &redis::Client| {
            ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                .map_err(unavailable)
        };
        let connect = || manager(&client).map(Conn::Server);
        let connections = (0..options.connections.max(1))
            .map(|_| connect())
            .collect::<Result<Vec<_>, _>>()?;
        let lookups = Lookups::new(connect()?, None, options.timeout, options.suspect.clone());
        let waited_writes = connect()?;
        Ok(Self {
            addr,
            subscribers: vec![client],
            connections,
            next: AtomicUsize::new(0),
            lookups,
            waited_writes,
            slots: None,
            retired: CancellationToken::new(),
            confirmed: std::sync::Mutex::new(tokio::time::Instant::now()),
        })
    }

    /// Lazy connections to the Cluster of `client`; `subscribers` are its seed nodes.
    pub(super) fn cluster(
        addr: String,
        client: &redis::cluster::ClusterClient,
        subscribers: Vec<redis::Client>,
        options: &NodeOptions,
    ) -> Self {
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(options.timeout)
            .set_response_timeout(options.timeout);
        let connect =
            || Conn::Cluster(client.get_pending_async_connection_with_config(config.clone()));
        let connections = (0..options.connections.max(1)).map(|_| connect()).collect();
        let slots = Arc::new(SlotMap::default());
        let lookups = Lookups::new(
            connect(),
            Some(slots.clone()),
            options.timeout,
            options.suspect.clone(),
        );
        Self {
            addr,
            subscribers,
            connections,
            next: AtomicUsize::new(0),
            lookups,
            waited_writes: connect(),
            slots: Some(slots),
            retired: CancellationToken::new(),
            confirmed: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// The next connection, round-robin.
    pub(super) fn conn(&self) -> Conn {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }
}

/// The address a majority of the `configured` Sentinels names, or why there is none.
fn majority(
    answers: &[Result<(String, u16), String>],
    configured: usize,
) -> Result<(String, u16), StoreError> {
    let mut counts: Vec<(&(String, u16), usize)> = Vec::new();
    for addr in answers.iter().flatten() {
        match counts.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, n)) => *n += 1,
            None => counts.push((addr, 1)),
        }
    }
    if let Some((addr, _)) = counts.iter().find(|(_, n)| *n > configured / 2) {
        return Ok((*addr).clone());
    }
    let said: Vec<String> = answers
        .iter()
        .map(|a| match a {
            Ok((host, port)) => format!("{host}:{port}"),
            Err(e) => e.clone(),
        })
        .collect();
    Err(StoreError::Unavailable(format!(
        "no majority of the {configured} Sentinels names one master: {}",
        said.join("; ")
    )))
}

impl Node {
    /// A round that started at `at` confirmed this node.
    fn confirm(&self, at: tokio::time::Instant) {
        *self
            .confirmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }

    /// Whether no round has confirmed this node for [`LEASE`].
    pub(super) fn lease_expired(&self) -> bool {
        self.confirmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
            > LEASE
    }
}

/// Whether `e` may mean that the server is no longer the master (or gone).
pub(super) fn suggests_failover(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_io_error()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

impl SentinelOptions {
    /// The `host:port` the Sentinel at `host:port` names as master, bounded by `timeout`.
    async fn ask(
        &self,
        (host, port): (&str, u16),
        tls: &TlsOptions,
        timeout: Duration,
    ) -> Result<(String, u16), String> {
        let credentials = (self.username.as_deref(), self.password.as_deref());
        let asked = async {
            let client = connect::sentinel_client(host, port, self.tls, credentials, tls)?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no master named {}", self.master))
        };
        match tokio::time::timeout(timeout, asked).await {
            Ok(answer) => answer.map_err(|e| format!("Sentinel {host}:{port}: {e}")),
            Err(_) => Err(format!(
                "Sentinel {host}:{port}: no answer within {timeout:?}"
            )),
        }
    }
}

/// Whether the server behind `client` says it is a master.
async fn is_master(client: &redis::Client, timeout: Duration) -> Result<bool, String> {
    let asked = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("ROLE")
            .query_async::<redis::Value>(&mut conn)
            .await
    };
    read_role(tokio::time::timeout(timeout, asked).await, timeout)
}

/// Whether the server behind `conn` (a connection in use) says it is a master.
async fn still_master(mut conn: Conn, timeout: Duration) -> Result<bool, String> {
    let role = redis::cmd("ROLE");
    let asked = role.query_async::<redis::Value>(&mut conn);
    read_role(tokio::time::timeout(timeout, asked).await, timeout)
}

fn read_role(
    reply: Result<redis::RedisResult<redis::Value>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Result<bool, String> {
    match reply {
        Ok(Ok(redis::Value::Array(parts))) => Ok(matches!(
            parts.first(),
            Some(redis::Value::BulkString(role)) if role.as_slice() == b"master"
        )),
        Ok(Ok(other)) => Err(format!("unexpected ROLE reply {other:?}")),
        // `ROLE` is in the @dangerous category that ACL users are often denied.
        Ok(Err(e)) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
            Err(format!("{e} (the Redis user needs +role)"))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer to ROLE within {timeout:?}")),
    }
}

impl RedisStore {
    /// Asks the Sentinels where the master is and, when it has moved (or was not known yet),
    /// makes the store use it. A fixed URL: nothing to do.
    pub async fn follow_master(&self) -> Result<(), StoreError> {
        let asking = self.finding.lock().await;
        self.find_master(asking).await
    }

    /// [`Self::follow_master`], one round at a time (the caller holds `finding`).
    pub(super) async fn find_master(
        &self,
        _asking: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), StoreError> {
        let Some(sentinel) = &self.sentinel else {
            return Ok(());
        };
        let started = tokio::time::Instant::now();
        let result = self.one_round(sentinel, started).await;
        *self
            .last_round
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tokio::time::Instant::now());
        if result.is_err() {
            // Unconfirmed for too long: this instance may be cut off with an old master.
            let current = self.node.load_full();
            if let Some(node) = current
                && node.lease_expired()
            {
                self.retire(&node, "no round confirmed it for the lease");
            }
        }
        result
    }

    /// One round; a confirmation counts from `started` (when the Sentinels were asked).
    async fn one_round(
        &self,
        sentinel: &SentinelOptions,
        started: tokio::time::Instant,
    ) -> Result<(), StoreError> {
        let options = &self.node_options;
        let asked = futures_util::future::join_all(
            sentinel
                .sentinels
                .iter()
                .map(|(host, port)| sentinel.ask((host, *port), &options.tls, options.timeout)),
        )
        .await;
        let (host, port) = majority(&asked, sentinel.sentinels.len())?;
        let addr = format!("{host}:{port}");
        let current = self.node.load_full();
        if let Some(node) = &current
            && node.addr == addr
        {
            return match still_master(node.conn(), options.timeout).await {
                Ok(true) => {
                    node.confirm(started);
                    Ok(())
                }
                Ok(false) => {
                    self.retire(node, "it is no longer a master");
                    Err(StoreError::Unavailable(format!(
                        "{addr} is no longer a master"
                    )))
                }
                Err(e) => Err(StoreError::Unavailable(format!("{addr}: {e}"))),
            };
        }
        // The majority names another server: the current one is done with, whether or not
        // the new one answers yet.
        if let Some(node) = &current {
            self.retire(node, "the Sentinels name another master");
        }
        let client = connect::client_at(&options.url, &host, port, &options.tls)
            .map_err(StoreError::Unavailable)?;
        match is_master(&client, options.timeout).await {
            Ok(true) => self.use_master(addr, client),
            Ok(false) => Err(StoreError::Unavailable(format!(
                "{addr}, named by the Sentinels, is not a master (yet)"
            ))),
            Err(e) => Err(StoreError::Unavailable(format!("{addr}: {e}"))),
        }
    }

    /// How long ago the last round ended (forever: none yet).
    pub(super) fn since_last_round(&self) -> Duration {
        self.last_round
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map_or(Duration::MAX, |at| at.elapsed())
    }

    /// Stops using `node` (if it is still the one in use): no master is known until a round
    /// confirms one.
    pub(super) fn retire(&self, node: &Arc<Node>, why: &str) {
        // Its subscriptions end first, then calls stop finding it.
        node.retired.cancel();
        let previous = self.node.compare_and_swap(node, None::<Arc<Node>>);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, node)) {
            tracing::warn!(master = %node.addr, why, "Redis master given up: checks fail closed until the Sentinels confirm one");
        }
    }

    /// Makes the store use the master at `addr`.
    fn use_master(&self, addr: String, client: redis::Client) -> Result<(), StoreError> {
        let node = Arc::new(Node::new(addr.clone(), client, &self.node_options)?);
        if let Some(old) = self.node.swap(Some(node)) {
            old.retired.cancel();
        }
        tracing::info!(master = %addr, "Redis master found");
        Ok(())
    }

    /// With Sentinel: follows the master until `cancel` fires (see the module docs); with a
    /// Cluster, keeps the slot table fresh and repairs user indexes
    /// ([`RedisStore::spawn_cluster_watch`]). `None` for a fixed URL. A Sentinel store needs it running: without it, the master found first
    /// is kept (library users: spawn it beside the store, as the server does).
    pub fn spawn_topology_watch(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.cluster {
            return Some(self.spawn_cluster_watch(cancel));
        }
        self.sentinel.as_ref()?;
        let this = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut failing = false;
            loop {
                let round = tokio::select! {
                    () = cancel.cancelled() => return,
                    round = this.follow_master() => round,
                };
                match round {
                    // Logged once per outage, not every round.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "Redis master not found; asking the Sentinels again every {RECHECK:?}");
                    }
                    Err(_) => {}
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("Redis master found again");
                    }
                    Ok(()) => {}
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = this.node_options.suspect.notified() => {}
                    () = tokio::time::sleep(RECHECK) => {}
                }
                // At most one round of questions per 100 ms, however many calls fail.
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }))
    }
}
