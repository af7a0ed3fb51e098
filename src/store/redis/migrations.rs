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
