//! Durations as the language writes them: `"90s"`, `"15m"`, `"24h"`, `"7d"`,
//! or a sum such as `"1h30m"`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A whole number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(u64);

impl Duration {
    pub const fn from_secs(secs: u64) -> Duration {
        Duration(secs)
    }

    pub const fn as_secs(self) -> u64 {
        self.0
    }

    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

const UNITS: [(char, u64); 5] = [
    ('w', 604_800),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a duration: {reason}")]
pub struct ParseDurationError {
    pub input: String,
    pub reason: &'static str,
}

impl ParseDurationError {
    /// What a user should write instead.
    pub const HINT: &'static str = "write a number followed by a unit: \"90s\", \"15m\", \"24h\", \"7d\" (or a sum like \"1h30m\")";
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Duration, ParseDurationError> {
        let err = |reason| ParseDurationError {
            input: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let (_, mult) = UNITS
                .iter()
                .find(|(u, _)| *u == c)
                .ok_or_else(|| err("unknown unit (use s, m, h, d or w)"))?;
            if digits.is_empty() {
                return Err(err("a unit must follow a number"));
            }
            let n: u64 = digits.parse().map_err(|_| err("the number is too large"))?;
            total = n
                .checked_mul(*mult)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("the number is too large"))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(err("the number has no unit"));
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    /// The canonical form, largest unit first: 90 s is `1m30s`, 86400 s is `1d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, mult) in UNITS.iter().skip(1) {
            if rest >= *mult {
                write!(f, "{}{}", rest / mult, unit)?;
                rest %= mult;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!("90s".parse::<Duration>().unwrap().as_secs(), 90);
        assert_eq!("15m".parse::<Duration>().unwrap().as_secs(), 900);
        assert_eq!("24h".parse::<Duration>().unwrap().as_secs(), 86_400);
        assert_eq!("7d".parse::<Duration>().unwrap().as_secs(), 604_800);
        assert_eq!("1h30m".parse::<Duration>().unwrap().as_secs(), 5_400);
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(Duration::from_secs(90).to_string(), "1m30s");
        assert_eq!(Duration::from_secs(604_800).to_string(), "7d");
        assert_eq!(Duration::from_secs(0).to_string(), "0s");
    }

    #[test]
    fn rejects_bad_input() {
        for s in ["", "15", "m", "15x", "1.5h", "-1m", "99999999999999999999s"] {
            assert!(s.parse::<Duration>().is_err(), "{s}");
        }
    }
}
