//! Backfill: give legacy sessions (no owner) a default owner, safely (DESIGN §3 Backfill, §4).
//!
//! - A job reads session ids from legacy sources ([`sources`]) and/or an explicit list, and in
//!   batches makes the default owner the owner of each session that has none (`SET NX`: an
//!   existing owner is never overwritten, it is counted as `skipped_owned`). Each batch is one
//!   atomic store step that also records the session in the job's assigned set, so the job
//!   knows exactly what it assigned.
//! - A dry run counts what would be assigned and writes no owner or index key (only its job
//!   record).
//! - Jobs are records in the store: a job interrupted by a restart shows as `interrupted` and
//!   can be resumed (or re-run: assignments are idempotent).
//! - [`Backfill::rollback`] releases exactly the sessions a job assigned that still have the
//!   owner it gave them; a session reassigned since is left alone and reported.
//! - [`Backfill::verify`] compares the ids of the sources with the owners in the store
//!   (`missing`, `extra` via `SCAN`, `per_user`, `complete`).
//!
//! Job starts, finishes and rollbacks are audit events.

mod routes;
pub mod sources;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use self::sources::{Found, Roots};
use crate::audit::{Audit, AuditEvent};
use crate::records::job::FileError;
use crate::session_id::{SessionId, SessionIds};
use crate::store::{JobCursor, Store, StoreError};
use crate::tasks::{self, Backoff, Tasks};
use crate::timestamp::Timestamp;

pub use self::routes::{JobPage, JobSummary, routes};
pub use crate::records::job::{Counts, Job, JobState, Rollback};

/// Sessions per store step.
pub const BATCH: usize = 1000;
/// Errors kept in a job record (the count is exact).
const MAX_ERRORS_KEPT: usize = 1000;
/// Kept (reassigned) sessions listed in a rollback report.
const MAX_KEPT_LISTED: usize = 100;
/// A running job whose record has not moved for this long is reported as interrupted.
const STALE_AFTER: Duration = Duration::from_secs(30);
/// Store failures tolerated in a row before a job fails.
const STORE_ATTEMPTS: u32 = 8;
/// The waits between those attempts: 100 ms doubling to 5 s.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// What a job is asked to do.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// Count only.
    pub dry_run: bool,
    /// The owner to give.
    pub default_owner: String,
    /// Resolved source directories.
    pub sources: Vec<PathBuf>,
    /// Explicit session ids.
    pub session_ids: Vec<String>,
    /// Who asks.
    pub actor: String,
}

/// Why a backfill call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// No such job.
    #[error("no backfill job {0}")]
    NotFound(String),
    /// The job is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The verification report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// Unique session ids in the sources.
    pub expected: u64,
    /// Of those, how many have an owner.
    pub owned: u64,
    /// Of those, how many have none.
    pub missing: u64,
    /// Sessions with an owner that are not in the sources.
    pub extra: u64,
    /// Owned expected sessions missing from their owner's index (`GET
    /// /v1/users/{user}/sessions`): 0 on one server; on a Redis Cluster, drift the repair has
    /// not mended yet (README, Production Redis).
    pub unindexed: u64,
    /// Owners of the expected sessions, with their counts.
    pub per_user: BTreeMap<String, u64>,
    /// Every expected session has an owner.
    pub complete: bool,
    /// Up to 100 missing ids.
    pub missing_sample: Vec<String>,
    /// Unreadable files and invalid ids in the sources.
    pub errors: Vec<FileError>,
}

/// What a rollback call did: the job's record, and what this call released.
///
/// Rolling back a job that was rolled back before releases nothing more: `released` is then 0
/// and `already_rolled_back` true, and the record (with the first rollback's `rollback`
/// report) is left as it was: no change saved, no audit event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RollbackOutcome {
    /// The job's record.
    #[serde(flatten)]
    pub job: Job,
    /// Sessions this call released (`rollback.released` counts every rollback of the job).
    pub released: u64,
    /// The job had been rolled back before this call, and this call released nothing.
    pub already_rolled_back: bool,
}

/// Runs backfill jobs against a store.
#[derive(Clone)]
pub struct Backfill {
    store: Arc<dyn Store>,
    roots: Roots,
    audit: Audit,
    session_ids: SessionIds,
    /// Where jobs started over the API run: owned by the server, stopped at shutdown.
    jobs: Tasks,
}

impl Backfill {
    /// Backfill over `store`, reading sources inside `roots`, auditing through `audit`.
    pub fn new(store: Arc<dyn Store>, roots: Roots, audit: Audit) -> Self {
        Self {
            store,
            roots,
            audit,
            session_ids: SessionIds::default(),
            jobs: Tasks::new(),
        }
    }

    /// Runs the jobs started over the API as tasks of `jobs`: at its shutdown a running job
    /// stops after its current batch and is recorded as interrupted (resume it later).
    pub fn with_jobs(mut self, jobs: Tasks) -> Self {
        self.jobs = jobs;
        self
    }

    /// Runs `job` in the background, as one of the jobs' tasks.
    pub fn spawn(&self, job: Job, request: JobRequest) {
        let backfill = self.clone();
        self.jobs.spawn(async move {
            backfill.run(job, request, |_, _| {}).await;
        });
    }

    /// Reads the ids of sources and `session_ids` lists with `policy` (default canonical), as
    /// every other entry point does.
    pub fn with_session_ids(mut self, policy: SessionIds) -> Self {
        self.session_ids = policy;
        self
    }

    /// The allowed roots.
    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// A new job record for `request` (saved, not yet run).
    pub async fn create(&self, request: &JobRequest) -> Result<Job, StoreError> {
        let now = Timestamp::now();
        let job = Job {
            job_id: format!("bf-{}", uuid::Uuid::new_v4().simple()),
            state: JobState::Running,
            dry_run: request.dry_run,
            default_owner: request.default_owner.clone(),
            sources: request
                .sources
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            explicit_ids: request.session_ids.len() as u64,
            actor: request.actor.clone(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            counts: Counts::default(),
            errors: Vec::new(),
            rollback: None,
            failure: None,
        };
        self.save(&job).await?;
        self.audit_event(&job, "backfill:start", json!({ "dry_run": job.dry_run }));
        Ok(job)
    }

    /// A job's record, with `interrupted` for a running job whose record stopped moving.
    pub async fn job(&self, id: &str) -> Result<Job, BackfillError> {
        let job = self
            .store
            .load_job(id)
            .await?
            .ok_or_else(|| BackfillError::NotFound(id.to_owned()))?;
        Ok(as_seen_now(job))
    }

    /// Up to `limit` job records, newest first, older than `before` when given (as
    /// [`Self::job`] shows each), and the cursor of the next page when there are more.
    pub async fn jobs(
        &self,
        before: Option<&JobCursor>,
        limit: usize,
    ) -> Result<(Vec<Job>, Option<JobCursor>), StoreError> {
        let (jobs, next) = self.store.jobs(before, limit).await?;
        Ok((jobs.into_iter().map(as_seen_now).collect(), next))
    }

    async fn save(&self, job: &Job) -> Result<(), StoreError> {
        self.store.save_job(job).await
    }

    fn audit_event(&self, job: &Job, what: &str, detail: serde_json::Value) {
        let mut detail = detail;
        detail["job_id"] = json!(job.job_id);
        detail["default_owner"] = json!(job.default_owner);
        detail["counts"] = json!(job.counts);
        self.audit.record(AuditEvent::change(
            Timestamp::now(),
            what.to_owned(),
            job.actor.clone(),
            self.audit.instance(),
            detail,
        ));
    }

    /// Reads the sources and runs `job` to its end, calling `progress(processed, total)`
    /// between batches. Failures end up in the job record.
    pub async fn run(&self, mut job: Job, request: JobRequest, progress: impl Fn(u64, u64)) -> Job {
        let sources = request.sources.clone();
        let session_ids = self.session_ids;
        let found = tokio::task::spawn_blocking(move || {
            let mut found = Found::new(session_ids);
            sources::scan(&sources, &mut found);
            found.add_ids(request.session_ids.iter().map(String::as_str));
            found
        })
        .await
        .unwrap_or_default();
        job.counts.files = found.files;
        job.counts.found = found.ids.len() as u64;
        job.counts.errors = found.errors.len() as u64;
        job.errors = found.errors.into_iter().take(MAX_ERRORS_KEPT).collect();
        let ids: Vec<String> = found.ids.into_iter().collect();
        let total = ids.len() as u64;
        job.counts.processed = 0;
        job.counts.would_assign = 0;
        let mut last_save = Instant::now();
        let stop = self.jobs.token();
        for batch in ids.chunks(BATCH) {
            if stop.is_cancelled() {
                job.state = JobState::Interrupted;
                job.updated_at = Timestamp::now();
                let _ = self.save(&job).await;
                self.audit_event(&job, "backfill:interrupted", json!({ "why": "shutdown" }));
                tracing::info!(job_id = %job.job_id, processed = job.counts.processed, "backfill job interrupted by the shutdown; resume it");
                return job;
            }
            if let Err(e) = self.step(&mut job, batch).await {
                job.state = JobState::Failed;
                job.failure = Some(format!(
                    "{e}; {} of {total} processed. Resume the job: it continues where the store left it",
                    job.counts.processed
                ));
                job.updated_at = Timestamp::now();
                let _ = self.save(&job).await;
                self.audit_event(&job, "backfill:failed", json!({ "failure": job.failure }));
                return job;
            }
            job.counts.processed += batch.len() as u64;
            progress(job.counts.processed, total);
            if last_save.elapsed() > Duration::from_millis(250) {
                job.updated_at = Timestamp::now();
                let _ = self.save(&job).await;
                last_save = Instant::now();
            }
        }
        if !job.dry_run {
            // Exact, and right after a resume too: what the job's set holds.
            match self.store.assigned_count(&job.job_id).await {
                Ok(assigned) => job.counts.assigned = assigned,
                Err(e) => tracing::warn!(error = %e, "assigned count not read"),
            }
            job.counts.skipped_owned = job.counts.found.saturating_sub(job.counts.assigned);
        }
        job.state = JobState::Completed;
        job.failure = None;
        let now = Timestamp::now();
        job.updated_at = now;
        job.finished_at = Some(now);
        if let Err(e) = self.save(&job).await {
            tracing::error!(job_id = %job.job_id, error = %e, "backfill job record not saved");
        }
        self.audit_event(&job, "backfill:finish", json!({ "dry_run": job.dry_run }));
        tracing::info!(job_id = %job.job_id, dry_run = job.dry_run, found = job.counts.found, assigned = job.counts.assigned, skipped_owned = job.counts.skipped_owned, would_assign = job.counts.would_assign, errors = job.counts.errors, "backfill job finished");
        job
    }

    /// One batch, retried with backoff while the store is unreachable.
    async fn step(&self, job: &mut Job, batch: &[String]) -> Result<(), StoreError> {
        let retrying = |e: &StoreError, attempt: u32| {
            tracing::warn!(job_id = %job.job_id, error = %e, attempt, "backfill batch failed; retrying");
        };
        if job.dry_run {
            let ids: Vec<SessionId> = batch
                .iter()
                .filter_map(|id| SessionId::parse_exact(id).ok())
                .collect();
            let owners = tasks::retry(
                STORE_ATTEMPTS,
                BACKOFF,
                || self.store.owners(&ids),
                retrying,
            )
            .await?;
            let unowned = owners.iter().filter(|o| o.is_none()).count() as u64;
            job.counts.would_assign += unowned;
            job.counts.skipped_owned += owners.len() as u64 - unowned;
        } else {
            let (id, owner) = (&job.job_id, &job.default_owner);
            let assign = || self.store.assign(id, owner, batch);
            job.counts.assigned += tasks::retry(STORE_ATTEMPTS, BACKOFF, assign, retrying).await?;
        }
        Ok(())
    }

    /// Prepares a failed or interrupted job to run again (same id, same assigned set).
    pub async fn resume(&self, id: &str) -> Result<Job, BackfillError> {
        let mut job = self.job(id).await?;
        if !matches!(job.state, JobState::Interrupted | JobState::Failed) {
            return Err(BackfillError::Conflict(format!(
                "job {id} is {}: only interrupted or failed jobs resume",
                job.state.as_str()
            )));
        }
        job.state = JobState::Running;
        job.failure = None;
        job.counts.skipped_owned = 0;
        job.updated_at = Timestamp::now();
        self.save(&job).await?;
        Ok(job)
    }

    /// The request that re-runs `job` (its sources as resolved then, no explicit ids: an
    /// explicit list is not stored, so resume such jobs by re-running them).
    pub fn request_of(job: &Job) -> JobRequest {
        JobRequest {
            dry_run: job.dry_run,
            default_owner: job.default_owner.clone(),
            sources: job.sources.iter().map(PathBuf::from).collect(),
            session_ids: Vec::new(),
            actor: job.actor.clone(),
        }
    }

    /// Releases the sessions `id` assigned that still have its owner. A job rolled back
    /// before has nothing left to release: its record is then returned as it was.
    pub async fn rollback(&self, id: &str, actor: &str) -> Result<RollbackOutcome, BackfillError> {
        let mut job = self.job(id).await?;
        if job.dry_run {
            return Err(BackfillError::Conflict(format!(
                "job {id} is a dry run: it assigned nothing"
            )));
        }
        if matches!(job.state, JobState::Running) {
            return Err(BackfillError::Conflict(format!(
                "job {id} is still running; wait for it to end"
            )));
        }
        let before = job.rollback.clone();
        let mut report = job.rollback.take().unwrap_or_default();
        let (released_before, kept_before) = (report.released, report.kept);
        let mut cursor = 0;
        loop {
            let (next, page) = self.store.assigned_page(&job.job_id, cursor, BATCH).await?;
            cursor = next;
            if page.is_empty() {
                // End of a pass: done once the set is empty (else another pass).
                if cursor == 0 && self.store.assigned_count(&job.job_id).await? == 0 {
                    break;
                }
                continue;
            }
            let released = self
                .store
                .release_assigned(&job.job_id, &job.default_owner, &page)
                .await?;
            report.released += released.released;
            report.kept += released.kept.len() as u64;
            let room = MAX_KEPT_LISTED.saturating_sub(report.kept_sample.len());
            report
                .kept_sample
                .extend(released.kept.into_iter().take(room));
        }
        let released = report.released - released_before;
        let kept = report.kept - kept_before;
        if job.state == JobState::RolledBack && released == 0 && kept == 0 {
            // Rolled back before, and nothing was left: no change to record or audit.
            job.rollback = before;
            return Ok(RollbackOutcome {
                job,
                released: 0,
                already_rolled_back: true,
            });
        }
        report.at = Some(Timestamp::now());
        report.actor = actor.to_owned();
        job.state = JobState::RolledBack;
        job.updated_at = Timestamp::now();
        job.rollback = Some(report.clone());
        self.save(&job).await?;
        self.audit_event(
            &job,
            "backfill:rollback",
            json!({ "released": released, "kept": kept, "by": actor }),
        );
        Ok(RollbackOutcome {
            job,
            released,
            already_rolled_back: false,
        })
    }

    /// Compares the ids of `sources` (and `session_ids`) with the owners in the store.
    pub async fn verify(
        &self,
        sources: Vec<PathBuf>,
        session_ids: Vec<String>,
    ) -> Result<Verification, StoreError> {
        let policy = self.session_ids;
        let found = tokio::task::spawn_blocking(move || {
            let mut found = Found::new(policy);
            sources::scan(&sources, &mut found);
            found.add_ids(session_ids.iter().map(String::as_str));
            found
        })
        .await
        .unwrap_or_default();
        let mut report = Verification {
            expected: found.ids.len() as u64,
            errors: found.errors,
            ..Verification::default()
        };
        let ids: Vec<&String> = found.ids.iter().collect();
        for batch in ids.chunks(BATCH) {
            let sessions: Vec<SessionId> = batch
                .iter()
                .filter_map(|id| SessionId::parse_exact(id).ok())
                .collect();
            let owners = self.store.owners(&sessions).await?;
            let mut owned = Vec::with_capacity(sessions.len());
            for (session, owner) in sessions.iter().zip(owners) {
                match owner {
                    Some(owner) => {
                        owned.push((session.as_str().to_owned(), owner.clone()));
                        report.owned += 1;
                        *report.per_user.entry(owner).or_default() += 1;
                    }
                    None => {
                        report.missing += 1;
                        if report.missing_sample.len() < MAX_KEPT_LISTED {
                            report.missing_sample.push(session.as_str().to_owned());
                        }
                    }
                }
            }
            report.unindexed += self.store.unindexed(&owned).await?;
        }
        let expected: HashSet<&str> = found.ids.iter().map(String::as_str).collect();
        let mut cursor = 0;
        loop {
            let (next, owned) = self.store.owned_page(cursor, BATCH).await?;
            report.extra += owned
                .iter()
                .filter(|id| !expected.contains(id.as_str()))
                .count() as u64;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        report.complete = report.missing == 0;
        Ok(report)
    }
}

/// `job` as it stands now: a running job whose record stopped moving is `interrupted`.
fn as_seen_now(mut job: Job) -> Job {
    let age = Timestamp::now()
        .unix_millis()
        .saturating_sub(job.updated_at.unix_millis());
    if job.state == JobState::Running && Duration::from_millis(age) > STALE_AFTER {
        job.state = JobState::Interrupted;
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, OwnershipStore};

    #[tokio::test]
    async fn a_job_stopped_by_the_shutdown_is_recorded_as_interrupted() {
        let store = Arc::new(MemoryStore::new(None));
        let jobs = Tasks::new();
        let backfill = Backfill::new(store.clone(), Roots::default(), Audit::disabled("test"))
            .with_jobs(jobs.clone());
        let request = JobRequest {
            dry_run: false,
            default_owner: "legacy".into(),
            sources: Vec::new(),
            session_ids: (0..3 * BATCH).map(|i| format!("s{i}")).collect(),
            actor: "root".into(),
        };
        let job = backfill.create(&request).await.unwrap();
        // The shutdown has begun when the job gets to its first batch.
        jobs.token().cancel();
        backfill.spawn(job.clone(), request);
        jobs.shutdown().await;
        let stored = backfill.job(&job.job_id).await.unwrap();
        assert_eq!(stored.state, JobState::Interrupted);
        assert_eq!(stored.counts.processed, 0);
        let id = crate::session_id::SessionId::parse("s0").unwrap();
        assert_eq!(store.owner(&id).await.unwrap(), None, "nothing assigned");
    }
}
