//! Issue 16, item 1's second part, through the real binary: no wall clock
//! decides safety or order. A prune whose host clock runs 31 minutes
//! ahead never breaks a running point; a writer whose lock was taken away
//! commits nothing; a dead writer on this host does not block prune; a
//! point dated in the future is flagged, never `latest`, and never keeps
//! newer points from being kept. Clocks are skewed with the test hook
//! `STANDBY_CLOCK_SKEW`.

mod common;

use common::{ok, standby, text};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A configuration with one machine, one 1 MiB disk, and a freeze hook that
/// holds the point open (after the vault lock is taken) until `go` exists.
fn config(d: &Path, retention: &str) -> PathBuf {
    let root = d.join("cfg");
    std::fs::create_dir_all(root.join("sites/onprem/db")).unwrap();
    std::fs::create_dir_all(root.join("sites/dr")).unwrap();
    let ctl = root.join("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let hook = format!(
        "[ -e {c}/hold ] || exit 0; touch {c}/frozen; while [ ! -e {c}/go ]; do sleep 0.02; done",
        c = ctl.display()
    );
    std::fs::write(
        root.join("main.hcl"),
        format!(
            r#"vault "main" {{
  url      = "file://.standby/vault"
  key_file = ".standby/keys/main.key"
}}
site "onprem" {{
  provider = "local"
  root     = "sites/onprem"
}}
site "dr" {{
  provider = "local"
  root     = "sites/dr"
}}
policy "p" {{
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  app_consistent_every   = "1h"
  retention              = "{retention}"
}}
machine "db" {{
  site = site.onprem
  disk "data" {{ path = "db/data.img" }}
  quiesce {{
    freeze  = ["sh", "-c", "{hook}"]
    thaw    = ["true"]
    timeout = "120s"
  }}
}}
protection "db" {{
  machine = machine.db
  target  = site.dr
  vault   = vault.main
  policy  = policy.p
}}
"#
        ),
    )
    .unwrap();
    ok(&root, &["vault", "init"]);
    root
}

fn disk(root: &Path) -> PathBuf {
    root.join("sites/onprem/db/data.img")
}

/// 1 MiB of bytes from `seed`, no block like another seed's.
fn content(seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn replicate(root: &Path, skew: Option<&str>) -> String {
    let mut c = standby(root);
    c.args(["replicate", "--json"]);
    if let Some(s) = skew {
        c.env("STANDBY_CLOCK_SKEW", s);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "replicate failed:\n{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["points"][0]["id"].as_str().unwrap().to_string()
}

/// A replicate held inside its point (vault lock taken, freeze hook
/// waiting for `go`).
fn held_replicate(root: &Path) -> Child {
    let ctl = root.join("ctl");
    for f in ["frozen", "go"] {
        let _ = std::fs::remove_file(ctl.join(f));
    }
    std::fs::write(ctl.join("hold"), "").unwrap();
    let child = standby(root)
        .args(["replicate", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ctl.join("frozen").exists() {
        assert!(Instant::now() < deadline, "the replicate never froze");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(ctl.join("hold")).unwrap();
    child
}

fn release(root: &Path) {
    std::fs::write(root.join("ctl/go"), "").unwrap();
}

fn points(root: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(root, &["points", "--json"])).unwrap()
}

fn restore(root: &Path, point: &str) -> Vec<u8> {
    let out = root.join("restored.img");
    let _ = std::fs::remove_file(&out);
    ok(
        root,
        &[
            "restore",
            point,
            "--disk",
            "data",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    std::fs::read(&out).unwrap()
}

fn prune(root: &Path, skew: &str, wait: &str) -> std::process::Output {
    standby(root)
        .args(["vault", "prune", "--wait", wait])
        .env("STANDBY_CLOCK_SKEW", skew)
        .output()
        .unwrap()
}

#[test]
fn a_prune_31_minutes_ahead_never_breaks_a_running_point() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path(), "30m");
    // A's blocks end up referenced only by the first point...
    std::fs::write(disk(&root), content(1)).unwrap();
    let first = replicate(&root, None);
    std::fs::write(disk(&root), content(2)).unwrap();
    replicate(&root, None);
    // ...and the running point deduplicates against them.
    std::fs::write(disk(&root), content(1)).unwrap();
    let child = held_replicate(&root);

    // Its clock says both points are 31 minutes old: past retention, the
    // first one droppable. The running replicate's lock was renewed by no
    // clock it can compare, so it is alive: prune waits, then gives up.
    let o = prune(&root, "31m", "2");
    assert!(
        !o.status.success(),
        "prune ran beside a writer:\n{}",
        text(&o)
    );
    assert!(
        text(&o).contains("is locked by a shared lock"),
        "{}",
        text(&o)
    );
    assert_eq!(points(&root).len(), 2, "a refused prune changed nothing");

    release(&root);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let third = v["points"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(restore(&root, &third), content(1));

    // Afterwards the same skewed prune runs, and the new point survives it.
    let o = prune(&root, "31m", "10");
    assert!(o.status.success(), "{}", text(&o));
    let left: Vec<String> = points(&root)
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec![third.clone()], "first was {first}");
    assert_eq!(restore(&root, "latest"), content(1));
    ok(&root, &["vault", "verify", "--read-data"]);
}

#[test]
fn a_writer_whose_lock_was_taken_away_commits_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path(), "24h");
    std::fs::write(disk(&root), content(3)).unwrap();
    replicate(&root, None);
    std::fs::write(disk(&root), content(4)).unwrap();
    let child = held_replicate(&root);
    // What a prune does to a lock it took for dead: remove it.
    let locks = root.join(".standby/vault/locks");
    let held: Vec<PathBuf> = std::fs::read_dir(&locks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
    std::fs::remove_file(&held[0]).unwrap();
    release(&root);
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "committed without its lock:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("was removed by another process"),
        "{}",
        text(&out)
    );
    assert_eq!(points(&root).len(), 1, "no point without a lock");
    assert_eq!(restore(&root, "latest"), content(3));
}

#[test]
fn a_dead_writer_on_this_host_does_not_block_prune() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path(), "24h");
    std::fs::write(disk(&root), content(5)).unwrap();
    replicate(&root, None);
    let mut child = held_replicate(&root);
    child.kill().unwrap();
    child.wait().unwrap();
    release(&root);
    assert_eq!(
        std::fs::read_dir(root.join(".standby/vault/locks"))
            .unwrap()
            .count(),
        1,
        "the killed writer's lock is left"
    );
    // Its pid is gone from this kernel: no need to watch it go stale.
    let o = prune(&root, "0s", "5");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(restore(&root, "latest"), content(5));
}

#[test]
fn a_point_dated_in_the_future_is_flagged_and_never_latest() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path(), "1h");
    std::fs::write(disk(&root), content(6)).unwrap();
    let p1 = replicate(&root, None);
    std::fs::write(disk(&root), content(7)).unwrap();
    let ahead = replicate(&root, Some("1d"));
    std::fs::write(disk(&root), content(8)).unwrap();
    let p3 = replicate(&root, None);
    std::fs::write(disk(&root), content(9)).unwrap();
    let p4 = replicate(&root, None);

    let listed = points(&root);
    let seq = |id: &str| {
        let p = listed.iter().find(|p| p["id"] == id).unwrap();
        (
            p["seq"].as_u64().unwrap(),
            p["in_future"].as_bool().unwrap(),
        )
    };
    assert_eq!(seq(&p1), (1, false));
    assert_eq!(seq(&ahead), (2, true));
    assert_eq!(seq(&p3), (3, false));
    assert_eq!(seq(&p4), (4, false));
    let text_out = ok(&root, &["points"]);
    assert!(
        text_out.contains(&format!(
            "dated in the future (its writer's clock ran ahead; never `latest`): {}",
            &ahead[..12]
        )),
        "{text_out}"
    );

    // `latest` is the newest of the chain, not the one dated tomorrow.
    assert_eq!(restore(&root, "latest"), content(9));
    // It can still be named.
    assert_eq!(restore(&root, &ahead), content(7));

    // WARNING: status exits 2.
    let o = standby(&root).args(["status", "--json"]).output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let prot = st["protections"]
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| st[0].clone());
    assert_eq!(prot["newest_point"]["id"], p4.as_str(), "{st}");
    assert_eq!(prot["future_points"], serde_json::json!([ahead]), "{st}");
    assert_eq!(prot["level"], "warning", "{st}");

    // A prune two hours ahead: every real point is past retention, and the
    // one dated tomorrow is still the newest by time. The chain's newest
    // is kept; the future point keeps nothing else.
    let o = prune(&root, "2h", "10");
    assert!(o.status.success(), "{}", text(&o));
    let mut left: Vec<String> = points(&root)
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    left.sort();
    let mut want = vec![ahead.clone(), p4.clone()];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(restore(&root, "latest"), content(9));
}
