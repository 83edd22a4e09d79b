//! Which accelerator runs the VMs: KVM when it works, else TCG.
//!
//! On some machines `/dev/kvm` opens but guests hang (nested virtualisation
//! without vmx/svm exposed), so opening the device proves nothing. The probe
//! first checks the CPU flags, then boots `kernel` with no root file system
//! under KVM: a working KVM reaches the kernel's panic (and QEMU exits under
//! `-no-reboot`) within seconds; a hanging one is killed at the deadline.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The accelerator a VM runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The `-accel` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The probe's verdict and why.
#[derive(Debug, Clone)]
pub struct Choice {
    pub accel: Accel,
    pub reason: String,
}

/// How long the KVM boot probe may take before KVM counts as hanging.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Probes KVM (see the module doc) and falls back to TCG. `kernel` is a
/// bootable Linux kernel (the test guest's). `STANDBY_QEMU_ACCEL=tcg|kvm`
/// skips the probe.
pub fn probe(kernel: &Path) -> Choice {
    match std::env::var("STANDBY_QEMU_ACCEL").as_deref() {
        Ok("tcg") => {
            return Choice {
                accel: Accel::Tcg,
                reason: "STANDBY_QEMU_ACCEL=tcg".into(),
            };
        }
        Ok("kvm") => {
            return Choice {
                accel: Accel::Kvm,
                reason: "STANDBY_QEMU_ACCEL=kvm".into(),
            };
        }
        _ => {}
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return tcg("/dev/kvm cannot be opened");
    }
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let virt = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !virt {
        return tcg(
            "/dev/kvm opens but the CPU shows no vmx/svm flag (guests hang under KVM here)",
        );
    }
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ])
        .args(["-m", "128", "-no-reboot", "-kernel"])
        .arg(kernel)
        .args(["-append", "panic=-1 console=ttyS0", "-serial", "null"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return tcg(&format!("qemu-system-x86_64 -accel kvm did not start: {e}")),
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => {
                return Choice {
                    accel: Accel::Kvm,
                    reason: format!(
                        "a KVM probe boot reached the kernel in {:.1} s",
                        start.elapsed().as_secs_f64()
                    ),
                };
            }
            Ok(None) if start.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return tcg(&format!(
                    "a KVM probe boot hung for {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
        }
    }
}

fn tcg(why: &str) -> Choice {
    Choice {
        accel: Accel::Tcg,
        reason: format!("TCG: {why}"),
    }
}
