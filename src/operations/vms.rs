//! Starting the VM of a qemu machine from its `vm` block: what quickstart
//! and tests do to bring up a protected VM (recovery boots VMs through the
//! qemu site provider instead).

use crate::replication::vm::vm_name;

/// Why a machine's VM did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0} has no vm block (not at a qemu site)")]
    NoVm(String),
    #[error("{0}: its site has no root")]
    NoRoot(String),
    #[error(transparent)]
    Qemu(#[from] standby_provider_qemu::Error),
}

/// The VM standby runs for a qemu machine: where its files are and how
/// it was started.
#[derive(Debug, Clone)]
pub struct Running {
    pub vm: standby_provider_qemu::vm::Vm,
    /// The accelerator and why it was chosen (KVM probe, TCG fallback).
    pub accel: String,
}

/// Starts the VM of `machine` (a qemu machine) from its `vm` block, with
/// its run files in the site root (`NAME.qmp`, `NAME.qga`,
/// `NAME.serial.log`, `NAME.pid`). Kernel and initrd resolve against the
/// configuration root, disks against the site root. Errors: not a qemu
/// machine, a VM of that name already running, QEMU's own error.
pub fn start(
    cfg: &crate::model::Config,
    machine: &crate::model::Machine,
) -> Result<Running, StartError> {
    use standby_provider_qemu::{accel, vm};
    let spec = machine
        .vm
        .as_ref()
        .ok_or_else(|| StartError::NoVm(machine.addr.to_string()))?;
    let site_root = cfg
        .sites
        .get(&machine.site)
        .and_then(|s| s.root.clone())
        .map(|r| cfg.root.join(r))
        .ok_or_else(|| StartError::NoRoot(machine.addr.to_string()))?;
    let site_root = std::path::absolute(&site_root).unwrap_or(site_root);
    let cfg_root = std::path::absolute(&cfg.root).unwrap_or_else(|_| cfg.root.clone());
    let kernel = spec.kernel.as_ref().map(|k| cfg_root.join(k));
    let choice = match &kernel {
        Some(k) => accel::probe(k),
        None => accel::Choice {
            accel: accel::Accel::Tcg,
            reason: "firmware boot: no kernel to probe KVM with".into(),
        },
    };
    let boot = match kernel {
        Some(kernel) => vm::Boot::Kernel {
            kernel,
            initrd: spec.initrd.as_ref().map(|i| cfg_root.join(i)),
            append: spec.append.clone().unwrap_or_default(),
        },
        None => vm::Boot::Disk,
    };
    let disks = machine
        .disks
        .iter()
        .map(|d| {
            let v = spec.disks.iter().find(|v| v.name == d.name);
            vm::DiskSpec {
                node_name: v.map_or_else(|| d.name.clone(), |v| v.node_name.clone()),
                path: site_root.join(&d.path),
                format: if v.is_some_and(|v| v.format == "raw") {
                    vm::DiskFormat::Raw
                } else {
                    vm::DiskFormat::Qcow2
                },
                read_only: false,
            }
        })
        .collect();
    let vs = vm::VmSpec {
        name: vm_name(&machine.addr.to_string()),
        memory_mib: spec.memory_mib,
        cpus: spec.cpus,
        boot,
        disks,
        accel: choice.accel,
        remote_qmp: None,
    };
    let started = vm::Vm::start(&vs, &site_root)?;
    Ok(Running {
        vm: started,
        accel: format!("{} ({})", choice.accel.as_str(), choice.reason),
    })
}
