//! Naming a recovery point: the one grammar of `restore POINT`, `points
//! --point`, `failover --point` and `drill --point`.
//!
//! - `latest`: the newest consistent point (crash or app; never `fuzzy`,
//!   never one dated in the future); "newest" follows the chain's
//!   sequence, then the capture time (`Manifest::order`);
//! - `latest-app`: the newest app-consistent point (same rules);
//! - a point id or a unique prefix of one (at least 4 hex digits, any
//!   case; also names a `fuzzy` point);
//! - an RFC 3339 time with any offset (`2026-11-26T08:00:00Z`,
//!   `2026-11-26T09:00:00+01:00`): the newest consistent point at or
//!   before that instant.
//!
//! [`PointQuery::select`] picks among one machine's points (what `restore`
//! and `points` need); recovery plans choose an instant per consistency
//! group from the same query (`recovery::points`).

use super::manifest::{Consistency, Manifest};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A parsed point name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointQuery {
    Latest,
    LatestApp,
    /// A point id or a prefix of one: lowercase hex, 4 to 64 digits.
    Id(String),
    Time(OffsetDateTime),
}

/// Shortest id prefix accepted: shorter ones match too much by accident.
pub const MIN_PREFIX: usize = 4;

/// Text that names no point; the message says what would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a point: expected latest, latest-app, a point id (at least 4 hex digits, see `standby points`) or an RFC 3339 time such as 2026-11-26T08:00:00Z"
)]
pub struct NotAPoint {
    pub input: String,
}

impl std::str::FromStr for PointQuery {
    type Err = NotAPoint;
    fn from_str(s: &str) -> Result<PointQuery, NotAPoint> {
        match s {
            "latest" => return Ok(PointQuery::Latest),
            "latest-app" => return Ok(PointQuery::LatestApp),
            _ => {}
        }
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            return Ok(PointQuery::Time(t));
        }
        if (MIN_PREFIX..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(PointQuery::Id(s.to_ascii_lowercase()));
        }
        Err(NotAPoint {
            input: s.to_string(),
        })
    }
}

impl std::fmt::Display for PointQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointQuery::Latest => f.write_str("latest"),
            PointQuery::LatestApp => f.write_str("latest-app"),
            PointQuery::Id(p) => f.write_str(p),
            PointQuery::Time(t) => match t.format(&Rfc3339) {
                Ok(s) => f.write_str(&s),
                Err(_) => write!(f, "{t}"),
            },
        }
    }
}

/// Why [`PointQuery::select`] found no one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmatched {
    /// No point fits.
    None,
    /// An id prefix of several points: their short ids.
    Ambiguous(Vec<String>),
}

impl PointQuery {
    /// Whether the query names a point directly (an id), rather than the
    /// newest of a kind: only then may a `fuzzy` point be chosen.
    pub fn is_id(&self) -> bool {
        matches!(self, PointQuery::Id(_))
    }

    /// Whether `m`'s id starts with this query's prefix.
    pub fn matches_id(&self, m: &Manifest) -> bool {
        matches!(self, PointQuery::Id(p) if m.id.hex().starts_with(p.as_str()))
    }

    /// The point this query names among `points` (oldest first), only
    /// points of `machine` when given.
    pub fn select<'a>(
        &self,
        points: &'a [Manifest],
        machine: Option<&str>,
    ) -> Result<&'a Manifest, Unmatched> {
        let of_machine = |m: &&Manifest| machine.is_none_or(|a| m.machine == a);
        let consistent = |m: &&Manifest| m.consistency != Consistency::Fuzzy;
        // The newest by the chain's order, not by capture time (see
        // `Manifest::order`).
        let newest = |f: &dyn Fn(&&Manifest) -> bool| {
            points
                .iter()
                .filter(of_machine)
                .filter(consistent)
                .filter(|m| f(m))
                .max_by(|a, b| a.order().cmp(&b.order()))
                .ok_or(Unmatched::None)
        };
        // A point dated in the future is never `latest`: its host's clock
        // was ahead. Name it by id to use it.
        let now = super::clock::now();
        match self {
            PointQuery::Latest => newest(&|m| !m.in_future(now)),
            PointQuery::LatestApp => {
                newest(&|m| m.consistency == Consistency::App && !m.in_future(now))
            }
            PointQuery::Time(t) => newest(&|m| m.created_at().is_some_and(|c| c <= *t)),
            PointQuery::Id(_) => {
                let hits: Vec<&Manifest> = points
                    .iter()
                    .filter(of_machine)
                    .filter(|m| self.matches_id(m))
                    .collect();
                match hits.as_slice() {
                    [] => Err(Unmatched::None),
                    [one] => Ok(one),
                    many => Err(Unmatched::Ambiguous(
                        many.iter().map(|m| m.id.short()).collect(),
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::Id;

    fn point(id: u8, created: &str, machine: &str, consistency: Consistency) -> Manifest {
        Manifest {
            format: 1,
            id: Id([id; 32]),
            protection: machine.replace("machine.", "protection."),
            machine: machine.to_string(),
            group: None,
            created: created.to_string(),
            consistency,
            freeze_ms: None,
            disks: Default::default(),
            stats: Default::default(),
            site: None,
            moves_to: None,
            cbt: None,
            seq: None,
            owner: None,
            writer: None,
            index: None,
        }
    }

    fn points() -> Vec<Manifest> {
        vec![
            point(0xa1, "2026-11-26T08:00:00Z", "machine.db", Consistency::App),
            point(
                0xa2,
                "2026-11-26T09:00:00Z",
                "machine.db",
                Consistency::Crash,
            ),
            point(
                0xb3,
                "2026-11-26T10:00:00Z",
                "machine.db",
                Consistency::Fuzzy,
            ),
            point(
                0xc4,
                "2026-11-26T10:30:00Z",
                "machine.web",
                Consistency::Crash,
            ),
        ]
    }

    fn q(s: &str) -> PointQuery {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn pick(query: &str, machine: Option<&str>) -> Result<u8, Unmatched> {
        let all = points();
        q(query).select(&all, machine).map(|m| m.id.0[0])
    }

    #[test]
    fn parses_the_four_forms() {
        assert_eq!(q("latest"), PointQuery::Latest);
        assert_eq!(q("latest-app"), PointQuery::LatestApp);
        assert_eq!(q("A1A1"), PointQuery::Id("a1a1".into()));
        assert_eq!(
            q("2026-11-26T09:00:00+01:00"),
            PointQuery::Time(q("2026-11-26T08:00:00Z").time())
        );
        for bad in [
            "",
            "newest",
            "a1a",
            "xyz1",
            "2026-11-26",
            "2026-11-26 08:00",
            "latest-crash",
        ] {
            let e = bad.parse::<PointQuery>().err();
            assert!(
                e.as_ref()
                    .is_some_and(|e| e.to_string().contains("expected latest, latest-app")),
                "{bad:?}: {e:?}"
            );
        }
    }

    impl PointQuery {
        fn time(&self) -> OffsetDateTime {
            match self {
                PointQuery::Time(t) => *t,
                other => panic!("{other:?} is no time"),
            }
        }
    }

    #[test]
    fn latest_is_the_newest_consistent_point() {
        assert_eq!(pick("latest", Some("machine.db")), Ok(0xa2));
        assert_eq!(pick("latest", None), Ok(0xc4));
    }

    #[test]
    fn latest_app_skips_crash_points() {
        assert_eq!(pick("latest-app", Some("machine.db")), Ok(0xa1));
        assert_eq!(
            pick("latest-app", Some("machine.web")),
            Err(Unmatched::None)
        );
    }

    #[test]
    fn a_time_takes_the_newest_at_or_before_it_in_any_offset() {
        // 09:00Z exactly, written as 10:00 at +01:00.
        assert_eq!(
            pick("2026-11-26T10:00:00+01:00", Some("machine.db")),
            Ok(0xa2)
        );
        // One second before, written west of UTC.
        assert_eq!(
            pick("2026-11-26T03:59:59-05:00", Some("machine.db")),
            Ok(0xa1)
        );
        assert_eq!(
            pick("2026-11-26T07:00:00Z", Some("machine.db")),
            Err(Unmatched::None)
        );
        // The fuzzy point at 10:00 is never chosen by time.
        assert_eq!(pick("2026-11-26T10:15:00Z", Some("machine.db")), Ok(0xa2));
    }

    #[test]
    fn latest_follows_the_chain_and_skips_points_dated_in_the_future() {
        let now = crate::vault::clock::now();
        let at = |d: time::Duration| (now + d).format(&Rfc3339).unwrap();
        let mut all = vec![
            point(
                1,
                &at(time::Duration::hours(-2)),
                "machine.db",
                Consistency::App,
            ),
            // Its writer's clock ran a day ahead.
            point(
                2,
                &at(time::Duration::days(1)),
                "machine.db",
                Consistency::App,
            ),
            point(
                3,
                &at(time::Duration::hours(-1)),
                "machine.db",
                Consistency::Crash,
            ),
        ];
        for (i, m) in all.iter_mut().enumerate() {
            m.seq = Some(i as u64 + 1);
        }
        all.sort_by(|a, b| a.created.cmp(&b.created));
        let pick = |s: &str| q(s).select(&all, Some("machine.db")).map(|m| m.id.0[0]);
        assert_eq!(pick("latest"), Ok(3));
        assert_eq!(pick("latest-app"), Ok(1));
        assert_eq!(pick("0202"), Ok(2), "named, it is still there");
        // The chain outranks the clock even among points in the past.
        all[0].seq = Some(9);
        let pick = |s: &str| q(s).select(&all, Some("machine.db")).map(|m| m.id.0[0]);
        assert_eq!(pick("latest"), Ok(1));
    }

    #[test]
    fn an_id_prefix_must_be_unique_and_may_name_a_fuzzy_point() {
        assert_eq!(pick("b3b3", None), Ok(0xb3));
        assert_eq!(pick("B3B3B3", Some("machine.db")), Ok(0xb3));
        assert_eq!(pick("b3b3", Some("machine.web")), Err(Unmatched::None));
        assert_eq!(pick(&"a1".repeat(32), None), Ok(0xa1));
        let all = vec![
            point(0xa1, "2026-11-26T08:00:00Z", "machine.db", Consistency::App),
            {
                let mut m = point(0xa1, "2026-11-26T09:00:00Z", "machine.db", Consistency::App);
                m.id.0[31] = 0;
                m
            },
        ];
        assert!(matches!(
            q("a1a1").select(&all, None),
            Err(Unmatched::Ambiguous(ids)) if ids.len() == 2
        ));
    }
}
