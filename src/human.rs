//! How standby writes values for people, in one place, so every renderer
//! (text, Markdown, reports, progress, errors) agrees: sizes in binary units
//! with one decimal, times to the second with their zone, one duration
//! style, counted nouns with the right plural. Machine output (JSON) keeps
//! full precision and never goes through here.

use time::OffsetDateTime;

/// Bytes for people: `0 B`, `512 B`, `44.0 MiB`, `1.2 GiB` (binary units,
/// one decimal above bytes).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `n` and the noun, plural unless `n` is 1: `1 machine`, `3 machines`,
/// `0 recovery points`. Nouns whose plural is not `+s` use [`count_as`].
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `n` and the singular or the given plural: `count_as(2, "policy", "policies")`.
pub fn count_as(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// A time for people: to the second, in UTC, with the zone:
/// `2026-11-30 09:02:04 UTC`.
pub fn time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// An RFC 3339 time (as stored in state and manifests) for people, see
/// [`time`]; text that does not parse is returned as it is.
pub fn time_str(rfc3339: &str) -> String {
    match OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) {
        Ok(t) => time(t),
        Err(_) => rfc3339.to_string(),
    }
}

/// A measured duration for people, one style everywhere (RTO, RPO, ages,
/// elapsed times): tenths of a second under a minute (`0.4s`, `12.3s`),
/// whole units above (`2m 5s`, `1h 2m 5s`, `2d 4h 0m`).
pub fn duration(d: std::time::Duration) -> String {
    let total = d.as_secs_f64();
    if total < 59.95 {
        return format!("{total:.1}s");
    }
    let s = d.as_secs() + u64::from(d.subsec_millis() >= 500);
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h {mins}m")
    } else if hours > 0 {
        format!("{hours}h {mins}m {secs}s")
    } else {
        format!("{mins}m {secs}s")
    }
}

/// [`duration`] of whole seconds (negative counts as zero).
pub fn seconds(secs: i64) -> String {
    duration(std::time::Duration::from_secs(secs.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(67_227_648), "64.1 MiB");
        assert_eq!(size(44 << 20), "44.0 MiB");
    }

    #[test]
    fn counts() {
        assert_eq!(count(1, "machine"), "1 machine");
        assert_eq!(count(0, "recovery point"), "0 recovery points");
        assert_eq!(count_as(2, "policy", "policies"), "2 policies");
    }

    #[test]
    fn times_to_the_second_with_zone() {
        let t = time::macros::datetime!(2026-11-30 10:02:04.123456789 +01:00);
        assert_eq!(time(t), "2026-11-30 09:02:04 UTC");
        assert_eq!(
            time_str("2026-11-30T09:02:04.999999Z"),
            "2026-11-30 09:02:04 UTC"
        );
    }

    #[test]
    fn durations_one_style() {
        assert_eq!(duration(Duration::from_millis(40)), "0.0s");
        assert_eq!(duration(Duration::from_millis(1450)), "1.4s");
        assert_eq!(duration(Duration::from_secs(125)), "2m 5s");
        assert_eq!(duration(Duration::from_secs(3725)), "1h 2m 5s");
        assert_eq!(seconds(-3), "0.0s");
    }
}
