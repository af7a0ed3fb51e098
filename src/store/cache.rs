//! The owner cache (DESIGN §5): a bounded in-process cache of session owners in front of the
//! store, kept true by invalidations every instance receives.
//!
//! - Every ownership write (claim, transfer, release, backfill assign and rollback) publishes
//!   the ids it changed on `{prefix}owners:changed`, from inside the same Redis script or
//!   pipeline as the write, before the write is acknowledged.
//! - Each instance subscribes ([`OwnerCache::spawn_watch`]) and drops those entries. Writes
//!   through this instance also drop them at once.
//! - A lookup that misses reads the store and fills the cache only if no invalidation arrived
//!   meanwhile (an epoch counter), so a read that raced a write never installs the old owner.
//! - While the subscription is down (at start, after losing the connection) the cache is
//!   bypassed and emptied; it is used again once re-subscribed (and emptied again then, for the
//!   writes missed in between).
//!
//! - A subscription can die silently (a half-open TCP connection, a partition that drops
//!   packets): the watcher publishes a heartbeat every [`HEARTBEAT_EVERY`] on the same channel
//!   and takes the subscription for lost when it has heard nothing for [`HEARTBEAT_DEADLINE`].
//!   When Redis fails outright the connection closes and the loss is seen at once.
//!
//! A cached owner is therefore stale at most until the write's announcement reaches this
//! instance (the propagation bound measured by `bench/`, about a millisecond), or, when the
//! subscription dies silently, [`HEARTBEAT_DEADLINE`] after the last message it delivered.
//! While Redis is down no owner can change, so answers served from the cache in the instant
//! before the closed connection is noticed are still true. Entries also expire
//! after a TTL, a safety net for owner keys that expire in Redis (`GATEHOUSE_OWNER_TTL`), whose
//! expiry announces nothing. Migrations change no owner, so they need no invalidation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use moka::sync::Cache;
use tokio_util::sync::CancellationToken;

use super::redis::OWNERS_HEARTBEAT;
use super::{
    AuditStore, BackfillStore, ClaimOutcome, Expected, JobCursor, OwnerChange, OwnerChanges,
    OwnerFeed, OwnershipStore, Released, SaveOutcome, SessionPage, SettingsFeed, SettingsStore,
    StatsStore, Store, StoreError,
};
use crate::records::{AuditEntry, AuditId, Job, Sequenced};
use crate::records::{Cell, InstanceRecord, Resolution, Retention, StatsBatch, VerifySummary};
use crate::records::{EnforcementSettings, HistoryEntry};
use crate::session_id::SessionId;
use crate::tasks;

/// How often the watcher publishes a heartbeat on the owner-change channel.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// Silence after which the subscription is taken for lost (a half-open connection, a silent
/// partition): the cache is bypassed and emptied, and the watcher subscribes again.
pub const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(1);

/// The cache and its state.
pub struct OwnerCache {
    /// foldhash (randomly seeded per process) instead of SipHash: a third of the lookup's cost.
    entries: Cache<String, Option<String>, foldhash::fast::RandomState>,
    /// Bumped by every invalidation: a fill started before a bump is dropped.
    epoch: AtomicU64,
    /// Whether invalidations are being received (the cache is used only then).
    live: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl OwnerCache {
    /// A cache of at most `capacity` owners, each kept at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            entries: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Whether the cache is in use (subscribed to invalidations).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Entries held now (approximate: moka counts lazily).
    pub fn entries(&self) -> u64 {
        self.entries.entry_count()
    }

    /// (hits, misses) so far: lookups answered from the cache, and those sent to the store
    /// while the cache was in use.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn invalidate(&self, session: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(session);
    }

    fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }

    fn get(&self, session: &str) -> Option<Option<String>> {
        if !self.is_live() {
            return None;
        }
        let found = self.entries.get(session);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn fill(&self, session: &str, owner: Option<String>, epoch: u64) {
        if self.is_live() && self.epoch.load(Ordering::Acquire) == epoch {
            self.entries.insert(session.to_owned(), owner);
        }
    }

    /// Follows the owner-change feed of `redis` (a Redis store) until `cancel` fires: invalidates what it
    /// is told, and bypasses and empties the cache whenever the subscription is down.
    pub fn spawn_watch(
        self: &Arc<Self>,
        redis: Arc<dyn OwnerChanges>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let (this, redis) = (&this, &redis);
            let subscribe = || redis.owner_changes();
            let follow = |feed| async move {
                // Writes made while unsubscribed were not announced to us.
                this.clear();
                this.live.store(true, Ordering::Release);
                let lost = this.follow(feed, redis).await;
                this.live.store(false, Ordering::Release);
                this.clear();
                tracing::warn!(
                    cause = lost,
                    "owner invalidations lost: owner cache bypassed until re-subscribed"
                );
            };
            tasks::resubscribe(&cancel, "owner changes", subscribe, follow).await;
        })
    }

    /// Applies the invalidations of `feed` until it ends or falls silent (no heartbeat, which
    /// this instance itself publishes on `redis`): why it stopped.
    async fn follow(&self, mut feed: OwnerFeed, redis: &Arc<dyn OwnerChanges>) -> &'static str {
        let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                ids = feed.next() => match ids {
                    Some(ids) => {
                        heard = tokio::time::Instant::now();
                        ids.iter()
                            .filter(|id| *id != OWNERS_HEARTBEAT)
                            .for_each(|id| self.invalidate(id));
                    }
                    None => return "subscription closed",
                },
                _ = beat.tick() => {
                    // Published on another task: a slow Redis must not hold up the
                    // invalidations already arriving.
                    let redis = Arc::clone(redis);
                    tokio::spawn(async move { redis.owners_heartbeat().await });
                }
                () = tokio::time::sleep_until(heard + HEARTBEAT_DEADLINE) => {
                    return "no heartbeat";
                }
            }
        }
    }
}

/// A store with the owner cache in front of its owner lookups; everything else goes straight
/// through, and writes through it drop their entries at once.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    cache: Arc<OwnerCache>,
}

impl CachedStore {
    /// `inner` behind `cache`.
    pub fn new(inner: Arc<dyn Store>, cache: Arc<OwnerCache>) -> Self {
        Self { inner, cache }
    }
}

#[async_trait]
impl OwnershipStore for CachedStore {
    async fn owner(&self, session: &SessionId) -> Result<Option<String>, StoreError> {
        if let Some(owner) = self.cache.get(session.as_str()) {
            return Ok(owner);
        }
        let epoch = self.cache.epoch.load(Ordering::Acquire);
        let owner = self.inner.owner(session).await?;
        self.cache.fill(session.as_str(), owner.clone(), epoch);
        Ok(owner)
    }

    async fn owners(&self, sessions: &[SessionId]) -> Result<Vec<Option<String>>, StoreError> {
        let mut result: Vec<Option<Option<String>>> = sessions
            .iter()
            .map(|s| self.cache.get(s.as_str()))
            .collect();
        let missing: Vec<SessionId> = sessions
            .iter()
            .zip(&result)
            .filter(|(_, cached)| cached.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        if !missing.is_empty() {
            let epoch = self.cache.epoch.load(Ordering::Acquire);
            let mut read = self.inner.owners(&missing).await?.into_iter();
            for (session, slot) in sessions.iter().zip(result.iter_mut()) {
                if slot.is_none() {
                    let owner = read.next().flatten();
                    self.cache.fill(session.as_str(), owner.clone(), epoch);
                    *slot = Some(owner);
                }
            }
        }
        Ok(result.into_iter().map(Option::flatten).collect())
    }

    async fn claim(&self, session: &SessionId, user: &str) -> Result<ClaimOutcome, StoreError> {
        let outcome = self.inner.claim(session, user).await;
        self.cache.invalidate(session.as_str());
        outcome
    }

    async fn set_owner(
        &self,
        session: &SessionId,
        owner: &str,
        expected: &Expected,
    ) -> Result<OwnerChange, StoreError> {
        let change = self.inner.set_owner(session, owner, expected).await;
        self.cache.invalidate(session.as_str());
        change
    }

    async fn release(
        &self,
        session: &SessionId,
        expected: &Expected,
    ) -> Result<OwnerChange, StoreError> {
        let change = self.inner.release(session, expected).await;
        self.cache.invalidate(session.as_str());
        change
    }

    async fn user_sessions(
        &self,
        user: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, StoreError> {
        self.inner.user_sessions(user, cursor, limit).await
    }

    async fn count_owned(&self) -> Result<u64, StoreError> {
        self.inner.count_owned().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[async_trait]
impl SettingsStore for CachedStore {
    async fn load_settings(&self) -> Result<Option<EnforcementSettings>, StoreError> {
        self.inner.load_settings().await
    }

    async fn save_settings(
        &self,
        expected: u64,
        next: &EnforcementSettings,
        entry: &HistoryEntry,
    ) -> Result<SaveOutcome, StoreError> {
        self.inner.save_settings(expected, next, entry).await
    }

    async fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.inner.history(before, limit).await
    }

    async fn watch(&self) -> Result<SettingsFeed, StoreError> {
        self.inner.watch().await
    }
}

#[async_trait]
impl AuditStore for CachedStore {
    async fn append_audit(&self, writer: &str, events: &[Sequenced]) -> Result<usize, StoreError> {
        self.inner.append_audit(writer, events).await
    }

    async fn audit_before(
        &self,
        before: Option<AuditId>,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_before(before, count).await
    }

    async fn audit_after(
        &self,
        after: Option<AuditId>,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_after(after, count).await
    }
}

#[async_trait]
impl BackfillStore for CachedStore {
    async fn assign(&self, job: &str, owner: &str, sessions: &[String]) -> Result<u64, StoreError> {
        let assigned = self.inner.assign(job, owner, sessions).await;
        sessions.iter().for_each(|s| self.cache.invalidate(s));
        assigned
    }

    async fn release_assigned(
        &self,
        job: &str,
        owner: &str,
        sessions: &[String],
    ) -> Result<Released, StoreError> {
        let released = self.inner.release_assigned(job, owner, sessions).await;
        sessions.iter().for_each(|s| self.cache.invalidate(s));
        released
    }

    async fn assigned_page(
        &self,
        job: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        self.inner.assigned_page(job, cursor, count).await
    }

    async fn assigned_count(&self, job: &str) -> Result<u64, StoreError> {
        self.inner.assigned_count(job).await
    }

    async fn owned_page(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        self.inner.owned_page(cursor, count).await
    }

    async fn unindexed(&self, owned: &[(String, String)]) -> Result<u64, StoreError> {
        self.inner.unindexed(owned).await
    }

    async fn save_job(&self, job: &Job) -> Result<(), StoreError> {
        self.inner.save_job(job).await
    }

    async fn load_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.inner.load_job(id).await
    }

    async fn jobs(
        &self,
        before: Option<&JobCursor>,
        limit: usize,
    ) -> Result<(Vec<Job>, Option<JobCursor>), StoreError> {
        self.inner.jobs(before, limit).await
    }

    async fn save_verification(&self, summary: &VerifySummary) -> Result<(), StoreError> {
        self.inner.save_verification(summary).await
    }

    async fn last_verification(&self) -> Result<Option<VerifySummary>, StoreError> {
        self.inner.last_verification().await
    }
}

#[async_trait]
impl StatsStore for CachedStore {
    async fn add_decisions(
        &self,
        batch: &StatsBatch,
        retention: Retention,
    ) -> Result<bool, StoreError> {
        self.inner.add_decisions(batch, retention).await
    }

    async fn decision_buckets(
        &self,
        resolution: Resolution,
        first: u64,
        count: usize,
    ) -> Result<Vec<Vec<(Cell, u64)>>, StoreError> {
        self.inner.decision_buckets(resolution, first, count).await
    }

    async fn heartbeat(&self, instance: &InstanceRecord) -> Result<(), StoreError> {
        self.inner.heartbeat(instance).await
    }

    async fn instances(
        &self,
        since: crate::timestamp::Timestamp,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.inner.instances(since).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn id(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn serves_hits_only_while_live_and_never_fills_across_an_invalidation() {
        let inner = Arc::new(MemoryStore::default());
        let cache = OwnerCache::new(100, Duration::from_secs(60));
        let store = CachedStore::new(inner.clone(), cache.clone());
        inner.claim(&id("s1"), "alice").await.unwrap();

        // Not live: always the store.
        assert_eq!(
            store.owner(&id("s1")).await.unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(cache.stats(), (0, 0));
        cache.live.store(true, Ordering::Release);
        store.owner(&id("s1")).await.unwrap();
        store.owner(&id("s1")).await.unwrap();
        assert_eq!(cache.stats(), (1, 1));

        // A write elsewhere (straight to the inner store) is seen once announced.
        inner
            .set_owner(&id("s1"), "bob", &Expected::Any)
            .await
            .unwrap();
        assert_eq!(
            store.owner(&id("s1")).await.unwrap().as_deref(),
            Some("alice"),
            "not yet announced"
        );
        cache.invalidate("s1");
        assert_eq!(
            store.owner(&id("s1")).await.unwrap().as_deref(),
            Some("bob")
        );

        // A fill that started before an invalidation is dropped.
        let epoch = cache.epoch.load(Ordering::Acquire);
        cache.invalidate("s2");
        cache.fill("s2", Some("stale".into()), epoch);
        assert!(cache.entries.get("s2").is_none());

        // Writes through the cached store drop their entry at once; batches mix hits and misses.
        store.release(&id("s1"), &Expected::Any).await.unwrap();
        store.claim(&id("s3"), "carol").await.unwrap();
        let owners = store.owners(&[id("s1"), id("s3"), id("s4")]).await.unwrap();
        assert_eq!(owners, [None, Some("carol".into()), None]);
    }
}
