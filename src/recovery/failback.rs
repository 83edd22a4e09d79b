//! Failback: a planned failover from the DR site back to the machines' own
//! site, after reprotect. Stops the replicas (groups in reverse order, the
//! machine's `shutdown` command with the DR disks, provider `stop`), takes
//! the final reverse point of each machine, then runs the plan's groups on
//! the failback path ([`Failback`], the engine's other [`Way`]): each
//! original disk gets only the blocks that differ from that point
//! (`restore_onto`), machines start at their own site, checks and steps run
//! as on failover. Done, the failover run leaves
//! the state: forward protection resumes from the original disks, whose
//! change-tracking cache already holds the final point's hashes.
//!
//! Every stage is recorded in the run's `failback` progress, so a rerun
//! after a crash goes on: once final points are recorded the replicas stay
//! stopped and those points are restored again (idempotent).

use super::approval::Approver;
use super::command;
use super::engine::{Engine, Landing, Running, Way};
use super::events::{Sink, What};
use super::points::Chosen;
use super::record::{Recorder, Refusal};
use super::reprotect::{committed_failover, reverse_batches, take, used};
use super::run::{RecoveryError, RunResult, plan_arg};
use super::timeline::{EntryKind, Outcome, Subject, Timeline};
use crate::exec::Cancel;
use crate::human::size;
use crate::model::{Address, Config, Machine, RecoveryPlan, StepWhen};
use crate::replication::{self, Progress};
use crate::state::{
    Failback as FailbackProgress, MachineRun, Owner, PointUsed, RunKind, RunRecord,
};
use crate::workspace::Workspace;
use std::collections::BTreeMap;
use std::path::PathBuf;
use time::OffsetDateTime;

/// Test-only: a shell command run after the final reverse points are
/// recorded and before any disk is written (tests kill failback there).
pub const TEST_HOOK_ENV: &str = "STANDBY_TEST_FAILBACK_AFTER_FINAL";

/// `standby failback PLAN`. `Err` means nothing was done (refused); a
/// failback that started returns its result, passed or not.
pub fn failback(
    ws: &Workspace,
    plan: &RecoveryPlan,
    approver: &dyn Approver,
    recorder: &Recorder,
    cancel: &Cancel,
    sink: &dyn Sink,
) -> Result<RunResult, RecoveryError> {
    let name = plan_arg(&plan.addr);
    let cfg = &ws.config;
    let _run = super::runlock::acquire(ws, &plan.addr, recorder.command())?;
    recorder.interruptible_by(cancel);
    let doc = recorder.read()?;
    super::run::refuse_to_guess(ws, plan, doc.as_ref(), recorder)?;
    let run = committed_failover(doc.as_ref(), &plan.addr)?;
    super::vms::refuse_unmanaged_failback(cfg, plan)?;
    if run.reprotect.is_none() {
        return Err(RecoveryError::Refused {
            message: format!(
                "{} is failed over (run {}) but not reprotected: its DR disks are not protected, so there is nothing to fail back from",
                plan.addr, run.run_id
            ),
            help: format!(
                "reprotect first with `standby reprotect {name}`, then `standby failback {name}`"
            ),
        });
    }
    if let Some(f) = &run.failback
        && let Some(o) = &f.owner
        && o != &Owner::me()
        && o.may_be_alive()
    {
        return Err(RecoveryError::Refused {
            message: format!(
                "a failback of {} is in progress (pid {} on {})",
                plan.addr, o.pid, o.host
            ),
            help: "wait for it to finish; `standby status` shows where each machine is".into(),
        });
    }
    let timeline = Timeline::new();
    let run_id = run.run_id.clone();
    let started = timeline.started_at();
    let run = recorder.update(|doc| {
        let r = doc
            .run_mut(&run_id)
            .ok_or("the failover run is no longer in the state")?;
        match &mut r.failback {
            Some(f) => f.owner = Some(Owner::me()),
            None => {
                // Approvals given during the failover are not approvals of
                // the failback's manual steps.
                r.approvals.clear();
                r.failback = Some(FailbackProgress {
                    started_at: started,
                    owner: Some(Owner::me()),
                    final_points: BTreeMap::new(),
                    machines: BTreeMap::new(),
                });
            }
        }
        r.waiting_for = None;
        Ok(r.clone())
    })?;
    let progress = run.failback.clone().unwrap_or(FailbackProgress {
        started_at: started,
        owner: None,
        final_points: BTreeMap::new(),
        machines: BTreeMap::new(),
    });

    let way = Failback {
        from: run
            .machines
            .iter()
            .filter_map(|(m, r)| Some((m.clone(), crate::vault::Id::parse(&r.point.as_ref()?.id)?)))
            .collect(),
    };
    let mut engine = Engine::new(
        ws,
        plan,
        run_id.clone(),
        RunKind::Planned,
        recorder.clone(),
        cancel.clone(),
        approver,
        timeline,
        sink,
        &way,
    );
    engine.emit(What::FailbackStarted {
        plan: plan.addr.to_string(),
        run_id: run_id.clone(),
    });

    let mut passed = true;
    let final_points = if progress.final_points.is_empty() {
        // VMs at a qemu DR site: guests shut down, QEMU kept for the final
        // point through their dirty bitmaps.
        if let Err(e) = super::vms::pause_replicas(&engine, &run) {
            engine.fail(e);
            passed = false;
        }
        passed = passed && stop_replicas(&engine, &run);
        if passed && !cancel.is_cancelled() {
            match final_points(&engine, plan, &run) {
                Ok(p) => p,
                Err(e) => {
                    engine.fail(e);
                    passed = false;
                    BTreeMap::new()
                }
            }
        } else {
            passed = false;
            BTreeMap::new()
        }
    } else {
        engine.emit(What::FailbackResumed);
        progress.final_points.clone()
    };
    if passed && let Err(e) = super::vms::quit_replicas(&engine, &run) {
        engine.fail(e);
        passed = false;
    }
    if passed {
        if let Ok(hook) = std::env::var(TEST_HOOK_ENV)
            && !hook.is_empty()
        {
            let argv = vec!["sh".to_string(), "-c".to_string(), hook];
            let _ = command::run(
                &argv,
                &engine.root,
                &[],
                std::time::Duration::from_secs(60),
                None,
            );
        }
        match chosen(ws, plan, &final_points) {
            Ok(c) => engine.points = c,
            Err(e) => {
                engine.fail(e);
                passed = false;
            }
        }
    }
    for (m, c) in &engine.points {
        engine.emit(What::FinalReversePointChosen {
            machine: m.to_string(),
            point: c.point.id.short(),
            created: c.point.created.clone(),
        });
    }
    if passed {
        // A machine an earlier attempt started at home from these final
        // points is kept, any other it left is stopped and started afresh
        // (`Engine::take_over`).
        engine.earlier = Some(super::engine::Earlier {
            run_id: run_id.clone(),
            machines: progress.machines.clone(),
        });
        passed = engine.run_groups();
    }
    let interrupted = cancel.is_cancelled();
    let finished_at = OffsetDateTime::now_utc();
    let mut record = run.clone();
    if passed {
        let r = recorder.update(|doc| {
            let r = doc
                .run_mut(&run_id)
                .ok_or("the failover run is no longer in the state")?
                .clone();
            doc.runs.retain(|x| x.run_id != run_id);
            Ok(r)
        });
        match r {
            Ok(r) => record = r,
            Err(e) => {
                engine.fail(format!("record the end of the failback: {e}"));
                passed = false;
            }
        }
    } else {
        let _ = recorder.update(|doc| {
            if let Some(r) = doc.run_mut(&run_id) {
                r.waiting_for = None;
                if let Some(f) = &mut r.failback {
                    f.owner = None;
                }
                record = r.clone();
            }
            Ok(())
        });
    }
    Ok(RunResult::of(
        &mut engine,
        record,
        passed,
        interrupted,
        finished_at,
    ))
}

/// Failback: home to each machine's own site, onto its existing disks.
pub struct Failback {
    /// Machine -> the point the failover restored (what its home disks
    /// held when it left).
    pub from: BTreeMap<String, crate::vault::Id>,
}

impl Way for Failback {
    fn steps(&self) -> StepWhen {
        StepWhen::Failback
    }

    fn target_site(&self, cfg: &Config, machine: &Address) -> Option<Address> {
        cfg.machines.get(machine).map(|m| m.site.clone())
    }

    /// The DR site it ran at since the failover.
    fn origin(&self, cfg: &Config, m: &Machine) -> String {
        crate::workspace::protection_of(cfg, &m.addr)
            .map_or_else(|| m.site.to_string(), |p| p.target.to_string())
    }

    /// Each disk at home gets only the blocks that differ from the point
    /// (`restore_onto`); a missing one is restored in full.
    fn disks(
        &self,
        e: &Engine<'_>,
        land: &Landing<'_>,
        placed: &mut MachineRun,
    ) -> Result<BTreeMap<String, PathBuf>, String> {
        let name = land.machine.addr.to_string();
        let cache = e.ws.cache_dir();
        if super::vms::home_vm(e.cfg, land.machine) {
            return vm_disks(e, land, placed, self.from.get(&name));
        }
        e.each_disk(land, placed, |d, _, subj| {
            // The disk at its own site: the site root (or the configuration
            // directory) joined with its path; not the provider's
            // `disk_target`, which makes a fresh, empty file.
            let target = land
                .run
                .site_root
                .clone()
                .unwrap_or_else(|| e.root.clone())
                .join(&d.path);
            let r = e.timeline.timed(
                subj,
                || {
                    replication::restore_onto(
                        land.vault,
                        land.point,
                        &d.name,
                        &target,
                        &cache,
                        &Progress::default(),
                    )
                    .map_err(|e| format!("write changed blocks onto disk {}: {e}", d.name))
                },
                |r| {
                    if r.full {
                        format!("missing: restored in full, {} written", size(r.written))
                    } else {
                        format!(
                            "{} compared, {} of changed blocks written",
                            size(r.compared),
                            size(r.written)
                        )
                    }
                },
            )?;
            e.emit(What::DiskResynced {
                machine: name.clone(),
                disk: d.name.clone(),
                path: target.display().to_string(),
                written: r.written,
                size: r.size,
                full: r.full,
            });
            Ok(target)
        })
    }

    fn place(
        &self,
        run: &mut RunRecord,
        machine: &Address,
        entry: MachineRun,
    ) -> Result<(), Refusal> {
        let f = run
            .failback
            .as_mut()
            .ok_or("the failback is no longer in the state")?;
        f.machines.insert(machine.to_string(), entry);
        Ok(())
    }
}

/// A VM's disks at home: an earlier attempt's VM there ended, then each
/// qcow2 image gets only the changed blocks through a writable NBD export
/// (`vms::write_home_disk`); a raw one as any disk file.
fn vm_disks(
    e: &Engine<'_>,
    land: &Landing<'_>,
    placed: &mut MachineRun,
    from: Option<&crate::vault::Id>,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let name = land.machine.addr.to_string();
    let cache = e.ws.cache_dir();
    let root = land.run.site_root.clone().unwrap_or_else(|| e.root.clone());
    let qemu = super::vms::qemu_site(e.cfg, &e.root, &land.machine.site);
    qemu.end_home_vm(land.run, &name)
        .map_err(|err| format!("end the VM an earlier attempt started: {err}"))?;
    // The point the machine was failed over from: its home disks held it.
    let from = from.and_then(|id| crate::vault::manifest::read(land.vault, id).ok());
    let raw: Vec<String> = land
        .machine
        .vm
        .as_ref()
        .map(|v| {
            v.disks
                .iter()
                .filter(|d| d.format == "raw")
                .map(|d| d.name.clone())
                .collect()
        })
        .unwrap_or_default();
    e.each_disk(land, placed, |d, _, subj| {
        let target = root.join(&d.path);
        if raw.contains(&d.name) {
            let r = replication::restore_onto(
                land.vault,
                land.point,
                &d.name,
                &target,
                &cache,
                &Progress::default(),
            )
            .map_err(|e| format!("write changed blocks onto disk {}: {e}", d.name))?;
            e.emit(What::DiskResynced {
                machine: name.clone(),
                disk: d.name.clone(),
                path: target.display().to_string(),
                written: r.written,
                size: r.size,
                full: r.full,
            });
            return Ok(target);
        }
        let w = e.timeline.timed(
            subj,
            || {
                super::vms::write_home_disk(
                    land.vault,
                    land.point,
                    from.as_ref(),
                    land.machine,
                    &d.name,
                    &target,
                    &root,
                    &cache,
                )
            },
            |w| match &w.fallback {
                None if w.resynced.compared > 0 => format!(
                    "tracked: {} of dirty extents compared (written since the failover), {} of changed blocks written through NBD",
                    size(w.resynced.compared),
                    size(w.resynced.written)
                ),
                None => format!(
                    "tracked: {} of changed blocks written through NBD",
                    size(w.resynced.written)
                ),
                Some(why) => format!(
                    "compared {} ({why}), {} of changed blocks written through NBD",
                    size(w.resynced.compared),
                    size(w.resynced.written)
                ),
            },
        )?;
        e.emit(What::DiskResynced {
            machine: name.clone(),
            disk: d.name.clone(),
            path: target.display().to_string(),
            written: w.resynced.written,
            size: w.resynced.size,
            full: w.resynced.full,
        });
        Ok(target)
    })
}

/// Stop the replicas at the site each runs at, groups in reverse order:
/// the machine's `shutdown` command (with its disks there), then the site
/// provider's `stop`. Stopping a stopped replica is no error.
fn stop_replicas(engine: &Engine<'_>, run: &RunRecord) -> bool {
    engine.stop_machines(
        |m| {
            let placed = run.machines.get(&m.addr.to_string())?;
            Some(Running {
                site: placed.site.clone(),
                disks: placed
                    .disks
                    .iter()
                    .map(|(n, p)| (n.clone(), PathBuf::from(p)))
                    .collect(),
            })
        },
        "stop the replica of",
        |machine, site, detail| What::ReplicaStopped {
            machine,
            site,
            detail,
        },
    )
}

/// The final reverse point of every machine (crash-consistent: they are
/// stopped), recorded in the failback progress before anything is written
/// at the original site.
fn final_points(
    engine: &Engine<'_>,
    plan: &RecoveryPlan,
    run: &RunRecord,
) -> Result<BTreeMap<String, PointUsed>, String> {
    let batches = reverse_batches(engine.ws, plan, run, true).map_err(|e| e.to_string())?;
    let start = engine.timeline.now();
    // Each machine runs at its own site again from its final point on.
    let home: std::collections::HashMap<String, String> = engine
        .cfg
        .machines
        .values()
        .map(|m| (m.addr.to_string(), m.site.to_string()))
        .collect();
    let made = take(
        engine.ws,
        &batches,
        Default::default(),
        home,
        &engine.cancel,
        |b, made| {
            for m in made {
                engine.emit(What::FinalReversePoint {
                    machine: m.machine.clone(),
                    point: m.id.short(),
                    stored: m.stats.stored,
                    disks: m.disks.values().map(|d| d.size).sum::<u64>(),
                });
            }
            engine.timeline.record(
                Subject::new(EntryKind::FinalPoint, b.label.clone()),
                start,
                Outcome::Passed,
                crate::human::count(made.len(), "point"),
            );
        },
    )
    .map_err(|e| format!("final reverse point: {e}"))?;
    let points: BTreeMap<String, PointUsed> = made
        .iter()
        .map(|(v, m)| (m.machine.clone(), used(v, m)))
        .collect();
    let run_id = run.run_id.clone();
    let recorded = points.clone();
    engine
        .recorder
        .update(|doc| {
            let r = doc
                .run_mut(&run_id)
                .ok_or("the failover run is no longer in the state")?;
            let f = r
                .failback
                .as_mut()
                .ok_or("the failback is no longer in the state")?;
            f.final_points = recorded;
            Ok(())
        })
        .map_err(|e| format!("record the final points: {e}"))?;
    Ok(points)
}

/// The recorded final points as the engine's choice, read back from the vaults.
fn chosen(
    ws: &Workspace,
    plan: &RecoveryPlan,
    finals: &BTreeMap<String, PointUsed>,
) -> Result<BTreeMap<Address, Chosen>, String> {
    let listed = super::run::list_points(ws, plan).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for g in &plan.groups {
        for m in &g.machines {
            let used = finals
                .get(&m.to_string())
                .ok_or_else(|| format!("no final reverse point was recorded for {m}"))?;
            let prot = ws
                .protection_of(m)
                .ok_or_else(|| format!("{m} has no protection"))?;
            let point = listed
                .get(&prot.vault)
                .and_then(|l| l.iter().find(|p| p.id.hex() == used.id))
                .ok_or_else(|| {
                    format!(
                        "final reverse point {} of {m} is not in {}",
                        &used.id[..12.min(used.id.len())],
                        prot.vault
                    )
                })?;
            out.insert(
                m.clone(),
                Chosen {
                    vault: prot.vault.clone(),
                    protection: prot.addr.clone(),
                    point: point.clone(),
                },
            );
        }
    }
    // The listing holds catalog entries: read the points restored whole.
    super::run::read_chosen(ws, out).map_err(|e| e.to_string())
}
