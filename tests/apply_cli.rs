//! `standby apply` end to end through the binary on real sample disks:
//! the quickstart bar (plan, apply, plan again shows nothing), kill -9 at
//! random moments of a six-protection apply followed by apply again, and
//! the refusals (non-interactive, stale saved plan, destroy without
//! --allow-destroy, prevent_destroy).
//!
//! "Not done twice", as tested: however often an apply is killed, each
//! protection ends with exactly one recovery point — an interrupted enable
//! that already wrote its point is adopted by the next run, never repeated.

mod common;
use common::{Rng, copy_dir, text};

use serde_json::Value;
use standby::samples;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn standby(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_standby"));
    c.arg("-C")
        .arg(dir)
        .env("NO_COLOR", "1")
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

/// The exit code of `plan --detailed-exitcode`.
fn plan_code(dir: &Path) -> i32 {
    let o = run(dir, &["plan", "--detailed-exitcode"]);
    o.status.code().unwrap_or(-1)
}

/// Points per protection, from `standby points --json`.
fn points(dir: &Path) -> Vec<Value> {
    let out = ok(dir, &["points", "--json"]);
    serde_json::from_str::<Vec<Value>>(&out).unwrap()
}

fn points_of(dir: &Path, protection: &str) -> usize {
    points(dir)
        .iter()
        .filter(|p| p["protection"] == protection)
        .count()
}

/// A quickstart copy with real disks for machines db and web.
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
    root
}

#[test]
fn quickstart_plan_apply_plan_converges() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    let plan = ok(&qs, &["plan"]);
    assert!(plan.contains("+ protection.db"), "{plan}");
    assert!(plan.contains("9 to add"), "{plan}");
    assert_eq!(plan_code(&qs), 2);

    let out = ok(&qs, &["apply", "--auto-approve"]);
    assert!(
        out.contains("create protection.db: done, first point"),
        "{out}"
    );
    assert!(out.contains("Apply complete: 9 added"), "{out}");
    assert_eq!(points_of(&qs, "protection.db"), 1);
    assert_eq!(points_of(&qs, "protection.web"), 1);
    assert_eq!(plan_code(&qs), 0);

    let state: Value =
        serde_json::from_slice(&std::fs::read(qs.join(".standby/state.json")).unwrap()).unwrap();
    let db = &state["objects"]["protection.db"];
    assert_eq!(db["status"], "protected");
    assert_eq!(db["attributes"]["observed.recovery_points"], 1);
    assert_eq!(state["objects"]["vault.main"]["status"], "ready");
    // The state apply writes is the documented format.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/state.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let problems: Vec<String> = validator
        .iter_errors(&state)
        .map(|e| e.to_string())
        .collect();
    assert!(problems.is_empty(), "{problems:?}");

    // Applying again changes nothing and takes no point.
    let again = ok(&qs, &["apply", "--auto-approve"]);
    assert!(again.contains("No changes"), "{again}");
    assert_eq!(points(&qs).len(), 2);
    ok(&qs, &["vault", "verify", "--read-data"]);
}

#[test]
fn json_events_one_per_line() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    let out = ok(
        &qs,
        &["apply", "--auto-approve", "--json", "--parallelism", "1"],
    );
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let started = events.iter().filter(|e| e["event"] == "started").count();
    let finished = events.iter().filter(|e| e["event"] == "finished").count();
    assert_eq!((started, finished), (9, 9));
    let last = events.last().unwrap();
    assert_eq!(last["event"], "summary");
    assert_eq!(last["done"], 9);
    // With parallelism 1 every step finishes before the next starts.
    for pair in events.windows(2) {
        if pair[1]["event"] == "started" {
            assert_ne!(pair[0]["event"], "started", "{out}");
        }
    }
}

#[test]
fn saved_plan_applies_and_then_is_stale() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    let file = d.path().join("p.json");
    let f = file.to_str().unwrap();
    ok(&qs, &["plan", "--out", f]);
    let out = ok(&qs, &["apply", f]);
    assert!(out.contains("Apply complete"), "{out}");
    assert_eq!(plan_code(&qs), 0);

    // The same file again: the state moved (serial) since it was made.
    let o = run(&qs, &["apply", f]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot be applied"), "{err}");
    assert!(err.contains("a state now exists"), "{err}");

    // A plan made now, then the configuration changes: refused, naming it.
    let pol = qs.join("main.hcl");
    let hcl = std::fs::read_to_string(&pol).unwrap();
    std::fs::write(&pol, hcl.replace("\"24h\"", "\"48h\"")).unwrap();
    ok(&qs, &["plan", "--out", f]);
    let serial_before = std::fs::read(qs.join(".standby/state.json")).unwrap();
    let hcl = std::fs::read_to_string(&pol).unwrap();
    std::fs::write(&pol, hcl.replace("\"48h\"", "\"72h\"")).unwrap();
    let o = run(&qs, &["apply", f]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("configuration changed"), "{err}");
    assert_eq!(
        std::fs::read(qs.join(".standby/state.json")).unwrap(),
        serial_before,
        "a refused apply must not write state"
    );
}

#[test]
fn refusals_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());

    // Non-interactive without --auto-approve.
    let o = run(&qs, &["apply"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a terminal"), "{err}");
    assert!(err.contains("--auto-approve"), "{err}");
    assert!(!qs.join(".standby/state.json").exists());
    assert!(!qs.join(".standby/vault").exists());

    ok(&qs, &["apply", "--auto-approve"]);
    let state = || std::fs::read(qs.join(".standby/state.json")).unwrap();

    // Deleting a protection needs --allow-destroy.
    let prot = qs.join("protection.hcl");
    let hcl = std::fs::read_to_string(&prot).unwrap();
    let without_web = hcl[..hcl.find("protection \"web\"").unwrap()].to_string();
    std::fs::write(&prot, &without_web).unwrap();
    // The recovery plan lists machine.web, which would be unprotected.
    std::fs::remove_file(qs.join("recovery.hcl")).unwrap();
    let before = state();
    let o = run(&qs, &["apply", "--auto-approve"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("protection.web"), "{err}");
    assert!(err.contains("--allow-"), "{err}");
    assert_eq!(state(), before);
    assert_eq!(points_of(&qs, "protection.web"), 1);

    let out = ok(&qs, &["apply", "--auto-approve", "--allow-destroy"]);
    assert!(
        out.contains("delete protection.web: done, deleted 1 recovery point"),
        "{out}"
    );
    assert_eq!(points_of(&qs, "protection.web"), 0);
    assert_eq!(points_of(&qs, "protection.db"), 1);
    assert_eq!(plan_code(&qs), 0);
    ok(&qs, &["vault", "verify", "--read-data"]);

    // prevent_destroy, recorded by an update, then the protection is removed.
    let guarded = without_web.replace(
        "consistency_group = \"shop\"",
        "consistency_group = \"shop\"\n  prevent_destroy   = true",
    );
    std::fs::write(&prot, &guarded).unwrap();
    let out = ok(&qs, &["apply", "--auto-approve"]);
    assert!(out.contains("update protection.db: done"), "{out}");
    std::fs::write(&prot, "").unwrap();
    let before = state();
    let o = run(&qs, &["apply", "--auto-approve", "--allow-destroy"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("prevent_destroy"), "{err}");
    assert!(err.contains("protection.db"), "{err}");
    assert_eq!(state(), before);
    assert_eq!(points_of(&qs, "protection.db"), 1);
}

/// Six machines, each with an ext4 system disk and a raw data disk of
/// random bytes, each protected on its own, into one vault.
fn fleet(d: &Path) -> PathBuf {
    let root = d.join("fleet");
    std::fs::create_dir_all(&root).unwrap();
    let main = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/quickstart/main.hcl"),
    )
    .unwrap();
    std::fs::write(root.join("main.hcl"), main).unwrap();
    let mut hcl = String::new();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for i in 1..=6 {
        let m = format!("m{i}");
        hcl.push_str(&format!(
            "machine \"{m}\" {{\n  site = site.onprem\n  disk \"system\" {{ path = \"{m}/system.img\" }}\n  disk \"data\" {{ path = \"{m}/data.img\" }}\n}}\n\n\
             protection \"{m}\" {{\n  machine = machine.{m}\n  target  = site.dr\n  vault   = vault.main\n  policy  = policy.standard\n}}\n\n"
        ));
        let dir = root.join("sites/onprem").join(&m);
        samples::make_ext4(&dir.join("system.img"), &m, 16).unwrap();
        let data: Vec<u8> = (0..4 << 20)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        std::fs::write(dir.join("data.img"), data).unwrap();
    }
    std::fs::write(root.join("fleet.hcl"), hcl).unwrap();
    root
}

#[test]
fn kill_9_at_random_moments_then_apply_again_converges() {
    let rounds: usize = if std::env::var_os("STANDBY_LONG").is_some() {
        20
    } else {
        4
    };
    let mut rng = Rng::seeded("apply kills");
    let d = tempfile::tempdir().unwrap();
    let template = fleet(d.path());
    // 6 protections + 6 machines + vault + 2 sites + policy = 16 steps,
    // each with a started and a finished line.
    let lines_total = 32;
    let mut killed_mid_run = 0;
    let mut adopted = 0;
    for round in 0..rounds {
        let dir = d.path().join(format!("round{round}"));
        copy_dir(&template, &dir);
        let mut child = standby(&dir)
            .args(["apply", "--auto-approve", "--json", "--parallelism", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill after a random number of event lines, plus a random pause
        // of up to 50 ms so the kill also lands inside steps.
        let after = rng.below(lines_total);
        let mut seen = 0;
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while seen < after && out.read_line(&mut line).unwrap() > 0 {
            seen += 1;
            line.clear();
        }
        std::thread::sleep(std::time::Duration::from_millis(rng.below(50)));
        // SIGKILL: no cleanup of any kind runs in the child.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if !status.success() {
            killed_mid_run += 1;
        }

        // The state is readable and the next plan shows only what is left.
        let left = run(&dir, &["plan", "--detailed-exitcode"]);
        assert!(
            matches!(left.status.code(), Some(0 | 2)),
            "round {round}: plan after kill failed:\n{}",
            text(&left)
        );
        let out = ok(&dir, &["apply", "--auto-approve"]);
        assert!(
            out.contains("Apply complete") || out.contains("No changes"),
            "round {round}:\n{out}"
        );
        if out.contains("adopted") {
            adopted += 1;
        }
        assert_eq!(plan_code(&dir), 0, "round {round}: not converged");
        ok(&dir, &["vault", "verify", "--read-data"]);
        for i in 1..=6 {
            assert_eq!(
                points_of(&dir, &format!("protection.m{i}")),
                1,
                "round {round} (killed after {after} lines): protection.m{i} must have exactly one initial point"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!(
        "{killed_mid_run} of {rounds} rounds were killed before apply finished; {adopted} rerun(s) adopted a point an interrupted enable had written"
    );
    assert!(killed_mid_run > 0, "no round was actually interrupted");
}

/// Start `apply --json` on `dir` and return it once its first step started.
fn start_apply(dir: &Path) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = standby(dir)
        .args(["apply", "--auto-approve", "--json", "--parallelism", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("\"started\""), "{line}");
    (child, out)
}

#[test]
fn a_second_apply_is_refused_while_the_first_holds_the_lock() {
    let d = tempfile::tempdir().unwrap();
    let dir = fleet(d.path());
    let (mut first, mut out) = start_apply(&dir);
    let o = run(&dir, &["apply", "--auto-approve"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("standby apply"), "the holder is named: {err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(first.wait().unwrap().success(), "{rest}");
    assert_eq!(plan_code(&dir), 0);
}

#[test]
fn sigint_starts_nothing_new_and_leaves_state_true() {
    let d = tempfile::tempdir().unwrap();
    let dir = fleet(d.path());
    let (mut child, out) = start_apply(&dir);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "summary", "{lines:?}");
    assert_eq!(summary["interrupted"], true, "{lines:?}");
    assert!(summary["not_started"].as_u64().unwrap() > 0, "{lines:?}");
    assert!(lines.iter().any(|e| e["event"] == "interrupted"));
    // The lock is free, the state holds what finished, apply finishes the rest.
    assert_eq!(plan_code(&dir), 2);
    ok(&dir, &["apply", "--auto-approve"]);
    assert_eq!(plan_code(&dir), 0);
    for i in 1..=6 {
        assert_eq!(points_of(&dir, &format!("protection.m{i}")), 1);
    }
}

#[test]
fn refresh_only_shows_and_records_drift() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    ok(&qs, &["apply", "--auto-approve"]);
    let o = run(&qs, &["plan", "--refresh-only", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("No drift"));

    // Outside standby: web's point is deleted by hand, db's system disk grows.
    let web_point = points(&qs)
        .into_iter()
        .find(|p| p["protection"] == "protection.web")
        .unwrap();
    let id = web_point["id"].as_str().unwrap();
    std::fs::remove_file(qs.join(".standby/vault/points").join(id)).unwrap();
    let img = qs.join("sites/onprem/db/system.img");
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(32 << 20).unwrap();
    drop(f);

    let before = std::fs::read(qs.join(".standby/state.json")).unwrap();
    let o = run(&qs, &["plan", "--refresh-only", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(
            "protection.web: recovery_points 1 -> 0 (points were deleted outside standby)"
        ),
        "{out}"
    );
    assert!(
        out.contains("machine.db: disk.system.size 16.0 MiB -> 32.0 MiB (the disk grew)"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(qs.join(".standby/state.json")).unwrap(),
        before,
        "plan writes nothing"
    );

    // Refusing to ask without a terminal, then recording with --auto-approve.
    let o = run(&qs, &["apply", "--refresh-only"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = ok(&qs, &["apply", "--refresh-only", "--auto-approve"]);
    assert!(out.contains("Recorded the refreshed facts"), "{out}");
    let o = run(&qs, &["plan", "--refresh-only", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The configuration still matches: drift is facts, not changes.
    assert_eq!(plan_code(&qs), 0);

    // The whole vault goes.
    std::fs::remove_dir_all(qs.join(".standby/vault")).unwrap();
    let o = run(&qs, &["plan", "--refresh-only", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("vault.main: present true -> false (the vault is gone)"),
        "{out}"
    );
    assert!(
        out.contains("protection.db: recovery_points 1 -> 0"),
        "{out}"
    );
}

#[test]
fn replace_deletes_then_creates_and_records_every_attribute() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    ok(&qs, &["apply", "--auto-approve"]);
    let old_id = points(&qs)
        .into_iter()
        .find(|p| p["protection"] == "protection.db")
        .unwrap()["id"]
        .clone();
    std::fs::write(
        qs.join("dr2.hcl"),
        "site \"dr2\" {\n  provider = \"local\"\n  root     = \"sites/dr2\"\n}\n",
    )
    .unwrap();
    let prot = qs.join("protection.hcl");
    let hcl = std::fs::read_to_string(&prot).unwrap();
    let (db, web) = hcl.split_at(hcl.find("protection \"web\"").unwrap());
    std::fs::write(&prot, db.replace("site.dr", "site.dr2") + web).unwrap();

    let o = run(&qs, &["apply", "--auto-approve"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a replace destroys points: {}",
        text(&o)
    );

    let out = ok(
        &qs,
        &["apply", "--auto-approve", "--allow-destroy", "--json"],
    );
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |event: &str, step: &str| {
        events
            .iter()
            .position(|e| e["event"] == event && e["step"] == step)
            .unwrap_or_else(|| panic!("no {event} {step}: {out}"))
    };
    assert!(at("finished", "delete protection.db") < at("started", "create protection.db"));
    assert!(at("finished", "create site.dr2") < at("started", "create protection.db"));

    let db_points: Vec<Value> = points(&qs)
        .into_iter()
        .filter(|p| p["protection"] == "protection.db")
        .collect();
    assert_eq!(db_points.len(), 1);
    assert_ne!(
        db_points[0]["id"], old_id,
        "the old point went, a new one came"
    );
    assert_eq!(plan_code(&qs), 0);
    let state: Value =
        serde_json::from_slice(&std::fs::read(qs.join(".standby/state.json")).unwrap()).unwrap();
    let attrs = &state["objects"]["protection.db"]["attributes"];
    assert_eq!(attrs["target"], "site.dr2");
    assert_eq!(attrs["machine"], "machine.db");
    assert_eq!(attrs["vault"], "vault.main");
    assert_eq!(attrs["observed.recovery_points"], 1);
    ok(&qs, &["vault", "verify", "--read-data"]);
}

/// What an apply killed between writing a first point and recording it
/// leaves behind (points of this state's lineage that the state does not
/// list), made on purpose: the next apply adopts them instead of doing
/// the work again. (Points without an owner are not adopted: see
/// tests/vault_owners.rs.)
#[test]
fn an_interrupted_enable_is_adopted_not_repeated() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path());
    ok(&qs, &["apply", "--auto-approve"]);
    assert_eq!(points(&qs).len(), 2);
    let path = qs.join(".standby/state.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let objects = doc["objects"].as_object_mut().unwrap();
    objects.remove("protection.db");
    objects.remove("protection.web");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    let out = ok(&qs, &["apply", "--auto-approve"]);
    assert!(
        out.contains("create protection.db: done, adopted 1 point"),
        "{out}"
    );
    assert!(
        out.contains("create protection.web: done, adopted 1 point"),
        "{out}"
    );
    assert_eq!(points(&qs).len(), 2, "no second initial point");
    assert_eq!(plan_code(&qs), 0);
}

#[test]
fn sigint_during_a_first_replication_finishes_or_abandons_it_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let dir = fleet(d.path());
    let mut child = standby(&dir)
        .args(["apply", "--auto-approve", "--json", "--parallelism", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let step = loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "apply ended early");
        let e: Value = serde_json::from_str(&line).unwrap();
        if e["event"] == "started"
            && e["step"]
                .as_str()
                .unwrap()
                .starts_with("create protection.")
        {
            break e["step"].as_str().unwrap().to_string();
        }
    };
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let fate = events
        .iter()
        .find(|e| e["step"] == step.as_str() && e["event"] != "started")
        .unwrap_or_else(|| panic!("{step} has no outcome: {events:?}"));
    let protection = step.trim_start_matches("create ");
    eprintln!("{step} after SIGINT: {}", fate["event"]);
    match fate["event"].as_str().unwrap() {
        // Stopped before writing: no point, nothing recorded.
        "abandoned" => assert_eq!(points_of(&dir, protection), 0),
        "finished" => assert_eq!(points_of(&dir, protection), 1),
        other => panic!("{step}: unexpected {other}: {events:?}"),
    }
    // No other step started after the interrupt.
    assert!(
        !events.iter().any(|e| e["event"] == "started"),
        "{events:?}"
    );
    ok(&dir, &["apply", "--auto-approve"]);
    assert_eq!(plan_code(&dir), 0);
    assert_eq!(points_of(&dir, protection), 1);
    ok(&dir, &["vault", "verify", "--read-data"]);
}
