//! One point grammar through the real binary: every command that takes a
//! point — `restore`, `points --point`, `failover --point`, `drill --point`
//! — reads `latest`, `latest-app`, an id or unique prefix, and an RFC 3339
//! time in any offset the same way, and refuses anything else with the
//! same message. (Parsing and selection cases: `vault::query`'s unit tests.)

mod common;
use common::{copy_dir, text};

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn standby(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_standby"));
    c.arg("-C")
        .arg(dir)
        .env("NO_COLOR", "1")
        .env_remove("STANDBY_TEST_AFTER_MATERIALIZE")
        .stdin(Stdio::null());
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    standby(dir).args(args).output().unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(o.status.success(), "standby {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Output with miette's wrapping undone: one line, single spaces.
fn flat(o: &Output) -> String {
    text(o)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The quickstart applied and replicated twice: two instants of the group.
fn quickstart(d: &Path) -> PathBuf {
    let root = d.join("qs");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/quickstart"),
        &root,
    );
    let onprem = root.join("sites/onprem");
    standby::samples::make_ext4(&onprem.join("db/system.img"), "db", 16).unwrap();
    standby::samples::make_sqlite(&onprem.join("db/data.sqlite"), 500).unwrap();
    standby::samples::make_ext4(&onprem.join("web/system.img"), "web", 8).unwrap();
    ok(&root, &["apply", "--auto-approve"]);
    ok(&root, &["replicate"]);
    standby::samples::add_orders(&onprem.join("db/data.sqlite"), 50).unwrap();
    ok(&root, &["replicate"]);
    root
}

fn points(dir: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["points", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(dir, &args)).unwrap()
}

/// `created` of a point, written at +02:00 (the same instant).
fn at_plus_two(created: &str) -> String {
    let t = OffsetDateTime::parse(created, &Rfc3339).unwrap();
    let offset = time::UtcOffset::from_hms(2, 0, 0).unwrap();
    let s = t.to_offset(offset).format(&Rfc3339).unwrap();
    assert!(s.contains("+02:00"), "{s}");
    s
}

#[test]
fn every_command_that_takes_a_point_reads_the_same_grammar() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    let db: Vec<Value> = points(&qs, &["machine.db"]);
    // apply's first point, then two group instants.
    assert_eq!(db.len(), 3, "{db:?}");
    let (middle, newest) = (&db[1], &db[2]);
    let id = |p: &Value| p["id"].as_str().unwrap().to_string();
    let middle_at = at_plus_two(middle["created"].as_str().unwrap());

    // points --point: one per machine; a time in another offset names the
    // instant written in UTC.
    let latest = points(&qs, &["--point", "latest"]);
    let machines: Vec<&str> = latest
        .iter()
        .map(|p| p["machine"].as_str().unwrap())
        .collect();
    assert_eq!(machines.len(), 2, "{latest:?}");
    assert!(latest.iter().any(|p| p["id"] == newest["id"]), "{latest:?}");
    let timed = points(&qs, &["machine.db", "--point", &middle_at]);
    assert_eq!(timed.len(), 1, "{timed:?}");
    assert_eq!(timed[0]["id"], middle["id"]);
    let prefix = points(&qs, &["--point", &id(middle)[..8].to_ascii_uppercase()]);
    assert_eq!(prefix.len(), 1, "{prefix:?}");
    assert_eq!(prefix[0]["id"], middle["id"]);

    // restore: the same time; and latest-app (db has quiesce hooks).
    let to = d.path().join("restored.sqlite");
    let out = ok(
        &qs,
        &[
            "restore",
            &middle_at,
            "--machine",
            "machine.db",
            "--disk",
            "data",
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert!(out.contains(&id(middle)[..12]), "{out}");
    let app = points(&qs, &["machine.db", "--point", "latest-app"]);
    assert_eq!(app.len(), 1);
    assert_eq!(app[0]["consistency"], "app");
    let to_app = d.path().join("app.sqlite");
    let out = ok(
        &qs,
        &[
            "restore",
            "latest-app",
            "--machine",
            "machine.db",
            "--disk",
            "data",
            "--to",
            to_app.to_str().unwrap(),
        ],
    );
    assert!(out.contains(&id(&app[0])[..12]), "{out}");

    // failover test --point: the run records the point of that instant.
    ok(
        &qs,
        &[
            "failover",
            "test",
            "shop",
            "--point",
            &middle_at,
            "--approve",
            "dns",
        ],
    );
    let st: Value =
        serde_json::from_slice(&std::fs::read(qs.join(".standby/state.json")).unwrap()).unwrap();
    assert_eq!(
        st["runs"][0]["machines"]["machine.db"]["point"]["id"],
        middle["id"]
    );
    ok(&qs, &["failover", "cleanup", "shop"]);

    // drill --point: a unique prefix.
    let reports = d.path().join("reports");
    ok(
        &qs,
        &[
            "drill",
            "shop",
            "--point",
            &id(middle)[..10],
            "--approve",
            "dns",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap()).unwrap();
    let used = report["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["machine"] == "machine.db")
        .unwrap();
    assert_eq!(used["point"], middle["id"]);

    // Anything else is refused alike, before anything is done.
    let refused: [&[&str]; 4] = [
        &["restore", "abc", "--disk", "data", "--to", "/tmp/never"],
        &["points", "--point", "yesterday"],
        &["failover", "test", "shop", "--point", "2026-11-26 08:00"],
        &["drill", "shop", "--point", "newest"],
    ];
    for args in refused {
        let o = run(&qs, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(
            flat(&o).contains("is not a point: expected latest, latest-app, a point id"),
            "{args:?}: {}",
            text(&o)
        );
    }
    assert!(!Path::new("/tmp/never").exists());
}
