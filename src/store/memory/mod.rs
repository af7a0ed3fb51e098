//! The embedded in-memory store: the default for `cargo run` without `REDIS_URL`.
//!
//! Same contract as the Redis adapter (the contract suite runs against both); state lives as
//! long as the process. Locks are never held across an `.await`. An owner and its index entry
//! change together under the one `owners` lock (`Owners::put`, `Owners::remove`), as the Redis
//! adapter's scripts change both in one step. Nothing here has an unknown outcome: a call
//! either returns what it did or does nothing.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::{
    AuditStore, BackfillStore, ClaimOutcome, Expected, JobCursor, OwnerChange, OwnershipStore,
    Released, SaveOutcome, SessionPage, SettingsFeed, SettingsStore, StoreError,
};
use crate::records::{AuditEntry, AuditId, Job, Sequenced, VerifySummary};
use crate::records::{EnforcementSettings, HistoryEntry};
use crate::session_id::SessionId;

mod stats;

/// Cursor prefix, so a Redis cursor handed to this store is refused rather than misread.
const CURSOR_PREFIX: &str = "m:";

#[derive(Default)]
struct Owners {
    owners: HashMap<String, (String, Option<Instant>)>,
    index: HashMap<String, BTreeSet<String>>,
}

impl Owners {
    fn get(&self, session: &str) -> Option<&str> {
        match self.owners.get(session) {
            Some((owner, expires)) if expires.is_none_or(|at| at > Instant::now()) => Some(owner),
            _ => None,
        }
    }

    fn put(&mut self, session: &str, owner: &str, ttl: Option<Duration>) {
        let expires = ttl.map(|ttl| Instant::now() + ttl);
        if let Some((old, _)) = self
            .owners
            .insert(session.to_owned(), (owner.to_owned(), expires))
        {
            self.unindex(&old, session);
        }
        self.index
            .entry(owner.to_owned())
            .or_default()
            .insert(session.to_owned());
    }

    fn remove(&mut self, session: &str) {
        if let Some((old, _)) = self.owners.remove(session) {
            self.unindex(&old, session);
        }
    }

    fn unindex(&mut self, owner: &str, session: &str) {
        if let Some(set) = self.index.get_mut(owner) {
            set.remove(session);
            if set.is_empty() {
                self.index.remove(owner);
            }
        }
    }
}

#[derive(Default)]
struct Settings {
    current: Option<EnforcementSettings>,
    history: Vec<HistoryEntry>,
}

#[derive(Default)]
struct Jobs {
    records: HashMap<String, Job>,
    /// Every saved job's place in the listing (as the Redis adapter's sorted set).
    listing: BTreeSet<JobCursor>,
    assigned: HashMap<String, BTreeSet<String>>,
    last_verification: Option<VerifySummary>,
}

/// The default bound of the in-memory audit stream.
pub const DEFAULT_AUDIT_MAXLEN: usize = 1_000_000;

struct Audit {
    entries: VecDeque<AuditEntry>,
    writers: HashMap<String, u64>,
    last: AuditId,
    maxlen: usize,
}

impl Audit {
    /// The next id, as Redis makes them: the current millisecond, or the last id's
    /// millisecond with the next sequence when the clock has not moved on.
    fn next_id(&mut self) -> AuditId {
        let now = crate::timestamp::Timestamp::now().unix_millis();
        self.last = if now > self.last.millis {
            AuditId {
                millis: now,
                seq: 0,
            }
        } else {
            AuditId {
                millis: self.last.millis,
                seq: self.last.seq + 1,
            }
        };
        self.last
    }
}

/// In-process implementation of every store port.
pub struct MemoryStore {
    owners: Mutex<Owners>,
    jobs: Mutex<Jobs>,
    settings: Mutex<Settings>,
    audit: Mutex<Audit>,
    stats: Mutex<stats::Stats>,
    owner_ttl: Option<Duration>,
    announcements: broadcast::Sender<EnforcementSettings>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(None)
    }
}

impl MemoryStore {
    /// An empty store; owner entries expire after `owner_ttl` when given (persistent otherwise).
    pub fn new(owner_ttl: Option<Duration>) -> Self {
        Self {
            owners: Mutex::default(),
            jobs: Mutex::default(),
            settings: Mutex::default(),
            stats: Mutex::default(),
            audit: Mutex::new(Audit {
                entries: VecDeque::new(),
                writers: HashMap::new(),
                last: AuditId { millis: 0, seq: 0 },
                maxlen: DEFAULT_AUDIT_MAXLEN,
            }),
            owner_ttl,
            announcements: broadcast::channel(64).0,
        }
    }

    /// Bounds the audit stream to `maxlen` entries (oldest dropped first, like `MAXLEN`).
    pub fn with_audit_maxlen(self, maxlen: usize) -> Self {
        self.audit().maxlen = maxlen.max(1);
        self
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn audit(&self) -> MutexGuard<'_, Audit> {
        self.audit.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn owners(&self) -> MutexGuard<'_, Owners> {
        // A poisoned lock only means another thread panicked mid-update of plain maps; the
        // maps are still valid, so carry on rather than take the service down.
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl OwnershipStore for MemoryStore {
    async fn owner(&self, session: &SessionId) -> Result<Option<String>, StoreError> {
        Ok(self.owners().get(session.as_str()).map(str::to_owned))
    }

    async fn owners(&self, sessions: &[SessionId]) -> Result<Vec<Option<String>>, StoreError> {
        let owners = self.owners();
        Ok(sessions
            .iter()
            .map(|s| owners.get(s.as_str()).map(str::to_owned))
            .collect())
    }

    async fn claim(&self, session: &SessionId, user: &str) -> Result<ClaimOutcome, StoreError> {
        let mut owners = self.owners();
        Ok(match owners.get(session.as_str()) {
            Some(owner) if owner == user => ClaimOutcome::AlreadyOwned,
            Some(owner) => ClaimOutcome::OwnedByOther(owner.to_owned()),
            None => {
                owners.put(session.as_str(), user, self.owner_ttl);
                ClaimOutcome::Claimed
            }
        })
    }

    async fn set_owner(
        &self,
        session: &SessionId,
        owner: &str,
        expected: &Expected,
    ) -> Result<OwnerChange, StoreError> {
        let mut owners = self.owners();
        let current = owners.get(session.as_str()).map(str::to_owned);
        if !expected.matches(current.as_deref()) {
            return Ok(OwnerChange::Mismatch { actual: current });
        }
        owners.put(session.as_str(), owner, self.owner_ttl);
        Ok(OwnerChange::Done { previous: current })
    }

    async fn release(
        &self,
        session: &SessionId,
        expected: &Expected,
    ) -> Result<OwnerChange, StoreError> {
        let mut owners = self.owners();
        let current = owners.get(session.as_str()).map(str::to_owned);
        if !expected.matches(current.as_deref()) {
            return Ok(OwnerChange::Mismatch { actual: current });
        }
        owners.remove(session.as_str());
        Ok(OwnerChange::Done { previous: current })
    }

    async fn user_sessions(
        &self,
        user: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, StoreError> {
        let after = match cursor {
            None => None,
            Some(c) => Some(
                c.strip_prefix(CURSOR_PREFIX)
                    .filter(|id| SessionId::parse_exact(id).is_ok())
                    .ok_or(StoreError::InvalidCursor)?,
            ),
        };
        let owners = self.owners();
        let Some(set) = owners.index.get(user) else {
            return Ok(SessionPage {
                sessions: Vec::new(),
                next_cursor: None,
            });
        };
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        let mut rest = set.range((start, Bound::Unbounded));
        let sessions: Vec<String> = rest.by_ref().take(limit).cloned().collect();
        let next_cursor = match (rest.next(), sessions.last()) {
            (Some(_), Some(last)) => Some(format!("{CURSOR_PREFIX}{last}")),
            _ => None,
        };
        Ok(SessionPage {
            sessions,
            next_cursor,
        })
    }

    async fn count_owned(&self) -> Result<u64, StoreError> {
        let owners = self.owners();
        let live = owners
            .owners
            .keys()
            .filter(|session| owners.get(session).is_some())
            .count();
        Ok(live as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl SettingsStore for MemoryStore {
    async fn load_settings(&self) -> Result<Option<EnforcementSettings>, StoreError> {
        Ok(self.settings().current.clone())
    }

    async fn save_settings(
        &self,
        expected: u64,
        next: &EnforcementSettings,
        entry: &HistoryEntry,
    ) -> Result<SaveOutcome, StoreError> {
        let mut settings = self.settings();
        let current = settings.current.as_ref().map_or(0, |s| s.version);
        if current != expected || next.version <= expected {
            return Ok(SaveOutcome::VersionConflict { current });
        }
        settings.current = Some(next.clone());
        settings.history.push(entry.clone());
        // No subscriber is fine: nobody to tell.
        let _ = self.announcements.send(next.clone());
        Ok(SaveOutcome::Saved)
    }

    async fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let settings = self.settings();
        Ok(settings
            .history
            .iter()
            .rev()
            .filter(|e| before.is_none_or(|b| e.version < b))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn watch(&self) -> Result<SettingsFeed, StoreError> {
        let receiver = self.announcements.subscribe();
        Ok(
            futures_util::stream::unfold(receiver, |mut receiver| async move {
                match receiver.recv().await {
                    Ok(settings) => Some((Some(settings), receiver)),
                    // Fell behind: say so, and the watcher re-reads the record.
                    Err(broadcast::error::RecvError::Lagged(_)) => Some((None, receiver)),
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            })
            .boxed(),
        )
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, writer: &str, events: &[Sequenced]) -> Result<usize, StoreError> {
        let mut audit = self.audit();
        let mut last = audit.writers.get(writer).copied().unwrap_or(0);
        let mut written = 0;
        for sequenced in events {
            if sequenced.seq <= last {
                continue;
            }
            let id = audit.next_id();
            audit.entries.push_back(AuditEntry {
                id,
                event: sequenced.event.clone(),
            });
            last = sequenced.seq;
            written += 1;
        }
        while audit.entries.len() > audit.maxlen {
            audit.entries.pop_front();
        }
        audit.writers.insert(writer.to_owned(), last);
        Ok(written)
    }

    async fn audit_before(
        &self,
        before: Option<AuditId>,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let audit = self.audit();
        // Entries are in id order: find the first at or after `before`, walk back from it.
        let end = before.map_or(audit.entries.len(), |before| {
            audit.entries.partition_point(|e| e.id < before)
        });
        Ok(audit
            .entries
            .range(..end)
            .rev()
            .take(count)
            .cloned()
            .collect())
    }

    async fn audit_after(
        &self,
        after: Option<AuditId>,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let audit = self.audit();
        let start = after.map_or(0, |after| audit.entries.partition_point(|e| e.id <= after));
        Ok(audit.entries.range(start..).take(count).cloned().collect())
    }
}

#[async_trait]
impl BackfillStore for MemoryStore {
    async fn assign(&self, job: &str, owner: &str, sessions: &[String]) -> Result<u64, StoreError> {
        // Lock order: owners, then jobs (as everywhere below).
        let mut owners = self.owners();
        let mut jobs = self.jobs();
        let assigned = jobs.assigned.entry(job.to_owned()).or_default();
        let mut count = 0;
        for session in sessions {
            if owners.get(session).is_none() {
                owners.put(session, owner, self.owner_ttl);
                assigned.insert(session.clone());
                count += 1;
            }
        }
        Ok(count)
    }

    async fn release_assigned(
        &self,
        job: &str,
        owner: &str,
        sessions: &[String],
    ) -> Result<Released, StoreError> {
        let mut owners = self.owners();
        let mut jobs = self.jobs();
        let mut result = Released::default();
        for session in sessions {
            if owners.get(session) == Some(owner) {
                owners.remove(session);
                result.released += 1;
            } else {
                result.kept.push(session.clone());
            }
            if let Some(set) = jobs.assigned.get_mut(job) {
                set.remove(session);
            }
        }
        Ok(result)
    }

    async fn assigned_page(
        &self,
        job: &str,
        _cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        // Released members leave the set at once: the front is always what is left.
        let jobs = self.jobs();
        let Some(set) = jobs.assigned.get(job) else {
            return Ok((0, Vec::new()));
        };
        let page: Vec<String> = set.iter().take(count).cloned().collect();
        let next = u64::from(set.len() > page.len());
        Ok((next, page))
    }

    async fn assigned_count(&self, job: &str) -> Result<u64, StoreError> {
        Ok(self.jobs().assigned.get(job).map_or(0, |s| s.len() as u64))
    }

    async fn unindexed(&self, owned: &[(String, String)]) -> Result<u64, StoreError> {
        let owners = self.owners();
        let listed = |(session, owner): &&(String, String)| {
            owners
                .index
                .get(owner)
                .is_some_and(|set| set.contains(session))
        };
        Ok(owned.iter().filter(|pair| !listed(pair)).count() as u64)
    }

    async fn owned_page(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        // The cursor is an offset into the sorted live ids: stable enough for a report.
        let owners = self.owners();
        let mut live: Vec<&String> = owners
            .owners
            .keys()
            .filter(|s| owners.get(s).is_some())
            .collect();
        live.sort();
        let start = usize::try_from(cursor)
            .unwrap_or(usize::MAX)
            .min(live.len());
        let end = (start + count.max(1)).min(live.len());
        let page = live[start..end].iter().map(|s| (*s).clone()).collect();
        let next = if end == live.len() { 0 } else { end as u64 };
        Ok((next, page))
    }

    async fn save_job(&self, job: &Job) -> Result<(), StoreError> {
        let mut jobs = self.jobs();
        jobs.listing.insert(JobCursor::of(job));
        jobs.records.insert(job.job_id.clone(), job.clone());
        Ok(())
    }

    async fn load_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        Ok(self.jobs().records.get(id).cloned())
    }

    async fn jobs(
        &self,
        before: Option<&JobCursor>,
        limit: usize,
    ) -> Result<(Vec<Job>, Option<JobCursor>), StoreError> {
        let jobs = self.jobs();
        let upper = before.map_or(Bound::Unbounded, Bound::Excluded);
        let mut places = jobs.listing.range((Bound::Unbounded, upper)).rev();
        let page: Vec<&JobCursor> = places.by_ref().take(limit).collect();
        let next = match (places.next(), page.last()) {
            (Some(_), Some(last)) => Some((*last).clone()),
            _ => None,
        };
        let records = page
            .iter()
            .filter_map(|place| jobs.records.get(&place.job_id).cloned())
            .collect();
        Ok((records, next))
    }

    async fn save_verification(&self, summary: &VerifySummary) -> Result<(), StoreError> {
        self.jobs().last_verification = Some(summary.clone());
        Ok(())
    }

    async fn last_verification(&self) -> Result<Option<VerifySummary>, StoreError> {
        Ok(self.jobs().last_verification.clone())
    }
}
