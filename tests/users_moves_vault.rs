//! The vault side of renames: `vault::moves` renames points without touching
//! a manifest, chains, survives prune's folding, and prune forgets the
//! entries of the points it drops.

mod vault_support;

use standby::vault::moves::{self, Rename};
use standby::vault::{manifest, prune};
use std::collections::BTreeMap;
use std::time::Duration;
use vault_support::*;

#[test]
fn renamed_points_keep_their_manifests_and_prune_forgets_dropped_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let disk = d.join("disk");
    let cache = d.join("cache");
    std::fs::write(&disk, vec![7u8; 1 << 20]).unwrap();
    let mut ids = Vec::new();
    for i in 0..3u8 {
        std::fs::write(&disk, vec![i; 1 << 20]).unwrap();
        ids.push(take(&vault, &cache, &[target("a", &[("root", &disk)])])[0].id);
    }
    let sealed_before: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| vault.get(&manifest::point_name(id)).unwrap().to_vec())
        .collect();

    let r = |f: &str, t: &str| Rename {
        from: f.into(),
        to: t.into(),
    };
    let counts = moves::record(
        &vault,
        &[
            r("protection.a", "protection.b"),
            r("protection.b", "protection.c"),
        ],
    )
    .unwrap();
    assert_eq!(counts, vec![3, 3]);
    let (points, _) = manifest::list(&vault, false).unwrap();
    assert!(
        points.iter().all(|m| m.protection == "protection.c"),
        "{points:?}"
    );
    assert_eq!(
        manifest::read(&vault, &ids[0]).unwrap().protection,
        "protection.c"
    );
    // Not one sealed manifest was rewritten.
    for (id, before) in ids.iter().zip(&sealed_before) {
        assert_eq!(
            &vault.get(&manifest::point_name(id)).unwrap().to_vec(),
            before
        );
    }
    // Renaming what is not there moves nothing and writes nothing new.
    assert_eq!(
        moves::record(&vault, &[r("protection.a", "protection.z")]).unwrap(),
        vec![0]
    );

    // Prune drops the two older points under the new name and forgets them.
    let retention = BTreeMap::from([("protection.c".to_string(), Duration::from_secs(3600))]);
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    // The store's clock a day on too (retention ages by the earlier one).
    // SAFETY: this binary's only test.
    unsafe { std::env::set_var("STANDBY_TEST_STORE_CLOCK_SKEW", "1d") };
    let rep = prune::prune(
        &vault,
        &retention,
        later,
        false,
        Duration::from_secs(5),
        Duration::ZERO,
    )
    .unwrap();
    assert_eq!(rep.dropped.len(), 2, "{rep:?}");
    let left = moves::load(&vault).unwrap();
    assert_eq!(
        left.points.keys().cloned().collect::<Vec<_>>(),
        vec![ids[2].hex()]
    );
    let (points, _) = manifest::list(&vault, false).unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].protection, "protection.c");
}
