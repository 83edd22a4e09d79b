//! Quiesce hooks and consistency groups: all freezes, capture, all thaws;
//! thaw always runs (freeze failure, timeout); the point holds the disk as
//! it was while frozen.

mod vault_support;

use standby::model::{Duration, Quiesce};
use standby::replication::{self, Options, Progress, ReplicationError, Target};
use standby::vault::{Consistency, manifest};
use std::path::Path;
use vault_support::*;

fn sh(script: String) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script]
}

/// A machine whose freeze writes FROZEN and thaw writes THAWED at the start
/// of its disk, both logging to `log`.
fn app_target(name: &str, disk: &Path, log: &Path, freeze_extra: &str, timeout: u64) -> Target {
    let mut t = target(name, &[("root", disk)]);
    t.group = Some("g".into());
    t.app = true;
    let stamp = |word: &str| {
        format!(
            "printf {word} | dd of={} conv=notrunc status=none && echo {word}-{name} >> {}",
            disk.display(),
            log.display()
        )
    };
    t.quiesce = Some(Quiesce {
        freeze: sh(format!("{}{freeze_extra}", stamp("FROZEN"))),
        thaw: sh(stamp("THAWED")),
        timeout: Duration::from_secs(timeout),
    });
    t
}

fn make_disk(path: &Path) {
    std::fs::write(path, vec![b'.'; 1 << 20]).unwrap();
}

#[test]
fn a_group_freezes_all_captures_then_thaws_all() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let log = d.join("log");
    let (a, b) = (d.join("a"), d.join("b"));
    make_disk(&a);
    make_disk(&b);
    let targets = [
        app_target("a", &a, &log, "", 10),
        app_target("b", &b, &log, "", 10),
    ];
    let points = take(&vault, &d.join("cache"), &targets);
    assert_eq!(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        ["FROZEN-a", "FROZEN-b", "THAWED-a", "THAWED-b"]
    );
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].created, points[1].created, "one point instant");
    for p in &points {
        assert_eq!(p.consistency, Consistency::App);
        assert_eq!(p.group.as_deref(), Some("g"));
        assert!(p.freeze_ms.is_some());
        // The point holds the disk as it was while frozen, though the live
        // disk was thawed (and changed) before the data was sealed.
        let out = d.join(format!("out-{}", p.id.short()));
        restore(&vault, p, "root", &out);
        assert!(std::fs::read(&out).unwrap().starts_with(b"FROZEN"));
    }
    assert!(std::fs::read(&a).unwrap().starts_with(b"THAWED"));
}

#[test]
fn a_failed_freeze_thaws_everything_and_takes_no_point() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let log = d.join("log");
    let (a, b) = (d.join("a"), d.join("b"));
    make_disk(&a);
    make_disk(&b);
    let targets = [
        app_target("a", &a, &log, "", 10),
        app_target("b", &b, &log, " && exit 3", 10),
    ];
    let err = replication::take_points(
        &vault,
        &targets,
        &Options::new(d.join("cache")),
        &Progress::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, ReplicationError::Freeze { ref machine, .. } if machine == "machine.b"),
        "{err}"
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines[..2], ["FROZEN-a", "FROZEN-b"]);
    let mut thaws = lines[2..].to_vec();
    thaws.sort();
    assert_eq!(thaws, ["THAWED-a", "THAWED-b"]);
    assert!(manifest::list(&vault, false).unwrap().0.is_empty());
}

#[test]
fn a_freeze_past_its_timeout_is_killed_and_thawed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let log = d.join("log");
    let a = d.join("a");
    make_disk(&a);
    let t = app_target("a", &a, &log, " && exec sleep 600", 1);
    let err = replication::take_points(
        &vault,
        &[t],
        &Options::new(d.join("cache")),
        &Progress::default(),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("timed out after 1s; its process group"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        ["FROZEN-a", "THAWED-a"]
    );
}
