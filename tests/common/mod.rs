//! Shared test helpers: where the test services are and unique names.
#![allow(dead_code)]

/// The URL of a service the suite needs, from `var` (`STANDBY_TEST_AZ_URL`
/// or `STANDBY_TEST_S3_URL`, written by `.ci/services.sh start`).
pub fn service_url(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: start the services with .ci/services.sh (bash .ci/run does), \
             then `source .ci/.cache/services.env`"
        ),
    }
}

/// A name no other test (or earlier run) uses: `tag-<uuid>`.
pub fn unique(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Copy a directory tree (plain files and directories).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// The real binary, run in configuration directory `dir`, no terminal.
pub fn standby(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_standby"));
    c.arg("-C")
        .arg(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// Both output streams, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run a command that must succeed; its stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = standby(dir).args(args).output().unwrap();
    assert!(o.status.success(), "standby {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A copy of plans/quickstart under `d` with real sample disks (sizes in MiB).
pub fn quickstart(d: &Path, db_mib: u32, web_mib: u32) -> PathBuf {
    let root = d.join("qs");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/quickstart"),
        &root,
    );
    let onprem = root.join("sites/onprem");
    standby::samples::make_ext4(&onprem.join("db/system.img"), "db", db_mib).unwrap();
    standby::samples::make_sqlite(&onprem.join("db/data.sqlite"), 500).unwrap();
    standby::samples::make_ext4(&onprem.join("web/system.img"), "web", web_mib).unwrap();
    root
}

/// The recovery points `standby points --json` lists.
pub fn points(dir: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(dir, &["points", "--json"])).unwrap()
}

/// A tmpfs of a given size mounted at a directory, unmounted when dropped:
/// a real file system that really fills up.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (the fault tests need root): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    /// Give it a new size, keeping its files.
    pub fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fill `dir`'s file system with `name` until a write fails.
pub fn fill(dir: &Path, name: &str) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    for size in [64 * 1024, 4096, 512, 1] {
        let chunk = vec![0x5au8; size];
        while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
    }
    path
}

/// A small deterministic generator for fault injection, so a failing run
/// can be replayed: seeded from `STANDBY_SEED` when set, else at random
/// (the seed is printed).
pub struct Rng(pub u64);

impl Rng {
    pub fn seeded(what: &str) -> Rng {
        let seed = std::env::var("STANDBY_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0)
            | 1;
        println!("{what}: STANDBY_SEED={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A count from the environment (the long form of a fault test), else `ci`.
pub fn count_from_env(var: &str, ci: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}
