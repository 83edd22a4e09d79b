//! A power cut loses nothing a `file://` vault acknowledged (issue 19 item
//! 2). The vault lives on a FUSE file system that keeps unsynced writes in
//! memory only (`power_support`); `replicate` runs round after round while
//! the disks change, and at a random moment of a random round it is killed
//! and the power cut: every write not synced is gone. Then every point a
//! finished `replicate` listed is still listed, and every listed point
//! restores exactly (byte-equal to the disk as it was in some round).
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
    // Every version each disk had when a replicate started.
    let mut versions: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let record = |versions: &mut BTreeMap<_, BTreeSet<String>>| {
        for (m, disk, rel) in DISKS {
            versions
                .entry((m.to_string(), disk.to_string()))
                .or_default()
                .insert(hash(&onprem.join(rel)));
        }
    };
    record(&mut versions);
    ok(&qs, &["apply", "--auto-approve"]);
    let mut acknowledged: BTreeSet<(String, String)> = point_ids(&ok(&qs, &["points", "--json"]))
        .into_iter()
        .collect();
    assert!(!acknowledged.is_empty());

    let rounds = count_from_env("STANDBY_POWER_ROUNDS", 4);
    let cut_in = rng.below(rounds);
    for round in 0..rounds {
        common::churn(&onprem.join("db/system.img"), &mut rng);
        common::churn(&onprem.join("web/system.img"), &mut rng);
        standby::samples::add_orders(&onprem.join("db/data.sqlite"), 1 + rng.below(50) as u32)
            .unwrap();
        record(&mut versions);
        if round < cut_in {
            ok(&qs, &["replicate"]);
            acknowledged.extend(point_ids(&ok(&qs, &["points", "--json"])));
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
            let got = hash(&out);
            assert!(
                versions[&(m.to_string(), disk.to_string())].contains(&got),
                "point {id} of {m} (disk {disk}) restored bytes the disk never held"
            );
            let mut partial = out.as_os_str().to_owned();
            partial.push(".partial");
            assert!(!Path::new(&partial).exists(), "a .partial was left");
        }
    }
}
