//! What `gatehouse migrate` ([`crate::migrate`]) needs of Redis: the record of applied
//! migrations, `SCAN` batches of a key family, and a migration's script run on a batch, each
//! on the store's connections and under its timeout (a script's failure says whether it may
//! have written, as every write does).

use std::collections::BTreeMap;

use redis::{FromRedisValue, Script};

use super::RedisStore;
use crate::store::StoreError;

impl RedisStore {
    /// The migrations recorded as applied: id -> its report (JSON).
    pub async fn applied_migrations(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let cmd = redis::cmd("HGETALL").arg(self.keys.migrations()).clone();
        self.read_cmd(&cmd).await
    }

    /// Records migration `id` as applied, with its report.
    pub async fn record_migration(&self, id: &str, report: &str) -> Result<(), StoreError> {
        let cmd = redis::cmd("HSET")
            .arg(self.keys.migrations())
            .arg(id)
            .arg(report)
            .clone();
        let mut conn = self.conn().await?;
        self.write(cmd.query_async::<()>(&mut conn)).await
    }

    /// Runs a counting `script` on `keys` (one `SCAN` batch) and returns the sum of its counts:
    /// in one call on one server; once per key on a Cluster, where the keys of one call must
    /// share a slot (a script that also touches keys it computes, such as an owner's index,
    /// fails there with Redis's own error, having written nothing for that key).
    pub async fn run_count_script(
        &self,
        script: &Script,
        keys: &[Vec<u8>],
        args: &[&str],
    ) -> Result<u64, StoreError> {
        if !self.cluster {
            return self.run_script(script, keys, args).await;
        }
        let mut total = 0;
        for key in keys {
            total += self
                .run_script::<u64>(script, std::slice::from_ref(key), args)
                .await?;
        }
        Ok(total)
    }

    /// Whether this is a Redis Cluster (where a migration step needs its single-slot form).
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// One read command (on a Cluster, on the primary of the key it names).
    pub async fn read_command<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.read_cmd(cmd).await
    }

    /// One write command (on a Cluster, on the primary of the key it names).
    pub async fn write_command<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        self.write(cmd.query_async(&mut conn)).await
    }

    /// The owners of `sessions` (one pipeline; one per primary on a Cluster); a key that is
    /// not a string is an error.
    pub async fn owners_of(&self, sessions: &[&str]) -> Result<Vec<Option<String>>, StoreError> {
        self.owner_keys(sessions.iter().copied())
            .await?
            .into_iter()
            .zip(sessions)
            .map(|(reply, id)| reply.map_err(|e| StoreError::Corrupt(format!("{id}: {e}"))))
            .collect()
    }

    /// Runs `script` with `keys` and `args`.
    pub async fn run_script<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[Vec<u8>],
        args: &[&str],
    ) -> Result<T, StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key.as_slice());
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.conn().await?;
        self.write(invocation.invoke_async(&mut conn)).await
    }
}
