//! Recovery runs exclude each other and survive their own death (issue 11
//! item 4), through the real binary on the quickstart: `failover`, `drill`
//! and `failback` racing themselves (exactly one proceeds, the other names
//! the holder), a drill killed with SIGKILL at random moments (the next
//! drill runs and cleans up after it), and a closed stdout ending output
//! quietly (`standby drill shop | head -1`).

mod common;

use common::{Rng, count_from_env, ok, quickstart, standby, state, text};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// The quickstart applied with a common point of its consistency group.
fn applied(d: &Path) -> PathBuf {
    let qs = quickstart(d, 16, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    qs
}

fn spawn(qs: &Path, args: &[&str]) -> Child {
    standby(qs)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Output with miette's wrapping undone: one line, single spaces.
fn flat(o: &Output) -> String {
    text(o)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Files under `dir`, recursively (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Wait until some run of the state waits for `step`.
fn wait_for_waiting(qs: &Path, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = std::fs::read(qs.join(".standby/state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let waiting = st.as_ref().and_then(|s| s["runs"].as_array().cloned());
        if waiting
            .unwrap_or_default()
            .iter()
            .any(|r| r["waiting_for"] == step)
        {
            return;
        }
        assert!(Instant::now() < deadline, "no run waited for {step}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Start the same command twice at once; each waits at the manual step
/// `web.STEP` when it gets that far. Exactly one must proceed (it gets
/// to the step and finishes once approved); the other must be refused at
/// once, naming the holder's pid, and change nothing.
fn race(qs: &Path, args: &[&str], step: &str, done: &str) {
    let mut with_wait: Vec<&str> = args.to_vec();
    with_wait.push("--wait-for-approval");
    let a = spawn(qs, &with_wait);
    let b = spawn(qs, &with_wait);
    let (pa, pb) = (a.id(), b.id());
    let mut kids = [Some(a), Some(b)];
    // The loser ends on its own; the winner waits for the approval.
    let deadline = Instant::now() + Duration::from_secs(120);
    let loser = loop {
        if let Some(i) = (0..2).find(|&i| {
            kids[i]
                .as_mut()
                .is_some_and(|k| k.try_wait().unwrap().is_some())
        }) {
            break i;
        }
        assert!(Instant::now() < deadline, "neither run of {args:?} ended");
        std::thread::sleep(Duration::from_millis(20));
    };
    let lost = kids[loser].take().unwrap().wait_with_output().unwrap();
    let winner_pid = if loser == 0 { pb } else { pa };
    let msg = flat(&lost);
    assert_eq!(
        lost.status.code(),
        Some(1),
        "{args:?} loser:\n{}",
        text(&lost)
    );
    assert!(
        msg.contains("another run of recovery_plan.shop is in progress")
            && msg.contains(&format!("pid {winner_pid} ")),
        "the refused run must name the holder (pid {winner_pid}):\n{msg}"
    );
    wait_for_waiting(qs, &format!("web.{step}"));
    ok(qs, &["approve", "shop", step]);
    let won = kids[1 - loser].take().unwrap().wait_with_output().unwrap();
    assert!(won.status.success(), "{args:?} winner:\n{}", text(&won));
    let out = String::from_utf8_lossy(&won.stdout);
    assert!(out.contains(done), "{out}");
}

#[test]
fn failover_drill_and_failback_racing_themselves_let_exactly_one_proceed() {
    let d = tempfile::tempdir().unwrap();
    let qs = applied(d.path());

    race(&qs, &["drill", "shop"], "dns", "PASSED");
    let st = state(&qs);
    assert_eq!(st["drills"].as_array().unwrap().len(), 1, "{st:#}");
    assert!(st.get("runs").is_none(), "{st:#}");
    assert!(files_under(&qs.join("sites/dr")).is_empty());

    race(&qs, &["failover", "unplanned", "shop"], "dns", "complete");
    let st = state(&qs);
    assert_eq!(st["runs"].as_array().unwrap().len(), 1, "{st:#}");
    ok(&qs, &["failover", "commit", "shop"]);
    ok(&qs, &["reprotect", "shop"]);

    // The quickstart's `dns` step belongs to failover; give failback a
    // manual step of its own to wait at.
    let plan = qs.join("recovery.hcl");
    let hcl = std::fs::read_to_string(&plan).unwrap();
    let anchor = "      manual \"dns\" {";
    assert!(hcl.contains(anchor), "{hcl}");
    let hcl = hcl.replacen(
        anchor,
        &format!(
            "      manual \"dns_home\" {{\n        when         = \"failback\"\n        instructions = \"Point shop.example.com home\"\n      }}\n{anchor}"
        ),
        1,
    );
    std::fs::write(&plan, hcl).unwrap();
    race(
        &qs,
        &["failback", "shop"],
        "dns_home",
        "Failback of recovery_plan.shop complete",
    );
    let st = state(&qs);
    assert!(st.get("runs").is_none(), "{st:#}");
}

#[test]
fn a_drill_killed_at_random_moments_never_blocks_the_next_drill() {
    let d = tempfile::tempdir().unwrap();
    let qs = applied(d.path());
    // How long a whole drill takes here, to pick kill moments inside it.
    let t = Instant::now();
    ok(&qs, &["drill", "shop", "--approve", "dns"]);
    let whole = t.elapsed().as_millis() as u64;
    let mut rng = Rng::seeded("a_drill_killed_at_random_moments");
    let rounds = count_from_env("STANDBY_DRILL_KILLS", 4);
    let mut landed = 0;
    for round in 0..rounds {
        let at = rng.below(whole.max(1));
        let mut child = standby(&qs)
            .args(["drill", "shop", "--approve", "dns"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(at));
        if child.try_wait().unwrap().is_none() {
            landed += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        // The next drill runs (cleaning up whatever the dead one left) and passes.
        let o = standby(&qs)
            .args(["drill", "shop", "--approve", "dns"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "round {round}: drill after a kill at {at} ms failed:\n{}",
            text(&o)
        );
        let left = files_under(&qs.join("sites/dr"));
        assert!(left.is_empty(), "round {round}: left at DR: {left:?}");
        let st = state(&qs);
        assert!(st.get("runs").is_none(), "round {round}: {st:#}");
        assert_eq!(
            st["drills"].as_array().unwrap().last().unwrap()["passed"],
            true
        );
    }
    // The random kills may all land after the drill ended; the kill below
    // lands inside one for sure.
    println!("{landed} of {rounds} random kills landed before the drill ended");
    // A drill from cron (`--due`) is not blocked either: make one due by
    // killing a drill while its test run is up, then ask for due drills
    // as if a week had passed (a fresh state's history is cleared).
    let mut child = spawn(&qs, &["drill", "shop", "--wait-for-approval"]);
    wait_for_waiting(&qs, "web.dns");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!files_under(&qs.join("sites/dr")).is_empty());
    let o = standby(&qs)
        .args(["drill", "shop", "--approve", "dns"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        flat(&o).contains("left by a drill that is gone"),
        "the next drill says what it cleaned up:\n{}",
        text(&o)
    );
    assert!(files_under(&qs.join("sites/dr")).is_empty());
}

#[test]
fn a_closed_stdout_ends_output_quietly_and_the_drill_still_finishes() {
    let d = tempfile::tempdir().unwrap();
    let qs = applied(d.path());
    // `standby drill shop | head -1`
    let mut child = spawn(&qs, &["drill", "shop", "--approve", "dns"]);
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    // The reader is gone now; the drill keeps printing into a closed pipe.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    let st = state(&qs);
    assert_eq!(st["drills"][0]["passed"], true, "{st:#}");
    assert!(files_under(&qs.join("sites/dr")).is_empty());

    // Every command: stdout closed before it writes a byte.
    for args in [
        &["validate"][..],
        &["plan"],
        &["points"],
        &["status"],
        &["state", "list"],
        &["graph"],
        &["fmt", "--check", "--diff"],
        &["drill", "shop", "--approve", "dns"],
    ] {
        let open = standby(&qs)
            .args(args)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let mut c = spawn(&qs, args);
        drop(c.stdout.take());
        let closed = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&closed.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(
            closed.status.code(),
            open.status.code(),
            "{args:?} exits as with an open stdout:\n{err}"
        );
    }
}
