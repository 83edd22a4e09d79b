//! Issue 17: drills and failovers read what they concern. Through the real
//! binary on a file:// vault, with the store's request counters
//! (`STANDBY_REQUESTS=1`): a drill and a test failover of a plan of one
//! machine make the same number of requests whether another protection
//! in the vault has 3 points or 60, and restore the newest point's data
//! (a check compares the restored disk with a copy taken at replication).

mod common;

use common::{standby, text};
use serde_json::Value;
use standby::model::KeySource;
use standby::vault::{Vault, catalog, index, manifest};
use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Machines `a` (in plan `only_a`) and `b` (not in it), one 1 MiB disk
/// each, protected into a file:// vault. `a`'s check compares its restored
/// disk with `ref_a.img`.
fn config(d: &Path) -> PathBuf {
    let root = d.join("cfg");
    let url = format!("file://{}/vault", d.display());
    let reference = root.join("ref_a.img");
    let mut hcl = format!(
        r#"vault "main" {{
  url      = "{url}"
  key_file = "keys/vault.key"
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
  retention              = "7d"
}}
recovery_plan "only_a" {{
  group "g" {{
    machines = [machine.a]
  }}
}}
machine "a" {{
  site = site.onprem
  disk "system" {{ path = "a/system.img" }}
  check "same" {{ command = ["sh", "-c", "cmp \"$STANDBY_DISK_SYSTEM\" {}"] }}
}}
machine "b" {{
  site = site.onprem
  disk "system" {{ path = "b/system.img" }}
}}
"#,
        reference.display()
    );
    for m in ["a", "b"] {
        hcl.push_str(&format!(
            "protection \"{m}\" {{\n  machine = machine.{m}\n  target  = site.dr\n  vault   = vault.main\n  policy  = policy.p\n}}\n"
        ));
        let disk = disk(&root, m);
        std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..(1 << 20)).map(|_| rand::random::<u8>()).collect();
        std::fs::write(&disk, data).unwrap();
    }
    std::fs::write(root.join("main.hcl"), hcl).unwrap();
    root
}

fn disk(root: &Path, m: &str) -> PathBuf {
    root.join(format!("sites/onprem/{m}/system.img"))
}

/// Rewrite one random 4 KiB block of machine `m`'s disk.
fn change(root: &Path, m: &str) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(disk(root, m))
        .unwrap();
    let block: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    f.write_all_at(&block, (rand::random::<u64>() % 256) * 4096)
        .unwrap();
}

fn run_ok(root: &Path, args: &[&str]) -> std::process::Output {
    let o = standby(root)
        .args(args)
        .env("STANDBY_REQUESTS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "standby {args:?} failed:\n{}", text(&o));
    o
}

/// Total requests of a whole command (`STANDBY_REQUESTS=1` on stderr).
fn requests(root: &Path, args: &[&str]) -> u64 {
    let o = run_ok(root, args);
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("requests: "))
        .unwrap_or_else(|| panic!("no request counts on stderr:\n{err}"));
    let c: Value = serde_json::from_str(line).unwrap();
    ["get", "put", "list", "delete", "head"]
        .iter()
        .map(|k| c[k].as_u64().unwrap())
        .sum()
}

/// Add `count` points to machine `m`: copies of its newest point under new
/// ids and later times, each with an index object beside it as another
/// host's replication would leave, then its catalog rebuilt (as
/// bench/scale_fill.rs does, at test scale).
fn fill(root: &Path, url: &str, m: &str, count: usize) {
    let key = KeySource::File(root.join("keys/vault.key"));
    let vault = Vault::open(url, &key, root).unwrap();
    // Act for the configuration's state, as its commands do: a handle sees
    // (and builds on) its owner's points.
    let state: Value =
        serde_json::from_slice(&std::fs::read(root.join(".standby/state.json")).unwrap()).unwrap();
    vault.set_owner(state["lineage"].as_str().map(str::to_string));
    let machine = format!("machine.{m}");
    let newest = catalog::newest(&vault, &machine).unwrap().unwrap();
    let base = time::OffsetDateTime::now_utc();
    let mut all = catalog::points(&vault, &machine).unwrap().unwrap();
    for i in 0..count {
        let mut p = newest.clone();
        let nonce: [u8; 16] = rand::random();
        p.id = vault.id_of(&[b"point", machine.as_bytes(), &nonce]);
        // Next in the chain: points are ordered by `seq`.
        p.seq = Some(newest.seq.unwrap_or(0) + i as u64 + 1);
        p.created = (base + time::Duration::milliseconds(i as i64 + 1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        index::write(&vault, Vec::new()).unwrap();
        manifest::write(&vault, &p).unwrap();
        all.push(p);
    }
    let listed = all.iter().map(|m| m.id).collect();
    catalog::rebuild(&vault, &BTreeSet::from([machine]), &all, &listed).unwrap();
}

/// What a drill, then a test failover and its cleanup, cost.
fn recovery_costs(root: &Path) -> [u64; 3] {
    [
        requests(root, &["drill", "only_a"]),
        requests(root, &["failover", "test", "only_a"]),
        requests(root, &["failover", "cleanup", "only_a"]),
    ]
}

fn points_of(root: &Path, m: &str) -> usize {
    let o = run_ok(root, &["points", &format!("protection.{m}"), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array().unwrap().len()
}

#[test]
fn a_drill_reads_the_same_whatever_other_protections_hold() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path());
    let url = format!("file://{}/vault", d.path().display());
    run_ok(&root, &["apply", "--auto-approve"]);
    for _ in 0..2 {
        for m in ["a", "b"] {
            change(&root, m);
            run_ok(&root, &["replicate", &format!("protection.{m}")]);
        }
    }
    std::fs::copy(disk(&root, "a"), root.join("ref_a.img")).unwrap();
    // A restore reads the index through the local index cache: the
    // listing and only the index objects not cached yet (this process's
    // own replications cached theirs).
    assert_eq!((points_of(&root, "a"), points_of(&root, "b")), (3, 3));
    let small = recovery_costs(&root);

    // 57 points as another host would write them (index objects this
    // cache has not seen): the first restore reads them once...
    fill(&root, &url, "b", 57);
    assert_eq!((points_of(&root, "a"), points_of(&root, "b")), (3, 60));
    let first = requests(&root, &["drill", "only_a"]);
    assert!(first >= small[0] + 57, "{first} vs {small:?}");
    // ...and from then on a drill costs what it did with 3.
    let large = recovery_costs(&root);
    assert_eq!(
        small, large,
        "drill, failover test, cleanup: requests with 3 vs 60 points of another protection"
    );
    eprintln!("drill, failover test, cleanup: {small:?} requests");
    // And they are few: a handful per command, not one per point.
    assert!(small.iter().all(|&n| n < 30), "{small:?}");
}

/// The catalog is a hint, the manifests are the truth: when the newest
/// point's manifest is gone (deleted outside standby), a failover takes
/// the newest point that is still there (and restores its data) instead
/// of failing on the missing one.
#[test]
fn a_failover_skips_a_point_whose_manifest_is_gone() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path());
    run_ok(&root, &["apply", "--auto-approve"]);
    // The machine's check compares the restored disk with the second
    // point's copy.
    change(&root, "a");
    run_ok(&root, &["replicate", "protection.a"]);
    std::fs::copy(disk(&root, "a"), root.join("ref_a.img")).unwrap();
    change(&root, "a");
    run_ok(&root, &["replicate", "protection.a"]);
    let o = run_ok(&root, &["points", "protection.a", "--json"]);
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{listed:#}");
    std::fs::remove_file(d.path().join(format!("vault/points/{}", ids[2]))).unwrap();

    let o = run_ok(&root, &["failover", "test", "only_a"]);
    let out = text(&o);
    assert!(out.contains(&ids[1][..12]), "{out}");
    assert!(!out.contains(&ids[2][..12]), "{out}");
    run_ok(&root, &["failover", "cleanup", "only_a"]);
}
