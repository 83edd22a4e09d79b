//! Failover under a running application (issue 5's bars): the quickstart's
//! SQLite writer (scripts/db-writer.sh) keeps committing orders while
//! points are taken, and its quiesce hooks really pause it.
//! (1) 20 points taken while it writes: a test failover from each gives a
//! sound database holding exactly the rows the writer had at that point's
//! freeze. (2) A planned failover while it writes loses no committed row.

mod common;

use common::*;

#[test]
fn a_test_failover_from_each_of_20_points_holds_the_rows_of_its_freeze() {
    const POINTS: usize = 20;
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    ok(&root, &["vault", "init"]);
    let mut writer = Writer::start(&root, "sites/onprem/db/data.sqlite");
    for _ in 0..POINTS {
        writer.wait_for(1);
        let out = ok(&root, &["replicate"]);
        assert!(out.contains("protection.db: point"), "{out}");
    }
    writer.stop();
    let freezes = writer.freezes();
    assert_eq!(freezes.len(), POINTS, "one freeze per point");
    assert!(freezes.windows(2).all(|w| w[0] < w[1]), "{freezes:?}");

    let listed = points(&root);
    let db_points: Vec<&str> = listed
        .iter()
        .filter(|p| p["machine"] == "machine.db")
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(db_points.len(), POINTS);
    for (id, rows) in db_points.iter().zip(&freezes) {
        ok(
            &root,
            &[
                "failover",
                "test",
                "shop",
                "--point",
                id,
                "--approve",
                "dns",
            ],
        );
        let st = state(&root);
        let run = st["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "test")
            .unwrap();
        assert_eq!(
            run["machines"]["machine.db"]["point"]["id"].as_str(),
            Some(*id),
            "the test failover used the point asked for"
        );
        let replica = run["machines"]["machine.db"]["disks"]["data"]
            .as_str()
            .unwrap();
        let replica = std::path::Path::new(replica);
        assert!(replica.starts_with(root.join("sites/dr")), "{replica:?}");
        assert_eq!(
            standby::samples::sqlite_integrity(replica).unwrap(),
            "ok",
            "point {id}"
        );
        assert_eq!(orders(replica), *rows, "point {id}: rows at its freeze");
        ok(&root, &["failover", "cleanup", "shop"]);
    }
}

#[test]
fn a_planned_failover_while_the_writer_runs_loses_no_committed_row() {
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 16, 8);
    ok(&root, &["apply", "--auto-approve"]);
    let mut writer = Writer::start(&root, "sites/onprem/db/data.sqlite");
    writer.wait_for(30);
    // The db machine's shutdown hook (scripts/db-stop.sh) stops the writer
    // after its current transaction; the final point follows.
    ok(&root, &["failover", "planned", "shop", "--approve", "dns"]);
    assert!(writer.wait().success(), "the writer was shut down cleanly");
    let committed = writer.committed();
    assert!(committed >= 530, "{committed}");

    let at_dr = root.join("sites/dr/db/data.sqlite");
    assert_eq!(standby::samples::sqlite_integrity(&at_dr).unwrap(), "ok");
    assert_eq!(
        orders(&at_dr),
        committed,
        "every committed row is at the DR site"
    );
    // And nothing beyond the source's own final state.
    assert_eq!(orders(&root.join("sites/onprem/db/data.sqlite")), committed);
}
