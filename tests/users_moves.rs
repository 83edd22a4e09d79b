//! Refactoring never destroys recovery points (issue 12, item 1), through
//! the real binary: a `moved` block or `standby state mv` renames a
//! protection or machine; the plan shows a move and no destroy, apply keeps
//! every point, and the next replicate stores only changed blocks on top of
//! the old chain. `standby show PLANFILE` renders a saved plan.

mod common;

use common::{ok, points, quickstart, standby, text};
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::Path;

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    standby(dir).args(args).output().unwrap()
}

fn validate_plan(doc: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/plan.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let v = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{from:?} not in {}:\n{s}", path.display());
    std::fs::write(path, s.replace(from, to)).unwrap();
}

/// The ids of the points of `field` == `addr`, oldest first.
fn ids_of(dir: &Path, field: &str, addr: &str) -> Vec<String> {
    points(dir)
        .iter()
        .filter(|p| p[field] == addr)
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// Write 8 KiB of new data into the web machine's disk, then replicate, and
/// return the new point of `machine.<name>`.
fn change_and_replicate(qs: &Path, name: &str) -> Value {
    let img = qs.join("sites/onprem/web/system.img");
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[0x5a; 8192], 4 << 20).unwrap();
    drop(f);
    let before = points(qs).len();
    ok(qs, &["replicate"]);
    let all = points(qs);
    assert!(all.len() > before, "no new point");
    all.into_iter()
        .rev()
        .find(|p| p["machine"] == format!("machine.{name}"))
        .unwrap()
}

#[test]
fn renaming_a_protection_with_a_moved_block_keeps_every_point() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    let web_points = ids_of(&qs, "protection", "protection.web");
    assert_eq!(web_points.len(), 2);

    edit(
        &qs.join("protection.hcl"),
        "protection \"web\" {",
        "protection \"webserver\" {",
    );
    std::fs::write(
        qs.join("moved.hcl"),
        "moved {\n  from = protection.web\n  to   = protection.webserver\n}\n",
    )
    .unwrap();
    let o = run(&qs, &["validate"]);
    assert!(o.status.success(), "{}", text(&o));

    let o = run(&qs, &["plan", "-detailed-exitcode", "-out", "move.plan"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("# protection.web has moved to protection.webserver"),
        "{out}"
    );
    assert!(
        out.contains("Plan: 1 to move, 0 to add, 0 to change, 0 to destroy."),
        "{out}"
    );
    assert!(
        !out.contains("destroy") || out.contains("0 to destroy"),
        "{out}"
    );
    assert!(
        !out.contains("points_destroyed") && !out.contains("recovery points will be"),
        "{out}"
    );

    // The saved plan renders alike, in every format, without the config.
    let shown = ok(&qs, &["show", "move.plan"]);
    assert!(
        shown.contains("# protection.web has moved to protection.webserver"),
        "{shown}"
    );
    let md = ok(&qs, &["show", "move.plan", "-format", "markdown"]);
    assert!(
        md.contains("| `->` move | `protection.webserver` | moved from `protection.web` |"),
        "{md}"
    );
    let doc: Value =
        serde_json::from_str(&ok(&qs, &["show", "move.plan", "--format", "json"])).unwrap();
    validate_plan(&doc);
    let changes = doc["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{doc}");
    assert_eq!(changes[0]["action"], "move");
    assert_eq!(changes[0]["address"], "protection.webserver");
    assert_eq!(changes[0]["moved_from"], "protection.web");

    // Apply the saved plan: no --allow-destroy needed, nothing destroyed.
    let out = ok(&qs, &["apply", "move.plan"]);
    assert!(
        out.contains("protection.web -> protection.webserver: moved, 2 recovery points follow it"),
        "{out}"
    );
    assert!(
        out.contains("Apply complete: 1 moved, 0 added, 0 changed, 0 destroyed."),
        "{out}"
    );
    assert_eq!(
        ids_of(&qs, "protection", "protection.webserver"),
        web_points
    );
    assert!(ids_of(&qs, "protection", "protection.web").is_empty());
    let st = common::state(&qs);
    assert!(st["objects"].get("protection.webserver").is_some(), "{st}");
    assert!(st["objects"].get("protection.web").is_none(), "{st}");
    // The moved block is now a no-op; status shows the points under the new name.
    let o = run(&qs, &["plan", "-detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let status: Value = serde_json::from_slice(&run(&qs, &["status", "--json"]).stdout).unwrap();
    let web = status["protections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["protection"] == "protection.webserver")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(web["points"], 2, "{web}");

    // The next point is a delta on the old chain: a few blocks, not a full copy.
    let p = change_and_replicate(&qs, "web");
    assert_eq!(p["protection"], "protection.webserver");
    assert_eq!(
        p["disks"]["system"]["parent"],
        web_points[1].as_str(),
        "{p}"
    );
    let stored = p["stats"]["stored"].as_u64().unwrap();
    assert!(
        stored < 256 << 10,
        "stored {stored} bytes for 8 KiB changed on an 8 MiB disk: {p}"
    );
}

#[test]
fn renaming_a_machine_and_state_mv_keep_points() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    let web_points = ids_of(&qs, "machine", "machine.web");
    assert_eq!(web_points.len(), 1);

    // A machine renamed into a for_each instance, with the references to it.
    edit(
        &qs.join("machines.hcl"),
        "machine \"web\" {",
        "machine \"web\" {\n  for_each = toset([\"a\"])",
    );
    edit(
        &qs.join("protection.hcl"),
        "machine.web\n",
        "machine.web[\"a\"]\n",
    );
    edit(
        &qs.join("recovery.hcl"),
        "[machine.web]",
        "[machine.web[\"a\"]]",
    );
    std::fs::write(
        qs.join("moved.hcl"),
        "moved {\n  from = machine.web\n  to   = machine.web[\"a\"]\n}\n",
    )
    .unwrap();
    let o = run(&qs, &["plan"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("# machine.web has moved to machine.web[\"a\"]"),
        "{out}"
    );
    assert!(
        !out.contains("will be destroyed") && !out.contains("must be replaced"),
        "{out}"
    );
    let out = ok(&qs, &["apply", "-auto-approve"]);
    assert!(
        out.contains("machine.web -> machine.web[\"a\"]: moved, 1 recovery point follows it"),
        "{out}"
    );
    assert_eq!(ids_of(&qs, "machine", "machine.web[\"a\"]"), web_points);
    let p = change_and_replicate(&qs, "web[\"a\"]");
    assert_eq!(
        p["disks"]["system"]["parent"],
        web_points[0].as_str(),
        "{p}"
    );
    assert!(p["stats"]["stored"].as_u64().unwrap() < 256 << 10, "{p}");

    // state mv: the same rename by hand, then the configuration follows.
    std::fs::remove_file(qs.join("moved.hcl")).unwrap();
    let db_points = ids_of(&qs, "protection", "protection.db");
    let out = ok(
        &qs,
        &["state", "mv", "protection.db", "protection.database"],
    );
    assert!(
        out.contains("protection.db -> protection.database: moved"),
        "{out}"
    );
    assert_eq!(ids_of(&qs, "protection", "protection.database"), db_points);
    edit(
        &qs.join("protection.hcl"),
        "protection \"db\" {",
        "protection \"database\" {",
    );
    let o = run(&qs, &["plan", "-detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Refusals name the problem and change nothing.
    let before = std::fs::read(qs.join(".standby/state.json")).unwrap();
    for (args, says) in [
        (
            &["state", "mv", "protection.nope", "protection.x"][..],
            "protection.nope is not in the state",
        ),
        (
            &["state", "mv", "protection.database", "machine.db"],
            "cannot move protection.database to machine.db",
        ),
        (
            &["state", "mv", "protection.database", "protection.web"],
            "protection.web is already in the state",
        ),
    ] {
        let o = run(&qs, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}\n{}", text(&o));
        assert!(text(&o).contains(says), "{args:?}\n{}", text(&o));
    }
    assert_eq!(
        std::fs::read(qs.join(".standby/state.json")).unwrap(),
        before
    );
}

#[test]
fn bad_moved_blocks_are_precise_errors() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    for (body, says) in [
        (
            "from = protection.web\n  to = machine.web",
            "cannot move a protection to a machine",
        ),
        (
            "from = protection.old\n  to = protection.nope",
            "protection.nope is not in the configuration",
        ),
        (
            "from = protection.db\n  to = protection.web",
            "protection.db is still in the configuration",
        ),
        (
            "from = \"protection.x\"\n  to = protection.web",
            "is not an address",
        ),
        ("from = vault.main\n  to = vault.other", "cannot be moved"),
    ] {
        std::fs::write(qs.join("moved.hcl"), format!("moved {{\n  {body}\n}}\n")).unwrap();
        let o = run(&qs, &["validate"]);
        assert_eq!(o.status.code(), Some(1), "{body}\n{}", text(&o));
        let err = text(&o);
        assert!(err.contains(says), "{body}\n{err}");
        assert!(err.contains("moved.hcl:"), "names the file: {err}");
    }
}

#[test]
fn a_machine_in_a_recovery_run_is_not_moved() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["failover", "test", "shop", "--approve", "dns"]);
    let before = std::fs::read(qs.join(".standby/state.json")).unwrap();
    let o = run(&qs, &["state", "mv", "machine.db", "machine.database"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("cannot move machine.db: run shop-test-"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("standby failover cleanup shop"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(qs.join(".standby/state.json")).unwrap(),
        before
    );
    assert_eq!(ids_of(&qs, "machine", "machine.database").len(), 0);
    ok(&qs, &["failover", "cleanup", "shop"]);
    ok(&qs, &["state", "mv", "machine.db", "machine.database"]);
    assert!(ids_of(&qs, "machine", "machine.db").is_empty());
}

/// `plan` already says what `apply` would refuse: a `moved` block renaming a
/// machine a test failover holds is an error (exit 1) naming the run and the
/// command that finishes it; after cleanup the same plan shows the move.
#[test]
fn plan_refuses_a_move_a_recovery_run_holds() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["failover", "test", "shop", "--approve", "dns"]);
    edit(
        &qs.join("machines.hcl"),
        "machine \"db\" {",
        "machine \"database\" {",
    );
    edit(
        &qs.join("protection.hcl"),
        "machine.db\n",
        "machine.database\n",
    );
    edit(
        &qs.join("recovery.hcl"),
        "[machine.db]",
        "[machine.database]",
    );
    std::fs::write(
        qs.join("moved.hcl"),
        "moved {\n  from = machine.db\n  to   = machine.database\n}\n",
    )
    .unwrap();
    let before = std::fs::read(qs.join(".standby/state.json")).unwrap();
    for args in [
        &["plan"][..],
        &["plan", "-detailed-exitcode"],
        &["apply", "-auto-approve"],
    ] {
        let o = run(&qs, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}\n{}", text(&o));
        let out = text(&o);
        assert!(
            out.contains("cannot move machine.db: run shop-test-"),
            "{args:?}\n{out}"
        );
        assert!(
            out.contains("standby failover cleanup shop"),
            "{args:?}\n{out}"
        );
        assert!(!out.contains("moved from"), "{args:?}\n{out}");
    }
    assert_eq!(
        std::fs::read(qs.join(".standby/state.json")).unwrap(),
        before
    );
    ok(&qs, &["failover", "cleanup", "shop"]);
    let o = run(&qs, &["plan", "-detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("machine.db"), "{}", text(&o));
}
