//! Failback of QEMU VMs both ways with tracking (issue 15 item 5), through
//! the real binary, on the shared test guest (TCG).
//!
//! - `vms_fail_over_write_at_dr_reprotect_and_fail_back_through_tracking`:
//!   `plans/qemu` with the database's writer running: planned failover,
//!   commit, writes at the DR site (the writer goes on there), reprotect
//!   (read through the DR VM's dirty bitmap), more writes and a `replicate`
//!   (the same), more writes, failback (final
//!   reverse point through the bitmap, changed blocks written onto the
//!   home qcow2 images through NBD, VMs booted at home). No committed order
//!   is lost; the bytes read for the reverse points and the bytes written
//!   home are each at most 2x the bytes that changed (blocks differing
//!   between the restored images); forward protection resumes with a
//!   tracked delta.
//! - `a_failback_killed_at_random_moments_converges`: failback SIGKILLed
//!   after a random number of its output lines, `STANDBY_FAILBACK_KILL_ROUNDS`
//!   times (5; 20 in the long form), rerun each time until one completes;
//!   the home images equal the final point byte for byte before the home
//!   VMs boot (also one deleted before the first failback: made afresh;
//!   a VM a killed run brought up is kept by the rerun, so its images are
//!   the ones copied before the boot of that run), and no QEMU or
//!   qemu-storage-daemon is left but the two VMs.

#[path = "../providers/qemu/tests/common/shared.rs"]
#[allow(dead_code)]
mod shared;

use standby_provider_qemu::vm::Vm;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Both tests boot VMs; one at a time on a small machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(d: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(args)
        .current_dir(d)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn ok(d: &Path, args: &[&str]) -> String {
    let out = run(d, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "standby {args:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Kills every VM of the tour when the test ends, passing or failing.
struct KillVms(Vec<PathBuf>);
impl Drop for KillVms {
    fn drop(&mut self) {
        for d in &self.0 {
            for name in ["app", "db"] {
                if let Ok(Some(v)) = Vm::open(name, d) {
                    let _ = v.kill();
                }
            }
        }
        for p in processes_under(self.0[0].parent().unwrap().parent().unwrap()) {
            if let Some(pid) = p.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                // SAFETY: a process whose command line names the test's own directory.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// QEMU and qemu-storage-daemon processes whose command line names `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    shared::processes_under(dir, |cmd| {
        cmd.starts_with("qemu-system") || cmd.starts_with("qemu-storage-daemon")
    })
}

/// A `quickstart --qemu` tour in `tmp`, its source VMs running with the
/// writer past 40 orders, failed over (planned) to site.dr and committed.
fn failed_over(tmp: &Path) -> PathBuf {
    let d = tmp.join("tour");
    shared::quickstart_qemu(Path::new(env!("CARGO_BIN_EXE_standby")), &d);
    let cfg = standby::config::load(&d, &Default::default())
        .unwrap_or_else(|e| panic!("{}", e.render(false)))
        .config;
    for m in cfg.machines.values() {
        standby::operations::vms::start(&cfg, m).expect("start the source VM");
    }
    wait_orders(&d.join("sites/hv1"), 40);
    ok(&d, &["failover", "planned", "shop"]);
    ok(&d, &["failover", "commit", "shop"]);
    d
}

/// The order count the database VM whose files are in `dir` sees.
fn orders(dir: &Path) -> u64 {
    let v = Vm::open("db", dir).unwrap().expect("the database VM runs");
    let mut a = v.agent(Duration::from_secs(120)).unwrap();
    a.sh(
        "sqlite3 -cmd '.timeout 10000' /data/orders.db 'SELECT count(*) FROM orders'",
        Duration::from_secs(30),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap_or(0)
}

/// Waits until the database VM in `dir` holds more than `n` orders.
fn wait_orders(dir: &Path, n: u64) -> u64 {
    let start = std::time::Instant::now();
    loop {
        let got = orders(dir);
        if got > n {
            return got;
        }
        assert!(
            start.elapsed().as_secs() < 180,
            "the writer is stuck at {got}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn points(d: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(d, &["points", "--json"])).expect("points --json")
}

/// `disk` of `machine` at `point`, restored to a raw file in `dir`.
fn restored(d: &Path, dir: &Path, machine: &str, disk: &str, point: &str) -> PathBuf {
    let to = dir.join(format!("{machine}-{disk}-{}.raw", &point[..12]));
    if !to.exists() {
        ok(
            d,
            &[
                "restore",
                point,
                "--machine",
                machine,
                "--disk",
                disk,
                "--to",
                to.to_str().unwrap(),
            ],
        );
    }
    to
}

/// Bytes of the 4 KiB blocks that differ between two images of one size.
fn changed_bytes(a: &Path, b: &Path) -> u64 {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    assert_eq!(
        fa.metadata().unwrap().len(),
        fb.metadata().unwrap().len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut changed = 0;
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return changed;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        for (x, y) in ba[..n].chunks(4096).zip(bb[..n].chunks(4096)) {
            if x != y {
                changed += x.len() as u64;
            }
        }
    }
}

const DISKS: [(&str, &str); 3] = [("app", "system"), ("db", "system"), ("db", "data")];

#[test]
fn vms_fail_over_write_at_dr_reprotect_and_fail_back_through_tracking() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::Builder::new()
        .prefix("sbfb")
        .tempdir_in("/tmp")
        .unwrap();
    let hv1_dir = tmp.path().join("tour/sites/hv1");
    let dr_dir = tmp.path().join("tour/sites/dr/.standby-vms");
    let _guard = KillVms(vec![hv1_dir.clone(), dr_dir.clone()]);
    let d = failed_over(tmp.path());
    // The DR VMs run on tracked wrappers over the restored raw images.
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(d.join("sites/dr/db/data.qcow2"))
        .arg("-U")
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("\"data-file\""), "{info}");
    assert!(info.contains("standby-"), "{info}");
    let failover_point = points(&d)
        .iter()
        .rev()
        .find(|p| p["machine"] == "machine.db")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The writer goes on at DR; reprotect reads only what it wrote.
    let at_dr = orders(&dr_dir);
    wait_orders(&dr_dir, at_dr + 20);
    let text = ok(&d, &["reprotect", "shop"]);
    eprintln!("{text}");
    let ps0 = points(&d);
    let first_reverse = ps0
        .iter()
        .rev()
        .find(|p| p["machine"] == "machine.db")
        .unwrap();
    for (disk, c) in first_reverse["cbt"]["disks"].as_object().unwrap() {
        assert_eq!(
            c["mode"], "dirty",
            "disk {disk} of the first reverse point: {c}"
        );
    }
    // `replicate` takes the next reverse points the same way.
    wait_orders(&dr_dir, orders(&dr_dir) + 10);
    ok(&d, &["replicate"]);
    let ps = points(&d);
    let next_reverse = ps
        .iter()
        .rev()
        .find(|p| p["machine"] == "machine.db")
        .unwrap();
    assert_eq!(next_reverse["site"], "site.dr", "{next_reverse}");
    assert_ne!(next_reverse["id"], first_reverse["id"]);
    for (disk, c) in next_reverse["cbt"]["disks"].as_object().unwrap() {
        assert_eq!(
            c["mode"], "dirty",
            "disk {disk} of a reverse point of replicate: {c}"
        );
    }
    let more = wait_orders(&dr_dir, orders(&dr_dir) + 10);

    let reports = tmp.path().join("reports");
    let out = ok(
        &d,
        &[
            "failback",
            "shop",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
    );
    eprintln!("{out}");
    // Each home disk got the blocks that differ between the point it left
    // with and the final point, without being read.
    let report = std::fs::read_to_string(reports.join("report.json")).unwrap();
    assert_eq!(report.matches("tracked: ").count(), 3, "{report}");
    // The home database VM runs from its own images, with every order the
    // DR VM had before its final point.
    let v = Vm::open("db", &hv1_dir)
        .unwrap()
        .expect("the home database VM runs");
    let mut agent = v.agent(Duration::from_secs(60)).unwrap();
    let got = agent
        .sh(
            &format!(
                "sqlite3 -cmd '.timeout 10000' /data/orders.db 'SELECT count(*) FROM orders WHERE id <= {more}'"
            ),
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(got.trim(), more.to_string(), "orders lost in the failback");
    drop(agent);
    assert!(
        Vm::open("db", &dr_dir).unwrap().is_none(),
        "the DR VM still runs"
    );

    // Bytes moved each way against the bytes changed.
    let ps = points(&d);
    let scratch = tmp.path().join("images");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut read = 0u64;
    let mut changed_back = 0u64;
    let mut changed_home = 0u64;
    for machine in ["machine.app", "machine.db"] {
        let chain: Vec<&serde_json::Value> =
            ps.iter().filter(|p| p["machine"] == machine).collect();
        let start = chain
            .iter()
            .position(|p| p["site"] == "site.dr")
            .expect("a reverse point");
        let from = chain[start - 1]["id"].as_str().unwrap();
        let last = chain.last().unwrap()["id"].as_str().unwrap();
        let short = machine.trim_start_matches("machine.");
        for (m, disk) in DISKS.iter().filter(|(m, _)| *m == short) {
            let mut prev = restored(&d, &scratch, m, disk, from);
            for p in &chain[start..] {
                let id = p["id"].as_str().unwrap();
                let c = &p["cbt"]["disks"][*disk];
                read += c["read_bytes"].as_u64().unwrap();
                let now = restored(&d, &scratch, m, disk, id);
                changed_back += changed_bytes(&prev, &now);
                prev = now;
            }
            let f = restored(&d, &scratch, m, disk, from);
            let l = restored(&d, &scratch, m, disk, last);
            changed_home += changed_bytes(&f, &l);
        }
    }
    let written = written_home(&out);
    eprintln!(
        "reverse: {read} bytes read over NBD for {changed_back} bytes changed ({:.2}x); home: {written} bytes written for {changed_home} bytes changed ({:.2}x)",
        read as f64 / changed_back.max(1) as f64,
        written as f64 / changed_home.max(1) as f64
    );
    assert!(changed_back > 0 && changed_home > 0);
    assert!(
        read <= 2 * changed_back,
        "read {read} for {changed_back} changed"
    );
    assert!(
        written <= 2 * changed_home,
        "wrote {written} for {changed_home} changed"
    );
    assert!(
        failover_point
            != *ps
                .iter()
                .rev()
                .find(|p| p["machine"] == "machine.db")
                .unwrap()["id"]
                .as_str()
                .unwrap()
    );

    // Forward protection resumes with a tracked delta.
    ok(&d, &["replicate"]);
    let ps = points(&d);
    let next = ps
        .iter()
        .rev()
        .find(|p| p["machine"] == "machine.db")
        .unwrap();
    assert_eq!(next["site"], "site.hv1", "{next}");
    for (disk, c) in next["cbt"]["disks"].as_object().unwrap() {
        assert_eq!(
            c["mode"], "dirty",
            "disk {disk} of the first forward point: {c}"
        );
    }
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// Bytes failback wrote onto the home disks, from its lines
/// "machine.M: disk D at PATH: 1.2 MiB of 1.0 GiB written (N bytes, changed
/// blocks only)" (below 1 KiB the exact count is not printed: 1 KiB).
fn written_home(out: &str) -> u64 {
    out.lines()
        .filter(|l| l.contains("changed blocks only"))
        .map(|l| {
            l.split("written (")
                .nth(1)
                .and_then(|r| r.split(" bytes,").next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1024)
        })
        .sum()
}

/// A random number below `n` (seeded by `STANDBY_TEST_SEED` when set, and
/// printed, so a failing round can be replayed).
fn random_below(state: &mut u64, n: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % n.max(1)
}

/// Runs `standby failback shop`, killing it with SIGKILL once it printed
/// `after.0` lines and `after.1` ms more (None: never). Returns whether it ran to its end by itself
/// and succeeded, and its output.
fn failback_killed_after(
    d: &Path,
    after: Option<(u64, u64)>,
    hook: &str,
    scratch: &Path,
) -> (bool, String) {
    std::fs::create_dir_all(scratch).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(["failback", "shop", "--report-dir"])
        .arg(scratch.join("report"))
        .current_dir(d)
        .env("NO_COLOR", "1")
        .env("STANDBY_TEST_AFTER_MATERIALIZE", hook)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(scratch.with_extension("stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut lines = String::new();
    let mut n = 0;
    let mut killed = false;
    for l in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(l) = l else { break };
        lines.push_str(&l);
        lines.push('\n');
        n += 1;
        if let Some((a, ms)) = after
            && n >= a
        {
            // A moment inside the step that follows the line.
            std::thread::sleep(Duration::from_millis(ms));
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    lines.push_str(&std::fs::read_to_string(scratch.with_extension("stderr")).unwrap_or_default());
    (!killed && status.success(), lines)
}

#[test]
fn a_failback_killed_at_random_moments_converges() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let rounds: u64 = std::env::var("STANDBY_FAILBACK_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut seed: u64 = std::env::var("STANDBY_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("STANDBY_TEST_SEED={seed}");
    let tmp = tempfile::Builder::new()
        .prefix("sbfk")
        .tempdir_in("/tmp")
        .unwrap();
    let hv1_dir = tmp.path().join("tour/sites/hv1");
    let dr_dir = tmp.path().join("tour/sites/dr/.standby-vms");
    let _guard = KillVms(vec![hv1_dir.clone(), dr_dir.clone()]);
    let d = failed_over(tmp.path());
    let scratch = tmp.path().join("images");
    // The hook copies each home image as that run leaves it, just before
    // the VM boots on it (the guest writes from then on), into the run's
    // own directory (a killed run's hook may still be copying).
    let hook = |dir: &Path| {
        format!(
            "mkdir -p {s}/$STANDBY_MACHINE && for v in $(env | grep ^STANDBY_DISK_ | cut -d= -f1); do eval p=\\$$v; qemu-img convert -U -O raw \"$p\" {s}/$STANDBY_MACHINE/$v.raw || exit 1; done",
            s = dir.display()
        )
    };
    let mut invocation = 0;
    let mut next = |after: Option<(u64, u64)>| {
        invocation += 1;
        let dir = scratch.join(format!("run-{invocation}"));
        let (done, out) = failback_killed_after(&d, after, &hook(&dir), &dir);
        (done, out, dir)
    };
    // Whether a run was refused because an earlier, killed one had in fact
    // finished (the state no longer holds the failover).
    let finished_before = |out: &str| out.contains("is not failed over");
    // A run prints about 30 lines, the last few once its work is done:
    // kill in the first 24 (a kill that lands after the run recorded its
    // end is found by the next run's refusal).
    let mut round = 0;
    let mut cycles = 0;
    while round < rounds {
        if cycles > 0 {
            // The previous cycle came home: go out again.
            ok(&d, &["failover", "planned", "shop"]);
            ok(&d, &["failover", "commit", "shop"]);
        }
        cycles += 1;
        wait_orders(&dr_dir, orders(&dr_dir) + 5);
        ok(&d, &["reprotect", "shop"]);
        if cycles == 1 {
            // A home image lost meanwhile is made afresh and written whole.
            std::fs::remove_file(d.join("sites/hv1/app/system.qcow2")).unwrap();
        }
        let mut last_dir: Option<PathBuf> = None;
        // Every run's directory of this cycle, in order.
        let mut cycle_dirs: Vec<PathBuf> = Vec::new();
        let finished = loop {
            let after = 1 + random_below(&mut seed, 24);
            let ms = random_below(&mut seed, 400);
            let (done, out, dir) = next(Some((after, ms)));
            cycle_dirs.push(dir.clone());
            round += 1;
            eprintln!(
                "round {round}: killed {ms} ms after {after} lines{}; last: {}",
                if done { " (it had finished)" } else { "" },
                out.lines().last().unwrap_or("")
            );
            if finished_before(&out) {
                round -= 1;
                break last_dir.clone().map(|d| (out, d));
            }
            last_dir = Some(dir.clone());
            if done || round >= rounds {
                break done.then_some((out, dir));
            }
        };
        // The rerun converges.
        let (out, copies) = match finished {
            Some(f) => f,
            None => {
                let (done, out, dir) = next(None);
                cycle_dirs.push(dir.clone());
                if finished_before(&out) {
                    (out, last_dir.clone().expect("a run before the rerun"))
                } else {
                    assert!(done, "the rerun failed:\n{out}");
                    (out, dir)
                }
            }
        };
        // Home images equal the final point byte for byte, as the run that
        // booted each VM copied them (a rerun keeps a VM a killed run
        // brought up: the last copy of this cycle is the one it booted).
        let booted_from = |machine: &str, env: &str| {
            cycle_dirs
                .iter()
                .rev()
                .map(|dir| dir.join(machine).join(format!("{env}.raw")))
                .find(|p| p.exists())
        };
        let ps = points(&d);
        for (m, disk) in DISKS {
            let machine = format!("machine.{m}");
            let last = ps
                .iter()
                .rev()
                .find(|p| p["machine"] == machine.as_str())
                .unwrap();
            assert_eq!(last["site"], "site.dr", "the final point: {last}");
            let id = last["id"].as_str().unwrap();
            let want = restored(&d, tmp.path(), m, disk, id);
            let env = format!("STANDBY_DISK_{}", disk.to_uppercase());
            let got = booted_from(&machine, &env)
                .unwrap_or_else(|| panic!("no copy of {machine} disk {disk} before boot:\n{out}"));
            assert_eq!(
                changed_bytes(&want, &got),
                0,
                "{machine} disk {disk} differs from the final point {id}"
            );
            std::fs::remove_file(&want).unwrap();
        }
        // Every disk went through tracking (after a kill, reading only the
        // extents written since the failover), but the image deleted in the
        // first cycle, which has no bitmap until then.
        // (A run killed once its work was done wrote no report.)
        if let Ok(report) = std::fs::read_to_string(copies.join("report/report.json")) {
            // A kept VM's disks went through tracking in the killed run
            // that restored them (which wrote no report).
            let r: serde_json::Value = serde_json::from_str(&report).unwrap();
            let kept: Vec<String> = r["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["kind"] == "boot"
                        && e["detail"].as_str().is_some_and(|t| t.starts_with("kept:"))
                })
                .filter_map(|e| e["machine"].as_str().map(str::to_string))
                .collect();
            let tracked = report.matches("tracked: ").count()
                + DISKS
                    .iter()
                    .filter(|(m, _)| kept.contains(&format!("machine.{m}")))
                    .count();
            eprintln!(
                "cycle {cycles}: {tracked} disks through tracking, {} reading dirty extents",
                report.matches("of dirty extents compared").count()
            );
            assert!(tracked >= 2 && (cycles == 1 || tracked == 3), "{report}");
        }
        let _ = std::fs::remove_dir_all(&scratch);
        // Only the two home VMs run; nothing at DR, no export daemon.
        let left = processes_under(tmp.path());
        assert_eq!(left.len(), 2, "{left:#?}");
        assert!(
            left.iter()
                .all(|p| p.contains("qemu-system") && p.contains("sites/hv1")),
            "{left:#?}"
        );
    }
}
