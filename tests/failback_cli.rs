//! Reprotect and failback on the quickstart, through the real binary and
//! the local provider: the delta in both directions (bar 1), refusals, and
//! failback killed with SIGKILL at random moments then rerun (bar 3).

mod common;

use common::{Rng, count_from_env, ok, points, quickstart, standby, text};
use serde_json::Value;
use standby::samples;
use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DISKS: [&str; 3] = ["db/system.img", "db/data.sqlite", "web/system.img"];

fn run(dir: &Path, args: &[&str]) -> Output {
    standby(dir).args(args).output().unwrap()
}

/// Quickstart applied, replicated, failed over (planned) and committed.
fn failed_over(d: &Path) -> PathBuf {
    let qs = quickstart(d, 16, 8);
    // The freeze hook also notes which database disk it was given.
    let machines = qs.join("machines.hcl");
    let hcl = std::fs::read_to_string(&machines).unwrap();
    let from = r#"freeze  = ["sh", "scripts/db-freeze.sh"]"#;
    assert!(hcl.contains(from));
    let hcl = hcl.replacen(
        from,
        r#"freeze  = ["sh", "-c", "echo \"$STANDBY_DISK_DATA\" >> .standby/freeze-disks && sh scripts/db-freeze.sh"]"#,
        1,
    );
    std::fs::write(&machines, hcl).unwrap();
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    ok(&qs, &["failover", "planned", "shop", "--approve", "dns"]);
    ok(&qs, &["failover", "commit", "shop"]);
    qs
}

fn ids(dir: &Path) -> BTreeSet<String> {
    points(dir)
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// Stored bytes of the points not in `before`.
fn stored_since(dir: &Path, before: &BTreeSet<String>) -> (usize, u64) {
    let new: Vec<Value> = points(dir)
        .into_iter()
        .filter(|p| !before.contains(p["id"].as_str().unwrap()))
        .collect();
    let bytes = new
        .iter()
        .map(|p| p["stats"]["stored"].as_u64().unwrap())
        .sum();
    (new.len(), bytes)
}

/// 4 KiB blocks that differ between two files (a longer file's tail counts).
fn differing_blocks(a: &Path, b: &Path) -> u64 {
    let a = std::fs::read(a).unwrap();
    let b = std::fs::read(b).unwrap();
    let n = a.len().max(b.len()).div_ceil(4096);
    (0..n)
        .filter(|i| {
            let r = i * 4096..(i + 1) * 4096;
            let x = a
                .get(r.start.min(a.len())..r.end.min(a.len()))
                .unwrap_or(&[]);
            let y = b
                .get(r.start.min(b.len())..r.end.min(b.len()))
                .unwrap_or(&[]);
            x != y
        })
        .count() as u64
}

/// Change 1% of the blocks of an ext4 image the way its machine would: a
/// file of that size written into the file system (debugfs), so the image
/// stays clean for the checks after failback.
fn write_file_into(img: &Path, name: &str, rng: &mut Rng) {
    let size = std::fs::metadata(img).unwrap().len() / 100;
    let src = img.with_extension(format!("{name}.src"));
    let data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
    std::fs::write(&src, data).unwrap();
    let o = Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg(format!("write {} {name}", src.display()))
        .arg(img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(src).unwrap();
}

/// The quickstart's writer on the DR database, control dir run/db-writer
/// (the quiesce hooks and the shutdown command speak to it there). Reaped
/// by a thread of its own: the shutdown command waits for its pid to go.
fn start_writer(qs: &Path) -> std::thread::JoinHandle<bool> {
    let mut child = Command::new("sh")
        .args([
            "scripts/db-writer.sh",
            "sites/dr/db/data.sqlite",
            "run/db-writer",
        ])
        .current_dir(qs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::spawn(move || child.wait().unwrap().success())
}

fn committed(qs: &Path) -> u64 {
    std::fs::read_to_string(qs.join("run/db-writer/committed"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_for_rows(qs: &Path, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(qs) < at_least {
        assert!(
            Instant::now() < deadline,
            "the writer did not reach {at_least} rows"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_state_valid(st: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/state.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(st).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{st}");
}

fn state(qs: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(qs.join(".standby/state.json")).unwrap()).unwrap()
}

/// Bytes standby's own process (not the machines it boots: pids that ran
/// `execve` after the first are left out) wrote to files under `dir`, from
/// an `strace -f -y` log: the return values of write calls on such files.
fn written_at_sink(trace: &Path, dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let text = std::fs::read_to_string(trace).unwrap();
    let dir = dir.canonicalize().unwrap();
    let prefix = format!("<{}/", dir.display());
    let mut children = BTreeSet::new();
    let mut first = true;
    for l in text.lines() {
        if l.contains("execve(") {
            if !first {
                children.insert(l.split_whitespace().next().unwrap_or("").to_string());
            }
            first = false;
        }
    }
    let mut by_file: std::collections::BTreeMap<String, u64> = Default::default();
    // With -f, a call that another thread interrupts is printed as
    // `PID pwrite64(5</path>, ... <unfinished ...>` and later
    // `PID <... pwrite64 resumed>...) = N`: the path is on the first line,
    // the count on the second, so remember the file per pid.
    let mut pending: std::collections::HashMap<String, String> = Default::default();
    for l in text.lines() {
        let pid = l.split_whitespace().next().unwrap_or("").to_string();
        if l.contains("execve(") || children.contains(&pid) {
            continue;
        }
        let file = if l.contains(" resumed>") {
            match pending.remove(&pid) {
                Some(f) => f,
                None => continue,
            }
        } else if l.contains(&prefix) {
            let f = l
                .split(&prefix)
                .nth(1)
                .and_then(|r| r.split('>').next())
                .unwrap_or("?")
                .to_string();
            if l.ends_with("<unfinished ...>") {
                pending.insert(pid, f);
                continue;
            }
            f
        } else {
            continue;
        };
        let Some(n) = l
            .rsplit("= ")
            .next()
            .and_then(|t| t.trim().parse::<u64>().ok())
        else {
            continue;
        };
        *by_file.entry(file).or_default() += n;
    }
    println!("written at the sink, by file: {by_file:?}");
    by_file
}

/// The bytes written in lines like `...: 4.0 KiB of 32.0 MiB written (4096
/// bytes, changed blocks only)` or `...: 0 B of 32.0 MiB written (changed
/// blocks only)`.
fn written_bytes(out: &str) -> u64 {
    out.lines()
        .filter(|l| l.contains(": disk ") && l.contains(" written ("))
        .map(|l| {
            let after = l.split(" written (").nth(1).unwrap();
            match after.split_once(" bytes, ") {
                Some((n, _)) => n.parse::<u64>().unwrap(),
                None => {
                    let before = l.split(" written (").next().unwrap();
                    let before = before.split(" of ").next().unwrap();
                    let n = before.rsplit(": ").next().unwrap();
                    n.strip_suffix(" B")
                        .unwrap_or_else(|| panic!("{l}"))
                        .parse::<u64>()
                        .unwrap()
                }
            }
        })
        .sum()
}

#[test]
fn failback_moves_only_changed_blocks_both_ways_and_loses_no_row() {
    let d = tempfile::tempdir().unwrap();
    let qs = failed_over(d.path());
    let dr = qs.join("sites/dr");
    let home = qs.join("sites/onprem");
    // The DR copies as the failover left them: the baseline of "changed".
    let base = d.path().join("base");
    for disk in DISKS {
        let to = base.join(disk);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(dr.join(disk), to).unwrap();
    }
    // Replicate skips the failed-over machines until reprotect.
    let o = run(&qs, &["replicate"]);
    assert!(text(&o).contains("until it is reprotected"), "{}", text(&o));

    // The business runs at DR: the database takes orders, files are written.
    let mut rng = Rng::seeded("failback-bar-1");
    let writer = start_writer(&qs);
    wait_for_rows(&qs, 520);
    write_file_into(&dr.join("db/system.img"), "dr-1", &mut rng);
    write_file_into(&dr.join("web/system.img"), "dr-1", &mut rng);

    let before = ids(&qs);
    let out = ok(&qs, &["reprotect", "shop"]);
    assert!(out.contains("first reverse point"), "{out}");
    let (n, first_stored) = stored_since(&qs, &before);
    assert_eq!(n, 2, "one reverse point per machine: {out}");
    // Its quiesce hooks ran with the machine's DR disks in their environment.
    let noted = std::fs::read_to_string(qs.join(".standby/freeze-disks")).unwrap();
    assert_eq!(
        noted.lines().last().unwrap(),
        dr.join("db/data.sqlite")
            .canonicalize()
            .unwrap()
            .to_str()
            .unwrap(),
        "{noted}"
    );
    let st = state(&qs);
    assert!(st["runs"][0]["reprotect"]["points"]["machine.db"]["id"].is_string());
    assert_state_valid(&st);
    // Status shows the direction (exit 2: forward points are old by now is fine).
    let o = run(&qs, &["status", "--json"]);
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    let placed = status["recoveries"].as_array().unwrap();
    assert_eq!(placed.len(), 2);
    assert!(
        placed.iter().all(|p| p["protection"] == "reverse"),
        "{status}"
    );
    // Replicate now captures the DR disks (the writer keeps going meanwhile).
    wait_for_rows(&qs, committed(&qs) + 20);
    let before_rep = ids(&qs);
    ok(&qs, &["replicate"]);
    let (n, rep_stored) = stored_since(&qs, &before_rep);
    assert_eq!(n, 2);
    write_file_into(&dr.join("db/system.img"), "dr-2", &mut rng);

    let home_before: Vec<Vec<u8>> = DISKS
        .iter()
        .map(|p| std::fs::read(home.join(p)).unwrap())
        .collect();
    let before_fb = ids(&qs);
    // The shutdown command stops the writer: every committed row must come home.
    // Under strace: the bytes written to the home disks are counted at
    // the sink (the write syscalls on those files), not by standby.
    let trace = d.path().join("failback.strace");
    let o = Command::new("strace")
        .args(["-f", "-y", "-qq", "--seccomp-bpf", "-e", "signal=none"])
        .args(["-e", "trace=execve,write,pwrite64,writev,pwritev,pwritev2"])
        .arg("-o")
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_standby"))
        .arg("-C")
        .arg(&qs)
        .args(["failback", "shop", "--approve", "dns"])
        .env("NO_COLOR", "1")
        .env_remove("STANDBY_TEST_AFTER_MATERIALIZE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "failback failed:\n{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let sink = written_at_sink(&trace, &home);
    let sink_written: u64 = sink.values().sum();
    assert!(writer.join().unwrap());
    let rows_at_dr = committed(&qs);
    assert!(rows_at_dr > 520);
    let (n, final_stored) = stored_since(&qs, &before_fb);
    assert_eq!(n, 2, "{out}");
    let written = written_bytes(&out);
    // One statement per disk: sizes for people, the exact count beside.
    assert!(!out.contains("(bytes written:"), "{out}");
    assert!(out.contains("changed blocks only)"), "{out}");

    let changed: u64 = DISKS
        .iter()
        .map(|p| differing_blocks(&base.join(p), &dr.join(p)))
        .sum::<u64>()
        * 4096;
    let reverse_stored = first_stored + rep_stored + final_stored;
    println!(
        "changed {changed} B, reverse points stored {reverse_stored} B, written home {written} B"
    );
    assert!(changed > 0);
    assert!(
        reverse_stored <= 2 * changed,
        "stored {reverse_stored} for {changed} changed"
    );
    assert!(
        written <= 2 * changed,
        "wrote {written} for {changed} changed:\n{out}"
    );
    assert!(written > 0);
    // Every block of a system image that differs now from before the
    // failback had to be written by standby (the booted database writes
    // data.sqlite itself): the trace misses no write.
    let mut must = 0;
    let mut seen = 0;
    for (i, disk) in DISKS
        .iter()
        .enumerate()
        .filter(|(_, d)| d.ends_with("system.img"))
    {
        let before = d.path().join(format!("home-before-{i}"));
        std::fs::write(&before, &home_before[i]).unwrap();
        must += differing_blocks(&before, &home.join(disk)) * 4096;
        seen += sink.get(*disk).copied().unwrap_or(0);
    }
    println!(
        "written home, counted at the sink: {sink_written} B; system images: {seen} B written, {must} B changed"
    );
    assert!(
        seen >= must,
        "the trace saw {seen} B written to the system images, but {must} B changed there"
    );
    assert!(
        sink_written <= 2 * changed,
        "the home disks received {sink_written} B of writes for {changed} B changed"
    );
    assert!(sink_written > 0, "nothing was written home");
    // Home disks equal the DR copies, and they did change.
    for (i, disk) in DISKS.iter().enumerate() {
        let now = std::fs::read(home.join(disk)).unwrap();
        assert!(
            now == std::fs::read(dr.join(disk)).unwrap(),
            "{disk} differs from its DR copy"
        );
        assert!(now != home_before[i], "{disk} did not change");
    }
    assert_eq!(
        samples::sqlite_orders(&home.join("db/data.sqlite")).unwrap(),
        rows_at_dr
    );
    assert_eq!(
        samples::sqlite_integrity(&home.join("db/data.sqlite")).unwrap(),
        "ok"
    );
    assert!(samples::ext4_is_clean(&home.join("db/system.img")).unwrap());
    // The failover is gone from the state; a second failback has nothing to do.
    let st = state(&qs);
    assert!(st["runs"].as_array().is_none_or(|r| r.is_empty()), "{st}");
    let o = run(&qs, &["failback", "shop"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not failed over"), "{}", text(&o));

    // Forward protection resumes from the home disks without a resync.
    let before_fwd = ids(&qs);
    ok(&qs, &["replicate"]);
    let (n, fwd_stored) = stored_since(&qs, &before_fwd);
    assert_eq!(n, 2);
    assert!(
        fwd_stored < 64 * 1024,
        "forward replicate stored {fwd_stored} bytes"
    );
}

#[test]
fn reprotect_and_failback_refuse_out_of_order() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    let o = run(&qs, &["reprotect", "shop"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not failed over"), "{}", text(&o));
    assert!(
        text(&o).contains("standby failover planned shop"),
        "{}",
        text(&o)
    );
    let o = run(&qs, &["failback", "shop"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not failed over"), "{}", text(&o));

    ok(&qs, &["failover", "planned", "shop", "--approve", "dns"]);
    let o = run(&qs, &["reprotect", "shop"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not committed"), "{}", text(&o));
    assert!(
        text(&o).contains("standby failover commit shop"),
        "{}",
        text(&o)
    );
    ok(&qs, &["failover", "commit", "shop"]);
    let before = state(&qs);
    let o = run(&qs, &["failback", "shop"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not reprotected"), "{}", text(&o));
    assert!(text(&o).contains("standby reprotect shop"), "{}", text(&o));
    // Refusals change nothing.
    let after = state(&qs);
    assert_eq!(before["runs"], after["runs"]);
    ok(&qs, &["reprotect", "shop"]);
    let o = run(&qs, &["reprotect", "shop"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already reprotected"), "{}", text(&o));
    // Options of a failover that mean nothing here are refused, not ignored.
    for (arg, why) in [
        (&["--instant"][..], "--instant does not apply to a failback"),
        (
            &["--point", "latest"][..],
            "--point does not apply to a failback",
        ),
    ] {
        let mut args = vec!["failback", "shop"];
        args.extend(arg);
        let o = run(&qs, &args);
        assert!(!o.status.success());
        assert!(text(&o).contains(why), "{}", text(&o));
    }

    // An original disk that is gone is restored in full, and said so.
    let home_web = qs.join("sites/onprem/web/system.img");
    std::fs::remove_file(&home_web).unwrap();
    let reports = d.path().join("failback-report");
    let dir = reports.to_string_lossy().into_owned();
    let out = ok(
        &qs,
        &["failback", "shop", "--approve", "dns", "--report-dir", &dir],
    );
    assert!(out.contains("missing, restored in full"), "{out}");
    // Its report is a failback's, not the failover's it ends.
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["kind"], "failback", "{r:#}");
    let md = std::fs::read_to_string(reports.join("report.md")).unwrap();
    assert!(md.starts_with("# Failback of recovery_plan.shop"), "{md}");
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("name=\"standby failback\""), "{junit}");
    assert!(
        std::fs::read(&home_web).unwrap()
            == std::fs::read(qs.join("sites/dr/web/system.img")).unwrap()
    );
}

/// Wait for `child` up to `after`, then SIGKILL it if it still runs.
fn kill_after(child: &mut Child, after: Duration) -> bool {
    let deadline = Instant::now() + after;
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn failback_killed_at_random_moments_completes_when_rerun() {
    let rounds = count_from_env(
        "STANDBY_LONG_ROUNDS",
        if std::env::var_os("STANDBY_LONG").is_some() {
            10
        } else {
            3
        },
    );
    let mut rng = Rng::seeded("failback-kill");
    for round in 0..rounds {
        let d = tempfile::tempdir().unwrap();
        let qs = failed_over(d.path());
        let dr = qs.join("sites/dr");
        let home = qs.join("sites/onprem");
        let writer = start_writer(&qs);
        wait_for_rows(&qs, 510);
        // Scattered writes at DR, 1% of each image.
        for disk in ["db/system.img", "web/system.img"] {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dr.join(disk))
                .unwrap();
            let blocks = f.metadata().unwrap().len() / 4096;
            // Free blocks at the image's end keep e2fsck happy.
            for _ in 0..blocks / 100 {
                let b = blocks - 1 - rng.below(blocks / 4);
                let data: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
                f.write_all_at(&data, b * 4096).unwrap();
            }
        }
        ok(&qs, &["reprotect", "shop"]);
        // Kill failback after a random delay, a few times, then let it finish.
        // The first attempt dies right after the final reverse points are
        // recorded, before any home disk is written (the worst moment);
        // later ones at random.
        let o = standby(&qs)
            .args(["failback", "shop", "--approve", "dns"])
            .env(standby::recovery::failback::TEST_HOOK_ENV, "kill -9 $PPID")
            .output()
            .unwrap();
        assert!(!o.status.success(), "{}", text(&o));
        let st = state(&qs);
        assert_state_valid(&st);
        assert_eq!(
            st["runs"][0]["failback"]["final_points"]
                .as_object()
                .unwrap()
                .len(),
            2
        );
        let mut kills = 1;
        for attempt in 0..20 {
            let mut child = standby(&qs)
                .args(["failback", "shop", "--approve", "dns"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let delay = if attempt < 3 {
                Duration::from_millis(rng.below(500))
            } else {
                Duration::from_secs(120)
            };
            if kill_after(&mut child, delay) {
                kills += 1;
                continue;
            }
            break;
        }
        let st = state(&qs);
        assert!(
            st["runs"].as_array().is_none_or(|r| r.is_empty()),
            "round {round}, {kills} kills: {st}"
        );
        assert!(writer.join().unwrap());
        let rows = committed(&qs);
        assert_eq!(
            samples::sqlite_orders(&home.join("db/data.sqlite")).unwrap(),
            rows,
            "round {round}"
        );
        for disk in DISKS {
            assert!(
                std::fs::read(home.join(disk)).unwrap() == std::fs::read(dr.join(disk)).unwrap(),
                "round {round}: {disk} differs from the final reverse point"
            );
        }
        let o = run(&qs, &["vault", "verify", "--read-data"]);
        assert!(o.status.success(), "round {round}: {}", text(&o));
        println!("round {round}: {kills} kill(s), {rows} rows home");
    }
}

#[test]
fn the_first_reverse_point_diffs_against_the_point_the_replica_came_from() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    let a = points(&qs)
        .iter()
        .rev()
        .find(|p| p["machine"] == "machine.web")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .unwrap();
    // The source goes on changing after point A: 200 blocks in point B.
    let web = qs.join("sites/onprem/web/system.img");
    let f = std::fs::OpenOptions::new().write(true).open(&web).unwrap();
    let mut rng = Rng::seeded("baseline");
    let blocks = f.metadata().unwrap().len() / 4096;
    for i in 0..200 {
        let data: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        f.write_all_at(&data, (blocks - 1 - i) * 4096).unwrap();
    }
    ok(&qs, &["replicate"]);
    // Unplanned failover from A: the replica holds A, not the newer B.
    ok(
        &qs,
        &[
            "failover",
            "unplanned",
            "shop",
            "--point",
            &a,
            "--approve",
            "dns",
        ],
    );
    ok(&qs, &["failover", "commit", "shop"]);
    let before = ids(&qs);
    let out = ok(&qs, &["reprotect", "shop"]);
    let (n, stored) = stored_since(&qs, &before);
    assert_eq!(n, 2);
    // Nothing was written at DR, so nothing is stored; and the point's
    // parent is A, the point the replica holds, not the newer B.
    assert!(stored < 64 * 1024, "stored {stored}:\n{out}");
    let reverse = points(&qs)
        .into_iter()
        .find(|p| p["machine"] == "machine.web" && !before.contains(p["id"].as_str().unwrap()))
        .unwrap();
    assert_eq!(
        reverse["disks"]["system"]["parent"],
        a.as_str(),
        "{reverse}"
    );
}
