//! Human durations in config: `250ms`, `5s`, `1m`, `2h`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration accepted anywhere in config.
const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration written with a unit, as users write it in YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || format!("`{text}` is not a duration; write it like 250ms, 5s, 1m or 2h");
        let (number, unit) = number_and_unit(text).ok_or_else(bad)?;
        let millis = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        // Timers add durations to clocks: a bound keeps every sum in range.
        match number.checked_mul(millis) {
            Some(total) if total <= MAX.as_millis() as u64 => {
                Ok(Self(Duration::from_millis(total)))
            }
            _ => Err(format!(
                "`{text}` is too long; durations are at most 8760h (a year)"
            )),
        }
    }
}

/// `250ms` as (250, "ms"); `None` without leading digits.
pub(super) fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit))
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like 250ms, 5s, 1m or 2h")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_durations_are_refused_not_wrapped() {
        assert!(HumanDuration::parse("8760h").is_ok());
        for text in ["8761h", "18446744073709551615ms", "99999999999999999999s"] {
            let error = HumanDuration::parse(text).expect_err(text);
            assert!(
                error.contains("too long") || error.contains("not a duration"),
                "{error}"
            );
        }
    }

    #[test]
    fn parses_each_unit() {
        let ms = |t| HumanDuration::parse(t).map(|d| d.0.as_millis());
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms("5s"), Ok(5_000));
        assert_eq!(ms("1m"), Ok(60_000));
        assert_eq!(ms("2h"), Ok(7_200_000));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        for bad in ["5", "5 sec", "s", "-1s", "1.5s", ""] {
            assert!(
                HumanDuration::parse(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
