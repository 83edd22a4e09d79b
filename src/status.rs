//! Health of protection at a glance: each protection's newest point age
//! against its policy's RPO threshold, and each recovery plan's last drill
//! against its schedule. Pure functions over points and state; the
//! `status` command reads them and renders.

use crate::model::{Address, Policy, RecoveryPlan};
use crate::state::StateDoc;
use crate::vault::{Consistency, Manifest};
use serde::Serialize;
use time::OffsetDateTime;

/// How a protection stands against its RPO threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The newest point is no older than the threshold.
    Ok,
    /// Older than the threshold, at most twice it.
    Warning,
    /// Older than twice the threshold, or there is no point at all.
    Critical,
}

impl Level {
    pub fn label(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }
}

/// The level for a newest point of age `age_secs` (None: no point).
pub fn rpo_level(age_secs: Option<f64>, threshold_secs: u64) -> Level {
    match age_secs {
        None => Level::Critical,
        Some(a) if a <= threshold_secs as f64 => Level::Ok,
        Some(a) if a <= 2.0 * threshold_secs as f64 => Level::Warning,
        Some(_) => Level::Critical,
    }
}

/// One point as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PointSummary {
    pub id: String,
    /// RFC 3339.
    pub created: String,
    /// Seconds since it was taken, with their fraction; None when its
    /// time cannot be read (such a point never counts as fresh).
    pub age_seconds: Option<f64>,
    pub consistency: Consistency,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProtectionStatus {
    pub protection: String,
    pub vault: String,
    pub policy: String,
    pub level: Level,
    pub rpo_threshold_seconds: u64,
    pub newest_point: Option<PointSummary>,
    pub newest_app_point: Option<PointSummary>,
    pub points: usize,
    /// Sealed bytes the protection's points added to the vault.
    pub stored_bytes: u64,
    /// Set when its machine runs somewhere this protection does not
    /// capture (failed over and not reprotected): why. The level is then
    /// WARNING at least, whatever the newest point's age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unprotected: Option<String>,
    /// Points dated after `now` (their writer's clock ran ahead): never the
    /// newest point here; the level is WARNING at least.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub future_points: Vec<String>,
    /// The replication service holding the lease of the protection's
    /// batch, when one does (see [`mark_leases`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::vault::lease::LeaseView>,
    /// The host the site its machine's disks are at now names, if any:
    /// only services of that host replicate it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn summary(m: &Manifest, now: OffsetDateTime) -> PointSummary {
    let age = m.created_at().map(|t| (now - t).as_seconds_f64());
    PointSummary {
        id: m.id.hex(),
        created: m.created.clone(),
        age_seconds: age,
        consistency: m.consistency,
    }
}

/// Everything `standby status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    pub protections: Vec<ProtectionStatus>,
    pub plans: Vec<PlanStatus>,
    /// Where recovered machines run, per the state's runs.
    pub placements: Vec<Placement>,
}

impl Status {
    /// 0 when every protection is OK, 2 when any is not.
    pub fn exit_code(&self) -> u8 {
        if self.protections.iter().all(|p| p.level == Level::Ok) {
            0
        } else {
            2
        }
    }
}

/// The status of every protection and recovery plan of `ws` at `now`:
/// newest points from the vaults, drills and recovery runs from `state`.
pub fn status(
    ws: &crate::workspace::Workspace,
    state: Option<&StateDoc>,
    backup: Option<&str>,
    now: OffsetDateTime,
) -> Result<Status, crate::workspace::WorkspaceError> {
    let (mut protections, points) = protections_and_points(ws, now)?;
    let plans = ws
        .config
        .recovery_plans
        .values()
        .map(|rp| plan_status(rp, state, now))
        .collect();
    mark_unprotected(&mut protections, &ws.config, state);
    mark_leases(&mut protections, ws);
    mark_hosts(&mut protections, &ws.config, state);
    mark_refused(&mut protections, &ws.config, state, backup, &points);
    let mut placed = placements(state);
    mark_down(&mut placed, &mut protections, ws);
    Ok(Status {
        protections,
        plans,
        placements: placed,
    })
}

/// Asks each recovered machine's provider whether a machine the state
/// says runs still does (a VM killed or crashed since): one that does not
/// is `down`, and the protection of a machine that should run there in
/// production (not a test run) is CRITICAL, saying so. Providers that
/// cannot tell leave the state's word.
pub fn mark_down(
    placed: &mut [Placement],
    prots: &mut [ProtectionStatus],
    ws: &crate::workspace::Workspace,
) {
    let (cfg, root) = (&ws.config, ws.root());
    for p in placed.iter_mut().filter(|p| p.status == "running") {
        let Ok(site) = p.site.parse::<Address>() else {
            continue;
        };
        let Ok(provider) = crate::recovery::providers::for_site(cfg, &root, &site) else {
            continue;
        };
        let mode = if p.kind == "test" {
            standby_provider_core::Mode::Test
        } else {
            standby_provider_core::Mode::Failover
        };
        let run = crate::recovery::providers::run_at(cfg, &root, &site, &p.run_id, mode);
        if !matches!(provider.runs(&run, &p.machine), Ok(Some(false))) {
            continue;
        }
        p.status = "down".into();
        if p.kind == "test" {
            continue;
        }
        let machine = p.machine.clone();
        for s in prots.iter_mut().filter(|s| {
            s.protection
                .parse::<Address>()
                .ok()
                .and_then(|a| cfg.protections.get(&a))
                .is_some_and(|x| x.machine.to_string() == machine)
        }) {
            s.level = Level::Critical;
            s.unprotected = Some(format!(
                "{machine} should run at {} (run {}) but does not: it was killed or crashed there",
                p.site, p.run_id
            ));
        }
    }
}

/// The status of `protection` given every point in its vault (oldest first).
/// Every configured protection's status at `now`, from the points in the
/// vaults of `ws` (each vault holding a protection listed once).
pub fn protections(
    ws: &crate::workspace::Workspace,
    now: OffsetDateTime,
) -> Result<Vec<ProtectionStatus>, crate::workspace::WorkspaceError> {
    protections_and_points(ws, now).map(|(prots, _)| prots)
}

/// [`protections`], with the catalog entries they were computed from (the
/// points of every vault's protected machines).
pub fn protections_and_points(
    ws: &crate::workspace::Workspace,
    now: OffsetDateTime,
) -> Result<(Vec<ProtectionStatus>, Vec<Manifest>), crate::workspace::WorkspaceError> {
    use crate::workspace::WorkspaceError;
    let cfg = &ws.config;
    let mut points = std::collections::BTreeMap::new();
    for addr in cfg.vaults.keys() {
        if !cfg.protections.values().any(|p| &p.vault == addr) {
            continue;
        }
        // Only the catalog of the machines this vault protects.
        points.insert(addr.clone(), ws.protected_points(addr)?);
    }
    let mut prots = Vec::new();
    for p in cfg.protections.values() {
        let policy = ws
            .policy_of(&p.addr)
            .ok_or_else(|| WorkspaceError::Missing {
                of: p.addr.clone(),
                missing: p.policy.clone(),
            })?;
        let list = points.get(&p.vault).map_or(&[][..], |v| v.as_slice());
        prots.push(protection_status(&p.addr, &p.vault, policy, list, now));
    }
    Ok((prots, points.into_values().flatten().collect()))
}

pub fn protection_status(
    protection: &Address,
    vault: &Address,
    policy: &Policy,
    points: &[Manifest],
    now: OffsetDateTime,
) -> ProtectionStatus {
    let prot = protection.to_string();
    let mine: Vec<&Manifest> = points.iter().filter(|m| m.protection == prot).collect();
    // A fuzzy point (read while written) does not meet an RPO; nor does
    // one dated in the future (its writer's clock ran ahead): it is
    // flagged instead.
    let future: Vec<String> = mine
        .iter()
        .filter(|m| m.in_future(now))
        .map(|m| m.id.hex())
        .collect();
    let newest = mine
        .iter()
        .filter(|m| m.consistency != Consistency::Fuzzy && !m.in_future(now))
        .max_by_key(|m| m.created_at())
        .map(|m| summary(m, now));
    let newest_app = mine
        .iter()
        .filter(|m| m.consistency == Consistency::App && !m.in_future(now))
        .max_by_key(|m| m.created_at())
        .map(|m| summary(m, now));
    let mut level = rpo_level(
        newest.as_ref().and_then(|p| p.age_seconds),
        policy.rpo_threshold.as_secs(),
    );
    if !future.is_empty() {
        level = level.max(Level::Warning);
    }
    let threshold = policy.rpo_threshold.as_secs();
    ProtectionStatus {
        protection: prot,
        vault: vault.to_string(),
        policy: policy.addr.to_string(),
        level,
        future_points: future,
        rpo_threshold_seconds: threshold,
        newest_point: newest,
        newest_app_point: newest_app,
        points: mine.len(),
        stored_bytes: mine.iter().map(|m| m.stats.stored).sum(),
        unprotected: None,
        lease: None,
        host: None,
    }
}

/// Who replicates each protection: the lease of its batch (a consistency
/// group, or the protection alone), one read per batch. A vault that
/// cannot be opened or read leaves `lease` unset (the points already
/// failed to list there).
pub fn mark_leases(prots: &mut [ProtectionStatus], ws: &crate::workspace::Workspace) {
    use crate::vault::lease::{Holder, Leases, Timing, unit};
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut read: std::collections::BTreeMap<(Address, String), Option<_>> = Default::default();
    for p in prots {
        let Some(c) = ws
            .config
            .protections
            .values()
            .find(|c| c.addr.to_string() == p.protection)
        else {
            continue;
        };
        let u = unit(c.consistency_group.as_deref(), &p.protection);
        p.lease = read
            .entry((c.vault.clone(), u.clone()))
            .or_insert_with(|| {
                let v = ws.vault(&c.vault).ok()?;
                let me = Holder::this_process("status", &host);
                Leases::new(&v, me, Timing::default()).look(&u).ok()?
            })
            .clone();
    }
}

/// Set each protection's `host`: the one the site its machine's disks are
/// at now names (its own site, or where a reprotect placed it).
fn mark_hosts(
    prots: &mut [ProtectionStatus],
    cfg: &crate::model::Config,
    state: Option<&StateDoc>,
) {
    for p in prots {
        let Some(c) = cfg
            .protections
            .values()
            .find(|c| c.addr.to_string() == p.protection)
        else {
            continue;
        };
        let site = match crate::recovery::placement::capture_of(cfg, state, &c.machine.to_string())
        {
            crate::recovery::placement::Capture::Away { site, .. } => Some(site),
            _ => cfg.machines.get(&c.machine).map(|m| m.site.to_string()),
        };
        p.host = site
            .and_then(|s| cfg.sites.iter().find(|(a, _)| a.to_string() == s))
            .and_then(|(_, s)| s.host.clone());
    }
}

/// Mark each protection whose machine runs somewhere without protection
/// (per the state's recovery runs): `unprotected` says why, and the level
/// is raised to WARNING at least.
pub fn mark_unprotected(
    prots: &mut [ProtectionStatus],
    cfg: &crate::model::Config,
    state: Option<&StateDoc>,
) {
    for p in prots {
        let Some(machine) = p
            .protection
            .parse::<Address>()
            .ok()
            .and_then(|a| cfg.protections.get(&a))
            .map(|x| x.machine.to_string())
        else {
            continue;
        };
        if let crate::recovery::placement::Capture::Skip {
            reason,
            unprotected: true,
        } = crate::recovery::placement::capture_of(cfg, state, &machine)
        {
            p.level = p.level.max(Level::Warning);
            p.unprotected = Some(reason);
        }
    }
}

/// Mark each protection that `replicate` refuses to capture because the
/// state is lost (missing with its `backup` left) or stale (the vault's
/// newest point left its machine elsewhere than the state says): the
/// refusal, with what to run, goes in `unprotected`, and the level is raised
/// to WARNING at least. `points`: the catalog entries of the protections.
pub fn mark_refused(
    prots: &mut [ProtectionStatus],
    cfg: &crate::model::Config,
    state: Option<&StateDoc>,
    backup: Option<&str>,
    points: &[Manifest],
) {
    for p in prots {
        let Ok(a) = p.protection.parse::<Address>() else {
            continue;
        };
        let refused = crate::recovery::placement::refuse_to_guess(cfg, state, backup, points, [&a]);
        if let Some(why) = refused.into_iter().next() {
            let why = why.strip_prefix(&format!("{a}: ")).unwrap_or(&why);
            p.level = p.level.max(Level::Warning);
            p.unprotected = Some(format!("replicate refuses it: {why}"));
        }
    }
}

/// Where a recovery plan's drills stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillState {
    /// The last drill passed and is younger than the schedule's interval.
    Ok,
    /// The last drill failed (and is younger than the interval).
    Failed,
    /// The last drill is older than the schedule's interval.
    Overdue,
    /// No drill was ever recorded.
    NeverDrilled,
    /// The plan has no `drill` block.
    NotScheduled,
}

impl DrillState {
    pub fn label(self) -> &'static str {
        match self {
            DrillState::Ok => "OK",
            DrillState::Failed => "FAILED",
            DrillState::Overdue => "OVERDUE",
            DrillState::NeverDrilled => "never drilled",
            DrillState::NotScheduled => "no drill",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LastDrill {
    pub started_at: String,
    pub finished_at: String,
    pub passed: bool,
    pub age_seconds: i64,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanStatus {
    pub recovery_plan: String,
    pub state: DrillState,
    /// `weekly`, `daily`, `monthly` or a duration; None without a drill block.
    pub schedule: Option<String>,
    pub schedule_seconds: Option<u64>,
    pub last_drill: Option<LastDrill>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The drill status of `plan` from the state's drill history.
pub fn plan_status(
    plan: &RecoveryPlan,
    state: Option<&StateDoc>,
    now: OffsetDateTime,
) -> PlanStatus {
    let last = state
        .and_then(|s| s.last_drill(&plan.addr))
        .map(|d| LastDrill {
            started_at: rfc3339(d.started_at),
            finished_at: rfc3339(d.finished_at),
            passed: d.passed,
            age_seconds: (now - d.finished_at).whole_seconds(),
            rto_seconds: d.rto_seconds,
            rpo_seconds: d.rpo_seconds,
        });
    let interval = plan.drill.as_ref().map(|d| d.schedule.interval().as_secs());
    let state = match (&last, interval) {
        (_, None) => DrillState::NotScheduled,
        (None, Some(_)) => DrillState::NeverDrilled,
        (Some(d), Some(i)) if d.age_seconds > i as i64 => DrillState::Overdue,
        (Some(d), Some(_)) if !d.passed => DrillState::Failed,
        (Some(_), Some(_)) => DrillState::Ok,
    };
    PlanStatus {
        recovery_plan: plan.addr.to_string(),
        state,
        schedule: plan.drill.as_ref().map(|d| d.schedule.to_string()),
        schedule_seconds: interval,
        last_drill: last,
    }
}

/// Where one machine of a recovery run is.
#[derive(Debug, Clone, Serialize)]
pub struct Placement {
    pub recovery_plan: String,
    pub machine: String,
    /// The site it runs at (or is being brought up at).
    pub site: String,
    pub from_site: String,
    pub run_id: String,
    /// `test`, `planned` or `unplanned`.
    pub kind: String,
    /// The run's phase: `running`, `completed`, `failed`, `committed`.
    pub phase: String,
    /// The machine's own status in the run: `starting`, `running`, `failed`,
    /// `stopped`; `down` when the state says running but its provider
    /// finds it does not (killed or crashed).
    pub status: String,
    pub point: Option<String>,
    /// Which way its protection runs: `forward` (from its own site; test
    /// runs), `none` (failed over, not reprotected: no points taken),
    /// `reverse` (reprotected: points from where it runs now),
    /// `failing_back` (a failback is under way).
    pub protection: String,
}

/// Every machine placed by a recovery run recorded in the state.
pub fn placements(state: Option<&StateDoc>) -> Vec<Placement> {
    let Some(doc) = state else { return Vec::new() };
    let mut out = Vec::new();
    for r in &doc.runs {
        for (m, p) in &r.machines {
            out.push(Placement {
                recovery_plan: r.plan.to_string(),
                machine: m.clone(),
                site: p.site.clone(),
                from_site: p.from_site.clone(),
                run_id: r.run_id.clone(),
                kind: r.kind.as_str().to_string(),
                phase: r.phase.as_str().to_string(),
                status: serde_json::to_value(p.status)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                point: p.point.as_ref().map(|x| x.id.clone()),
                protection: if r.kind.is_test() {
                    "forward"
                } else if r.failback.is_some() {
                    "failing_back"
                } else if r.reprotect.is_some() {
                    "reverse"
                } else {
                    "none"
                }
                .to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_whose_time_cannot_be_read_has_no_age_and_is_not_fresh() {
        let m = Manifest {
            format: 1,
            id: crate::vault::Id([7; 32]),
            protection: "protection.db".into(),
            machine: "machine.db".into(),
            group: None,
            created: "yesterday-ish".into(),
            consistency: Consistency::Crash,
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
        };
        let policy = crate::model::Policy {
            addr: "policy.standard".parse().unwrap(),
            rpo_threshold: "15m".parse().unwrap(),
            crash_consistent_every: "5m".parse().unwrap(),
            app_consistent_every: None,
            retention: "24h".parse().unwrap(),
            compression_level: 1,
        };
        let s = protection_status(
            &"protection.db".parse().unwrap(),
            &"vault.main".parse().unwrap(),
            &policy,
            &[m],
            OffsetDateTime::now_utc(),
        );
        let newest = s.newest_point.unwrap();
        assert_eq!(newest.age_seconds, None, "never 0");
        assert_eq!(s.level, Level::Critical);
        let json = serde_json::to_value(&newest).unwrap();
        assert!(json["age_seconds"].is_null(), "{json}");
    }

    #[test]
    fn levels_follow_the_threshold() {
        assert_eq!(rpo_level(Some(0.0), 60), Level::Ok);
        assert_eq!(rpo_level(Some(60.0), 60), Level::Ok);
        assert_eq!(rpo_level(Some(60.5), 60), Level::Warning);
        assert_eq!(rpo_level(Some(120.0), 60), Level::Warning);
        assert_eq!(rpo_level(Some(120.1), 60), Level::Critical);
        assert_eq!(rpo_level(None, 60), Level::Critical);
    }
}
