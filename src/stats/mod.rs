//! The decision time series (DESIGN §3, `GET /v1/stats/decisions`): every decision, allow
//! too, counted per endpoint, decision and reason in minute buckets (and hour buckets, kept
//! longer), merged across instances in the store.
//!
//! ```text
//! request path ──record()──▶ tally (in memory, by minute) ──▶ flusher task, every 1 s
//!                                                               │ one numbered batch
//!                                                               ▼
//!                                   store: minute and hour buckets (HINCRBY in one script)
//! ```
//!
//! - [`DecisionStats::record`] never waits on the store: it adds one to a counter in memory
//!   ([`tally`]). Nothing per request reaches the store.
//! - The [`flush::Flusher`] sends the counts in numbered batches, which the store adds at most
//!   once, and keeps them through an outage (a day's worth); at shutdown it sends what is
//!   left. Counts of an instance killed without a shutdown (`SIGKILL`, a crash) since its last
//!   flush, one flush interval at most, are lost.
//! - Queries ([`series`]) read the buckets of a range in one round trip and sum them by step.
//! - Endpoint names are counted under their own name only when the deployment knows them
//!   ([`KnownEndpoints`]: `default`, the forward-auth routes' names, the service's own
//!   middleware, `GATEHOUSE_STATS_ENDPOINTS`, and any name with an override in the settings in
//!   force); any other name, which a caller may choose freely, is counted as "other endpoints"
//!   (`endpoint: null`). So callers cannot grow the series without bound, and cannot crowd a
//!   real endpoint out of it.

pub mod flush;
mod routes;
pub mod series;
pub mod tally;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::decision::{Reason, Verdict};
use crate::records::Retention;
use crate::store::StatsStore;
use crate::tasks::Tasks;

pub use self::routes::routes;
pub use self::series::{DecisionSeries, Series};

/// How the time series is kept (`GATEHOUSE_STATS*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSettings {
    /// `GATEHOUSE_STATS` (default on): whether this instance counts its decisions.
    pub enabled: bool,
    /// `GATEHOUSE_STATS_FLUSH` (default 1s): how often counts go to the store.
    pub flush: Duration,
    /// `GATEHOUSE_STATS_MINUTE_RETENTION` (14d) and `GATEHOUSE_STATS_HOUR_RETENTION` (90d).
    pub retention: Retention,
    /// `GATEHOUSE_STATS_ENDPOINTS`: more names to count under their own name (those
    /// `/v1/validate` callers use without an override); the server adds them to the
    /// [`KnownEndpoints`] it passes to [`DecisionStats::start`].
    pub endpoints: Vec<String>,
}

impl Default for StatsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            flush: Duration::from_secs(1),
            retention: Retention::default(),
            endpoints: Vec::new(),
        }
    }
}

/// The endpoint names the deployment itself names (besides the overrides in the settings,
/// which [`DecisionStats::record`] is asked about): counted under their own name.
#[derive(Debug, Clone, Default)]
pub struct KnownEndpoints(Arc<HashSet<String>>);

impl KnownEndpoints {
    /// `names` (the server passes `default` among them).
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self(Arc::new(names.into_iter().collect()))
    }

    /// Whether `name` is one of them.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// The handle decisions are counted through: cheap to clone, never blocks on I/O.
#[derive(Clone, Default)]
pub struct DecisionStats {
    tally: Option<Arc<tally::Tally>>,
    known: KnownEndpoints,
}

impl DecisionStats {
    /// A handle that counts nothing (`GATEHOUSE_STATS=off`, library users).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A handle whose counts a flusher, started as one of `tasks`, adds to `store` as writer
    /// `writer` (unique per process), counting `known` under their own names; stopping `tasks`
    /// sends what is left.
    pub fn start(
        store: Arc<dyn StatsStore>,
        settings: &StatsSettings,
        known: KnownEndpoints,
        writer: String,
        dropped: prometheus_client::metrics::counter::Counter,
        tasks: &Tasks,
    ) -> Self {
        if !settings.enabled {
            return Self::disabled();
        }
        let tally = Arc::new(tally::Tally::default());
        let flusher = flush::Flusher::new(
            tally.clone(),
            store,
            settings.retention,
            settings.flush,
            writer,
            dropped,
        );
        tasks.spawn(flusher.run(tasks.token()));
        Self {
            tally: Some(tally),
            known,
        }
    }

    /// Counts one decision: under `endpoint`'s name when it is known or `overridden()` says
    /// the settings in force have an override for it, else as "other endpoints".
    pub fn record(
        &self,
        endpoint: &str,
        verdict: Verdict,
        reason: Reason,
        overridden: impl FnOnce() -> bool,
    ) {
        if let Some(tally) = &self.tally {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let name = (self.known.contains(endpoint) || overridden()).then_some(endpoint);
            tally.add(now, name, verdict, reason);
        }
    }
}
