//! [`Throttle`]: one log line per second for a kind of event that every request of an outage
//! or an attack would repeat (a failed lookup, a refused token), with the count left out.
//! Depends on nothing, so any module may use it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// At most one log line per second for a kind of event (a `static` per call site).
pub struct Throttle {
    /// The second of the last line written (since the epoch).
    last: AtomicU64,
    /// Events left out since then.
    suppressed: AtomicU64,
}

impl Throttle {
    /// A throttle that lets the first event through.
    pub const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events left out since the last line)` when this event may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last.load(Ordering::Relaxed);
        if now > last
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn one_line_per_second_with_the_count_left_out() {
        let throttle = Throttle::new();
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        // The next second lets one through, saying how many were left out.
        throttle
            .last
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(throttle.allow(), Some(2));
    }
}
