//! The decision time series as the store keeps it, and the instance records of the heartbeat.
//!
//! A bucket (a minute, or an hour) maps cells to counts. A cell is one endpoint, decision and
//! reason; its field name in a store hash is `{decision}|{reason}|{endpoint}` (the endpoint
//! last, since a name may hold `|`), or `{decision}|{reason}` for the endpoints past the
//! per-instance limit, merged ([`Cell::endpoint`] `None`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::decision::{Reason, Verdict};
use crate::timestamp::Timestamp;

/// One counted kind of decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell {
    /// The endpoint; `None`: one of the endpoints past the limit of names.
    pub endpoint: Option<String>,
    /// The decision.
    pub verdict: Verdict,
    /// Its reason.
    pub reason: Reason,
}

impl Cell {
    /// The field name of this cell in a store hash.
    pub fn field(&self) -> String {
        let (verdict, reason) = (self.verdict.as_str(), self.reason.as_str());
        match &self.endpoint {
            Some(endpoint) => format!("{verdict}|{reason}|{endpoint}"),
            None => format!("{verdict}|{reason}"),
        }
    }

    /// Reads a field name written by [`Self::field`].
    pub fn from_field(field: &str) -> Option<Self> {
        let mut parts = field.splitn(3, '|');
        let verdict_name = parts.next()?;
        let verdict = Verdict::ALL
            .into_iter()
            .find(|v| v.as_str() == verdict_name)?;
        let reason_name = parts.next()?;
        let reason = Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == reason_name)?;
        let endpoint = match parts.next() {
            None => None,
            Some(name) if !name.is_empty() => Some(name.to_owned()),
            Some(_) => return None,
        };
        Some(Self {
            endpoint,
            verdict,
            reason,
        })
    }
}

/// The granularity of a stored bucket.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Buckets of one minute.
    Minute,
    /// Buckets of one hour.
    Hour,
}

impl Resolution {
    /// Seconds per bucket.
    pub fn seconds(self) -> u64 {
        match self {
            Resolution::Minute => 60,
            Resolution::Hour => 3600,
        }
    }

    /// The name in key names.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Minute => "m",
            Resolution::Hour => "h",
        }
    }
}

/// The counts of one minute, from one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCounts {
    /// Start of the minute, in Unix seconds (a multiple of 60).
    pub minute: u64,
    /// Each counted cell and its count (each cell once, counts above zero).
    pub cells: Vec<(Cell, u64)>,
}

/// A batch of counts from one writer (an instance's process), numbered: the store adds a
/// batch at most once (a retry after a lost answer is skipped), as the audit stream does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsBatch {
    /// The writer: unique per process.
    pub writer: String,
    /// The batch's number, ascending per writer from 1.
    pub seq: u64,
    /// The counts, by minute.
    pub minutes: Vec<MinuteCounts>,
}

/// How long buckets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Minute buckets.
    pub minutes: std::time::Duration,
    /// Hour buckets.
    pub hours: std::time::Duration,
}

impl Retention {
    /// How long buckets of `resolution` are kept.
    pub fn of(&self, resolution: Resolution) -> std::time::Duration {
        match resolution {
            Resolution::Minute => self.minutes,
            Resolution::Hour => self.hours,
        }
    }
}

impl Default for Retention {
    /// 14 days of minutes, 90 days of hours.
    fn default() -> Self {
        Self {
            minutes: std::time::Duration::from_secs(14 * 86_400),
            hours: std::time::Duration::from_secs(90 * 86_400),
        }
    }
}

/// What an instance says of itself in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceRecord {
    /// Its name (`GATEHOUSE_INSTANCE`).
    pub instance: String,
    /// The gatehouse version it runs.
    pub build_version: String,
    /// The version of the enforcement settings in force on it (0: none known).
    pub settings_version: u64,
    /// Where those settings come from: `store`, `snapshot` or `none`.
    pub settings_source: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it last said so.
    pub seen_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_back_with_any_endpoint_name() {
        for endpoint in [Some("chat"), Some("a|b|c"), Some("日本"), None] {
            for verdict in Verdict::ALL {
                for reason in Reason::ALL {
                    let cell = Cell {
                        endpoint: endpoint.map(str::to_owned),
                        verdict,
                        reason,
                    };
                    assert_eq!(Cell::from_field(&cell.field()), Some(cell));
                }
            }
        }
        for bad in [
            "",
            "allow",
            "allow|",
            "allow|owner|",
            "maybe|owner|x",
            "allow|nope|x",
        ] {
            assert_eq!(Cell::from_field(bad), None, "{bad:?}");
        }
    }
}
