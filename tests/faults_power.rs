//! A power cut loses nothing a `file://` vault acknowledged (issue 19 item
//! 2). The vault lives on a FUSE file system that keeps unsynced writes in
//! memory only (`power_support`); `replicate` runs round after round while
//! the disks change, and at a random moment of a random round it is killed
//! and the power cut: every write not synced is gone. Then every point a
//! finished `replicate` listed is still listed, and every listed point
//! restores exactly (byte-equal to the disk as it was in the round that
//! took it). A first test shows the FUSE layer really drops what was not
//! synced, so the second cannot pass on a layer that keeps everything.
//! `STANDBY_SEED` replays a run; `STANDBY_POWER_ROUNDS` sets the rounds.

mod common;
mod power_support;

use common::{Rng, count_from_env, ok, point_ids, quickstart, standby, text};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

fn hash(p: &Path) -> String {
    blake3::hash(&std::fs::read(p).unwrap())
        .to_hex()
        .to_string()
}

/// The disks of the quickstart's machines: (machine, disk, path under the site).
const DISKS: &[(&str, &str, &str)] = &[
    ("machine.db", "system", "db/system.img"),
    ("machine.db", "data", "db/data.sqlite"),
    ("machine.web", "system", "web/system.img"),
];

/// The layer itself: an unsynced file is gone after the cut, a synced one
/// in a synced directory survives, an unsynced overwrite of it is undone.
#[test]
fn the_power_cut_drops_exactly_what_was_not_synced() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("flaky");
    std::fs::create_dir_all(&mnt).unwrap();
    let flaky = power_support::Flaky::mount(&mnt);
    let kept = mnt.join("kept");
    let mut f = std::fs::File::create(&kept).unwrap();
    f.write_all(b"synced").unwrap();
    f.sync_all().unwrap();
    std::fs::File::open(&mnt).unwrap().sync_all().unwrap();
    drop(f);
    std::fs::write(mnt.join("lost"), b"never synced").unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&kept).unwrap();
    f.write_all(b"SYNCED").unwrap();
    drop(f);
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        b"SYNCED",
        "written, not yet cut"
    );
    assert!(mnt.join("lost").exists());
    flaky.power_cut();
    assert!(
        !mnt.join("lost").exists(),
        "an unsynced file survived the cut"
    );
    assert_eq!(std::fs::read(&kept).unwrap(), b"synced");
    assert!(flaky.syncs().0 > 0 && flaky.syncs().1 > 0);
}

#[test]
fn every_listed_point_restores_exactly_after_a_power_cut() {
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("flaky");
    std::fs::create_dir_all(&mnt).unwrap();
    let flaky = power_support::Flaky::mount(&mnt);
    let qs = quickstart(d.path(), 8, 8);
    let main = qs.join("main.hcl");
    let hcl = std::fs::read_to_string(&main).unwrap();
    assert!(hcl.contains("file://.standby/vault"));
    std::fs::write(
        &main,
        hcl.replace(
            "file://.standby/vault",
            &format!("file://{}/vault", mnt.display()),
        ),
    )
    .unwrap();
    let onprem = qs.join("sites/onprem");
    let mut rng = Rng::seeded("power cut");
    // Each disk's bytes as they are now, and what every point must restore
    // to: the disks as they were in the round that took it.
    let now = || -> BTreeMap<(String, String), String> {
        DISKS
            .iter()
            .map(|(m, disk, rel)| ((m.to_string(), disk.to_string()), hash(&onprem.join(rel))))
            .collect()
    };
    let mut expected: BTreeMap<(String, String), BTreeMap<(String, String), String>> =
        BTreeMap::new();
    let mut round_disks = now();
    ok(&qs, &["apply", "--auto-approve"]);
    let mut acknowledged: BTreeSet<(String, String)> = BTreeSet::new();
    let mut acknowledge = |acknowledged: &mut BTreeSet<(String, String)>,
                           disks: &BTreeMap<(String, String), String>| {
        for p in point_ids(&ok(&qs, &["points", "--json"])) {
            if acknowledged.insert(p.clone()) {
                expected.insert(p, disks.clone());
            }
        }
    };
    acknowledge(&mut acknowledged, &round_disks);
    assert!(!acknowledged.is_empty());

    let rounds = count_from_env("STANDBY_POWER_ROUNDS", 4);
    let cut_in = rng.below(rounds);
    for round in 0..rounds {
        common::churn(&onprem.join("db/system.img"), &mut rng);
        common::churn(&onprem.join("web/system.img"), &mut rng);
        standby::samples::add_orders(&onprem.join("db/data.sqlite"), 1 + rng.below(50) as u32)
            .unwrap();
        round_disks = now();
        if round < cut_in {
            ok(&qs, &["replicate"]);
            acknowledge(&mut acknowledged, &round_disks);
            continue;
        }
        // The cut: kill the replicate at a random moment, then lose power.
        let mut child = standby(&qs)
            .arg("replicate")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
        let _ = child.kill();
        let _ = child.wait();
        flaky.power_cut();
        break;
    }
    let (file_syncs, dir_syncs) = flaky.syncs();
    println!(
        "{} acknowledged points, cut in round {cut_in}; {file_syncs} file and {dir_syncs} directory syncs",
        acknowledged.len()
    );
    // Durability rests on these: a vault that never syncs would lose points.
    assert!(
        file_syncs > 0 && dir_syncs > 0,
        "no fsync reached the vault"
    );

    let o = standby(&qs).args(["points", "--json"]).output().unwrap();
    assert!(
        o.status.success(),
        "points after the power cut:\n{}",
        text(&o)
    );
    let listed: BTreeSet<(String, String)> = point_ids(&String::from_utf8_lossy(&o.stdout))
        .into_iter()
        .collect();
    let lost: Vec<_> = acknowledged.difference(&listed).collect();
    assert!(lost.is_empty(), "points lost by the power cut: {lost:?}");
    assert!(!listed.is_empty());
    let out = d.path().join("restored.img");
    for (id, machine) in &listed {
        for (m, disk, _) in DISKS.iter().filter(|(m, _, _)| m == machine) {
            let _ = std::fs::remove_file(&out);
            let o = standby(&qs)
                .args(["restore", id, "--disk", disk, "--to", out.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "point {id} of {m} (disk {disk}) does not restore after the power cut:\n{}",
                text(&o)
            );
            // A point acknowledged in a round holds that round's bytes; one
            // the killed run finished, the bytes of the cut round.
            let want = &expected
                .get(&(id.clone(), machine.clone()))
                .unwrap_or(&round_disks)[&(m.to_string(), disk.to_string())];
            assert_eq!(
                &hash(&out),
                want,
                "point {id} of {m} (disk {disk}) restored other bytes than its round's"
            );
            let mut partial = out.as_os_str().to_owned();
            partial.push(".partial");
            assert!(!Path::new(&partial).exists(), "a .partial was left");
        }
    }
}
