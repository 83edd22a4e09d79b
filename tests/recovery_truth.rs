//! Review notes and drill results are true (issue 11 item 9, issue 19's
//! RTO/RPO gaps), through the real binary on the quickstart:
//! (1) a plan replacing a protection quotes the points and bytes the vault
//! holds now, not what state recorded at the last apply; (2) a drill that
//! waits for the state lock says who holds it, never counts the wait as
//! RTO, gives up after `--lock-timeout`, and stops waiting on SIGTERM;
//! (3) an interrupted drill is recorded as interrupted; (4) a drill whose
//! RTO exceeds `max_rto` exits 1 and JUnit counts that case as a failure;
//! RPO is the oldest used point's age at the run's start.

mod common;

use common::{ok, points, quickstart, standby, state, text};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn applied(d: &Path) -> PathBuf {
    let qs = quickstart(d, 16, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    qs
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn flat(s: &str) -> String {
    s.replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The state lock held by another process (flock(1) on the lock file,
/// which names a made-up holder as standby would), until dropped.
struct Holder(Child);

impl Holder {
    fn take(qs: &Path) -> Holder {
        let lock = qs.join(".standby/state.lock");
        let since = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap()
            .format(&Rfc3339)
            .unwrap();
        std::fs::write(
            &lock,
            format!(
                r#"{{"id":"8d3c5a9e-0b7c-4a55-9d0e-6f1f3b2a1c00","pid":4242,"host":"ops-1","command":"standby apply (the test's holder)","since":"{since}"}}"#
            ),
        )
        .unwrap();
        let mut c = Command::new("flock")
            .arg(&lock)
            .args(["sh", "-c", "echo locked; cat >/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        Holder(c)
    }

    fn release(mut self) {
        drop(self.0.stdin.take());
        self.0.wait().unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawn standby with stderr read line by line into a channel.
fn spawn_watching(qs: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut c = standby(qs)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = c.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    (c, rx)
}

/// Wait for a stderr line containing `what`; all lines seen so far.
fn wait_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                seen.push_str(&l);
                seen.push('\n');
                if l.contains(what) {
                    return seen;
                }
            }
            Err(_) => panic!("no line with {what:?} on stderr:\n{seen}"),
        }
    }
}

/// No run and no drill in the state.
fn nothing_recorded(st: &Value) -> bool {
    let empty = |k: &str| {
        st.get(k)
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
    };
    empty("runs") && empty("drills")
}

#[test]
fn a_replacing_plan_quotes_the_points_the_vault_holds_now() {
    let d = tempfile::tempdir().unwrap();
    let qs = applied(d.path());
    // More points than the state recorded at apply.
    ok(&qs, &["replicate"]);
    ok(&qs, &["replicate"]);
    let mine: Vec<Value> = points(&qs)
        .into_iter()
        .filter(|p| p["protection"] == "protection.web")
        .collect();
    assert!(mine.len() >= 3, "{mine:#?}");
    let recorded = &state(&qs)["objects"]["protection.web"]["attributes"];
    assert_ne!(
        recorded["observed.recovery_points"].as_u64(),
        Some(mine.len() as u64),
        "the test needs state to lag behind the vault: {recorded:#}"
    );
    // Replace protection.web: a new target site.
    let main = qs.join("main.hcl");
    let mut hcl = std::fs::read_to_string(&main).unwrap();
    hcl.push_str("\nsite \"dr2\" {\n  provider = \"local\"\n  root     = \"sites/dr2\"\n}\n");
    std::fs::write(&main, hcl).unwrap();
    let prot = qs.join("protection.hcl");
    let hcl = std::fs::read_to_string(&prot).unwrap();
    let (db, web) = hcl.split_at(hcl.find("protection \"web\"").unwrap());
    std::fs::write(
        &prot,
        format!("{db}{}", web.replacen("site.dr", "site.dr2", 1)),
    )
    .unwrap();
    let out = ok(&qs, &["plan", "--json"]);
    let plan: Value = serde_json::from_str(&out).unwrap();
    let note = plan["notes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "points_destroyed" && n["subject"] == "protection.web")
        .unwrap_or_else(|| panic!("no points_destroyed note: {plan:#}"));
    let msg = note["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("its {} recovery points", mine.len())),
        "the note must count the {} points in the vault now: {msg}",
        mine.len()
    );
}

#[test]
fn a_drill_waiting_for_the_state_lock_names_the_holder_and_the_wait_is_not_rto() {
    let d = tempfile::tempdir().unwrap();
    let qs = applied(d.path());
    let reports = d.path().join("reports");

    // Bounded: --lock-timeout 1s gives up, names the holder, records nothing.
    let held = Holder::take(&qs);
    let o = standby(&qs)
        .args(["drill", "shop", "--approve", "dns", "--lock-timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = flat(&text(&o));
    assert!(all.contains("waiting for the state lock"), "{all}");
    assert!(
        all.contains("still locked after waiting 1s") && all.contains("pid 4242 on host ops-1"),
        "{all}"
    );
    let st = state(&qs);
    assert!(nothing_recorded(&st), "{st:#}");
    // Every command that takes the state lock takes --lock-timeout.
    for args in [
        &["apply", "--auto-approve", "--lock-timeout", "1s"][..],
        &["state", "rm", "machine.web", "--lock-timeout", "1s"],
        &["approve", "shop", "dns", "--lock-timeout", "1s"],
    ] {
        let o = standby(&qs).args(args).output().unwrap();
        let all = flat(&text(&o));
        assert_eq!(o.status.code(), Some(1), "{args:?}: {all}");
        assert!(
            all.contains("still locked after waiting 1s") && all.contains("pid 4242"),
            "{args:?}: {all}"
        );
    }
    // Without it, apply fails at once as before (0s, as Terraform).
    let o = standby(&qs)
        .args(["apply", "--auto-approve"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        flat(&text(&o)).contains("locked by pid 4242"),
        "{}",
        text(&o)
    );
    assert_eq!(state(&qs)["serial"], st["serial"]);

    // Interruptible: SIGTERM while waiting ends the drill at once, while
    // the lock is still held, and nothing was started.
    let (mut child, rx) = spawn_watching(&qs, &["drill", "shop", "--approve", "dns"]);
    wait_line(&rx, "waiting for the state lock");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let rest: String = rx.iter().collect::<Vec<_>>().join("\n");
    assert!(
        flat(&rest).contains("interrupted while waiting for the state lock"),
        "{rest}"
    );
    assert!(held.0.id() > 0);
    let st = state(&qs);
    assert!(nothing_recorded(&st), "{st:#}");

    // Shown and not RTO: the drill waits, says who holds the lock, and
    // goes on once it is released; the report shows the wait apart.
    let (child, rx) = spawn_watching(
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
    let seen = wait_line(&rx, "waiting for the state lock");
    assert!(
        flat(&seen).contains("held by pid 4242 on host ops-1"),
        "{seen}"
    );
    // Hold it a while longer, so the wait is longer than the drill itself.
    std::thread::sleep(Duration::from_secs(3));
    held.release();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = json_file(&reports.join("report.json"));
    let timeline = report["timeline"].as_array().unwrap();
    let wait: f64 = timeline
        .iter()
        .filter(|e| e["kind"] == "lock_wait")
        .map(|e| e["end_seconds"].as_f64().unwrap() - e["start_seconds"].as_f64().unwrap())
        .sum();
    assert!(wait >= 3.0, "the wait is shown: {report:#}");
    let machines_end = timeline
        .iter()
        .filter(|e| e["kind"] == "machine")
        .map(|e| e["end_seconds"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let rto = report["rto"]["seconds"].as_f64().unwrap();
    assert!(
        (rto - (machines_end - wait)).abs() < 0.01,
        "RTO {rto} must be the machines' end {machines_end} less the wait {wait}"
    );
    let st = state(&qs);
    let drill = &st["drills"][0];
    assert!(drill["rto_seconds"].as_f64().unwrap() < wait, "{drill:#}");
}

#[test]
fn an_interrupted_drill_is_recorded_as_interrupted_not_failed() {
    let d = tempfile::tempdir().unwrap();
    let qs = applied(d.path());
    let reports = d.path().join("reports");
    let (mut child, _rx) = spawn_watching(
        &qs,
        &[
            "drill",
            "shop",
            "--wait-for-approval",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while state(&qs)["runs"][0]["waiting_for"] != "web.dns" {
        assert!(Instant::now() < deadline, "the drill never waited");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    assert!(
        out.contains("# Drill of recovery_plan.shop: INTERRUPTED"),
        "{out}"
    );
    let st = state(&qs);
    assert_eq!(st["drills"][0]["interrupted"], true, "{st:#}");
    assert_eq!(st["drills"][0]["passed"], false, "{st:#}");
    // Not a failed recovery: status does not count it as the last drill.
    let o = standby(&qs).args(["status", "--json"]).output().unwrap();
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let plan = &s["recovery_plans"][0];
    assert_eq!(plan["state"], "never_drilled", "{s:#}");
    assert_eq!(json_file(&reports.join("report.json"))["interrupted"], true);
    // Neither passed nor failed in CI either: what the interrupt stopped
    // is skipped, naming the interrupt, and nothing is a failure.
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(junit.contains("failures=\"0\""), "{junit}");
    assert!(
        junit.contains("<skipped message=\"drill interrupted"),
        "{junit}"
    );
}

#[test]
fn a_drill_over_max_rto_fails_and_junit_counts_it() {
    let d = tempfile::tempdir().unwrap();
    let qs = applied(d.path());
    let reports = d.path().join("reports");
    // A passing drill: the RTO case is a passing test case.
    ok(
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
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    assert!(junit.contains("name=\"rto within max_rto\""), "{junit}");
    let report = json_file(&reports.join("report.json"));
    let cases = junit.matches("<testcase ").count();
    assert!(
        junit.contains(&format!("tests=\"{cases}\" failures=\"0\"")),
        "{junit}"
    );
    // RPO: the oldest point's age at the run's start, against the policy.
    let started = OffsetDateTime::parse(report["started_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let oldest = report["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| OffsetDateTime::parse(p["created"].as_str().unwrap(), &Rfc3339).unwrap())
        .min()
        .unwrap();
    let rpo = report["rpo"]["seconds"].as_f64().unwrap();
    assert!(
        (rpo - (started - oldest).as_seconds_f64()).abs() < 0.01,
        "rpo {rpo}: {report:#}"
    );
    assert!(rpo > 0.0);
    assert_eq!(report["rpo"]["limit_seconds"], 900);
    assert_eq!(report["rpo"]["within"], true);

    // max_rto 1s with a check that takes 2s: RTO exceeds it.
    let rec = qs.join("recovery.hcl");
    let hcl = std::fs::read_to_string(&rec).unwrap();
    std::fs::write(&rec, hcl.replace("max_rto  = \"10m\"", "max_rto  = \"1s\"")).unwrap();
    let m = qs.join("machines.hcl");
    let hcl = std::fs::read_to_string(&m).unwrap();
    let at = hcl.find("machine \"web\"").unwrap();
    let (a, b) = hcl.split_at(at);
    let b = b.replacen(
        "  check \"filesystem\" {",
        "  check \"slow\" {\n    command = [\"sleep\", \"2\"]\n  }\n\n  check \"filesystem\" {",
        1,
    );
    let mut f = std::fs::File::create(&m).unwrap();
    write!(f, "{a}{b}").unwrap();
    let o = standby(&qs)
        .args([
            "drill",
            "shop",
            "--approve",
            "dns",
            "--report-dir",
            reports.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report = json_file(&reports.join("report.json"));
    assert_eq!(report["rto"]["within"], false, "{report:#}");
    assert!(report["rto"]["seconds"].as_f64().unwrap() > 1.0);
    assert_eq!(report["passed"], false);
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap();
    let cases = junit.matches("<testcase ").count();
    let failed = junit.matches("<failure ").count();
    assert_eq!(failed, 1, "{junit}");
    assert!(
        junit.contains(&format!("tests=\"{cases}\" failures=\"1\"")),
        "JUnit must count the RTO case ({cases} cases, 1 failure):\n{junit}"
    );
    assert!(junit.contains("exceeds max_rto 1s"), "{junit}");
    assert_eq!(state(&qs)["drills"][1]["passed"], false);
}
