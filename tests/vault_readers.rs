//! Issue 16, item 1's third part, through the real binary: readers take
//! no lock and survive a concurrent prune. Drills, restores, `points` and
//! `status` run in a loop beside a replicate-and-prune loop whose prune
//! drops every point but the newest (its clock is a day ahead of the
//! quickstart's 24 h retention) and folds the newest into a full map: not
//! one reader fails, and the drill history records no failure.
//! `STANDBY_PRUNE_LOOP_ROUNDS` sets the writer's rounds (CI: 12).

mod common;

use common::{count_from_env, ok, quickstart, standby, text};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn drills_and_restores_beside_a_prune_loop_never_fail() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 16, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    let rounds = count_from_env("STANDBY_PRUNE_LOOP_ROUNDS", 12);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let qs = qs.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let web = qs.join("sites/onprem/web/system.img");
            let mut pruned = 0;
            for round in 0..rounds {
                // A changed block each round, so each point is a delta.
                // Closed before replicate: a disk open for writing while
                // read makes a fuzzy point, which no drill or `latest` picks.
                {
                    let f = std::fs::OpenOptions::new().write(true).open(&web).unwrap();
                    std::os::unix::fs::FileExt::write_all_at(
                        &f,
                        &[round as u8 + 1; 4096],
                        (round % 64) * 4096 + (1 << 20),
                    )
                    .unwrap();
                }
                ok(&qs, &["replicate"]);
                let o = standby(&qs)
                    .args(["vault", "prune", "--wait", "600"])
                    .env("STANDBY_CLOCK_SKEW", "25h")
                    .env("STANDBY_TEST_STORE_CLOCK_SKEW", "25h")
                    .output()
                    .unwrap();
                assert!(o.status.success(), "prune: {}", text(&o));
                let out = String::from_utf8_lossy(&o.stdout).into_owned();
                if !out.contains("dropped 0 points") {
                    pruned += 1;
                }
            }
            done.store(true, Ordering::SeqCst);
            pruned
        })
    };
    let mut reads = 0;
    let mut failures = Vec::new();
    let out = d.path().join("web.img");
    while !done.load(Ordering::SeqCst) {
        let runs: [&[&str]; 4] = [
            &["drill", "shop", "--approve", "dns"],
            &[
                "restore",
                "latest",
                "--machine",
                "machine.web",
                "--disk",
                "system",
                "--force",
                "--to",
                out.to_str().unwrap(),
            ],
            &["points", "--json"],
            &["status", "--json"],
        ];
        for args in runs {
            let o = standby(&qs).args(args).output().unwrap();
            reads += 1;
            // status exits 2 for a WARNING; anything else is a failure.
            let code = o.status.code();
            if !(code == Some(0) || (args[0] == "status" && code == Some(2))) {
                failures.push(format!("{args:?}: {}", text(&o)));
            }
        }
    }
    let pruned = writer.join().unwrap();
    eprintln!("{reads} reads beside {rounds} replicate+prune rounds ({pruned} dropped points)");
    assert!(
        pruned >= rounds / 2,
        "the prune loop dropped points in only {pruned} rounds"
    );
    assert!(reads >= 8, "only {reads} reads ran beside the loop");
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let state = common::state(&qs);
    let drills = state["drills"].as_array().cloned().unwrap_or_default();
    assert!(!drills.is_empty());
    assert!(drills.iter().all(|r| r["passed"] == true), "{drills:?}");
    ok(&qs, &["vault", "verify", "--read-data"]);
}
