//! Machines as VMs at a `qemu` recovery site: the settings the `qemu`
//! site provider (`standby_provider_qemu::site`) runs each machine with,
//! from its `vm` block (memory, CPUs, kernel/initrd/append or disk boot,
//! disks and their node names), and the evidence a run collects of them.

use crate::model::{Address, Config};
use standby_provider_qemu::site::{Home, QemuSite, VmSettings};
use standby_provider_qemu::vm::Boot;
use std::collections::BTreeMap;
use std::path::Path;

/// The `qemu` provider of `site`, knowing every machine that has a `vm`
/// block, with its protection's `target_vm` settings where the protection
/// targets `site`; `root` is the absolute configuration directory (kernel
/// and initrd paths resolve against it).
pub fn qemu_site(cfg: &Config, root: &Path, site: &Address) -> QemuSite {
    let mut machines = BTreeMap::new();
    for m in cfg.machines.values() {
        let Some(vm) = &m.vm else { continue };
        let over = cfg
            .protections
            .values()
            .find(|p| p.machine == m.addr && &p.target == site)
            .and_then(|p| p.target_vm.clone())
            .unwrap_or_default();
        // Back home after a failback, the VM keeps the ports its target
        // forwarded, so the plan's http/tcp checks reach it as they did
        // at the target (memory and CPUs are its own again).
        let home_forwards = cfg
            .protections
            .values()
            .filter(|p| p.machine == m.addr && &m.site == site)
            .filter_map(|p| p.target_vm.as_ref())
            .flat_map(|t| t.forwards.clone())
            .collect::<Vec<_>>();
        let boot = match &vm.kernel {
            Some(k) => Boot::Kernel {
                kernel: root.join(k),
                initrd: vm.initrd.as_ref().map(|i| root.join(i)),
                append: vm.append.clone().unwrap_or_default(),
            },
            None => Boot::Disk,
        };
        let disks = m
            .disks
            .iter()
            .map(|d| {
                let node = vm
                    .disks
                    .iter()
                    .find(|v| v.name == d.name)
                    .map_or_else(|| d.name.clone(), |v| v.node_name.clone());
                (d.name.clone(), node)
            })
            .collect();
        machines.insert(
            m.addr.to_string(),
            VmSettings {
                vm_name: crate::replication::vm::vm_name(&m.addr.to_string()),
                memory_mib: over.memory_mib.unwrap_or(vm.memory_mib),
                cpus: over.cpus.unwrap_or(vm.cpus),
                boot,
                disks,
                forwards: over
                    .forwards
                    .iter()
                    .chain(&home_forwards)
                    .map(|f| standby_provider_qemu::vm::Forward {
                        host: f.host_port,
                        guest: f.guest_port,
                    })
                    .collect(),
                home: (&m.site == site)
                    .then(|| home(cfg, root, site, m, vm))
                    .flatten(),
            },
        );
    }
    QemuSite::new(machines)
}

/// Where `m`'s running VM is reached at its own site `site`: its `vm`
/// block's sockets (relative to the site root), else the sockets of the
/// VM standby runs there (`ROOT/NAME.qmp`, `ROOT/NAME.qga`), as
/// replication reaches it.
fn home(
    cfg: &Config,
    root: &Path,
    site: &Address,
    m: &crate::model::Machine,
    vm: &crate::model::Vm,
) -> Option<Home> {
    let site_root = root.join(cfg.sites.get(site)?.root.as_ref()?);
    let (qmp, agent) = crate::replication::vm::endpoints(m, vm, &site_root);
    let raw = vm
        .disks
        .iter()
        .filter(|d| d.format == "raw")
        .map(|d| d.name.clone())
        .collect();
    Some(Home { qmp, agent, raw })
}

/// After a planned failover's final points: quit the QEMU of every source
/// VM of the plan that its stop left shut down (`QemuSite::stop` keeps it
/// so the final point can be read through changed-block tracking).
pub(crate) fn release_sources(e: &super::engine::Engine<'_>) -> Result<(), String> {
    for g in &e.plan.groups {
        for addr in &g.machines {
            let Some(m) = e.cfg.machines.get(addr) else {
                continue;
            };
            let Some(vm) = &m.vm else { continue };
            let Some(h) = home(e.cfg, &e.root, &m.site, m, vm) else {
                continue;
            };
            standby_provider_qemu::site::quit_at_home(&h).map_err(|err| {
                format!("{addr}: ending its source VM after the final point: {err}")
            })?;
        }
    }
    Ok(())
}

/// Failback boots each VM at its own site as standby runs VMs there (run
/// files in the site root); a VM that another manager runs (its `vm`
/// block names `qmp`) cannot be booted by standby, so a plan holding one
/// is refused before anything is done.
pub fn refuse_unmanaged_failback(
    cfg: &Config,
    plan: &crate::model::RecoveryPlan,
) -> Result<(), super::RecoveryError> {
    let found: Vec<String> = plan
        .groups
        .iter()
        .flat_map(|g| &g.machines)
        .filter(|a| {
            cfg.machines
                .get(a)
                .and_then(|m| m.vm.as_ref())
                .is_some_and(|v| v.qmp.is_some())
        })
        .map(ToString::to_string)
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(super::RecoveryError::Refused {
        message: format!(
            "{} cannot fail back: standby does not run the home VMs of {} (their vm blocks name a qmp socket), so it cannot write their images and boot them",
            plan.addr,
            found.join(", ")
        ),
        help: "keep the VMs at the DR site, or bring a disk home by hand: `standby restore POINT --disk DISK --to IMAGE.raw`, then `qemu-img convert -O qcow2 IMAGE.raw HOME.qcow2` with the home VM stopped".into(),
    })
}

/// The qemu provider of the DR site each VM of `run` runs at, with the
/// VM's machine address; machines elsewhere are left out.
fn dr_vms<'a>(
    e: &super::engine::Engine<'_>,
    run: &'a crate::state::RunRecord,
) -> Vec<(QemuSite, standby_provider_core::Run, &'a str)> {
    let mut out = Vec::new();
    for (m, placed) in &run.machines {
        let Ok(site) = placed.site.parse::<Address>() else {
            continue;
        };
        let is_vm = m
            .parse::<Address>()
            .ok()
            .and_then(|a| e.cfg.machines.get(&a))
            .is_some_and(|x| x.vm.is_some());
        if !is_vm || e.cfg.sites.get(&site).is_none_or(|s| s.provider != "qemu") {
            continue;
        }
        out.push((
            qemu_site(e.cfg, &e.root, &site),
            e.run_at(&site),
            m.as_str(),
        ));
    }
    out
}

/// Before failback's final points: each VM at the DR site shuts its guest
/// down with QEMU kept (paused), so the final point is read through its
/// dirty bitmaps.
pub(crate) fn pause_replicas(
    e: &super::engine::Engine<'_>,
    run: &crate::state::RunRecord,
) -> Result<(), String> {
    for (site, r, m) in dr_vms(e, run) {
        site.pause_for_final(&r, m)
            .map_err(|err| format!("{m}: shutting down its VM at {}: {err}", r.site))?;
    }
    Ok(())
}

/// After failback's final points: the DR VMs [`pause_replicas`] left shut
/// down are quit (their bitmaps stored).
pub(crate) fn quit_replicas(
    e: &super::engine::Engine<'_>,
    run: &crate::state::RunRecord,
) -> Result<(), String> {
    for (site, r, m) in dr_vms(e, run) {
        site.quit_paused(&r, m)
            .map_err(|err| format!("{m}: ending its VM at {}: {err}", r.site))?;
    }
    Ok(())
}

/// Whether failback writes `m`'s disks through a VM image export: a VM
/// brought home to a qemu site.
pub(crate) fn home_vm(cfg: &Config, m: &crate::model::Machine) -> bool {
    m.vm.is_some() && cfg.sites.get(&m.site).is_some_and(|s| s.provider == "qemu")
}

/// One disk written home by [`write_home_disk`].
pub(crate) struct WrittenHome {
    /// `full`: the image was missing and was made afresh.
    pub resynced: crate::replication::Resynced,
    /// Why the home disk was compared block by block instead of trusting
    /// its tracking (None: only the blocks that differ between the point
    /// it was failed over from and the final point were written).
    pub fallback: Option<String>,
}

/// Failback of one disk of a VM onto its own qcow2 `image` at home: the
/// image served writable over NBD (`qemu-storage-daemon`, files under
/// `ROOT/.standby-failback/`); if its record says its bitmap counts from
/// `from` (the point it was failed over from) and the bitmap is
/// consistent and empty, the blocks written are those whose stored
/// content differs between `from` and `point` (the home disk is not
/// read); otherwise the image is read and compared block by block (the
/// reason returned). Then the record says the bitmap counts from `point`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_home_disk(
    vault: &crate::vault::Vault,
    point: &crate::vault::manifest::Manifest,
    from: Option<&crate::vault::manifest::Manifest>,
    machine: &crate::model::Machine,
    disk: &str,
    image: &Path,
    site_root: &Path,
    cache: &Path,
) -> Result<WrittenHome, String> {
    use crate::replication::{Basis, Progress, vm as rvm};
    use standby_provider_qemu::writeback::Export;
    let addr = machine.addr.to_string();
    let node = machine
        .vm
        .as_ref()
        .and_then(|v| v.disks.iter().find(|d| d.name == disk))
        .map_or_else(|| disk.to_string(), |d| d.node_name.clone());
    let name = format!("{}-{disk}", rvm::vm_name(&addr));
    let dir = site_root.join(".standby-failback");
    // A home image that is gone: an empty one of the point's size, which
    // the comparison below fills whole.
    let missing = !image.exists();
    if missing {
        let size = point
            .disks
            .get(disk)
            .map(|m| m.size)
            .ok_or_else(|| format!("the final point has no disk {disk}"))?;
        if let Some(p) = image.parent() {
            std::fs::create_dir_all(p).map_err(|e| format!("create {}: {e}", p.display()))?;
        }
        let out = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(image)
            .arg(size.to_string())
            .output()
            .map_err(|e| format!("running qemu-img: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "create the missing disk {disk} ({}): {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let export = Export::open(image, &node, &dir, &name)
        .map_err(|e| format!("open disk {disk} ({}) for writing: {e}", image.display()))?;
    let same = |a: &str| {
        std::fs::canonicalize(a).ok().is_some()
            && std::fs::canonicalize(a).ok() == std::fs::canonicalize(image).ok()
    };
    // The record the failover kept; or, when the VM at DR was never
    // tracked (`--instant`), the home record itself, still in place.
    let kept = rvm::record_before(cache, &vault.id, &addr, disk)
        .or_else(|| rvm::record_now(cache, &vault.id, &addr, disk).filter(|r| same(&r.image)));
    let fallback = match (from, kept) {
        _ if missing => Some("the home image was missing: made empty, then written whole".to_string()),
        (None, _) => Some("no point recorded for the failover of this machine".to_string()),
        (_, None) => Some(
            "no record of the point the home disk's bitmap counts from (the failover did not keep one, or the cache was cleared)"
                .to_string(),
        ),
        (Some(f), Some(r)) if r.point != f.id.hex() => Some(format!(
            "the home disk's bitmap counts from point {}, not from {} (the point it was failed over from)",
            &r.point[..r.point.len().min(12)],
            f.id.short()
        )),
        (Some(_), Some(r)) if !same(&r.image) => Some(format!(
            "the home disk's record names {}, not {}",
            r.image,
            image.display()
        )),
        _ => match export.untrusted() {
            Err(e) => Some(format!("its bitmaps cannot be read: {e}")),
            Ok(why) => why,
        },
    };
    // Trusted tracking with writes since F (an earlier attempt's, or the
    // VM ran): only the dirty extents are read and compared.
    let dirty: u64 = match &fallback {
        None => export
            .bitmaps()
            .map_err(|e| format!("read disk {disk}'s bitmaps: {e}"))?
            .iter()
            .map(|(_, b)| b.count)
            .sum(),
        Some(_) => 0,
    };
    let ctx = export.dirty_context();
    let fallback = match (&fallback, dirty, &ctx) {
        (None, d, None) if d > 0 => Some(format!(
            "the home disk has {} dirty in more than one bitmap",
            crate::human::size(d)
        )),
        _ => fallback,
    };
    let r = export
        .connect_with(&ctx.iter().map(String::as_str).collect::<Vec<_>>())
        .map_err(|e| e.to_string())
        .and_then(|mut c| {
            let extents = match (&ctx, dirty) {
                (Some(ctx), d) if d > 0 => c
                    .block_status(ctx, 0, c.size)
                    .map_err(|e| format!("read disk {disk}'s dirty extents: {e}"))?
                    .into_iter()
                    .filter(|x| x.flags & standby_provider_qemu::nbd::STATE_DIRTY != 0)
                    .map(|x| (x.offset, x.length))
                    .collect(),
                _ => Vec::new(),
            };
            let basis = match (&fallback, from) {
                (None, Some(f)) if extents.is_empty() => Basis::Unchanged(f),
                (None, Some(f)) => Basis::Dirty(f, &extents),
                _ => Basis::Compare,
            };
            let r = crate::replication::restore_onto_export(
                vault,
                point,
                disk,
                basis,
                &mut c,
                cache,
                &Progress::default(),
            )
            .map_err(|e| e.to_string());
            let _ = c.disconnect();
            r
        });
    let closed = export.close();
    let resynced = r.map_err(|e| format!("write changed blocks onto disk {disk}: {e}"))?;
    closed.map_err(|e| format!("close the export of disk {disk}: {e}"))?;
    rvm::record_home(
        cache,
        &vault.id,
        &addr,
        disk,
        &point.id,
        resynced.size,
        image,
    )
    .map_err(|e| format!("record what disk {disk}'s bitmap counts from: {e}"))?;
    Ok(WrittenHome {
        resynced: crate::replication::Resynced {
            full: missing,
            ..resynced
        },
        fallback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(edit: impl Fn(String) -> String) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let plans = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/qemu");
        for e in std::fs::read_dir(&plans).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap();
            std::fs::write(dir.path().join(e.file_name()), edit(text)).unwrap();
        }
        match crate::config::load(dir.path(), &Default::default()) {
            Ok(l) => l.config,
            Err(d) => panic!("{}", d.render(false)),
        }
    }

    /// plans/qemu as shipped fails back (standby runs its VMs at home);
    /// with the application VM run by another manager (`qmp` given), the
    /// failback is refused naming it.
    #[test]
    fn failback_refuses_only_vms_standby_does_not_run_at_home() {
        let cfg = load(|t| t);
        let plan = cfg.recovery_plans.values().next().unwrap();
        assert!(refuse_unmanaged_failback(&cfg, plan).is_ok());
        let cfg = load(|t| {
            t.replacen(
                "    memory = \"256M\"\n",
                "    memory = \"256M\"\n    qmp    = \"/run/qemu/app.qmp\"\n",
                1,
            )
        });
        let plan = cfg.recovery_plans.values().next().unwrap();
        let err = refuse_unmanaged_failback(&cfg, plan)
            .unwrap_err()
            .to_string();
        assert!(err.contains("machine.app"), "{err}");
        assert!(!err.contains("machine.db"), "{err}");
    }
}
