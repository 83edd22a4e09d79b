//! Site changes: where each recovery plan should be active (`active_site`,
//! default the machines' own site) against where the state says its
//! machines run. A difference is a planned failover (or a failback) that
//! `plan` shows as a graph of steps with review notes, and that
//! `apply --allow-failover` carries out.

use super::{NoteKind, ReviewNote};
use crate::model::{Address, Config, RecoveryPlan, StepAction};
use crate::state::{Phase, StateDoc};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Which way a site change goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Own site -> protection target: planned failover, commit, reprotect.
    Failover,
    /// Back to the own site: reprotect (when not done), failback.
    Failback,
}

/// One recovery plan that moves site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteChange {
    pub recovery_plan: Address,
    pub direction: Direction,
    pub from: Address,
    pub to: Address,
    /// In order: each step waits for the one before.
    pub steps: Vec<SiteStep>,
    /// Why `apply` also needs `--allow-undrilled`, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undrilled: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteStep {
    pub op: SiteOp,
    pub detail: String,
}

/// What one step of a site change does; apply carries these out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteOp {
    /// Stop the machines where they run, groups in reverse order.
    Stop,
    /// The final point of every machine (consistency groups as one instant).
    FinalPoint,
    /// One recovery group brought up at the other site.
    Group,
    /// Make the failover final.
    Commit,
    /// Protect the machines from where they now run back toward the other site.
    Reprotect,
    /// Forget the failover (after a failback).
    Clear,
}

impl SiteOp {
    /// The name plans show and JSON carries (`final_point`).
    pub fn as_str(self) -> &'static str {
        match self {
            SiteOp::Stop => "stop",
            SiteOp::FinalPoint => "final_point",
            SiteOp::Group => "group",
            SiteOp::Commit => "commit",
            SiteOp::Reprotect => "reprotect",
            SiteOp::Clear => "clear",
        }
    }
}

impl std::fmt::Display for SiteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that widths in format strings apply.
        f.pad(self.as_str())
    }
}

/// Where the state says `plan`'s machines run: the failover run's site
/// (any failover not failed), else `None` (their own site).
pub fn current_site(plan: &RecoveryPlan, state: Option<&StateDoc>) -> Option<Address> {
    let run = state?.run_of(&plan.addr, false)?;
    if run.phase == Phase::Failed {
        return None;
    }
    run.machines.values().next()?.site.parse().ok()
}

/// The plan's own site and its protections' target (of its first machine
/// that has both).
fn sites(cfg: &Config, plan: &RecoveryPlan) -> Option<(Address, Address)> {
    plan.groups.iter().flat_map(|g| &g.machines).find_map(|m| {
        let own = cfg.machines.get(m)?.site.clone();
        let target = cfg
            .protections
            .values()
            .find(|p| &p.machine == m)?
            .target
            .clone();
        Some((own, target))
    })
}

/// Every recovery plan whose `active_site` differs from where it runs.
pub fn changes(cfg: &Config, state: Option<&StateDoc>, now: OffsetDateTime) -> Vec<SiteChange> {
    let mut out = Vec::new();
    for plan in cfg.recovery_plans.values() {
        let Some((own, _target)) = sites(cfg, plan) else {
            continue;
        };
        let want = plan.active_site.clone().unwrap_or_else(|| own.clone());
        let run = state.and_then(|s| s.run_of(&plan.addr, false));
        let now_at = current_site(plan, state).unwrap_or_else(|| own.clone());
        if want == now_at {
            continue;
        }
        let direction = if want == own {
            Direction::Failback
        } else {
            Direction::Failover
        };
        let reprotected = run.is_some_and(|r| r.reprotect.is_some());
        let committed = run.is_some_and(|r| r.phase == Phase::Committed);
        out.push(SiteChange {
            recovery_plan: plan.addr.clone(),
            direction,
            steps: steps(cfg, plan, direction, &now_at, &want, committed, reprotected),
            from: now_at,
            to: want,
            undrilled: undrilled(plan, state, now),
        });
    }
    out
}

/// Why the plan is not fit to fail over without `--allow-undrilled`: never
/// drilled, last drill failed, or older than its schedule. Plans without a
/// `drill` block are not judged.
pub fn undrilled(
    plan: &RecoveryPlan,
    state: Option<&StateDoc>,
    now: OffsetDateTime,
) -> Option<String> {
    let d = plan.drill.as_ref()?;
    let Some(last) = state.and_then(|s| s.last_drill(&plan.addr)) else {
        return Some("it has never been drilled".into());
    };
    if !last.passed {
        return Some("its last drill failed".into());
    }
    if (now - last.finished_at).whole_seconds() > d.schedule.interval().as_secs() as i64 {
        return Some(format!(
            "its last drill is older than its {} schedule",
            d.schedule
        ));
    }
    None
}

fn steps(
    cfg: &Config,
    plan: &RecoveryPlan,
    direction: Direction,
    from: &Address,
    to: &Address,
    committed: bool,
    reprotected: bool,
) -> Vec<SiteStep> {
    let step = |op: SiteOp, detail: String| SiteStep { op, detail };
    let groups = plan.groups_in_order();
    let stops: Vec<String> = groups
        .iter()
        .rev()
        .flat_map(|g| {
            g.machines
                .iter()
                .map(move |m| format!("{m} (group {})", g.name))
        })
        .collect();
    let machines: Vec<String> = groups
        .iter()
        .flat_map(|g| g.machines.iter().map(|m| m.to_string()))
        .collect();
    let mut out = Vec::new();
    if direction == Direction::Failback && !committed {
        out.push(step(SiteOp::Commit, "make the failover final first".into()));
    }
    if direction == Direction::Failback && !reprotected {
        out.push(step(
            SiteOp::Reprotect,
            format!(
                "first reverse point of {} from {from} (changed blocks only)",
                machines.join(", ")
            ),
        ));
    }
    out.push(step(
        SiteOp::Stop,
        format!(
            "at {from}, groups in reverse order: {}",
            stops.join(", then ")
        ),
    ));
    out.push(step(
        SiteOp::FinalPoint,
        format!(
            "{} point of {} (consistency groups as one instant)",
            if direction == Direction::Failback {
                "final reverse"
            } else {
                "final"
            },
            machines.join(", ")
        ),
    ));
    for g in &groups {
        let mut parts = Vec::new();
        // Only the steps of this direction (`when`): a failback never
        // lists "point DNS at the DR site".
        let failback = direction == Direction::Failback;
        let mine = |steps: &[crate::model::Step]| steps.iter().any(|s| s.when.runs_in(failback));
        let names = |steps: &[crate::model::Step]| {
            steps
                .iter()
                .filter(|s| s.when.runs_in(failback))
                .map(|s| match s.action {
                    StepAction::Manual { .. } => format!("manual {}", s.name),
                    _ => s.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if mine(&g.before) {
            parts.push(format!("before: {}", names(&g.before)));
        }
        for m in &g.machines {
            let checks: Vec<&str> = cfg
                .machines
                .get(m)
                .map(|x| x.checks.iter().map(|c| c.name.as_str()).collect())
                .unwrap_or_default();
            let disks = if direction == Direction::Failback {
                "write changed blocks onto its disks"
            } else {
                "restore its disks"
            };
            parts.push(format!(
                "{m}: {disks} at {to}, boot, checks ({})",
                if checks.is_empty() {
                    "none".to_string()
                } else {
                    checks.join(", ")
                }
            ));
        }
        if mine(&g.after) {
            parts.push(format!("after: {}", names(&g.after)));
        }
        out.push(step(
            SiteOp::Group,
            format!("group {}: {}", g.name, parts.join("; ")),
        ));
    }
    match direction {
        Direction::Failover => {
            out.push(step(SiteOp::Commit, "make the failover final".into()));
            out.push(step(
                SiteOp::Reprotect,
                format!("protect {} from {to} back toward {from} (first reverse point: changed blocks only)", machines.join(", ")),
            ));
        }
        Direction::Failback => out.push(step(
            SiteOp::Clear,
            format!("forget the failover: forward protection of {} resumes from {to} without a full resync", machines.join(", ")),
        )),
    }
    out
}

/// Review notes of the site changes: expected data loss and the last
/// drill's measured RTO.
pub fn notes(cfg: &Config, state: Option<&StateDoc>, changes: &[SiteChange]) -> Vec<ReviewNote> {
    let mut out = Vec::new();
    for c in changes {
        let plan = &c.recovery_plan;
        let what = match c.direction {
            Direction::Failover => "fails over",
            Direction::Failback => "fails back",
        };
        out.push(ReviewNote {
            subject: plan.clone(),
            kind: NoteKind::SiteChange,
            message: format!(
                "{plan} {what} from {} to {} as a planned change: expected data loss none (the machines stop before the final point is taken).",
                c.from, c.to
            ),
        });
        let max = cfg
            .recovery_plans
            .get(plan)
            .and_then(|p| p.drill.as_ref())
            .map(|d| format!(" (max_rto {})", d.max_rto))
            .unwrap_or_default();
        let message = match state.and_then(|s| s.last_drill(plan)) {
            None => format!("{plan}: never drilled, so its RTO is unknown{max}."),
            Some(d) => format!(
                "{plan}: last drill on {} {}, measured RTO {}{max}.",
                d.started_at.date(),
                if d.passed { "passed" } else { "FAILED" },
                d.rto_seconds.map_or("unknown".to_string(), |s| {
                    crate::human::duration(std::time::Duration::from_secs_f64(s.max(0.0)))
                })
            ),
        };
        out.push(ReviewNote {
            subject: plan.clone(),
            kind: NoteKind::DrillRto,
            message,
        });
        if let Some(why) = &c.undrilled {
            out.push(ReviewNote {
                subject: plan.clone(),
                kind: NoteKind::DrillRto,
                message: format!("{plan}: {why}; apply needs --allow-undrilled."),
            });
        }
    }
    out
}

/// The text view of the site changes: each a numbered chain of steps.
pub fn render_text(changes: &[SiteChange]) -> String {
    let mut out = String::new();
    for c in changes {
        let verb = match c.direction {
            Direction::Failover => "planned failover",
            Direction::Failback => "failback",
        };
        out.push_str(&format!(
            "\n  # {} moves from {} to {} (active_site): {verb}\n",
            c.recovery_plan, c.from, c.to
        ));
        out.push_str(&format!("  ~ {} {} -> {}\n", c.recovery_plan, c.from, c.to));
        for (i, s) in c.steps.iter().enumerate() {
            let lead = if i == 0 { "   " } else { "└─>" };
            out.push_str(&format!(
                "      {lead} {}. {:<11} {}\n",
                i + 1,
                s.op,
                s.detail
            ));
        }
    }
    out
}
