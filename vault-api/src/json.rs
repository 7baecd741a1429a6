//! JSON numbers as the API document describes them.
//!
//! JSON Schema counts `30.0` as an integer, as it does `30`; serde takes only
//! the second for an integer type. The document says `int64` for every integer
//! of a body, so a number past `i64::MAX` is refused, as a client generated from
//! it expects.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// Whole floats up to 2^53 are exact; beyond that a float is not taken.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// An integer field that takes any JSON number with no fraction, within `T`
/// and `int64`. For `#[serde(deserialize_with = "whole_number")]`.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    whole(&number).ok_or_else(|| D::Error::custom("not a whole number in range"))
}

/// [`whole_number`] for an optional field (with `#[serde(default)]`).
pub fn optional_whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|n| whole(&n).ok_or_else(|| D::Error::custom("not a whole number in range")))
        .transpose()
}

fn whole<T: TryFrom<i64>>(number: &serde_json::Number) -> Option<T> {
    let n = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (-EXACT..=EXACT).contains(f))
            .map(|f| f as i64)
    })?;
    T::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Days {
        #[serde(deserialize_with = "whole_number")]
        days: u32,
        #[serde(default, deserialize_with = "optional_whole_number")]
        limit: Option<u64>,
    }

    fn days(json: &str) -> Option<(u32, Option<u64>)> {
        serde_json::from_str::<Days>(json)
            .ok()
            .map(|d| (d.days, d.limit))
    }

    #[test]
    fn whole_numbers_are_taken_in_either_spelling_and_others_are_not() {
        assert_eq!(days(r#"{"days": 30}"#), Some((30, None)));
        assert_eq!(
            days(r#"{"days": 30.0, "limit": 2e3}"#),
            Some((30, Some(2000)))
        );
        assert_eq!(days(r#"{"days": 30, "limit": null}"#), Some((30, None)));
        assert_eq!(days(r#"{"days": 30.5}"#), None);
        assert_eq!(days(r#"{"days": -1}"#), None);
        assert_eq!(days(r#"{"days": 4294967296}"#), None);
        assert_eq!(days(r#"{"days": "30"}"#), None);
        assert_eq!(
            days(r#"{"days": 1, "limit": 9223372036854775807}"#),
            Some((1, Some(i64::MAX as u64)))
        );
        assert_eq!(days(r#"{"days": 1, "limit": 9223372036854775808}"#), None);
        assert_eq!(days(r#"{"days": 1e300}"#), None);
    }
}
