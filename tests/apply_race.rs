//! Two `standby apply --auto-approve` processes started at the same instant
//! on one multi-protection configuration, against local state and against
//! remote state on Azurite: exactly one wins, the other is refused with the
//! lock holder named (pid, host, command) and changes nothing; the state
//! loses no write (every protection recorded with its one point, a serial
//! that counts the writes, and the next `plan --detailed-exitcode` exits 0).
//!
//! The winner's database freeze hook waits for a release file, so the race
//! is decided while the winner provably holds the lock — no timing luck.

mod common;
mod watch_support;

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use watch_support::{quickstart, standby};

const POLICY: &str = r#"rpo_threshold = "15m"
crash_consistent_every = "5m"
app_consistent_every = "1h"
retention = "24h""#;

/// The quickstart plus two more protected machines (four protections), with
/// a freeze hook that holds until `release` exists (or 20 s pass).
fn config(d: &Path) -> std::path::PathBuf {
    let qs = quickstart(d, POLICY, None);
    std::fs::write(
        qs.join("scripts/db-freeze.sh"),
        "#!/bin/sh\ni=0\nwhile [ ! -e release ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done\n",
    )
    .unwrap();
    let main = qs.join("machines.hcl");
    let text = std::fs::read_to_string(&main)
        .unwrap()
        .replace("timeout = \"10s\"", "timeout = \"30s\"");
    std::fs::write(&main, text).unwrap();
    let mut extra = String::new();
    for m in ["app1", "app2"] {
        let dir = qs.join("sites/onprem").join(m);
        standby::samples::make_ext4(&dir.join("system.img"), m, 8).unwrap();
        extra.push_str(&format!(
            "machine \"{m}\" {{\n  site = site.onprem\n  disk \"system\" {{ path = \"{m}/system.img\" }}\n}}\n\n\
             protection \"{m}\" {{\n  machine = machine.{m}\n  target  = site.dr\n  vault   = vault.main\n  policy  = policy.standard\n}}\n\n"
        ));
    }
    std::fs::write(qs.join("extra.hcl"), extra).unwrap();
    qs
}

fn spawn(dir: &Path, backend: &[String]) -> Child {
    standby(dir)
        .args(["apply", "--auto-approve", "--no-color"])
        .args(backend)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_first(a: &mut Child, b: &mut Child, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        if a.try_wait().unwrap().is_some() {
            return 0;
        }
        if b.try_wait().unwrap().is_some() {
            return 1;
        }
        assert!(
            Instant::now() < deadline,
            "neither apply finished in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn race(dir: &Path, backend: &[String]) {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut children = [spawn(dir, backend), spawn(dir, backend)];
    let [a, b] = &mut children;
    let first = wait_first(a, b, Duration::from_secs(60));
    let [a, b] = children;
    let (loser, winner) = if first == 0 { (a, b) } else { (b, a) };
    let winner_pid = winner.id();
    let lost = loser.wait_with_output().unwrap();
    assert_eq!(
        lost.status.code(),
        Some(1),
        "the loser is refused:\n{}",
        text(&lost)
    );
    let err = String::from_utf8_lossy(&lost.stderr);
    assert!(err.contains("locked by"), "{err}");
    assert!(
        err.contains(&format!("pid {winner_pid}")),
        "the holder's pid: {err}"
    );
    assert!(err.contains(&host), "the holder's host: {err}");
    assert!(err.contains("standby apply"), "the holder's command: {err}");
    assert!(
        !String::from_utf8_lossy(&lost.stdout).contains("done"),
        "the loser ran no step:\n{}",
        text(&lost)
    );

    std::fs::write(dir.join("release"), b"").unwrap();
    let won = winner.wait_with_output().unwrap();
    assert!(won.status.success(), "the winner finishes:\n{}", text(&won));
    let out = String::from_utf8_lossy(&won.stdout);
    assert!(out.contains("Apply complete: 13 added"), "{out}");

    // Nothing lost: the next plan has nothing to do and the state names
    // every protection with its one point.
    let o = standby(dir)
        .args(["plan", "--detailed-exitcode"])
        .args(backend)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let remote = backend.get(1).map(|u| standby::model::Backend {
        url: u.trim_start_matches("url=").to_string(),
    });
    let doc = standby::state::open_backend(dir, remote.as_ref())
        .unwrap()
        .read()
        .unwrap()
        .expect("a state");
    let state = serde_json::to_value(&doc).unwrap();
    // One write per step: 13 objects, each written once by the one winner.
    assert_eq!(doc.serial, 13, "{state}");
    for p in ["db", "web", "app1", "app2"] {
        let obj = &state["objects"][format!("protection.{p}")];
        assert_eq!(obj["status"], "protected", "{p}: {state}");
        assert_eq!(obj["attributes"]["observed.recovery_points"], 1, "{p}");
    }
    let o = standby(dir).args(["points", "--json"]).output().unwrap();
    let points: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(points.len(), 4, "one point per protection: {points:?}");
}

#[test]
fn two_applies_at_once_on_local_state_one_wins_one_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = config(d.path());
    race(&dir, &[]);
}

#[test]
fn two_applies_at_once_on_azurite_state_one_wins_one_is_refused() {
    let base = common::service_url("STANDBY_TEST_AZ_URL");
    let url = format!("{}/{}", base.trim_end_matches('/'), common::unique("race"));
    let d = tempfile::tempdir().unwrap();
    let dir = config(d.path());
    race(&dir, &["--backend-config".into(), format!("url={url}")]);
    assert!(
        !dir.join(".standby/state.json").exists(),
        "the state went to Azurite, not to a local file"
    );
}
