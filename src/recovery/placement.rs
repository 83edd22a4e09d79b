//! Where a machine runs, as the state's recovery runs say, and what that
//! means for its protection: captured at its own site (home), captured at
//! the site it was failed over to (reprotected), or not captured at all
//! (failed over and not reprotected, a failover or failback under way).
//! `replicate` and the watch service ask this before every capture, and
//! `status` to say that a machine runs somewhere without protection.

use crate::model::Config;
use crate::replication::Target;
use crate::state::{MachineStatus, Phase, StateDoc};
use std::path::PathBuf;

/// What a machine's protection should capture now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    /// Its disks at its own site, as configured.
    Home,
    /// Reprotected: its disks at `site` (the paths a failover placed).
    Away {
        site: String,
        run_id: String,
        disks: Vec<(String, String)>,
    },
    /// Nothing: it is failed over and not reprotected, or a run is moving
    /// it. `reason` says which, for logs and status.
    Skip { reason: String, unprotected: bool },
}

/// What to capture of `machine` (`machine.db`) given the state `doc`.
pub fn capture_of(cfg: &Config, doc: Option<&StateDoc>, machine: &str) -> Capture {
    let Some(doc) = doc else {
        return Capture::Home;
    };
    for r in doc.runs.iter().filter(|r| !r.kind.is_test()) {
        let placed = r.machines.get(machine);
        let in_plan = cfg.recovery_plans.get(&r.plan).is_some_and(|p| {
            p.groups
                .iter()
                .any(|g| g.machines.iter().any(|m| m.to_string() == machine))
        });
        if placed.is_none() && !in_plan {
            continue;
        }
        let what = format!(
            "{} failover {} of {} ({})",
            r.kind.as_str(),
            r.run_id,
            r.plan,
            r.phase.as_str()
        );
        match (r.phase, placed) {
            // A failed run that placed nothing left the machine at home.
            (Phase::Failed, None) => continue,
            (Phase::Failed, Some(p)) if p.status == MachineStatus::Stopped => continue,
            (Phase::Running, None) => {
                return Capture::Skip {
                    reason: format!("{machine} is being moved by the {what}"),
                    unprotected: r.abandoned(),
                };
            }
            (_, None) => continue,
            (_, Some(p)) => {
                if r.failback.is_some() {
                    return Capture::Skip {
                        reason: format!(
                            "{machine} is being brought home from {} by a failback of {}",
                            p.site, r.plan
                        ),
                        unprotected: false,
                    };
                }
                if r.reprotect.is_some() {
                    return Capture::Away {
                        site: p.site.clone(),
                        run_id: r.run_id.clone(),
                        disks: p
                            .disks
                            .iter()
                            .map(|(n, d)| (n.clone(), d.clone()))
                            .collect(),
                    };
                }
                return Capture::Skip {
                    reason: format!(
                        "{machine} is failed over to {} ({what}); no points are taken of it until it is reprotected (`standby reprotect {}`) or fails back",
                        p.site,
                        super::run::plan_arg(&r.plan)
                    ),
                    unprotected: r.phase != Phase::Running || r.abandoned(),
                };
            }
        }
    }
    Capture::Home
}

/// `target` as it should be captured now, or why not: disks redirected to
/// where a reprotected machine runs, and the site recorded.
pub fn target_now(cfg: &Config, doc: Option<&StateDoc>, target: &Target) -> Result<Target, String> {
    match capture_of(cfg, doc, &target.machine) {
        Capture::Home => Ok(target.clone()),
        Capture::Away {
            site,
            run_id,
            disks,
        } => {
            let mut t = target.clone();
            for (name, path) in &mut t.disks {
                if let Some((_, p)) = disks.iter().find(|(n, _)| n == name) {
                    *path = PathBuf::from(p);
                }
            }
            t.site = Some(site);
            // Its hooks see the disks where it runs, as reprotect's do.
            super::reprotect::with_machine_env(&mut t, &run_id);
            Ok(t)
        }
        Capture::Skip { reason, .. } => Err(reason),
    }
}
