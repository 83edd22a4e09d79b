//! The failover path: machines go to their protection's target site, onto
//! fresh disks the site's provider makes, restored from the chosen point.
//! A planned failover first stops the source machines ([`stop_sources`])
//! and takes one final point of each ([`final_points`]). The operations
//! (test, planned, unplanned, drill) live in `run`.

use super::engine::{Engine, Landing, Running, Way};
use super::events::What;
use super::points::Chosen;
use super::record::Refusal;
use super::timeline::{EntryKind, Outcome, Subject};
use crate::model::{Address, Config, Machine, StepWhen};
use crate::replication::{self, Progress};
use crate::state::{MachineRun, RunRecord};
use standby_provider_core::DiskSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Failover: to the protection's target site, fresh disks.
pub struct Failover;

impl Way for Failover {
    fn steps(&self) -> StepWhen {
        StepWhen::Failover
    }

    fn target_site(&self, cfg: &Config, machine: &Address) -> Option<Address> {
        crate::workspace::protection_of(cfg, machine).map(|p| p.target.clone())
    }

    fn origin(&self, _: &Config, m: &Machine) -> String {
        m.site.to_string()
    }

    fn disks(
        &self,
        e: &Engine<'_>,
        land: &Landing<'_>,
        placed: &mut MachineRun,
    ) -> Result<BTreeMap<String, PathBuf>, String> {
        let name = land.machine.addr.to_string();
        // A failover VM at a qemu site runs on a tracked wrapper.
        let tracked = land.run.mode == standby_provider_core::Mode::Failover
            && land.machine.vm.is_some()
            && land
                .run
                .site
                .parse::<Address>()
                .ok()
                .and_then(|s| e.cfg.sites.get(&s))
                .is_some_and(|s| s.provider == "qemu");
        e.each_disk(land, placed, |d, size, subj| {
            let spec = DiskSpec {
                name: d.name.clone(),
                size,
                path: d.path.clone(),
            };
            let (target, _) = e.timeline.timed(
                subj,
                || {
                    let target = land
                        .provider
                        .disk_target(land.run, &name, &spec)
                        .map_err(|e| e.to_string())?;
                    let r = replication::restore_disk(
                        land.vault,
                        land.point,
                        &d.name,
                        &target,
                        &Progress::default(),
                    )
                    .map_err(|e| format!("restore disk {}: {e}", d.name))?;
                    if tracked {
                        // The VM boots a fresh wrapper of this image whose
                        // bitmap counts from this point (provider `start`).
                        let image = standby_provider_qemu::wrapper::path(&target);
                        crate::replication::vm::record_restored(
                            &e.ws.cache_dir(),
                            &land.vault.id,
                            &name,
                            &d.name,
                            &land.point.id,
                            r.size,
                            &image,
                        )
                        .map_err(|e| format!("record disk {}'s tracking: {e}", d.name))?;
                    }
                    Ok::<_, String>((target, r))
                },
                |(_, r)| {
                    format!(
                        "{} disk, {} of data written",
                        crate::human::size(r.size),
                        crate::human::size(r.data)
                    )
                },
            )?;
            Ok(target)
        })
    }

    fn place(
        &self,
        run: &mut RunRecord,
        machine: &Address,
        entry: MachineRun,
    ) -> Result<(), Refusal> {
        run.machines.insert(machine.to_string(), entry);
        Ok(())
    }
}

/// Stop the source machines where they run, groups in reverse order
/// ([`Engine::stop_machines`]).
pub(crate) fn stop_sources(e: &Engine<'_>) -> bool {
    e.stop_machines(
        |m| {
            let run = e.run_at(&m.site);
            let root = run.site_root.unwrap_or_else(|| e.root.clone());
            Some(Running {
                site: m.site.to_string(),
                disks: m
                    .disks
                    .iter()
                    .map(|d| (d.name.clone(), root.join(&d.path)))
                    .collect(),
            })
        },
        "stop",
        |machine, site, detail| What::SourceStopped {
            machine,
            site,
            detail,
        },
    )
}

/// The batches the final points of the plan's protections are taken in.
fn final_batches(e: &Engine<'_>) -> Result<Vec<replication::Batch>, String> {
    let mut prots = Vec::new();
    for g in &e.plan.groups {
        for m in &g.machines {
            let p =
                e.ws.protection_of(m)
                    .ok_or_else(|| format!("{m} has no protection"))?;
            prots.push(p.addr.clone());
        }
    }
    replication::batches(e.cfg, &prots).map_err(|e| e.to_string())
}

/// Before a planned failover stops anything: the final points' batches
/// can be formed and every vault they go to opens with its key and takes
/// a write, so a vault that is down, full, read-only or opened with a
/// wrong key fails the run while the sources still run.
pub(crate) fn check_final_points(e: &mut Engine<'_>) -> Result<(), String> {
    for b in final_batches(e)? {
        e.vault(&b.vault)
            .and_then(|v| v.probe_write().map_err(|err| err.to_string()))
            .map_err(|err| format!("{err} (nothing was stopped)"))?;
    }
    Ok(())
}

/// Take one final point of every protection of the plan (consistency
/// groups together, crash-consistent: the machines are stopped).
pub(crate) fn final_points(e: &mut Engine<'_>) -> Result<BTreeMap<Address, Chosen>, String> {
    let batches = final_batches(e)?;
    let mut opts = replication::Options::new(e.ws.cache_dir());
    // The machines run at their protection's target from these points on.
    for b in &batches {
        for (a, t) in b.protections.iter().zip(&b.targets) {
            if let Some(p) = e.cfg.protections.get(a) {
                opts.moves_to
                    .insert(t.machine.clone(), p.target.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    for b in batches {
        let start = e.timeline.now();
        let targets: Vec<_> = b
            .targets
            .iter()
            .cloned()
            .map(|mut t| {
                t.app = false;
                t
            })
            .collect();
        let vault = e.vault(&b.vault)?;
        let r = replication::take_points(vault, &targets, &opts, &Progress::default());
        let what = Subject::new(EntryKind::FinalPoint, b.label.clone());
        match r {
            Ok(made) => {
                e.timeline.record(
                    what,
                    start,
                    Outcome::Passed,
                    crate::human::count(made.len(), "point"),
                );
                for (prot, m) in b.protections.iter().zip(made) {
                    e.emit(What::FinalPoint {
                        protection: prot.to_string(),
                        point: m.id.short(),
                    });
                    let machine = e
                        .cfg
                        .protections
                        .get(prot)
                        .map(|p| p.machine.clone())
                        .ok_or_else(|| format!("no {prot}"))?;
                    out.insert(
                        machine,
                        Chosen {
                            vault: b.vault.clone(),
                            protection: prot.clone(),
                            point: m,
                        },
                    );
                }
            }
            Err(err) => {
                e.timeline
                    .record(what, start, Outcome::Failed, err.to_string());
                return Err(format!("final point of {}: {err}", b.label));
            }
        }
    }
    // Source VMs stayed up (shut down, paused) for their final point.
    super::vms::release_sources(e)?;
    Ok(out)
}
