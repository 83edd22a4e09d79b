//! `standby status` on real vaults made by real `replicate` runs of sample
//! disks. Ages are judged at a chosen instant through STANDBY_NOW, so each
//! level (OK, WARNING, CRITICAL) is reached exactly, without sleeping.

mod watch_support;

use standby::model::{Address, Kind};
use standby::state::{Backend, DrillRecord, LocalBackend};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use watch_support::*;

const POLICY: &str = r#"  rpo_threshold          = "10m"
  crash_consistent_every = "5m"
  app_consistent_every   = "1h"
  retention              = "24h""#;

fn at(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

fn status_json(root: &std::path::Path, now: OffsetDateTime, code: i32) -> serde_json::Value {
    let out = expect_code(
        standby(root)
            .args(["status", "--json"])
            .env("STANDBY_NOW", at(now)),
        code,
    );
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn prot<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["protections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["protection"] == name)
        .unwrap_or_else(|| panic!("no {name} in {doc}"))
}

#[test]
fn levels_follow_the_newest_point_age_and_exit_codes_alert() {
    let dir = tempfile::tempdir().unwrap();
    let root = quickstart(dir.path(), POLICY, None);
    expect_code(standby(&root).args(["vault", "init"]), 0);

    // No point yet: CRITICAL, exit 2.
    let out = expect_code(standby(&root).arg("status"), 2);
    let text = stdout(&out);
    assert!(text.contains("protection.db"), "{text}");
    assert!(text.contains("CRITICAL"), "{text}");
    assert!(text.contains("never drilled"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour without a terminal: {text:?}"
    );

    // A real point for the group (db app-consistent, web crash-consistent).
    expect_code(standby(&root).arg("replicate"), 0);
    let points: serde_json::Value = serde_json::from_str(&stdout(&expect_code(
        standby(&root).args(["points", "--json"]),
        0,
    )))
    .unwrap();
    let created = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| OffsetDateTime::parse(p["created"].as_str().unwrap(), &Rfc3339).unwrap())
        .max()
        .unwrap();
    let secs = time::Duration::seconds;

    // At the threshold: OK; a second past it: WARNING; past twice: CRITICAL.
    let ok = status_json(&root, created + secs(600), 0);
    let db = prot(&ok, "protection.db");
    assert_eq!(db["level"], "ok", "{ok}");
    assert_eq!(db["newest_point"]["age_seconds"].as_f64(), Some(600.0));
    // JSON keeps the fraction the text's tenths come from (issue 12.5).
    let frac = status_json(
        &root,
        created + secs(30) + time::Duration::milliseconds(250),
        0,
    );
    let age = &prot(&frac, "protection.db")["newest_point"]["age_seconds"];
    assert_eq!(age.as_f64(), Some(30.25), "{frac}");
    assert_eq!(db["newest_app_point"]["consistency"], "app");
    assert_eq!(db["points"], 1);
    assert!(db["stored_bytes"].as_u64().unwrap() > 0, "{db}");
    assert_eq!(db["rpo_threshold_seconds"], 600);
    assert!(prot(&ok, "protection.web")["newest_app_point"].is_null());
    assert_eq!(ok["exit_code"], 0);

    let warn = status_json(&root, created + secs(601), 2);
    assert_eq!(prot(&warn, "protection.db")["level"], "warning");
    let warn2 = status_json(&root, created + secs(1200), 2);
    assert_eq!(prot(&warn2, "protection.web")["level"], "warning");
    let crit = status_json(&root, created + secs(1201), 2);
    assert_eq!(prot(&crit, "protection.db")["level"], "critical");
    assert_eq!(crit["exit_code"], 2);

    // The text table says the same.
    let out = expect_code(
        standby(&root)
            .arg("status")
            .env("STANDBY_NOW", at(created + secs(601))),
        2,
    );
    assert!(stdout(&out).contains("WARNING"), "{}", stdout(&out));
    let out = expect_code(
        standby(&root)
            .arg("status")
            .env("STANDBY_NOW", at(created + secs(5))),
        0,
    );
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("protection.db") && l.contains("OK")),
        "{text}"
    );

    // Drills from state: passed and fresh, then overdue against "weekly".
    let backend = LocalBackend::new(&root);
    let lock = backend.lock("test").unwrap();
    let mut doc = backend.read().unwrap().unwrap_or_default();
    doc.drills.push(DrillRecord {
        plan: Address::new(Kind::RecoveryPlan, "shop"),
        started_at: created - secs(60),
        finished_at: created,
        passed: true,
        rto_seconds: Some(42.0),
        rpo_seconds: Some(5.0),
        interrupted: false,
    });
    backend.write(&lock, &mut doc).unwrap();
    drop(lock);
    let fresh = status_json(&root, created + secs(60), 0);
    let plan = &fresh["recovery_plans"][0];
    assert_eq!(plan["recovery_plan"], "recovery_plan.shop");
    assert_eq!(plan["state"], "ok", "{plan}");
    assert_eq!(plan["last_drill"]["passed"], true);
    assert_eq!(plan["schedule_seconds"], 7 * 86_400);
    let late = status_json(&root, created + secs(7 * 86_400 + 1), 2);
    assert_eq!(late["recovery_plans"][0]["state"], "overdue");
    let out = expect_code(
        standby(&root)
            .arg("status")
            .env("STANDBY_NOW", at(created + secs(7 * 86_400 + 1))),
        2,
    );
    assert!(stdout(&out).contains("OVERDUE"), "{}", stdout(&out));
}

#[test]
fn unreadable_vault_or_bad_clock_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = quickstart(dir.path(), POLICY, None);
    // The vault was never initialised: exit 1, naming it.
    let out = expect_code(standby(&root).arg("status"), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vault.main"), "{err}");
    expect_code(standby(&root).args(["vault", "init"]), 0);
    let out = expect_code(
        standby(&root).arg("status").env("STANDBY_NOW", "yesterday"),
        1,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("STANDBY_NOW"));
}

#[test]
fn drills_are_read_from_the_configured_state_backend() {
    let dir = tempfile::tempdir().unwrap();
    let root = quickstart(dir.path(), POLICY, None);
    expect_code(standby(&root).args(["vault", "init"]), 0);
    let url = format!("file://{}/remote-state", dir.path().display());
    let remote = standby::model::Backend { url: url.clone() };
    let backend = standby::state::open_backend(&root, Some(&remote)).unwrap();
    let lock = backend.lock("test").unwrap();
    let mut doc = backend.read().unwrap().unwrap_or_default();
    let now = OffsetDateTime::now_utc();
    doc.drills.push(DrillRecord {
        plan: Address::new(Kind::RecoveryPlan, "shop"),
        started_at: now - time::Duration::seconds(120),
        finished_at: now - time::Duration::seconds(60),
        passed: false,
        rto_seconds: None,
        rpo_seconds: None,
        interrupted: false,
    });
    backend.write(&lock, &mut doc).unwrap();
    drop(lock);
    // Local state has no drill; the remote one has a failed drill.
    let out = expect_code(standby(&root).args(["status", "--json"]), 2);
    let local: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(local["recovery_plans"][0]["state"], "never_drilled");
    let config = format!("url={url}");
    let out = expect_code(
        standby(&root).args(["status", "--json", "--backend-config", &config]),
        2,
    );
    let remote: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(remote["recovery_plans"][0]["state"], "failed", "{remote}");
    assert_eq!(remote["recovery_plans"][0]["last_drill"]["passed"], false);
}
