//! A reader walking a delta chain while a prune folds a point in the
//! middle of it (found by tester16: `restore latest` of a group member
//! failed with "object points/... is missing" during a prune storm on
//! moto, 1 of 460 reads). The prune drops the oldest points and rewrites
//! the oldest kept one as a full map before deleting them; a reader that
//! read that kept point's manifest before the fold then looks for its old
//! parent, which is gone. The restored point itself is unchanged, so
//! re-reading only it cannot tell a fold from damage: the chain must be
//! read afresh (`manifest::chain`).

mod vault_support;

use standby::vault::manifest;
use standby::vault::prune;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use vault_support::*;

#[test]
fn a_chain_read_across_a_fold_in_its_middle_resolves_the_point() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let disk = d.join("disk");
    let cache = d.join("cache");
    let mut points = Vec::new();
    let mut refs = Vec::new();
    for seed in 0..4u8 {
        let mut data: Vec<u8> = std::fs::read(&disk).unwrap_or_else(|_| vec![0u8; 1 << 20]);
        // One changed block per point: each is a delta on the one before.
        let at = seed as usize * 8192;
        data[at..at + 4096].copy_from_slice(&[seed + 1; 4096]);
        std::fs::write(&disk, &data).unwrap();
        refs.push(snapshot(&disk, &d.join(format!("ref{seed}"))));
        points.push(take(&vault, &cache, &[target("a", &[("root", &disk)])])[0].clone());
    }
    let [p0, p1, p2, p3] = [0, 1, 2, 3].map(|i| points[i].clone());
    assert_eq!(p3.disks["root"].parent, Some(p2.id));
    assert_eq!(p2.disks["root"].parent, Some(p1.id));

    // What a reader of p3 has read just before the prune: p2's manifest,
    // naming p1 as its parent.
    let stale_p2 = manifest::read(&vault, &p2.id).unwrap();

    // Retention of an hour judged just under an hour after p2: p0 and p1
    // go, p2 is folded into a full map, p3 is untouched.
    // Retention ages by the earlier of the given clock and the store's:
    // move the store's two hours on so the given one decides.
    // SAFETY: this binary's only test; nothing else reads the environment yet.
    unsafe { std::env::set_var("STANDBY_TEST_STORE_CLOCK_SKEW", "2h") };
    let retention = BTreeMap::from([("protection.a".to_string(), Duration::from_secs(3600))]);
    let now = p2.created_at().unwrap() + time::Duration::hours(1) - time::Duration::milliseconds(1);
    assert!(
        p1.created_at().unwrap() + time::Duration::hours(1) < now,
        "p1 is past retention"
    );
    let rep = prune::prune(
        &vault,
        &retention,
        now,
        false,
        Duration::from_secs(60),
        Duration::from_secs(3600),
    )
    .unwrap();
    let mut dropped = vec![p0.id.hex(), p1.id.hex()];
    dropped.sort();
    assert_eq!(rep.dropped, dropped, "{rep:?}");
    assert_eq!(rep.folded, vec![p2.id.hex()], "{rep:?}");
    assert_eq!(
        manifest::read(&vault, &p2.id).unwrap().disks["root"].parent,
        None
    );

    // The reader goes on from where it was: p1 is gone under it.
    let mut reader_cache = HashMap::from([(p2.id, stale_p2)]);
    let r = manifest::resolve(&vault, &p3, "root", &mut reader_cache)
        .expect("a fold in the middle of the chain is not damage");
    let fresh = manifest::resolve(&vault, &p3, "root", &mut HashMap::new()).unwrap();
    assert_eq!(r.size, fresh.size);
    let blob = |r: &manifest::Resolved, i: usize| {
        let b = r.blocks[i];
        (b != manifest::ZERO).then(|| (r.blobs[(b >> 32) as usize], b & 0xffff_ffff))
    };
    for i in 0..r.blocks.len() {
        assert_eq!(blob(&r, i), blob(&fresh, i), "block {i}");
    }
    // And the point restores byte-identical.
    let out = d.join("out");
    restore(&vault, &p3, "root", &out);
    assert_same(&refs[3], &out);
}
