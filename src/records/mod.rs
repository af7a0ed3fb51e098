//! The records gatehouse stores: audit events and entries, the enforcement settings and their
//! history, backfill job records, the decision time series and instance heartbeats.
//!
//! They sit at the bottom of the crate: they depend on nothing above them (only
//! [`crate::decision`], [`crate::session_id`] and [`crate::timestamp`]), so the store ports
//! ([`crate::store`]) take and return them without depending on the capabilities that make
//! them ([`crate::audit`], [`crate::enforcement`], [`crate::backfill`]).

pub mod audit;
pub mod job;
pub mod settings;
pub mod stats;

pub use self::audit::{AuditDecision, AuditEntry, AuditEvent, AuditId, Sequenced, Source};
pub use self::job::{Counts, FileError, Job, JobState, Rollback, VerifySummary};
pub use self::settings::{EnforcementSettings, HistoryChange, HistoryEntry, rollout_bucket};
/// A name for one process's writer of numbered batches (the audit writer, the stats flusher):
/// the instance and 12 random hex digits, so that a restart starts a new numbering the store
/// cannot confuse with the last one's.
pub fn writer_id(instance: &str) -> String {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    format!("{instance}-{}", &unique[..12])
}

pub use self::stats::{Cell, InstanceRecord, MinuteCounts, Resolution, Retention, StatsBatch};
