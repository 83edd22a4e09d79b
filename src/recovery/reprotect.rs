//! Reprotect: after a committed failover, the machines' protection captures
//! their disks where they run now (the DR copies the run record names) into
//! the same vault. Points of a machine form one chain whatever site it runs
//! at, so the first reverse point diffs against the machine's newest point
//! (the one the failover restored) and stores only blocks written since.
//! Also: redirecting `replicate`'s batches to those disks.

use super::record::Recorder;
use super::run::{RecoveryError, plan_arg};
use crate::exec::Cancel;
use crate::model::{Address, RecoveryPlan};
use crate::replication::{self, Batch, Options, Progress};
use crate::state::{Phase, PointUsed, Reprotect, RunRecord, StateDoc};
use crate::vault::Id;
use crate::vault::manifest::Manifest;
use crate::workspace::Workspace;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use time::OffsetDateTime;

/// One machine's first reverse point.
pub struct Reversed {
    pub machine: String,
    pub point: Manifest,
    /// Sum of the point's disk sizes.
    pub disk_bytes: u64,
}

/// The committed failover of `plan`, or why there is none to work from.
pub fn committed_failover(
    doc: Option<&StateDoc>,
    plan: &Address,
) -> Result<RunRecord, RecoveryError> {
    let name = plan_arg(plan);
    let Some(run) = doc.and_then(|d| d.run_of(plan, false)) else {
        return Err(RecoveryError::Refused {
            message: format!(
                "{plan} is not failed over: there is nothing to reprotect or fail back"
            ),
            help: format!(
                "fail over first (`standby failover planned {name}`), then `standby failover commit {name}`"
            ),
        });
    };
    if run.phase != Phase::Committed {
        return Err(RecoveryError::Refused {
            message: format!(
                "the failover of {plan} (run {}) is {}, not committed",
                run.run_id,
                run.phase.as_str()
            ),
            help: match run.phase {
                Phase::Completed => {
                    format!("make it final first with `standby failover commit {name}`")
                }
                _ => format!(
                    "finish the failover (`standby status` shows where each machine is), then `standby failover commit {name}`"
                ),
            },
        });
    }
    Ok(run.clone())
}

/// Point `batches`' targets of machines under reverse protection at the
/// disks where those machines run now.
pub fn redirect(batches: &mut [Batch], doc: &StateDoc) {
    for b in batches {
        for t in &mut b.targets {
            let placed = doc
                .runs
                .iter()
                .filter(|r| !r.kind.is_test() && r.reprotect.is_some())
                .find_map(|r| r.machines.get(&t.machine));
            if let Some(m) = placed {
                for (name, path) in &mut t.disks {
                    if let Some(p) = m.disks.get(name) {
                        *path = PathBuf::from(p);
                    }
                }
                t.site = Some(m.site.clone());
            }
        }
    }
}

/// Point `batches`' VM targets of machines under reverse protection at a
/// qemu site at the VM the failover started there; `root` is the
/// configuration directory. Call after [`redirect`].
pub fn redirect_vms(
    batches: &mut [Batch],
    cfg: &crate::model::Config,
    root: &std::path::Path,
    doc: &StateDoc,
) {
    for b in batches {
        for t in &mut b.targets {
            let placed = doc
                .runs
                .iter()
                .filter(|r| !r.kind.is_test() && r.reprotect.is_some())
                .find_map(|r| r.machines.get(&t.machine));
            if let Some(placed) = placed
                && t.vm.is_some()
                && let Some(v) = vm_at(cfg, root, &t.machine, &placed.site)
            {
                t.vm = on_wrappers(&t.disks).then_some(v);
            }
        }
    }
}

/// Whether the VM on these DR disks (raw images) runs on the tracked
/// wrappers a failover (instant or not) makes: one made by an older
/// standby runs on the raw images themselves, whose reverse points then
/// read them as files, as any disk.
pub fn on_wrappers(disks: &[(String, PathBuf)]) -> bool {
    disks
        .iter()
        .all(|(_, p)| standby_provider_qemu::wrapper::path(p).exists())
}

/// How a failed-over VM of `machine` at `site` is reached, when `site` is
/// a qemu site: the sockets of the VM the failover started there
/// (`ROOT/.standby-vms`), read through its dirty bitmaps as at home.
pub fn vm_at(
    cfg: &crate::model::Config,
    root: &std::path::Path,
    machine: &str,
    site: &str,
) -> Option<replication::vm::VmTarget> {
    let s = cfg
        .sites
        .get(&site.parse::<Address>().ok()?)
        .filter(|s| s.provider == "qemu")?;
    let m = cfg.machines.get(&machine.parse::<Address>().ok()?)?;
    let vm = m.vm.as_ref()?;
    let site_root = root.join(s.root.clone().unwrap_or_default());
    let vms = site_root.join(standby_provider_qemu::site::VMS_DIR);
    Some(replication::vm::VmTarget::failed_over(
        m, vm, &site_root, &vms,
    ))
}

/// Whether `machine` is under reverse protection (its points come from
/// the site it runs at now).
pub fn reprotected(doc: &StateDoc, machine: &str) -> bool {
    doc.runs
        .iter()
        .any(|r| !r.kind.is_test() && r.reprotect.is_some() && r.machines.contains_key(machine))
}

/// The plan's capture batches with every disk at the site its machine runs
/// at per `run`; `app` as the policy says, or crash-only when `crash_only`.
pub fn reverse_batches(
    ws: &Workspace,
    plan: &RecoveryPlan,
    run: &RunRecord,
    crash_only: bool,
) -> Result<Vec<Batch>, RecoveryError> {
    let cfg = &ws.config;
    let mut prots = Vec::new();
    for g in &plan.groups {
        for m in &g.machines {
            let p = ws
                .protection_of(m)
                .ok_or_else(|| RecoveryError::Unprotected(m.clone()))?;
            prots.push(p.addr.clone());
            let placed =
                run.machines
                    .get(&m.to_string())
                    .ok_or_else(|| RecoveryError::NotPlaced {
                        run_id: run.run_id.clone(),
                        what: format!("record of {m}: it did not place it"),
                    })?;
            if let Some(machine) = cfg.machines.get(m)
                && let Some(d) = machine
                    .disks
                    .iter()
                    .find(|d| !placed.disks.contains_key(&d.name))
            {
                return Err(RecoveryError::NotPlaced {
                    run_id: run.run_id.clone(),
                    what: format!("path of {m} disk {:?}", d.name),
                });
            }
        }
    }
    let mut batches = replication::batches(cfg, &prots)?;
    let mut doc = StateDoc::default();
    let mut r = run.clone();
    r.reprotect.get_or_insert(Reprotect {
        at: OffsetDateTime::now_utc(),
        points: BTreeMap::new(),
    });
    doc.runs.push(r);
    redirect(&mut batches, &doc);
    redirect_vms(&mut batches, cfg, &ws.root(), &doc);
    for b in &mut batches {
        for t in &mut b.targets {
            with_machine_env(t, &run.run_id);
        }
    }
    if crash_only {
        for b in &mut batches {
            for t in &mut b.targets {
                t.app = false;
            }
        }
    }
    Ok(batches)
}

/// Quiesce hooks of a reverse capture see the machine's environment with
/// its disks where it runs now (`STANDBY_DISK_*`, `STANDBY_MACHINE`,
/// `STANDBY_RUN_ID`, `STANDBY_MODE`), passed through `env(1)` so the
/// commands still run without a shell.
pub fn with_machine_env(t: &mut replication::Target, run_id: &str) {
    let Some(q) = &mut t.quiesce else {
        return;
    };
    let spec = standby_provider_core::MachineSpec {
        machine: t.machine.clone(),
        boot: None,
        disks: t.disks.iter().cloned().collect(),
    };
    let run = standby_provider_core::Run {
        run_id: run_id.to_string(),
        mode: standby_provider_core::Mode::Failover,
        site: String::new(),
        site_root: None,
        config_root: PathBuf::new(),
        interrupt: Default::default(),
    };
    let mut prefix = vec!["env".to_string()];
    prefix.extend(spec.env(&run).into_iter().map(|(k, v)| format!("{k}={v}")));
    for argv in [&mut q.freeze, &mut q.thaw] {
        let mut full = prefix.clone();
        full.append(argv);
        *argv = full;
    }
}

/// A manifest as the run record keeps it.
pub fn used(vault: &Address, m: &Manifest) -> PointUsed {
    PointUsed {
        vault: vault.to_string(),
        id: m.id.hex(),
        created: m.created.clone(),
        consistency: m.consistency.to_string(),
        group: m.group.clone(),
    }
}

/// Take one point instant per batch, from the disks the batches name.
/// `baseline`: machine -> point to diff against (default: its newest);
/// `moves_to`: machine -> the site it moves to from this point (final points).
pub fn take(
    ws: &Workspace,
    batches: &[Batch],
    baseline: HashMap<String, Id>,
    moves_to: HashMap<String, String>,
    cancel: &Cancel,
    mut each: impl FnMut(&Batch, &[Manifest]),
) -> Result<Vec<(Address, Manifest)>, RecoveryError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut opts = Options::new(ws.cache_dir());
    opts.cancel = Some(stop.clone());
    opts.baseline = baseline;
    opts.moves_to = moves_to;
    let mut out = Vec::new();
    for b in batches {
        if cancel.is_cancelled() {
            return Err(RecoveryError::Interrupted);
        }
        // The workspace opens each vault once per command.
        let vault = super::run::open_vault(ws, &b.vault)?;
        let made = replication::take_points(&vault, &b.targets, &opts, &Progress::default())
            .map_err(|source| RecoveryError::TakePoint {
                label: b.label.clone(),
                source: Box::new(source),
            })?;
        each(b, &made);
        out.extend(made.into_iter().map(|m| (b.vault.clone(), m)));
    }
    Ok(out)
}

/// `standby reprotect PLAN`: the first reverse point of every machine of
/// the plan (consistency groups at one instant, quiesce hooks run), then the
/// reverse protection is recorded.
pub fn reprotect(
    ws: &Workspace,
    plan: &RecoveryPlan,
    recorder: &Recorder,
    cancel: &Cancel,
) -> Result<Vec<Reversed>, RecoveryError> {
    let _run = super::runlock::acquire(ws, &plan.addr, recorder.command())?;
    recorder.interruptible_by(cancel);
    let doc = recorder.read()?;
    super::run::refuse_to_guess(ws, plan, doc.as_ref(), recorder)?;
    let run = committed_failover(doc.as_ref(), &plan.addr)?;
    if let Some(r) = &run.reprotect {
        let at = crate::human::time(r.at);
        return Err(RecoveryError::Refused {
            message: format!("{} is already reprotected (since {at})", plan.addr),
            help: format!(
                "`standby replicate` takes its next points; fail back with `standby failback {}`",
                plan_arg(&plan.addr)
            ),
        });
    }
    let batches = reverse_batches(ws, plan, &run, false)?;
    // Diff against the point each replica was restored from: what was
    // written at DR since, even when newer points exist (unplanned).
    let baseline: HashMap<String, Id> = run
        .machines
        .iter()
        .filter_map(|(m, r)| Some((m.clone(), Id::parse(&r.point.as_ref()?.id)?)))
        .collect();
    let made = take(ws, &batches, baseline, HashMap::new(), cancel, |_, _| {})?;
    let mut out = Vec::new();
    let mut points = BTreeMap::new();
    for (vault, m) in made {
        points.insert(m.machine.clone(), used(&vault, &m));
        out.push(Reversed {
            machine: m.machine.clone(),
            disk_bytes: m.disks.values().map(|d| d.size).sum(),
            point: m,
        });
    }
    let run_id = run.run_id.clone();
    recorder.update(|doc| {
        let r = doc
            .run_mut(&run_id)
            .ok_or("the failover run is no longer in the state")?;
        r.reprotect = Some(Reprotect {
            at: OffsetDateTime::now_utc(),
            points,
        });
        Ok(())
    })?;
    Ok(out)
}
