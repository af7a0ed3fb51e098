//! Integers in request bodies, read as JSON Schema reads them.
//!
//! The OpenAPI document types `expected_version` and `enforce_percent` as `integer`, and in
//! JSON Schema `5.0` (or `5e0`) is the integer 5: a number whose fractional part is zero. serde
//! reads such a number as a float and refuses it where a `u64` is expected, which would refuse
//! what the document allows. These read every spelling of an integer, and refuse a fraction, a
//! negative number, and a float above 2^53, past which a float is not exact
//! (`9007199254740993.0` would be read as 9007199254740992): a 400, as before.
//!
//! The document writes a `u64` as `format: int64`, so [`option_u64`] also refuses what is above
//! `i64::MAX` (no version or count gets there).
//!
//! Use with `#[serde(default, deserialize_with = "...")]` on an `Option` field.

use serde::{Deserialize, Deserializer, de::Error};

/// The largest integer every float up to which is exact (2^53).
const EXACT_FLOAT_MAX: f64 = 9_007_199_254_740_992.0;

fn read(number: &serde_json::Number) -> Option<u64> {
    let n = number.as_u64().or_else(|| {
        let float = number.as_f64()?;
        // `-0.0 >= 0.0`: negative zero is the integer 0.
        (float.fract() == 0.0 && (0.0..=EXACT_FLOAT_MAX).contains(&float)).then_some(float as u64)
    })?;
    (n <= INT64_MAX).then_some(n)
}

/// The largest integer of the document's `format: int64`.
pub const INT64_MAX: u64 = i64::MAX as u64;

/// An optional non-negative integer (`null` or absent: `None`).
pub fn option_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|number| {
            read(&number)
                .ok_or_else(|| D::Error::custom(format!("{number} is not a non-negative integer")))
        })
        .transpose()
}

/// An optional integer of 0-255 (`null` or absent: `None`); what it must be within that is the
/// caller's to check.
pub fn option_u8<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u8>, D::Error> {
    option_u64(deserializer)?
        .map(|n| u8::try_from(n).map_err(|_| D::Error::custom(format!("{n} is out of range"))))
        .transpose()
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "super::option_u64")]
        version: Option<u64>,
        #[serde(default, deserialize_with = "super::option_u8")]
        percent: Option<u8>,
    }

    fn version(json: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<Body>(&format!(r#"{{"version": {json}}}"#))
            .map(|b| b.version)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_spelling_of_an_integer_is_read() {
        for (json, n) in [
            ("5", 5),
            ("5.0", 5),
            ("5e0", 5),
            ("1117620.0", 1_117_620),
            ("-0.0", 0),
            ("0", 0),
            ("9223372036854775807", i64::MAX as u64),
            ("9007199254740992.0", 9_007_199_254_740_992),
        ] {
            assert_eq!(version(json), Ok(Some(n)), "{json}");
        }
        assert_eq!(version("null"), Ok(None));
        let absent: Body = serde_json::from_str("{}").unwrap();
        assert_eq!((absent.version, absent.percent), (None, None));
    }

    #[test]
    fn fractions_negatives_and_inexact_floats_are_refused() {
        for json in [
            "5.5",
            "-1",
            "-1.0",
            "1e300",
            "9007199254740994.0",
            "18446744073709551616",
            "9223372036854775808",
            "\"5\"",
            "true",
        ] {
            assert!(version(json).is_err(), "{json}");
        }
        let percent = |json: &str| {
            serde_json::from_str::<Body>(&format!(r#"{{"percent": {json}}}"#)).map(|b| b.percent)
        };
        assert_eq!(percent("100.0").unwrap(), Some(100));
        assert!(percent("256").is_err());
        assert!(percent("2147483646").is_err());
    }
}
