//! Issue 17: a point costs what changed, not what the vault holds.
//!
//! Through the real binary against Azurite and moto: one protection's
//! delta, `points` and `status` make the same number of object-store
//! requests (counted by the store layer, shown by `--json`) before and
//! after the vault gains many points, and a delta stays within 30
//! requests. Then the catalog's safety (library level, file://): a lost
//! head update never hides a point, an entry whose writer died is never a
//! point, a stale head never makes a wrong parent. Last, `vault compact`
//! killed at random moments (3 kills; `STANDBY_COMPACT_KILLS=10` for the
//! long form): `vault verify --read-data` passes and every point restores.

mod common;
mod vault_support;

use common::{Rng, count_from_env, standby, text};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A configuration of `n` machines (`m0`..) with one 1 MiB disk each, all
/// protected into the vault at `url`.
fn fleet(d: &Path, url: &str, n: usize) -> PathBuf {
    let root = d.join("fleet");
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
  app_consistent_every   = "1h"
  retention              = "7d"
}}
"#
    );
    for i in 0..n {
        hcl.push_str(&format!(
            "machine \"m{i}\" {{\n  site = site.onprem\n  disk \"system\" {{ path = \"m{i}/system.img\" }}\n}}\n\
             protection \"m{i}\" {{\n  machine = machine.m{i}\n  target  = site.dr\n  vault   = vault.main\n  policy  = policy.p\n}}\n"
        ));
        let disk = disk(&root, i);
        std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..(1 << 20)).map(|_| rand::random::<u8>()).collect();
        std::fs::write(&disk, data).unwrap();
    }
    std::fs::write(root.join("main.hcl"), hcl).unwrap();
    root
}

fn disk(root: &Path, i: usize) -> PathBuf {
    root.join(format!("sites/onprem/m{i}/system.img"))
}

/// Rewrite one random 4 KiB block of machine `i`'s disk.
fn change(root: &Path, i: usize) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(disk(root, i))
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

/// `replicate ADDR --json`: the point taken and the requests it cost.
fn replicate(root: &Path, addr: &str) -> (String, Value) {
    let o = run_ok(root, &["replicate", addr, "--json"]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &doc["points"][0];
    (p["id"].as_str().unwrap().to_string(), p["requests"].clone())
}

fn total(r: &Value) -> u64 {
    ["get", "put", "list", "delete", "head"]
        .iter()
        .map(|k| r[k].as_u64().unwrap())
        .sum()
}

/// The requests a whole command made (`STANDBY_REQUESTS=1` on stderr).
fn command_requests(root: &Path, args: &[&str]) -> Value {
    let o = run_ok(root, args);
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("requests: "))
        .unwrap_or_else(|| panic!("no request counts on stderr:\n{err}"));
    serde_json::from_str(line).unwrap()
}

fn bounded_cost(backend: &str) {
    let d = tempfile::tempdir().unwrap();
    let url = vault_support::backend_url(backend, d.path());
    let root = fleet(d.path(), &url, 4);
    run_ok(&root, &["vault", "init"]);
    run_ok(&root, &["replicate"]);

    change(&root, 0);
    let (_, before) = replicate(&root, "protection.m0");
    let points_before = command_requests(&root, &["points", "protection.m0", "--json"]);
    let other_before = command_requests(&root, &["points", "protection.m1", "--json"]);
    let status_before = command_requests(&root, &["status", "--json"]);

    // The vault grows by 30 points of another protection.
    for _ in 0..30 {
        change(&root, 1);
        replicate(&root, "protection.m1");
    }
    change(&root, 0);
    let (_, after) = replicate(&root, "protection.m0");
    println!("{backend}: delta {after}; points {points_before}; status {status_before}");
    assert!(total(&before) <= 30, "a delta cost {before}");
    // Not one request more, whatever the vault holds now.
    assert_eq!(
        total(&after),
        total(&before),
        "before {before}, after {after}"
    );
    assert_eq!(after["list"], before["list"]);
    assert_eq!(after["get"], before["get"]);
    // The delta wrote one pack, one index, one manifest, the head (twice)
    // and its batch's lease (taken, confirmed before the manifest), and
    // took no lock: a handful of puts, not one per point in the vault.
    assert!(after["put"].as_u64().unwrap() <= 7, "{after}");
    // Reads: `generation` (before the capture, and again before the
    // manifests: did a prune run meanwhile?), the head and the previous
    // manifest. The head is switched (pending, then confirmed) from the
    // version read before the capture, one conditional write each:
    // nothing written is read back.
    assert!(after["get"].as_u64().unwrap() <= 4, "{after}");
    // Only the batch's lease is let go: no lock to release.
    assert!(after["delete"].as_u64().unwrap() <= 1, "{after}");

    // Looking costs the same too, for the protection that grew as well.
    let points_after = command_requests(&root, &["points", "protection.m0", "--json"]);
    let other_after = command_requests(&root, &["points", "protection.m1", "--json"]);
    let status_after = command_requests(&root, &["status", "--json"]);
    assert_eq!(total(&points_after), total(&points_before));
    assert_eq!(
        total(&other_after),
        total(&other_before),
        "m1 has 31 points now"
    );
    assert_eq!(total(&status_after), total(&status_before));

    // And what the catalog says is what the manifests say.
    let listed: Vec<Value> =
        serde_json::from_slice(&run_ok(&root, &["points", "protection.m1", "--json"]).stdout)
            .unwrap();
    assert_eq!(listed.len(), 31);
    run_ok(&root, &["vault", "verify", "--read-data"]);
}

#[test]
fn a_delta_costs_what_changed_not_what_the_vault_holds_azurite() {
    bounded_cost("az");
}

#[test]
fn a_delta_costs_what_changed_not_what_the_vault_holds_moto() {
    bounded_cost("s3");
}

mod catalog {
    use super::vault_support::*;
    use standby::vault::manifest::{self, Manifest};
    use standby::vault::{catalog, prune, verify};
    use std::collections::BTreeMap;
    use std::os::unix::fs::FileExt;

    fn scribble(disk: &std::path::Path, at: u64) {
        let f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
        f.write_all_at(&[at as u8 + 1; 4096], at * 4096).unwrap();
    }

    /// A copy of `m` under a new id, a second later: a point whose writer
    /// is at some step of writing it.
    fn another(vault: &standby::vault::Vault, m: &Manifest) -> Manifest {
        let mut n = m.clone();
        n.id = vault.id_of(&[b"point", m.machine.as_bytes(), &rand::random::<[u8; 16]>()]);
        n.created = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        n
    }

    fn ids(v: &standby::vault::Vault) -> Vec<String> {
        catalog::points(v, "machine.a")
            .unwrap()
            .unwrap_or_default()
            .iter()
            .map(|m| m.id.hex())
            .collect()
    }

    #[test]
    fn the_head_is_a_hint_checked_against_the_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (vault, _) = new_vault(&backend_url("file", d), d);
        let disk = d.join("a.img");
        std::fs::write(&disk, vec![5u8; 1 << 20]).unwrap();
        let cache = d.join("cache");
        let t = || [target("a", &[("root", &disk)])];
        let p1 = take(&vault, &cache, &t()).remove(0);

        // A writer died after its manifest, before confirming it: the
        // point is listed (its entry was added first) and is the newest.
        let late = another(&vault, &p1);
        catalog::begin(&vault, std::slice::from_ref(&late)).unwrap();
        manifest::write(&vault, &late).unwrap();
        assert!(ids(&vault).contains(&late.id.hex()));
        let newest = catalog::newest(&vault, "machine.a").unwrap().unwrap();
        assert_eq!(newest.id, late.id);

        // A writer died before its manifest: its entry is never a point.
        let mut phantom = another(&vault, &p1);
        phantom.created = "2099-06-01T00:00:00Z".into();
        catalog::begin(&vault, std::slice::from_ref(&phantom)).unwrap();
        assert!(!ids(&vault).contains(&phantom.id.hex()));
        assert_eq!(
            catalog::newest(&vault, "machine.a").unwrap().unwrap().id,
            late.id
        );
        let r = verify::verify(&vault, true).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);

        // The next point builds on the newest real point.
        scribble(&disk, 3);
        let p2 = take(&vault, &cache, &t()).remove(0);
        assert_eq!(p2.disks["root"].parent, Some(late.id));

        // A stale head (an update lost or rolled back) names an older
        // point: the next delta is against that point, and still right.
        let head = catalog::head_name(&vault, "machine.a");
        let stale = vault.get(&head).unwrap();
        scribble(&disk, 7);
        let p3 = take(&vault, &cache, &t()).remove(0);
        vault.put(&head, stale.to_vec()).unwrap();
        scribble(&disk, 9);
        let reference = d.join("ref.img");
        std::fs::copy(&disk, &reference).unwrap();
        let p4 = take(&vault, &cache, &t()).remove(0);
        assert_eq!(p4.disks["root"].parent, Some(p2.id), "not {:?}", p3.id);
        let out = d.join("p4.img");
        restore(&vault, &p4, "root", &out);
        assert_same(&reference, &out);
        // Verify names the point the stale head leaves out...
        let r = verify::verify(&vault, false).unwrap();
        assert!(
            r.problems
                .iter()
                .any(|p| p.points.contains(&p3.id.hex()) && p.object == head),
            "{:?}",
            r.problems
        );
        // ...and prune, which reads every manifest, rebuilds the head.
        prune::prune(
            &vault,
            &BTreeMap::new(),
            time::OffsetDateTime::now_utc(),
            false,
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        let r = verify::verify(&vault, true).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let listed = ids(&vault);
        for p in [&p1, &late, &p2, &p3, &p4] {
            assert!(listed.contains(&p.id.hex()), "{:?} is hidden", p.id);
        }
        assert!(!listed.contains(&phantom.id.hex()));
    }

    /// The local index cache is trusted without listing only until a
    /// prune: data prune deleted must never be deduplicated against.
    #[test]
    fn a_prune_makes_the_local_index_cache_stale() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (vault, _) = new_vault(&backend_url("file", d), d);
        let disk = d.join("a.img");
        let x: Vec<u8> = (0..(1 << 20)).map(|_| rand::random::<u8>()).collect();
        let y: Vec<u8> = (0..(1 << 20)).map(|_| rand::random::<u8>()).collect();
        let cache = d.join("cache");
        let t = || [target("a", &[("root", &disk)])];
        std::fs::write(&disk, &x).unwrap();
        take(&vault, &cache, &t());
        std::fs::write(&disk, &y).unwrap();
        take(&vault, &cache, &t());
        // The first point goes, and with it every block of X.
        let retention = BTreeMap::from([("protection.a".to_string(), std::time::Duration::ZERO)]);
        let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        // The store's clock an hour on too (retention ages by the earlier
        // one). SAFETY: the binary's only other prune has no retention, so
        // no test reads this value in a way it could change.
        unsafe { std::env::set_var("STANDBY_TEST_STORE_CLOCK_SKEW", "1h") };
        let r = prune::prune(
            &vault,
            &retention,
            later,
            false,
            std::time::Duration::from_secs(5),
            std::time::Duration::ZERO,
        )
        .unwrap();
        assert_eq!(r.dropped.len(), 1);
        assert!(r.packs_marked >= 1, "{r:?}");
        // X again: its blobs are marked as garbage (still there, but a
        // later prune may delete them): stored anew, not found in the cache.
        std::fs::write(&disk, &x).unwrap();
        let p3 = take(&vault, &cache, &t()).remove(0);
        assert_eq!(p3.stats.new, 1 << 20);
        let out = d.join("p3.img");
        restore(&vault, &p3, "root", &out);
        assert_same(&disk, &out);
        let r = verify::verify(&vault, true).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    /// A format 1 vault (no catalog) is read as it is, and its first
    /// writer builds every machine's head and marks it format 2.
    #[test]
    fn a_format_1_vault_is_read_then_upgraded_by_its_first_writer() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let url = backend_url("file", d);
        let (vault, key) = new_vault(&url, d);
        let disk = d.join("a.img");
        std::fs::write(&disk, vec![5u8; 1 << 20]).unwrap();
        let other = d.join("b.img");
        std::fs::write(&other, vec![6u8; 1 << 20]).unwrap();
        let cache = d.join("cache");
        let p1 = take(&vault, &cache, &[target("a", &[("root", &disk)])]).remove(0);
        let q1 = take(&vault, &cache, &[target("b", &[("root", &other)])]).remove(0);
        // Make it what an older build wrote: config format 1, no catalog.
        let dir_of = url.trim_start_matches("file://");
        let config = std::path::Path::new(dir_of).join("config");
        let text = std::fs::read_to_string(&config).unwrap();
        let body = text
            .lines()
            .next()
            .unwrap()
            .replace("\"format\":2", "\"format\":1");
        assert!(body.contains("\"format\":1"), "{body}");
        let sum = blake3::hash(body.as_bytes()).to_hex();
        std::fs::write(&config, format!("{body}\n{sum}\n")).unwrap();
        std::fs::remove_dir_all(std::path::Path::new(dir_of).join("heads")).unwrap();
        drop(vault);

        let vault = standby::vault::Vault::open(&url, &key, d).unwrap();
        assert_eq!(vault.format(), 1);
        let listed = catalog::list_all(&vault).unwrap();
        assert_eq!(listed.len(), 2);
        scribble(&disk, 2);
        let p2 = take(&vault, &cache, &[target("a", &[("root", &disk)])]).remove(0);
        assert_eq!(p2.disks["root"].parent, Some(p1.id));
        assert_eq!(vault.format(), 2);
        let reopened = standby::vault::Vault::open(&url, &key, d).unwrap();
        assert_eq!(reopened.format(), 2);
        // Both machines have their heads, the untouched one too.
        let b = catalog::points(&reopened, "machine.b").unwrap().unwrap();
        assert_eq!(b.iter().map(|m| m.id).collect::<Vec<_>>(), vec![q1.id]);
        assert_eq!(ids(&reopened).len(), 2);
        let r = verify::verify(&reopened, true).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    /// A writer switches its head from the version it read, without
    /// reading it back; another writer of the same machine in between
    /// (before its pending write, and again before its confirmation) makes
    /// that compare-and-swap fail, the head is read afresh, and no entry
    /// of either is lost.
    #[test]
    fn a_head_switched_from_a_stale_version_loses_no_entry() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        let (vault, _) = new_vault(&backend_url("file", d), d);
        let disk = d.join("a.img");
        std::fs::write(&disk, vec![5u8; 64 << 10]).unwrap();
        let first = take(&vault, &d.join("cache"), &[target("a", &[("root", &disk)])]).remove(0);
        let other = |vault: &standby::vault::Vault| {
            let m = another(vault, &first);
            catalog::begin(vault, std::slice::from_ref(&m)).unwrap();
            manifest::write(vault, &m).unwrap();
            catalog::commit(vault, std::slice::from_ref(&m)).unwrap();
            m.id.hex()
        };
        let mut seen = catalog::Seen::default();
        let newest = catalog::newest_seen(&vault, "machine.a", &mut seen)
            .unwrap()
            .unwrap();
        assert_eq!(newest.id, first.id);
        let b1 = other(&vault);
        let mine = another(&vault, &first);
        catalog::begin_seen(&vault, std::slice::from_ref(&mine), &mut seen).unwrap();
        let b2 = other(&vault);
        manifest::write(&vault, &mine).unwrap();
        catalog::commit_seen(&vault, std::slice::from_ref(&mine), &mut seen).unwrap();
        let mut want = vec![first.id.hex(), b1, b2, mine.id.hex()];
        want.sort();
        let mut listed = ids(&vault);
        listed.sort();
        assert_eq!(listed, want);
        // Each entry says what its manifest says.
        let r = verify::verify(&vault, false).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    /// Past `FOLD_AT` entries the head moves its older entries into
    /// segments, and merges those; nothing is lost on the way.
    #[test]
    fn many_points_fold_into_segments_and_stay_listed() {
        // In memory where there is some: a thousand small synced writes.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let d = dir.path();
        let (vault, _) = new_vault(&backend_url("file", d), d);
        let disk = d.join("a.img");
        std::fs::write(&disk, vec![5u8; 64 << 10]).unwrap();
        let first = take(&vault, &d.join("cache"), &[target("a", &[("root", &disk)])]).remove(0);
        // Entries straight through the catalog protocol, as writers add
        // them: cheaper than real captures, the same for the catalog.
        let n = catalog::FOLD_AT * (catalog::MERGE_AT + 1) + 3;
        let mut all = vec![first.id.hex()];
        for i in 0..n {
            let mut m = another(&vault, &first);
            m.created = format!(
                "2030-01-01T{:02}:{:02}:{:02}Z",
                i / 3600,
                i / 60 % 60,
                i % 60
            );
            catalog::begin(&vault, std::slice::from_ref(&m)).unwrap();
            manifest::write(&vault, &m).unwrap();
            catalog::commit(&vault, std::slice::from_ref(&m)).unwrap();
            all.push(m.id.hex());
        }
        let mut listed = ids(&vault);
        listed.sort();
        all.sort();
        assert_eq!(listed, all);
        let segments = vault.list("catalog").unwrap().len();
        assert!(
            (1..=catalog::MERGE_AT).contains(&segments),
            "{segments} segments"
        );
        let r = verify::verify(&vault, false).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }
}

/// `replicate --parallelism N --json`: batches captured at once still
/// report in batch order, each point once, a failed batch among them only
/// as an error (the others are taken, exit 1); in parallel a point has no
/// request count of its own (the counters are process-wide), one at a time
/// it has.
#[test]
fn replicate_in_parallel_reports_every_batch_in_order() {
    let d = tempfile::tempdir().unwrap();
    let url = vault_support::backend_url("file", d.path());
    let root = fleet(d.path(), &url, 4);
    run_ok(&root, &["vault", "init"]);
    let json = |o: &std::process::Output| -> Value { serde_json::from_slice(&o.stdout).unwrap() };
    let protections = |doc: &Value| -> Vec<String> {
        doc["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["protection"].as_str().unwrap().to_string())
            .collect()
    };

    let doc = json(&run_ok(
        &root,
        &["replicate", "--json", "--parallelism", "3"],
    ));
    let all: Vec<String> = (0..4).map(|i| format!("protection.m{i}")).collect();
    assert_eq!(protections(&doc), all, "{doc:#}");
    for p in doc["points"].as_array().unwrap() {
        assert!(p["requests"].is_null(), "{p:#}");
        assert_eq!(p["vault"], "vault.main");
    }
    assert!(doc["requests"]["put"].as_u64().unwrap() >= 4, "{doc:#}");
    assert_eq!(doc["errors"], serde_json::json!([]));

    // One at a time: each point's own cost.
    change(&root, 1);
    let doc = json(&run_ok(
        &root,
        &["replicate", "protection.m1", "--json", "--parallelism", "1"],
    ));
    let p = &doc["points"][0];
    assert_eq!(p["protection"], "protection.m1");
    assert!(p["requests"]["put"].as_u64().unwrap() >= 1, "{p:#}");

    // A batch that fails (its disk is gone) does not stop the others.
    std::fs::remove_file(disk(&root, 2)).unwrap();
    let o = standby(&root)
        .args(["replicate", "--json", "--parallelism", "4"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let doc = json(&o);
    assert_eq!(
        protections(&doc),
        ["protection.m0", "protection.m1", "protection.m3"],
        "{doc:#}"
    );
    let errors = doc["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{doc:#}");
    assert!(
        errors[0]["batch"].as_str().unwrap().contains("m2"),
        "{doc:#}"
    );

    // Every point taken is listed once.
    let listed: Value =
        serde_json::from_slice(&run_ok(&root, &["points", "--json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4 + 1 + 3, "{listed:#}");
}

#[test]
fn compaction_killed_at_random_moments_loses_nothing() {
    let kills = count_from_env("STANDBY_COMPACT_KILLS", 3);
    let mut rng = Rng::seeded("compact kills");
    let d = tempfile::tempdir().unwrap();
    let url = format!("file://{}/vault", d.path().display());
    let root = fleet(d.path(), &url, 3);
    run_ok(&root, &["vault", "init"]);
    let refs = d.path().join("refs");
    std::fs::create_dir_all(&refs).unwrap();
    // point id -> (machine index, reference copy of its disk)
    let mut expected: BTreeMap<String, (usize, PathBuf)> = BTreeMap::new();
    let round = |expected: &mut BTreeMap<String, (usize, PathBuf)>| {
        for _ in 0..4 {
            for i in 0..3 {
                change(&root, i);
                let (id, _) = replicate(&root, &format!("protection.m{i}"));
                let copy = refs.join(&id);
                std::fs::copy(disk(&root, i), &copy).unwrap();
                expected.insert(id, (i, copy));
            }
        }
    };
    // The index objects the store lists: a `NAME#N` file is an upload a
    // kill cut short, which no listing shows (prune removes it, see
    // `prune_removes_uploads_a_kill_cut_short`; not here, where the killed
    // compactions' shared locks hold prune off until they are stale).
    let indexes = |root: &Path| {
        std::fs::read_dir(root.join("../vault/index"))
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains('#')
            })
            .count()
    };

    // One uninterrupted compaction sets the time scale.
    round(&mut expected);
    let started = std::time::Instant::now();
    run_ok(&root, &["vault", "compact"]);
    let full = started.elapsed();
    assert_eq!(indexes(&root), 1);

    for _ in 0..kills {
        round(&mut expected);
        assert!(indexes(&root) > 1);
        let mut child = standby(&root)
            .args(["vault", "compact"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = std::time::Duration::from_micros(rng.below(full.as_micros() as u64 * 3 / 2));
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        run_ok(&root, &["vault", "verify", "--read-data"]);
    }
    // A compaction after the kills finishes the job.
    run_ok(&root, &["vault", "compact"]);
    assert_eq!(indexes(&root), 1);
    run_ok(&root, &["vault", "verify", "--read-data"]);

    // Every point restores what its disk held.
    for (id, (i, reference)) in &expected {
        let out = d.path().join(format!("restored-{id}"));
        run_ok(
            &root,
            &[
                "restore",
                id,
                "--disk",
                "system",
                "--machine",
                &format!("machine.m{i}"),
                "--to",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(reference).unwrap(),
            "point {id}"
        );
    }
}

/// Files under `dir` named like an unfinished upload (`NAME#N`).
fn unfinished(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(unfinished(&p));
        } else if p.file_name().unwrap().to_string_lossy().contains('#') {
            out.push(p);
        }
    }
    out
}

/// A writer killed in the middle of an upload to a `file://` vault leaves
/// `NAME#N` beside NAME: no listing shows it, so neither compaction nor
/// prune's listing-driven garbage collection saw it, and it stayed
/// forever. Prune removes every one once it is older than the grace
/// period (a writer may still be writing a younger one: writers take no
/// lock); the vault still verifies and every point restores.
#[test]
fn prune_removes_uploads_a_kill_cut_short() {
    let d = tempfile::tempdir().unwrap();
    let url = format!("file://{}/vault", d.path().display());
    let root = fleet(d.path(), &url, 1);
    run_ok(&root, &["vault", "init"]);
    let (id, _) = replicate(&root, "protection.m0");
    let vault = d.path().join("vault");
    // As a killed pack, index and manifest upload leave them.
    let left = [
        vault.join(format!("data/ab/ab{}#3", "0".repeat(62))),
        vault.join(format!("index/{}#1", "1".repeat(64))),
        vault.join(format!("points/{}#12", "2".repeat(64))),
    ];
    for p in &left {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![7u8; 70_000]).unwrap();
    }
    assert_eq!(unfinished(&vault).len(), 3);
    let out = run_ok(&root, &["vault", "prune"]);
    assert_eq!(
        unfinished(&vault).len(),
        3,
        "younger than an hour: {}",
        text(&out)
    );
    let out = run_ok(&root, &["vault", "prune", "--grace", "0s"]);
    assert_eq!(unfinished(&vault), Vec::<PathBuf>::new(), "{}", text(&out));
    run_ok(&root, &["vault", "verify", "--read-data"]);
    let to = d.path().join("restored.img");
    run_ok(
        &root,
        &[
            "restore",
            &id,
            "--disk",
            "system",
            "--machine",
            "machine.m0",
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(&to).unwrap(),
        std::fs::read(disk(&root, 0)).unwrap()
    );
}
