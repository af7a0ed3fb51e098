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
//! One file per port: [`ownership`], [`settings`], [`audit`], [`backfill`], with the `SCAN`s
//! in [`scans`], the subscriptions in [`feeds`], what `migrate` needs in [`migrations`], and the bounded calls and what a failure
//! means in [`calls`]. The Lua scripts are in `scripts/`, included at compile time.

mod audit;
mod backfill;
mod calls;
mod connect;
mod feeds;
mod lookups;
mod migrations;
mod ownership;
mod scans;
mod settings;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use self::calls::unavailable;
use self::lookups::Lookups;
use super::{KeySchema, StoreError};

/// The heartbeat payload on the owner-change channel: not a session id (`#` is not allowed in
/// one), so it invalidates nothing.
pub const OWNERS_HEARTBEAT: &str = "#heartbeat";

pub use self::connect::{ClientCertificate, TlsOptions, client, is_tls_url};

/// How to reach Redis and lay out keys.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// For `rediss://`: the CA bundle, the client certificate, the server-name check.
    pub tls: TlsOptions,
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
}

/// Production adapter for both store ports.
pub struct RedisStore {
    client: redis::Client,
    /// A plain `redis://` URL: a failed ping then says that the port may speak TLS.
    plain: bool,
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    /// Owner lookups only: the checks in flight are coalesced into pipelines on this one
    /// socket (one write and one read carry many `GET`s, for gatehouse and for Redis), and no
    /// audit batch, scan or admin reply queues ahead of them on it.
    lookups: Lookups,
    keys: KeySchema,
    owner_ttl: Option<Duration>,
    timeout: Duration,
    claim: Script,
    set_owner: Script,
    release: Script,
    save_settings: Script,
    append_audit: Script,
    backfill_assign: Script,
    backfill_release: Script,
    audit_maxlen: usize,
}

impl RedisStore {
    /// Prepares the connections without waiting for Redis: it may be down at start, and
    /// gatehouse then reports not-ready until it answers. Must run inside a Tokio runtime.
    pub fn connect(options: &RedisOptions) -> Result<Self, StoreError> {
        let client =
            connect::client(&options.url, &options.tls).map_err(StoreError::Unavailable)?;
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
        let lookups = Lookups::new(connect()?, options.timeout);
        Ok(Self {
            client,
            plain: !is_tls_url(&options.url) && !options.url.starts_with("unix:"),
            connections,
            next: AtomicUsize::new(0),
            lookups,
            keys: options.keys.clone(),
            owner_ttl: options.owner_ttl,
            timeout: options.timeout,
            claim: Script::new(include_str!("scripts/claim.lua")),
            set_owner: Script::new(include_str!("scripts/set_owner.lua")),
            release: Script::new(include_str!("scripts/release.lua")),
            save_settings: Script::new(include_str!("scripts/save_settings.lua")),
            append_audit: Script::new(include_str!("scripts/append_audit.lua")),
            backfill_assign: Script::new(include_str!("scripts/backfill_assign.lua")),
            backfill_release: Script::new(include_str!("scripts/backfill_release.lua")),
            audit_maxlen: options.audit_maxlen.max(1),
        })
    }

    /// The key names in use.
    pub fn keys(&self) -> &KeySchema {
        &self.keys
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }
}
