//! Recovery into QEMU VMs at a `qemu` DR site, through the real binary, on
//! the shared test guest (TCG).
//!
//! - `a_planned_failover_of_running_vms_loses_no_committed_order`: the
//!   source VMs of `plans/qemu` run with the writer; `failover planned
//!   shop` shuts the guests down (QEMU kept, paused, for the final point
//!   through changed-block tracking), takes the final point, ends the
//!   source QEMUs and boots both VMs at `site.dr` from their images:
//!   every order the source committed before its shutdown is in the
//!   recovered database.
//! - `a_drill_of_plans_qemu_boots_both_vms_isolated_and_leaves_nothing`:
//!   `quickstart --qemu` makes points of `plans/qemu` (two VMs, the
//!   database's writer running); `failover test shop` leaves both VMs
//!   running, tracked by their pid files at the DR site, and `failover
//!   cleanup shop` (another process) stops them and removes the run; a
//!   drill killed with SIGKILL once its database VM runs leaves that VM,
//!   and the next drill removes it before its own run;
//!   `standby drill shop` then boots both VMs
//!   group by group at `site.dr` from throw-away overlays over the
//!   restored images: the guest checks pass (integrity, every order of the
//!   point's freeze, the console line), the isolation check finds no
//!   network, the restored images' SHA-256 (taken before boot through the
//!   test hook, which hard-links them out of the sandbox) are unchanged
//!   afterwards, no QEMU process and no file of the run is left, and the
//!   report carries RTO, per-VM accelerator and boot time, each check's
//!   output, the console's hash and a PNG screenshot embedded in report.md.

#[path = "../providers/qemu/tests/common/shared.rs"]
#[allow(dead_code)] // make_pki is for other tests
mod shared;

use standby_provider_qemu::vm::Vm;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The two tests boot two VMs each; one at a time on a small machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Pids of QEMU processes whose command line mentions `dir`.
fn qemu_under(dir: &Path) -> Vec<String> {
    shared::processes_under(dir, |cmd| cmd.starts_with("qemu-system"))
}

#[test]
fn a_drill_of_plans_qemu_boots_both_vms_isolated_and_leaves_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::Builder::new()
        .prefix("sbqr")
        .tempdir_in("/tmp")
        .unwrap();
    let d = tmp.path().join("tour");
    let text = shared::quickstart_qemu(Path::new(env!("CARGO_BIN_EXE_standby")), &d);
    // The tour replicated through changed-block tracking, one group point
    // of both VMs, and checked its restored database; no VM outlives it.
    assert!(text.contains("disk data: changed-block tracking"), "{text}");
    assert!(text.contains("across 2 VM(s)"), "{text}");
    assert!(
        text.contains("e2fsck -fn clean, PRAGMA integrity_check = ok"),
        "{text}"
    );
    for name in ["app", "db"] {
        let vm = Vm::open(name, &d.join("sites/hv1")).unwrap();
        assert!(vm.is_none_or(|v| !v.running()), "VM {name} still runs");
    }
    // The order count of the newest point, from its restored data disk.
    let count = shared::check_database_image(&d.join("restored/db-data.img"));
    assert!(count > 0, "the writer committed nothing before the point");

    // A test failover leaves both VMs running, tracked at the DR site, and
    // another standby process (cleanup) stops them and removes the run.
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_standby"))
            .args(args)
            .current_dir(&d)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "standby {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["failover", "test", "shop"]);
    let sandbox = d.join("sites/dr/.standby-test");
    let runs: Vec<PathBuf> = std::fs::read_dir(&sandbox)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    for name in ["app", "db"] {
        let vm = Vm::open(name, &runs[0]).unwrap();
        assert!(vm.is_some_and(|v| v.running()), "VM {name} is not running");
    }
    let running = qemu_under(&d);
    assert_eq!(running.len(), 2, "{running:?}");
    // The database VM runs with its protection's target_vm memory.
    assert!(
        running
            .iter()
            .any(|c| c.contains("-name db ") && c.contains(" -m 384 ")),
        "{running:?}"
    );
    run(&["failover", "cleanup", "shop"]);
    assert_eq!(qemu_under(&d), Vec::<String>::new(), "cleanup left QEMU");
    assert!(!sandbox.exists(), "cleanup left {}", sandbox.display());

    // A drill killed (SIGKILL) once its database VM runs leaves that VM
    // behind, tracked at the site; the next drill cleans it up first.
    let mut killed = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(["drill", "shop"])
        .current_dir(&d)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let orphan = loop {
        let found = std::fs::read_dir(&sandbox)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|e| Vm::open("db", &e.path()).ok().flatten());
        if let Some(v) = found {
            break v;
        }
        assert!(
            killed.try_wait().unwrap().is_none(),
            "the drill ended before its VM ran"
        );
        assert!(std::time::Instant::now() < deadline, "no VM after 180 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(orphan.running(), "the VM should outlive its killed drill");

    // Before each VM boots: hash its restored images and hard-link them
    // out of the sandbox, so they can be hashed again after cleanup.
    let keep = tmp.path().join("keep");
    std::fs::create_dir_all(&keep).unwrap();
    let hook = format!(
        r#"for v in $(env | sed -n 's/^\(STANDBY_DISK_[A-Z0-9_]*\)=.*/\1/p'); do
             f=$(printenv "$v"); n=$(basename "$(dirname "$f")")-$(basename "$f")
             ln "$f" "{keep}/$n" && sha256sum "$f" | cut -d' ' -f1 >"{keep}/$n.sha256" || exit 1
           done"#,
        keep = keep.display()
    );
    let reports = tmp.path().join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(["drill", "shop", "--report-dir"])
        .arg(&reports)
        .current_dir(&d)
        .env("NO_COLOR", "1")
        .env("STANDBY_TEST_AFTER_MATERIALIZE", &hook)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drill failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing of the run is left: no QEMU process, no sandbox.
    assert_eq!(
        qemu_under(&d),
        Vec::<String>::new(),
        "QEMU outlived the drill"
    );
    assert!(
        !d.join("sites/dr/.standby-test").exists(),
        "the drill left files: {:?}",
        std::fs::read_dir(d.join("sites/dr/.standby-test"))
            .map(|r| r.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );

    // The restored images are bit-for-bit as restored: the VMs wrote only
    // to their overlays.
    let mut kept = 0;
    for e in std::fs::read_dir(&keep).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "raw") {
            let before = std::fs::read_to_string(p.with_extension("raw.sha256")).unwrap();
            assert_eq!(sha256(&p), before.trim(), "{} changed", p.display());
            kept += 1;
        }
    }
    assert_eq!(kept, 3, "app system, db system, db data");

    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/report.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let v = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let errors: Vec<String> = v.iter_errors(&r).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "report.json: {errors:#?}");
    assert_eq!(r["passed"], true, "{r:#}");
    let rto = r["rto"]["seconds"].as_f64().expect("RTO measured");
    let machines = r["machines"].as_array().expect("machines in the report");
    assert_eq!(machines.len(), 2, "{r:#}");
    let mut last_check_end = 0f64;
    for e in r["timeline"].as_array().unwrap() {
        if e["kind"] == "check" {
            last_check_end = last_check_end.max(e["end_seconds"].as_f64().unwrap());
        }
    }
    assert!(
        rto >= last_check_end - 0.01 && rto <= last_check_end + 1.0,
        "RTO {rto} should end at the last check ({last_check_end})"
    );
    for m in machines {
        let name = m["machine"].as_str().unwrap();
        assert!(
            ["tcg", "kvm"].contains(&m["accelerator"].as_str().unwrap()),
            "{m:#}"
        );
        // The database's protection gives it 384 MiB at site.dr
        // (target_vm); the application VM runs with its own 256 MiB.
        let memory = if name == "machine.db" { 384 } else { 256 };
        assert_eq!(m["memory_mib"], memory, "{m:#}");
        assert_eq!(m["cpus"], 1, "{m:#}");
        let boot = m["boot_seconds"].as_f64().expect("boot time");
        assert!(boot > 0.0 && boot < rto, "{m:#}");
        let hash = m["console_sha256"].as_str().unwrap();
        assert_eq!(hash.len(), 64, "{m:#}");
        assert!(
            m["console_tail"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l == "standby-guest: up"),
            "{m:#}"
        );
        let png =
            std::fs::read(reports.join(m["screenshot"].as_str().expect("screenshot"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}: not a PNG");
        let checks = m["checks"].as_array().unwrap();
        assert!(checks.iter().all(|c| c["passed"] == true), "{m:#}");
        let output = |n: &str| -> String {
            checks
                .iter()
                .find(|c| c["name"] == n)
                .unwrap_or_else(|| panic!("{name}: no check {n}: {m:#}"))["output"]
                .as_str()
                .unwrap()
                .to_string()
        };
        if name == "machine.db" {
            assert!(output("database").contains("stdout:\nok"), "{m:#}");
            // From the host through the one port its target_vm forwards.
            assert!(checks.iter().any(|c| c["name"] == "http"), "{m:#}");
            // Every order of the point's freeze is in the recovered guest.
            let orders = output("orders");
            assert!(
                orders.ends_with(&format!("stdout:\n{count}")),
                "expected {count} orders: {orders}"
            );
        } else {
            // No network: only lo, and connecting to the host's address
            // fails as unreachable.
            let iso = output("isolated");
            assert!(iso.contains("stdout:\nlo"), "{iso}");
            assert!(!iso.contains("eth0"), "{iso}");
            assert!(iso.contains("Network is unreachable"), "{iso}");
            assert!(output("booted").contains("standby-guest: up"), "{m:#}");
        }
    }
    let md = std::fs::read_to_string(reports.join("report.md")).unwrap();
    assert!(md.contains("## Machines"), "{md}");
    assert!(
        md.contains("| machine.db | TCG") || md.contains("| machine.db | KVM"),
        "{md}"
    );
    assert!(
        md.contains("](data:image/png;base64,iVBORw0KGgo"),
        "no embedded PNG"
    );
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("failures=\"0\""), "{junit}");
    assert!(junit.contains("<system-out>accelerator "), "{junit}");
}

/// Kills the VMs found in `dirs` when the test ends, passing or failing.
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
    }
}

/// The order count of a database disk as the guest's shutdown left it:
/// its journal replayed on a copy (`e2fsck -fy`: a busy machine's guest may
/// power off before it could unmount `/data`, leaving committed
/// transactions in the journal, as a crash would), no damage beyond that;
/// the WAL is read with the database.
fn raw_count(qcow2: &Path, tmp: &Path) -> u64 {
    let raw = tmp.join("source-data.raw");
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(qcow2)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fsck = Command::new("e2fsck")
        .arg("-fy")
        .arg(&raw)
        .output()
        .unwrap();
    // 0: clean; 1: the journal replayed or counts corrected. More is damage.
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck -fy: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    for name in ["orders.db", "orders.db-wal"] {
        let out = Command::new("debugfs")
            .args(["-R", &format!("dump /{name} {}", tmp.join(name).display())])
            .arg(&raw)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let o = Command::new("sqlite3")
        .arg(tmp.join("orders.db"))
        .arg("SELECT count(*) FROM orders")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn a_planned_failover_of_running_vms_loses_no_committed_order() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::Builder::new()
        .prefix("sbqp")
        .tempdir_in("/tmp")
        .unwrap();
    let d = tmp.path().join("tour");
    shared::quickstart_qemu(Path::new(env!("CARGO_BIN_EXE_standby")), &d);
    let _guard = KillVms(vec![d.join("sites/hv1"), d.join("sites/dr/.standby-vms")]);
    // The source VMs run again, the writer taking orders.
    let cfg = standby::config::load(&d, &Default::default())
        .unwrap_or_else(|e| panic!("{}", e.render(false)))
        .config;
    for m in cfg.machines.values() {
        standby::operations::vms::start(&cfg, m).expect("start the source VM");
    }
    let mut agent = standby_provider_qemu::qga::Agent::connect_unix(
        &d.join("sites/hv1/db.qga"),
        std::time::Duration::from_secs(120),
    )
    .unwrap();
    let start = std::time::Instant::now();
    loop {
        let n: u64 = agent
            .sh(
                "sqlite3 -cmd '.timeout 10000' /data/orders.db 'SELECT count(*) FROM orders'",
                std::time::Duration::from_secs(30),
            )
            .unwrap()
            .trim()
            .parse()
            .unwrap_or(0);
        if n > 60 {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 120,
            "the writer is stuck at {n}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    drop(agent);

    let out = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(["failover", "planned", "shop"])
        .current_dir(&d)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "planned failover failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The sources are gone: shut down, then QEMU ended after the final point.
    for name in ["app", "db"] {
        let v = Vm::open(name, &d.join("sites/hv1")).unwrap();
        assert!(
            v.is_none_or(|v| !v.running()),
            "source VM {name} still runs"
        );
    }
    // Every order the source committed before its shutdown.
    let committed = raw_count(&d.join("sites/hv1/db/data.qcow2"), tmp.path());
    assert!(committed > 60, "{committed}");
    // The recovered database VM runs at site.dr from its image and holds
    // them all (its own writer goes on adding orders after them).
    let dr = d.join("sites/dr/.standby-vms");
    let v = Vm::open("db", &dr)
        .unwrap()
        .expect("the DR database VM runs");
    let mut agent = v.agent(std::time::Duration::from_secs(60)).unwrap();
    let got = agent
        .sh(
            &format!(
                "sqlite3 -cmd '.timeout 10000' /data/orders.db 'SELECT count(*) FROM orders WHERE id <= {committed}'"
            ),
            std::time::Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(
        got.trim(),
        committed.to_string(),
        "orders lost in the failover"
    );
    assert!(d.join("sites/dr/db/data.raw").exists());
    assert!(text.contains("final point"), "{text}");
}

/// Ctrl-C while a VM boots ends the wait for its guest agent at once (not
/// at the boot timeout, five minutes here): the guests below never come up
/// (no init: the kernel panics and reboots forever). The booting VM is
/// killed, the command exits as interrupted, and cleanup leaves no QEMU.
#[test]
fn ctrl_c_during_a_vm_boot_ends_the_wait() {
    use std::io::BufRead;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::Builder::new()
        .prefix("sbcc")
        .tempdir_in("/tmp")
        .unwrap();
    let d = tmp.path().join("tour");
    shared::quickstart_qemu(Path::new(env!("CARGO_BIN_EXE_standby")), &d);
    let machines = d.join("machines.hcl");
    let hcl = std::fs::read_to_string(&machines).unwrap();
    assert!(hcl.contains("panic=-1"), "{hcl}");
    std::fs::write(
        &machines,
        hcl.replace("panic=-1", "panic=-1 rdinit=/nonexistent"),
    )
    .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(["failover", "test", "shop"])
        .current_dir(&d)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    // Kept open to the end: a closed pipe would fail the child's output.
    let mut lines = std::io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let restored = line.contains("disks restored");
        seen.push(line);
        if restored {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("disks restored")),
        "{}",
        seen.join("\n")
    );
    // Interrupt once the VM boots (its QEMU runs), not before `start`.
    let waited = std::time::Instant::now();
    while qemu_under(&d.join("sites/dr")).is_empty() {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(120),
            "no VM started:\n{}",
            seen.join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    // A liveness bound, far below the boot timeout: the run must notice
    // the interrupt while it waits for the agent.
    let began = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if began.elapsed() > std::time::Duration::from_secs(150) {
            let _ = child.kill();
            panic!("failover test still waits for the guest after Ctrl-C");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    seen.extend(lines.map_while(Result::ok));
    let all = format!("{}\n{err}", seen.join("\n"));
    assert!(!status.success(), "{all}");
    assert!(
        all.contains("interrupted while waiting for the guest agent"),
        "{all}"
    );
    assert!(!all.contains("did not answer: timed out"), "{all}");
    let o = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(["failover", "cleanup", "shop"])
        .current_dir(&d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(qemu_under(&d), Vec::<String>::new());
}
