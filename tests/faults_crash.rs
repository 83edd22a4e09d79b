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
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 * 3 / 2));
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
