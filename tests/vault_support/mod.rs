//! Shared helpers for the vault and replication tests: backends, real disk
//! images, and byte-for-byte comparison.
#![allow(dead_code)]

use standby::model::KeySource;
use standby::replication::{self, Options, Progress, Target};
use standby::vault::{Manifest, Vault};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const SERVICES_HINT: &str = "start the services with .ci/services.sh (bash .ci/run does)";

/// A fresh, unique vault URL on the named backend.
pub fn backend_url(backend: &str, dir: &Path) -> String {
    let unique = hex::encode(rand::random::<[u8; 8]>());
    match backend {
        "file" => format!("file://{}/vault-{unique}", dir.display()),
        "az" | "s3" => {
            let var = if backend == "az" {
                "STANDBY_TEST_AZ_URL"
            } else {
                "STANDBY_TEST_S3_URL"
            };
            let base =
                std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: {SERVICES_HINT}"));
            format!("{}/test-{unique}", base.trim_end_matches('/'))
        }
        other => panic!("unknown backend {other}"),
    }
}

/// A new vault with a key file in `dir`.
pub fn new_vault(url: &str, dir: &Path) -> (Vault, KeySource) {
    let key = KeySource::File(dir.join("keys").join("vault.key"));
    let out = Vault::init(url, &key, dir).expect("init vault");
    (out.vault, key)
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An ext4 image of `size` (e.g. "64M") holding a few files.
pub fn make_ext4(dir: &Path, name: &str, size: &str) -> PathBuf {
    let content = dir.join(format!("{name}-content"));
    std::fs::create_dir_all(content.join("etc")).unwrap();
    std::fs::write(content.join("etc/hostname"), format!("{name}\n")).unwrap();
    let blob: Vec<u8> = (0..3_000_000).map(|_| rand::random::<u8>()).collect();
    std::fs::write(content.join("random.bin"), blob).unwrap();
    std::fs::write(
        content.join("log.txt"),
        "a line of log text\n".repeat(50_000),
    )
    .unwrap();
    let img = dir.join(format!("{name}.img"));
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&content)
        .arg(&img)
        .arg(size));
    img
}

/// Write `text` as file `path` inside an ext4 image with debugfs.
pub fn ext4_write(img: &Path, dir: &Path, path: &str, text: &str) {
    let src = dir.join("debugfs-src");
    std::fs::write(&src, text).unwrap();
    let _ = Command::new("debugfs")
        .args(["-w", "-R", &format!("rm {path}")])
        .arg(img)
        .output();
    run(Command::new("debugfs")
        .args(["-w", "-R", &format!("write {} {path}", src.display())])
        .arg(img));
}

pub fn e2fsck_clean(img: &Path) {
    run(Command::new("e2fsck").args(["-fn"]).arg(img));
}

/// Assert two files are byte-identical (cmp).
pub fn assert_same(a: &Path, b: &Path) {
    let out = Command::new("cmp").arg(a).arg(b).output().unwrap();
    assert!(
        out.status.success(),
        "{} and {} differ: {}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A copy of `src` as it is now (the capture-time reference).
pub fn snapshot(src: &Path, dst: &Path) -> PathBuf {
    std::fs::copy(src, dst).unwrap();
    dst.to_path_buf()
}

pub fn target(machine: &str, disks: &[(&str, &Path)]) -> Target {
    Target {
        protection: format!("protection.{machine}"),
        machine: format!("machine.{machine}"),
        group: None,
        disks: disks
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_path_buf()))
            .collect(),
        quiesce: None,
        app: false,
        level: 1,
        site: None,
        vm: None,
    }
}

pub fn take(vault: &Vault, cache: &Path, targets: &[Target]) -> Vec<Manifest> {
    replication::take_points(vault, targets, &Options::new(cache), &Progress::default())
        .expect("take points")
}

pub fn restore(vault: &Vault, point: &Manifest, disk: &str, to: &Path) {
    replication::restore_disk(vault, point, disk, to, &Progress::default()).expect("restore");
}

/// Allocated bytes of a file (to check sparseness).
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}
