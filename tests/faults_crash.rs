//! Crash faults (issue 7): `replicate` killed with SIGKILL at random
//! moments, then run again. What must hold: every run after a kill works,
//! `vault verify --read-data` passes, no half-written point is ever listed,
//! and every point that was listed restores byte-identical to the disks as
//! they were when it was taken. Stale staging copies do not pile up.
//!
//! CI runs a few kills; `STANDBY_REPLICATE_KILLS=100` (bench/faults.sh) runs
//! the long form. `STANDBY_SEED` replays a run.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn replicate_killed_at_random_moments_never_lists_a_broken_point() {
    let kills = count_from_env("STANDBY_REPLICATE_KILLS", 5);
    let mut rng = Rng::seeded("replicate kills");
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    ok(&root, &["vault", "init"]);
    let mut rounds = Rounds::new(&root, &d.path().join("refs"));
    let ids = || point_ids(&ok(&root, &["points", "--json"]));

    // One uninterrupted run sets the time scale for the kills.
    rounds.next(0, None);
    let started = Instant::now();
    ok(&root, &["replicate"]);
    let full = started.elapsed();
    rounds.taken(&[], &ids());

    let mut interrupted = 0;
    for round in 1..=kills {
        rounds.next(round, Some(&mut rng));
        let before = ids();
        let mut child = standby(&root)
            .arg("replicate")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Within the time a whole run took: a kill after the run ended proves
        // nothing, and three of those in a row fail the check below.
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64));
        std::thread::sleep(delay);
        child.kill().unwrap();
        if !child.wait().unwrap().success() {
            interrupted += 1;
        }
        // Whatever the kill left: listed points are whole, the vault is sound.
        rounds.taken(&before, &ids());
        ok(&root, &["vault", "verify", "--read-data"]);
    }
    // The next run after the last kill works.
    rounds.next(kills + 1, None);
    let before = ids();
    ok(&root, &["replicate"]);
    rounds.taken(&before, &ids());
    ok(&root, &["vault", "verify", "--read-data"]);

    // Every listed point restores exactly what its disks held.
    assert_eq!(rounds.expected.len(), ids().len());
    rounds.check_all(d.path(), |id, disk, to| {
        ok(
            &root,
            &["restore", id, "--disk", disk, "--to", to.to_str().unwrap()],
        );
    });
    // Killed runs leave no staging copies behind once a run has finished.
    let staging = root.join(".standby/cache/staging");
    let left = std::fs::read_dir(&staging).map(|r| r.count()).unwrap_or(0);
    assert_eq!(left, 0, "stale staging copies in {}", staging.display());
    println!(
        "{kills} kills ({interrupted} before replicate finished); {} points, all restore exactly",
        rounds.expected.len()
    );
    assert!(interrupted > 0 || kills < 3, "no kill landed inside a run");
}

/// Every file under `dir` whose name ends with `.partial`.
fn partials(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(partials(&p));
        } else if p.to_string_lossy().ends_with(".partial") {
            out.push(p);
        }
    }
    out
}

/// A failover killed with SIGKILL while it restores (machine.db's disks
/// written, machine.web's not yet): the state says what it did, nothing
/// half-written is left as a disk, and a rerun completes with sound disks.
#[test]
fn a_failover_killed_while_restoring_can_be_run_again() {
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    ok(&root, &["apply", "--auto-approve"]);
    ok(&root, &["replicate"]);
    let dr = root.join("sites/dr");
    // Runs right after a machine's disks are restored: for machine.db it
    // kills standby itself (its parent), in the middle of the restores.
    let hook = r#"[ "$STANDBY_MACHINE" = machine.db ] && kill -9 $PPID; true"#;
    let o = standby(&root)
        .args(["failover", "unplanned", "shop", "--approve", "dns"])
        .env("STANDBY_TEST_AFTER_MATERIALIZE", hook)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(9), "not killed:\n{}", text(&o));
    assert!(dr.join("db/system.img").exists(), "machine.db was restored");
    assert!(
        !dr.join("web/system.img").exists(),
        "machine.web was not restored yet: the kill was mid-restore"
    );
    assert!(partials(&dr).is_empty(), "{:?}", partials(&dr));
    let st = state(&root);
    assert_eq!(st["runs"][0]["phase"], "running", "{st:#}");

    let out = ok(
        &root,
        &["failover", "unplanned", "shop", "--approve", "dns"],
    );
    assert!(out.contains("complete"), "{out}");
    let st = state(&root);
    let runs = st["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{st:#}");
    assert_eq!(runs[0]["phase"], "completed");
    assert!(partials(&dr).is_empty(), "{:?}", partials(&dr));
    for img in ["db/system.img", "web/system.img"] {
        assert!(
            standby::samples::ext4_is_clean(&dr.join(img)).unwrap(),
            "{img} is not clean after the rerun"
        );
    }
    assert!(orders(&dr.join("db/data.sqlite")) > 0);
}

/// Runs `standby ARGS` in `root` and SIGKILLs it once it waits for an
/// approval (both groups up); its output so far.
fn kill_while_waiting(root: &std::path::Path, args: &[&str]) -> String {
    use std::io::BufRead;
    let mut child = standby(root)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut seen = String::new();
    for l in std::io::BufReader::new(out).lines() {
        let Ok(l) = l else { break };
        seen.push_str(&l);
        seen.push('\n');
        if l.contains("waiting for `standby approve") {
            child.kill().unwrap();
            break;
        }
    }
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "it ended before waiting:\n{seen}");
    seen
}

/// A failover killed after its machines came up (waiting for the DNS
/// approval), whose DR database then takes orders: a rerun from another
/// point says it replaces what the interrupted run brought up and
/// restores that point; a rerun from the same point keeps both machines
/// as they are (no restore), so the orders taken at DR stay.
#[test]
fn a_rerun_keeps_machines_an_interrupted_failover_brought_up() {
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    let (home, dr) = (
        root.join("sites/onprem/db/data.sqlite"),
        root.join("sites/dr/db/data.sqlite"),
    );
    ok(&root, &["apply", "--auto-approve"]);
    ok(&root, &["replicate"]);
    let first = points(&root)
        .iter()
        .find(|p| p["machine"] == "machine.db")
        .and_then(|p| p["id"].as_str())
        .unwrap()
        .to_string();
    let at_first = orders(&home);
    standby::samples::add_orders(&home, 7).unwrap();
    ok(&root, &["replicate"]);
    let wait = ["failover", "unplanned", "shop", "--wait-for-approval"];

    let out = kill_while_waiting(&root, &wait);
    assert!(out.contains("machine.db: up"), "{out}");
    assert_eq!(orders(&dr), at_first + 7);
    standby::samples::add_orders(&dr, 3).unwrap();

    // Another point: what the interrupted run brought up is replaced, and
    // said so.
    let mut older: Vec<&str> = wait.to_vec();
    older.extend(["--point", &first]);
    let out = kill_while_waiting(&root, &older);
    assert!(
        out.contains("machine.db: WARNING: run") && out.contains("stopped and recovered afresh"),
        "{out}"
    );
    assert!(out.contains("machine.db: disks restored"), "{out}");
    assert_eq!(orders(&dr), at_first, "the older point was restored");
    standby::samples::add_orders(&dr, 5).unwrap();

    // The same point again, to the end: both machines kept as they are.
    let out = ok(
        &root,
        &[
            "failover",
            "unplanned",
            "shop",
            "--point",
            &first,
            "--approve",
            "dns",
        ],
    );
    for m in ["machine.db", "machine.web"] {
        assert!(out.contains(&format!("{m}: kept running as run")), "{out}");
        assert!(!out.contains(&format!("{m}: disks restored")), "{out}");
    }
    assert_eq!(orders(&dr), at_first + 5, "the orders taken at DR are kept");
    let st = state(&root);
    assert_eq!(st["runs"][0]["phase"], "completed", "{st:#}");
    assert!(!st.to_string().contains("placed_by"), "{st:#}");
}

/// The same for a planned failover: its rerun takes new final points of
/// the stopped sources, which hold the same data as the first attempt's,
/// so the machines it brought up are kept with what they wrote at DR.
#[test]
fn a_planned_rerun_keeps_machines_its_interrupted_attempt_brought_up() {
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    let dr = root.join("sites/dr/db/data.sqlite");
    ok(&root, &["apply", "--auto-approve"]);
    ok(&root, &["replicate"]);
    let out = kill_while_waiting(
        &root,
        &["failover", "planned", "shop", "--wait-for-approval"],
    );
    assert!(out.contains("machine.db: up"), "{out}");
    let before = orders(&dr);
    standby::samples::add_orders(&dr, 4).unwrap();
    let out = ok(&root, &["failover", "planned", "shop", "--approve", "dns"]);
    for m in ["machine.db", "machine.web"] {
        assert!(out.contains(&format!("{m}: kept running as run")), "{out}");
    }
    assert_eq!(orders(&dr), before + 4, "the orders taken at DR are kept");
}

/// A failover killed with SIGKILL in the middle of writing a disk (a
/// `.partial` holds part of its bytes): the rerun removes the leftover and
/// completes, and the disks equal the point byte for byte.
#[test]
fn a_failover_killed_mid_write_leaves_no_partial_after_the_rerun() {
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 32, 8);
    // 20 MiB of incompressible data, so the restore takes a while.
    let img = root.join("sites/onprem/db/system.img");
    let mut rng = Rng::seeded("failover mid-write");
    let src = d.path().join("random.bin");
    let data: Vec<u8> = (0..20 << 20).map(|_| rng.next() as u8).collect();
    std::fs::write(&src, data).unwrap();
    let o = std::process::Command::new("debugfs")
        .args(["-w", "-R", &format!("write {} random.bin", src.display())])
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    ok(&root, &["apply", "--auto-approve"]);
    let dr = root.join("sites/dr");
    let mut child = standby(&root)
        .args(["failover", "unplanned", "shop", "--approve", "dns"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as a disk is partly written.
    let deadline = Instant::now() + Duration::from_secs(120);
    let caught = loop {
        let part = partials(&dr)
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
        if let Some(p) = part {
            child.kill().unwrap();
            break Some(p);
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    child.wait().unwrap();
    let caught = caught.expect("the failover finished before a disk was partly written");
    assert!(caught.exists(), "the kill left {} behind", caught.display());
    assert_eq!(state(&root)["runs"][0]["phase"], "running");

    let out = ok(
        &root,
        &["failover", "unplanned", "shop", "--approve", "dns"],
    );
    assert!(out.contains("complete"), "{out}");
    assert!(partials(&dr).is_empty(), "{:?}", partials(&dr));
    for img in ["db/system.img", "web/system.img"] {
        assert_eq!(
            std::fs::read(dr.join(img)).unwrap(),
            std::fs::read(root.join("sites/onprem").join(img)).unwrap(),
            "{img} differs from the point"
        );
    }
}
