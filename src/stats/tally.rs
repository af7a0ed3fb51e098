//! The request path's side of the time series: counts per minute, endpoint, decision and
//! reason, in memory, taken out whole by the flusher ([`Tally::drain`]).
//!
//! A check costs one clock read, one uncontended lock (the counts are split into shards, a
//! thread keeps to one) and one hash lookup by the endpoint's name, with no allocation but
//! for the first check of a name in a minute.
//!
//! Only names the deployment knows are counted under their own name ([`super::KnownEndpoints`]);
//! the others, which callers choose freely (`POST /v1/validate {endpoint}`), are counted
//! together as "other endpoints": a caller can neither grow the counts without bound nor push
//! a real endpoint out of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::decision::{Reason, Verdict};

/// Cells per endpoint: every verdict with every reason.
pub const CELLS: usize = Verdict::ALL.len() * Reason::ALL.len();

/// The counts of one endpoint in one minute, by cell ([`cell`]).
pub type Counts = [u64; CELLS];

/// A minute's counts: by endpoint name (`None`: other endpoints).
pub type MinuteTally = HashMap<Option<String>, Counts>;

/// Where a verdict and reason are counted in [`Counts`].
pub fn cell(verdict: Verdict, reason: Reason) -> usize {
    verdict as usize * Reason::ALL.len() + reason as usize
}

/// The verdict and reason counted at `index` of [`Counts`].
pub fn cell_at(index: usize) -> (Verdict, Reason) {
    let reasons = Reason::ALL.len();
    (Verdict::ALL[index / reasons], Reason::ALL[index % reasons])
}

const SHARDS: usize = 8;

/// The names' hash: foldhash, randomly seeded. Only known names are kept (the deployment's
/// own), so no caller can choose colliding keys.
type Names = HashMap<String, Counts, foldhash::fast::RandomState>;

/// A shard on cache lines of its own: two threads counting at once never write one line.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    /// By minute (Unix seconds of its start): by name, and the other endpoints.
    minutes: Vec<(u64, Names, Counts)>,
}

/// The counts not yet taken by the flusher.
pub struct Tally {
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

/// This thread's shard: threads take shards in turn, the first time they count.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

impl Tally {
    /// Counts one decision at `now_secs` (Unix seconds), under `endpoint`'s name, or as "other
    /// endpoints" for `None`.
    pub fn add(&self, now_secs: u64, endpoint: Option<&str>, verdict: Verdict, reason: Reason) {
        let minute = now_secs / 60 * 60;
        let mut shard = self.shards[shard_index()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Nearly always the last minute; a clock stepped back finds (or adds) its own.
        let at = match shard.minutes.iter().rposition(|(m, _, _)| *m == minute) {
            Some(at) => at,
            None => {
                shard.minutes.push((minute, Names::default(), [0; CELLS]));
                shard.minutes.len() - 1
            }
        };
        let (_, named, other) = &mut shard.minutes[at];
        let index = cell(verdict, reason);
        match endpoint {
            Some(name) => match named.get_mut(name) {
                Some(counts) => counts[index] += 1,
                None => {
                    let mut counts = [0; CELLS];
                    counts[index] = 1;
                    named.insert(name.to_owned(), counts);
                }
            },
            None => other[index] += 1,
        }
    }

    /// Takes every count out, merged by minute.
    pub fn drain(&self) -> BTreeMap<u64, MinuteTally> {
        let mut merged: BTreeMap<u64, MinuteTally> = BTreeMap::new();
        for shard in &self.shards {
            let minutes =
                std::mem::take(&mut shard.lock().unwrap_or_else(PoisonError::into_inner).minutes);
            for (minute, named, other) in minutes {
                let tally = merged.entry(minute).or_default();
                for (name, counts) in named {
                    add_counts(tally.entry(Some(name)).or_insert([0; CELLS]), &counts);
                }
                if other.iter().any(|n| *n > 0) {
                    add_counts(tally.entry(None).or_insert([0; CELLS]), &other);
                }
            }
        }
        merged
    }
}

/// Adds `more` to `into`, cell by cell.
pub fn add_counts(into: &mut Counts, more: &Counts) {
    for (a, b) in into.iter_mut().zip(more) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cover_every_verdict_and_reason_once() {
        let mut seen = std::collections::HashSet::new();
        for verdict in Verdict::ALL {
            for reason in Reason::ALL {
                let index = cell(verdict, reason);
                assert!(index < CELLS);
                assert_eq!(cell_at(index), (verdict, reason));
                assert!(seen.insert(index));
            }
        }
        for (i, v) in Verdict::ALL.into_iter().enumerate() {
            assert_eq!(v as usize, i);
        }
        for (i, r) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i);
        }
    }

    #[test]
    fn counts_by_minute_and_name_from_many_threads() {
        let tally = std::sync::Arc::new(Tally::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let tally = tally.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        tally.add(
                            120 + i % 2 * 60,
                            Some("chat"),
                            Verdict::Allow,
                            Reason::Owner,
                        );
                        let name = format!("e{}", (t + i) % 3);
                        tally.add(120, Some(&name), Verdict::Deny, Reason::NotOwner);
                        tally.add(120, None, Verdict::Deny, Reason::NotOwner);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let drained = tally.drain();
        assert_eq!(drained.keys().copied().collect::<Vec<_>>(), [120, 180]);
        let allow = cell(Verdict::Allow, Reason::Owner);
        let deny = cell(Verdict::Deny, Reason::NotOwner);
        assert_eq!(drained[&120][&Some("chat".into())][allow], 2000);
        assert_eq!(drained[&180][&Some("chat".into())][allow], 2000);
        let minute = &drained[&120];
        assert_eq!(minute.len(), 5, "chat, e0-e2 and the others");
        let denied: u64 = minute.values().map(|c| c[deny]).sum();
        assert_eq!(denied, 8000);
        assert_eq!(minute[&None][deny], 4000);
        assert!(tally.drain().is_empty(), "drained means empty");
    }
}
