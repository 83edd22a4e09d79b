//! Issue 16, bar 3, through the real binary: prune killed (SIGKILL) at
//! random moments while a writer keeps taking points, with a short grace
//! period so marked data is really deleted during the run. What must hold:
//! the writer never fails except by saying a prune ran meanwhile (no point
//! taken), no blob any point references goes missing, `vault verify
//! --read-data` passes, and every listed point restores byte-identical to
//! its disks as they were when it was taken.
//!
//! CI kills 3 prunes; `STANDBY_PRUNE_KILLS=10` (bench/faults.sh) runs the
//! long form. `STANDBY_SEED` replays a run.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every point is past the quickstart's 24 h retention to a prune whose
/// clock runs this far ahead: each prune drops all but the newest points.
const AHEAD: &str = "1000h";

/// The most rounds the writer takes (see the loop).
const ROUNDS: u64 = 120;

fn prune(root: &Path, grace: &str) -> std::process::Command {
    let mut c = standby(root);
    c.args(["vault", "prune", "--wait", "120", "--grace", grace])
        .env("STANDBY_CLOCK_SKEW", AHEAD)
        .env("STANDBY_TEST_STORE_CLOCK_SKEW", AHEAD);
    c
}

#[test]
fn prune_killed_at_random_moments_while_writing_loses_no_blob() {
    let kills = count_from_env("STANDBY_PRUNE_KILLS", 3);
    let mut rng = Rng::seeded("prune kills");
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    ok(&root, &["vault", "init"]);
    let mut rounds = Rounds::new(&root, &d.path().join("refs"));
    rounds.next(0, None);
    let first = ok(&root, &["replicate", "--json"]);
    rounds.taken(&[], &taken(&first));

    let stop = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let mut writer_rng = Rng(rng.next() | 1);
    let (rounds, points, raced) = std::thread::scope(|s| {
        let (root, stop, written) = (&root, &stop, &written);
        let writer = s.spawn(move || {
            let rng = &mut writer_rng;
            let mut rounds = rounds;
            let (mut points, mut raced) = (0, 0);
            let mut round = 1;
            // At most ROUNDS rounds: each keeps a copy of the disks to
            // compare restores with (24 MiB), and a slow machine must not
            // fill its disk with them.
            while (!stop.load(Ordering::Relaxed) || points < 3) && round <= ROUNDS {
                // The same blocks of each system disk rewritten every
                // round: once a point is dropped, the pack its successor
                // replaced holds nothing live, and is marked, then deleted.
                for (_, disk, path) in &rounds.disks {
                    if disk == "system" {
                        rewrite(path, rng);
                    }
                }
                rounds.next(round, None);
                round += 1;
                let o = standby(root)
                    .args(["replicate", "--json"])
                    .output()
                    .unwrap();
                if o.status.success() {
                    rounds.taken(&[], &taken(&String::from_utf8_lossy(&o.stdout)));
                    points += 1;
                    written.fetch_add(1, Ordering::Relaxed);
                } else {
                    // The only failure allowed: told, and nothing committed.
                    assert!(
                        text(&o).contains("a prune ran while this point was written"),
                        "replicate failed:\n{}",
                        text(&o)
                    );
                    raced += 1;
                }
            }
            (rounds, points, raced)
        });
        // Some points to drop first (awaited, not slept for).
        while written.load(Ordering::Relaxed) < 2 {
            std::thread::yield_now();
        }
        // Each whole prune sets the time scale for the next kill, and
        // counts the packs it deleted.
        let whole = || {
            let started = Instant::now();
            let o = prune(root, "2s").output().unwrap();
            assert!(o.status.success(), "{}", text(&o));
            let n = packs_deleted(&String::from_utf8_lossy(&o.stdout));
            (started.elapsed(), n)
        };
        let (mut full, mut deleted) = whole();
        let mut interrupted = 0;
        for _ in 0..kills {
            let mut child = prune(root, "2s")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let delay = Duration::from_micros(rng.below(full.as_micros() as u64));
            std::thread::sleep(delay);
            child.kill().unwrap();
            if child.wait().unwrap().signal() == Some(9) {
                interrupted += 1;
            }
            // A whole prune after each kill: marks from earlier rounds come
            // due (2 s) and are deleted while the writer runs.
            let (took, n) = whole();
            (full, deleted) = (took, deleted + n);
        }
        // Until marked data has really been deleted while the writer runs
        // (2 s after it was marked, by the store's clock).
        let mut more = 0;
        while deleted == 0 {
            more += 1;
            assert!(more < 200, "no prune deleted anything");
            deleted += whole().1;
        }
        stop.store(true, Ordering::Relaxed);
        let (rounds, points, raced) = writer.join().unwrap();
        println!(
            "{kills} prune kills ({interrupted} before it finished); {points} points written, {raced} told a prune ran meanwhile; {deleted} packs deleted meanwhile"
        );
        assert!(
            interrupted > 0 || kills < 3,
            "no kill landed inside a prune"
        );
        (rounds, points, raced)
    });
    assert!(points >= 3, "{points} points, {raced} refused");

    // Nothing is missing: the structure check names every missing blob.
    let v = ok(&root, &["vault", "verify", "--read-data", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(
        report[0]["report"]["problems"],
        serde_json::json!([]),
        "{v}"
    );
    // Every listed point restores exactly.
    let listed: Vec<String> = point_ids(&ok(&root, &["points", "--json"]))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(!listed.is_empty());
    for id in &listed {
        let disks = rounds
            .expected
            .get(id)
            .unwrap_or_else(|| panic!("point {id} was never reported taken"));
        for (disk, reference) in disks {
            let to = d.path().join("restored");
            ok(
                &root,
                &["restore", id, "--disk", disk, "--to", to.to_str().unwrap()],
            );
            assert!(
                std::fs::read(&to).unwrap() == std::fs::read(reference).unwrap(),
                "point {id} disk {disk} does not restore to the disk as it was"
            );
            std::fs::remove_file(&to).unwrap();
        }
    }
    // With the writer stopped, marked data goes for good and the vault
    // still verifies.
    for _ in 0..2 {
        let o = prune(&root, "0s").output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    ok(&root, &["vault", "verify", "--read-data"]);
}

/// Blocks 64..80 of `path`, new random bytes.
fn rewrite(path: &Path, rng: &mut Rng) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let bytes: Vec<u8> = (0..16 * 4096).map(|_| rng.next() as u8).collect();
    f.write_all_at(&bytes, 64 * 4096).unwrap();
}

/// N in a prune's "deleted N packs".
fn packs_deleted(out: &str) -> u64 {
    out.split("; deleted ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// (point id, machine) of each point a `replicate --json` took.
fn taken(json: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let prot = p["protection"].as_str().unwrap();
            (
                p["id"].as_str().unwrap().to_string(),
                prot.replacen("protection.", "machine.", 1),
            )
        })
        .collect()
}
