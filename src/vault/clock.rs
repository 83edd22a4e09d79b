//! The wall clock as standby reads it. It dates what a point records (its
//! capture time) and judges ages for `status` and retention; nothing that
//! decides safety or order reads it: locks expire by renewals their
//! observer saw stop (`lock`), points are ordered by their chain's
//! sequence (`manifest::Manifest::order`).
//!
//! `STANDBY_CLOCK_SKEW` (`31m`, `-2h`, `1d`, `90s`) shifts this process's
//! clock: a test hook for hosts whose clocks disagree, not a setting.
//! Retention ages points by the earlier of this clock and the store's
//! (`prune`), so one host whose clock runs ahead cannot age them early.

use time::{Duration, OffsetDateTime};

/// How far past a reader's clock a point's time may be and still count as
/// now (clocks of healthy hosts differ by seconds, NTP-less ones by
/// minutes).
pub const FUTURE_TOLERANCE: Duration = Duration::minutes(5);

/// This process's idea of now (UTC), skew applied.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc() + skew()
}

/// The test skew from `STANDBY_CLOCK_SKEW`; zero when unset or unreadable.
pub fn skew() -> Duration {
    std::env::var("STANDBY_CLOCK_SKEW")
        .ok()
        .and_then(|s| parse_skew(&s))
        .unwrap_or(Duration::ZERO)
}

/// Test hook: `STANDBY_TEST_STORE_CLOCK_SKEW` shifts the store's clock as
/// prune reads it for retention (tests age points by moving both clocks:
/// "a day has passed"); never the grace period's clock.
pub fn store_skew() -> Duration {
    std::env::var("STANDBY_TEST_STORE_CLOCK_SKEW")
        .ok()
        .and_then(|s| parse_skew(&s))
        .unwrap_or(Duration::ZERO)
}

/// `[+-]N(s|m|h|d)`.
fn parse_skew(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let secs = n.checked_mul(match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    })?;
    Some(Duration::seconds(if neg { -secs } else { secs }))
}

/// Whether a point captured at `created` lies ahead of `now` by more than
/// [`FUTURE_TOLERANCE`]: its writer's clock was ahead.
pub fn in_future(created: OffsetDateTime, now: OffsetDateTime) -> bool {
    created > now + FUTURE_TOLERANCE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skews_parse_with_sign_and_unit() {
        assert_eq!(parse_skew("31m"), Some(Duration::minutes(31)));
        assert_eq!(parse_skew("+1d"), Some(Duration::days(1)));
        assert_eq!(parse_skew("-2h"), Some(Duration::hours(-2)));
        assert_eq!(parse_skew("90s"), Some(Duration::seconds(90)));
        for bad in ["", "m", "31", "31x", "1.5h"] {
            assert_eq!(parse_skew(bad), None, "{bad:?}");
        }
    }
}
