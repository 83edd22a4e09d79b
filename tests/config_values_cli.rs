//! What `validate` accepts works end to end, and what would not work is
//! refused by validate and by every command that loads the configuration
//! (issue 11, items 6 and 7), through the real binary on quickstart copies.

mod common;
use common::*;

use std::path::Path;

fn set(root: &Path, file: &str, from: &str, to: &str) {
    let p = root.join(file);
    let s = std::fs::read_to_string(&p).unwrap();
    assert!(s.contains(from), "{file} has no {from:?}");
    std::fs::write(&p, s.replace(from, to)).unwrap();
}

fn refused_by_all(root: &Path, code: &str) {
    for args in [
        vec!["validate"],
        vec!["plan"],
        vec!["apply", "--auto-approve"],
        vec!["replicate"],
        vec!["failover", "unplanned", "shop", "--approve", "dns"],
    ] {
        let o = standby(root).args(&args).output().unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?} must refuse:\n{t}");
        assert!(t.contains(code), "{args:?} names the problem {code}:\n{t}");
        assert!(t.contains(".hcl:"), "{args:?} gives a location:\n{t}");
    }
}

#[test]
fn a_disk_path_outside_its_site_root_is_refused_before_anything_runs() {
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 8, 8);
    set(
        &root,
        "machines.hcl",
        "\"web/system.img\"",
        "\"../../outside/x.img\"",
    );
    std::fs::create_dir_all(d.path().join("outside")).unwrap();
    refused_by_all(&root, "standby::bad_disk_path");
    assert!(!root.join(".standby/vault").exists(), "nothing was written");
    assert!(!root.join(".standby/state.json").exists());
}

/// Issue 11 item 6 (gap): `path = "db/"` passed validate and apply, then
/// replicate failed: a path naming a directory is refused by all of them.
#[test]
fn a_disk_path_naming_a_directory_is_refused_before_anything_runs() {
    for path in ["\"web/\"", "\"web/.\""] {
        let d = tempfile::tempdir().unwrap();
        let root = quickstart(d.path(), 8, 8);
        set(&root, "machines.hcl", "\"web/system.img\"", path);
        refused_by_all(&root, "standby::bad_disk_path");
        let o = standby(&root).arg("validate").output().unwrap();
        assert!(text(&o).contains("names a directory"), "{}", text(&o));
        assert!(!root.join(".standby/vault").exists(), "nothing was written");
    }
}

#[test]
fn a_dr_root_linked_to_the_source_root_is_refused_and_the_source_disk_kept() {
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 8, 8);
    // First a working setup with points, then the DR root becomes a link.
    ok(&root, &["apply", "--auto-approve"]);
    let live = root.join("sites/onprem/db/data.sqlite");
    let before = std::fs::read(&live).unwrap();
    let _ = std::fs::remove_dir_all(root.join("sites/dr"));
    std::os::unix::fs::symlink(root.join("sites/onprem"), root.join("sites/dr")).unwrap();
    refused_by_all(&root, "standby::site_roots_overlap");
    assert!(
        std::fs::read(&live).unwrap() == before,
        "the source disk was written"
    );
    // A link elsewhere is fine.
    std::fs::remove_file(root.join("sites/dr")).unwrap();
    std::fs::create_dir_all(d.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(d.path().join("elsewhere"), root.join("sites/dr")).unwrap();
    ok(&root, &["validate"]);
}

#[test]
fn zero_durations_are_refused_and_off_turns_app_consistent_points_off() {
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 8, 8);
    for (from, to, attr) in [
        ("\"15m\" # status", "\"0s\" # status", "rpo_threshold"),
        ("= \"5m\"", "= \"0m\"", "crash_consistent_every"),
        ("= \"1h\"", "= \"0s\"", "app_consistent_every"),
        ("= \"10s\"", "= \"0s\"", "timeout"),
    ] {
        let file = if attr == "timeout" {
            "machines.hcl"
        } else {
            "main.hcl"
        };
        set(&root, file, from, to);
        let o = standby(&root).arg("validate").output().unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{attr} = 0 passes:\n{t}");
        assert!(
            t.contains(&format!("`{attr}` must be longer than zero")),
            "{t}"
        );
        set(&root, file, to, from);
    }
    ok(&root, &["validate"]);

    set(
        &root,
        "main.hcl",
        "app_consistent_every   = \"1h\"",
        "app_consistent_every   = \"off\"",
    );
    ok(&root, &["validate"]);
    let plan = ok(&root, &["plan"]);
    assert!(plan.contains("app_consistent_every   = \"off\""), "{plan}");
    let out = ok(&root, &["apply", "--auto-approve"]);
    assert!(!out.contains("frozen"), "{out}");
    assert!(!root.join(".standby/db-frozen").exists());
    let pts = points(&root);
    assert!(!pts.is_empty());
    assert!(pts.iter().all(|p| p["consistency"] == "crash"), "{pts:?}");
    // The plan is settled: "off" is recorded, not shown as a change again.
    let o = standby(&root)
        .args(["plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn a_dr_directory_linked_into_the_source_site_is_refused_and_the_source_disk_kept() {
    let d = tempfile::tempdir().unwrap();
    let root = quickstart(d.path(), 8, 8);
    ok(&root, &["apply", "--auto-approve"]);
    let live = root.join("sites/onprem/db/data.sqlite");
    let before = std::fs::read(&live).unwrap();
    std::fs::create_dir_all(root.join("sites/dr")).unwrap();
    let _ = std::fs::remove_dir_all(root.join("sites/dr/db"));
    std::os::unix::fs::symlink("../onprem/db", root.join("sites/dr/db")).unwrap();
    refused_by_all(&root, "standby::failover_target_overlaps");
    assert!(
        std::fs::read(&live).unwrap() == before,
        "the source disk was written"
    );
}
