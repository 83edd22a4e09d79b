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
    Some(Home { qmp, agent })
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

/// Failback writes the point's raw blocks onto each machine's own disk
/// (`replication::restore_onto`); onto a qcow2 image that would destroy
/// it. Until failback of VMs through their images exists (issue 15 item
/// 5), a plan holding a VM with a qcow2 disk is refused before anything
/// is written.
pub fn refuse_qcow2_failback(
    cfg: &Config,
    plan: &crate::model::RecoveryPlan,
) -> Result<(), super::RecoveryError> {
    let mut found = Vec::new();
    for g in &plan.groups {
        for addr in &g.machines {
            let Some(vm) = cfg.machines.get(addr).and_then(|m| m.vm.as_ref()) else {
                continue;
            };
            for d in vm.disks.iter().filter(|d| d.format == "qcow2") {
                found.push(format!("{addr} disk {}", d.name));
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(super::RecoveryError::Refused {
        message: format!(
            "{} cannot fail back yet: its VMs' home disks are qcow2 images ({}), and failback writes raw blocks onto the disk it brings back",
            plan.addr,
            found.join(", ")
        ),
        help: "keep the VMs at the DR site, or bring a disk home by hand: `standby restore POINT --disk DISK --to IMAGE.raw`, then `qemu-img convert -O qcow2 IMAGE.raw HOME.qcow2` with the home VM stopped".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// plans/qemu as shipped: its VMs' qcow2 disks are named in the
    /// refusal of a failback.
    #[test]
    fn plans_qemu_refuses_a_failback_onto_qcow2_images() {
        let dir = tempfile::tempdir().unwrap();
        let plans = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/qemu");
        for e in std::fs::read_dir(&plans).unwrap().flatten() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
        let cfg = match crate::config::load(dir.path(), &Default::default()) {
            Ok(l) => l.config,
            Err(d) => panic!("{}", d.render(false)),
        };
        let plan = cfg.recovery_plans.values().next().unwrap();
        let err = refuse_qcow2_failback(&cfg, plan).unwrap_err().to_string();
        assert!(err.contains("machine.db disk data"), "{err}");
        assert!(err.contains("machine.app disk system"), "{err}");
    }
}
