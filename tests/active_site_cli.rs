//! `active_site` on a recovery plan: flipping it makes `plan` show the
//! failover (or failback) as a graph of steps and exit 2; `apply` refuses
//! without --allow-failover (and --allow-undrilled for an undrilled plan),
//! then carries it out; a second `plan` exits 0.

mod common;

use common::{ok, quickstart, standby, text};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn run(dir: &Path, args: &[&str]) -> Output {
    standby(dir).args(args).output().unwrap()
}

fn state(qs: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(qs.join(".standby/state.json")).unwrap()).unwrap()
}

fn set_active_site(qs: &Path, site: Option<&str>) {
    let p = qs.join("recovery.hcl");
    let hcl = std::fs::read_to_string(&p).unwrap();
    let mut lines: Vec<&str> = hcl.lines().filter(|l| !l.contains("active_site")).collect();
    let line;
    if let Some(s) = site {
        line = format!("  active_site = {s}");
        let at = lines
            .iter()
            .position(|l| l.starts_with("recovery_plan"))
            .unwrap();
        lines.insert(at + 1, &line);
    }
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
}

fn plan_schema() -> jsonschema::Validator {
    let s: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/plan.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    jsonschema::validator_for(&s).unwrap()
}

#[test]
fn flipping_active_site_fails_over_through_apply_and_flipping_back_fails_back() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    let o = run(&qs, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    set_active_site(&qs, Some("site.dr"));
    let o = run(&qs, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    for want in [
        "recovery_plan.shop site.onprem -> site.dr",
        "stop",
        "machine.web (group web), then machine.db (group data)",
        "final_point",
        "group data: machine.db: restore its disks at site.dr",
        "after: manual dns",
        "commit",
        "reprotect",
        "expected data loss none",
        "never drilled",
    ] {
        assert!(shown.contains(want), "missing {want:?} in:\n{shown}");
    }
    // The JSON plan carries the change and matches the schema.
    let json: Value = serde_json::from_str(&ok(&qs, &["plan", "--json"])).unwrap();
    assert!(plan_schema().is_valid(&json), "{json}");
    assert_eq!(json["site_changes"][0]["direction"], "failover");

    // Guarded: nothing changes without the flags.
    let before = std::fs::read(qs.join(".standby/state.json")).unwrap();
    let o = run(&qs, &["apply", "--auto-approve"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--allow-failover"), "{}", text(&o));
    let o = run(&qs, &["apply", "--auto-approve", "--allow-failover"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("never been drilled"), "{}", text(&o));
    assert!(text(&o).contains("--allow-undrilled"), "{}", text(&o));
    assert_eq!(
        before,
        std::fs::read(qs.join(".standby/state.json")).unwrap()
    );
    assert!(!qs.join("sites/dr/db/data.sqlite").exists());

    // A passing drill vouches for the plan; then the failover runs.
    ok(&qs, &["drill", "shop", "--approve", "dns"]);
    let o = run(&qs, &["plan"]);
    assert!(text(&o).contains("measured RTO"), "{}", text(&o));
    let out = ok(
        &qs,
        &[
            "apply",
            "--auto-approve",
            "--allow-failover",
            "--approve",
            "dns",
        ],
    );
    assert!(out.contains("Site changes complete"), "{out}");
    let st = state(&qs);
    let r = &st["runs"][0];
    assert_eq!(r["phase"], "committed", "{st}");
    assert!(r["reprotect"].is_object(), "{st}");
    assert_eq!(r["machines"]["machine.db"]["site"], "site.dr");
    assert!(qs.join("sites/dr/db/data.sqlite").exists());
    let o = run(&qs, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Flip back: a failback, applied from a saved plan made with --allow-failover.
    standby::samples::add_orders(&qs.join("sites/dr/db/data.sqlite"), 33).unwrap();
    set_active_site(&qs, None);
    let o = run(&qs, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(shown.contains("site.dr -> site.onprem"), "{shown}");
    assert!(shown.contains("failback"), "{shown}");
    // The DNS step is the failover's (`when` defaults to failover).
    assert!(!shown.contains("manual dns"), "{shown}");
    assert!(
        shown.contains("write changed blocks onto its disks at site.onprem"),
        "{shown}"
    );
    let file = d.path().join("back.plan");
    ok(
        &qs,
        &["plan", "--allow-failover", "--out", file.to_str().unwrap()],
    );
    let out = ok(&qs, &["apply", file.to_str().unwrap(), "--approve", "dns"]);
    assert!(out.contains("Site changes complete"), "{out}");
    let st = state(&qs);
    assert!(st["runs"].as_array().is_none_or(|r| r.is_empty()), "{st}");
    assert_eq!(
        standby::samples::sqlite_orders(&qs.join("sites/onprem/db/data.sqlite")).unwrap(),
        533
    );
    let o = run(&qs, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
