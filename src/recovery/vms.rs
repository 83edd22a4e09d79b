//! Machines as VMs at a `qemu` recovery site: the settings the `qemu`
//! site provider (`standby_provider_qemu::site`) runs each machine with,
//! from its `vm` block (memory, CPUs, kernel/initrd/append or disk boot,
//! disks and their node names), and the evidence a run collects of them.

use crate::model::{Address, Config};
use standby_provider_qemu::site::{QemuSite, VmSettings};
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
            },
        );
    }
    QemuSite::new(machines)
}
