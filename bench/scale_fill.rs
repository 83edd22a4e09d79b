//! Benchmark helper for bench/scale.sh: grows a vault by COUNT points of
//! one machine, fast, so a protection's delta can be measured with 1,000
//! and 10,000 points in the vault. Not a test.
//!
//! `scale_fill URL KEY_FILE MACHINE COUNT`
//!
//! Each new point is a real manifest: a copy of the machine's newest point
//! under a new id and a later time (its disk maps are the newest's, so it
//! restores to the same disks), written with 16 requests in flight. Beside
//! each, an index object (empty: the packs are shared), as a replication
//! on another host would leave one. Then the machine's catalog is rebuilt
//! from all its points at once, as prune does. What is written is what many
//! replications would write, minus the data.

use standby::model::KeySource;
use standby::vault::{Vault, catalog, index, manifest};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 5,
        "usage: scale_fill URL KEY_FILE MACHINE COUNT"
    );
    let (url, key, machine) = (&args[1], PathBuf::from(&args[2]), args[3].clone());
    let count: usize = args[4].parse()?;
    let vault = Vault::open(url, &KeySource::File(key), Path::new("/"))?;
    let newest = catalog::newest(&vault, &machine)?
        .ok_or_else(|| anyhow::anyhow!("{machine} has no point to copy"))?;
    let started = Instant::now();
    let base = time::OffsetDateTime::now_utc();
    let next = AtomicUsize::new(0);
    let made: Vec<manifest::Manifest> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<Vec<manifest::Manifest>> {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return Ok(mine);
                        }
                        let mut m = newest.clone();
                        let nonce: [u8; 16] = rand::random();
                        m.id = vault.id_of(&[b"point", machine.as_bytes(), &nonce]);
                        m.created = (base + time::Duration::milliseconds(i as i64 + 1))
                            .format(&time::format_description::well_known::Rfc3339)?;
                        index::write(&vault, Vec::new())?;
                        manifest::write(&vault, &m)?;
                        mine.push(m);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(
                w.join()
                    .map_err(|_| anyhow::anyhow!("a writer panicked"))??,
            );
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let mut all = catalog::points(&vault, &machine)?.unwrap_or_default();
    all.extend(made);
    let listed = all.iter().map(|m| m.id).collect();
    catalog::rebuild(&vault, &BTreeSet::from([machine.clone()]), &all, &listed)?;
    println!(
        "{machine}: +{count} points ({} now) in {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
