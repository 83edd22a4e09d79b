//! End to end through the binary on a copy of plans/quickstart: vault init,
//! replicate (app-consistent group with real freeze/thaw scripts), points,
//! restore of a real ext4 image and SQLite database, verify, prune.

mod vault_support;

mod common;
use common::copy_dir;

use standby::samples;
use std::path::{Path, PathBuf};
use std::process::Command;
use vault_support::*;

fn standby(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_standby"));
    c.arg("-C").arg(dir).env("NO_COLOR", "1");
    c
}

/// A quickstart copy with real disks for machines db and web.
fn quickstart(d: &Path) -> PathBuf {
    let root = d.join("qs");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/quickstart"),
        &root,
    );
    let onprem = root.join("sites/onprem");
    std::fs::create_dir_all(onprem.join("db")).unwrap();
    std::fs::create_dir_all(onprem.join("web")).unwrap();
    samples::make_ext4(&onprem.join("db/system.img"), "db", 32).unwrap();
    samples::make_sqlite(&onprem.join("db/data.sqlite"), 2000).unwrap();
    samples::make_ext4(&onprem.join("web/system.img"), "web", 32).unwrap();
    root
}

#[test]
fn quickstart_replicate_points_restore_verify_prune() {
    let dir = tempfile::tempdir().unwrap();
    let root = quickstart(dir.path());
    let out = run(standby(&root).args(["vault", "init"]));
    assert!(out.contains("created vault"), "{out}");
    assert!(out.contains("Back it up"), "{out}");
    let key = std::fs::read_to_string(root.join(".standby/keys/main.key")).unwrap();
    assert!(!out.contains(key.trim()), "the key was printed");

    let onprem = root.join("sites/onprem");
    let db_sys = onprem.join("db/system.img");
    let db_data = onprem.join("db/data.sqlite");
    let ref1_sys = snapshot(&db_sys, &dir.path().join("ref1-sys"));
    let ref1_data = snapshot(&db_data, &dir.path().join("ref1-data"));
    let out = run(standby(&root).arg("replicate"));
    assert!(out.contains("protection.db: point"), "{out}");
    assert!(out.contains("(app, group shop)"), "{out}");
    assert!(out.contains("frozen"), "{out}");
    // Thaw ran after freeze: the marker the freeze script leaves is gone.
    assert!(!root.join(".standby/db-frozen").exists());

    // Change both disks between points.
    ext4_write(&db_sys, dir.path(), "/etc/motd", "changed between points\n");
    samples::add_orders(&db_data, 500).unwrap();
    let ref2_sys = snapshot(&db_sys, &dir.path().join("ref2-sys"));
    let ref2_data = snapshot(&db_data, &dir.path().join("ref2-data"));
    run(standby(&root).args(["replicate", "db"]));

    let json = run(standby(&root).args(["points", "machine.db", "--json"]));
    let points: serde_json::Value = serde_json::from_str(&json).unwrap();
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[1]["disks"]["system"]["parent"], points[0]["id"]);
    // db shares consistency group shop with web: `replicate db` took the
    // group's point, one for each (two points of each machine in all).
    let text = run(standby(&root).arg("points"));
    assert_eq!(text.lines().count(), 1 + 4, "{text}");

    let first = points[0]["id"].as_str().unwrap()[..10].to_string();
    for (point, disk, reference) in [
        (first.as_str(), "system", &ref1_sys),
        (first.as_str(), "data", &ref1_data),
        ("latest", "system", &ref2_sys),
        ("latest", "data", &ref2_data),
    ] {
        let to = dir.path().join(format!("restored-{point}-{disk}"));
        run(standby(&root)
            .args(["restore", point, "--disk", disk, "--machine", "db", "--to"])
            .arg(&to));
        assert_same(reference, &to);
        if disk == "system" {
            e2fsck_clean(&to);
        } else {
            assert_eq!(samples::sqlite_integrity(&to).unwrap(), "ok");
        }
    }

    let out = run(standby(&root).args(["vault", "verify", "--read-data"]));
    assert!(out.contains("ok"), "{out}");
    let out = run(standby(&root).args(["vault", "prune", "--dry-run"]));
    assert!(out.contains("would drop 0 points"), "{out}");

    // Unknown point: a clear error, non-zero exit.
    let o = standby(&root)
        .args(["restore", "ffffffff", "--disk", "system", "--to"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no point matches"));
}
