//! The main job: `standby quickstart DIR` sets up the embedded configuration
//! and sample machines and runs plan, apply, replicate, restore and verify
//! end to end with the real binary and the real disk tools.

use std::process::Command;

fn standby() -> Command {
    Command::new(env!("CARGO_BIN_EXE_standby"))
}

#[test]
fn quickstart_runs_end_to_end_and_can_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");
    let db = dir.join("sites/onprem/db/data.sqlite");
    for round in 0..2 {
        if round == 1 {
            rerun_keeps_the_users_work(&dir, &db);
        }
        let out = standby()
            .arg("quickstart")
            .arg(&dir)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "round {round}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("PRAGMA integrity_check = ok"), "{stdout}");
        assert!(stdout.contains("e2fsck -fn clean"), "{stdout}");
        assert!(
            stdout.contains("# Drill of recovery_plan.shop: PASSED"),
            "{stdout}"
        );
        assert!(
            stdout.contains("No changes."),
            "apply must converge: {stdout}"
        );
    }
    assert_eq!(marker_rows(&db), 1, "the rerun reset the sample database");
    assert!(
        dir.join("README.md").exists(),
        "a deleted default file is written again"
    );
    // What it left is a working configuration: the user's next commands work.
    let plan = standby()
        .arg("-C")
        .arg(&dir)
        .args(["plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    let points = standby()
        .arg("-C")
        .arg(&dir)
        .args(["points", "--json"])
        .output()
        .unwrap();
    let points: serde_json::Value = serde_json::from_slice(&points.stdout).unwrap();
    let n = points
        .as_array()
        .map(|a| a.len())
        .or_else(|| points["points"].as_array().map(|a| a.len()));
    assert!(
        n.unwrap_or(0) >= 4,
        "two rounds of first points and a replicate each: {points}"
    );
}

#[test]
fn quickstart_refuses_a_directory_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("precious.txt"), "keep me").unwrap();
    let out = standby()
        .arg("quickstart")
        .arg(tmp.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not made by `standby quickstart`"));
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["precious.txt"], "nothing may be written into it");
}

/// Orders the test added by hand (`late-customer-1`).
fn marker_rows(db: &std::path::Path) -> u64 {
    let o = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT count(*) FROM orders WHERE customer = 'late-customer-1'")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// Between two runs: the user takes an order and edits the configuration.
/// A rerun with the edit, or with a configuration file added, refuses
/// before touching anything; without them (and with a default file
/// deleted) it runs on the user's data.
fn rerun_keeps_the_users_work(dir: &std::path::Path, db: &std::path::Path) {
    standby::samples::add_orders(db, 1).unwrap();
    let main = dir.join("main.hcl");
    let default = std::fs::read_to_string(&main).unwrap();
    let edited = default.replace("\"15m\"", "\"30m\"");
    assert_ne!(edited, default);
    std::fs::write(&main, &edited).unwrap();
    let state = std::fs::read(dir.join(".standby/state.json")).unwrap();
    let db_before = std::fs::read(db).unwrap();
    let out = standby()
        .arg("quickstart")
        .arg(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    // miette's line wrapping undone.
    let err = String::from_utf8_lossy(&out.stderr)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("main.hcl") && err.contains("changed nothing"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&main).unwrap(),
        edited,
        "the edit was overwritten"
    );
    assert!(std::fs::read(dir.join(".standby/state.json")).unwrap() == state);
    assert!(
        std::fs::read(db).unwrap() == db_before,
        "the database was touched"
    );
    std::fs::write(&main, default).unwrap();
    // Files the quickstart did not write are the user's configuration too
    // (issue 11 item 10): a new `mine.hcl`, a `standby.vars.hcl`.
    for (name, text) in [
        (
            "mine.hcl",
            "site \"lab\" {\n  provider = \"local\"\n  root     = \"sites/lab\"\n}\n",
        ),
        ("standby.vars.hcl", "unused = \"x\"\n"),
    ] {
        let added = dir.join(name);
        std::fs::write(&added, text).unwrap();
        let out = standby()
            .arg("quickstart")
            .arg(dir)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr)
            .replace('│', " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(&format!("{name} (added)")) && err.contains("changed nothing"),
            "{name}: {err}"
        );
        assert!(std::fs::read(dir.join(".standby/state.json")).unwrap() == state);
        assert!(
            std::fs::read(db).unwrap() == db_before,
            "{name}: db touched"
        );
        assert!(!dir.join("sites/lab").exists(), "{name} was applied");
        std::fs::remove_file(&added).unwrap();
    }
    std::fs::remove_file(dir.join("README.md")).unwrap();
}
