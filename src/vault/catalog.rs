//! The catalog: per machine, which points exist, so taking a point and
//! looking at one protection read a few objects whatever the vault holds.
//!
//! - `heads/<id>` (id: keyed hash of `"head"` and the machine address), one
//!   per machine, sealed: `{format, machine, segments, points, pending}`.
//!   `points` and `pending` hold *entries*: the machine's manifests without
//!   their extents (what listings show: id, time, consistency, group, disk
//!   sizes and parents, stats). `segments` names `catalog/<id>` objects,
//!   immutable, each a sealed `{machine, points}` of older entries.
//! - A writer adds its entry to `pending` (a compare-and-swap on the head's
//!   etag) *before* writing the manifest, then moves it to `points` after.
//!   So every manifest that exists is in its head (a lost head update can
//!   never hide a point); an entry still pending may name a point whose
//!   writer died before its manifest: readers check each pending entry
//!   against its manifest (one HEAD request) and the next writer or a prune
//!   settles it.
//! - The manifests stay the truth: the head is a hint checked against the
//!   manifest it names. Replication reads the newest entry's manifest
//!   before diffing against it; an older entry than the real newest (a
//!   stale head) only makes a bigger delta, never a wrong parent, since the
//!   parent is the point whose hashes were compared.
//! - When `points` reaches [`FOLD_AT`] entries, all but the newest move to
//!   a new segment; at [`MERGE_AT`] segments they are merged into one. The
//!   head is switched to the new segment by compare-and-swap, and only then
//!   are the replaced segments deleted: a kill at any moment leaves every
//!   entry reachable (an unreferenced segment is garbage prune removes).
//!
//! Prune and `moves` (under the exclusive lock, or when renaming) rebuild the
//! heads they touch from the manifests themselves.

use super::manifest::{self, Manifest, point_name};
use super::{Id, Result, Vault, VaultError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Entries a head holds before the older ones move to a segment.
pub const FOLD_AT: usize = 128;
/// Segments a head names before they are merged into one.
pub const MERGE_AT: usize = 8;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Head {
    format: u32,
    machine: String,
    #[serde(default)]
    segments: Vec<String>,
    #[serde(default)]
    points: Vec<Manifest>,
    #[serde(default)]
    pending: Vec<Manifest>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Segment {
    machine: String,
    points: Vec<Manifest>,
}

/// The head object of `machine`.
pub fn head_name(vault: &Vault, machine: &str) -> String {
    format!(
        "heads/{}",
        vault.id_of(&[b"head", machine.as_bytes()]).hex()
    )
}

/// A manifest without its extents: what the catalog keeps of a point.
/// Never resolve one; read the manifest for that.
pub fn entry(m: &Manifest) -> Manifest {
    let mut e = m.clone();
    for d in e.disks.values_mut() {
        d.extents.clear();
    }
    e
}

fn decode<T: for<'de> Deserialize<'de>>(vault: &Vault, name: &str, sealed: &[u8]) -> Result<T> {
    let plain = vault.open_meta(name, sealed)?;
    serde_json::from_slice(&plain).map_err(|e| vault.damaged(name, format!("unreadable: {e}")))
}

fn check_entries(vault: &Vault, name: &str, machine: &str, es: &[Manifest]) -> Result<()> {
    for e in es {
        e.check().map_err(|r| vault.damaged(name, r))?;
        if e.machine != machine {
            return Err(vault.damaged(name, format!("it lists a point of {}", e.machine)));
        }
    }
    Ok(())
}

fn read_head(vault: &Vault, machine: &str) -> Result<Option<(Head, crate::store::UpdateVersion)>> {
    let name = head_name(vault, machine);
    let Some((bytes, version)) = vault.get_versioned(&name)? else {
        return Ok(None);
    };
    let head: Head = decode(vault, &name, &bytes)?;
    if head.machine != machine {
        return Err(vault.damaged(&name, "it is the head of another machine"));
    }
    check_entries(vault, &name, machine, &head.points)?;
    check_entries(vault, &name, machine, &head.pending)?;
    Ok(Some((head, version)))
}

fn seal_head(vault: &Vault, name: &str, head: &Head) -> Vec<u8> {
    let plain = serde_json::to_vec(head).unwrap_or_default();
    vault.meta.seal(&plain, 3, name.as_bytes())
}

/// Heads as this process last read or wrote them, with the version each
/// was at: the base of the next compare-and-swap, so a writer switches a
/// head with one conditional write instead of reading back what it just
/// wrote. Never a source of truth for readers: a stale base only fails
/// its compare-and-swap, and the head is then read afresh.
#[derive(Debug, Default)]
pub struct Seen(BTreeMap<String, (Head, crate::store::UpdateVersion)>);

impl Seen {
    fn keep(&mut self, machine: &str, head: &Head, version: crate::store::UpdateVersion) {
        // A store that names no version gives nothing to compare against.
        if version.e_tag.is_some() || version.version.is_some() {
            self.0.insert(machine.to_string(), (head.clone(), version));
        } else {
            self.0.remove(machine);
        }
    }
}

/// Change `machine`'s head with `f`, by compare-and-swap, retrying when
/// another writer changed it meanwhile. The first attempt starts from the
/// head in `seen` when there is one (no read); later ones read it. Returns
/// the head as written, and keeps it in `seen`.
fn update(
    vault: &Vault,
    machine: &str,
    seen: &mut Seen,
    mut f: impl FnMut(&mut Head),
) -> Result<Head> {
    let name = head_name(vault, machine);
    for _ in 0..100 {
        let known = seen.0.remove(machine);
        let from_seen = known.is_some();
        let (mut head, version) = match known {
            Some((h, v)) => (h, Some(v)),
            None => match read_head(vault, machine)? {
                Some((h, v)) => (h, Some(v)),
                None => (
                    Head {
                        format: 1,
                        machine: machine.to_string(),
                        ..Default::default()
                    },
                    None,
                ),
            },
        };
        f(&mut head);
        let sealed = seal_head(vault, &name, &head);
        if let Some(v) = vault.put_versioned(&name, sealed, version.as_ref())? {
            seen.keep(machine, &head, v);
            return Ok(head);
        }
        // A stale base is retried at once from a fresh read; a lost race
        // with another writer backs off first.
        if !from_seen {
            let jitter = std::time::Duration::from_millis(5 + rand::random::<u64>() % 50);
            std::thread::sleep(jitter);
        }
    }
    Err(vault.damaged(&name, "it kept changing under 100 attempts to update it"))
}

/// Before writing `points`' manifests: add each to its machine's head as
/// pending. Upgrades a format 1 vault first.
pub fn begin(vault: &Vault, points: &[Manifest]) -> Result<()> {
    begin_seen(vault, points, &mut Seen::default())
}

/// [`begin`], switching each head from its version in `seen` (one
/// conditional write when no one else wrote it since).
pub fn begin_seen(vault: &Vault, points: &[Manifest], seen: &mut Seen) -> Result<()> {
    ensure(vault)?;
    for m in points {
        let e = entry(m);
        update(vault, &m.machine, seen, |h| {
            if !h.pending.iter().any(|p| p.id == e.id) {
                h.pending.push(e.clone());
            }
        })?;
    }
    Ok(())
}

/// After writing `points`' manifests: move them from pending to points,
/// and settle other pending entries whose manifest exists by now (a
/// writer that died after its manifest). Folds a full head into a segment.
pub fn commit(vault: &Vault, points: &[Manifest]) -> Result<()> {
    commit_seen(vault, points, &mut Seen::default())
}

/// [`commit`], switching each head from its version in `seen` (as
/// [`begin_seen`] left it: one conditional write, no read, when no one
/// else wrote the head since).
pub fn commit_seen(vault: &Vault, points: &[Manifest], seen: &mut Seen) -> Result<()> {
    for m in points {
        // Other writers' pending entries: done ones are confirmed, the
        // rest left (their writer may still be running). From the head as
        // last seen: one another writer added since stays pending, for
        // the next writer or prune to settle.
        let pending = match seen.0.get(&m.machine) {
            Some((h, _)) => Some(h.pending.clone()),
            None => read_head(vault, &m.machine)?.map(|(h, _)| h.pending),
        };
        let others: Vec<Id> = pending
            .unwrap_or_default()
            .iter()
            .map(|p| p.id)
            .filter(|i| *i != m.id)
            .collect();
        let mut done = BTreeSet::from([m.id]);
        for id in others {
            if vault.exists(&point_name(&id))? {
                done.insert(id);
            }
        }
        let e = entry(m);
        let head = update(vault, &m.machine, seen, |h| {
            let (moved, left): (Vec<Manifest>, Vec<Manifest>) = std::mem::take(&mut h.pending)
                .into_iter()
                .partition(|p| done.contains(&p.id));
            h.pending = left;
            for p in moved {
                if !h.points.iter().any(|q| q.id == p.id) {
                    h.points.push(p);
                }
            }
            if !h.points.iter().any(|q| q.id == e.id) {
                h.points.push(e.clone());
            }
        })?;
        if head.points.len() >= FOLD_AT {
            // The fold writes the head: what `seen` holds is stale after.
            seen.0.remove(&m.machine);
            fold(vault, &m.machine)
                .map_err(|e| {
                    tracing::warn!("cannot fold the catalog of {}: {e}", m.machine);
                    e
                })
                .ok();
        }
    }
    Ok(())
}

fn write_segment(vault: &Vault, machine: &str, points: Vec<Manifest>) -> Result<String> {
    let nonce: [u8; 16] = rand::random();
    let name = format!(
        "catalog/{}",
        vault.id_of(&[b"catalog", machine.as_bytes(), &nonce]).hex()
    );
    let plain = serde_json::to_vec(&Segment {
        machine: machine.to_string(),
        points,
    })
    .unwrap_or_default();
    vault.put_meta(&name, &plain)?;
    Ok(name)
}

fn read_segment(vault: &Vault, machine: &str, name: &str) -> Result<Vec<Manifest>> {
    if !name.starts_with("catalog/") {
        return Err(vault.damaged(name, "a head names it as a segment"));
    }
    let seg: Segment = decode(vault, name, &vault.get(name)?)?;
    if seg.machine != machine {
        return Err(vault.damaged(name, "it is a segment of another machine"));
    }
    check_entries(vault, name, machine, &seg.points)?;
    Ok(seg.points)
}

/// Move all but the newest entry of `machine`'s head into a segment
/// (merging the segments once there are [`MERGE_AT`]). The head switches
/// by compare-and-swap; replaced segments are deleted only after. If
/// another writer changed the head meanwhile, the new segment is deleted
/// and the fold left to a later writer.
pub fn fold(vault: &Vault, machine: &str) -> Result<()> {
    let Some((head, version)) = read_head(vault, machine)? else {
        return Ok(());
    };
    if head.points.len() < 2 {
        return Ok(());
    }
    let mut points = head.points.clone();
    points.sort_by(|a, b| a.order().cmp(&b.order()));
    let newest = points.pop();
    let mut moved = Vec::new();
    let merge = head.segments.len() + 1 >= MERGE_AT;
    if merge {
        for s in &head.segments {
            moved.extend(read_segment(vault, machine, s)?);
        }
    }
    moved.extend(points);
    let seg = write_segment(vault, machine, moved)?;
    let mut new = head.clone();
    new.points = newest.into_iter().collect();
    let replaced = if merge {
        std::mem::replace(&mut new.segments, vec![seg.clone()])
    } else {
        new.segments.push(seg.clone());
        Vec::new()
    };
    let name = head_name(vault, machine);
    if !vault.put_conditional(&name, seal_head(vault, &name, &new), Some(&version))? {
        vault.delete(&seg)?;
        return Ok(());
    }
    for s in replaced {
        vault.delete(&s)?;
    }
    Ok(())
}

/// Every point of `machine` the catalog knows, oldest first (entries:
/// extents left out). Pending entries count only when their manifest
/// exists. None when the machine has no head.
///
/// A segment named by the head and gone when read was replaced by a prune
/// or a fold (both switch the head first): the head is read again.
pub fn points(vault: &Vault, machine: &str) -> Result<Option<Vec<Manifest>>> {
    let mut tries = 0;
    loop {
        match points_once(vault, machine) {
            Err(VaultError::Missing { .. }) if tries < 5 => tries += 1,
            other => return other,
        }
    }
}

fn points_once(vault: &Vault, machine: &str) -> Result<Option<Vec<Manifest>>> {
    let Some((head, _)) = read_head(vault, machine)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for s in &head.segments {
        out.extend(read_segment(vault, machine, s)?);
    }
    out.extend(head.points);
    let known: BTreeSet<Id> = out.iter().map(|m| m.id).collect();
    for p in head.pending {
        if !known.contains(&p.id) && vault.exists(&point_name(&p.id))? {
            out.push(p);
        }
    }
    out.sort_by(|a, b| (&a.created, a.id).cmp(&(&b.created, b.id)));
    out.dedup_by_key(|m| m.id);
    // A head lists every owner's points of its machine name (by CAS, so
    // none overwrites another's); a handle sees its owner's only.
    out.retain(|m| vault.shows(m));
    Ok(Some(out))
}

/// The newest point of `machine`, read whole from its manifest (so it is
/// verified to exist): the newest entry whose manifest is there. Reads the
/// head, and the manifest; segments only when the head's own entries are
/// all gone.
pub fn newest(vault: &Vault, machine: &str) -> Result<Option<Manifest>> {
    let mut m = newest_seen(vault, machine, &mut Seen::default())?;
    if let Some(m) = &mut m {
        super::moves::apply(&super::moves::load(vault)?, m);
    }
    Ok(m)
}

/// [`newest`] for a writer: the manifest as written (addresses not moved:
/// a writer needs its id and disk maps, not what it is known by now), and
/// the head as read kept in `seen` for [`begin_seen`].
pub fn newest_seen(vault: &Vault, machine: &str, seen: &mut Seen) -> Result<Option<Manifest>> {
    if vault.format() < 2 {
        let (all, _) = manifest::list(vault, false)?;
        return Ok(all
            .into_iter()
            .filter(|m| m.machine == machine && vault.owns(m))
            .max_by(|a, b| a.order().cmp(&b.order())));
    }
    let Some((head, version)) = read_head(vault, machine)? else {
        return Ok(None);
    };
    seen.keep(machine, &head, version);
    // Only the handle's own points: a writer never builds on another
    // configuration's point (nor on one written before owners).
    let mut candidates: Vec<Manifest> = head
        .points
        .into_iter()
        .chain(head.pending)
        .filter(|m| vault.owns(m))
        .collect();
    candidates.sort_by(|a, b| b.order().cmp(&a.order()));
    for c in &candidates {
        match read_as_written(vault, &c.id) {
            Ok(m) => return Ok(Some(m)),
            Err(VaultError::Missing { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    // Only segments left (or nothing): the long way, still per machine.
    let mut all = points(vault, machine)?.unwrap_or_default();
    all.retain(|m| vault.owns(m));
    all.sort_by(|a, b| a.order().cmp(&b.order()));
    for c in all.iter().rev() {
        match read_as_written(vault, &c.id) {
            Ok(m) => return Ok(Some(m)),
            Err(VaultError::Missing { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// A point's manifest without `moves` applied (one request).
fn read_as_written(vault: &Vault, id: &Id) -> Result<Manifest> {
    let name = point_name(id);
    manifest::parse(vault, &name, &vault.get(&name)?)
}

/// The points of the given machines, oldest first, moves applied (the
/// addresses points are known by now). On a format 1 vault, the full
/// listing filtered. Entries have no extents.
pub fn list_machines(vault: &Vault, machines: &BTreeSet<String>) -> Result<Vec<Manifest>> {
    if vault.format() < 2 {
        let (all, _) = manifest::list(vault, false)?;
        return Ok(all
            .into_iter()
            .filter(|m| machines.contains(&m.machine))
            .map(|m| entry(&m))
            .collect());
    }
    let moves = super::moves::load(vault)?;
    let mut out = Vec::new();
    for m in machines {
        for mut e in points(vault, m)?.unwrap_or_default() {
            super::moves::apply(&moves, &mut e);
            out.push(e);
        }
    }
    out.sort_by(|a, b| (&a.created, a.id).cmp(&(&b.created, b.id)));
    Ok(out)
}

/// [`list_machines`], with each machine's newest entry checked against
/// its manifest (one HEAD request each): when that manifest is gone
/// (deleted outside standby), every entry of the machine is checked and
/// only points whose manifest exists are kept. For recovery, which must
/// not pick a point it cannot read when an older one is there.
pub fn list_machines_checked(vault: &Vault, machines: &BTreeSet<String>) -> Result<Vec<Manifest>> {
    let all = list_machines(vault, machines)?;
    let mut gone: BTreeSet<String> = BTreeSet::new();
    for m in machines {
        if let Some(newest) = all.iter().rev().find(|e| &e.machine == m)
            && !vault.exists(&point_name(&newest.id))?
        {
            gone.insert(m.clone());
        }
    }
    let mut kept = Vec::with_capacity(all.len());
    for e in all {
        if !gone.contains(&e.machine) || vault.exists(&point_name(&e.id))? {
            kept.push(e);
        }
    }
    Ok(kept)
}

/// Every point of the vault from the catalog (one listing of `heads/`,
/// then each head), oldest first, moves applied. Entries have no extents.
pub fn list_all(vault: &Vault) -> Result<Vec<Manifest>> {
    if vault.format() < 2 {
        let (all, _) = manifest::list(vault, false)?;
        return Ok(all.iter().map(entry).collect());
    }
    let moves = super::moves::load(vault)?;
    // A segment gone under the read was replaced by a prune or a fold
    // (both switch the head first): read again.
    let mut tries = 0;
    let mut out = loop {
        match list_all_once(vault) {
            Err(VaultError::Missing { .. }) if tries < 5 => tries += 1,
            other => break other?,
        }
    };
    for e in &mut out {
        super::moves::apply(&moves, e);
    }
    out.sort_by(|a, b| (&a.created, a.id).cmp(&(&b.created, b.id)));
    Ok(out)
}

/// Every head read once and every segment they name, a few requests in
/// flight: one listing plus one read per head and per segment, whatever
/// the number of points.
fn list_all_once(vault: &Vault) -> Result<Vec<Manifest>> {
    let names: Vec<String> = vault.list("heads")?.into_iter().map(|(n, _)| n).collect();
    let mut heads = Vec::new();
    for (name, got) in names.iter().zip(vault.get_many(&names)) {
        let bytes = match got {
            Ok(b) => b,
            // Deleted since the listing (its machine has no point left).
            Err(VaultError::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        let head: Head = decode(vault, name, &bytes)?;
        if head_name(vault, &head.machine) != *name {
            return Err(vault.damaged(name, "it is the head of another machine"));
        }
        check_entries(vault, name, &head.machine, &head.points)?;
        check_entries(vault, name, &head.machine, &head.pending)?;
        heads.push(head);
    }
    let segments: Vec<String> = heads.iter().flat_map(|h| h.segments.clone()).collect();
    let mut read = segments.iter().zip(vault.get_many(&segments));
    let mut out = Vec::new();
    for head in heads {
        let mut mine = Vec::new();
        for _ in &head.segments {
            let Some((name, got)) = read.next() else {
                break;
            };
            if !name.starts_with("catalog/") {
                return Err(vault.damaged(name, "a head names it as a segment"));
            }
            let seg: Segment = decode(vault, name, &got?)?;
            if seg.machine != head.machine {
                return Err(vault.damaged(name, "it is a segment of another machine"));
            }
            check_entries(vault, name, &head.machine, &seg.points)?;
            mine.extend(seg.points);
        }
        mine.extend(head.points);
        let known: BTreeSet<Id> = mine.iter().map(|m| m.id).collect();
        for p in head.pending {
            if !known.contains(&p.id) && vault.exists(&point_name(&p.id))? {
                mine.push(p);
            }
        }
        mine.sort_by(|a, b| (&a.created, a.id).cmp(&(&b.created, b.id)));
        mine.dedup_by_key(|m| m.id);
        mine.retain(|m| vault.shows(m));
        out.extend(mine);
    }
    Ok(out)
}

/// Write the heads of `machines` afresh from `all` (every manifest of the
/// vault, as read by the caller): no pending entries, older entries in one
/// segment. Machines with no point lose their head. For prune, `vault
/// claim` and renames (`moves`); `all` carries the addresses points are
/// known by now.
///
/// Writers take no lock, so a head may gain entries after the caller
/// listed the manifests: each head is switched by compare-and-swap, and
/// an entry it holds (in `points`, `pending` or a segment) whose id is
/// not in `listed` (the ids the caller read) stays, as pending, for the
/// next writer or prune to settle.
pub fn rebuild(
    vault: &Vault,
    machines: &BTreeSet<String>,
    all: &[Manifest],
    listed: &std::collections::HashSet<Id>,
) -> Result<BTreeSet<String>> {
    let mut written = BTreeSet::new();
    let mut by: BTreeMap<&str, Vec<Manifest>> = BTreeMap::new();
    for m in all.iter().filter(|m| machines.contains(&m.machine)) {
        by.entry(&m.machine).or_default().push(entry(m));
    }
    for machine in machines {
        let name = head_name(vault, machine);
        let es = by.remove(machine.as_str()).unwrap_or_default();
        let mut old_segments = Vec::new();
        let mut done = false;
        for _ in 0..100 {
            let old = read_head(vault, machine)?;
            let mut fresh: Vec<Manifest> = Vec::new();
            if let Some((h, _)) = &old {
                let mut theirs: Vec<Manifest> =
                    h.points.iter().chain(&h.pending).cloned().collect();
                for s in &h.segments {
                    match read_segment(vault, machine, s) {
                        Ok(ps) => theirs.extend(ps),
                        Err(VaultError::Missing { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                for e in theirs {
                    if !listed.contains(&e.id) && !fresh.iter().any(|f| f.id == e.id) {
                        fresh.push(e);
                    }
                }
            }
            let version = old.as_ref().map(|(_, v)| v.clone());
            if es.is_empty() && fresh.is_empty() {
                if old.is_some() {
                    vault.delete(&name)?;
                }
                old_segments = old.map(|(h, _)| h.segments).unwrap_or_default();
                done = true;
                break;
            }
            let mut es = es.clone();
            es.sort_by(|a, b| a.order().cmp(&b.order()));
            let mut head = Head {
                format: 1,
                machine: machine.clone(),
                pending: fresh,
                ..Default::default()
            };
            let mut segment = None;
            if es.len() >= FOLD_AT {
                let newest = es.pop();
                let s = write_segment(vault, machine, es)?;
                head.segments = vec![s.clone()];
                segment = Some(s);
                head.points = newest.into_iter().collect();
            } else {
                head.points = es;
            }
            let sealed = seal_head(vault, &name, &head);
            if vault
                .put_versioned(&name, sealed, version.as_ref())?
                .is_some()
            {
                written.extend(segment);
                old_segments = old.map(|(h, _)| h.segments).unwrap_or_default();
                done = true;
                break;
            }
            // A writer changed the head meanwhile: our segment is unnamed.
            if let Some(s) = segment {
                vault.delete(&s)?;
            }
        }
        if !done {
            return Err(vault.damaged(&name, "it kept changing under 100 attempts to rebuild it"));
        }
        // The old segments go only once the new head no longer names them.
        for s in old_segments {
            vault.delete(&s)?;
        }
    }
    Ok(written)
}

/// The machines that have a head (one listing, then each head).
pub fn machines(vault: &Vault) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for (name, _) in vault.list("heads")? {
        let bytes = match vault.get(&name) {
            Ok(b) => b,
            Err(VaultError::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        let head: Head = decode(vault, &name, &bytes)?;
        out.insert(head.machine);
    }
    Ok(out)
}

/// Make sure the vault keeps a catalog: a format 1 vault gets a head for
/// every machine from the full listing (created only where none exists, so
/// a concurrent upgrader or writer is never overwritten), then its config
/// says format 2. Once per vault; costs one full listing.
pub fn ensure(vault: &Vault) -> Result<()> {
    if vault.format() >= 2 {
        return Ok(());
    }
    let (all, _) = manifest::list_every(vault, false)?;
    let mut by: BTreeMap<&str, Vec<Manifest>> = BTreeMap::new();
    for m in &all {
        by.entry(&m.machine).or_default().push(entry(m));
    }
    for (machine, points) in by {
        let name = head_name(vault, machine);
        let head = Head {
            format: 1,
            machine: machine.to_string(),
            points,
            ..Default::default()
        };
        vault.put_conditional(&name, seal_head(vault, &name, &head), None)?;
    }
    vault.upgrade_format()
}

/// What `vault verify` finds wrong with the catalog, given every manifest:
/// (object, reason, affected point ids). A manifest missing from its
/// head, a confirmed entry without a manifest, an entry that says other
/// than its manifest, a head or segment that cannot be read.
/// `damaged`: points whose manifest exists but cannot be read (reported
/// on their own).
pub fn check(
    vault: &Vault,
    all: &[Manifest],
    damaged: &BTreeSet<Id>,
) -> Vec<(String, String, Vec<Id>)> {
    let mut problems = Vec::new();
    if vault.format() < 2 {
        return problems;
    }
    let mut machines: BTreeSet<String> = all.iter().map(|m| m.machine.clone()).collect();
    // Heads of machines with no manifest left.
    if let Ok(names) = vault.list("heads") {
        for (name, _) in names {
            match vault
                .get(&name)
                .and_then(|b| decode::<Head>(vault, &name, &b))
            {
                Ok(h) => {
                    machines.insert(h.machine);
                }
                Err(e) => problems.push((name, e.to_string(), vec![])),
            }
        }
    }
    // Entries name the machine as written; `all` carries moved names.
    let moves = super::moves::load(vault).unwrap_or_default();
    let by_id: BTreeMap<Id, &Manifest> = all.iter().map(|m| (m.id, m)).collect();
    let mut seen: BTreeSet<Id> = BTreeSet::new();
    for machine in &machines {
        let name = head_name(vault, machine);
        let head = match read_head(vault, machine) {
            Ok(Some((h, _))) => h,
            Ok(None) => continue,
            Err(e) => {
                problems.push((name, e.to_string(), vec![]));
                continue;
            }
        };
        let mut confirmed = head.points.clone();
        for s in &head.segments {
            match read_segment(vault, machine, s) {
                Ok(es) => confirmed.extend(es),
                Err(e) => problems.push((s.clone(), e.to_string(), vec![])),
            }
        }
        for mut e in confirmed {
            super::moves::apply(&moves, &mut e);
            seen.insert(e.id);
            match by_id.get(&e.id) {
                None if damaged.contains(&e.id) => {}
                None => problems.push((
                    name.clone(),
                    format!("it lists point {} whose manifest is missing", e.id.short()),
                    vec![e.id],
                )),
                Some(m) if entry(m) != e => problems.push((
                    name.clone(),
                    format!(
                        "its entry of point {} differs from the manifest",
                        e.id.short()
                    ),
                    vec![e.id],
                )),
                Some(_) => {}
            }
        }
        seen.extend(head.pending.iter().map(|p| p.id));
    }
    for m in all {
        if !seen.contains(&m.id) {
            problems.push((
                head_name(vault, &m.machine),
                format!("it does not list point {}", m.id.short()),
                vec![m.id],
            ));
        }
    }
    problems
}

/// The points of `machine` when given, else of the whole vault.
pub fn list_for(vault: &Vault, machine: Option<&str>) -> Result<Vec<Manifest>> {
    match machine {
        Some(m) => list_machines(vault, &BTreeSet::from([m.to_string()])),
        None => list_all(vault),
    }
}

/// [`list_for`], with the newest entry checked against its manifest (one
/// HEAD request): when that manifest is gone (deleted outside standby),
/// every entry is checked and only points whose manifest exists are kept.
/// For drift detection (`plan`'s refresh); `vault verify` checks them all.
pub fn list_checked(vault: &Vault, machine: Option<&str>) -> Result<Vec<Manifest>> {
    let all = list_for(vault, machine)?;
    match all.last() {
        Some(newest) if !vault.exists(&point_name(&newest.id))? => {
            let mut kept = Vec::new();
            for m in all {
                if vault.exists(&point_name(&m.id))? {
                    kept.push(m);
                }
            }
            Ok(kept)
        }
        _ => Ok(all),
    }
}
