//! Retention and garbage collection. Under an exclusive vault lock: choose
//! the points past their protection's retention (never the newest point of
//! a protection, never its last app-consistent one), fold each dropped
//! ancestor into the kept points that build on it (their manifests are
//! replaced by equivalent ones), delete the dropped manifests, rewrite the
//! index without unreferenced packs, then delete those packs.
//!
//! Crash safety: every step leaves a readable vault — folded manifests are
//! equivalent before the old ones go; the new index is written before the
//! old ones are deleted; packs go last (a pack no index lists is garbage the
//! next prune removes, since no replication can be running meanwhile).

use super::lock::Lock;
use super::manifest::{self, Consistency, Manifest, Resolved, point_name};
use super::{Id, Result, Vault, index, pack_name};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    /// Full ids of the points dropped (or that would be, with a dry run).
    pub dropped: Vec<String>,
    pub kept: usize,
    /// Points whose manifest was replaced by an equivalent folded one.
    pub folded: Vec<String>,
    pub packs_deleted: usize,
    pub bytes_freed: u64,
    /// Packs still holding some live data, and their unreferenced bytes.
    pub packs_partly_garbage: usize,
    pub garbage_bytes_left: u64,
    pub dry_run: bool,
}

/// Which points to drop, given each protection's retention. Points of a
/// protection with no retention given are kept.
pub fn select(
    points: &[Manifest],
    retention: &BTreeMap<String, Duration>,
    now: time::OffsetDateTime,
) -> BTreeSet<Id> {
    let mut by_prot: BTreeMap<&str, Vec<&Manifest>> = BTreeMap::new();
    for m in points {
        by_prot.entry(&m.protection).or_default().push(m);
    }
    let mut drop = BTreeSet::new();
    for (prot, mut ms) in by_prot {
        let Some(keep_for) = retention.get(prot) else {
            continue;
        };
        // Newest by the chain, not the clock: a point dated in the future
        // is not the one kept, and keeps nothing from being kept.
        ms.sort_by(|a, b| a.order().cmp(&b.order()));
        let cutoff = now - *keep_for;
        let newest = ms.last().map(|m| m.id);
        let mut dropped: Vec<Id> = ms
            .iter()
            .filter(|m| Some(m.id) != newest && m.created_at().is_some_and(|t| t < cutoff))
            .map(|m| m.id)
            .collect();
        let kept_app = ms
            .iter()
            .any(|m| !dropped.contains(&m.id) && m.consistency == Consistency::App);
        if !kept_app
            && let Some(last_app) = ms.iter().rev().find(|m| m.consistency == Consistency::App)
        {
            dropped.retain(|id| *id != last_app.id);
        }
        drop.extend(dropped);
    }
    drop
}

/// Prune the vault. `retention` maps protection addresses to their policy's
/// retention. Waits up to `lock_wait` for running replications.
pub fn prune(
    vault: &Vault,
    retention: &BTreeMap<String, Duration>,
    now: time::OffsetDateTime,
    dry_run: bool,
    lock_wait: Duration,
) -> Result<PruneReport> {
    remove_points(vault, |p| select(p, retention, now), dry_run, lock_wait)
}

/// Delete every point of `protection` (e.g. `protection.db`) and the data
/// only they used; other points built on them are folded first, as in
/// [`prune`]. Used when a protection is destroyed. Safe to repeat after an
/// interruption: what is left is deleted the next time.
pub fn drop_protection(
    vault: &Vault,
    protection: &str,
    lock_wait: Duration,
) -> Result<PruneReport> {
    let choose = |points: &[Manifest]| {
        points
            .iter()
            .filter(|m| m.protection == protection)
            .map(|m| m.id)
            .collect()
    };
    remove_points(vault, choose, false, lock_wait)
}

/// Drop the points `choose` picks, fold, and delete unreferenced data.
fn remove_points(
    vault: &Vault,
    choose: impl FnOnce(&[Manifest]) -> BTreeSet<Id>,
    dry_run: bool,
    lock_wait: Duration,
) -> Result<PruneReport> {
    let lock = Lock::acquire(vault, true, lock_wait)?;
    let (points, _) = manifest::list_every(vault, false)?;
    let (idx, _) = index::load(vault, false)?;
    // Only this handle's owner's points are dropped (another
    // configuration's points of the same names are never its to prune);
    // every owner's count for what data stays live.
    let owned: Vec<Manifest> = points.iter().filter(|m| vault.owns(m)).cloned().collect();
    let drop = choose(&owned);
    let mut cache: HashMap<Id, Manifest> = points.iter().map(|m| (m.id, m.clone())).collect();
    let mut report = PruneReport {
        dry_run,
        dropped: drop.iter().map(|i| i.hex()).collect(),
        kept: owned.len() - drop.len(),
        ..Default::default()
    };

    // Fold, and collect every blob a kept point still uses.
    let mut live: HashSet<Id> = HashSet::new();
    let mut rewrites: Vec<Manifest> = Vec::new();
    for m in points.iter().filter(|m| !drop.contains(&m.id)) {
        let mut new = m.clone();
        let mut changed = false;
        for (disk, map) in &m.disks {
            let mut seen = HashMap::new();
            let r =
                manifest::resolve_with(vault, m, disk, &mut cache, Resolved::default(), &mut seen)?;
            // Live: the blobs some block of the disk maps to. The blob
            // table also lists blobs of ancestors whose blocks were all
            // overwritten since; counting those kept every dropped
            // point's data forever.
            live.extend(r.runs().iter().map(|&(_, _, b, _)| r.blobs[b as usize]));
            let Some(parent) = map.parent else { continue };
            if !drop.contains(&parent) {
                continue;
            }
            // The nearest kept ancestor becomes the new parent.
            let chain = manifest::chain(vault, m, disk, &mut cache)?;
            let base = chain
                .iter()
                .rev()
                .skip(1)
                .map(|(id, _)| *id)
                .find(|id| !drop.contains(id));
            let folded = match base {
                None => r.to_full(),
                Some(b) => {
                    let bm = cache
                        .get(&b)
                        .cloned()
                        .ok_or_else(|| vault.damaged(&point_name(&b), "it vanished"))?;
                    let base_r = manifest::resolve_with(
                        vault,
                        &bm,
                        disk,
                        &mut cache,
                        Resolved {
                            blobs: r.blobs.clone(),
                            ..Default::default()
                        },
                        &mut seen,
                    )?;
                    // The base may have added blobs to the shared table.
                    let r2 = Resolved {
                        blobs: base_r.blobs.clone(),
                        ..r.clone()
                    };
                    r2.delta_against(&base_r, b)
                }
            };
            new.disks.insert(disk.clone(), folded);
            changed = true;
        }
        if changed {
            rewrites.push(new);
        }
    }
    report.folded = rewrites.iter().map(|m| m.id.hex()).collect();

    // Packs: fully unreferenced ones go; partly referenced ones stay.
    let existing: HashMap<String, u64> = vault.list("data")?.into_iter().collect();
    let packs = idx.packs();
    let mut keep_packs = Vec::new();
    let mut delete_packs: Vec<String> = Vec::new();
    for (id, entry) in &packs {
        let used: u64 = entry
            .blobs
            .iter()
            .filter(|b| live.contains(&b.0))
            .map(|b| b.2 as u64)
            .sum();
        let total: u64 = entry.blobs.iter().map(|b| b.2 as u64).sum();
        if used == 0 {
            delete_packs.push(pack_name(id));
        } else {
            if used < total {
                report.packs_partly_garbage += 1;
                report.garbage_bytes_left += total - used;
            }
            keep_packs.push((*entry).clone());
        }
    }
    let indexed: HashSet<String> = packs.keys().map(pack_name).collect();
    delete_packs.extend(existing.keys().filter(|n| !indexed.contains(*n)).cloned());
    report.packs_deleted = delete_packs.len();
    report.bytes_freed = delete_packs.iter().filter_map(|n| existing.get(n)).sum();
    if dry_run {
        return Ok(report);
    }
    // Before anything is deleted: local index caches made until now may
    // name what goes, so they stop being trusted.
    // And only while our lock provably holds: had another process taken
    // it for dead, a writer could be referencing what we delete.
    lock.confirm()?;
    if !drop.is_empty() || !delete_packs.is_empty() {
        index::bump_generation(vault)?;
    }

    for m in &rewrites {
        manifest::write(vault, m)?;
    }
    for id in &drop {
        vault.delete(&point_name(id))?;
    }
    let dropped: Vec<String> = drop.iter().map(|i| i.hex()).collect();
    super::moves::forget(vault, &dropped)?;
    // The catalog, rebuilt from what is left: no writer runs under the
    // exclusive lock, so every pending entry is settled here too, and
    // segments no head names (a fold killed midway) go.
    if vault.format() >= 2 {
        let rewritten: HashMap<Id, &Manifest> = rewrites.iter().map(|m| (m.id, m)).collect();
        let left: Vec<Manifest> = points
            .iter()
            .filter(|m| !drop.contains(&m.id))
            .map(|m| {
                rewritten
                    .get(&m.id)
                    .map_or_else(|| m.clone(), |r| (*r).clone())
            })
            .collect();
        let mut machines: BTreeSet<String> = points.iter().map(|m| m.machine.clone()).collect();
        machines.extend(super::catalog::machines(vault)?);
        let kept = super::catalog::rebuild(vault, &machines, &left)?;
        for (name, _) in vault.list("catalog")? {
            if !kept.contains(&name) {
                vault.delete(&name)?;
            }
        }
    }
    if !delete_packs.is_empty() || drop.iter().next().is_some() {
        let old: Vec<String> = idx.files.keys().cloned().collect();
        if !keep_packs.is_empty() {
            index::write(vault, keep_packs)?;
        }
        for name in old {
            vault.delete(&name)?;
        }
        lock.confirm()?;
        for name in &delete_packs {
            vault.delete(name)?;
        }
    }
    // Uploads a kill cut short (`file://`): no writer runs now.
    let (files, bytes) = vault.sweep_unfinished()?;
    if files > 0 {
        tracing::info!("removed {files} unfinished uploads ({bytes} bytes)");
        report.bytes_freed += bytes;
    }
    Ok(report)
}
