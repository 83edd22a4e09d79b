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
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Change a disk in a few scattered places, as a running machine would.
fn churn(path: &Path, rng: &mut Rng) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let blocks = f.metadata().unwrap().len() / 4096;
    for _ in 0..(1 + rng.below(40)) {
        let block: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        f.write_all_at(&block, rng.below(blocks) * 4096).unwrap();
    }
}

fn ids(root: &Path) -> Vec<(String, String)> {
    points(root)
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["machine"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn replicate_killed_at_random_moments_never_lists_a_broken_point() {
    let kills = count_from_env("STANDBY_REPLICATE_KILLS", 5);
    let mut rng = Rng::seeded("replicate kills");
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    ok(&root, &["vault", "init"]);
    let disks = [
        (
            "machine.db",
            "system",
            root.join("sites/onprem/db/system.img"),
        ),
        (
            "machine.db",
            "data",
            root.join("sites/onprem/db/data.sqlite"),
        ),
        (
            "machine.web",
            "system",
            root.join("sites/onprem/web/system.img"),
        ),
    ];
    // What each point must restore to: (machine, disk) -> copy of the disk
    // when the point was taken.
    let mut expected: BTreeMap<String, Vec<(String, PathBuf)>> = BTreeMap::new();
    let refs = d.path().join("refs");
    std::fs::create_dir_all(&refs).unwrap();
    let snapshot_round = |round: u64| -> BTreeMap<String, Vec<(String, PathBuf)>> {
        let mut by_machine: BTreeMap<String, Vec<(String, PathBuf)>> = BTreeMap::new();
        for (machine, disk, path) in &disks {
            let copy = refs.join(format!("{round}-{machine}-{disk}"));
            std::fs::copy(path, &copy).unwrap();
            by_machine
                .entry(machine.to_string())
                .or_default()
                .push((disk.to_string(), copy));
        }
        by_machine
    };

    // One uninterrupted run sets the time scale for the kills.
    let round0 = snapshot_round(0);
    let started = Instant::now();
    ok(&root, &["replicate"]);
    let full = started.elapsed();
    for (id, machine) in ids(&root) {
        expected.insert(id, round0[&machine].clone());
    }

    let mut interrupted = 0;
    for round in 1..=kills {
        for (_, _, path) in &disks {
            churn(path, &mut rng);
        }
        let now = snapshot_round(round);
        let before: Vec<_> = ids(&root);
        let mut child = standby(&root)
            .arg("replicate")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 * 3 / 2));
        std::thread::sleep(delay);
        child.kill().unwrap();
        if !child.wait().unwrap().success() {
            interrupted += 1;
        }
        // Whatever the kill left: listed points are whole, the vault is sound.
        let after = ids(&root);
        for (id, machine) in &after {
            if !before.contains(&(id.clone(), machine.clone())) {
                expected.insert(id.clone(), now[machine].clone());
            }
        }
        ok(&root, &["vault", "verify", "--read-data"]);
    }
    // The next run after the last kill works.
    ok(&root, &["replicate"]);
    let last = snapshot_round(kills + 1);
    let listed = ids(&root);
    for (id, machine) in &listed {
        expected
            .entry(id.clone())
            .or_insert_with(|| last[machine].clone());
    }
    ok(&root, &["vault", "verify", "--read-data"]);

    // Every listed point restores exactly what its disks held.
    for (id, _) in &listed {
        for (disk, reference) in &expected[id] {
            let to = d.path().join("restored");
            ok(
                &root,
                &["restore", id, "--disk", disk, "--to", to.to_str().unwrap()],
            );
            assert!(
                std::fs::read(&to).unwrap() == std::fs::read(reference).unwrap(),
                "point {id} disk {disk} does not restore to the disk as it was"
            );
        }
    }
    // Killed runs leave no staging copies behind once a run has finished.
    let staging = root.join(".standby/cache/staging");
    let left = std::fs::read_dir(&staging).map(|r| r.count()).unwrap_or(0);
    assert_eq!(left, 0, "stale staging copies in {}", staging.display());
    println!(
        "{kills} kills ({interrupted} before replicate finished); {} points, all restore exactly",
        listed.len()
    );
    assert!(interrupted > 0 || kills < 3, "no kill landed inside a run");
}
