//! The backfill port on Redis: assignment and rollback scripts that keep each job's assigned
//! set, and the job records with their listing (`{prefix}backfill:jobs`, a sorted set read
//! newest first; written with each record, in one `MULTI` on one server, before the record on
//! a Cluster, where the two live in different slots). The listing skips what it cannot use: a
//! member that is not a job's place and a record it cannot read (each with a WARN, one line per
//! second), and a listed job without a record.
//!
//! On one server a batch is one script. On a Cluster each session's owner key lives in its
//! own slot, so a batch is one script per session (sent together), then the job's assigned
//! set, the owner's index and the announcement. The batch is written into the job's assigned
//! set first, and beside each owner key it assigns the script leaves a marker naming the job
//! (same slot): after a batch that failed part-way (or an instance killed in it) the set holds
//! every session the job may have assigned, the markers say which it did, and the rollback
//! releases a session only when its owner is the job's owner and its marker names the job.
//! Exactly what the job assigned is released, as on one server.

use async_trait::async_trait;
use redis::Value;

use super::RedisStore;
use super::scans::scan_reply;
use crate::records::{Job, VerifySummary};
use crate::store::{BackfillStore, JobCursor, Released, StoreError};
use crate::throttle::Throttle;

#[async_trait]
impl BackfillStore for RedisStore {
    async fn assign(&self, job: &str, owner: &str, sessions: &[String]) -> Result<u64, StoreError> {
        if self.cluster {
            return self.assign_per_session(job, owner, sessions).await;
        }
        let mut invocation = self.backfill_assign.key(self.keys.backfill_assigned(job));
        invocation
            .arg(owner)
            .arg(&self.keys.owner_prefix)
            .arg(&self.keys.user_sessions_prefix)
            .arg(self.ttl_millis())
            .arg(self.keys.owners_channel())
            .arg(sessions);
        self.write_owners(&invocation).await
    }

    async fn release_assigned(
        &self,
        job: &str,
        owner: &str,
        sessions: &[String],
    ) -> Result<Released, StoreError> {
        if self.cluster {
            return self.release_per_session(job, owner, sessions).await;
        }
        let mut invocation = self.backfill_release.key(self.keys.backfill_assigned(job));
        invocation
            .arg(owner)
            .arg(&self.keys.owner_prefix)
            .arg(&self.keys.user_sessions_prefix)
            .arg(self.keys.owners_channel())
            .arg(sessions);
        let (released, kept): (u64, Vec<String>) = self.write_owners(&invocation).await?;
        Ok(Released { released, kept })
    }

    async fn assigned_page(
        &self,
        job: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let cmd = redis::cmd("SSCAN")
            .arg(self.keys.backfill_assigned(job))
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .clone();
        let mut conn = self.conn().await?;
        let reply: Value = self.bounded(cmd.query_async(&mut conn)).await?;
        scan_reply(reply)
    }

    async fn assigned_count(&self, job: &str) -> Result<u64, StoreError> {
        let cmd = redis::cmd("SCARD")
            .arg(self.keys.backfill_assigned(job))
            .clone();
        self.read_cmd(&cmd).await
    }

    async fn owned_page(
        &self,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        self.owner_keys_page(cursor, count).await
    }

    async fn unindexed(&self, owned: &[(String, String)]) -> Result<u64, StoreError> {
        if owned.is_empty() {
            return Ok(0);
        }
        let member = |(session, owner): &(String, String)| {
            redis::cmd("SISMEMBER")
                .arg(self.keys.user_sessions(owner))
                .arg(session)
                .clone()
        };
        let listed: Vec<bool> = if self.cluster {
            // Each set in its own slot: one call each (sent together).
            futures_util::future::join_all(
                owned
                    .iter()
                    .map(|pair| async move { self.read_cmd::<bool>(&member(pair)).await }),
            )
            .await
            .into_iter()
            .collect::<Result<_, _>>()?
        } else {
            let mut pipe = redis::pipe();
            owned.iter().for_each(|pair| {
                pipe.add_command(member(pair));
            });
            let pipe = &pipe;
            self.read(|mut conn| async move { pipe.query_async(&mut conn).await })
                .await?
        };
        Ok(listed.iter().filter(|listed| !**listed).count() as u64)
    }

    async fn save_job(&self, job: &Job) -> Result<(), StoreError> {
        let record = serde_json::to_string(job).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let listed = redis::cmd("ZADD")
            .arg(self.keys.backfill_jobs())
            .arg(0)
            .arg(JobCursor::of(job).to_string())
            .clone();
        let saved = redis::cmd("SET")
            .arg(self.keys.backfill_job(&job.job_id))
            .arg(record)
            .clone();
        let mut conn = self.conn().await?;
        if self.cluster {
            // Two slots: the listing first, so a job is never saved unlisted (a listed job
            // whose record was not saved is skipped by the listing).
            self.write(listed.query_async::<()>(&mut conn)).await?;
            return self.write(saved.query_async::<()>(&mut conn)).await;
        }
        let mut both = redis::pipe();
        both.atomic()
            .add_command(listed)
            .ignore()
            .add_command(saved)
            .ignore();
        self.write(both.query_async::<()>(&mut conn)).await
    }

    async fn load_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let cmd = redis::cmd("GET").arg(self.keys.backfill_job(id)).clone();
        let record: Option<String> = self.read_cmd(&cmd).await?;
        record
            .map(|json| {
                serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("backfill job {id}: {e}")))
            })
            .transpose()
    }

    async fn jobs(
        &self,
        before: Option<&JobCursor>,
        limit: usize,
    ) -> Result<(Vec<Job>, Option<JobCursor>), StoreError> {
        let listing = self.keys.backfill_jobs();
        // One more than asked: whether there is a next page.
        let wanted = limit.saturating_add(1);
        let mut max: Vec<u8> = match before {
            Some(place) => format!("({place}").into_bytes(),
            None => b"+".to_vec(),
        };
        let mut places: Vec<JobCursor> = Vec::with_capacity(wanted.min(1024));
        // A member that is not a job's place (written by hand, or by something else) is
        // skipped, and the listing read on past it: one such member must not make every page
        // fail, nor cut a page short and lose the pages after it.
        loop {
            let asked = wanted - places.len();
            let cmd = redis::cmd("ZREVRANGEBYLEX")
                .arg(&listing)
                .arg(&max)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(asked)
                .clone();
            // Bytes: a member that is not even UTF-8 is skipped like any other.
            let members: Vec<Vec<u8>> = self.read_cmd(&cmd).await?;
            for member in &members {
                match std::str::from_utf8(member).map(str::parse::<JobCursor>) {
                    Ok(Ok(place)) => places.push(place),
                    _ => {
                        static NOT_A_PLACE: Throttle = Throttle::new();
                        if let Some(suppressed) = NOT_A_PLACE.allow() {
                            let member = String::from_utf8_lossy(member);
                            tracing::warn!(%listing, %member, suppressed, "backfill job listing holds a member that is not a job's place; skipped (one line per second; suppressed: those since the last)");
                        }
                    }
                }
            }
            let Some(last) = members.last() else { break };
            if members.len() < asked || places.len() >= wanted {
                break;
            }
            max = [b"(".as_slice(), last].concat();
        }
        let more = places.len() > limit;
        places.truncate(limit);
        let next = more.then(|| places.last().cloned()).flatten();
        // Each record in a slot of its own on a Cluster: one GET each (sent together).
        let records =
            futures_util::future::join_all(places.iter().map(|place| self.load_job(&place.job_id)))
                .await;
        let mut jobs = Vec::with_capacity(records.len());
        for record in records {
            match record {
                Ok(Some(job)) => jobs.push(job),
                // A listed job whose record is gone (its first save failed after the
                // listing's) is skipped.
                Ok(None) => {}
                // So is one whose record cannot be read (`GET /v1/backfill/{job_id}` says
                // so): the others are still listed.
                Err(StoreError::Corrupt(why)) => {
                    static UNREADABLE: Throttle = Throttle::new();
                    if let Some(suppressed) = UNREADABLE.allow() {
                        tracing::warn!(error = %why, suppressed, "backfill job record unreadable; left out of the listing (one line per second; suppressed: those since the last)");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok((jobs, next))
    }

    async fn save_verification(&self, summary: &VerifySummary) -> Result<(), StoreError> {
        let record =
            serde_json::to_string(summary).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let cmd = redis::cmd("SET")
            .arg(self.keys.last_verification())
            .arg(record)
            .clone();
        let mut conn = self.conn().await?;
        self.write(cmd.query_async::<()>(&mut conn)).await
    }

    async fn last_verification(&self) -> Result<Option<VerifySummary>, StoreError> {
        let cmd = redis::cmd("GET").arg(self.keys.last_verification()).clone();
        let record: Option<String> = self.read_cmd(&cmd).await?;
        record
            .map(|json| {
                serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("last verification: {e}")))
            })
            .transpose()
    }
}

impl RedisStore {
    /// [`BackfillStore::assign`] on a Cluster (see the module docs).
    async fn assign_per_session(
        &self,
        job: &str,
        owner: &str,
        sessions: &[String],
    ) -> Result<u64, StoreError> {
        if sessions.is_empty() {
            return Ok(0);
        }
        // The batch goes into the job's set first: a batch that fails part-way (or an
        // instance killed in it) leaves every session it may have assigned where the rollback
        // looks, and the markers say which ones it did.
        self.job_set("SADD", job, &sessions.iter().collect::<Vec<_>>())
            .await?;
        let ttl = self.ttl_millis();
        let outcomes = futures_util::future::join_all(sessions.iter().map(|id| async move {
            let mut invocation = self.backfill_assign_one.key(self.keys.owner(id));
            invocation
                .key(self.keys.backfill_marker(id))
                .arg(owner)
                .arg(ttl)
                .arg(job);
            self.write_owners::<u8>(&invocation).await
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<u8>, _>>()?;
        let (ours, others): (Vec<_>, Vec<_>) = sessions
            .iter()
            .zip(&outcomes)
            .partition(|(_, outcome)| **outcome > 0);
        let ours: Vec<&String> = ours.into_iter().map(|(id, _)| id).collect();
        let others: Vec<&String> = others.into_iter().map(|(id, _)| id).collect();
        self.job_set("SREM", job, &others).await?;
        self.index_many(owner, &ours, "SADD").await;
        // Also those of an earlier try: that try may have failed before announcing them.
        self.announce(&ours).await?;
        // A batch sent again after a failure counts what the failed try assigned too (that
        // try was not counted).
        Ok(ours.len() as u64)
    }

    /// `SADD`/`SREM` of `sessions` in the job's assigned set.
    async fn job_set(&self, verb: &str, job: &str, sessions: &[&String]) -> Result<(), StoreError> {
        let members: Vec<&str> = sessions.iter().map(|id| id.as_str()).collect();
        self.set_write(verb, self.keys.backfill_assigned(job), &members)
            .await
    }

    /// [`BackfillStore::release_assigned`] on a Cluster.
    async fn release_per_session(
        &self,
        job: &str,
        owner: &str,
        sessions: &[String],
    ) -> Result<Released, StoreError> {
        let outcomes = futures_util::future::join_all(sessions.iter().map(|id| async move {
            let mut invocation = self.backfill_release_one.key(self.keys.owner(id));
            invocation
                .key(self.keys.backfill_marker(id))
                .arg(owner)
                .arg(job);
            self.write_owners::<u8>(&invocation).await
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<u8>, _>>()?;
        let (released, kept): (Vec<_>, Vec<_>) = sessions
            .iter()
            .zip(&outcomes)
            .partition(|(_, outcome)| **outcome == 1);
        let released: Vec<&String> = released.into_iter().map(|(id, _)| id).collect();
        let kept: Vec<String> = kept.into_iter().map(|(id, _)| id.clone()).collect();
        self.index_many(owner, &released, "SREM").await;
        self.job_set("SREM", job, &sessions.iter().collect::<Vec<_>>())
            .await?;
        // The whole batch: a session released by an earlier try counts as kept now, and that
        // try may have failed before announcing it.
        self.announce(&sessions.iter().collect::<Vec<_>>()).await?;
        Ok(Released {
            released: released.len() as u64,
            kept,
        })
    }

    /// `SADD`/`SREM` of `sessions` in `owner`'s index; a failure leaves them for the repair
    /// (see [`super::index`]).
    async fn index_many(&self, owner: &str, sessions: &[&String], verb: &str) {
        let members: Vec<&str> = sessions.iter().map(|id| id.as_str()).collect();
        let written = self
            .set_write(verb, self.keys.user_sessions(owner), &members)
            .await;
        if let Err(e) = written {
            tracing::warn!(owner, error = %e, "user index not updated yet; repaired when Redis answers");
            self.leave_for_repair(members);
        }
    }

    /// Announces `sessions` on the owner-change channel (the owner caches drop them). A
    /// failure fails the batch: it is sent again, and announced then.
    async fn announce(&self, sessions: &[&String]) -> Result<(), StoreError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = sessions.iter().map(|id| id.as_str()).collect();
        let cmd = redis::cmd("PUBLISH")
            .arg(self.keys.owners_channel())
            .arg(ids.join("\n"))
            .clone();
        let mut conn = self.conn().await?;
        self.write(cmd.query_async::<()>(&mut conn)).await
    }
}
