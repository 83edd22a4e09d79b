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

/// Why a machine's protection captures nothing now (failed over and not
/// reprotected, ...): the reason, for logs and `status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotCaptured(pub String);

/// `target` as it should be captured now, or why not: disks redirected to
/// where a reprotected machine runs, and the site recorded.
pub fn target_now(
    cfg: &Config,
    doc: Option<&StateDoc>,
    target: &Target,
) -> Result<Target, NotCaptured> {
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
            // A VM failed over to a qemu site: the VM running there.
            if t.vm.is_some()
                && let Some(v) = super::reprotect::vm_at(
                    cfg,
                    &std::path::absolute(&cfg.root).unwrap_or_else(|_| cfg.root.clone()),
                    &t.machine,
                    &site,
                )
            {
                t.vm = super::reprotect::on_wrappers(&t.disks).then_some(v);
            }
            t.site = Some(site);
            // Its hooks see the disks where it runs, as reprotect's do.
            super::reprotect::with_machine_env(&mut t, &run_id);
            Ok(t)
        }
        Capture::Skip { reason, .. } => Err(NotCaptured(reason)),
    }
}

/// Why a process on `host` (its `--host`, else the host name) must not
/// capture `machine` (`machine.db`) now: the site its disks are at (its
/// own, or the one a reprotect placed it at) names another host. A
/// `local` site's disk paths on the wrong host are another machine's
/// files; a point of them would enter the chain as the newest.
pub fn other_host(
    cfg: &Config,
    doc: Option<&StateDoc>,
    machine: &str,
    host: &str,
) -> Option<String> {
    let site = match capture_of(cfg, doc, machine) {
        Capture::Away { site, .. } => site,
        _ => cfg
            .machines
            .iter()
            .find(|(a, _)| a.to_string() == machine)?
            .1
            .site
            .to_string(),
    };
    let (a, s) = cfg.sites.iter().find(|(a, _)| a.to_string() == site)?;
    let h = s.host.as_deref()?;
    (h != host).then(|| format!("{machine}'s disks are at {a}, whose host is {h}, not {host}"))
}

/// The site a point leaves its machine at: where the machine moved to
/// (final points of a move), else the site whose disks it read. None for
/// points written before standby recorded sites.
pub fn site_after(m: &crate::vault::Manifest) -> Option<&str> {
    m.moves_to.as_deref().or(m.site.as_deref())
}

/// The refusal for a state that is missing while its backup `backup` exists.
pub fn lost_state(backup: &str) -> String {
    let how = if backup.contains("://") {
        "copy it over the state object (state.json next to it) with your storage tools".to_string()
    } else {
        format!("`cp {backup} .standby/state.json`")
    };
    format!(
        "the state is missing but its backup {backup} exists: the state was lost or deleted, and without it standby cannot tell where the machines run; restore it ({how}), then run the command again"
    )
}

/// Why replication or recovery must not guess from this state: the state
/// is missing while its backup exists, or the vault's newest point of a
/// protection came from another site than the state says its machine runs
/// at (a lost or stale state). Each message says what was found and what to
/// run. `points`: every point of the vaults concerned; `protections`: the
/// ones about to be captured or recovered.
pub fn refuse_to_guess<'a>(
    cfg: &Config,
    doc: Option<&StateDoc>,
    backup: Option<&str>,
    points: &[crate::vault::Manifest],
    protections: impl IntoIterator<Item = &'a crate::model::Address>,
) -> Vec<String> {
    if let (None, Some(backup)) = (doc, backup) {
        return vec![lost_state(backup)];
    }
    let mut out = Vec::new();
    for a in protections {
        let Some(p) = cfg.protections.get(a) else {
            continue;
        };
        let machine = p.machine.to_string();
        let expected = match capture_of(cfg, doc, &machine) {
            Capture::Home => match cfg.machines.get(&p.machine) {
                Some(m) => m.site.to_string(),
                None => continue,
            },
            Capture::Away { site, .. } => site,
            Capture::Skip { .. } => continue,
        };
        let prot = a.to_string();
        let Some(newest) = points
            .iter()
            .filter(|m| m.protection == prot)
            .max_by_key(|m| m.created_at())
        else {
            continue;
        };
        let Some(found) = site_after(newest) else {
            continue;
        };
        // A failed move (its final point taken, nothing placed) left the
        // machine where it was: its `moves_to` did not happen.
        let failed_move = newest.moves_to.is_some()
            && doc.is_some_and(|d| {
                d.runs.iter().any(|r| {
                    !r.kind.is_test()
                        && r.phase == Phase::Failed
                        && cfg.recovery_plans.get(&r.plan).is_some_and(|rp| {
                            rp.groups.iter().any(|g| g.machines.contains(&p.machine))
                        })
                })
            });
        if failed_move {
            continue;
        }
        if found != expected {
            out.push(format!(
                "{a}: the vault's newest point {} ({}) leaves {machine} at {found}, but the state says it runs at {expected}{}: the state is lost or stale, and capturing or recovering from it could overwrite newer data. Restore the state (e.g. `cp .standby/state.json.backup .standby/state.json`); only if {machine} really runs at {expected} now with its newest data there, adopt that with `standby replicate --trust-state {a}`",
                newest.id.short(),
                crate::human::time_str(&newest.created),
                if doc.is_none_or(|d| d.runs.is_empty()) {
                    " (no recovery run recorded)"
                } else {
                    ""
                }
            ));
        }
    }
    out
}

/// [`refuse_to_guess`] for `protections`, listing the points of their
/// vaults. A vault that cannot be opened or listed (not created yet, no
/// key yet) holds no evidence here: the command reports its own error.
pub fn check_vaults(
    ws: &crate::workspace::Workspace,
    doc: Option<&StateDoc>,
    backup: Option<&str>,
    protections: &[crate::model::Address],
) -> Vec<String> {
    let cfg = &ws.config;
    let mut vaults: Vec<&crate::model::Address> = protections
        .iter()
        .filter_map(|a| cfg.protections.get(a).map(|p| &p.vault))
        .collect();
    vaults.sort();
    vaults.dedup();
    let mut points = Vec::new();
    for va in vaults {
        // The catalog of the machines concerned, not every manifest.
        let machines = protections
            .iter()
            .filter_map(|a| cfg.protections.get(a))
            .filter(|p| &p.vault == va)
            .map(|p| p.machine.to_string())
            .collect();
        if let Ok(vault) = ws.vault(va)
            && let Ok(list) = crate::vault::catalog::list_machines(&vault, &machines)
        {
            points.extend(list);
        }
    }
    refuse_to_guess(cfg, doc, backup, &points, protections)
}
