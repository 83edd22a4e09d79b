//! Shared helpers of the QEMU provider's tests: the tools they need, the
//! cached test guest, the accelerator.
#![allow(dead_code)]

pub mod shared;

use std::process::Command;
use std::sync::OnceLock;

use standby_provider_qemu::accel::{self, Choice};
use standby_provider_qemu::guest::Guest;

/// Fails (never skips) with a message naming `.ci/run` when a tool is absent.
pub fn require_tools() {
    for (tool, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("qemu-nbd", "qemu-utils"),
        ("nbdinfo", "libnbd-bin"),
        ("nbdkit", "nbdkit"),
        ("mke2fs", "e2fsprogs"),
        ("sqlite3", "sqlite3"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is missing: run .ci/run, which installs {pkg} (and the other QEMU test packages)"
        );
    }
}

/// The test guest (built once, cached under target/standby-guest/).
pub fn guest() -> Guest {
    require_tools();
    shared::test_guest()
}

/// The accelerator, probed once per test binary; printed so logs say which ran.
pub fn accel(g: &Guest) -> Choice {
    static CHOICE: OnceLock<Choice> = OnceLock::new();
    let c = CHOICE.get_or_init(|| accel::probe(&g.kernel)).clone();
    eprintln!("accelerator: {:?} ({})", c.accel, c.reason);
    c
}

/// A short temporary directory (unix socket paths must stay under 108 bytes).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sbq")
        .tempdir_in("/tmp")
        .expect("creating a temporary directory")
}

/// Kills the VM when a test ends, passing or failing, so no QEMU outlives it.
pub struct KillOnDrop(pub standby_provider_qemu::vm::Vm);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}
