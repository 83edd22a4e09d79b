//! Instant recovery of QEMU VMs (issue 15 item 4), through the real binary
//! on the shared test guest (TCG), on the points `quickstart --qemu` makes
//! of `plans/qemu`. The recovered VMs run without the database writer, so
//! nothing in the guest writes the data disk: after a failover's
//! background copy it must equal the point byte for byte.
//!
//! - `an_instant_test_failover_serves_a_part_and_a_failover_copies_the_rest`:
//!   `failover test shop --instant` boots both VMs from their disks served
//!   out of the vault (export processes, overlays backed by NBD), the
//!   checks pass, and each disk was served only in part (bytes counted by
//!   the exports); cleanup (another process) leaves no QEMU and no export,
//!   and so does `drill shop --instant`.
//!   Then `failover unplanned shop --instant` boots them the same way and
//!   copies the disks to their final images in the background: once it
//!   returns, no export runs and QEMU holds no NBD node, the standby
//!   process is gone, the VMs still answer their guest agents, no export
//!   file is left, the data disk equals a `standby restore` of the point,
//!   and RTO ended at the checks, before the copy.
//! - `a_killed_instant_failover_converges_on_rerun`: `failover unplanned
//!   --instant` killed (SIGKILL) after a random number of its output lines,
//!   `STANDBY_INSTANT_KILL_ROUNDS` times (default 5; 20 in the long form),
//!   then run to the end: the same images (the data disk byte for byte
//!   with the point), exactly the two VMs, no leftover export. A round
//!   counts only when SIGKILL ended a running failover; a run that ends on
//!   its own must have succeeded (a refused rerun fails the test), and a
//!   kill after the run recorded its end stops the rounds.

#[path = "../providers/qemu/tests/common/shared.rs"]
#[allow(dead_code)]
mod shared;

use standby_provider_qemu::vm::Vm;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The recovered VMs: no writer (the data disk is never mounted), checks
/// that read it as a block device and wait for the console.
const MACHINES: &str = include_str!("../testdata/instant/machines.hcl");

/// The instant failover the kill tests run.
const UNPLANNED_INSTANT: [&str; 6] = [
    "failover",
    "unplanned",
    "shop",
    "--instant",
    "--point",
    "latest",
];

/// A fresh tour (`setup`) in a temporary directory under /tmp (short
/// socket paths): the directory, the tour in it, and the guard that ends
/// its QEMU and export processes with the test.
fn tour(prefix: &str) -> (tempfile::TempDir, PathBuf, Reap) {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    let d = tmp.path().join("tour");
    let reap = Reap(d.clone());
    setup(&d);
    (tmp, d, reap)
}

/// Kills the tour's DR VMs (a finished failover leaves them running).
fn kill_vms(d: &Path) {
    for name in ["app", "db"] {
        if let Some(v) = Vm::open(name, &d.join("sites/dr/.standby-vms")).unwrap() {
            v.kill().unwrap();
        }
    }
}

/// `quickstart --qemu` into `d`, then the machines above.
fn setup(d: &Path) {
    shared::quickstart_qemu(Path::new(env!("CARGO_BIN_EXE_standby")), d);
    std::fs::write(d.join("machines.hcl"), MACHINES).unwrap();
}

fn standby(d: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(args)
        .current_dir(d)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(d: &Path, args: &[&str]) -> String {
    let (passed, text) = standby(d, args);
    assert!(passed, "standby {args:?}:\n{text}");
    text
}

/// Command lines of processes under `d`: QEMU and export processes.
fn processes(d: &Path, what: &str) -> Vec<String> {
    shared::processes_under(d, |cmd| match what {
        "qemu" => cmd.starts_with("qemu-system"),
        _ => cmd.contains("__standby-nbd-export"),
    })
}

/// Ends every QEMU and export process under its directory when dropped,
/// so a failed test leaves no VM behind.
struct Reap(PathBuf);

impl Drop for Reap {
    fn drop(&mut self) {
        for kind in ["qemu", "export"] {
            for p in processes(&self.0, kind) {
                if let Some(pid) = p.split(':').next().and_then(|s| s.parse::<i32>().ok()) {
                    // SAFETY: kill(2) of a process whose command line
                    // names this test's own temporary directory.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

/// Waits (at most 10 s) until no export process under `d` is left.
fn no_exports_left(d: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes(d, "export");
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "exports left: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After a finished instant failover: both VMs run on their final images
/// (no NBD node, no export), answer their agents, and the data disk is
/// the point's.
fn assert_failed_over(d: &Path, point_data: &Path) {
    no_exports_left(d);
    let vms = d.join("sites/dr/.standby-vms");
    let qemu = processes(d, "qemu");
    assert_eq!(qemu.len(), 2, "{qemu:?}");
    for name in ["app", "db"] {
        let vm = Vm::open(name, &vms).unwrap().expect("the VM's pid file");
        assert!(vm.running(), "VM {name} does not run");
        let mut q = vm.qmp().unwrap();
        assert!(
            !standby_provider_qemu::instant::uses_nbd(&mut q).unwrap(),
            "VM {name} still reads an NBD export"
        );
        vm.agent(Duration::from_secs(30))
            .and_then(|mut a| a.ping())
            .unwrap_or_else(|e| panic!("VM {name}'s agent: {e}"));
        let overlays: Vec<_> = std::fs::read_dir(vms.join(name))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            overlays
                .iter()
                .all(|p| !p.to_string_lossy().ends_with(".instant.qcow2")),
            "{overlays:?}"
        );
    }
    // No export file (socket, pid, counters, log) outlives the copy.
    let left: Vec<_> = std::fs::read_dir(&vms)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".nbd"))
        .collect();
    assert!(left.is_empty(), "export files left: {left:?}");
    let data = d.join("sites/dr/db/data.raw");
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw", "-U"])
        .arg(point_data)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "the copied data disk differs from the point: {}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    // Byte for byte, size included; and as sparse as a restore leaves it
    // (the copy's zeroes are holes): the data disk holds a few MiB.
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(meta.len(), std::fs::metadata(point_data).unwrap().len());
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < meta.len() / 8,
        "the copy allocated {} of a {}-byte disk",
        meta.blocks() * 512,
        meta.len()
    );
}

/// Whether the state records a failover run of the plan as completed.
fn failover_completed(d: &Path) -> bool {
    fn any_completed(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => {
                m.get("phase").and_then(|p| p.as_str()) == Some("completed")
                    || m.values().any(any_completed)
            }
            serde_json::Value::Array(a) => a.iter().any(any_completed),
            _ => false,
        }
    }
    std::fs::read(d.join(".standby/state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| any_completed(&v))
}

/// `standby restore latest` of the database VM's data disk.
fn restore_point_data(d: &Path, to: &Path) {
    ok(
        d,
        &[
            "restore",
            "latest",
            "--machine",
            "machine.db",
            "--disk",
            "data",
            "--to",
            &to.to_string_lossy(),
        ],
    );
}

#[test]
fn an_instant_test_failover_serves_a_part_and_a_failover_copies_the_rest() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (tmp, d, _reap) = tour("sbir");
    let point_data = tmp.path().join("point-data.raw");
    restore_point_data(&d, &point_data);

    // A test failover: both VMs boot from their exports.
    let reports = tmp.path().join("test-report");
    let text = ok(
        &d,
        &[
            "failover",
            "test",
            "shop",
            "--instant",
            "--point",
            "latest",
            "--report-dir",
            &reports.to_string_lossy(),
        ],
    );
    assert!(text.contains("not copied"), "{text}");
    let sandbox = d.join("sites/dr/.standby-test");
    let run = std::fs::read_dir(&sandbox)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    assert_eq!(processes(&d, "qemu").len(), 2);
    let exports = processes(&d, "export");
    assert_eq!(exports.len(), 3, "one per disk: {exports:?}");
    // Each disk was served in part only, and nothing was restored.
    for (vm, disk) in [("app", "system"), ("db", "system"), ("db", "data")] {
        let stats: serde_json::Value = serde_json::from_slice(
            &std::fs::read(run.join(format!("{vm}.{disk}.nbd.json"))).unwrap(),
        )
        .unwrap();
        let (served, size) = (
            stats["served"].as_u64().unwrap(),
            stats["size"].as_u64().unwrap(),
        );
        assert!(served > 0, "{vm} {disk}: {stats}");
        assert!(
            served < size,
            "{vm} {disk}: the test run read the whole disk: {stats}"
        );
        assert!(!run.join(vm).join(format!("{disk}.raw")).exists());
    }
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    assert!(
        text.contains("the disks stay in the vault (test run)"),
        "{text}"
    );
    let holds = d.join(".standby/vault/holds");
    let held = |holds: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(holds)
            .map(|r| {
                r.flatten()
                    .flat_map(|p| std::fs::read_dir(p.path()).unwrap().flatten())
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let names: Vec<std::ffi::OsString> = held(&holds)
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "one hold per machine while it runs: {names:?}"
    );
    ok(&d, &["failover", "cleanup", "shop"]);
    assert_eq!(processes(&d, "qemu"), Vec::<String>::new());
    no_exports_left(&d);
    assert!(!sandbox.exists());
    assert_eq!(held(&holds), Vec::<PathBuf>::new(), "cleanup lets go");

    // A test run killed before it recorded its machines may already hold
    // their points (planted here as such a run leaves them): its cleanup
    // lets go of every machine's hold all the same.
    kill_at(
        &d,
        &["failover", "test", "shop", "--instant"],
        "test failover of",
    );
    let point = ok(&d, &["points", "machine.db", "--json"]);
    let point: Vec<serde_json::Value> = serde_json::from_str(&point).unwrap();
    let dir = holds.join(point.last().unwrap()["id"].as_str().unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    for n in &names {
        std::fs::write(dir.join(n), "{}").unwrap();
    }
    ok(&d, &["failover", "cleanup", "shop"]);
    assert_eq!(
        held(&holds),
        Vec::<PathBuf>::new(),
        "a killed run's holds stay"
    );
    assert_eq!(processes(&d, "qemu"), Vec::<String>::new());
    no_exports_left(&d);

    // An instant drill: the same, then its cleanup ends VMs and exports.
    let text = ok(&d, &["drill", "shop", "--instant"]);
    assert!(text.contains("not copied"), "{text}");
    assert_eq!(processes(&d, "qemu"), Vec::<String>::new());
    no_exports_left(&d);
    assert!(!sandbox.exists());

    // A failover: booted from the exports, then copied in the background.
    let reports = tmp.path().join("report");
    let text = ok(
        &d,
        &[
            "failover",
            "unplanned",
            "shop",
            "--instant",
            "--point",
            "latest",
            "--report-dir",
            &reports.to_string_lossy(),
        ],
    );
    assert!(text.contains("(background copy)"), "{text}");
    assert!(text.contains("the background copy ended at"), "{text}");
    // The standby process has exited; the VMs live on their own images.
    assert_failed_over(&d, &point_data);
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    let rto = r["rto"]["seconds"].as_f64().expect("RTO");
    let timeline = r["timeline"].as_array().unwrap();
    let copies: Vec<&serde_json::Value> = timeline.iter().filter(|e| e["kind"] == "copy").collect();
    assert_eq!(copies.len(), 2, "one copy per VM: {timeline:#?}");
    let last_check = timeline
        .iter()
        .filter(|e| e["kind"] == "check")
        .map(|e| e["end_seconds"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        rto <= last_check + 1.0,
        "RTO {rto} should end at the last check ({last_check}), not at the copy"
    );
    for c in copies {
        assert_eq!(c["outcome"], "passed", "{c:#}");
        assert!(c["start_seconds"].as_f64().unwrap() >= rto - 1.0, "{c:#}");
    }
    // The failover's state records the final images.
    let state = std::fs::read_to_string(d.join(".standby/state.json")).unwrap();
    assert!(state.contains("db/data.raw"), "{state}");
    assert!(!state.contains("nbd+unix"), "{state}");
    // Killed behind standby's back: status no longer says they run.
    kill_vms(&d);
    let o = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(["status", "--json"])
        .current_dir(&d)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "a recovered machine is down");
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for p in st["recoveries"].as_array().unwrap() {
        assert_eq!(p["status"], "down", "{p:#}");
    }
    let db = st["protections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["protection"] == "protection.db")
        .unwrap();
    assert_eq!(db["level"], "critical", "{db:#}");
    assert!(
        db["unprotected"]
            .as_str()
            .unwrap()
            .contains("should run at site.dr"),
        "{db:#}"
    );
}

#[test]
fn a_killed_instant_failover_converges_on_rerun() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let rounds: usize = std::env::var("STANDBY_INSTANT_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (tmp, d, _reap) = tour("sbik");
    let point_data = tmp.path().join("point-data.raw");
    restore_point_data(&d, &point_data);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill seed {seed}");
    let args = UNPLANNED_INSTANT;
    let mut finished = false;
    let mut killed = 0;
    for round in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // A run prints ~23-29 lines (points, groups, starts, checks, copy
        // progress, the end): kill after 1..=20 of them.
        let kill_after = 1 + (seed % 20) as usize;
        let err_path = tmp.path().join(format!("round-{round}.err"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_standby"))
            .args(args)
            .current_dir(&d)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        let mut seen = Vec::new();
        while seen.len() < kill_after {
            match lines.next() {
                Some(Ok(l)) => seen.push(l),
                _ => break,
            }
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        eprintln!(
            "round {round}: killed after {} lines ({status}); last: {:?}",
            seen.len(),
            seen.last()
        );
        {
            use std::os::unix::process::ExitStatusExt;
            if status.signal() == Some(libc::SIGKILL) {
                killed += 1;
            } else {
                // Ended on its own: it must have finished, never have
                // refused to go on from the last round's kill.
                assert!(
                    status.success(),
                    "round {round}: the rerun failed ({status}): {}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
        }
        if failover_completed(&d) {
            // Killed after it recorded its end (or it finished): nothing
            // is left to converge from.
            finished = true;
            break;
        }
    }
    eprintln!("{killed} of {rounds} rounds killed a running failover");
    assert!(killed >= 1, "no round killed the failover");
    if !finished {
        let text = ok(&d, &args);
        assert!(text.contains("(background copy)"), "{text}");
    }
    assert_failed_over(&d, &point_data);
    kill_vms(&d);
    assert_eq!(processes(&d, "qemu"), Vec::<String>::new());
}

/// Runs `standby ARGS` in `d` and SIGKILLs it once a line of its output
/// contains `at`; the lines seen. Fails if it ends before.
fn kill_at(d: &Path, args: &[&str], at: &str) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(args)
        .current_dir(d)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    for l in std::io::BufReader::new(out).lines() {
        let Ok(l) = l else { break };
        let hit = l.contains(at);
        seen.push(l);
        if hit {
            child.kill().unwrap();
            break;
        }
    }
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "it ended before {at:?}: {seen:#?}"
    );
    seen
}

/// Writes `marker` at `offset` of the database VM's data disk from inside
/// its guest, and into `expected` at the same place.
fn write_in_guest(d: &Path, marker: &str, offset: u64, expected: &Path) {
    let vm = Vm::open("db", &d.join("sites/dr/.standby-vms"))
        .unwrap()
        .expect("the db VM runs");
    let mut a = vm.agent(Duration::from_secs(30)).unwrap();
    let script =
        format!("printf {marker} | dd of=/dev/vdb bs=1 seek={offset} conv=notrunc && sync");
    let o = a
        .exec("/bin/sh", &["-c", &script], Duration::from_secs(60))
        .unwrap();
    assert_eq!(o.exit_code, 0, "{o:?}");
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(expected)
        .unwrap();
    f.write_all_at(marker.as_bytes(), offset).unwrap();
}

/// A failover killed after its database VM came up (checks passed, so it
/// may hold writes), then killed again during the background copy: each
/// rerun keeps that VM as it runs (never restores or restarts it) and
/// finishes the copy QEMU carried on with; the data disk ends as the point
/// plus what the guest wrote at DR in between.
#[test]
fn a_rerun_keeps_the_vm_an_interrupted_instant_failover_brought_up() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (tmp, d, _reap) = tour("sbkp");
    let expected = tmp.path().join("expected-data.raw");
    restore_point_data(&d, &expected);
    let size = std::fs::metadata(&expected).unwrap().len();
    let args = UNPLANNED_INSTANT;
    kill_at(&d, &args, "machine.db: up, every check passed");
    let pid = |name: &str| {
        Vm::open(name, &d.join("sites/dr/.standby-vms"))
            .unwrap()
            .map(|v| v.pid)
    };
    let db = pid("db").expect("the db VM outlives the kill");
    write_in_guest(&d, "kept-after-up", size / 2, &expected);

    // The rerun keeps db (same pid, no restore) and is killed mid-copy.
    let seen = kill_at(&d, &args, "(background copy)");
    let text = seen.join("\n");
    assert!(text.contains("machine.db: kept running as run"), "{text}");
    assert!(!text.contains("machine.db: disks restored"), "{text}");
    assert_eq!(pid("db"), Some(db), "the db VM was restarted");
    write_in_guest(&d, "kept-during-copy", size / 3, &expected);
    // A plain rerun would leave db on the exports (or restore over its
    // writes): refused, pointing at --instant.
    let (passed, text) = standby(&d, &["failover", "unplanned", "shop", "--point", "latest"]);
    assert!(!passed, "{text}");
    assert!(text.contains("again with --instant"), "{text}");
    assert_eq!(pid("db"), Some(db), "{text}");

    // What a kill between the switch and the hand-over of the guest's
    // writes leaves: every mirror ready, the guest paused, each device
    // switched to its wrapper (job-complete), no bitmap merged yet.
    {
        let vm = Vm::open("db", &d.join("sites/dr/.standby-vms"))
            .unwrap()
            .unwrap();
        let mut q = vm.qmp().unwrap();
        let jobs = |q: &mut standby_provider_qemu::qmp::Qmp| -> Vec<serde_json::Value> {
            q.execute("query-jobs", serde_json::Value::Null).unwrap()
        };
        let began = Instant::now();
        let wait_all = |q: &mut standby_provider_qemu::qmp::Qmp, status: &str| {
            while !jobs(q).iter().all(|j| j["status"] == status) {
                assert!(
                    began.elapsed() < Duration::from_secs(300),
                    "{status}: {:?}",
                    jobs(q)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        wait_all(&mut q, "ready");
        q.execute_value("stop", serde_json::Value::Null).unwrap();
        for j in jobs(&mut q) {
            q.execute_value("job-complete", serde_json::json!({ "id": j["id"] }))
                .unwrap();
        }
        wait_all(&mut q, "concluded");
        assert_eq!(q.status().unwrap(), "paused");
    }

    // The last rerun resumes the guest before its checks, finishes the
    // hand-over and the copy: db is the same VM, its data disk the point
    // plus both writes.
    let text = ok(&d, &args);
    assert!(text.contains("machine.db: kept running as run"), "{text}");
    assert_eq!(pid("db"), Some(db), "the db VM was restarted");
    assert_failed_over(&d, &expected);
    // RTO and the copy's end on one time base: the first attempt's start.
    let secs = |after: &str| -> f64 {
        let rest = &text[text
            .find(after)
            .unwrap_or_else(|| panic!("{after}: {text}"))
            + after.len()..];
        rest[..rest.find('s').unwrap()].parse().unwrap()
    };
    assert!(
        text.contains("(both from the first attempt's start)"),
        "{text}"
    );
    assert!(
        secs("the background copy ended at ") >= secs("Instant recovery: RTO "),
        "{text}"
    );

    // The VM ended on tracked wrappers whose bitmaps hold what the guest
    // wrote on its overlays, the copy's own writes left out: reprotect's
    // first reverse point reads only those blocks and restores to the
    // point plus both writes.
    let info = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(d.join("sites/dr/db/data.qcow2"))
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("\"data-file\""), "{info}");
    let dirty = {
        let vm = Vm::open("db", &d.join("sites/dr/.standby-vms"))
            .unwrap()
            .unwrap();
        let mut q = vm.qmp().unwrap();
        let node = q.block_node("data").unwrap();
        assert_eq!(node.drv, "qcow2", "{node:?}");
        node.dirty_bitmaps
            .iter()
            .find(|b| b.name == "standby-1")
            .map(|b| b.count)
            .unwrap_or_else(|| panic!("no bitmap on the wrapper: {node:?}"))
    };
    assert!(
        dirty > 0 && dirty < size / 4,
        "the wrapper's bitmap counts {dirty} bytes of a {size}-byte disk: it should hold the guest's two writes, not the copy"
    );
    ok(&d, &["failover", "commit", "shop"]);
    ok(&d, &["reprotect", "shop"]);
    let points: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&d, &["points", "machine.db", "--json"])).unwrap();
    let reverse = points.last().unwrap();
    assert_eq!(reverse["site"], "site.dr", "{reverse}");
    for (disk, c) in reverse["cbt"]["disks"].as_object().unwrap() {
        assert_eq!(c["mode"], "dirty", "disk {disk} of the reverse point: {c}");
    }
    let back = tmp.path().join("reverse-data.raw");
    restore_point_data(&d, &back);
    assert!(
        std::fs::read(&back).unwrap() == std::fs::read(&expected).unwrap(),
        "the reverse point's data disk is not the point plus the guest's writes"
    );
    // Shut down cleanly, the DR VM is read through its wrappers (their
    // stored bitmaps), not whole: the next reverse point is dirty-only.
    Vm::open("db", &d.join("sites/dr/.standby-vms"))
        .unwrap()
        .unwrap()
        .stop(Duration::from_secs(60))
        .unwrap();
    ok(&d, &["replicate"]);
    let points: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&d, &["points", "machine.db", "--json"])).unwrap();
    let offline = points.last().unwrap();
    assert_ne!(offline["id"], reverse["id"], "no new reverse point");
    for (disk, c) in offline["cbt"]["disks"].as_object().unwrap() {
        assert_eq!(c["mode"], "dirty", "disk {disk} read offline: {c}");
    }
    kill_vms(&d);
    assert_eq!(processes(&d, "qemu"), Vec::<String>::new());
}

/// `failover planned --instant` with the source VMs shut down (as
/// `quickstart --qemu` leaves them): the final points are read from their
/// images through `qemu-storage-daemon` (crash-consistent, as of their
/// shutdown), the VMs boot at DR from those points served by the exports.
/// Killed once the database VM is up and run again: the rerun's new final
/// points hold the same data, so it keeps that VM (same QEMU pid) and
/// finishes; the background copy leaves the data disk equal to the final
/// point, and no daemon is left.
#[test]
fn a_planned_instant_failover_of_stopped_vms_reruns_to_the_end() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (tmp, d, _reap) = tour("sbpi");
    let count = |d: &Path| -> usize {
        serde_json::from_str::<Vec<serde_json::Value>>(&ok(d, &["points", "machine.db", "--json"]))
            .unwrap()
            .len()
    };
    let before = count(&d);
    let args = ["failover", "planned", "shop", "--instant"];
    let first = Instant::now();
    kill_at(&d, &args, "machine.db: up, every check passed");
    let db = Vm::open("db", &d.join("sites/dr/.standby-vms"))
        .unwrap()
        .map(|v| v.pid)
        .expect("the db VM outlives the kill");
    let reports = tmp.path().join("report");
    let before_rerun = first.elapsed().as_secs_f64();
    let mut rerun = args.to_vec();
    let dir = reports.to_string_lossy().into_owned();
    rerun.extend(["--report-dir", &dir]);
    let text = ok(&d, &rerun);
    // RTO counts from the first attempt's start, which the report shows.
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
    let rto = r["rto"]["seconds"].as_f64().expect("RTO");
    assert!(
        rto >= before_rerun - 1.0,
        "RTO {rto} < {before_rerun}: {r:#}"
    );
    assert!(
        r["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "earlier_attempts" && e["start_seconds"].as_f64().unwrap() < 0.0),
        "{r:#}"
    );
    assert!(text.contains("machine.db: kept running as run"), "{text}");
    assert!(text.contains("(background copy)"), "{text}");
    assert_eq!(
        Vm::open("db", &d.join("sites/dr/.standby-vms"))
            .unwrap()
            .map(|v| v.pid),
        Some(db)
    );
    // Each attempt took a final point; the VMs run from the last one.
    let after: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&d, &["points", "machine.db", "--json"])).unwrap();
    assert_eq!(after.len(), before + 2, "{after:#?}");
    let last = after.last().unwrap();
    assert_eq!(last["moves_to"], "site.dr", "{last}");
    assert_eq!(last["consistency"], "crash", "{last}");
    let id = last["id"].as_str().unwrap();
    let point_data = tmp.path().join("final-data.raw");
    ok(
        &d,
        &[
            "restore",
            id,
            "--machine",
            "machine.db",
            "--disk",
            "data",
            "--to",
            &point_data.to_string_lossy(),
        ],
    );
    assert_failed_over(&d, &point_data);
    let daemons = shared::processes_under(&d, |cmd| cmd.starts_with("qemu-storage-daemon"));
    assert!(daemons.is_empty(), "{daemons:?}");
    kill_vms(&d);
}
