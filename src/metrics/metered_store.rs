//! Store calls timed and counted by operation: `gatehouse_store_call_duration_seconds` and
//! `gatehouse_store_errors_total{operation,kind}`, around whichever store the server runs on
//! (the owner cache, when on, sits in front: a cache hit is no store call).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::StoreMetrics;
use crate::records::{AuditEntry, AuditId, EnforcementSettings, HistoryEntry, Job, Sequenced};
use crate::records::{Cell, InstanceRecord, Resolution, Retention, StatsBatch, VerifySummary};
use crate::session_id::SessionId;
use crate::store::{
    AuditStore, BackfillStore, ClaimOutcome, Expected, JobCursor, OwnerChange, OwnershipStore,
    Released, SaveOutcome, SessionPage, SettingsFeed, SettingsStore, StatsStore, Store, StoreError,
};
use crate::timestamp::Timestamp;

/// `inner`, with every call measured.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: StoreMetrics,
}

impl MeteredStore {
    /// `inner` measured into `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: StoreMetrics) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let kind = result.as_ref().err().map(StoreError::kind);
        self.metrics.call(operation, started.elapsed(), kind);
        result
    }
}

#[async_trait]
impl OwnershipStore for MeteredStore {
    async fn owner(&self, session: &SessionId) -> Result<Option<String>, StoreError> {
        self.timed("owner", self.inner.owner(session)).await
    }

    async fn owners(&self, sessions: &[SessionId]) -> Result<Vec<Option<String>>, StoreError> {
        self.timed("owners", self.inner.owners(sessions)).await
    }

    async fn claim(&self, session: &SessionId, user: &str) -> Result<ClaimOutcome, StoreError> {
        self.timed("claim", self.inner.claim(session, user)).await
    }

    async fn set_owner(
        &self,
        session: &SessionId,
        owner: &str,
        expected: &Expected,
    ) -> Result<OwnerChange, StoreError> {
        self.timed("set_owner", self.inner.set_owner(session, owner, expected))
            .await
    }

    async fn release(
        &self,
        session: &SessionId,
        expected: &Expected,
    ) -> Result<OwnerChange, StoreError> {
        self.timed("release", self.inner.release(session, expected))
            .await
    }

    async fn user_sessions(
        &self,
        user: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, StoreError> {
        self.timed(
            "user_sessions",
            self.inner.user_sessions(user, cursor, limit),
        )
        .await
    }

    async fn count_owned(&self) -> Result<u64, StoreError> {
        self.timed("count_owned", self.inner.count_owned()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }
}

#[async_trait]
impl SettingsStore for MeteredStore {
    async fn load_settings(&self) -> Result<Option<EnforcementSettings>, StoreError> {
        self.timed("load_settings", self.inner.load_settings())
            .await
    }

    async fn save_settings(
        &self,
        expected: u64,
        next: &EnforcementSettings,
        entry: &HistoryEntry,
    ) -> Result<SaveOutcome, StoreError> {
        self.timed(
            "save_settings",
            self.inner.save_settings(expected, next, entry),
        )
        .await
    }

    async fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.timed("history", self.inner.history(before, limit))
            .await
    }

    async fn watch(&self) -> Result<SettingsFeed, StoreError> {
        self.timed("watch", self.inner.watch()).await
    }
}

#[async_trait]
impl AuditStore for MeteredStore {
    async fn append_audit(&self, writer: &str, events: &[Sequenced]) -> Result<usize, StoreError> {
        self.timed("append_audit", self.inner.append_audit(writer, events))
            .await
    }

    async fn audit_before(
        &self,
        before: Option<AuditId>,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.timed("audit_before", self.inner.audit_before(before, count))
            .await
    }

    async fn audit_after(
        &self,
        after: Option<AuditId>,
        count: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.timed("audit_after", self.inner.audit_after(after, count))
            .await
    }
}

#[async_trait]
impl BackfillStore for MeteredStore {
    async fn assign(&self, job: &str, owner: &str, sessions: &[String]) -> Result<u64, StoreError> {
        self.timed("assign", self.inner.assign(job, owner, sessions))
            .await
    }

    async fn release_assigned(
        &self,
        job: &str,
        owner: &str,
        sessions: &[String],
    ) -> Result<Released, StoreError> {
        self.timed(
            "release_assigned",
            self.inner.release_assigned(job, owner, sessions),
        )
        .await
    }

    async fn assigned_page(
        &self,
        job: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        self.timed(
            "assigned_page",
            self.inner.assigned_page(job, cursor, count),
        )
        .await
    }

    async fn assigned_count(&self, job: &str) -> Result<u64, StoreError> {
        self.timed("assigned_count", self.inner.assigned_count(job))
            .await
    }

    async fn owned_page(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        self.timed("owned_page", self.inner.owned_page(cursor, count))
            .await
    }

    async fn unindexed(&self, owned: &[(String, String)]) -> Result<u64, StoreError> {
        self.timed("unindexed", self.inner.unindexed(owned)).await
    }

    async fn save_job(&self, job: &Job) -> Result<(), StoreError> {
        self.timed("save_job", self.inner.save_job(job)).await
    }

    async fn load_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.timed("load_job", self.inner.load_job(id)).await
    }

    async fn jobs(
        &self,
        before: Option<&JobCursor>,
        limit: usize,
    ) -> Result<(Vec<Job>, Option<JobCursor>), StoreError> {
        self.timed("jobs", self.inner.jobs(before, limit)).await
    }

    async fn save_verification(&self, summary: &VerifySummary) -> Result<(), StoreError> {
        self.timed("save_verification", self.inner.save_verification(summary))
            .await
    }

    async fn last_verification(&self) -> Result<Option<VerifySummary>, StoreError> {
        self.timed("last_verification", self.inner.last_verification())
            .await
    }
}

#[async_trait]
impl StatsStore for MeteredStore {
    async fn add_decisions(
        &self,
        batch: &StatsBatch,
        retention: Retention,
    ) -> Result<bool, StoreError> {
        self.timed("add_decisions", self.inner.add_decisions(batch, retention))
            .await
    }

    async fn decision_buckets(
        &self,
        resolution: Resolution,
        first: u64,
        count: usize,
    ) -> Result<Vec<Vec<(Cell, u64)>>, StoreError> {
        self.timed(
            "decision_buckets",
            self.inner.decision_buckets(resolution, first, count),
        )
        .await
    }

    async fn heartbeat(&self, instance: &InstanceRecord) -> Result<(), StoreError> {
        self.timed("heartbeat", self.inner.heartbeat(instance))
            .await
    }

    async fn instances(&self, since: Timestamp) -> Result<Vec<InstanceRecord>, StoreError> {
        self.timed("instances", self.inner.instances(since)).await
    }
}
