//! The flusher: takes the tally out every `GATEHOUSE_STATS_FLUSH` and adds it to the store in
//! one numbered batch, off the request path.
//!
//! - A batch is retried, unchanged and under the same number, until the store takes it: the
//!   store skips a number it has seen (an answer lost after Redis applied it), so a retry
//!   never counts twice. Meanwhile new counts wait in the backlog, merged by minute.
//! - One batch per round, of at most [`MINUTES_PER_BATCH`] minutes: after an outage the
//!   backlog goes in small steps, one a second, not in one long script that would hold Redis
//!   up for every instance's owner lookups.
//! - The backlog keeps at most [`MAX_BACKLOG_MINUTES`] minutes (an outage of a day); older
//!   minutes are dropped and counted in `gatehouse_decision_stats_dropped_total`. What is
//!   still unsent when the last attempt at shutdown fails is counted there too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use super::tally::{CELLS, MinuteTally, Tally, add_counts, cell_at};
use crate::records::{Cell, MinuteCounts, Retention, StatsBatch};
use crate::store::StatsStore;
use crate::throttle::Throttle;

/// Minutes the backlog holds while the store is unreachable.
pub const MAX_BACKLOG_MINUTES: usize = 1440;

/// Minutes per batch: a backlog after an outage goes in several.
pub const MINUTES_PER_BATCH: usize = 10;

/// Attempts at shutdown to send what is left.
const FINAL_ATTEMPTS: usize = 3;

/// Empties the tally into the store; see the [module docs](self).
pub struct Flusher {
    tally: Arc<Tally>,
    store: Arc<dyn StatsStore>,
    retention: Retention,
    interval: Duration,
    dropped: Counter,
    writer: String,
    next_seq: u64,
    /// The batch being sent (retried until the store takes it).
    sending: Option<StatsBatch>,
    /// Counts drained and not yet in a batch.
    backlog: BTreeMap<u64, MinuteTally>,
}

impl Flusher {
    /// A flusher of `tally` into `store`, as writer `writer` (unique per process).
    pub fn new(
        tally: Arc<Tally>,
        store: Arc<dyn StatsStore>,
        retention: Retention,
        interval: Duration,
        writer: String,
        dropped: Counter,
    ) -> Self {
        Self {
            tally,
            store,
            retention,
            interval,
            dropped,
            writer,
            next_seq: 1,
            sending: None,
            backlog: BTreeMap::new(),
        }
    }

    /// Flushes every interval until `cancel` fires, then sends what is left.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticks.tick() => {}
            }
            self.flush().await;
        }
        // What is left, batch after batch, as long as the store takes them.
        self.take_in();
        let mut failures = 0;
        while (self.sending.is_some() || !self.backlog.is_empty()) && failures < FINAL_ATTEMPTS {
            if !self.flush().await {
                failures += 1;
            }
        }
        if self.sending.is_none() && self.backlog.is_empty() {
            return;
        }
        let lost: u64 = self.sending.iter().map(batch_total).sum::<u64>()
            + self.backlog.values().map(tally_total).sum::<u64>();
        if lost > 0 {
            self.dropped.inc_by(lost);
            tracing::warn!(
                decisions = lost,
                "decision stats not stored at shutdown (the store did not answer): left out of the time series"
            );
        }
    }

    /// One round: drains the tally into the backlog and sends one batch (the one being
    /// retried, or the oldest minutes). Returns false when the store failed.
    pub async fn flush(&mut self) -> bool {
        self.take_in();
        if self.sending.is_none() {
            self.sending = self.next_batch();
        }
        let Some(batch) = &self.sending else {
            return true;
        };
        match self.store.add_decisions(batch, self.retention).await {
            // Skipped: the store had it (a lost answer): done all the same.
            Ok(_) => {
                self.sending = None;
                true
            }
            Err(e) => {
                static FAILED: Throttle = Throttle::new();
                if let Some(suppressed) = FAILED.allow() {
                    tracing::warn!(error = %e, suppressed, "decision stats not stored yet; kept and retried (one line per second; suppressed: those since the last)");
                }
                false
            }
        }
    }

    /// Moves the tally's counts into the backlog, and drops the oldest minutes past the bound.
    fn take_in(&mut self) {
        for (minute, tally) in self.tally.drain() {
            let into = self.backlog.entry(minute).or_default();
            for (name, counts) in tally {
                add_counts(into.entry(name).or_insert([0; CELLS]), &counts);
            }
        }
        while self.backlog.len() > MAX_BACKLOG_MINUTES {
            if let Some((_, tally)) = self.backlog.pop_first() {
                self.dropped.inc_by(tally_total(&tally));
            }
        }
    }

    /// The oldest minutes of the backlog as the next numbered batch.
    fn next_batch(&mut self) -> Option<StatsBatch> {
        let mut minutes = Vec::new();
        while minutes.len() < MINUTES_PER_BATCH {
            let Some((minute, tally)) = self.backlog.pop_first() else {
                break;
            };
            let cells: Vec<(Cell, u64)> =
                tally
                    .into_iter()
                    .flat_map(|(endpoint, counts)| {
                        counts.into_iter().enumerate().filter(|(_, n)| *n > 0).map(
                            move |(index, n)| {
                                let (verdict, reason) = cell_at(index);
                                let cell = Cell {
                                    endpoint: endpoint.clone(),
                                    verdict,
                                    reason,
                                };
                                (cell, n)
                            },
                        )
                    })
                    .collect();
            if !cells.is_empty() {
                minutes.push(MinuteCounts { minute, cells });
            }
        }
        if minutes.is_empty() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(StatsBatch {
            writer: self.writer.clone(),
            seq,
            minutes,
        })
    }
}

fn tally_total(tally: &MinuteTally) -> u64 {
    tally.values().flatten().sum()
}

fn batch_total(batch: &StatsBatch) -> u64 {
    batch
        .minutes
        .iter()
        .flat_map(|m| m.cells.iter().map(|(_, n)| n))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Reason, Verdict};
    use crate::records::Resolution;
    use crate::store::MemoryStore;

    fn flusher(tally: &Arc<Tally>, store: &Arc<MemoryStore>) -> Flusher {
        Flusher::new(
            tally.clone(),
            store.clone(),
            Retention::default(),
            Duration::from_secs(1),
            "test-writer".into(),
            Counter::default(),
        )
    }

    fn now_minute() -> u64 {
        crate::timestamp::Timestamp::now().unix_millis() / 1000 / 60 * 60
    }

    #[tokio::test]
    async fn every_count_reaches_the_minute_and_its_hour_over_several_rounds() {
        let tally = Arc::new(Tally::default());
        let store = Arc::new(MemoryStore::default());
        let mut flusher = flusher(&tally, &store);
        let minute = now_minute();
        // A backlog of 25 minutes (an outage) goes in three batches, one per round.
        for back in 0..25 {
            tally.add(
                minute - back * 60,
                Some("chat"),
                Verdict::Allow,
                Reason::Owner,
            );
            tally.add(
                minute - back * 60,
                None,
                Verdict::WouldDeny,
                Reason::NotOwner,
            );
        }
        for round in 1..=3 {
            assert!(flusher.flush().await);
            assert_eq!(flusher.next_seq, round + 1, "one batch a round");
        }
        assert!(flusher.backlog.is_empty());
        let first = minute - 24 * 60;
        let buckets = store
            .decision_buckets(Resolution::Minute, first, 25)
            .await
            .unwrap();
        for cells in &buckets {
            let mut cells = cells.clone();
            cells.sort();
            let named: Vec<_> = cells
                .iter()
                .map(|(c, n)| (c.endpoint.as_deref(), *n))
                .collect();
            assert_eq!(named, [(None, 1), (Some("chat"), 1)]);
        }
        let hours = store
            .decision_buckets(Resolution::Hour, first / 3600 * 3600, 2)
            .await
            .unwrap();
        let in_hours: u64 = hours.iter().flatten().map(|(_, n)| n).sum();
        assert_eq!(in_hours, 50);
    }

    /// A store that fails its first `failures` calls, then adds to `inner`.
    struct Flaky {
        inner: MemoryStore,
        failures: std::sync::atomic::AtomicUsize,
        seen: std::sync::Mutex<Vec<u64>>,
    }

    #[async_trait::async_trait]
    impl StatsStore for Flaky {
        async fn add_decisions(
            &self,
            batch: &StatsBatch,
            retention: Retention,
        ) -> Result<bool, crate::store::StoreError> {
            self.seen.lock().unwrap().push(batch.seq);
            let left = self.failures.load(std::sync::atomic::Ordering::SeqCst);
            if left > 0 {
                self.failures
                    .store(left - 1, std::sync::atomic::Ordering::SeqCst);
                return Err(crate::store::StoreError::OutcomeUnknown("test".into()));
            }
            self.inner.add_decisions(batch, retention).await
        }
        async fn decision_buckets(
            &self,
            resolution: Resolution,
            first: u64,
            count: usize,
        ) -> Result<Vec<Vec<(Cell, u64)>>, crate::store::StoreError> {
            self.inner.decision_buckets(resolution, first, count).await
        }
        async fn heartbeat(
            &self,
            instance: &crate::records::InstanceRecord,
        ) -> Result<(), crate::store::StoreError> {
            self.inner.heartbeat(instance).await
        }
        async fn instances(
            &self,
            since: crate::timestamp::Timestamp,
        ) -> Result<Vec<crate::records::InstanceRecord>, crate::store::StoreError> {
            self.inner.instances(since).await
        }
    }

    #[tokio::test]
    async fn a_failed_batch_is_retried_under_its_number_while_new_counts_wait() {
        let tally = Arc::new(Tally::default());
        let store = Arc::new(Flaky {
            inner: MemoryStore::default(),
            failures: 2.into(),
            seen: Default::default(),
        });
        let mut flusher = Flusher::new(
            tally.clone(),
            store.clone(),
            Retention::default(),
            Duration::from_secs(1),
            "flaky".into(),
            Counter::default(),
        );
        let minute = now_minute();
        tally.add(minute, Some("chat"), Verdict::Deny, Reason::NoOwner);
        assert!(!flusher.flush().await);
        tally.add(minute, Some("chat"), Verdict::Deny, Reason::NoOwner);
        assert!(!flusher.flush().await);
        assert!(flusher.flush().await, "the first batch, at last");
        assert!(flusher.flush().await, "then what came meanwhile");
        assert_eq!(*store.seen.lock().unwrap(), [1, 1, 1, 2]);
        let buckets = store
            .decision_buckets(Resolution::Minute, minute, 1)
            .await
            .unwrap();
        assert_eq!(buckets[0].iter().map(|(_, n)| n).sum::<u64>(), 2);
    }

    #[tokio::test]
    async fn a_batch_the_store_already_took_is_not_counted_twice() {
        let tally = Arc::new(Tally::default());
        let store = Arc::new(MemoryStore::default());
        let mut flusher = flusher(&tally, &store);
        let minute = now_minute();
        tally.add(minute, Some("chat"), Verdict::Deny, Reason::NoOwner);
        flusher.take_in();
        let batch = flusher.next_batch().unwrap();
        // The answer was "lost": the same batch is sent again.
        assert!(
            store
                .add_decisions(&batch, Retention::default())
                .await
                .unwrap()
        );
        assert!(
            !store
                .add_decisions(&batch, Retention::default())
                .await
                .unwrap()
        );
        let buckets = store
            .decision_buckets(Resolution::Minute, minute, 1)
            .await
            .unwrap();
        assert_eq!(buckets[0].iter().map(|(_, n)| n).sum::<u64>(), 1);
    }
}
