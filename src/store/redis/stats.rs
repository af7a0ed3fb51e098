//! The stats port on Redis: one hash per bucket (`{prefix}{stats}:m:{start}` and `:h:`), added
//! to by one script per batch that skips a batch it has already added (the writer's last
//! number is kept beside the buckets, as the audit writers' are), read with `HGETALL` in one
//! pipeline; and the instances' heartbeats in one hash.

use async_trait::async_trait;

use super::RedisStore;
use crate::records::{Cell, InstanceRecord, Resolution, Retention, StatsBatch};
use crate::store::{StatsStore, StoreError};
use crate::throttle::Throttle;
use crate::timestamp::Timestamp;

/// How long a writer's last batch number is kept after its last batch: far longer than any
/// retry of a batch (a retry comes within seconds).
const WRITER_TTL_SECS: u64 = 86_400;

#[async_trait]
impl StatsStore for RedisStore {
    async fn add_decisions(
        &self,
        batch: &StatsBatch,
        retention: Retention,
    ) -> Result<bool, StoreError> {
        // Minute and hour buckets, each once, with each cell once (an hour sums its minutes).
        type Adds<'a> = std::collections::BTreeMap<&'a Cell, u64>;
        let mut buckets: std::collections::BTreeMap<(Resolution, u64), Adds<'_>> =
            Default::default();
        for minute in &batch.minutes {
            for resolution in [Resolution::Minute, Resolution::Hour] {
                let width = resolution.seconds();
                let bucket = buckets
                    .entry((resolution, minute.minute / width * width))
                    .or_default();
                for (cell, n) in &minute.cells {
                    *bucket.entry(cell).or_default() += n;
                }
            }
        }
        let mut invocation = self
            .add_decisions
            .key(self.keys.stats_writer(&batch.writer));
        invocation.arg(batch.seq).arg(WRITER_TTL_SECS);
        for ((resolution, start), cells) in &buckets {
            let expires_at = start
                .saturating_add(resolution.seconds())
                .saturating_add(retention.of(*resolution).as_secs());
            invocation
                .key(self.keys.stats_bucket(*resolution, *start))
                .arg(expires_at)
                .arg(cells.len());
            for (cell, count) in cells {
                invocation.arg(cell.field()).arg(*count);
            }
        }
        let mut conn = self.conn().await?;
        let added: i64 = self.write(invocation.invoke_async(&mut conn)).await?;
        Ok(added == 1)
    }

    async fn decision_buckets(
        &self,
        resolution: Resolution,
        first: u64,
        count: usize,
    ) -> Result<Vec<Vec<(Cell, u64)>>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for i in 0..count as u64 {
            pipe.cmd("HGETALL").arg(
                self.keys
                    .stats_bucket(resolution, first + i * resolution.seconds()),
            );
        }
        let replies: Vec<Vec<(String, u64)>> = self
            .read(|mut conn| {
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        Ok(replies
            .into_iter()
            .map(|fields| {
                fields
                    .into_iter()
                    .filter_map(|(field, count)| match Cell::from_field(&field) {
                        Some(cell) => Some((cell, count)),
                        None => {
                            // A field another version wrote: left out, not an error for
                            // the whole series.
                            static UNREADABLE: Throttle = Throttle::new();
                            if let Some(suppressed) = UNREADABLE.allow() {
                                tracing::warn!(field, suppressed, "decision stats field unreadable; left out (one line per second; suppressed: those since the last)");
                            }
                            None
                        }
                    })
                    .collect()
            })
            .collect())
    }

    async fn heartbeat(&self, instance: &InstanceRecord) -> Result<(), StoreError> {
        let record =
            serde_json::to_string(instance).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let cmd = redis::cmd("HSET")
            .arg(self.keys.instances())
            .arg(&instance.instance)
            .arg(record)
            .clone();
        let mut conn = self.conn().await?;
        self.write(cmd.query_async::<()>(&mut conn)).await
    }

    async fn instances(&self, since: Timestamp) -> Result<Vec<InstanceRecord>, StoreError> {
        let cmd = redis::cmd("HGETALL").arg(self.keys.instances()).clone();
        let fields: Vec<(String, String)> = self.read_cmd(&cmd).await?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (name, json) in fields {
            match serde_json::from_str::<InstanceRecord>(&json) {
                Ok(record) if record.seen_at >= since => live.push(record),
                // Gone quiet, or unreadable: forgotten.
                _ => gone.push(name),
            }
        }
        if !gone.is_empty() {
            let forget = redis::cmd("HDEL")
                .arg(self.keys.instances())
                .arg(&gone)
                .clone();
            if let Ok(mut conn) = self.conn().await {
                // Best effort: the next listing tries again.
                let _ = self.write(forget.query_async::<()>(&mut conn)).await;
            }
        }
        live.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(live)
    }
}
