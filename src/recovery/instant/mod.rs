//! Instant recovery: a machine boots while its disks are still in the
//! vault. Each disk of the point is served read-only over NBD by an export
//! process ([`export`]: a [`reader::PointReader`] fetching blobs on demand
//! behind the [`nbd`] server); the VM runs on a local qcow2 overlay backed
//! by that export. A failover then copies each disk to its final place
//! while the VM runs (QEMU `blockdev-mirror`) and drops the export; a test
//! failover or drill never copies the whole disk.

pub mod export;
pub mod nbd;
pub mod reader;

use super::engine::{Engine, Landing, Way};
use super::events::What;
use super::timeline::{EntryKind, Outcome, Subject};
use crate::model::{Address, Config, Group, Machine, RecoveryPlan, StepWhen};
use crate::state::{MachineRun, RunRecord};
use standby_provider_core::{DiskSpec, Mode, SiteProvider};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How long an export gets to accept clients (it resolves the point's
/// chain and loads the vault's index first).
const EXPORT_START: Duration = Duration::from_secs(300);
/// How long a background copy may take before the run fails.
const COPY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Refuses `--instant` for a plan with a machine that cannot boot from an
/// export: instant recovery needs a VM (`vm` block) recovered to a `qemu`
/// site. Nothing is done before this check.
pub fn check(cfg: &Config, plan: &RecoveryPlan) -> Result<(), super::RecoveryError> {
    let mut bad = Vec::new();
    for addr in plan.groups.iter().flat_map(|g| &g.machines) {
        let Some(m) = cfg.machines.get(addr) else {
            continue;
        };
        let target = crate::workspace::protection_of(cfg, addr).map(|p| p.target.clone());
        let provider = target
            .as_ref()
            .and_then(|t| cfg.sites.get(t))
            .map(|s| s.provider.as_str());
        if m.vm.is_none() {
            bad.push(format!("{addr} has no vm block"));
        } else if let Some(d) = m.vm.iter().flat_map(|v| &v.disks).find(|d| {
            standby_provider_qemu::instant::overlay_node(&d.node_name).len()
                > standby_provider_qemu::vm::NODE_NAME_MAX
        }) {
            bad.push(format!(
                "{addr}'s disk {} has node_name {:?}: its instant overlay runs as {:?}, longer than QEMU's {} characters (give it a node_name of at most {})",
                d.name,
                d.node_name,
                standby_provider_qemu::instant::overlay_node(&d.node_name),
                standby_provider_qemu::vm::NODE_NAME_MAX,
                standby_provider_qemu::vm::NODE_NAME_MAX
                    - (standby_provider_qemu::instant::overlay_node("").len())
            ));
        } else if provider != Some("qemu") {
            bad.push(format!(
                "{addr} recovers to {} (provider {})",
                target.map_or_else(|| "no site".to_string(), |t| t.to_string()),
                provider.unwrap_or("none")
            ));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(super::RecoveryError::Refused {
        message: format!(
            "--instant needs every machine of {} to be a VM recovered to a qemu site: {}",
            plan.addr,
            bad.join("; ")
        ),
        help: "drop --instant to restore the disks first, or give the machines a vm block and a protection to a site with provider = \"qemu\"".into(),
    })
}

/// The hold an instant run of `plan` keeps on `machine`'s point while its
/// exports serve it (see [`crate::vault::holds`]).
/// Named after the configuration's lineage (`owner`: two configurations
/// sharing a vault never let go of each other's holds), the plan and the
/// machine; test runs' end in `--test`, so their cleanup never lets go of
/// a failover's (a VM that may still read its exports).
pub(crate) fn holder(owner: Option<&str>, plan: &Address, machine: &str, mode: Mode) -> String {
    let plan = plan.to_string();
    let mut parts = vec![owner.unwrap_or("none"), &plan, machine];
    if mode == Mode::Test {
        parts.push("test");
    }
    crate::vault::holds::holder(&parts)
}

/// Whether a machine a run placed reads a disk from an export (booted
/// by instant recovery, its copy not done).
pub(crate) fn reads_exports(m: &crate::state::MachineRun) -> bool {
    m.disks
        .values()
        .any(|d| standby_provider_qemu::site::is_nbd(std::path::Path::new(d)))
}

/// How long taking a hold waits for a prune that runs.
const HOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Instant failover: disks served from the vault, the VM booted on
/// overlays at once, then (failover) copied to their final images in the
/// background once the checks passed, or (test) never copied.
pub(crate) struct InstantFailover;

/// The qemu provider of `addr`'s target site, that site, its run and the
/// run files' directory.
fn qemu_at(
    e: &Engine<'_>,
    addr: &Address,
) -> Result<
    (
        standby_provider_qemu::site::QemuSite,
        standby_provider_core::Run,
        PathBuf,
        String,
    ),
    String,
> {
    let site = e
        .target_site(addr)
        .ok_or_else(|| "it has no protection".to_string())?;
    let q = super::vms::qemu_site(e.cfg, &e.root, &site);
    let run = e.run_at(&site);
    let dir = q.files_dir(&run).map_err(|e| e.to_string())?;
    let vm = q.vm_name(&addr.to_string()).map_err(|e| e.to_string())?;
    Ok((q, run, dir, vm))
}

impl Way for InstantFailover {
    fn steps(&self) -> StepWhen {
        StepWhen::Failover
    }

    fn target_site(&self, cfg: &Config, machine: &Address) -> Option<Address> {
        super::failover::Failover.target_site(cfg, machine)
    }

    fn origin(&self, cfg: &Config, m: &Machine) -> String {
        super::failover::Failover.origin(cfg, m)
    }

    fn disks(
        &self,
        e: &Engine<'_>,
        land: &Landing<'_>,
        placed: &mut MachineRun,
    ) -> Result<BTreeMap<String, PathBuf>, String> {
        let addr = &land.machine.addr;
        // A VM an interrupted attempt left here was kept or stopped
        // before this (`Engine::take_over`); test runs have their own
        // sandbox, cleaned before they start.
        let (_, _, dir, vm) = qemu_at(e, addr)?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let chosen = e
            .points
            .get(addr)
            .ok_or_else(|| "no point was chosen for it".to_string())?;
        let key = e
            .cfg
            .vaults
            .get(&chosen.vault)
            .map(|v| v.key.clone())
            .ok_or_else(|| format!("no {} in the configuration", chosen.vault))?;
        // Retention must not drop the point while the VM reads it.
        crate::vault::holds::hold(
            land.vault,
            &land.point.id,
            &holder(
                land.vault.owner().as_deref(),
                &e.plan.addr,
                &addr.to_string(),
                e.mode,
            ),
            HOLD_WAIT,
        )
        .map_err(|e| format!("hold point {} against prune: {e}", land.point.id.short()))?;
        // Every disk's export starts at once (each resolves its point and
        // loads the index before it accepts clients): the boot waits for
        // the slowest, not the sum.
        let started = e.timeline.now();
        let exports: BTreeMap<String, Result<PathBuf, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = land
                .machine
                .disks
                .iter()
                .map(|d| {
                    let files = export::Files::new(&dir, &vm, &d.name);
                    let src = export::Source {
                        url: land.vault.url.clone(),
                        key: key.clone(),
                        base: e.cfg.root.clone(),
                        point: land.point.id,
                        disk: d.name.clone(),
                    };
                    (
                        d.name.clone(),
                        s.spawn(move || {
                            export::start(&src, &files, EXPORT_START)
                                .map(|_| PathBuf::from(files.url(&src.disk)))
                                .map_err(|e| e.to_string())
                        }),
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|(n, h)| {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err("the export starter panicked".to_string()));
                    (n, r)
                })
                .collect()
        });
        e.each_disk(land, placed, |d, _size, subj| {
            let r = exports
                .get(&d.name)
                .cloned()
                .unwrap_or_else(|| Err("no export was started".to_string()))
                .map_err(|err| format!("disk {}: {err}", d.name));
            let outcome = if r.is_ok() {
                Outcome::Passed
            } else {
                Outcome::Failed
            };
            let detail = match &r {
                Ok(_) => "instant: served from the vault over NBD".to_string(),
                Err(err) => err.clone(),
            };
            e.timeline.record(subj, started, outcome, detail);
            r
        })
    }

    fn place(
        &self,
        run: &mut RunRecord,
        machine: &Address,
        entry: MachineRun,
    ) -> Result<(), super::record::Refusal> {
        super::failover::Failover.place(run, machine, entry)
    }

    /// A VM left on its overlays reads its disks from the exports: kept
    /// only while every one of them still serves (its copy then goes on);
    /// one that already runs on its final images needs none.
    fn can_keep(&self, e: &Engine<'_>, addr: &Address) -> bool {
        let Ok((q, run, dir, vm)) = qemu_at(e, addr) else {
            return false;
        };
        let Some(m) = e.cfg.machines.get(addr) else {
            return false;
        };
        match q.reads_exports(&run, &addr.to_string()) {
            Ok(false) => true,
            Ok(true) => m
                .disks
                .iter()
                .all(|d| export::Handle::find(&export::Files::new(&dir, &vm, &d.name)).is_some()),
            Err(_) => false,
        }
    }

    fn settle(&self, e: &Engine<'_>, g: &Group, addr: &Address) -> Result<(), String> {
        let (q, run, dir, vm) = qemu_at(e, addr)?;
        let m = e
            .cfg
            .machines
            .get(addr)
            .ok_or_else(|| format!("no {addr} in the configuration"))?;
        let name = addr.to_string();
        if run.mode == Mode::Test {
            // A test run never copies: what the VM read so far is all that
            // left the vault.
            for d in &m.disks {
                let files = export::Files::new(&dir, &vm, &d.name);
                let s = files.stats().unwrap_or_default();
                let subj = Subject::new(EntryKind::Copy, &d.name)
                    .group(&g.name)
                    .machine(&name);
                let now = e.timeline.now();
                e.timeline.record_span(
                    subj,
                    now,
                    now,
                    Outcome::Passed,
                    format!(
                        "instant, not copied (test run): {} served of a {} disk, {} fetched from the vault; the export made {} requests reading {} ({} index objects) and accepted clients {} ms after it started",
                        crate::human::size(s.served),
                        crate::human::size(s.size),
                        crate::human::size(s.fetched),
                        s.requests,
                        crate::human::size(s.request_bytes),
                        s.index_objects,
                        s.open_ms
                    ),
                );
                e.emit(What::InstantServed {
                    machine: name.clone(),
                    disk: d.name.clone(),
                    served: s.served,
                    fetched: s.fetched,
                    size: s.size,
                });
            }
            return Ok(());
        }
        let chosen = e
            .points
            .get(addr)
            .ok_or_else(|| "no point was chosen for it".to_string())?;
        let mut targets = BTreeMap::new();
        for d in &m.disks {
            let size = chosen.point.disks.get(&d.name).map_or(0, |x| x.size);
            let spec = DiskSpec {
                name: d.name.clone(),
                size,
                path: d.path.clone(),
            };
            let t = q
                .disk_target(&run, &name, &spec)
                .map_err(|e| e.to_string())?;
            targets.insert(d.name.clone(), t);
        }
        let subj = Subject::new(EntryKind::Copy, "disks")
            .group(&g.name)
            .machine(&name);
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        e.timeline.timed(
            subj,
            || {
                q.instant_copy(
                    &run,
                    &name,
                    &targets,
                    COPY_TIMEOUT,
                    &mut |disk, done, total| {
                        // An event per tenth of the disk, and the end.
                        let step = (total / 10).max(1);
                        let tenth = done / step;
                        if last.get(disk) != Some(&tenth) {
                            last.insert(disk.to_string(), tenth);
                            e.emit(What::InstantCopy {
                                machine: name.clone(),
                                disk: disk.to_string(),
                                done,
                                total,
                            });
                        }
                        !e.cancel.is_cancelled()
                    },
                )
                .map_err(|e| e.to_string())
            },
            |_| {
                format!(
                    "copied to {} while the VM ran; it no longer reads from the vault",
                    targets
                        .values()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        )?;
        // The VM runs on tracked wrappers whose bitmaps count its writes
        // since it booted on the point, as a failover's do.
        let vault = e
            .vaults
            .get(&chosen.vault)
            .ok_or_else(|| format!("{} was not opened", chosen.vault))?;
        for (disk, target) in &targets {
            let size = chosen.point.disks.get(disk).map_or(0, |x| x.size);
            crate::replication::vm::record_restored(
                &e.ws.cache_dir(),
                &vault.id,
                &name,
                disk,
                &chosen.point.id,
                size,
                &standby_provider_qemu::wrapper::path(target),
            )
            .map_err(|e| format!("record disk {disk}'s tracking: {e}"))?;
        }
        // The VM no longer reads the exports: end them, and leave none of
        // their files.
        for d in &m.disks {
            let files = export::Files::new(&dir, &vm, &d.name);
            if let Some(h) = export::Handle::find(&files) {
                h.stop();
            }
            files.remove();
        }
        // The VM no longer needs the vault: a hold left behind only keeps
        // the point longer, so failing to let go is not the run's failure.
        let who = holder(vault.owner().as_deref(), &e.plan.addr, &name, e.mode);
        if let Err(err) = crate::vault::holds::release(vault, &who) {
            tracing::warn!("{name}: the hold {who} on its point stays: {err}");
        }
        let run_id = e.run_id.clone();
        e.recorder
            .update(|doc| {
                let r = doc
                    .run_mut(&run_id)
                    .ok_or("the run is no longer in the state")?;
                if let Some(mr) = r.machines.get_mut(&name) {
                    for (k, v) in &targets {
                        mr.disks.insert(k.clone(), v.display().to_string());
                    }
                }
                Ok(())
            })
            .map_err(|e| format!("record {name}'s disks in the state: {e}"))?;
        Ok(())
    }
}
