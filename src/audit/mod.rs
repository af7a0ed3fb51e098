//! The audit stream (DESIGN §6): every deny, would-deny, `store_unavailable` decision and admin
//! change, written off the request path, without loss through a Redis outage.
//!
//! ```text
//! request path ──record()──▶ bounded channel ──▶ writer task ──batches──▶ store (XADD MAXLEN ~)
//!                                                   │    ▲
//!                                   memory full or  ▼    │ replayed first, in order,
//!                                   shutting down   spool file (fsync per append)
//! ```
//!
//! - [`Audit::record`] never waits: it hands the event to a bounded channel (`queued`), or
//!   counts it `dropped` when the channel is full (sized so that it is not, see the README).
//! - The [`AuditWriter`] numbers events (a per-process writer id and a sequence), appends them
//!   in batches, and retries with backoff while the store is unreachable, still accepting
//!   events meanwhile (and while any store call or spool write is in flight). Past the
//!   in-memory bound, or at shutdown, the oldest events move to the spool file ([`spool`]);
//!   the spool is replayed before anything newer, so each writer's events reach the store in
//!   order, which is what lets the store skip what it already has
//!   ([`crate::store::AuditStore::append_audit`]): nothing is lost, nothing is written twice.
//! - Queries ([`query`]) and the summary ([`summarize`]) read the store with cursors that
//!   never skip or repeat an entry.

mod routes;
pub mod spool;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::metrics::AuditMetrics;
use crate::store::AuditStore;
use crate::tasks::Tasks;

pub use self::routes::{Filter, Summary, parse_since, query, routes, since_schema, summarize};
pub use self::writer::AuditWriter;
pub use crate::records::audit::{
    AuditDecision, AuditEntry, AuditEvent, AuditId, Sequenced, Source,
};

/// How the audit writer runs.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// This instance's name, recorded in every event.
    pub instance: String,
    /// Events held in memory (the channel, and again the writer's buffer) before spooling.
    pub queue: usize,
    /// Events per store call.
    pub batch: usize,
    /// The spool file; `None`: no spool (events past the memory bound are dropped).
    pub spool: Option<PathBuf>,
    /// Largest spool file, in bytes.
    pub spool_max_bytes: u64,
}

impl AuditConfig {
    /// In-memory only (no spool), for the embedded store and library users.
    pub fn in_memory(instance: impl Into<String>) -> Self {
        Self {
            instance: instance.into(),
            queue: 10_000,
            batch: 500,
            spool: None,
            spool_max_bytes: 0,
        }
    }
}

/// The handle decisions are recorded through: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Audit {
    sender: Option<mpsc::Sender<AuditEvent>>,
    instance: Arc<str>,
    metrics: AuditMetrics,
}

impl Audit {
    /// A handle that records nothing (events are only logged by the gatekeeper).
    pub fn disabled(instance: &str) -> Self {
        Self {
            sender: None,
            instance: instance.into(),
            metrics: AuditMetrics::default(),
        }
    }

    /// A handle whose events the writer, started as one of `writers`, stores in `store`;
    /// stopping `writers` ([`Tasks::shutdown`]) stores or spools what it still holds. The
    /// one way the server, the CLI and the example start it. Opening the spool may fail (a
    /// locked or unwritable file).
    pub fn start(
        store: Arc<dyn AuditStore>,
        config: AuditConfig,
        metrics: AuditMetrics,
        writers: &Tasks,
    ) -> std::io::Result<Self> {
        let (audit, writer) = Self::with_writer(store, config, metrics)?;
        writers.spawn(writer.run(writers.token()));
        Ok(audit)
    }

    /// A handle and the writer that empties it, for the writer's own tests.
    fn with_writer(
        store: Arc<dyn AuditStore>,
        config: AuditConfig,
        metrics: AuditMetrics,
    ) -> std::io::Result<(Self, AuditWriter)> {
        let (sender, receiver) = mpsc::channel(config.queue.max(1));
        let audit = Self {
            sender: Some(sender),
            instance: config.instance.as_str().into(),
            metrics: metrics.clone(),
        };
        let writer = AuditWriter::new(store, receiver, &config, metrics)?;
        Ok((audit, writer))
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Records `event` without waiting.
    pub fn record(&self, event: AuditEvent) {
        let Some(sender) = &self.sender else {
            return;
        };
        match sender.try_send(event) {
            Ok(()) => self.metrics.queued(1),
            Err(e) => {
                self.metrics.dropped(1);
                tracing::error!(error = %e, "audit event dropped: the audit queue is full or closed");
            }
        }
    }
}
