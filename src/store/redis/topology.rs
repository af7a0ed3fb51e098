//! Which Redis server the store talks to: one named by the URL, or the master a set of
//! Sentinels names, found again after a failover.
//!
//! The store's connections, its owner-lookup pipeline and its client for subscriptions form a
//! [`Node`]. With a URL the node is made once. With Sentinel it is made for the master the
//! Sentinels name (`SENTINEL get-master-addr-by-name`, then `ROLE` on that server, as the
//! Sentinel client guidelines ask), and [`RedisStore::spawn_topology_watch`] asks again every
//! [`RECHECK`] and at once when a call fails in a way a failover explains (a refused or
//! dropped connection, a timeout, `READONLY`, `MASTERDOWN`). When the master has moved, a new
//! node replaces the old one and the old one is retired: the subscriptions on it end, so the
//! watchers subscribe again on the new master (the owner cache is dropped, the settings are
//! re-read), as after any lost subscription. Until a master is known, every call fails
//! (`Unavailable`): checks under ENFORCED answer 503, never allow.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::RedisStore;
use super::calls::unavailable;
use super::connect::{self, TlsOptions};
use super::lookups::Lookups;
use crate::store::StoreError;

/// How often the Sentinels are asked again when nothing failed.
pub const RECHECK: Duration = Duration::from_millis(500);

/// Sentinels and the master they watch.
#[derive(Debug, Clone)]
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

/// One server's connections.
pub(super) struct Node {
    /// `host:port`, or the URL for a fixed server.
    pub(super) addr: String,
    /// For subscriptions (each on a dedicated connection).
    pub(super) client: redis::Client,
    pub(super) connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    pub(super) lookups: Lookups,
    /// Cancelled when another node replaces this one: its subscriptions end.
    pub(super) retired: CancellationToken,
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
            .set_number_of_retries(1)
            .set_max_delay(options.timeout);
        let connect = || {
            ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                .map_err(unavailable)
        };
        let connections = (0..options.connections.max(1))
            .map(|_| connect())
            .collect::<Result<Vec<_>, _>>()?;
        let lookups = Lookups::new(connect()?, options.timeout, options.suspect.clone());
        Ok(Self {
            addr,
            client,
            connections,
            next: AtomicUsize::new(0),
            lookups,
            retired: CancellationToken::new(),
        })
    }

    /// The next connection, round-robin.
    pub(super) fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
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
async fn still_master(mut conn: ConnectionManager, timeout: Duration) -> Result<bool, String> {
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
        let options = &self.node_options;
        let current = self.node.load_full();
        let mut problems = Vec::new();
        // The first Sentinel whose master confirms that it is one (a Sentinel cut off from
        // the others may still name the old master).
        for (host, port) in &sentinel.sentinels {
            let (host, port) = match sentinel
                .ask((host, *port), &options.tls, options.timeout)
                .await
            {
                Ok(addr) => addr,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let addr = format!("{host}:{port}");
            let confirmed = match &current {
                Some(node) if node.addr == addr => {
                    match still_master(node.conn(), options.timeout).await {
                        Ok(true) => return Ok(()),
                        Ok(false) => Err(format!("{addr} is no longer a master")),
                        Err(e) => Err(format!("{addr}: {e}")),
                    }
                }
                _ => match connect::client_at(&options.url, &host, port, &options.tls) {
                    Ok(client) => match is_master(&client, options.timeout).await {
                        Ok(true) => Ok(client),
                        Ok(false) => Err(format!(
                            "{addr}, named by a Sentinel, is not a master (yet)"
                        )),
                        Err(e) => Err(format!("{addr}: {e}")),
                    },
                    Err(e) => return Err(StoreError::Unavailable(e)),
                },
            };
            match confirmed {
                Ok(client) => return self.use_master(addr, client),
                Err(e) => problems.push(e),
            }
        }
        Err(StoreError::Unavailable(format!(
            "no master confirmed: {}",
            problems.join("; ")
        )))
    }

    /// Makes the store use the master at `addr` and retires the node it replaces.
    fn use_master(&self, addr: String, client: redis::Client) -> Result<(), StoreError> {
        let options = &self.node_options;
        let node = Arc::new(Node::new(addr.clone(), client, options)?);
        let old = self.node.swap(Some(node));
        match &old {
            Some(old) => {
                tracing::warn!(from = %old.addr, to = %addr, "Redis master moved: following it");
                old.retired.cancel();
            }
            None => tracing::info!(master = %addr, "Redis master found"),
        }
        Ok(())
    }

    /// With Sentinel: follows the master until `cancel` fires (see the module docs). `None`
    /// for a fixed URL.
    pub fn spawn_topology_watch(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.sentinel.as_ref()?;
        let this = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut failing = false;
            loop {
                match this.follow_master().await {
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
                // At most one round of questions per 50 ms, however many calls fail.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }))
    }
}
