//! Wall-clock timestamps as they appear in the API and in Redis: RFC 3339, UTC, milliseconds.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A point in time, written as `2026-11-23T10:00:00.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, format = DateTime, example = "2026-11-23T10:00:00.123Z")]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The current time, truncated to the millisecond (the precision it is written with, so
    /// a timestamp survives a round trip through JSON unchanged).
    pub fn now() -> Self {
        Self(SystemTime::now()).truncated()
    }

    fn truncated(self) -> Self {
        Self::from_unix_millis(self.unix_millis())
    }

    /// Milliseconds since the Unix epoch (0 for earlier times).
    pub fn unix_millis(self) -> u64 {
        self.0
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The time `millis` milliseconds after the Unix epoch.
    pub fn from_unix_millis(millis: u64) -> Self {
        Self(UNIX_EPOCH + Duration::from_millis(millis))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl std::str::FromStr for Timestamp {
    type Err = humantime::TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_rfc3339_weak(s).map(Self)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}
/// The pattern of a time as the API's query parameters take it ([`Timestamp::parse_query`]):
/// RFC 3339 in UTC, `2026-11-23T10:00:00Z` or with 1-9 digits of a second's fraction, from 1970
/// to 9999, a real calendar day.
pub const QUERY_TIME_PATTERN: &str = concat!(
    "(?:(?:19[7-9][0-9]|[2-9][0-9]{3})-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    // February 29th of a leap year: divisible by 4, and by 400 if by 100.
    "|(?:19(?:7[26]|8[048]|9[26])|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])",
    "|(?:[2468][048]|[3579][26])00)-02-29)",
    "T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?Z"
);

/// The pattern of a span of time back from now ([`parse_window`]): a whole number (1-999999)
/// of seconds, minutes, hours, days or weeks, `90s`, `15m`, `24h`, `7d`, `2w`.
pub const WINDOW_PATTERN: &str = "[1-9][0-9]{0,5}[smhdw]";

impl Timestamp {
    /// Reads a time a caller wrote in a query ([`QUERY_TIME_PATTERN`]). Stricter than
    /// [`FromStr`](std::str::FromStr), which reads what the store holds: no offset, no space
    /// for `T`, no leap second, at most nanoseconds.
    pub fn parse_query(raw: &str) -> Option<Self> {
        let b = raw.as_bytes();
        let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
        let shaped = b.len() >= 20
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19)
            && b[17] <= b'5'
            && b.last() == Some(&b'Z')
            && (b.len() == 20
                || (b[19] == b'.' && (22..=30).contains(&b.len()) && digits(20..b.len() - 1)));
        // humantime checks the ranges and the calendar (and the year from 1970).
        shaped
            .then(|| humantime::parse_rfc3339(raw).ok())
            .flatten()
            .map(Self)
    }
}

/// Reads a span of time back from now ([`WINDOW_PATTERN`]).
pub fn parse_window(raw: &str) -> Option<Duration> {
    let (number, unit) = raw.split_at_checked(raw.len().checked_sub(1)?)?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    let shaped = (1..=6).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
        && !number.starts_with('0');
    let number: u64 = number.parse().ok().filter(|_| shaped)?;
    Some(Duration::from_secs(number * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full(pattern: &str) -> regex::Regex {
        regex::Regex::new(&format!("^(?:{pattern})$")).unwrap()
    }

    #[test]
    fn query_times_are_strict_rfc_3339_in_utc() {
        let pattern = full(QUERY_TIME_PATTERN);
        for raw in [
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:00:00.1Z",
            "2026-11-23T10:00:00.123456789Z",
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "2000-02-29T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert!(Timestamp::parse_query(raw).is_some(), "{raw}");
            assert!(pattern.is_match(raw), "{raw}");
        }
        for raw in [
            "",
            "2026-11-23",
            "2026-11-23 10:00:00Z",
            "2026-11-23t10:00:00z",
            "2026-11-23T10:00:00",
            "2026-11-23T10:00:00+00:00",
            "2026-11-23T10:00:00.Z",
            "2026-11-23T10:00:00.1234567890Z",
            "2026-11-23T10:00:60Z",
            "2026-11-23T24:00:00Z",
            "2026-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "+026-11-23T10:00:00Z",
        ] {
            assert!(Timestamp::parse_query(raw).is_none(), "{raw}");
            assert!(!pattern.is_match(raw), "{raw}");
        }
        assert_eq!(
            Timestamp::parse_query("2026-11-18T11:06:40.123Z").map(Timestamp::unix_millis),
            Some(1_795_000_000_123)
        );
    }

    #[test]
    fn every_day_of_four_centuries_is_read_as_the_pattern_says() {
        let pattern = full(QUERY_TIME_PATTERN);
        for year in (1970..=2401).chain([1969, 2800, 2900, 9996, 9999]) {
            for month in 0..=13 {
                for day in 0..=32 {
                    let raw = format!("{year:04}-{month:02}-{day:02}T12:34:56Z");
                    assert_eq!(
                        Timestamp::parse_query(&raw).is_some(),
                        pattern.is_match(&raw),
                        "{raw}"
                    );
                }
            }
        }
    }

    #[test]
    fn windows_are_a_number_and_a_unit() {
        assert_eq!(parse_window("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_window("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_window("2w"), Some(Duration::from_secs(1_209_600)));
        assert_eq!(
            parse_window("999999w"),
            Some(Duration::from_secs(999_999 * 604_800))
        );
        for raw in [
            "", "h", "0h", "01h", "1H", "1 h", "1h30m", "24", "+1h", "1000000h", "1é",
        ] {
            assert_eq!(parse_window(raw), None, "{raw}");
        }
    }

    proptest! {
        #[test]
        fn the_patterns_are_what_the_parsers_read(
            time in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?Z?",
            window in "[0-9+]{0,7}[smhdwMy ]?",
        ) {
            prop_assert_eq!(Timestamp::parse_query(&time).is_some(), full(QUERY_TIME_PATTERN).is_match(&time), "{}", time);
            prop_assert_eq!(parse_window(&window).is_some(), full(WINDOW_PATTERN).is_match(&window), "{}", window);
        }
    }

    #[test]
    fn round_trips_through_json_at_millisecond_precision() {
        let t = Timestamp::from_unix_millis(1_795_000_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-18T11:06:40.123Z\"");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.unix_millis(), 1_795_000_000_123);
    }
}
