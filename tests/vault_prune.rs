//! Retention and GC: folding dropped ancestors into kept points, keeping the
//! newest and the last app-consistent point, and prune racing replication.

mod vault_support;

use standby::model::{Duration as Dur, Quiesce};
use standby::replication;
use standby::vault::manifest::{self, Consistency};
use standby::vault::{prune, verify};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;
use vault_support::*;

fn write_disk(path: &Path, seed: u8, size: u64) {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .unwrap();
    f.set_len(size).unwrap();
    for i in 0..(size / 4096) {
        if (i + seed as u64).is_multiple_of(7) {
            let block: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
            f.write_all_at(&block, i * 4096).unwrap();
        }
    }
}

/// How long a prune waits for another prune.
const W: Duration = Duration::from_secs(60);

/// A day on, for this host and (for retention) the store: time passed.
fn later() -> time::OffsetDateTime {
    // SAFETY: every test of this binary sets the same value; nothing reads
    // it concurrently in a way a torn write could affect (set once, same
    // bytes).
    unsafe { std::env::set_var("STANDBY_TEST_STORE_CLOCK_SKEW", "1d") };
    time::OffsetDateTime::now_utc() + time::Duration::days(1)
}

#[test]
fn prune_folds_dropped_ancestors_and_frees_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let disk = d.join("disk");
    let cache = d.join("cache");
    let mut refs = Vec::new();
    let mut ids = Vec::new();
    for seed in 0..3u8 {
        // Every block new each time: what the first two points stored is
        // referenced by no later point, so it is garbage once they go.
        let data: Vec<u8> = (0..4 << 20).map(|_| rand::random::<u8>()).collect();
        std::fs::write(&disk, data).unwrap();
        refs.push(snapshot(&disk, &d.join(format!("ref{seed}"))));
        ids.push(take(&vault, &cache, &[target("a", &[("root", &disk)])])[0].id);
    }
    let before = vault.list("data").unwrap().len();
    let retention = BTreeMap::from([("protection.a".to_string(), Duration::from_secs(3600))]);
    let hour = Duration::from_secs(3600);
    let dry = prune::prune(&vault, &retention, later(), true, W, hour).unwrap();
    let mut expect = vec![ids[0].hex(), ids[1].hex()];
    expect.sort();
    assert_eq!(dry.dropped, expect);
    assert_eq!(
        manifest::list(&vault, false).unwrap().0.len(),
        3,
        "dry run changed nothing"
    );

    // A zero grace period: index objects are not kept back as a running
    // writer's, and what is unreferenced is marked at once.
    let rep = prune::prune(&vault, &retention, later(), false, W, Duration::ZERO).unwrap();
    assert_eq!(rep.folded, vec![ids[2].hex()]);
    let (points, _) = manifest::list(&vault, false).unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].id, ids[2]);
    assert_eq!(
        points[0].disks["root"].parent, None,
        "folded into a full map"
    );
    let out = d.join("out");
    restore(&vault, &points[0], "root", &out);
    assert_same(&refs[2], &out);
    // The dropped points' data is only marked: a writer may still be
    // about to reference it.
    assert!(rep.packs_marked > 0 && rep.bytes_marked > 0, "{rep:?}");
    assert_eq!((rep.packs_deleted, rep.bytes_freed), (0, 0), "{rep:?}");
    assert_eq!(vault.list("data").unwrap().len(), before);
    let v = verify::verify(&vault, true).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    // Within its grace period a second prune deletes nothing either...
    let rep = prune::prune(&vault, &retention, later(), false, W, hour).unwrap();
    assert_eq!(rep.packs_deleted, 0, "{rep:?}");
    assert_eq!(rep.packs_marked, 0, "marked once: {rep:?}");
    // ...once it has passed, the marked data is gone, not only unlisted.
    let rep = prune::prune(&vault, &retention, later(), false, W, Duration::ZERO).unwrap();
    assert!(rep.packs_deleted > 0 && rep.bytes_freed > 0, "{rep:?}");
    assert!(vault.list("data").unwrap().len() < before);
    assert!(vault.list("gc").unwrap().is_empty(), "the mark is settled");
    let v = verify::verify(&vault, true).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    // The next point after folding still works as a delta.
    write_disk(&disk, 9, 4 << 20);
    let r4 = snapshot(&disk, &d.join("ref4"));
    let p4 = take(&vault, &cache, &[target("a", &[("root", &disk)])]);
    assert_eq!(p4[0].disks["root"].parent, Some(ids[2]));
    restore(&vault, &p4[0], "root", &out);
    assert_same(&r4, &out);
}

#[test]
fn prune_keeps_the_last_app_consistent_point_and_folds_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let disk = d.join("disk");
    let cache = d.join("cache");
    let mut refs = HashMap::new();
    let mut ids = Vec::new();
    for seed in 0..3u8 {
        write_disk(&disk, seed, 2 << 20);
        let mut t = target("a", &[("root", &disk)]);
        if seed == 0 {
            t.app = true;
            t.quiesce = Some(Quiesce {
                freeze: vec!["true".into()],
                thaw: vec!["true".into()],
                timeout: Dur::from_secs(10),
            });
        }
        let p = take(&vault, &cache, &[t]).remove(0);
        refs.insert(p.id, snapshot(&disk, &d.join(format!("ref{seed}"))));
        ids.push(p.id);
    }
    let retention = BTreeMap::from([("protection.a".to_string(), Duration::from_secs(60))]);
    let rep = prune::prune(&vault, &retention, later(), false, W, Duration::ZERO).unwrap();
    assert_eq!(rep.dropped, vec![ids[1].hex()]);
    let (points, _) = manifest::list(&vault, false).unwrap();
    assert_eq!(
        points.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![ids[0], ids[2]]
    );
    assert_eq!(points[0].consistency, Consistency::App);
    assert_eq!(
        points[1].disks["root"].parent,
        Some(ids[0]),
        "re-parented onto the kept ancestor"
    );
    for p in &points {
        let out = d.join(format!("out-{}", p.id.short()));
        restore(&vault, p, "root", &out);
        assert_same(&refs[&p.id], &out);
    }
    assert!(verify::verify(&vault, true).unwrap().problems.is_empty());
}

/// Replication (two machines sharing data) and prune run at once, many
/// times; afterwards the vault verifies and every point restores exactly.
#[test]
fn prune_racing_replication_never_loses_referenced_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let url = backend_url("file", &d);
    let (vault, key) = new_vault(&url, &d);
    drop(vault);
    let refs = std::sync::Mutex::new(HashMap::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut replicators = Vec::new();
        for m in ["a", "b"] {
            let (d, url, key, refs) = (&d, &url, &key, &refs);
            replicators.push(s.spawn(move || {
                let vault = standby::vault::Vault::open(url, key, d).unwrap();
                let disk = d.join(format!("disk-{m}"));
                let cache = d.join("cache");
                for i in 0..8u8 {
                    // Both machines write the same content: their blobs dedup.
                    write_disk(&disk, i, 1 << 20);
                    let reference = d.join(format!("ref-{m}-{i}"));
                    std::fs::copy(&disk, &reference).unwrap();
                    // A point whose reused data a prune marked meanwhile
                    // commits nothing and says so; the next try stores it.
                    let p = loop {
                        match replication::take_points(
                            &vault,
                            &[target(m, &[("root", &disk)])],
                            &replication::Options::new(&cache),
                            &replication::Progress::default(),
                        ) {
                            Ok(mut ps) => break ps.remove(0),
                            Err(replication::ReplicationError::PrunedMeanwhile { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    };
                    refs.lock().unwrap().insert(p.id, reference);
                }
            }));
        }
        let (d, url, key, stop) = (&d, &url, &key, &stop);
        let pruner = s.spawn(move || {
            let vault = standby::vault::Vault::open(url, key, d).unwrap();
            let retention = BTreeMap::from([
                ("protection.a".to_string(), Duration::ZERO),
                ("protection.b".to_string(), Duration::ZERO),
            ]);
            let (mut runs, mut raced) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || runs < 8 {
                let during = !stop.load(std::sync::atomic::Ordering::Relaxed);
                // A short grace period: data is deleted while writers run.
                let rep = prune::prune(
                    &vault,
                    &retention,
                    later(),
                    false,
                    W,
                    Duration::from_secs(2),
                )
                .unwrap();
                // A prune that dropped points while replication was still
                // writing: the race this test is about.
                if during && !rep.dropped.is_empty() {
                    raced += 1;
                }
                runs += 1;
            }
            (runs, raced)
        });
        // The replicators finish first; then let the pruner stop.
        for r in replicators {
            r.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (runs, raced) = pruner.join().unwrap();
        assert!(runs >= 8);
        assert!(
            raced > 0,
            "no prune dropped a point while replication ran: no race happened"
        );
    });
    let vault = standby::vault::Vault::open(&url, &key, &d).unwrap();
    let v = verify::verify(&vault, true).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let (points, _) = manifest::list(&vault, false).unwrap();
    assert!(!points.is_empty());
    let refs = refs.into_inner().unwrap();
    for p in &points {
        let out = d.join(format!("out-{}", p.id.short()));
        restore(&vault, p, "root", &out);
        assert_same(&refs[&p.id], &out);
    }
}

/// A pack no index lists is a running writer's upload until it is a grace
/// period old: only then is it marked, and deleted a grace period later.
#[test]
fn an_unindexed_pack_is_marked_only_once_older_than_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let disk = d.join("disk");
    write_disk(&disk, 1, 1 << 20);
    take(&vault, &d.join("cache"), &[target("a", &[("root", &disk)])]);
    let orphan = standby::vault::pack_name(&standby::vault::Id([7; 32]));
    vault.put(&orphan, vec![1; 5000]).unwrap();
    let none = BTreeMap::new();
    let hour = Duration::from_secs(3600);
    let rep = prune::prune(&vault, &none, later(), false, W, hour).unwrap();
    assert_eq!((rep.packs_marked, rep.packs_deleted), (0, 0), "{rep:?}");
    let rep = prune::prune(&vault, &none, later(), false, W, Duration::ZERO).unwrap();
    assert_eq!((rep.packs_marked, rep.packs_deleted), (1, 0), "{rep:?}");
    assert!(vault.exists(&orphan).unwrap());
    let rep = prune::prune(&vault, &none, later(), false, W, Duration::ZERO).unwrap();
    assert_eq!(rep.packs_deleted, 1, "{rep:?}");
    assert!(!vault.exists(&orphan).unwrap());
    assert!(verify::verify(&vault, true).unwrap().problems.is_empty());
}

/// A point a recovery run holds (instant recovery reads it from the
/// vault) survives retention, and its data stays restorable, until the
/// run lets go; holding a point a prune already dropped fails, naming it.
#[test]
fn a_held_point_outlives_retention_until_released() {
    use standby::vault::holds;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let disk = d.join("disk");
    let cache = d.join("cache");
    let mut refs = Vec::new();
    let mut ids = Vec::new();
    for seed in 0..3u8 {
        write_disk(&disk, seed, 1 << 20);
        refs.push(snapshot(&disk, &d.join(format!("ref{seed}"))));
        ids.push(take(&vault, &cache, &[target("a", &[("root", &disk)])])[0].id);
    }
    let who = holds::holder(&["plan.shop", "machine.a"]);
    holds::hold(&vault, &ids[0], &who, W).unwrap();
    let retention = BTreeMap::from([("protection.a".to_string(), Duration::from_secs(3600))]);
    let rep = prune::prune(&vault, &retention, later(), false, W, Duration::ZERO).unwrap();
    assert_eq!(rep.dropped, vec![ids[1].hex()], "{rep:?}");
    assert_eq!(rep.held, vec![ids[0].hex()], "{rep:?}");
    // Marked data is deleted by the next prune: the held point keeps its.
    prune::prune(&vault, &retention, later(), false, W, Duration::ZERO).unwrap();
    let (points, _) = manifest::list(&vault, false).unwrap();
    let held = points.iter().find(|m| m.id == ids[0]).expect("held point");
    let out = d.join("out");
    restore(&vault, held, "root", &out);
    assert_same(&refs[0], &out);

    holds::release(&vault, &who).unwrap();
    let rep = prune::prune(&vault, &retention, later(), false, W, Duration::ZERO).unwrap();
    assert_eq!(rep.dropped, vec![ids[0].hex()], "{rep:?}");
    assert!(rep.held.is_empty(), "{rep:?}");
    // Too late: the point is gone, and the hold is not left behind.
    let err = holds::hold(&vault, &ids[0], &who, W).unwrap_err();
    assert!(err.to_string().contains("was pruned"), "{err}");
    assert!(holds::held(&vault).unwrap().is_empty());
    let v = verify::verify(&vault, true).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}
