//! Recovery points: the manifest (which machine, when, how consistent, and
//! per disk the map from offsets to blobs), reading and writing them, and
//! resolving a delta chain into one block map.
//!
//! A full map lists the data extents of the disk (everything else reads as
//! zeros). A delta map names its parent point and lists only the runs that
//! changed (a run without a blob became zeros). The manifest is written last:
//! a point exists exactly when its manifest does.

use super::Invalid;
use super::{Id, Result, Vault, VaultError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Change tracking granularity.
pub const BLOCK: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// An image of one instant, as a power cut would leave the disks.
    Crash,
    /// Taken while the applications were quiesced (freeze/thaw hooks).
    App,
    /// Read while the disks were being written: blocks of different
    /// moments. Kept and listed, never counted as a consistent point.
    Fuzzy,
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Consistency::Crash => "crash",
            Consistency::App => "app",
            Consistency::Fuzzy => "fuzzy",
        })
    }
}

/// `(disk offset, length, blob or None for zeros, offset inside the blob)`;
/// offsets and lengths are multiples of [`BLOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent(pub u64, pub u64, pub Option<Id>, pub u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskMap {
    pub size: u64,
    /// The point this map is a delta against; None: a full map.
    pub parent: Option<Id>,
    pub extents: Vec<Extent>,
}

/// What a replication read and wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Bytes of disk read (holes skipped).
    pub read: u64,
    /// Plain bytes of new blobs (changed and not already in the vault).
    pub new: u64,
    /// Sealed bytes written to the vault (packs, index, manifest).
    pub stored: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: Id,
    /// Protection address (`protection.db`).
    pub protection: String,
    /// Machine address (`machine.db`).
    pub machine: String,
    /// Consistency group, when the point was taken with its group.
    pub group: Option<String>,
    /// RFC 3339, UTC: the capture instant.
    pub created: String,
    pub consistency: Consistency,
    /// How long the machine stayed frozen, for app-consistent points.
    pub freeze_ms: Option<u64>,
    pub disks: BTreeMap<String, DiskMap>,
    pub stats: Stats,
    /// The site whose disks were read (`site.dr` for a reprotected
    /// machine's reverse points); absent in points written before standby
    /// recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The final point of a move (planned failover, failback): the site
    /// the machine runs at from this point on, its disks there restored
    /// from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moves_to: Option<String>,
    /// How a VM point was read through changed-block tracking (qemu
    /// machines only; see `replication::vm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cbt: Option<Cbt>,
    /// The point's place in its machine's chain: its parent's `seq` plus
    /// one (1 for a first point). What orders a machine's points, never
    /// the capture time (see [`Manifest::order`]); absent in points
    /// written before standby recorded it (they count as 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The lineage of the state (the configuration) that wrote the point;
    /// absent in points written before owners were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Who wrote the point: `host/pid/service` (service: the lease
    /// holder's id, `-` for a command that holds no lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// The index object (`index/<id>`) written with this point: where the
    /// blobs its replication stored are listed. A hint for readers that
    /// want a few blobs' places without loading the whole index (instant
    /// recovery); absent when the point stored no new blob or was written
    /// before standby recorded it, and stale after a compaction merged
    /// the object away (readers then fall back to the whole index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
}

/// A VM point's changed-block tracking: per disk how it was read, and the
/// snapshot's timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cbt {
    pub disks: BTreeMap<String, CbtDisk>,
    /// `guest-fsfreeze-freeze` call (hook included), ms; absent when the
    /// guest was not frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_call_ms: Option<f64>,
    /// The QMP transaction that opened the point-in-time view, ms.
    pub transaction_ms: f64,
    /// Between the first and the last VM's snapshot instant of the point's
    /// consistency group, ms (0 for one VM).
    pub spread_ms: f64,
    /// VMs snapshotted together at this point instant.
    pub group_vms: u32,
}

/// One VM disk of a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CbtDisk {
    /// `dirty` (only the extents the bitmap marked), `full` (a first
    /// point: every allocated extent) or `fallback` (tracking could not be
    /// trusted: the whole view read and compared by hash).
    pub mode: String,
    /// Why tracking was not trusted (mode `fallback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Dirty bytes QEMU counted in the bitmap generation this point read.
    pub dirty_bytes: u64,
    /// Bytes read from the VM over NBD.
    pub read_bytes: u64,
    /// NBD read requests those bytes took (one per run of blocks to read
    /// inside a 4 MiB chunk).
    #[serde(default)]
    pub read_requests: u64,
}

impl Cbt {
    /// Disks of this point that fell back to a whole read.
    pub fn fallbacks(&self) -> usize {
        self.disks.values().filter(|d| d.mode == "fallback").count()
    }
}

impl Manifest {
    pub fn created_at(&self) -> Option<time::OffsetDateTime> {
        time::OffsetDateTime::parse(
            &self.created,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()
    }

    /// How points of one machine are ordered, oldest first: by sequence
    /// (the chain), then capture time, then id. A point taken while its
    /// host's clock ran ahead therefore does not outrank the points taken
    /// after it.
    pub fn order(&self) -> (u64, &str, Id) {
        (self.seq.unwrap_or(0), self.created.as_str(), self.id)
    }

    /// Whether the point is dated after `now` (past
    /// [`super::clock::FUTURE_TOLERANCE`]): its writer's clock was ahead.
    /// Such a point is listed and flagged, never chosen as `latest`.
    pub fn in_future(&self, now: time::OffsetDateTime) -> bool {
        self.created_at()
            .is_some_and(|t| super::clock::in_future(t, now))
    }
}

/// The largest disk a manifest may describe (16 TiB). A bigger size is
/// damage or malice, and restoring it would allocate without bound.
pub const MAX_DISK: u64 = 16 << 40;

/// The largest plain blob an extent may point into (an index records plain
/// lengths as u32).
const MAX_BLOB: u64 = 1 << 32;

/// Parse an opened manifest and check it ([`Manifest::check`]): everything a
/// hostile or damaged manifest could use to write outside its target, size
/// a restore absurdly, or point at itself is refused here, before any
/// reader acts on it.
pub fn decode(plain: &[u8]) -> std::result::Result<Manifest, Invalid> {
    let m: Manifest =
        serde_json::from_slice(plain).map_err(|e| Invalid(format!("unreadable manifest: {e}")))?;
    m.check()?;
    Ok(m)
}

/// A name a restore may use as one path component: what the configuration
/// allows for block names (letters, digits, `_`, `-`), never `/` or `..`.
pub fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// An address of `kind` (`machine.db`, `protection.web["a"]`) whose name is
/// plain; a key, if any, is only used inside quotes.
fn plain_address(s: &str, kind: crate::model::Kind) -> bool {
    s.parse::<crate::model::Address>()
        .is_ok_and(|a| a.kind == kind && plain_name(&a.name))
}

impl Manifest {
    /// Refuse what no capture writes: a format this build does not know,
    /// names that are not plain (a disk name is a path component on
    /// restore), disks over [`MAX_DISK`], extents off the 4 KiB grid or past
    /// the disk's end, and a disk that is its own parent.
    pub fn check(&self) -> std::result::Result<(), Invalid> {
        if self.format != 1 {
            return Err(Invalid(format!(
                "manifest format {} is not one this build reads (1)",
                self.format
            )));
        }
        if !plain_address(&self.protection, crate::model::Kind::Protection) {
            return Err(Invalid(format!(
                "the manifest names protection {:?}, not a protection address",
                self.protection
            )));
        }
        if !plain_address(&self.machine, crate::model::Kind::Machine) {
            return Err(Invalid(format!(
                "the manifest names machine {:?}, not a machine address",
                self.machine
            )));
        }
        if let Some(g) = &self.group
            && !plain_name(g)
        {
            return Err(Invalid(format!(
                "the manifest names consistency group {g:?}, not a plain name"
            )));
        }
        if self.created_at().is_none() {
            return Err(Invalid(format!(
                "its capture time {:?} is not RFC 3339",
                self.created
            )));
        }
        let plain_index = |i: &str| {
            i.strip_prefix("index/")
                .and_then(Id::parse)
                .is_some_and(|id| i.ends_with(&id.hex()))
        };
        if let Some(i) = &self.index
            && !plain_index(i)
        {
            return Err(Invalid(format!(
                "the manifest names index object {i:?}, not index/<64 hex digits>"
            )));
        }
        for (disk, map) in &self.disks {
            if !plain_name(disk) {
                return Err(Invalid(format!(
                    "it names disk {disk:?}: a disk name must be letters, digits, _ and - (a restore must never write outside its target)"
                )));
            }
            if map.size > MAX_DISK {
                return Err(Invalid(format!(
                    "disk {disk} claims {} bytes, more than the 16 TiB limit",
                    map.size
                )));
            }
            if map.parent == Some(self.id) {
                return Err(Invalid(format!(
                    "disk {disk} names its own point as parent (a reference cycle)"
                )));
            }
            let end = map.size.div_ceil(BLOCK) * BLOCK;
            for &Extent(off, len, blob, boff) in &map.extents {
                let past = off.checked_add(len).is_none_or(|e| e > end);
                if off % BLOCK != 0 || boff % BLOCK != 0 || len == 0 || past {
                    return Err(Invalid(format!(
                        "disk {disk}: extent {off}+{len} is off the 4 KiB grid or runs past the disk's end ({} bytes)",
                        map.size
                    )));
                }
                if blob.is_some() && boff.checked_add(len).is_none_or(|e| e > MAX_BLOB) {
                    return Err(Invalid(format!(
                        "disk {disk}: extent {off}+{len} reads past any blob (at {boff})"
                    )));
                }
            }
        }
        Ok(())
    }
}

pub fn point_name(id: &Id) -> String {
    format!("points/{}", id.hex())
}

/// Write (or, for prune's folding, replace) a point manifest.
pub fn write(vault: &Vault, m: &Manifest) -> Result<()> {
    let plain = serde_json::to_vec(m).unwrap_or_default();
    vault.put_meta(&point_name(&m.id), &plain)
}

pub fn parse(vault: &Vault, name: &str, sealed: &[u8]) -> Result<Manifest> {
    let plain = vault.open_meta(name, sealed)?;
    let m = decode(&plain).map_err(|e| vault.damaged(name, e))?;
    if point_name(&m.id) != name {
        return Err(vault.damaged(name, "the manifest names another point"));
    }
    Ok(m)
}

/// A manifest as stored, without renames applied.
pub fn read_stored(vault: &Vault, id: &Id) -> Result<Manifest> {
    let name = point_name(id);
    let b = vault.get(&name)?;
    parse(vault, &name, &b)
}

pub fn read(vault: &Vault, id: &Id) -> Result<Manifest> {
    let name = point_name(id);
    let b = vault.get(&name)?;
    let mut m = parse(vault, &name, &b)?;
    super::moves::apply(&super::moves::load(vault)?, &mut m);
    Ok(m)
}

/// Every point this handle shows ([`Vault::shows`]: its owner's), oldest
/// first. With `tolerant`, unreadable manifests are returned as errors
/// instead of failing the listing.
pub fn list(vault: &Vault, tolerant: bool) -> Result<(Vec<Manifest>, Vec<VaultError>)> {
    let (mut all, bad) = list_every(vault, tolerant)?;
    all.retain(|m| vault.shows(m));
    Ok((all, bad))
}

/// Every point of every owner, oldest first: for what must see the whole
/// vault (prune's live data, verify, the catalog's upgrade and rebuilds).
pub fn list_every(vault: &Vault, tolerant: bool) -> Result<(Vec<Manifest>, Vec<VaultError>)> {
    let names: Vec<String> = vault.list("points")?.into_iter().map(|(n, _)| n).collect();
    // Renamed protections and machines: the names points are known by now.
    let moves = super::moves::load(vault)?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (name, got) in names.iter().zip(vault.get_many(&names)) {
        match got.and_then(|b| parse(vault, name, &b)) {
            Ok(mut m) => {
                super::moves::apply(&moves, &mut m);
                out.push(m)
            }
            // Deleted since the listing: a prune dropped the point, which
            // no longer exists. Not damage.
            Err(VaultError::Missing { .. }) => {}
            Err(e) if tolerant => bad.push(e),
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| (&a.created, a.id).cmp(&(&b.created, b.id)));
    Ok((out, bad))
}

/// Find a point by the point grammar ([`super::query::PointQuery`]:
/// `latest`, `latest-app`, an id or unique prefix, an RFC 3339 time),
/// only points of `machine` when given.
pub fn find<'a>(
    vault: &Vault,
    points: &'a [Manifest],
    query: &str,
    machine: Option<&str>,
) -> Result<&'a Manifest> {
    use super::query::{PointQuery, Unmatched};
    let not_found = || VaultError::PointNotFound {
        url: vault.url.clone(),
        query: query.to_string(),
    };
    let q: PointQuery = query.parse().map_err(|_| not_found())?;
    q.select(points, machine).map_err(|u| match u {
        Unmatched::None => not_found(),
        Unmatched::Ambiguous(ids) => VaultError::AmbiguousPoint {
            query: query.to_string(),
            candidates: ids.join(", "),
        },
    })
}

/// A disk as of one point: for each block, which blob holds it.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub size: u64,
    pub blobs: Vec<Id>,
    /// Per block: `blob index << 32 | block inside the blob`, or [`ZERO`].
    pub blocks: Vec<u64>,
}

pub const ZERO: u64 = u64::MAX;

impl Resolved {
    fn apply(
        &mut self,
        map: &DiskMap,
        seen: &mut HashMap<Id, u32>,
    ) -> std::result::Result<(), String> {
        let nblocks = map.size.div_ceil(BLOCK) as usize;
        if map.parent.is_none() {
            self.blocks.clear();
        }
        self.blocks.resize(nblocks, ZERO);
        self.size = map.size;
        for &Extent(off, len, blob, boff) in &map.extents {
            if off % BLOCK != 0
                || boff % BLOCK != 0
                || off.saturating_add(len) > nblocks as u64 * BLOCK
            {
                return Err(format!("extent at {off}+{len} is out of line"));
            }
            let first = (off / BLOCK) as usize;
            let count = len.div_ceil(BLOCK) as usize;
            let n = blob.map(|b| self_index(&mut self.blobs, seen, b));
            for i in 0..count {
                self.blocks[first + i] = match n {
                    None => ZERO,
                    Some(n) => (n as u64) << 32 | (boff / BLOCK + i as u64),
                };
            }
        }
        Ok(())
    }

    /// Contiguous runs `(first block, count, blob index, first block in blob)`.
    pub fn runs(&self) -> Vec<(u64, u64, u32, u64)> {
        let mut out: Vec<(u64, u64, u32, u64)> = Vec::new();
        for (i, &v) in self.blocks.iter().enumerate() {
            if v == ZERO {
                continue;
            }
            let (b, k) = ((v >> 32) as u32, v & 0xffff_ffff);
            if let Some(last) = out.last_mut()
                && last.2 == b
                && last.0 + last.1 == i as u64
                && last.3 + last.1 == k
            {
                last.1 += 1;
                continue;
            }
            out.push((i as u64, 1, b, k));
        }
        out
    }

    /// The delta map that turns `base` (resolved with the same blob table)
    /// into this disk.
    pub fn delta_against(&self, base: &Resolved, parent: Id) -> DiskMap {
        let mut extents: Vec<Extent> = Vec::new();
        for (i, &v) in self.blocks.iter().enumerate() {
            if base.blocks.get(i).copied().unwrap_or(ZERO) == v {
                continue;
            }
            let blob = (v != ZERO).then(|| self.blobs[(v >> 32) as usize]);
            let k = if v == ZERO { 0 } else { v & 0xffff_ffff };
            let off = i as u64 * BLOCK;
            if let Some(last) = extents.last_mut() {
                let contiguous = last.0 + last.1 == off && last.2 == blob;
                if contiguous && (blob.is_none() || last.3 + last.1 == k * BLOCK) {
                    last.1 += BLOCK;
                    continue;
                }
            }
            extents.push(Extent(off, BLOCK, blob, k * BLOCK));
        }
        DiskMap {
            size: self.size,
            parent: Some(parent),
            extents,
        }
    }

    /// The full map equivalent to this resolved disk.
    pub fn to_full(&self) -> DiskMap {
        let extents = self
            .runs()
            .into_iter()
            .map(|(first, n, b, k)| {
                Extent(
                    first * BLOCK,
                    n * BLOCK,
                    Some(self.blobs[b as usize]),
                    k * BLOCK,
                )
            })
            .collect();
        DiskMap {
            size: self.size,
            parent: None,
            extents,
        }
    }
}

fn self_index(blobs: &mut Vec<Id>, seen: &mut HashMap<Id, u32>, b: Id) -> u32 {
    *seen.entry(b).or_insert_with(|| {
        blobs.push(b);
        (blobs.len() - 1) as u32
    })
}

/// The chain of maps for `disk` from its full base to `point`, oldest first.
///
/// A reader takes no lock, so a prune may run meanwhile: it rewrites kept
/// points whose ancestors it drops (folding) before deleting those. When an
/// ancestor is missing, `point`'s manifest is read again: folded, the chain
/// restarts from it; gone, the point was pruned
/// ([`VaultError::Pruned`]); unchanged, the ancestor really is missing.
pub fn chain(
    vault: &Vault,
    point: &Manifest,
    disk: &str,
    cache: &mut HashMap<Id, Manifest>,
) -> Result<Vec<(Id, DiskMap)>> {
    let mut current = point.clone();
    // Set once a walk read every manifest afresh (nothing from the cache).
    let mut fresh_walk = false;
    for _ in 0..5 {
        match chain_once(vault, &current, disk, cache) {
            Err(VaultError::Missing { url, object }) => {
                let fresh = match read(vault, &point.id) {
                    Ok(m) => m,
                    Err(VaultError::Missing { .. }) => {
                        return Err(VaultError::Pruned {
                            url,
                            point: point.id.short(),
                        });
                    }
                    Err(e) => return Err(e),
                };
                // A prune may have folded any point of the chain (the
                // oldest it keeps becomes a full map before its parents go),
                // not only this one: only a walk read wholly afresh that
                // still misses an object is damage.
                if fresh.disks == current.disks && fresh_walk {
                    return Err(VaultError::Missing { url, object });
                }
                fresh_walk = true;
                cache.clear();
                current = fresh;
            }
            other => return other,
        }
    }
    Err(vault.damaged(&point_name(&point.id), "it kept changing while being read"))
}

fn chain_once(
    vault: &Vault,
    point: &Manifest,
    disk: &str,
    cache: &mut HashMap<Id, Manifest>,
) -> Result<Vec<(Id, DiskMap)>> {
    let mut out = Vec::new();
    let mut cur = point.clone();
    loop {
        let map = cur
            .disks
            .get(disk)
            .cloned()
            .ok_or_else(|| VaultError::NoSuchDisk {
                point: cur.id.short(),
                disk: disk.to_string(),
                have: cur.disks.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        let parent = map.parent;
        out.push((cur.id, map));
        let Some(p) = parent else { break };
        if out.len() > 100_000 || out.iter().any(|(id, _)| *id == p) {
            return Err(vault.damaged(&point_name(&point.id), "its delta chain loops"));
        }
        cur = match cache.get(&p) {
            Some(m) => m.clone(),
            None => {
                let m = read(vault, &p)?;
                cache.insert(p, m.clone());
                m
            }
        };
    }
    out.reverse();
    Ok(out)
}

/// Resolve `disk` of `point` into a block map.
pub fn resolve(
    vault: &Vault,
    point: &Manifest,
    disk: &str,
    cache: &mut HashMap<Id, Manifest>,
) -> Result<Resolved> {
    resolve_with(
        vault,
        point,
        disk,
        cache,
        Resolved::default(),
        &mut HashMap::new(),
    )
}

/// Whether points `a` and `b` hold the same data: the same disks, each of
/// the same size with the same blob at every block (blobs are named by
/// their content, so equal maps are equal bytes). Costs one block map
/// per disk (8 bytes per 4 KiB block).
pub fn same_data(vault: &Vault, a: &Manifest, b: &Manifest) -> Result<bool> {
    if a.disks.len() != b.disks.len() || a.disks.keys().ne(b.disks.keys()) {
        return Ok(false);
    }
    let mut cache = HashMap::new();
    for disk in a.disks.keys() {
        let ra = resolve(vault, a, disk, &mut cache)?;
        let rb = resolve(vault, b, disk, &mut cache)?;
        // Each map has its own blob table: compare blob ids, not indexes.
        let blob = |r: &Resolved, v: u64| {
            (v != ZERO).then(|| (r.blobs[(v >> 32) as usize], v & 0xffff_ffff))
        };
        if ra.size != rb.size
            || ra.blocks.len() != rb.blocks.len()
            || ra
                .blocks
                .iter()
                .zip(&rb.blocks)
                .any(|(&x, &y)| blob(&ra, x) != blob(&rb, y))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Memory this process can still use, in bytes: the least of the host's
/// `MemAvailable`, its memory cgroup's limit minus usage (v2 or v1, the
/// tightest of its ancestors too) and its address-space limit
/// (`RLIMIT_AS`). None where none can be read.
fn memory_available() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    [
        mem_available(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default()),
        cgroup_available(Path::new("/sys/fs/cgroup"), &cgroups),
        address_space_limit(),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// `MemAvailable` of a /proc/meminfo text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Limit minus usage of the memory cgroup `proc_cgroup` (a /proc/self/cgroup
/// text) names, under the cgroup mount `root`: the least over the group and
/// its ancestors that have a limit. In a container the group's own path may
/// not exist in its namespace's view: then the mount's root is the group.
fn cgroup_available(root: &Path, proc_cgroup: &str) -> Option<u64> {
    let read = |p: &Path| -> Option<u64> {
        let t = std::fs::read_to_string(p).ok()?;
        let v: u64 = t.trim().parse().ok()?;
        // cgroup v1 writes "no limit" as a huge page-rounded number.
        (v < 1 << 60).then_some(v)
    };
    let mut best: Option<u64> = None;
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (base, limit, usage) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                root.join("memory"),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        let own = base.join(path.trim_start_matches('/'));
        let mut dir = if own.is_dir() { own } else { base.clone() };
        loop {
            if let (Some(l), Some(u)) = (read(&dir.join(limit)), read(&dir.join(usage))) {
                let left = l.saturating_sub(u);
                best = Some(best.map_or(left, |b| b.min(left)));
            }
            if dir == base || !dir.pop() || !dir.starts_with(&base) {
                break;
            }
        }
    }
    best
}

/// `RLIMIT_AS` in bytes, None when unlimited.
fn address_space_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) };
    (r == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Resolve into `r`, sharing its blob table (and `seen`) with earlier
/// resolutions so block values compare across points.
pub fn resolve_with(
    vault: &Vault,
    point: &Manifest,
    disk: &str,
    cache: &mut HashMap<Id, Manifest>,
    mut r: Resolved,
    seen: &mut HashMap<Id, u32>,
) -> Result<Resolved> {
    let chain = chain(vault, point, disk, cache)?;
    // The block map holds 8 bytes per 4 KiB block: refuse, rather than be
    // killed for, a (possibly hostile) size that cannot fit in memory.
    let size = chain.iter().map(|(_, m)| m.size).max().unwrap_or(0);
    let need = size.div_ceil(BLOCK).saturating_mul(8);
    if let Some(available) = memory_available()
        && need > available / 4 * 3
    {
        return Err(VaultError::TooBigToMap {
            point: point.id.short(),
            disk: disk.to_string(),
            size,
            need,
            available,
        });
    }
    r.blocks.clear();
    for (id, map) in &chain {
        r.apply(map, seen)
            .map_err(|e| vault.damaged(&point_name(id), e))?;
    }
    Ok(r)
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemTotal: 100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(mem_available(text), Some(2 << 20));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn a_cgroup_v2_limit_counts_minus_usage_and_ancestors() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        write(root, "a/memory.max", "max\n");
        write(root, "a/memory.current", "5\n");
        write(root, "a/b/memory.max", "1073741824\n");
        write(root, "a/b/memory.current", "73741824\n");
        assert_eq!(cgroup_available(root, "0::/a/b\n"), Some(1_000_000_000));
        // A tighter ancestor wins.
        write(root, "a/memory.max", "600000000\n");
        write(root, "a/memory.current", "100000000\n");
        assert_eq!(cgroup_available(root, "0::/a/b\n"), Some(500_000_000));
        // No limit anywhere.
        let e = tempfile::tempdir().unwrap();
        write(e.path(), "x/memory.max", "max\n");
        write(e.path(), "x/memory.current", "1\n");
        assert_eq!(cgroup_available(e.path(), "0::/x\n"), None);
    }

    #[test]
    fn a_cgroup_v1_limit_and_a_namespaced_path() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        // The group's own path is not visible: the mount root is the group.
        write(root, "memory/memory.limit_in_bytes", "2147483648\n");
        write(root, "memory/memory.usage_in_bytes", "147483648\n");
        let text = "5:cpu,cpuacct:/x\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(cgroup_available(root, text), Some(2_000_000_000));
        // v1's "unlimited" is no limit.
        write(
            root,
            "memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        assert_eq!(cgroup_available(root, text), None);
    }
}
