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
                forwards: Vec::new(),
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
    let name = crate::replication::vm::vm_name(&m.addr.to_string());
    let qmp = vm.qmp.as_ref().map_or_else(
        || site_root.join(format!("{name}.qmp")),
        |p| site_root.join(p),
    );
    let agent = vm.agent.as_ref().map(|p| site_root.join(p)).or_else(|| {
        vm.qmp
            .is_none()
            .then(|| site_root.join(format!("{name}.qga")))
    });
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
