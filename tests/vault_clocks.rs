//! Issue 16, item 1's second part, through the real binary: no wall clock
//! decides safety or order. A prune whose host clock runs 31 minutes
//! ahead never breaks a running point; writers take no lock and never
//! wait for one; a killed writer blocks nothing; a point dated in the
//! future is flagged, never `latest`, and never keeps newer points from
//! being kept; a prune whose host clock alone runs ahead ages no point
//! early (retention goes by the store's clock when it is behind). Clocks
//! are skewed with the test hooks `STANDBY_CLOCK_SKEW` (this host) and
//! `STANDBY_TEST_STORE_CLOCK_SKEW` (the store, for retention).

mod common;

use common::{ok, standby, text};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A configuration with one machine, one 1 MiB disk, and a freeze hook that
/// holds the point open (after the index is loaded) until `go` exists.
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

/// A replicate held inside its point (index loaded, freeze hook waiting
/// for `go`).
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

/// A prune `skew` later: this host's clock and, for retention, the store's
/// (time has passed; the grace period still runs by the store's real
/// clock). A host alone ahead is `a_prune_host_ahead_of_the_store_ages_nothing_early`.
fn prune(root: &Path, skew: &str, grace: &str) -> std::process::Output {
    standby(root)
        .args(["vault", "prune", "--wait", "5", "--grace", grace])
        .env("STANDBY_CLOCK_SKEW", skew)
        .env("STANDBY_TEST_STORE_CLOCK_SKEW", skew)
        .output()
        .unwrap()
}

fn ids(root: &Path) -> Vec<String> {
    points(root)
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// Writers take no lock: a prune on a host 31 minutes ahead runs beside
/// a point being written, and the point either completes restorable or
/// fails saying why, committing nothing.
#[test]
fn a_prune_31_minutes_ahead_never_breaks_a_running_point() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path(), "30m");
    // A's blocks end up referenced only by the first point...
    std::fs::write(disk(&root), content(1)).unwrap();
    let first = replicate(&root, None);
    std::fs::write(disk(&root), content(2)).unwrap();
    let second = replicate(&root, None);
    // ...and the running point deduplicates against them.
    std::fs::write(disk(&root), content(1)).unwrap();
    let child = held_replicate(&root);

    // 31 minutes on, both points are past retention: the first one goes,
    // while the writer runs (it holds no lock to wait for). Its data is
    // young by the store's real clock: not even marked.
    let o = prune(&root, "31m", "1h");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ids(&root), vec![second.clone()], "first was {first}");

    release(&root);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let third = v["points"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(restore(&root, &third), content(1));

    // Now a prune that marks what it finds unreferenced at once (no grace
    // period) while a point reuses exactly that: the second point's data.
    std::fs::write(disk(&root), content(2)).unwrap();
    let child = held_replicate(&root);
    let o = prune(&root, "31m", "0s");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ids(&root), vec![third.clone()]);
    release(&root);
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "committed a point on marked data:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("a prune ran while this point was written"),
        "{}",
        text(&out)
    );
    assert_eq!(ids(&root), vec![third.clone()], "no point was taken");
    // The marked data goes with the next prune; the next point stores it
    // again and restores.
    let o = prune(&root, "31m", "0s");
    assert!(o.status.success(), "{}", text(&o));
    let fourth = replicate(&root, None);
    assert_eq!(restore(&root, &fourth), content(2));
    assert_eq!(restore(&root, &third), content(1));
    ok(&root, &["vault", "verify", "--read-data"]);
}

/// A writer never waits: not for a prune's (or compaction's) exclusive
/// lock, here one another host holds, and it leaves no lock behind.
/// Prunes still exclude each other.
#[test]
fn a_writer_never_waits_for_a_prune_lock() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path(), "24h");
    let locks = root.join(".standby/vault/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let held = locks.join("0123456789abcdef0123456789abcdef");
    std::fs::write(
        &held,
        r#"{"exclusive":true,"host":"other","pid":1,"time":0,"renewals":0,"kernel":""}"#,
    )
    .unwrap();
    std::fs::write(disk(&root), content(3)).unwrap();
    // The lock never goes away: a writer that waited for it would fail.
    let id = replicate(&root, None);
    assert_eq!(restore(&root, &id), content(3));
    let left: Vec<PathBuf> = std::fs::read_dir(&locks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, vec![held.clone()], "the writer took no lock");
    let o = standby(&root)
        .args(["vault", "prune", "--wait", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "two prunes overlapped:\n{}", text(&o));
    assert!(text(&o).contains("exclusive lock"), "{}", text(&o));
}

#[test]
fn a_killed_writer_leaves_no_lock_and_prune_runs() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path(), "24h");
    std::fs::write(disk(&root), content(5)).unwrap();
    replicate(&root, None);
    let mut child = held_replicate(&root);
    let locks = root.join(".standby/vault/locks");
    let count = || std::fs::read_dir(&locks).map_or(0, |d| d.count());
    assert_eq!(count(), 0, "a running writer holds no lock");
    child.kill().unwrap();
    child.wait().unwrap();
    release(&root);
    let o = prune(&root, "0s", "1h");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(restore(&root, "latest"), content(5));
    ok(&root, &["vault", "verify", "--read-data"]);
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
    let o = prune(&root, "2h", "1h");
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

/// Retention by the earlier of the host's clock and the store's: a prune
/// on a host two days ahead (the store's clock right) drops nothing of a
/// 30-minute retention and says its clock is off; when the store's clock
/// agrees that time has passed, the old points go.
#[test]
fn a_prune_host_ahead_of_the_store_ages_nothing_early() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path(), "30m");
    let mut taken = Vec::new();
    for i in 1..=3 {
        std::fs::write(disk(&root), content(i)).unwrap();
        taken.push(replicate(&root, None));
    }
    let mut before = ids(&root);
    before.sort();
    for dry in [true, false] {
        let mut c = standby(&root);
        c.args(["vault", "prune", "--wait", "5"]);
        if dry {
            c.arg("--dry-run");
        }
        let o = c.env("STANDBY_CLOCK_SKEW", "2d").output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let out = text(&o);
        assert!(
            out.contains("drop 0 points") || out.contains("dropped 0 points"),
            "{out}"
        );
        assert!(
            out.contains("this host's clock is 2d ahead of the vault store's"),
            "{out}"
        );
    }
    let mut after = ids(&root);
    after.sort();
    assert_eq!(after, before);
    let o = prune(&root, "2d", "1h");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ids(&root), vec![taken[2].clone()]);
    assert!(!text(&o).contains("ahead"), "{}", text(&o));
}
