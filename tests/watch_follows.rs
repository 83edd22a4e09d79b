//! `replicate --watch` follows where machines run (issue 11 item 1): with
//! the quickstart's writer taking orders, the service runs through a
//! planned failover, commit, reprotect and failback. After each step every
//! new point is of the disks where the machine runs (its manifest names the
//! site), no row the writer committed at either site before a point is
//! missing from that point's database, and while the machines run at DR
//! unprotected the service takes no point of them, `/metrics` says the
//! protection is inactive, and `status` says WARNING and exits 2.

mod watch_support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use watch_support::{
    KillOnDrop, free_port, http_get, metric, quickstart, standby, terminate, wait_for,
};

const POLICY: &str = r#"  rpo_threshold          = "15m"
  crash_consistent_every = "1s"
  app_consistent_every   = "1h"
  retention              = "24h""#;

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(qs: &Path, args: &[&str]) -> String {
    let o = standby(qs)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "standby {args:?}:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The quickstart's writer on `db` (relative to `qs`), control dir
/// run/db-writer (the quiesce hooks and the shutdown command speak to it
/// there), reaped by a thread of its own: the shutdown command waits for
/// its pid to go.
fn start_writer(qs: &Path, db: &str) {
    let _ = std::fs::remove_file(qs.join("run/db-writer/committed"));
    let mut child = Command::new("sh")
        .args(["scripts/db-writer.sh", db, "run/db-writer"])
        .current_dir(qs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::spawn(move || child.wait());
}

/// Rows the writer has committed (its own count after each commit).
fn committed(qs: &Path) -> u64 {
    std::fs::read_to_string(qs.join("run/db-writer/committed"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_rows(qs: &Path, at_least: u64) {
    wait_for("the writer's rows", Duration::from_secs(60), || {
        (committed(qs) >= at_least).then_some(())
    });
}

fn stop_writer(qs: &Path) {
    let o = Command::new("sh")
        .arg("scripts/db-stop.sh")
        .current_dir(qs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

fn points(qs: &Path) -> Vec<Value> {
    serde_json::from_str(&ok(qs, &["points", "--json"])).unwrap()
}

fn ids(qs: &Path, protection: &str) -> BTreeSet<String> {
    points(qs)
        .iter()
        .filter(|p| p["protection"] == protection)
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

fn orders(db: &Path) -> u64 {
    standby::samples::sqlite_orders(db).unwrap()
}

/// Wait for the service's next point of protection.db that begins after
/// now, check it is of `site`, and check that its database holds every row
/// committed before now (`rows`, counted by the caller just before). Returns its id.
fn next_point_holds(qs: &Path, scratch: &Path, site: &str, rows: u64) -> String {
    // Rows are counted before this instant; a point whose capture began
    // after it must hold them all.
    let since = time::OffsetDateTime::now_utc();
    let p = wait_for(
        "a new point of protection.db",
        Duration::from_secs(60),
        || {
            points(qs).into_iter().find(|p| {
                p["protection"] == "protection.db"
                    && time::OffsetDateTime::parse(
                        p["created"].as_str().unwrap(),
                        &time::format_description::well_known::Rfc3339,
                    )
                    .unwrap()
                        > since
            })
        },
    );
    assert_eq!(
        p["site"], site,
        "the point is of the disks where db runs: {p:#}"
    );
    let id = p["id"].as_str().unwrap().to_string();
    let out = scratch.join(format!("{}.sqlite", &id[..12]));
    ok(
        qs,
        &[
            "restore",
            &id,
            "--disk",
            "data",
            "--machine",
            "machine.db",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    let got = orders(&out);
    assert!(
        got >= rows,
        "point {id} of {site} holds {got} orders; {rows} were committed before it began"
    );
    // Every point of web taken with it is of the same site.
    for w in points(qs)
        .iter()
        .filter(|w| w["protection"] == "protection.web" && w["created"] == p["created"])
    {
        assert_eq!(w["site"], site, "{w:#}");
    }
    id
}

fn watch_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[test]
fn watch_follows_planned_failover_commit_reprotect_and_failback_losing_no_row() {
    let d = tempfile::tempdir().unwrap();
    let qs: PathBuf = quickstart(d.path(), POLICY, None);
    let scratch = d.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);

    start_writer(&qs, "sites/onprem/db/data.sqlite");
    wait_rows(&qs, 1);
    let port = free_port();
    let log = d.path().join("watch.log");
    let mut watch = KillOnDrop(
        standby(&qs)
            .args(["replicate", "--watch", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );

    // 1. At home: points of site.onprem holding every committed row.
    let rows = committed(&qs);
    next_point_holds(&qs, &scratch, "site.onprem", rows);

    // 2. Planned failover (the shutdown stops the writer), commit.
    let home_before = ids(&qs, "protection.db");
    let o = standby(&qs)
        .args(["failover", "planned", "shop", "--approve", "dns"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let at_failover = committed(&qs);
    ok(&qs, &["failover", "commit", "shop"]);
    let dr_db = qs.join("sites/dr/db/data.sqlite");
    assert!(orders(&dr_db) >= at_failover, "the failover lost rows");

    // Failed over, not reprotected: skipped, inactive, WARNING.
    wait_for("the watch to skip db", Duration::from_secs(60), || {
        watch_log(&log)
            .contains("protection.db: skipped: machine.db is failed over to site.dr")
            .then_some(())
    });
    let frozen_db = ids(&qs, "protection.db");
    assert_sites(&qs, &frozen_db, &home_before, "site.onprem");
    let body = wait_for(
        "protection inactive in /metrics",
        Duration::from_secs(30),
        || {
            let (_, body) = http_get(port, "/metrics")?;
            (metric(&body, "standby_protection_active", "protection.db") == Some(0.0))
                .then_some(body)
        },
    );
    assert_eq!(
        metric(&body, "standby_protection_active", "protection.web"),
        Some(0.0),
        "{body}"
    );
    let o = standby(&qs).args(["status", "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    for p in s["protections"].as_array().unwrap() {
        assert_eq!(p["level"], "warning", "{s:#}");
    }

    // 3. The business runs at DR; reprotect: points of site.dr.
    start_writer(&qs, "sites/dr/db/data.sqlite");
    wait_rows(&qs, 1);
    ok(&qs, &["reprotect", "shop"]);
    // No point of db was taken between the failover and the reprotect
    // except the reprotect's own first reverse point.
    let after_reprotect = ids(&qs, "protection.db");
    assert_eq!(after_reprotect.difference(&frozen_db).count(), 1);
    assert_sites(&qs, &after_reprotect, &frozen_db, "site.dr");
    let rows = committed(&qs);
    wait_rows(&qs, rows + 5);
    let rows = committed(&qs);
    next_point_holds(&qs, &scratch, "site.dr", rows);
    let (_, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(
        metric(&body, "standby_protection_active", "protection.db"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        standby(&qs)
            .args(["status"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );

    // 4. Failback (its shutdown stops the DR writer): home again.
    let o = standby(&qs)
        .args(["failback", "shop", "--approve", "dns"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let at_failback = committed(&qs);
    let home_db = qs.join("sites/onprem/db/data.sqlite");
    assert!(orders(&home_db) >= at_failback, "the failback lost rows");
    start_writer(&qs, "sites/onprem/db/data.sqlite");
    wait_rows(&qs, at_failback + 5);
    // Between reprotect and failback: the service's reverse points and the
    // failback's final one (moving db home), all of site.dr; after that
    // final point only points of site.onprem (the service resumes at home
    // as soon as the failback is done).
    let all = points(&qs);
    let db: Vec<&Value> = all
        .iter()
        .filter(|p| p["protection"] == "protection.db")
        .filter(|p| !after_reprotect.contains(p["id"].as_str().unwrap()))
        .collect();
    let final_point = db
        .iter()
        .find(|p| p["moves_to"] == "site.onprem")
        .unwrap_or_else(|| panic!("no final point moving db home: {db:#?}"));
    assert_eq!(final_point["site"], "site.dr", "{final_point:#}");
    let cut = final_point["created"].as_str().unwrap().to_string();
    let at = |p: &Value| {
        time::OffsetDateTime::parse(
            p["created"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let cut =
        time::OffsetDateTime::parse(&cut, &time::format_description::well_known::Rfc3339).unwrap();
    for p in &db {
        let want = if at(p) <= cut {
            "site.dr"
        } else {
            "site.onprem"
        };
        assert_eq!(p["site"], want, "{p:#}");
    }
    assert!(db.iter().filter(|p| at(p) < cut).count() >= 1, "{db:#?}");
    let after_failback: BTreeSet<String> = db
        .iter()
        .filter(|p| at(p) <= cut)
        .map(|p| p["id"].as_str().unwrap().to_string())
        .chain(after_reprotect.iter().cloned())
        .collect();
    let rows = committed(&qs);
    next_point_holds(&qs, &scratch, "site.onprem", rows);
    assert_sites(
        &qs,
        &ids(&qs, "protection.db"),
        &after_failback,
        "site.onprem",
    );
    stop_writer(&qs);

    let status = terminate(&mut watch.0, Duration::from_secs(60));
    assert!(status.success(), "{}", watch_log(&log));
}

/// Every point of protection.db in `now` but not in `before` is of `site`.
fn assert_sites(qs: &Path, now: &BTreeSet<String>, before: &BTreeSet<String>, site: &str) {
    for p in points(qs) {
        let id = p["id"].as_str().unwrap();
        if p["protection"] == "protection.db" && now.contains(id) && !before.contains(id) {
            assert_eq!(p["site"], site, "{p:#}");
        }
    }
}

#[test]
fn a_failed_planned_failover_leaving_machines_at_dr_is_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let qs: PathBuf = quickstart(d.path(), POLICY, None);
    // web's check fails wherever it runs: the failover fails after placing db.
    let m = qs.join("machines.hcl");
    let hcl = std::fs::read_to_string(&m).unwrap();
    let at = hcl.find("machine \"web\"").unwrap();
    let (a, b) = hcl.split_at(at);
    let b = b.replacen(
        "  check \"filesystem\" {",
        "  check \"fails\" {\n    command = [\"false\"]\n  }\n\n  check \"filesystem\" {",
        1,
    );
    std::fs::write(&m, format!("{a}{b}")).unwrap();
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    assert_eq!(
        standby(&qs).arg("status").output().unwrap().status.code(),
        Some(0)
    );
    let o = standby(&qs)
        .args(["failover", "planned", "shop", "--approve", "dns"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = standby(&qs).args(["status", "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let db = s["protections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["protection"] == "protection.db")
        .unwrap();
    assert_eq!(db["level"], "warning", "{s:#}");
    assert!(
        db["unprotected"]
            .as_str()
            .unwrap()
            .contains("machine.db is failed over to site.dr"),
        "{s:#}"
    );
    let text_out =
        String::from_utf8_lossy(&standby(&qs).arg("status").output().unwrap().stdout).into_owned();
    assert!(
        text_out.contains("protection.db: unprotected:"),
        "{text_out}"
    );
}
