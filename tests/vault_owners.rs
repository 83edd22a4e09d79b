//! Issue 16, item 1's first part, through the real binary: two
//! configurations (separate states, as two teams or hosts) share one vault
//! and both name their machine `db`. Neither adopts, lists, restores,
//! counts, prunes nor destroys the other's points.

mod common;

use common::{ok, standby, text};
use std::path::{Path, PathBuf};

/// Configuration `name` under `d`, its vault and key shared at `d/shared`.
fn config(d: &Path, name: &str, with_protection: bool) -> PathBuf {
    let root = d.join(name);
    std::fs::create_dir_all(root.join("sites/onprem/db")).unwrap();
    std::fs::create_dir_all(root.join("sites/dr")).unwrap();
    let shared = d.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let protection = if with_protection {
        "protection \"db\" {\n  machine = machine.db\n  target  = site.dr\n  vault   = vault.main\n  policy  = policy.p\n}\nrecovery_plan \"p\" {\n  group \"g\" {\n    machines = [machine.db]\n  }\n}\n"
    } else {
        ""
    };
    std::fs::write(
        root.join("main.hcl"),
        format!(
            r#"vault "main" {{
  url      = "file://{vault}"
  key_file = "{key}"
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
  retention              = "1h"
}}
machine "db" {{
  site = site.onprem
  disk "data" {{ path = "db/data.img" }}
  check "own-disk" {{
    command = ["sh", "-c", "cmp \"$STANDBY_DISK_DATA\" {expect}"]
  }}
}}
{protection}"#,
            vault = shared.join("vault").display(),
            key = shared.join("main.key").display(),
            expect = root.join("expect.img").display(),
        ),
    )
    .unwrap();
    root
}

fn write_disk(root: &Path, fill: u8) {
    let mut data = vec![0u8; 1 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = fill ^ (i % 251) as u8;
    }
    std::fs::write(root.join("sites/onprem/db/data.img"), &data).unwrap();
    // What this configuration's drill must find on its disk.
    std::fs::write(root.join("expect.img"), data).unwrap();
}

fn ids(root: &Path) -> Vec<String> {
    let v: Vec<serde_json::Value> = serde_json::from_str(&ok(root, &["points", "--json"])).unwrap();
    v.iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

fn restore_latest(root: &Path) -> Vec<u8> {
    let out = root.join("restored.img");
    ok(
        root,
        &[
            "restore",
            "latest",
            "--disk",
            "data",
            "--force",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    std::fs::read(out).unwrap()
}

fn disk(fill: u8) -> Vec<u8> {
    let mut data = vec![0u8; 1 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = fill ^ (i % 251) as u8;
    }
    data
}

#[test]
fn two_configurations_sharing_a_vault_never_touch_each_others_points() {
    let d = tempfile::tempdir().unwrap();
    let a = config(d.path(), "a", true);
    let b = config(d.path(), "b", true);
    write_disk(&a, 0xa1);
    write_disk(&b, 0xb1);

    ok(&a, &["apply", "--auto-approve"]);
    let a_first = ids(&a);
    assert_eq!(a_first.len(), 1);
    // B's apply takes B's own first point: A's are not B's to adopt.
    let out = ok(&b, &["apply", "--auto-approve"]);
    assert!(!out.contains("adopted"), "{out}");
    let b_first = ids(&b);
    assert_eq!(b_first.len(), 1, "{b_first:?}");
    assert_ne!(a_first, b_first);
    assert_eq!(ids(&a), a_first, "A sees only its own point");

    // Each one's latest is its own disk, whoever wrote last.
    write_disk(&b, 0xb2);
    ok(&b, &["replicate"]);
    assert_eq!(restore_latest(&a), disk(0xa1));
    assert_eq!(restore_latest(&b), disk(0xb2));
    // A drill runs on its own configuration's point: the check compares
    // the DR disk with what this configuration wrote.
    ok(&a, &["drill", "p"]);
    ok(&b, &["drill", "p"]);
    // The check can fail: B's disk is not what A expects.
    std::fs::write(a.join("expect.img"), disk(0xb2)).unwrap();
    let o = standby(&a).args(["drill", "p"]).output().unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    std::fs::write(a.join("expect.img"), disk(0xa1)).unwrap();
    // Another's point is not found by id either.
    let o = standby(&a)
        .args(["restore", &b_first[0], "--disk", "data", "--to"])
        .arg(a.join("x.img"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no point matches"), "{}", text(&o));

    // Status counts one's own points.
    let st: serde_json::Value = serde_json::from_str(&ok(&a, &["status", "--json"])).unwrap();
    let s = st.to_string();
    assert!(s.contains(&a_first[0]), "{s}");
    assert!(!s.contains(&b_first[0]), "{s}");

    // B's prune (its clock a day ahead: all of B's points but the newest
    // past retention) drops only B's.
    let o = standby(&b)
        .args(["vault", "prune"])
        .env("STANDBY_CLOCK_SKEW", "1d")
        .env("STANDBY_TEST_STORE_CLOCK_SKEW", "1d")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ids(&b).len(), 1);
    assert_eq!(ids(&a), a_first);

    // B destroys its protection: its points go, A's stay.
    let b = config(d.path(), "b", false);
    let out = ok(&b, &["apply", "--auto-approve", "--allow-destroy"]);
    assert!(out.contains("deleted 1 recovery point"), "{out}");
    assert_eq!(ids(&b), Vec::<String>::new());
    assert_eq!(ids(&a), a_first);
    assert_eq!(restore_latest(&a), disk(0xa1));
    write_disk(&a, 0xa2);
    ok(&a, &["replicate"]);
    assert_eq!(restore_latest(&a), disk(0xa2));
    ok(&a, &["vault", "verify", "--read-data"]);
}

/// Points written without an owner (before owners were recorded, or by a
/// `replicate` run before any state existed) belong to no configuration:
/// an apply does not adopt them (another configuration may share the
/// machine's name) and `vault claim` hands them over explicitly.
#[test]
fn points_without_an_owner_are_handed_over_only_by_claim() {
    let d = tempfile::tempdir().unwrap();
    let a = config(d.path(), "a", true);
    write_disk(&a, 0xc1);
    ok(&a, &["vault", "init"]);
    ok(&a, &["replicate"]);
    assert!(!a.join(".standby/state.json").exists());
    let unowned = ids(&a);
    assert_eq!(unowned.len(), 1, "without a state every point shows");

    let out = ok(&a, &["apply", "--auto-approve"]);
    assert!(!out.contains("adopted"), "{out}");
    // Still listed and restorable, ranked below the configuration's own.
    let own: Vec<String> = ids(&a)
        .into_iter()
        .filter(|i| !unowned.contains(i))
        .collect();
    assert_eq!(own.len(), 1);
    assert_eq!(ids(&a).len(), 2);
    // Not this configuration's to prune until claimed.
    let o = standby(&a)
        .args(["vault", "prune"])
        .env("STANDBY_CLOCK_SKEW", "1d")
        .env("STANDBY_TEST_STORE_CLOCK_SKEW", "1d")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ids(&a).len(), 2, "an unowned point is never pruned");

    let out = ok(&a, &["vault", "claim"]);
    assert!(out.contains("claimed 1 point"), "{out}");
    let mut all = ids(&a);
    all.sort();
    let mut want = [own, unowned].concat();
    want.sort();
    assert_eq!(all, want);
    ok(&a, &["vault", "verify", "--read-data"]);
    // Claimed, it is this configuration's like any other: prune may drop it.
    let o = standby(&a)
        .args(["vault", "prune"])
        .env("STANDBY_CLOCK_SKEW", "1d")
        .env("STANDBY_TEST_STORE_CLOCK_SKEW", "1d")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ids(&a).len(), 1);
}

/// A rename (`moved` block or `state mv`) in one configuration moves its
/// own points only: the other configuration's `protection.db` keeps its
/// name and its points.
#[test]
fn a_rename_in_one_configuration_leaves_the_others_points_alone() {
    let d = tempfile::tempdir().unwrap();
    let a = config(d.path(), "a", true);
    let b = config(d.path(), "b", true);
    write_disk(&a, 0xa1);
    write_disk(&b, 0xb1);
    ok(&a, &["apply", "--auto-approve"]);
    ok(&b, &["apply", "--auto-approve"]);
    let protections = |root: &Path| -> Vec<String> {
        let v: Vec<serde_json::Value> =
            serde_json::from_str(&ok(root, &["points", "--json"])).unwrap();
        v.iter()
            .map(|p| p["protection"].as_str().unwrap().to_string())
            .collect()
    };
    let out = ok(&a, &["state", "mv", "protection.db", "protection.main"]);
    assert!(out.contains("1 recovery point"), "{out}");
    assert_eq!(protections(&a), vec!["protection.main".to_string()]);
    assert_eq!(
        protections(&b),
        vec!["protection.db".to_string()],
        "B's point keeps B's name"
    );
    // B goes on as before: its next point is a delta of its own chain.
    write_disk(&b, 0xb2);
    ok(&b, &["replicate"]);
    assert_eq!(protections(&b).len(), 2);
    assert_eq!(restore_latest(&b), disk(0xb2));
    ok(&b, &["vault", "verify", "--read-data"]);
}
