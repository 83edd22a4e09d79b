//! Benchmark helper for bench/open.sh: writes a synthetic vault of
//! MACHINES x POINTS recovery points referencing BLOBS blobs, directly in
//! the vault's format, without replicating anything. Not a test.
//!
//! `open_fill URL KEY_FILE MACHINES POINTS BLOBS`
//!
//! Each point is a real sealed manifest (one 16 GiB disk, a delta on the
//! previous point of its machine, BLOBS / (MACHINES x POINTS) extents,
//! each naming its own blob), the blobs are listed by index objects of
//! 100,000 blobs in packs of 4,096 (as replications then compactions
//! leave them; the packs themselves are not written: listing points never
//! reads them), and each machine's catalog (head and segment) is built
//! from its points as prune builds it. Written with 16 requests in flight.

use standby::model::KeySource;
use standby::vault::index::PackEntry;
use standby::vault::manifest::{Consistency, DiskMap, Extent, Manifest, Stats};
use standby::vault::{Id, Vault, catalog, index, manifest};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const PACK_BLOBS: usize = 4096;
const INDEX_BLOBS: usize = 100_000;

/// Blob `i`'s id: any 32 bytes do, as long as manifests and index agree.
fn blob(i: usize) -> Id {
    Id(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes())
}

fn pack(j: usize) -> Id {
    Id(*blake3::hash(format!("pack {j}").as_bytes()).as_bytes())
}

/// Run `work(i)` for every `i` in `0..n` on 16 threads.
fn parallel(n: usize, work: impl Fn(usize) -> anyhow::Result<()> + Sync) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        work(i)?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 6,
        "usage: open_fill URL KEY_FILE MACHINES POINTS BLOBS"
    );
    let (url, key) = (&args[1], PathBuf::from(&args[2]));
    let machines: usize = args[3].parse()?;
    let per_machine: usize = args[4].parse()?;
    let blobs: usize = args[5].parse()?;
    let vault = Vault::open(url, &KeySource::File(key), Path::new("/"))?;
    let points = machines * per_machine;
    let per_point = blobs / points.max(1);

    let started = Instant::now();
    let indexes = blobs.div_ceil(INDEX_BLOBS);
    parallel(indexes, |x| {
        let first = x * INDEX_BLOBS;
        let last = ((x + 1) * INDEX_BLOBS).min(blobs);
        let packs = (first..last)
            .step_by(PACK_BLOBS)
            .map(|p0| PackEntry {
                id: pack(p0 / PACK_BLOBS),
                blobs: (p0..(p0 + PACK_BLOBS).min(last))
                    .map(|i| (blob(i), ((i - p0) * 4200) as u64, 4200, 4096))
                    .collect(),
            })
            .collect();
        index::write(&vault, packs)?;
        Ok(())
    })?;
    println!(
        "{blobs} blobs in {indexes} index objects: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let base = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let entries: Mutex<Vec<Manifest>> = Mutex::new(Vec::with_capacity(points));
    // Each machine's chain is written in order, machines in parallel.
    parallel(machines, |m| {
        let machine = format!("machine.m{m}");
        let mut parent: Option<Id> = None;
        let mut mine = Vec::with_capacity(per_machine);
        for k in 0..per_machine {
            let n = m * per_machine + k;
            let nonce: [u8; 16] = rand::random();
            let id = vault.id_of(&[b"point", machine.as_bytes(), &nonce]);
            let extents = (0..per_point)
                .map(|e| {
                    let block = (k * per_point + e) as u64 % (4 << 20);
                    Extent(block * 4096, 4096, Some(blob(n * per_point + e)), 0)
                })
                .collect();
            let mut m = Manifest {
                format: 1,
                id,
                protection: format!("protection.m{m}"),
                machine: machine.clone(),
                group: None,
                created: (base + time::Duration::seconds(k as i64 * 60))
                    .format(&time::format_description::well_known::Rfc3339)?,
                consistency: Consistency::Crash,
                freeze_ms: None,
                disks: BTreeMap::from([(
                    "system".to_string(),
                    DiskMap {
                        size: 16 << 30,
                        parent,
                        extents,
                    },
                )]),
                stats: Stats {
                    read: 16 << 30,
                    new: (per_point * 4096) as u64,
                    stored: (per_point * 4200) as u64,
                },
                site: Some("site.onprem".into()),
                moves_to: None,
                cbt: None,
                seq: Some(k as u64 + 1),
                owner: None,
                writer: None,
                index: None,
            };
            manifest::write(&vault, &m)?;
            parent = Some(id);
            for d in m.disks.values_mut() {
                d.extents.clear();
            }
            mine.push(m);
        }
        entries
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .extend(mine);
        Ok(())
    })?;
    let all = entries
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    println!(
        "{points} manifests: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let names: BTreeSet<String> = (0..machines).map(|m| format!("machine.m{m}")).collect();
    let listed: HashSet<Id> = all.iter().map(|m| m.id).collect();
    catalog::rebuild(&vault, &names, &all, &listed)?;
    println!(
        "{machines} catalogs: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
