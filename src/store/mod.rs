//! The store port: what gatehouse needs from its storage, and the two adapters.
//!
//! [`OwnershipStore`] holds who owns which session (DESIGN §4); [`SettingsStore`] holds the
//! versioned enforcement settings and their history; [`AuditStore`], [`BackfillStore`] and
//! [`StatsStore`] the audit stream, the backfill jobs and the decision time series. [`RedisStore`] is the production adapter
//! and [`MemoryStore`] the embedded default; both pass the same contract suite
//! (`tests/integration/store_contract.rs`). Capabilities call these traits, never Redis.

mod cache;
mod keys;
mod memory;
mod redis;

use async_trait::async_trait;

use crate::records::{AuditEntry, AuditId, Job, Sequenced, VerifySummary};
use crate::records::{Cell, InstanceRecord, Resolution, Retention, StatsBatch};
use crate::records::{EnforcementSettings, HistoryEntry};
use crate::session_id::SessionId;
use crate::timestamp::Timestamp;

pub use self::cache::{CachedStore, HEARTBEAT_DEADLINE, HEARTBEAT_EVERY, OwnerCache};
pub use self::keys::KeySchema;
pub use self::memory::MemoryStore;
pub use self::redis::{
    ClientCertificate, RedisOptions, RedisStore, SentinelOptions, TlsOptions,
    client as redis_client, is_tls_url, redacted as redacted_url,
};

/// Why a store call failed. All but [`StoreError::InvalidCursor`] are the store's fault.
///
/// For writes the first two variants differ in what they promise: `Unavailable` means the
/// write was never sent (nothing was written), `OutcomeUnknown` that it was sent and no answer
/// came (it may or may not have been applied). Every ownership write is safe to repeat, so
/// the answer to both is to retry. A read that fails is always `Unavailable`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time. For a write: it was not
    /// sent, or the store refused it before running it; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write was (or may have been) sent but no answer came: a timeout after sending, a
    /// connection dropped mid-call. It may or may not have been applied.
    #[error("write outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The store answered with data gatehouse cannot read.
    #[error("unexpected data in store: {0}")]
    Corrupt(String),
    /// A paging cursor this store did not hand out (the caller's fault: a 400).
    #[error("invalid cursor: pass back the next_cursor of the previous page")]
    InvalidCursor,
}

impl StoreError {
    /// The kind, as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::OutcomeUnknown(_) => "outcome_unknown",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::InvalidCursor => "invalid_cursor",
        }
    }
}

/// What a claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The session had no owner; the claimant is now its owner.
    Claimed,
    /// The claimant already owned the session; nothing changed.
    AlreadyOwned,
    /// Another user owns the session; nothing changed.
    OwnedByOther(String),
}

/// A condition on the current owner for a compare-and-set write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Write whatever the current owner is.
    Any,
    /// Write only if this user is the current owner.
    Owner(String),
}

impl Expected {
    fn matches(&self, current: Option<&str>) -> bool {
        match self {
            Expected::Any => true,
            Expected::Owner(expected) => current == Some(expected.as_str()),
        }
    }
}

/// What a compare-and-set write of an owner did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerChange {
    /// Done; the session's owner before the write.
    Done {
        /// The owner before (None: the session had none).
        previous: Option<String>,
    },
    /// The condition did not hold; nothing changed.
    Mismatch {
        /// The owner found instead.
        actual: Option<String>,
    },
}

/// One page of a user's sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPage {
    /// Session ids on this page.
    pub sessions: Vec<String>,
    /// Opaque cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Who owns which chat session.
///
/// Owner keys are the source of truth; the per-user index is secondary (it can be rebuilt
/// from the owner keys). Claim, transfer and release change the owner and the index in one
/// atomic step (one Lua script on standalone Redis and Sentinel, one lock in memory), so the
/// index never drifts from the owner keys through these writes.
#[async_trait]
pub trait OwnershipStore: Send + Sync + 'static {
    /// The session's owner, if it has one.
    async fn owner(&self, session: &SessionId) -> Result<Option<String>, StoreError>;

    /// The owners of several sessions, in order, in one round trip.
    async fn owners(&self, sessions: &[SessionId]) -> Result<Vec<Option<String>>, StoreError>;

    /// Makes `user` the owner if the session has none (`SET NX`: of concurrent claims exactly
    /// one wins).
    async fn claim(&self, session: &SessionId, user: &str) -> Result<ClaimOutcome, StoreError>;

    /// Sets the owner to `owner` if the current owner matches `expected` (atomic).
    async fn set_owner(
        &self,
        session: &SessionId,
        owner: &str,
        expected: &Expected,
    ) -> Result<OwnerChange, StoreError>;

    /// Removes the owner if it matches `expected` (atomic). `previous` is `None` when the
    /// session had no owner to remove.
    async fn release(
        &self,
        session: &SessionId,
        expected: &Expected,
    ) -> Result<OwnerChange, StoreError>;

    /// A page of at most `limit` of the sessions `user` owns, from the per-user index.
    ///
    /// Paging follows `SSCAN` semantics: a session owned throughout the paging is returned;
    /// one added or removed meanwhile may or may not be.
    async fn user_sessions(
        &self,
        user: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, StoreError>;

    /// How many sessions have an owner. On Redis this walks the owner keys with `SCAN` (never
    /// `KEYS`), so its cost grows with the keyspace: for admin reports, not for requests.
    async fn count_owned(&self) -> Result<u64, StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// What saving a settings change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    /// Saved, and the history entry appended.
    Saved,
    /// The stored version was not the expected one; nothing changed.
    VersionConflict {
        /// The version found in the store.
        current: u64,
    },
}

/// The versioned enforcement settings and their history.
#[async_trait]
pub trait SettingsStore: Send + Sync + 'static {
    /// The saved settings, or `None` when no change was ever saved.
    async fn load_settings(&self) -> Result<Option<EnforcementSettings>, StoreError>;

    /// Saves `next` if the stored version is `expected` (0 when nothing is stored), appends
    /// `entry` to the history and announces `next`, atomically: a compare-and-set on the
    /// version. `next.version` is above `expected`: one above for a change, more for a record
    /// restored after the store lost it (see [`crate::enforcement`]).
    async fn save_settings(
        &self,
        expected: u64,
        next: &EnforcementSettings,
        entry: &HistoryEntry,
    ) -> Result<SaveOutcome, StoreError>;

    /// History entries newest first, with versions below `before` when given.
    async fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Subscribes to the settings announced by every save, from any instance. An item is
    /// `None` when an announcement could not be read (re-read the record then); the stream
    /// ends when the subscription is lost.
    async fn watch(&self) -> Result<SettingsFeed, StoreError>;
}

/// The stream returned by [`OwnerChanges::owner_changes`]: the session ids of each write.
pub type OwnerFeed = futures_util::stream::BoxStream<'static, Vec<String>>;

/// The owner-change feed a shared store announces every ownership write on (the owner cache
/// follows it; the embedded store needs none: one process, one cache).
#[async_trait]
pub trait OwnerChanges: Send + Sync + 'static {
    /// Subscribes to the owner changes announced by every write (claims, transfers, releases,
    /// backfill): each item is the ids of one write. The stream ends when the subscription is
    /// lost.
    async fn owner_changes(&self) -> Result<OwnerFeed, StoreError>;

    /// Announces a heartbeat on the feed: the subscriber's proof that its subscription still
    /// delivers (not a session id, so it invalidates nothing).
    async fn owners_heartbeat(&self) -> Result<(), StoreError>;
}

/// The stream returned by [`SettingsStore::watch`].
pub type SettingsFeed = futures_util::stream::BoxStream<'static, Option<EnforcementSettings>>;

/// The audit stream (DESIGN §6).
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `events` of `writer` (sequence numbers ascending), skipping every event whose
    /// number is at or below the last one recorded for that writer, and records the new last
    /// number, atomically. Returns how many were appended.
    ///
    /// This is what makes delivery exactly-once: a batch whose answer was lost (a timeout
    /// after Redis applied it) or a spool replayed twice after a crash is skipped, not
    /// duplicated, as long as each writer appends its events in order.
    async fn append_audit(&self, writer: &str, events: &[Sequenced]) -> Result<usize, StoreError>;

    /// Up to `count` entries, newest first, with ids below `before` when given.
    async fn audit_before(
        &self,
        before: Option<AuditId>,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Up to `count` entries, oldest first, with ids above `after` when given.
    async fn audit_after(
        &self,
        after: Option<AuditId>,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}

/// What a release of a job's sessions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// Sessions whose owner was removed.
    pub released: u64,
    /// Sessions left alone: their owner is no longer the one the job gave them.
    pub kept: Vec<String>,
}

/// A place in the listing of backfill jobs, which is ordered by creation time, then job id.
///
/// Written `{created_at, Unix milliseconds, 16 digits}:{job_id}`: that text sorts as the pair
/// does, so the Redis adapter keeps the listing as one sorted set of these texts (all scored 0)
/// read backwards with `ZREVRANGEBYLEX`. It is also the `before` cursor of `GET /v1/backfill`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobCursor {
    created_millis: u64,
    job_id: String,
}

impl JobCursor {
    /// Where `job` stands in the listing.
    pub fn of(job: &Job) -> Self {
        Self {
            created_millis: job.created_at.unix_millis(),
            job_id: job.job_id.clone(),
        }
    }
}

impl std::fmt::Display for JobCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016}:{}", self.created_millis, self.job_id)
    }
}

impl std::str::FromStr for JobCursor {
    type Err = &'static str;

    /// Reads a cursor as [`JobCursor`]'s `Display` writes it (job ids as gatehouse makes them:
    /// up to 64 of `[A-Za-z0-9_-]`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "not a job cursor: pass back the next_before of the previous page";
        let (millis, job_id) = s.split_once(':').ok_or(WHAT)?;
        let digits = millis.len() == 16 && millis.bytes().all(|b| b.is_ascii_digit());
        let id_ok = (1..=64).contains(&job_id.len())
            && job_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !digits || !id_ok {
            return Err(WHAT);
        }
        Ok(Self {
            created_millis: millis.parse().map_err(|_| WHAT)?,
            job_id: job_id.to_owned(),
        })
    }
}

/// Backfill jobs: the exact set of sessions each assigned, and their records (DESIGN §4).
#[async_trait]
pub trait BackfillStore: Send + Sync + 'static {
    /// For each of `sessions` with no owner: makes `owner` its owner (`SET NX`, never
    /// overwriting), adds it to `owner`'s index, and records it in `job`'s assigned set, all
    /// in one atomic step per call. Returns how many were assigned.
    async fn assign(&self, job: &str, owner: &str, sessions: &[String]) -> Result<u64, StoreError>;

    /// For each of `sessions`: removes its owner if it is still `owner` (and its index entry),
    /// else leaves it alone and reports it; either way removes it from `job`'s assigned set.
    async fn release_assigned(
        &self,
        job: &str,
        owner: &str,
        sessions: &[String],
    ) -> Result<Released, StoreError>;

    /// One `SSCAN` step over `job`'s assigned set: the next cursor (0 at the end of a pass)
    /// and about `count` members. Members released meanwhile are simply not returned again.
    async fn assigned_page(
        &self,
        job: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError>;

    /// How many sessions `job`'s assigned set holds.
    async fn assigned_count(&self, job: &str) -> Result<u64, StoreError>;

    /// One `SCAN` step over the owner keys: the next cursor (0 at the end) and session ids.
    async fn owned_page(&self, cursor: u64, count: usize)
    -> Result<(u64, Vec<String>), StoreError>;

    /// How many of `owned` (session, its owner) are missing from their owner's index (the
    /// listing of `GET /v1/users/{user}/sessions`): none on one server, where the index moves
    /// with the owner key; on a Redis Cluster, drift the repair has not mended yet.
    async fn unindexed(&self, owned: &[(String, String)]) -> Result<u64, StoreError>;

    /// Saves a job record under its id (`job.job_id`).
    async fn save_job(&self, job: &Job) -> Result<(), StoreError>;

    /// A job record.
    async fn load_job(&self, id: &str) -> Result<Option<Job>, StoreError>;

    /// Job records newest first (by `created_at`, then id), those after `before` in that
    /// order when given: at most `limit`, and the cursor of the next page when there are more.
    /// Every job saved with [`Self::save_job`] is listed.
    async fn jobs(
        &self,
        before: Option<&JobCursor>,
        limit: usize,
    ) -> Result<(Vec<Job>, Option<JobCursor>), StoreError>;

    /// Saves the summary of the latest verification (replacing the one before).
    async fn save_verification(&self, summary: &VerifySummary) -> Result<(), StoreError>;

    /// The summary of the latest verification, if any was saved.
    async fn last_verification(&self) -> Result<Option<VerifySummary>, StoreError>;
}

/// The decision time series, merged across instances, and the instances' heartbeats.
///
/// Counts are kept in buckets of a minute and of an hour (each batch adds to both), each
/// bucket kept for its [`Retention`] past its end.
#[async_trait]
pub trait StatsStore: Send + Sync + 'static {
    /// Adds the counts of `batch` to their minute buckets and those minutes' hour buckets, in
    /// one atomic step, unless a batch of `batch.writer` numbered `batch.seq` or above was
    /// added already (a retry after a lost answer): then nothing changes. Returns whether
    /// the counts were added.
    async fn add_decisions(
        &self,
        batch: &StatsBatch,
        retention: Retention,
    ) -> Result<bool, StoreError>;

    /// `count` consecutive buckets of `resolution`, the first starting at `first` (Unix
    /// seconds, a multiple of the resolution): each bucket's cells and counts, in order
    /// (empty where nothing was counted or the bucket expired).
    async fn decision_buckets(
        &self,
        resolution: Resolution,
        first: u64,
        count: usize,
    ) -> Result<Vec<Vec<(Cell, u64)>>, StoreError>;

    /// Records an instance's heartbeat (replacing its previous one).
    async fn heartbeat(&self, instance: &InstanceRecord) -> Result<(), StoreError>;

    /// The instances whose last heartbeat is at or after `since`; older ones are forgotten.
    async fn instances(&self, since: Timestamp) -> Result<Vec<InstanceRecord>, StoreError>;
}

/// A store that provides every port: what the service runs on.
pub trait Store: OwnershipStore + SettingsStore + AuditStore + BackfillStore + StatsStore {}

impl<T: OwnershipStore + SettingsStore + AuditStore + BackfillStore + StatsStore> Store for T {}

#[cfg(test)]
mod tests {
    use super::JobCursor;

    fn place(millis: u64, id: &str) -> JobCursor {
        JobCursor {
            created_millis: millis,
            job_id: id.into(),
        }
    }

    #[test]
    fn job_places_read_back_and_sort_as_their_text() {
        let places = [
            place(999, "bf-z"),
            place(1_000, "bf-a"),
            place(1_000, "bf-b"),
            place(1_767_225_600_000, "bf-0123456789abcdef0123456789abcdef"),
        ];
        for pair in places.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_string() < pair[1].to_string(), "{pair:?}");
        }
        for p in &places {
            assert_eq!(p.to_string().parse::<JobCursor>().as_ref(), Ok(p));
        }
        assert_eq!(place(5, "bf-1").to_string(), "0000000000000005:bf-1");
        for bad in [
            "",
            "5:bf-1",
            "000000000000000x:bf-1",
            "0000000000000005:",
            "0000000000000005:bf 1",
            "0000000000000005:bf:1",
            "+000000000000005:bf-1",
        ] {
            assert!(bad.parse::<JobCursor>().is_err(), "{bad:?}");
        }
    }
}
