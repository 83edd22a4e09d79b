//! Choosing the recovery point each machine of a plan is restored from:
//! `latest`, `latest-app`, a point id, or a time (the grammar is
//! `vault::query`'s, shared with `restore` and `points`). Machines of one
//! consistency group always get points of one instant (taken together).

use crate::model::{Address, Config, RecoveryPlan};
use crate::vault::manifest::{Consistency, Manifest};
use crate::vault::query::{NotAPoint, PointQuery};
use crate::workspace::protection_of;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// What `--point` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum PointChoice {
    /// The newest point (instant) of every machine (group).
    Latest,
    /// The newest app-consistent point (instant): app-consistent for every
    /// machine that can have such points (quiesce hooks and a policy that
    /// takes them); a machine (group) with none of those takes its latest.
    LatestApp,
    /// The instant of this point (a unique id prefix); other groups take
    /// their newest instant at or before it.
    Id(String),
    /// For every machine (group), the newest instant at or before this time.
    Time(OffsetDateTime),
    /// `failover unplanned`'s default: latest app-consistent for machines
    /// whose policy takes app-consistent points (when one exists), else latest.
    PreferApp,
}

impl From<PointQuery> for PointChoice {
    fn from(q: PointQuery) -> PointChoice {
        match q {
            PointQuery::Latest => PointChoice::Latest,
            PointQuery::LatestApp => PointChoice::LatestApp,
            PointQuery::Id(prefix) => PointChoice::Id(prefix),
            PointQuery::Time(t) => PointChoice::Time(t),
        }
    }
}

/// `--point`: the one point grammar ([`PointQuery`]).
impl std::str::FromStr for PointChoice {
    type Err = NotAPoint;
    fn from_str(s: &str) -> Result<PointChoice, NotAPoint> {
        s.parse::<PointQuery>().map(PointChoice::from)
    }
}

/// Why no point could be chosen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChooseError {
    #[error("no point {prefix} of a machine of {plan} (see `standby points`)")]
    NoSuchPoint { prefix: String, plan: Address },
    #[error("point {0} has no valid time")]
    NoTime(String),
    #[error("point {prefix} is ambiguous: {}; give more digits", ids.join(", "))]
    Ambiguous { prefix: String, ids: Vec<String> },
    /// `what` (a machine or consistency group) has no point that fits:
    /// `why` says which kind was missing.
    #[error(
        "{what} has {why}{} in {vault} (fuzzy points, read while their disks were written, are used only when named by id); run `standby replicate` first, or see `standby points`",
        if *together { " taken for all its machines together" } else { "" }
    )]
    NoneFits {
        what: String,
        why: &'static str,
        together: bool,
        vault: Address,
    },
    #[error("{machine} of {plan} has no protection, so it has no recovery points")]
    Unprotected { machine: Address, plan: Address },
}

/// A machine's chosen point and the vault it is in.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub vault: Address,
    pub protection: Address,
    pub point: Manifest,
}

/// Machines restored from one instant: a consistency group's machines of
/// this plan, or one machine.
struct Unit {
    vault: Address,
    group: Option<String>,
    /// (machine, protection)
    machines: Vec<(Address, Address)>,
    /// Per machine: it has quiesce hooks and its policy takes app-consistent points.
    app: Vec<bool>,
}

/// One instant of a unit: a point per machine, in unit order.
type Instant = (OffsetDateTime, Vec<Manifest>);

/// The points for every machine of `plan`. `points` holds each vault's
/// listing (oldest first).
pub fn choose(
    cfg: &Config,
    plan: &RecoveryPlan,
    points: &BTreeMap<Address, Vec<Manifest>>,
    choice: &PointChoice,
) -> Result<BTreeMap<Address, Chosen>, ChooseError> {
    let units = units(cfg, plan)?;
    // Fuzzy points (read while written) are used only when named by id.
    let named = matches!(choice, PointChoice::Id(_));
    // A point id names an instant: find it among the plan's points.
    let choice = match choice {
        PointChoice::Id(prefix) => {
            let mut hits = Vec::new();
            for u in &units {
                for m in points.get(&u.vault).into_iter().flatten() {
                    if u.machines.iter().any(|(a, _)| m.machine == a.to_string())
                        && m.id.hex().starts_with(prefix.as_str())
                    {
                        hits.push(m);
                    }
                }
            }
            match hits.as_slice() {
                [] => {
                    return Err(ChooseError::NoSuchPoint {
                        prefix: prefix.clone(),
                        plan: plan.addr.clone(),
                    });
                }
                [one] => PointChoice::Time(
                    one.created_at()
                        .ok_or_else(|| ChooseError::NoTime(prefix.clone()))?,
                ),
                many => {
                    let ids: Vec<String> = many.iter().map(|m| m.id.short()).collect();
                    return Err(ChooseError::Ambiguous {
                        prefix: prefix.clone(),
                        ids,
                    });
                }
            }
        }
        other => other.clone(),
    };
    let mut out = BTreeMap::new();
    for u in &units {
        let list = points.get(&u.vault).map_or(&[][..], |v| v.as_slice());
        let instants: Vec<Instant> = instants(u, list)
            .into_iter()
            .filter(|i| named || i.1.iter().all(|m| m.consistency != Consistency::Fuzzy))
            .collect();
        let what = u
            .group
            .as_ref()
            .map(|g| format!("consistency group {g}"))
            .unwrap_or_else(|| u.machines[0].0.to_string());
        // App-consistent: every machine that can have such points has one
        // (a machine without quiesce hooks only ever has crash points).
        let all_app = |i: &&Instant| {
            i.1.iter()
                .zip(&u.app)
                .all(|(m, &can)| !can || m.consistency == Consistency::App)
        };
        let any_app = u.app.iter().any(|&a| a);
        let picked = match &choice {
            PointChoice::Latest => instants.last(),
            PointChoice::LatestApp if any_app => instants.iter().rev().find(all_app),
            PointChoice::LatestApp => instants.last(),
            PointChoice::PreferApp => instants
                .iter()
                .rev()
                .find(all_app)
                .or_else(|| instants.last()),
            PointChoice::Time(t) => instants.iter().rev().find(|i| i.0 <= *t),
            PointChoice::Id(_) => None,
        };
        let Some((_, manifests)) = picked else {
            let why = match &choice {
                PointChoice::LatestApp => "no app-consistent point",
                PointChoice::Time(_) => "no point at or before that time",
                _ => "no point",
            };
            return Err(ChooseError::NoneFits {
                what,
                why,
                together: u.group.is_some() && u.machines.len() > 1,
                vault: u.vault.clone(),
            });
        };
        for ((machine, protection), m) in u.machines.iter().zip(manifests) {
            out.insert(
                machine.clone(),
                Chosen {
                    vault: u.vault.clone(),
                    protection: protection.clone(),
                    point: m.clone(),
                },
            );
        }
    }
    Ok(out)
}

fn units(cfg: &Config, plan: &RecoveryPlan) -> Result<Vec<Unit>, ChooseError> {
    let mut by_key: BTreeMap<(Address, String), Unit> = BTreeMap::new();
    for g in &plan.groups {
        for m in &g.machines {
            let p = protection_of(cfg, m).ok_or_else(|| ChooseError::Unprotected {
                machine: m.clone(),
                plan: plan.addr.clone(),
            })?;
            let app = cfg.machines.get(m).is_some_and(|mm| mm.quiesce.is_some())
                && cfg
                    .policies
                    .get(&p.policy)
                    .is_some_and(|pol| pol.app_consistent_every.is_some());
            let key = (
                p.vault.clone(),
                p.consistency_group
                    .clone()
                    .unwrap_or_else(|| format!("\u{0}{m}")),
            );
            let u = by_key.entry(key).or_insert_with(|| Unit {
                vault: p.vault.clone(),
                group: p.consistency_group.clone(),
                machines: Vec::new(),
                app: Vec::new(),
            });
            u.app.push(app);
            u.machines.push((m.clone(), p.addr.clone()));
        }
    }
    Ok(by_key.into_values().collect())
}

/// The unit's instants, oldest first: for a group, the capture instants at
/// which every machine of the unit got a point of that group.
fn instants(u: &Unit, list: &[Manifest]) -> Vec<Instant> {
    let mut by_time: BTreeMap<(OffsetDateTime, String), Vec<Option<Manifest>>> = BTreeMap::new();
    for m in list {
        let Some(i) = u
            .machines
            .iter()
            .position(|(a, _)| m.machine == a.to_string())
        else {
            continue;
        };
        if u.group.is_some() && u.machines.len() > 1 && m.group != u.group {
            continue;
        }
        let Some(t) = m.created_at() else { continue };
        let slot = by_time
            .entry((t, m.created.clone()))
            .or_insert_with(|| vec![None; u.machines.len()]);
        slot[i] = Some(m.clone());
    }
    by_time
        .into_iter()
        .filter_map(|((t, _), v)| {
            let all: Option<Vec<Manifest>> = v.into_iter().collect();
            all.map(|v| (t, v))
        })
        .collect()
}
