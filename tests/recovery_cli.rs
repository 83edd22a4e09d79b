//! Failover and drills end to end: the real binary, the real local
//! provider, real ext4 and SQLite disks restored from a real vault.
//! (1) a drill of the quickstart plan passes and leaves nothing at the DR
//! site; (2) a check failing on a corrupted replica fails the drill, which
//! still cleans up, and JUnit names the check; (3) 3 groups of 4 machines:
//! groups strictly in order, machines of a group overlapping; (4) manual
//! steps: refused without --approve, approved from a second process;
//! (5) planned failover, commit, status, refusals, replicate skipping;
//! (6) unplanned failover from a chosen point.

mod common;
use common::{copy_dir, text};

use serde_json::Value;
use standby::samples;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Output with miette's wrapping undone: one line, single spaces.
fn flat(o: &Output) -> String {
    text(o)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(o.status.success(), "standby {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn state(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(".standby/state.json")).unwrap()).unwrap()
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn validator(schema: &str) -> jsonschema::Validator {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(schema);
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn assert_valid(schema: &str, doc: &Value) {
    let v = validator(schema);
    let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{schema}: {errors:#?}\n{doc:#}");
}

/// Every file under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
            out.push(e.path());
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A quickstart copy with real disks, applied (one point per protection).
fn quickstart(d: &Path) -> PathBuf {
    let root = d.join("qs");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/quickstart"),
        &root,
    );
    let onprem = root.join("sites/onprem");
    samples::make_ext4(&onprem.join("db/system.img"), "db", 16).unwrap();
    samples::make_sqlite(&onprem.join("db/data.sqlite"), 500).unwrap();
    samples::make_ext4(&onprem.join("web/system.img"), "web", 8).unwrap();
    ok(&root, &["apply", "--auto-approve"]);
    // Apply's first points are per protection; the group's first common
    // instant comes with replicate.
    ok(&root, &["replicate"]);
    root
}

fn rows(db: &Path) -> u64 {
    let o = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT count(*) FROM orders")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn drill_of_the_quickstart_passes_and_leaves_nothing_behind() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    let reports = d.path().join("reports");
    let out = ok(
        &qs,
        &[
            "drill",
            "shop",
            "--approve",
            "dns",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("# Drill of recovery_plan.shop: PASSED"),
        "{out}"
    );
    assert!(out.contains("Checks (4 of 4 passed)"), "{out}");

    let report = json_file(&reports.join("report.json"));
    assert_valid("report.schema.json", &report);
    assert_eq!(report["passed"], true);
    assert_eq!(report["kind"], "drill");
    let checks: Vec<&Value> = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "check")
        .collect();
    assert_eq!(checks.len(), 4, "{report:#}");
    assert!(
        checks.iter().all(|c| c["outcome"] == "passed"),
        "{report:#}"
    );
    assert_eq!(report["points"].as_array().unwrap().len(), 2);
    // Both machines of consistency group shop use one instant.
    assert_eq!(
        report["points"][0]["created"],
        report["points"][1]["created"]
    );
    assert!(report["rto"]["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(report["rto"]["limit_seconds"], 600);
    assert_eq!(report["rto"]["within"], true);
    assert_eq!(report["rpo"]["limit_seconds"], 900);
    assert_eq!(report["cleanup"]["passed"], true);

    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("name=\"check database\""), "{junit}");
    assert!(junit.contains("failures=\"0\""), "{junit}");
    let md = std::fs::read_to_string(reports.join("report.md")).unwrap();
    assert!(md.contains("| RTO |"), "{md}");

    // Nothing left at the DR site, and the state keeps only the drill.
    let left = files_under(&qs.join("sites/dr"));
    assert!(left.is_empty(), "left at the DR site: {left:?}");
    let st = state(&qs);
    assert_valid("state.schema.json", &st);
    assert!(st.get("runs").is_none(), "{st:#}");
    let drills = st["drills"].as_array().unwrap();
    assert_eq!(drills.len(), 1);
    assert_eq!(drills[0]["passed"], true);

    // Drilled just now: nothing is due.
    let due = ok(&qs, &["drill", "--due", "--approve", "dns"]);
    assert!(due.contains("No drill is due."), "{due}");
    let status = ok(&qs, &["status"]);
    assert!(status.contains("passed, RTO"), "{status}");
}

#[test]
fn a_failing_check_fails_the_drill_which_still_cleans_up() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    let reports = d.path().join("reports");
    // Test hook: wipe the start of the replica database of machine.db.
    let hook = r#"if [ "$STANDBY_MACHINE" = machine.db ]; then dd if=/dev/zero of="$STANDBY_DISK_DATA" bs=4096 count=2 conv=notrunc 2>/dev/null; fi"#;
    let o = standby(&qs)
        .args(["drill", "shop", "--approve", "dns", "--report-dir"])
        .arg(&reports)
        .env("STANDBY_TEST_AFTER_MATERIALIZE", hook)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("# Drill of recovery_plan.shop: FAILED"),
        "{out}"
    );

    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    let case = junit
        .split("<testcase ")
        .find(|c| c.contains("name=\"check database\""))
        .unwrap_or_else(|| panic!("no check database case: {junit}"));
    assert!(
        case.contains("classname=\"recovery_plan.shop.data.machine.db\""),
        "{case}"
    );
    assert!(case.contains("<failure"), "{case}");
    let fs_case = junit
        .split("<testcase ")
        .find(|c| c.contains("machine.db\" name=\"check filesystem\""))
        .unwrap();
    assert!(!fs_case.contains("<failure"), "{fs_case}");
    // The web group depends on data: skipped, and said so.
    assert!(junit.contains("<skipped"), "{junit}");

    let report = json_file(&reports.join("report.json"));
    assert_valid("report.schema.json", &report);
    assert_eq!(report["passed"], false);
    assert_eq!(report["cleanup"]["passed"], true);
    assert!(report["rto"]["seconds"].is_null());

    let left = files_under(&qs.join("sites/dr"));
    assert!(left.is_empty(), "left at the DR site: {left:?}");
    let st = state(&qs);
    assert!(st.get("runs").is_none(), "{st:#}");
    assert_eq!(st["drills"][0]["passed"], false);
    // The source is untouched.
    assert_eq!(
        samples::sqlite_integrity(&qs.join("sites/onprem/db/data.sqlite")).unwrap(),
        "ok"
    );
}

/// 3 groups of 4 machines, each with a small disk; boots take a moment and
/// log when they ran.
fn fleet(d: &Path) -> PathBuf {
    let root = d.join("fleet");
    std::fs::create_dir_all(root.join("sites/onprem")).unwrap();
    let mut hcl = String::from(
        r#"
vault "main" {
  url      = "file://.standby/vault"
  key_file = ".standby/keys/main.key"
}
site "onprem" {
  provider = "local"
  root     = "sites/onprem"
}
site "dr" {
  provider = "local"
  root     = "sites/dr"
}
policy "p" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  retention              = "24h"
}
"#,
    );
    let groups = ["a", "b", "c"];
    for g in groups {
        for i in 0..4 {
            let m = format!("{g}{i}");
            let disk = root.join(format!("sites/onprem/{m}/disk.img"));
            std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
            let bytes: Vec<u8> = (0..64 * 1024u32)
                .map(|x| (x.wrapping_mul(31) ^ (i * 7)) as u8)
                .collect();
            std::fs::write(&disk, bytes).unwrap();
            hcl.push_str(&format!(
                r#"
machine "{m}" {{
  site = site.onprem
  disk "disk" {{ path = "{m}/disk.img" }}
  boot {{ command = ["sh", "-c", "echo \"$STANDBY_MACHINE start $(date +%s.%N)\" >> boots.log; sleep 0.4; echo \"$STANDBY_MACHINE end $(date +%s.%N)\" >> boots.log"] }}
  check "disk" {{ command = ["sh", "-c", "test -s \"$STANDBY_DISK_DISK\""] }}
}}
protection "{m}" {{
  machine = machine.{m}
  target  = site.dr
  vault   = vault.main
  policy  = policy.p
}}
"#
            ));
        }
    }
    hcl.push_str("recovery_plan \"fleet\" {\n");
    let mut prev: Option<&str> = None;
    for g in groups {
        let machines: Vec<String> = (0..4).map(|i| format!("machine.{g}{i}")).collect();
        let dep = prev
            .map(|p| format!("    depends_on = [group.{p}]\n"))
            .unwrap_or_default();
        hcl.push_str(&format!(
            "  group \"{g}\" {{\n{dep}    machines = [{}]\n  }}\n",
            machines.join(", ")
        ));
        prev = Some(g);
    }
    hcl.push_str("  drill {\n    schedule = \"daily\"\n    max_rto  = \"10m\"\n  }\n}\n");
    std::fs::write(root.join("main.hcl"), hcl).unwrap();
    ok(&root, &["apply", "--auto-approve"]);
    root
}

#[test]
fn groups_start_strictly_in_order_and_machines_of_a_group_overlap() {
    let d = tempfile::tempdir().unwrap();
    let root = fleet(d.path());
    let reports = d.path().join("reports");
    ok(
        &root,
        &["drill", "fleet", "--report-dir", reports.to_str().unwrap()],
    );
    let report = json_file(&reports.join("report.json"));
    assert_valid("report.schema.json", &report);
    let timeline = report["timeline"].as_array().unwrap();
    let span = |kind: &str, group: &str| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter(|e| e["kind"] == kind && e["group"] == group)
            .map(|e| {
                (
                    e["start_seconds"].as_f64().unwrap(),
                    e["end_seconds"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let mut prev_end: Option<f64> = None;
    for g in ["a", "b", "c"] {
        let machines = span("machine", g);
        assert_eq!(machines.len(), 4, "{g}: {report:#}");
        let first_start = machines.iter().map(|m| m.0).fold(f64::MAX, f64::min);
        let last_start = machines.iter().map(|m| m.0).fold(0.0, f64::max);
        let first_end = machines.iter().map(|m| m.1).fold(f64::MAX, f64::min);
        let last_end = machines.iter().map(|m| m.1).fold(0.0, f64::max);
        // Overlap: every machine started before any of them finished.
        assert!(
            last_start < first_end,
            "{g} machines do not overlap: {machines:?}"
        );
        if let Some(p) = prev_end {
            assert!(
                first_start >= p,
                "group {g} started at {first_start} before the previous group ended at {p}"
            );
        }
        let group = span("group", g);
        assert_eq!(group.len(), 1);
        assert!(group[0].1 >= last_end);
        prev_end = Some(group[0].1);
    }
    // The boots themselves ran: 12 starts and ends logged at the DR sandbox's cwd.
    let log = std::fs::read_to_string(root.join("boots.log")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains(" start ")).count(),
        12,
        "{log}"
    );
    assert!(files_under(&root.join("sites/dr")).is_empty());
}

#[test]
fn manual_steps_need_an_approval_which_another_process_can_give() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    // Not on a terminal, not pre-approved: the drill fails at the step, cleans up.
    let o = run(&qs, &["drill", "shop"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = flat(&o);
    assert!(all.contains("--approve dns"), "{all}");
    assert!(all.contains("standby approve shop dns"), "{all}");
    assert!(files_under(&qs.join("sites/dr")).is_empty());

    // Approving with no run in progress says so.
    let o = run(&qs, &["approve", "shop", "dns"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        flat(&o).contains("no run of recovery_plan.shop is in progress"),
        "{}",
        text(&o)
    );
    // An unknown step is named.
    let o = run(&qs, &["approve", "shop", "dnz"]);
    assert!(flat(&o).contains("has no manual step dnz"), "{}", text(&o));

    // A waiting run goes on once a second process approves.
    let mut child = standby(&qs)
        .args(["failover", "test", "shop", "--wait-for-approval"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = std::fs::read(qs.join(".standby/state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if st
            .as_ref()
            .is_some_and(|s| s["runs"][0]["waiting_for"] == "web.dns")
        {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before waiting: {status}");
        }
        assert!(Instant::now() < deadline, "the run never waited for dns");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Cleanup does not pull the sandbox from under a run at work.
    let o = run(&qs, &["failover", "cleanup", "shop"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        flat(&o).contains("another run of recovery_plan.shop is in progress: pid"),
        "{}",
        text(&o)
    );
    let approved = ok(&qs, &["approve", "shop", "dns"]);
    assert!(approved.contains("Approved step dns"), "{approved}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let st = state(&qs);
    let rec = &st["runs"][0];
    assert_eq!(rec["phase"], "completed");
    assert_eq!(rec["approvals"][0]["step"], "dns");
    assert!(rec.get("waiting_for").is_none(), "{rec:#}");
    // A second test while this one exists is refused, naming the cleanup.
    let o = run_test(&qs);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        flat(&o).contains("standby failover cleanup shop"),
        "{}",
        text(&o)
    );
    let cleaned = ok(&qs, &["failover", "cleanup", "shop"]);
    assert!(cleaned.contains("Cleaned up test failover"), "{cleaned}");
    assert!(files_under(&qs.join("sites/dr")).is_empty());
    let again = ok(&qs, &["failover", "cleanup", "shop"]);
    assert!(again.contains("no test failover"), "{again}");
}

fn run_test(qs: &Path) -> Output {
    run(qs, &["failover", "test", "shop", "--approve", "dns"])
}

#[test]
fn planned_failover_then_commit_is_recorded_and_refuses_a_second() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    // A shutdown command for the source database, which standby did not start.
    let machines = qs.join("machines.hcl");
    let hcl = std::fs::read_to_string(&machines).unwrap();
    assert!(hcl.contains(r#"shutdown { command = ["sh", "scripts/db-stop.sh"] }"#));
    let hcl = hcl.replacen(
        r#"shutdown { command = ["sh", "scripts/db-stop.sh"] }"#,
        r#"shutdown {
    command = ["sh", "-c", "sqlite3 \"$STANDBY_DISK_DATA\" 'SELECT count(*) FROM orders' > .standby/db-stopped-rows"]
    timeout = "30s"
  }"#,
        1,
    );
    std::fs::write(&machines, hcl).unwrap();
    ok(&qs, &["validate"]);
    // Rows written after the last point must survive: the final point has them.
    samples::add_orders(&qs.join("sites/onprem/db/data.sqlite"), 77).unwrap();
    let out = ok(&qs, &["failover", "planned", "shop", "--approve", "dns"]);
    assert!(out.contains("final point"), "{out}");
    assert_eq!(
        std::fs::read_to_string(qs.join(".standby/db-stopped-rows"))
            .unwrap()
            .trim(),
        "577"
    );
    let dr_db = qs.join("sites/dr/db/data.sqlite");
    assert_eq!(rows(&dr_db), 577);
    assert!(samples::ext4_is_clean(&qs.join("sites/dr/web/system.img")).unwrap());

    let st = state(&qs);
    assert_valid("state.schema.json", &st);
    let rec = &st["runs"][0];
    assert_eq!(rec["kind"], "planned");
    assert_eq!(rec["phase"], "completed");
    assert_eq!(rec["machines"]["machine.db"]["site"], "site.dr");
    assert_eq!(rec["machines"]["machine.db"]["status"], "running");
    assert!(
        rec["machines"]["machine.db"]["disks"]["data"]
            .as_str()
            .unwrap()
            .ends_with("sites/dr/db/data.sqlite")
    );

    let committed = ok(&qs, &["failover", "commit", "shop"]);
    assert!(committed.contains("run at site.dr"), "{committed}");
    assert_eq!(state(&qs)["runs"][0]["phase"], "committed");

    let o = run(&qs, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_valid("status.schema.json", &status);
    for p in status["protections"].as_array().unwrap() {
        assert_eq!(p["level"], "warning", "{status:#}");
        assert!(p["unprotected"].is_string(), "{status:#}");
    }
    let placed = status["recoveries"].as_array().unwrap();
    assert_eq!(placed.len(), 2);
    assert!(
        placed
            .iter()
            .all(|p| p["site"] == "site.dr" && p["phase"] == "committed")
    );
    // Running at DR without protection: WARNING, exit 2, and why.
    let o = run(&qs, &["status"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let text_status = String::from_utf8_lossy(&o.stdout);
    assert!(text_status.contains("RUNS AT"), "{text_status}");
    assert!(
        flat(&o).contains("protection.db: unprotected: machine.db is failed over to site.dr"),
        "{text_status}"
    );

    for kind in ["planned", "unplanned"] {
        let o = run(&qs, &["failover", kind, "shop"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            flat(&o).contains("is failed over to site.dr"),
            "{}",
            text(&o)
        );
    }
    let o = run(&qs, &["failover", "commit", "shop"]);
    assert!(flat(&o).contains("already committed"), "{}", text(&o));

    let points_before = ok(&qs, &["points", "--json"]);
    let o = run(&qs, &["replicate"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("skipping protection.db: machine.db is failed over to site.dr"),
        "{err}"
    );
    assert_eq!(ok(&qs, &["points", "--json"]), points_before);
}

#[test]
fn unplanned_failover_restores_the_chosen_point() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    let src = qs.join("sites/onprem/db/data.sqlite");
    let points: Vec<Value> = serde_json::from_str(&ok(&qs, &["points", "--json"])).unwrap();
    // The newest point of machine.db: the group instant replicate took.
    let first = points
        .iter()
        .rev()
        .find(|p| p["machine"] == "machine.db")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    samples::add_orders(&src, 100).unwrap();
    ok(&qs, &["replicate"]);
    assert_eq!(rows(&src), 600);

    // latest-app: app-consistent for db (it has quiesce hooks); web, which
    // cannot have such points, comes from the same instant.
    ok(
        &qs,
        &[
            "failover",
            "test",
            "shop",
            "--point",
            "latest-app",
            "--approve",
            "dns",
        ],
    );
    let st = state(&qs);
    let placed = &st["runs"][0]["machines"];
    assert_eq!(placed["machine.db"]["point"]["consistency"], "app");
    assert_eq!(
        placed["machine.web"]["point"]["created"],
        placed["machine.db"]["point"]["created"]
    );
    ok(&qs, &["failover", "cleanup", "shop"]);
    // A time before every point has none to offer.
    let early = run(
        &qs,
        &[
            "failover",
            "unplanned",
            "shop",
            "--point",
            "2020-01-01T00:00:00Z",
        ],
    );
    assert_eq!(early.status.code(), Some(1));
    assert!(
        flat(&early).contains("no point at or before that time"),
        "{}",
        text(&early)
    );

    let bad = run(
        &qs,
        &["failover", "unplanned", "shop", "--point", "yesterday"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(flat(&bad).contains("is not a point"), "{}", text(&bad));
    assert!(!qs.join("sites/dr").exists() || files_under(&qs.join("sites/dr")).is_empty());

    let out = ok(
        &qs,
        &[
            "failover",
            "unplanned",
            "shop",
            "--point",
            &first[..12],
            "--approve",
            "dns",
        ],
    );
    assert!(
        out.contains("Failover of recovery_plan.shop complete"),
        "{out}"
    );
    assert_eq!(rows(&qs.join("sites/dr/db/data.sqlite")), 500);
    let st = state(&qs);
    let rec = &st["runs"][0];
    assert_eq!(rec["kind"], "unplanned");
    assert_eq!(rec["machines"]["machine.db"]["point"]["id"], first.as_str());
    // The group's other machine comes from the same instant.
    assert_eq!(
        rec["machines"]["machine.web"]["point"]["created"],
        rec["machines"]["machine.db"]["point"]["created"]
    );
    // The source was left alone.
    assert_eq!(rows(&src), 600);
}

/// Wait until the plan's run in the state waits for `step`.
fn wait_for_waiting(qs: &Path, child: &mut std::process::Child, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = std::fs::read(qs.join(".standby/state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if st
            .as_ref()
            .is_some_and(|s| s["runs"][0]["waiting_for"] == step)
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before waiting: {status}");
        }
        assert!(Instant::now() < deadline, "the run never waited for {step}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_interrupted_drill_still_cleans_up_and_records_a_failed_drill() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    let reports = d.path().join("reports");
    let mut child = standby(&qs)
        .args(["drill", "shop", "--wait-for-approval", "--report-dir"])
        .arg(&reports)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_waiting(&qs, &mut child, "web.dns");
    // Both machines are up in the sandbox by now.
    assert!(!files_under(&qs.join("sites/dr")).is_empty());
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let left = files_under(&qs.join("sites/dr"));
    assert!(left.is_empty(), "left at the DR site: {left:?}");
    let st = state(&qs);
    assert!(st.get("runs").is_none(), "{st:#}");
    assert_eq!(st["drills"][0]["passed"], false);
    let report = json_file(&reports.join("report.json"));
    assert_eq!(report["interrupted"], true);
    assert_eq!(report["cleanup"]["passed"], true);
}

#[test]
fn drill_through_the_exec_provider_example() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("exec");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/exec-example"),
        &root,
    );
    samples::make_ext4(&root.join("sites/onprem/app/system.img"), "app", 8).unwrap();
    ok(&root, &["apply", "--auto-approve"]);
    let reports = d.path().join("reports");
    let out = ok(
        &root,
        &["drill", "app", "--report-dir", reports.to_str().unwrap()],
    );
    assert!(
        out.contains("# Drill of recovery_plan.app: PASSED"),
        "{out}"
    );
    let report = json_file(&reports.join("report.json"));
    assert_valid("report.schema.json", &report);
    assert_eq!(report["cleanup"]["passed"], true);
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("name=\"check disk\""), "{junit}");
    assert!(state(&root).get("runs").is_none());
}

#[test]
fn a_failover_killed_mid_run_leaves_the_state_true_and_can_be_run_again() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    let mut child = standby(&qs)
        .args(["failover", "unplanned", "shop", "--wait-for-approval"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_waiting(&qs, &mut child, "web.dns");
    child.kill().unwrap();
    child.wait().unwrap();
    // What it did is recorded: both machines placed at the DR site.
    let st = state(&qs);
    assert_valid("state.schema.json", &st);
    let rec = &st["runs"][0];
    assert_eq!(rec["phase"], "running");
    for m in ["machine.db", "machine.web"] {
        assert_eq!(rec["machines"][m]["site"], "site.dr", "{rec:#}");
        assert_eq!(rec["machines"][m]["status"], "running", "{rec:#}");
        let disk = rec["machines"][m]["disks"]["system"].as_str().unwrap();
        assert!(Path::new(disk).exists(), "{disk}");
    }
    let killed_run = rec["run_id"].as_str().unwrap().to_string();
    // Its process is gone, so it no longer blocks a new attempt.
    let out = ok(&qs, &["failover", "unplanned", "shop", "--approve", "dns"]);
    assert!(
        out.contains("Failover of recovery_plan.shop complete"),
        "{out}"
    );
    let st = state(&qs);
    let runs = st["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{st:#}");
    assert_ne!(runs[0]["run_id"], killed_run.as_str());
    assert_eq!(runs[0]["phase"], "completed");
}

/// A planned or unplanned failover while the plan's test failover is still
/// up (a disaster during a test) removes the test run first and says so:
/// its throw-away replicas would hold what the real ones need.
#[test]
fn a_failover_during_a_test_failover_removes_the_test_run_first() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    ok(&qs, &["failover", "test", "shop", "--approve", "dns"]);
    let sandbox = qs.join("sites/dr/.standby-test");
    assert!(sandbox.exists());
    let out = ok(&qs, &["failover", "unplanned", "shop", "--approve", "dns"]);
    assert!(
        out.contains("The test failover shop-test-") && out.contains("is removed first"),
        "{out}"
    );
    assert!(!sandbox.exists(), "the test run's replicas are left");
    let st = state(&qs);
    let runs = st["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{st:#}");
    assert_eq!(runs[0]["kind"], "unplanned");
    assert_eq!(runs[0]["phase"], "completed");
}

/// A planned failover whose final points cannot be taken (the vault is
/// gone) fails before it stops any source machine: the sources keep
/// running. With the vault back, the same command goes through.
#[test]
fn planned_failover_stops_nothing_when_the_vault_cannot_take_final_points() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    let machines = qs.join("machines.hcl");
    let hcl = std::fs::read_to_string(&machines).unwrap();
    let hcl = hcl.replacen(
        r#"shutdown { command = ["sh", "scripts/db-stop.sh"] }"#,
        r#"shutdown { command = ["sh", "-c", "touch .standby/db-stopped"] }"#,
        1,
    );
    std::fs::write(&machines, hcl).unwrap();
    let vault = qs.join(".standby/vault");
    let away = qs.join(".standby/vault-away");
    std::fs::rename(&vault, &away).unwrap();
    let o = run(&qs, &["failover", "planned", "shop", "--approve", "dns"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(flat(&o).contains("nothing was stopped"), "{}", text(&o));
    assert!(
        !qs.join(".standby/db-stopped").exists(),
        "the source database was shut down:\n{}",
        text(&o)
    );
    std::fs::rename(&away, &vault).unwrap();
    // A vault that opens but takes no write (read-only, full): the same.
    let chattr = |flag: &str| {
        let o = Command::new("chattr")
            .arg(flag)
            .arg(&vault)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "chattr {flag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    chattr("+i");
    let o = run(&qs, &["failover", "planned", "shop", "--approve", "dns"]);
    chattr("-i");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(flat(&o).contains("nothing was stopped"), "{}", text(&o));
    assert!(!qs.join(".standby/db-stopped").exists(), "{}", text(&o));
    let out = ok(&qs, &["failover", "planned", "shop", "--approve", "dns"]);
    assert!(out.contains("final point"), "{out}");
    assert!(qs.join(".standby/db-stopped").exists());
}
