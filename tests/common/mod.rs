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
        .env_remove("STANDBY_TEST_AFTER_MATERIALIZE")
        .stdin(Stdio::null());
    c
}

/// The local state document of the configuration in `dir`.
pub fn state(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(".standby/state.json")).unwrap()).unwrap()
}

/// The quickstart database's application (scripts/db-writer.sh), taking
/// orders until stopped; stopped when dropped.
pub struct Writer {
    child: std::process::Child,
    control: PathBuf,
}

impl Writer {
    /// Start it in configuration `root` on `db` (relative to `root`).
    pub fn start(root: &Path, db: &str) -> Writer {
        let control = root.join("run/db-writer");
        let _ = std::fs::remove_dir_all(&control);
        let child = Command::new("sh")
            .args(["scripts/db-writer.sh", db])
            .current_dir(root)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Writer { child, control }
    }

    /// Rows committed so far (the writer's own count after each commit).
    pub fn committed(&self) -> u64 {
        std::fs::read_to_string(self.control.join("committed"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Wait until `n` more rows are committed.
    pub fn wait_for(&self, n: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let wait = |goal: u64| {
            while self.committed() < goal {
                assert!(std::time::Instant::now() < deadline, "the writer stalled");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        // Counting starts at its first commit (the table's size then).
        wait(1);
        wait(self.committed() + n);
    }

    /// The row count at each freeze (scripts/db-freeze.sh), oldest first.
    pub fn freezes(&self) -> Vec<u64> {
        std::fs::read_to_string(self.control.join("freezes"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    }

    /// Wait for the writer to exit (after `stop`, or a shutdown hook).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    pub fn stop(&mut self) {
        std::fs::write(self.control.join("stop"), "").unwrap();
        assert!(self.wait().success());
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = std::fs::write(self.control.join("stop"), "");
            let _ = self.child.wait();
        }
    }
}

/// Rows in the sample database's `orders` table.
pub fn orders(db: &Path) -> u64 {
    standby::samples::sqlite_orders(db).unwrap()
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

/// Change a disk in a few scattered 4 KiB blocks, as a running machine would.
pub fn churn(path: &Path, rng: &mut Rng) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let blocks = f.metadata().unwrap().len() / 4096;
    for _ in 0..(1 + rng.below(40)) {
        let block: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        f.write_all_at(&block, rng.below(blocks) * 4096).unwrap();
    }
}

/// (point id, machine) of every listed point, from `points --json` output.
pub fn point_ids(json: &str) -> Vec<(String, String)> {
    let v: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
    v.iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["machine"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The quickstart's disks and what each point must restore to, for tests
/// that take points in rounds while faults strike.
pub struct Rounds {
    /// (machine, disk, path) of every quickstart disk.
    pub disks: Vec<(String, String, PathBuf)>,
    refs: PathBuf,
    /// Copies of the disks as they were this round, by machine.
    now: std::collections::BTreeMap<String, Vec<(String, PathBuf)>>,
    /// Point id -> (disk, copy of the disk when the point was taken).
    pub expected: std::collections::BTreeMap<String, Vec<(String, PathBuf)>>,
}

impl Rounds {
    pub fn new(root: &Path, refs: &Path) -> Rounds {
        std::fs::create_dir_all(refs).unwrap();
        let onprem = root.join("sites/onprem");
        let disks = [
            ("machine.db", "system", "db/system.img"),
            ("machine.db", "data", "db/data.sqlite"),
            ("machine.web", "system", "web/system.img"),
        ]
        .iter()
        .map(|(m, d, p)| (m.to_string(), d.to_string(), onprem.join(p)))
        .collect();
        Rounds {
            disks,
            refs: refs.to_path_buf(),
            now: Default::default(),
            expected: Default::default(),
        }
    }

    /// Change every disk (unless `rng` is None) and copy them as they now are.
    pub fn next(&mut self, round: u64, rng: Option<&mut Rng>) {
        if let Some(rng) = rng {
            for (_, _, p) in &self.disks {
                churn(p, rng);
            }
        }
        self.now.clear();
        for (m, disk, p) in &self.disks {
            let copy = self.refs.join(format!("{round}-{m}-{disk}"));
            std::fs::copy(p, &copy).unwrap();
            self.now
                .entry(m.clone())
                .or_default()
                .push((disk.clone(), copy));
        }
    }

    /// Points listed now that were not before were taken this round.
    pub fn taken(&mut self, before: &[(String, String)], after: &[(String, String)]) {
        for (id, m) in after {
            if !before.contains(&(id.clone(), m.clone())) {
                self.expected.insert(id.clone(), self.now[m].clone());
            }
        }
    }

    /// Restore every expected point's disks through `restore(id, disk, to)`
    /// and compare them with the copies.
    pub fn check_all(&self, scratch: &Path, restore: impl Fn(&str, &str, &Path)) {
        for (id, disks) in &self.expected {
            for (disk, reference) in disks {
                let to = scratch.join("restored");
                restore(id, disk, &to);
                assert!(
                    std::fs::read(&to).unwrap() == std::fs::read(reference).unwrap(),
                    "point {id} disk {disk} does not restore to the disk as it was"
                );
                // restore replaces an existing file only with --force.
                std::fs::remove_file(&to).unwrap();
            }
        }
    }
}
