//! The Redis adapter: legacy-compatible keys, `SET NX` claims, Lua compare-and-set.
//!
//! Connections are redis-rs [`ConnectionManager`]s: multiplexed (concurrent requests share a
//! connection and are pipelined on it) and reconnecting on their own after an outage. A small
//! fixed set is used round-robin instead of a checkout pool, because a pool that pings on every
//! checkout (deadpool-redis does) doubles the round trips of the one `GET` a check needs.
//!
//! Every call is bounded by the configured timeout, so a paused or unreachable Redis turns
//! into an error quickly, never into a hung request: [`StoreError::Unavailable`] for reads and
//! for writes that were certainly not applied, [`StoreError::OutcomeUnknown`] for writes that
//! were sent (or may have been) and got no answer ([`calls::write_failed`]). The ownership scripts
//! (claim, transfer, release, backfill) move the owner key and the user index together and
//! compute some of their keys, so they need standalone Redis or Sentinel (see [`ownership`]);
//! the settings and audit scripts touch keys sharing a hash tag.
//!
//! One file per port: [`ownership`], [`settings`], [`audit`], [`backfill`], [`stats`], with the `SCAN`s
//! in [`scans`], the subscriptions in [`feeds`], what `migrate` needs in [`migrations`], and the bounded calls and what a failure
//! means in [`calls`]. The Lua scripts are in `scripts/`, included at compile time.

mod audit;
mod backfill;
mod calls;
mod cluster;
mod conn;
mod connect;
mod feeds;
mod index;
mod lookups;
mod migrations;
mod ownership;
mod scans;
mod settings;
mod stats;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::Script;
use tokio::sync::Notify;

use self::conn::Conn;
use self::topology::{Node, NodeOptions};
use super::{KeySchema, StoreError};

/// The heartbeat payload on the owner-change channel: not a session id (`#` is not allowed in
/// one), so it invalidates nothing.
pub const OWNERS_HEARTBEAT: &str = "#heartbeat";

pub use self::connect::{ClientCertificate, TlsOptions, client, is_tls_url, redacted};
pub use self::topology::SentinelOptions;

/// How to reach Redis and lay out keys.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// For `rediss://`: the CA bundle, the client certificate, the server-name check.
    pub tls: TlsOptions,
    /// Sentinels to ask for the master; `url` then gives only the scheme, the credentials and
    /// the database (its host is not used).
    pub sentinel: Option<SentinelOptions>,
    /// Seed nodes (`host:port`) of a Redis Cluster; `url` then gives only the scheme and the
    /// credentials.
    pub cluster: Option<Vec<(String, u16)>>,
    /// Number of multiplexed connections used round-robin (owner lookups get one more).
    pub connections: usize,
    /// Bound on every store call (connect included).
    pub timeout: Duration,
    /// TTL given to owner keys; `None` (the default) keeps ownership persistent.
    pub owner_ttl: Option<Duration>,
    /// Key names.
    pub keys: KeySchema,
    /// Approximate bound of the audit stream (`XADD MAXLEN ~`).
    pub audit_maxlen: usize,
    /// Replicas that must confirm an ownership write (`WAIT`) before it is acknowledged;
    /// `None`: the master's answer is enough.
    pub min_replicas: Option<u32>,
}

/// The URL without its password.
impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &connect::redacted(&self.url))
            .field("tls", &self.tls)
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .field("connections", &self.connections)
            .field("timeout", &self.timeout)
            .field("owner_ttl", &self.owner_ttl)
            .field("keys", &self.keys)
            .field("audit_maxlen", &self.audit_maxlen)
            .field("min_replicas", &self.min_replicas)
            .finish()
    }
}

impl RedisOptions {
    /// `url` with the defaults of the configuration (4 connections, 500 ms, persistent
    /// owners, default keys, no TLS material, no Sentinel, no replica confirmation).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls: TlsOptions::default(),
            sentinel: None,
            cluster: None,
            connections: 4,
            timeout: Duration::from_millis(500),
            owner_ttl: None,
            keys: KeySchema::default(),
            audit_maxlen: 1_000_000,
            min_replicas: None,
        }
    }
}

/// Production adapter for both store ports.
pub struct RedisStore {
    /// The server in use: `None` until the Sentinels name the master.
    node: ArcSwapOption<Node>,
    node_options: NodeOptions,
    sentinel: Option<SentinelOptions>,
    /// A Redis Cluster: the owner key and the user index live in different slots (see
    /// [`index`]).
    cluster: bool,
    /// Sessions whose user index could not be updated after their owner key changed
    /// (Cluster only): the cluster watch repairs them ([`index`]).
    unindexed: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Held while the Sentinels are asked (one round at a time).
    finding: tokio::sync::Mutex<()>,
    /// When the last round of questions ended.
    last_round: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// A plain `redis://` URL: a failed ping then says that the port may speak TLS.
    plain: bool,
    keys: KeySchema,
    owner_ttl: Option<Duration>,
    timeout: Duration,
    min_replicas: Option<u32>,
    claim: Script,
    set_owner: Script,
    release: Script,
    save_settings: Script,
    append_audit: Script,
    add_decisions: Script,
    backfill_assign: Script,
    backfill_release: Script,
    backfill_assign_one: Script,
    backfill_release_one: Script,
    audit_maxlen: usize,
}

impl RedisStore {
    /// Prepares the connections without waiting for Redis: it may be down at start, and
    /// gatehouse then reports not-ready until it answers. Must run inside a Tokio runtime.
    pub fn connect(options: &RedisOptions) -> Result<Self, StoreError> {
        let node_options = NodeOptions {
            url: options.url.clone(),
            tls: options.tls.clone(),
            connections: options.connections,
            timeout: options.timeout,
            suspect: Arc::new(Notify::new()),
        };
        // With Sentinel the master is found by `follow_master` (the topology watch).
        let node = match (&options.sentinel, &options.cluster) {
            (Some(_), _) => None,
            (None, Some(seeds)) => Some(Arc::new(cluster_node(options, seeds, &node_options)?)),
            (None, None) => {
                let client =
                    connect::client(&options.url, &options.tls).map_err(StoreError::Unavailable)?;
                let name = connect::redacted(&options.url);
                Some(Arc::new(Node::new(name, client, &node_options)?))
            }
        };
        Ok(Self {
            node: ArcSwapOption::new(node),
            node_options,
            sentinel: options.sentinel.clone(),
            cluster: options.cluster.is_some() && options.sentinel.is_none(),
            unindexed: std::sync::Mutex::default(),
            finding: tokio::sync::Mutex::new(()),
            last_round: std::sync::Mutex::new(None),
            plain: !is_tls_url(&options.url) && !options.url.starts_with("unix:"),
            keys: options.keys.clone(),
            owner_ttl: options.owner_ttl,
            timeout: options.timeout,
            min_replicas: options.min_replicas.filter(|n| *n > 0),
            claim: Script::new(include_str!("scripts/claim.lua")),
            set_owner: Script::new(include_str!("scripts/set_owner.lua")),
            release: Script::new(include_str!("scripts/release.lua")),
            save_settings: Script::new(include_str!("scripts/save_settings.lua")),
            append_audit: Script::new(include_str!("scripts/append_audit.lua")),
            add_decisions: Script::new(include_str!("scripts/add_decisions.lua")),
            backfill_assign: Script::new(include_str!("scripts/backfill_assign.lua")),
            backfill_release: Script::new(include_str!("scripts/backfill_release.lua")),
            backfill_assign_one: Script::new(include_str!("scripts/backfill_assign_one.lua")),
            backfill_release_one: Script::new(include_str!("scripts/backfill_release_one.lua")),
            audit_maxlen: options.audit_maxlen.max(1),
        })
    }

    /// The key names in use.
    pub fn keys(&self) -> &KeySchema {
        &self.keys
    }

    /// The server in use. With Sentinel and no master known yet, asks the Sentinels first
    /// (one call asks; the others wait for its answer): `Unavailable` when none names one.
    async fn node(&self) -> Result<Arc<Node>, StoreError> {
        if let Some(node) = self.node.load_full() {
            // A Sentinel master unconfirmed for the lease is given up here too, not only
            // when a round fails (a round may be slow, or the watch starved).
            if self.sentinel.is_none() || !node.lease_expired() {
                return Ok(node);
            }
            self.retire(&node, "no round confirmed it for the lease");
        }
        self.node_options.suspect.notify_one();
        // One call runs a round (bounded, and not again within 100 ms of the last one); the
        // others fail at once rather than queue behind it.
        if let Ok(asking) = self.finding.try_lock()
            && self.since_last_round() >= Duration::from_millis(100)
        {
            let _ = tokio::time::timeout(self.timeout * 2, self.find_master(asking)).await;
        }
        self.node.load_full().ok_or_else(|| {
            StoreError::Unavailable("no Redis master known (asking the Sentinels)".into())
        })
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        Ok(self.node().await?.conn())
    }
}

/// The node of a Cluster reached through `seeds`.
fn cluster_node(
    options: &RedisOptions,
    seeds: &[(String, u16)],
    node_options: &NodeOptions,
) -> Result<Node, StoreError> {
    let client = connect::cluster_client(&options.url, seeds, &options.tls, options.timeout)
        .map_err(StoreError::Unavailable)?;
    let subscribers = seeds
        .iter()
        .map(|(host, port)| connect::client_at(&options.url, host, *port, &options.tls))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::Unavailable)?;
    let names: Vec<String> = seeds.iter().map(|(h, p)| format!("{h}:{p}")).collect();
    let addr = format!("cluster {}", names.join(","));
    Ok(Node::cluster(addr, &client, subscribers, node_options))
}
