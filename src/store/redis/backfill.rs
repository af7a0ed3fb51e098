//! The backfill port on Redis: assignment and rollback scripts that keep each job's assigned
//! set, and the job records.

use async_trait::async_trait;
use redis::Value;

use super::RedisStore;
use super::scans::scan_reply;
use crate::records::Job;
use crate::store::{BackfillStore, Released, StoreError};

#[async_trait]
impl BackfillStore for RedisStore {
    async fn assign(&self, job: &str, owner: &str, sessions: &[String]) -> Result<u64, StoreError> {
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

    async fn save_job(&self, job: &Job) -> Result<(), StoreError> {
        let record = serde_json::to_string(job).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let cmd = redis::cmd("SET")
            .arg(self.keys.backfill_job(&job.job_id))
            .arg(record)
            .clone();
        let mut conn = self.conn().await?;
        self.write(cmd.query_async::<()>(&mut conn)).await
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
}
