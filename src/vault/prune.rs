//! Retention and garbage collection, while writers run. Choose the points
//! past their protection's retention (never the newest point of a
//! protection, never its last app-consistent one), fold each dropped
//! ancestor into the kept points that build on it (their manifests are
//! replaced by equivalent ones) and delete the dropped manifests. Data no
//! kept point references is only *marked* ([`super::gc`]); a later prune
//! deletes it once the mark is older than the grace period, as observed by
//! the store, and no manifest present then references it.
//!
//! Writers take no lock. An exclusive vault lock only keeps two prunes (or
//! a prune and a compaction or `vault claim`) apart. Crash safety: every
//! step leaves a readable vault — folded manifests are equivalent before
//! the old ones go; a mark holds its packs' entries before the index stops
//! listing them; packs go last, and only those marked a grace period ago.

use super::gc::{self, State};
use super::index::{Index, PackEntry};
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
    /// Points retention would have dropped, kept because a recovery run
    /// holds them (instant recovery reads them).
    pub held: Vec<String>,
    /// Points whose manifest was replaced by an equivalent folded one.
    pub folded: Vec<String>,
    /// Packs deleted: marked by an earlier prune at least the grace period
    /// ago and still unreferenced.
    pub packs_deleted: usize,
    pub bytes_freed: u64,
    /// Packs newly marked as garbage (deleted by a prune a grace period on).
    pub packs_marked: usize,
    pub bytes_marked: u64,
    /// Marked packs a manifest references again: back in the index.
    pub packs_recovered: usize,
    /// Packs still holding some live data, and their unreferenced bytes.
    pub packs_partly_garbage: usize,
    pub garbage_bytes_left: u64,
    pub dry_run: bool,
    /// How far (seconds) this host's clock ran ahead of the store's, when
    /// more than [`super::clock::FUTURE_TOLERANCE`]: retention was judged
    /// by the store's clock instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_clock_ahead_seconds: Option<i64>,
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
/// retention. Waits up to `lock_wait` for another prune, compaction or
/// claim (never for writers). Marked data is deleted `grace` after it was
/// marked (see [`gc::DEFAULT_GRACE`]).
pub fn prune(
    vault: &Vault,
    retention: &BTreeMap<String, Duration>,
    now: time::OffsetDateTime,
    dry_run: bool,
    lock_wait: Duration,
    grace: Duration,
) -> Result<PruneReport> {
    let mut ahead = None;
    let mut report = remove_points(
        vault,
        |p, store| {
            // Ages by whichever clock is behind: a host whose clock runs
            // ahead must not age every point past retention (the store's
            // clock is the one all hosts share).
            let by = (now - store).whole_seconds();
            if by > super::clock::FUTURE_TOLERANCE.whole_seconds() {
                ahead = Some(by);
            }
            select(p, retention, now.min(store))
        },
        dry_run,
        lock_wait,
        grace,
    )?;
    report.host_clock_ahead_seconds = ahead;
    Ok(report)
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
    let choose = |points: &[Manifest], _: time::OffsetDateTime| {
        points
            .iter()
            .filter(|m| m.protection == protection)
            .map(|m| m.id)
            .collect()
    };
    remove_points(vault, choose, false, lock_wait, gc::DEFAULT_GRACE)
}

/// Drop the points `choose` picks, fold, and delete unreferenced data.
fn remove_points(
    vault: &Vault,
    choose: impl FnOnce(&[Manifest], time::OffsetDateTime) -> BTreeSet<Id>,
    dry_run: bool,
    lock_wait: Duration,
    grace: Duration,
) -> Result<PruneReport> {
    let lock = Lock::acquire(vault, true, lock_wait)?;
    // The store's time, before anything this prune decides on is listed:
    // a mark at least `grace` older than this was marked before every
    // manifest listed below could have been written by a writer that
    // still saw its packs in the index (docs/VAULT.md).
    // A dry run writes only the clock probe: retention needs the time.
    let store_time = gc::store_now(vault)?;
    let now_store = (!dry_run).then_some(store_time);
    let grace_secs = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let due = |t: i64| now_store.is_some_and(|n| n.saturating_sub(t) >= grace_secs);
    let (points, _) = manifest::list_every(vault, false)?;
    let (idx, _) = index::load(vault, false)?;
    let marks = gc::list(vault)?;
    // Only this handle's owner's points are dropped (another
    // configuration's points of the same names are never its to prune);
    // every owner's count for what data stays live.
    let owned: Vec<Manifest> = points.iter().filter(|m| vault.owns(m)).cloned().collect();
    let store_clock = time::OffsetDateTime::from_unix_timestamp(store_time)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        + super::clock::store_skew();
    // A point a recovery run reads from (instant recovery) stays while it
    // is held, whatever its age (see [`super::holds`]: listed under the
    // exclusive lock, so a holder either is seen here or waits for us).
    let held_now = super::holds::held(vault)?;
    let mut drop = choose(&owned, store_clock);
    let held: Vec<String> = drop
        .iter()
        .filter(|id| held_now.contains(id))
        .map(|id| id.hex())
        .collect();
    drop.retain(|id| !held_now.contains(id));
    let mut cache: HashMap<Id, Manifest> = points.iter().map(|m| (m.id, m.clone())).collect();
    let mut report = PruneReport {
        dry_run,
        dropped: drop.iter().map(|i| i.hex()).collect(),
        held,
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

    // Index objects younger than the grace period may belong to a writer
    // that has yet to write its manifest: their packs are not marked yet.
    let young: HashSet<String> = if dry_run {
        HashSet::new()
    } else {
        vault
            .list_timed("index")?
            .into_iter()
            .filter(|(_, t)| !due(*t))
            .map(|(n, _)| n)
            .collect()
    };
    // Likewise packs no index lists yet: a writer uploads them before its
    // index object; only one a grace period old is marked.
    let young_data: HashSet<String> = if dry_run {
        HashSet::new()
    } else {
        vault
            .list_timed("data")?
            .into_iter()
            .filter(|(_, t)| !due(*t))
            .map(|(n, _)| n)
            .collect()
    };
    let plan = classify(
        &idx,
        &marks,
        &live,
        vault.list("data")?,
        (&young, &young_data),
        due,
    );
    report.packs_deleted = plan.delete.len();
    report.bytes_freed = plan.delete.iter().map(|(_, n)| n).sum();
    report.packs_marked = plan.mark.len();
    report.bytes_marked = plan.mark_bytes;
    report.packs_recovered = plan.recovered;
    report.packs_partly_garbage = plan.partly;
    report.garbage_bytes_left = plan.garbage_left;
    if dry_run {
        return Ok(report);
    }
    lock.confirm()?;

    // 1. The new mark holds its packs' entries before the index drops them.
    let mark = (!plan.mark.is_empty()).then(gc::new_name);
    if let Some(name) = &mark {
        gc::write(vault, name, State::Pending, &plan.mark)?;
    }
    for m in &rewrites {
        manifest::write(vault, m)?;
    }
    // 2. The index writers deduplicate against, without the marked packs
    // (and with the recovered ones); the old objects go once it exists.
    if plan.rewrite_index {
        if !plan.keep.is_empty() {
            index::write(vault, plan.keep.clone())?;
        }
        let old: Vec<String> = idx
            .files
            .keys()
            .filter(|n| Index::is_live(n))
            .cloned()
            .collect();
        vault.delete_many(&old)?;
    }
    // 3. Local index caches made until now may name marked packs, and
    // writers that loaded one re-check their blobs before committing.
    if plan.rewrite_index || mark.is_some() || !drop.is_empty() {
        index::bump_generation(vault)?;
    }
    for id in &drop {
        vault.delete(&point_name(id))?;
    }
    let dropped: Vec<String> = drop.iter().map(|i| i.hex()).collect();
    super::moves::forget(vault, &dropped)?;
    // The catalog, rebuilt from what is left. Entries writers added since
    // the listing stay (compare-and-swap); segments no head names go once
    // they are a grace period old (a writer's fold names its new segment
    // only after writing it).
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
        let listed: HashSet<Id> = points.iter().map(|m| m.id).collect();
        let kept = super::catalog::rebuild(vault, &machines, &left, &listed)?;
        for (name, t) in vault.list_timed("catalog")? {
            if !kept.contains(&name) && due(t) {
                vault.delete(&name)?;
            }
        }
    }
    // 4. The mark's grace period starts now: no writer can learn of its
    // packs from the index any more.
    if let Some(name) = &mark {
        gc::write(vault, name, State::Marked, &plan.mark)?;
    }
    // 5. Data marked a grace period ago and still unreferenced.
    lock.confirm()?;
    let names: Vec<String> = plan.delete.iter().map(|(n, _)| n.clone()).collect();
    vault.delete_many(&names)?;
    vault.delete_many(&plan.resolved)?;
    // Uploads a kill cut short (`file://`), as old as a due mark.
    if let Some(n) = now_store {
        let (files, bytes) = vault.sweep_unfinished(n.saturating_sub(grace_secs))?;
        if files > 0 {
            tracing::info!("removed {files} unfinished uploads ({bytes} bytes)");
            report.bytes_freed += bytes;
        }
    }
    Ok(report)
}

/// What to do with every pack.
#[derive(Default)]
struct Plan {
    /// The index to write when it changes: live packs and recovered ones.
    keep: Vec<PackEntry>,
    rewrite_index: bool,
    /// Packs to mark now (with their entries).
    mark: Vec<PackEntry>,
    mark_bytes: u64,
    /// Packs to delete, with their size.
    delete: Vec<(String, u64)>,
    /// Marks settled by this prune (deleted last).
    resolved: Vec<String>,
    recovered: usize,
    partly: usize,
    garbage_left: u64,
}

/// Decide each pack's fate. `idx` holds index objects proper and marks
/// (under `gc/`); `live` every blob a kept point uses; `existing` the
/// listing of `data/`; `young`: index objects and packs younger than the
/// grace period (a running writer's); `due(t)`: a mark stamped `t` is past
/// the grace period.
fn classify(
    idx: &Index,
    marks: &[gc::Mark],
    live: &HashSet<Id>,
    existing: Vec<(String, u64)>,
    (young, young_data): (&HashSet<String>, &HashSet<String>),
    due: impl Fn(i64) -> bool,
) -> Plan {
    let existing: HashMap<String, u64> = existing.into_iter().collect();
    let mut plan = Plan::default();
    let indexed: BTreeMap<Id, &PackEntry> = idx
        .files
        .iter()
        .filter(|(n, _)| Index::is_live(n))
        .flat_map(|(_, ps)| ps.iter().map(|p| (p.id, p)))
        .collect();
    let fresh: HashSet<Id> = idx
        .files
        .iter()
        .filter(|(n, _)| young.contains(*n))
        .flat_map(|(_, ps)| ps.iter().map(|p| p.id))
        .collect();
    let used = |p: &PackEntry| -> u64 {
        p.blobs
            .iter()
            .filter(|b| live.contains(&b.0))
            .map(|b| u64::from(b.2))
            .sum()
    };
    // Packs only marks list: their entries, and the newest time of a
    // finished mark listing each (a pending mark's time counts for nothing).
    let mut marked: BTreeMap<Id, (&PackEntry, Option<i64>)> = BTreeMap::new();
    for m in marks {
        for p in &m.packs {
            let e = marked.entry(p.id).or_insert((p, None));
            if e.0.blobs.is_empty() {
                e.0 = p;
            }
            if m.state == State::Marked {
                e.1 = Some(e.1.map_or(m.time, |t| t.max(m.time)));
            }
        }
    }
    for (id, p) in &indexed {
        let u = used(p);
        let total: u64 = p.blobs.iter().map(|b| u64::from(b.2)).sum();
        if u == 0 && !fresh.contains(id) {
            plan.rewrite_index = true;
            plan.mark_bytes += existing.get(&pack_name(id)).copied().unwrap_or(0);
            plan.mark.push((*p).clone());
        } else {
            if u > 0 && u < total {
                plan.partly += 1;
                plan.garbage_left += total - u;
            }
            plan.keep.push((*p).clone());
        }
    }
    for (id, (p, time)) in &marked {
        let name = pack_name(id);
        if indexed.contains_key(id) || !existing.contains_key(&name) {
            continue;
        }
        if used(p) > 0 {
            // A writer referenced it before the mark took effect.
            plan.recovered += 1;
            plan.rewrite_index = true;
            plan.keep.push((*p).clone());
        } else {
            match time {
                Some(t) if due(*t) => plan.delete.push((name.clone(), existing[&name])),
                Some(_) => {}
                // Only pending marks list it: their prune was cut short.
                None => {
                    plan.mark_bytes += existing[&name];
                    plan.mark.push((*p).clone());
                }
            }
        }
    }
    // Packs nothing lists: an upload in progress or a writer killed
    // before its index. Marked with no entries; a writer that indexes one
    // later takes it out of the mark's reach.
    let mut unlisted: Vec<(&String, &u64)> = existing
        .iter()
        .filter(|(n, _)| {
            !young_data.contains(*n)
                && pack_id(n)
                    .is_some_and(|id| !indexed.contains_key(&id) && !marked.contains_key(&id))
        })
        .collect();
    unlisted.sort();
    for (n, size) in unlisted {
        if let Some(id) = pack_id(n) {
            plan.mark_bytes += size;
            plan.mark.push(PackEntry { id, blobs: vec![] });
        }
    }
    // A finished mark past the grace period, and a pending one, is settled
    // by this prune: what is left of it is deleted, back in the index or in
    // the new mark.
    plan.resolved = marks
        .iter()
        .filter(|m| m.state == State::Pending || due(m.time))
        .map(|m| m.name.clone())
        .collect();
    plan
}

/// The pack id a `data/xx/<id>` name holds.
fn pack_id(name: &str) -> Option<Id> {
    let id = Id::parse(name.rsplit('/').next()?)?;
    (pack_name(&id) == name).then_some(id)
}
