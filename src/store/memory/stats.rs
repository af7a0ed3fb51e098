//! The decision time series and heartbeats of the embedded store: the same buckets as the
//! Redis adapter's hashes, in one map, expired when written to.

use std::collections::HashMap;
use std::sync::{MutexGuard, PoisonError};

use async_trait::async_trait;

use super::MemoryStore;
use crate::records::{Cell, InstanceRecord, Resolution, Retention, StatsBatch};
use crate::store::{StatsStore, StoreError};
use crate::timestamp::Timestamp;

/// Buckets by (resolution, start in Unix seconds): when they expire, and their counts.
#[derive(Default)]
pub(super) struct Stats {
    buckets: HashMap<(Resolution, u64), Bucket>,
    /// Each writer's last added batch number.
    writers: HashMap<String, u64>,
    instances: HashMap<String, InstanceRecord>,
}

struct Bucket {
    /// Unix seconds.
    expires_at: u64,
    counts: HashMap<Cell, u64>,
}

impl MemoryStore {
    fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn now_secs() -> u64 {
    Timestamp::now().unix_millis() / 1000
}

#[async_trait]
impl StatsStore for MemoryStore {
    async fn add_decisions(
        &self,
        batch: &StatsBatch,
        retention: Retention,
    ) -> Result<bool, StoreError> {
        let mut stats = self.stats();
        let last = stats.writers.get(&batch.writer).copied().unwrap_or(0);
        if batch.seq <= last {
            return Ok(false);
        }
        let now = now_secs();
        stats.buckets.retain(|_, bucket| bucket.expires_at > now);
        for minute in &batch.minutes {
            for resolution in [Resolution::Minute, Resolution::Hour] {
                let width = resolution.seconds();
                let start = minute.minute / width * width;
                let expires_at = start
                    .saturating_add(width)
                    .saturating_add(retention.of(resolution).as_secs());
                if expires_at <= now {
                    continue;
                }
                let bucket = stats
                    .buckets
                    .entry((resolution, start))
                    .or_insert_with(|| Bucket {
                        expires_at,
                        counts: HashMap::new(),
                    });
                bucket.expires_at = expires_at;
                for (cell, count) in &minute.cells {
                    *bucket.counts.entry(cell.clone()).or_default() += count;
                }
            }
        }
        stats.writers.insert(batch.writer.clone(), batch.seq);
        Ok(true)
    }

    async fn decision_buckets(
        &self,
        resolution: Resolution,
        first: u64,
        count: usize,
    ) -> Result<Vec<Vec<(Cell, u64)>>, StoreError> {
        let stats = self.stats();
        let now = now_secs();
        let width = resolution.seconds();
        Ok((0..count as u64)
            .map(
                |i| match stats.buckets.get(&(resolution, first + i * width)) {
                    Some(bucket) if bucket.expires_at > now => bucket
                        .counts
                        .iter()
                        .map(|(cell, count)| (cell.clone(), *count))
                        .collect(),
                    _ => Vec::new(),
                },
            )
            .collect())
    }

    async fn heartbeat(&self, instance: &InstanceRecord) -> Result<(), StoreError> {
        self.stats()
            .instances
            .insert(instance.instance.clone(), instance.clone());
        Ok(())
    }

    async fn instances(&self, since: Timestamp) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut stats = self.stats();
        stats.instances.retain(|_, record| record.seen_at >= since);
        let mut instances: Vec<InstanceRecord> = stats.instances.values().cloned().collect();
        instances.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(instances)
    }
}
