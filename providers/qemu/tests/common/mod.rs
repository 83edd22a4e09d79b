//! Shared helpers of the QEMU provider's tests: the tools they need, the
//! cached test guest, the accelerator.
#![allow(dead_code)]

pub mod pki;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use standby_provider_qemu::accel::{self, Choice};
use standby_provider_qemu::guest::{self, Guest};

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

/// The workspace's target directory (where the guest is cached).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The test guest (built once, cached under target/standby-guest/).
pub fn guest() -> Guest {
    require_tools();
    guest::ensure(&target_dir().join("standby-guest")).unwrap_or_else(|e| {
        panic!("building the test guest: {e} (run .ci/run to install its packages)")
    })
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

/// A restored database disk image passes `e2fsck -fn` and
/// `PRAGMA integrity_check`, and its order count equals the last count the
/// guest's freeze hook recorded in it (`/freezes.log`). Returns the count.
pub fn check_database_image(img: &Path) -> u64 {
    let fsck = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let dir = tempdir();
    for name in ["orders.db", "orders.db-wal", "freezes.log"] {
        let out = Command::new("debugfs")
            .args([
                "-R",
                &format!("dump /{name} {}", dir.path().join(name).display()),
            ])
            .arg(img)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let db = dir.path().join("orders.db");
    let q = |sql: &str| {
        let o = Command::new("sqlite3").arg(&db).arg(sql).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(q("PRAGMA integrity_check"), "ok");
    let count: u64 = q("SELECT count(*) FROM orders").parse().unwrap();
    let log = std::fs::read_to_string(dir.path().join("freezes.log")).unwrap();
    let recorded: u64 = log.lines().last().unwrap().trim().parse().unwrap();
    assert_eq!(
        count, recorded,
        "the point's order count equals the count at its freeze"
    );
    count
}
