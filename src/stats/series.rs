//! From a query (`since`, `until`, `step`) to the buckets to read and the series to answer:
//! pure functions, unit-tested without a store.
//!
//! Buckets are aligned to multiples of `step` since the Unix epoch (UTC), so the same step
//! always cuts time the same way, on every instance. A step of whole hours reads the hour
//! buckets (kept longer), any other whole number of minutes the minute buckets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::decision::{Reason, Verdict};
use crate::records::{Cell, Resolution, Retention};
use crate::timestamp::Timestamp;

/// Most buckets in one answer.
pub const MAX_BUCKETS: u64 = 1440;

/// Most store buckets one answer reads: two days of minutes, or 120 days of hours.
pub const MAX_READ: u64 = 2880;

/// What to read for a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Start of the first bucket of the answer, Unix seconds.
    pub start: u64,
    /// End of the last one (exclusive).
    pub end: u64,
    /// Seconds per answer bucket.
    pub step: u64,
    /// The store buckets read.
    pub resolution: Resolution,
}

impl Plan {
    /// The answer's buckets for `since`..`until` (Unix seconds) by `step` seconds, or why not.
    pub fn new(since: u64, until: u64, step: u64) -> Result<Self, String> {
        if step == 0 || !step.is_multiple_of(60) {
            return Err(format!(
                "step: {step} s is not a whole number of minutes (write e.g. 1m, 15m, 1h)"
            ));
        }
        if since >= until {
            return Err("since must be before until".into());
        }
        // Times written with four-digit years only (RFC 3339), the rounded-up end included.
        const LAST_SECOND: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        if until.saturating_add(step) > LAST_SECOND {
            return Err("until: at most 9999-12-31 (less one step)".into());
        }
        let resolution = if step.is_multiple_of(3600) {
            Resolution::Hour
        } else {
            Resolution::Minute
        };
        // The limits apply to the range asked for; rounding both ends out to the step adds at
        // most one bucket, which is allowed (so `since=24h` by the minute is 1,440 buckets).
        let asked = (until - since).div_ceil(step);
        let start = since / step * step;
        let end = until.div_ceil(step).saturating_mul(step);
        let buckets = asked;
        if buckets > MAX_BUCKETS {
            return Err(format!(
                "{buckets} buckets of {step} s from since to until: at most {MAX_BUCKETS}; take a larger step or a shorter range"
            ));
        }
        let read = (until - since).div_ceil(resolution.seconds());
        if read > MAX_READ {
            return Err(match resolution {
                Resolution::Minute => format!(
                    "a step of minutes reads minute buckets, at most {MAX_READ} (two days): for a longer range take a step of whole hours"
                ),
                Resolution::Hour => format!(
                    "a step of hours reads hour buckets, at most {MAX_READ} (120 days): take a shorter range"
                ),
            });
        }
        Ok(Self {
            start,
            end,
            step,
            resolution,
        })
    }

    /// How many store buckets to read from [`Self::start`].
    pub fn reads(&self) -> usize {
        ((self.end - self.start) / self.resolution.seconds()) as usize
    }

    /// How many answer buckets.
    pub fn buckets(&self) -> usize {
        ((self.end - self.start) / self.step) as usize
    }
}

/// `GET /v1/stats/decisions`: decisions counted per endpoint, decision and reason, in time
/// buckets merged across instances.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DecisionSeries {
    /// Start of the first bucket (`since` rounded down to the step).
    pub since: Timestamp,
    /// End of the last bucket (`until` rounded up to the step), exclusive.
    pub until: Timestamp,
    /// Seconds per bucket.
    pub step_seconds: u64,
    /// The stored buckets read: `minute`, or `hour` for a step of whole hours.
    pub resolution: Resolution,
    /// The start of each bucket, oldest first.
    pub buckets: Vec<Timestamp>,
    /// One series per endpoint, decision and reason that has a count, busiest first.
    pub series: Vec<Series>,
    /// Decisions over the whole range, by decision (every decision named, 0 included).
    #[schema(value_type = BTreeMap<String, u64>)]
    pub totals: BTreeMap<Verdict, u64>,
    /// False when part of the range is older than the buckets of this resolution are kept
    /// (`GATEHOUSE_STATS_MINUTE_RETENTION`, `GATEHOUSE_STATS_HOUR_RETENTION`).
    pub complete: bool,
}

/// The counts of one endpoint, decision and reason, per bucket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Series {
    /// The endpoint; `null` for "other endpoints": names the deployment does not know (not
    /// `default`, a forward-auth route's, `GATEHOUSE_STATS_ENDPOINTS` or an override in the
    /// settings in force when the check was counted), merged.
    #[schema(required = true)]
    pub endpoint: Option<String>,
    /// The decision.
    pub decision: Verdict,
    /// Its reason.
    pub reason: Reason,
    /// The count in each bucket, in the order of `buckets`.
    pub counts: Vec<u64>,
    /// Their sum.
    pub total: u64,
}

/// Sums the store buckets read for `plan` (in order, from `plan.start`) into the answer,
/// keeping only `endpoint` when given. `now` and `retention` say whether the range is whole.
pub fn assemble(
    plan: &Plan,
    read: Vec<Vec<(Cell, u64)>>,
    endpoint: Option<&str>,
    now: u64,
    retention: Retention,
) -> DecisionSeries {
    let width = plan.resolution.seconds();
    let per_bucket = (plan.step / width) as usize;
    let buckets = plan.buckets();
    let mut series: BTreeMap<Cell, Vec<u64>> = BTreeMap::new();
    for (i, cells) in read.into_iter().enumerate() {
        let bucket = i / per_bucket;
        if bucket >= buckets {
            break;
        }
        for (cell, count) in cells {
            if endpoint.is_some() && cell.endpoint.as_deref() != endpoint {
                continue;
            }
            series.entry(cell).or_insert_with(|| vec![0; buckets])[bucket] += count;
        }
    }
    let mut totals: BTreeMap<Verdict, u64> = Verdict::ALL.into_iter().map(|v| (v, 0)).collect();
    let mut series: Vec<Series> = series
        .into_iter()
        .map(|(cell, counts)| {
            let total = counts.iter().sum();
            *totals.entry(cell.verdict).or_default() += total;
            Series {
                endpoint: cell.endpoint,
                decision: cell.verdict,
                reason: cell.reason,
                counts,
                total,
            }
        })
        .collect();
    series.sort_by_key(|s| std::cmp::Reverse(s.total));
    let kept_from = now.saturating_sub(retention.of(plan.resolution).as_secs());
    DecisionSeries {
        since: seconds(plan.start),
        until: seconds(plan.end),
        step_seconds: plan.step,
        resolution: plan.resolution,
        buckets: (0..buckets as u64)
            .map(|i| seconds(plan.start + i * plan.step))
            .collect(),
        series,
        totals,
        // A bucket is kept for the retention past its end.
        complete: plan.start + width > kept_from,
    }
}

fn seconds(s: u64) -> Timestamp {
    Timestamp::from_unix_millis(s.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(endpoint: Option<&str>, verdict: Verdict, reason: Reason) -> Cell {
        Cell {
            endpoint: endpoint.map(str::to_owned),
            verdict,
            reason,
        }
    }

    #[test]
    fn plans_align_to_the_step_and_pick_the_resolution() {
        let plan = Plan::new(3_601, 7_199, 60).unwrap();
        assert_eq!(
            (plan.start, plan.end, plan.resolution),
            (3_600, 7_200, Resolution::Minute)
        );
        assert_eq!((plan.buckets(), plan.reads()), (60, 60));
        let plan = Plan::new(3_600 * 5 + 1, 3_600 * 30, 7_200).unwrap();
        assert_eq!(
            (plan.start, plan.end, plan.resolution),
            (14_400, 108_000, Resolution::Hour)
        );
        assert_eq!((plan.buckets(), plan.reads()), (13, 26));
        // 24 h by 15 minutes: 96 buckets from 1,440 minutes.
        let plan = Plan::new(0, 86_400, 900).unwrap();
        assert_eq!((plan.buckets(), plan.reads()), (96, 1_440));
        // A day by the minute from any second: 1,440 buckets asked, 1,441 once rounded out.
        let plan = Plan::new(30, 86_430, 60).unwrap();
        assert_eq!((plan.buckets(), plan.reads()), (1_441, 1_441));
        assert!(Plan::new(30, 86_430 + 60, 60).is_err(), "1,441 asked");
        assert!(Plan::new(0, 253_402_300_799, 86_400).is_err(), "past 9999");
        for (since, until, step) in [
            (0, 60, 30),               // not whole minutes
            (0, 60, 0),                // no step
            (60, 60, 60),              // empty
            (120, 60, 60),             // backwards
            (0, 86_400 * 2, 60),       // 2,880 buckets
            (0, 86_400 * 7, 600),      // 10,080 minutes read
            (0, 86_400 * 121, 86_400), // 2,904 hours read
        ] {
            assert!(
                Plan::new(since, until, step).is_err(),
                "{since} {until} {step}"
            );
        }
        assert!(Plan::new(0, 86_400 * 7, 3_600).is_ok(), "7 d by the hour");
    }

    #[test]
    fn sums_minutes_into_steps_and_filters_by_endpoint() {
        let plan = Plan::new(0, 300, 120).unwrap(); // 0-120, 120-240, 240-360: 6 minutes
        assert_eq!(plan.reads(), 6);
        let allow = cell(Some("chat"), Verdict::Allow, Reason::Owner);
        let would = cell(Some("files"), Verdict::WouldDeny, Reason::NotOwner);
        let other = cell(None, Verdict::Deny, Reason::NoOwner);
        let read = vec![
            vec![(allow.clone(), 2)],
            vec![(allow.clone(), 3), (would.clone(), 1)],
            vec![],
            vec![(other.clone(), 4)],
            vec![(allow.clone(), 1)],
            vec![],
        ];
        let now = 400;
        let all = assemble(&plan, read.clone(), None, now, Retention::default());
        assert_eq!(all.buckets.len(), 3);
        let counts = |s: &DecisionSeries, c: &Cell| {
            s.series
                .iter()
                .find(|x| {
                    x.endpoint == c.endpoint && x.decision == c.verdict && x.reason == c.reason
                })
                .map(|x| x.counts.clone())
        };
        assert_eq!(counts(&all, &allow), Some(vec![5, 0, 1]));
        assert_eq!(counts(&all, &would), Some(vec![1, 0, 0]));
        assert_eq!(counts(&all, &other), Some(vec![0, 4, 0]));
        assert_eq!(all.totals[&Verdict::Allow], 6);
        assert_eq!(all.totals[&Verdict::WouldDeny], 1);
        assert_eq!(all.totals[&Verdict::Deny], 4);
        assert_eq!(all.series[0].total, 6, "busiest first");
        assert!(all.complete);
        let chat = assemble(&plan, read, Some("chat"), now, Retention::default());
        assert_eq!(chat.series.len(), 1);
        assert_eq!(chat.totals[&Verdict::Deny], 0, "every decision named");
        let old = assemble(&plan, vec![], None, 86_400 * 30, Retention::default());
        assert!(!old.complete, "minutes of a month ago are gone");
    }
}
