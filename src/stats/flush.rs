//! The flusher: takes the tally out every `GATEHOUSE_STATS_FLUSH` and adds it to the store in
//! one numbered batch, off the request path.
//!
//! - A batch is retried, unchanged and under the same number, until the store takes it: the
//!   store skips a number it has seen (an answer lost after Redis applied it), so a retry
//!   never counts twice. Meanwhile new counts wait in the backlog, merged by minute.
//! - Names are capped per minute across flushes too ([`MAX_ENDPOINTS`] per instance): the
//!   names a minute has already sent keep their own counts, others past the cap are merged.
//! - The backlog keeps at most [`MAX_BACKLOG_MINUTES`] minutes (an outage of a day); older
//!   minutes are dropped and counted in `gatehouse_decision_stats_dropped_total`. What is
//!   still unsent when the last attempt at shutdown fails is counted there too.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use super::tally::{CELLS, Counts, MAX_ENDPOINTS, MinuteTally, Tally, add_counts, cell_at};
use crate::records::{Cell, MinuteCounts, Retention, StatsBatch};
use crate::store::StatsStore;
use crate::throttle::Throttle;

/// Minutes the backlog holds while the store is unreachable.
pub const MAX_BACKLOG_MINUTES: usize = 1440;

/// Minutes per batch: a backlog after an outage goes in several.
const MINUTES_PER_BATCH: usize = 60;

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
    /// The names each recent minute has sent under their own name.
    named: BTreeMap<u64, HashSet<String>>,
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
            named: BTreeMap::new(),
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
        for _ in 0..FINAL_ATTEMPTS {
            if self.flush().await && self.sending.is_none() && self.backlog.is_empty() {
                return;
            }
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

    /// One round: drains the tally into the backlog and sends batches until the backlog is
    /// empty or the store fails. Returns false when the store failed.
    pub async fn flush(&mut self) -> bool {
        self.take_in();
        loop {
            if self.sending.is_none() {
                self.sending = self.next_batch();
            }
            let Some(batch) = &self.sending else {
                return true;
            };
            match self.store.add_decisions(batch, self.retention).await {
                // Skipped: the store had it (a lost answer): done all the same.
                Ok(_) => self.sending = None,
                Err(e) => {
                    static FAILED: Throttle = Throttle::new();
                    if let Some(suppressed) = FAILED.allow() {
                        tracing::warn!(error = %e, suppressed, "decision stats not stored yet; kept and retried (one line per second; suppressed: those since the last)");
                    }
                    return false;
                }
            }
        }
    }

    /// Moves the tally's counts into the backlog, capping names per minute, and drops the
    /// oldest minutes past the bound.
    fn take_in(&mut self) {
        for (minute, tally) in self.tally.drain() {
            let named = self.named.entry(minute).or_default();
            let into = self.backlog.entry(minute).or_default();
            // Busiest names first, so that the cap keeps the endpoints that matter.
            let mut entries: Vec<(Option<String>, Counts)> = tally.into_iter().collect();
            entries.sort_by_key(|(name, counts)| {
                (std::cmp::Reverse(counts.iter().sum::<u64>()), name.clone())
            });
            for (name, counts) in entries {
                let key = match name {
                    Some(name) if named.contains(&name) => Some(name),
                    Some(name) if named.len() < MAX_ENDPOINTS => {
                        named.insert(name.clone());
                        Some(name)
                    }
                    _ => None,
                };
                add_counts(into.entry(key).or_insert([0; CELLS]), &counts);
            }
        }
        // The names of minutes long gone are not needed: a minute is flushed within seconds.
        while self.named.len() > 10 {
            self.named.pop_first();
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
    async fn every_count_reaches_the_minute_and_its_hour_and_names_are_capped_per_minute() {
        let tally = Arc::new(Tally::default());
        let store = Arc::new(MemoryStore::default());
        let mut flusher = flusher(&tally, &store);
        let minute = now_minute();
        // Two flushes of one minute: 150 names in all, the cap across both.
        for round in 0..2 {
            for i in 0..75 {
                tally.add(
                    minute,
                    &format!("e{round}-{i}"),
                    Verdict::Allow,
                    Reason::Owner,
                );
            }
            tally.add(minute, "chat", Verdict::WouldDeny, Reason::NotOwner);
            assert!(flusher.flush().await);
        }
        let buckets = store
            .decision_buckets(Resolution::Minute, minute, 1)
            .await
            .unwrap();
        let cells = &buckets[0];
        let total: u64 = cells.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 152);
        let names: HashSet<_> = cells
            .iter()
            .filter_map(|(c, _)| c.endpoint.clone())
            .collect();
        assert_eq!(names.len(), MAX_ENDPOINTS);
        let other: u64 = cells
            .iter()
            .filter(|(c, _)| c.endpoint.is_none())
            .map(|(_, n)| n)
            .sum();
        assert_eq!(other, 152 - 101, "chat counted twice under its name");
        let hour = store
            .decision_buckets(Resolution::Hour, minute / 3600 * 3600, 1)
            .await
            .unwrap();
        assert_eq!(hour[0].iter().map(|(_, n)| n).sum::<u64>(), 152);
    }

    #[tokio::test]
    async fn a_batch_the_store_already_took_is_not_counted_twice() {
        let tally = Arc::new(Tally::default());
        let store = Arc::new(MemoryStore::default());
        let mut flusher = flusher(&tally, &store);
        let minute = now_minute();
        tally.add(minute, "chat", Verdict::Deny, Reason::NoOwner);
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
