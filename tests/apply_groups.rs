//! Consistency groups in apply: enabling the protections of one group takes
//! ONE first point for all of them (all freezes, one capture instant, all
//! thaws), as `replicate` does; a protection outside the group takes its own.

mod watch_support;

use serde_json::Value;
use std::path::Path;
use watch_support::{expect_code, quickstart, standby, stdout};

const POLICY: &str = r#"rpo_threshold = "15m"
crash_consistent_every = "5m"
app_consistent_every = "1h"
retention = "24h""#;

/// The quickstart (db and web in group "shop") plus app1 in "shop" and solo
/// in no group.
fn config(d: &Path) -> std::path::PathBuf {
    let qs = quickstart(d, POLICY, None);
    let mut extra = String::new();
    for (m, group) in [("app1", "\n  consistency_group = \"shop\""), ("solo", "")] {
        let dir = qs.join("sites/onprem").join(m);
        standby::samples::make_ext4(&dir.join("system.img"), m, 8).unwrap();
        extra.push_str(&format!(
            "machine \"{m}\" {{\n  site = site.onprem\n  disk \"system\" {{ path = \"{m}/system.img\" }}\n}}\n\n\
             protection \"{m}\" {{\n  machine = machine.{m}\n  target  = site.dr\n  vault   = vault.main\n  policy  = policy.standard{group}\n}}\n\n"
        ));
    }
    std::fs::write(qs.join("extra.hcl"), extra).unwrap();
    qs
}

fn check(parallelism: &str) {
    let d = tempfile::tempdir().unwrap();
    let qs = config(d.path());
    let out = stdout(&expect_code(
        standby(&qs).args(["apply", "--auto-approve", "--parallelism", parallelism]),
        0,
    ));
    assert!(
        out.contains("taken with group shop (3 protections"),
        "{out}"
    );
    let points: Vec<Value> = serde_json::from_str(&stdout(&expect_code(
        standby(&qs).args(["points", "--json"]),
        0,
    )))
    .unwrap();
    assert_eq!(points.len(), 4, "one first point each: {points:#?}");
    let of = |p: &str| {
        points
            .iter()
            .find(|m| m["protection"] == format!("protection.{p}"))
            .unwrap_or_else(|| panic!("no point of {p}: {points:#?}"))
    };
    let (db, web, app1, solo) = (of("db"), of("web"), of("app1"), of("solo"));
    for m in [db, web, app1] {
        assert_eq!(m["group"], "shop", "{m}");
        assert_eq!(
            m["created"], db["created"],
            "one instant for the group: {points:#?}"
        );
    }
    // db's freeze hook ran around the group's instant; the others have none.
    assert_eq!(db["consistency"], "app", "{db}");
    assert_eq!(solo["group"], Value::Null, "{solo}");
    assert_eq!(solo["consistency"], "crash", "{solo}");
    expect_code(standby(&qs).args(["plan", "--detailed-exitcode"]), 0);
    expect_code(standby(&qs).args(["vault", "verify", "--read-data"]), 0);
}

#[test]
fn a_group_takes_one_first_point_together_in_parallel() {
    check("10");
}

#[test]
fn a_group_takes_one_first_point_together_one_step_at_a_time() {
    check("1");
}

/// `replicate protection.db` of a group member takes the whole group's
/// point (one instant for db, web and app1), never db alone: a lone
/// member's point is one no recovery of the group would use, yet `points`
/// and `status` would count it as db's newest. A protection outside the
/// group stays out.
#[test]
fn replicating_one_member_of_a_group_takes_the_whole_group() {
    let d = tempfile::tempdir().unwrap();
    let qs = config(d.path());
    expect_code(standby(&qs).args(["apply", "--auto-approve"]), 0);
    let out = stdout(&expect_code(
        standby(&qs).args(["replicate", "protection.db", "--json"]),
        0,
    ));
    let taken: Value = serde_json::from_str(&out).unwrap();
    let text = taken.to_string();
    for p in ["protection.db", "protection.web", "protection.app1"] {
        assert!(
            text.contains(p),
            "{p} missing from the group's point: {text}"
        );
    }
    assert!(!text.contains("protection.solo"), "{text}");
    let points: Vec<Value> = serde_json::from_str(&stdout(&expect_code(
        standby(&qs).args(["points", "--json"]),
        0,
    )))
    .unwrap();
    let newest: Vec<&Value> = points
        .iter()
        .filter(|p| p["group"] == "shop")
        .filter(|p| {
            points
                .iter()
                .filter(|q| q["protection"] == p["protection"])
                .all(|q| q["created"].as_str() <= p["created"].as_str())
        })
        .collect();
    assert_eq!(newest.len(), 3, "{points:#?}");
    assert!(
        newest.iter().all(|p| p["created"] == newest[0]["created"]),
        "one instant: {newest:#?}"
    );
}
