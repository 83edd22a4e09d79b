//! Random access to one disk of a recovery point, straight from the vault:
//! the point's chain resolved once into its data runs (extents -> blob),
//! each blob fetched on first use (one ranged read of its pack), opened
//! and kept in a bounded cache. Zero blocks and holes are answered without
//! fetching anything. What instant recovery's NBD export serves.

use crate::vault::manifest::{self, BLOCK, DiskMap, Extent, Manifest};
use crate::vault::read::PackRead;
use crate::vault::{Id, Location, Vault, VaultError, blob_context, index, pack_name};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of a reader, in bytes.
#[derive(Debug, Default)]
pub struct Counters {
    /// Handed to callers (zeros included).
    pub served: AtomicU64,
    /// Plain bytes of the blobs fetched from the vault (a blob fetched
    /// again after it left the cache counts again).
    pub fetched: AtomicU64,
    /// Number of blob fetches.
    pub fetches: AtomicU64,
}

/// Opened blobs, least recently used evicted past `budget` bytes.
struct Cache {
    budget: u64,
    bytes: u64,
    tick: u64,
    blobs: HashMap<u32, (Arc<Vec<u8>>, u64)>,
}

impl Cache {
    fn get(&mut self, b: u32) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let t = self.tick;
        self.blobs.get_mut(&b).map(|(v, used)| {
            *used = t;
            Arc::clone(v)
        })
    }

    fn put(&mut self, b: u32, plain: Arc<Vec<u8>>) {
        self.tick += 1;
        self.bytes += plain.len() as u64;
        if let Some((old, _)) = self.blobs.insert(b, (plain, self.tick)) {
            self.bytes -= old.len() as u64;
        }
        while self.bytes > self.budget && self.blobs.len() > 1 {
            let Some((&oldest, _)) = self.blobs.iter().min_by_key(|(_, (_, used))| *used) else {
                break;
            };
            if let Some((v, _)) = self.blobs.remove(&oldest) {
                self.bytes -= v.len() as u64;
            }
        }
    }
}

/// A run of data blocks: `(length in blocks, blob index, first block in
/// the blob)`, keyed by its first block on the disk.
type Runs = BTreeMap<u64, (u64, u32, u64)>;

/// One disk of one point, readable at any offset.
pub struct PointReader {
    vault: Arc<Vault>,
    point: Id,
    size: u64,
    blobs: Vec<Id>,
    locs: Vec<Location>,
    /// The disk's data runs (everything else reads as zeros): built from
    /// the chain's extents, so its cost follows the extents, never the
    /// disk's size.
    runs: Runs,
    /// Bytes of data (not zero) blocks, counted once.
    data: u64,
    cache: Mutex<Cache>,
    pub counters: Counters,
    /// How the blobs were found: index objects read.
    pub index_objects: u64,
}

/// Makes blocks `first..first + count` of `runs` read as `new` (a blob
/// index and its first block) or zeros: runs overlapping them are cut.
fn overwrite(runs: &mut Runs, first: u64, count: u64, new: Option<(u32, u64)>) {
    let end = first + count;
    if let Some((&s, &(l, b, k))) = runs.range(..first).next_back()
        && s + l > first
    {
        runs.insert(s, (first - s, b, k));
        if s + l > end {
            runs.insert(end, (s + l - end, b, k + (end - s)));
        }
    }
    let inside: Vec<u64> = runs.range(first..end).map(|(&s, _)| s).collect();
    for s in inside {
        if let Some((l, b, k)) = runs.remove(&s)
            && s + l > end
        {
            runs.insert(end, (s + l - end, b, k + (end - s)));
        }
    }
    if let Some((b, k)) = new {
        runs.insert(first, (count, b, k));
    }
}

/// The data runs of `disk` as of the last map of `chain` (full map first,
/// then deltas), with the blob table they index.
fn runs_of(chain: &[(Id, DiskMap)]) -> Result<(u64, Vec<Id>, Runs), (Id, String)> {
    let mut runs = Runs::new();
    let mut blobs: Vec<Id> = Vec::new();
    let mut seen: HashMap<Id, u32> = HashMap::new();
    let mut size = 0;
    for (id, map) in chain {
        if map.parent.is_none() {
            runs.clear();
        }
        size = map.size;
        let nblocks = map.size.div_ceil(BLOCK);
        // A delta may shrink the disk: what lies past its end is gone.
        overwrite(&mut runs, nblocks, u64::MAX / BLOCK - nblocks, None);
        for &Extent(off, len, blob, boff) in &map.extents {
            if off % BLOCK != 0 || boff % BLOCK != 0 || off.saturating_add(len) > nblocks * BLOCK {
                return Err((*id, format!("extent at {off}+{len} is out of line")));
            }
            let count = len.div_ceil(BLOCK);
            if count == 0 {
                continue;
            }
            let new = blob.map(|b| {
                let n = *seen.entry(b).or_insert_with(|| {
                    blobs.push(b);
                    (blobs.len() - 1) as u32
                });
                (n, boff / BLOCK)
            });
            overwrite(&mut runs, off / BLOCK, count, new);
        }
    }
    Ok((size, blobs, runs))
}

/// Where each of `blobs` is stored: first from the index objects the
/// chain's manifests name (`hints`, a few objects whatever the vault
/// holds), then, for blobs those do not list (deduplicated against other
/// points, or a compaction merged the object away), from the whole index.
/// Returns the places and how many index objects were read.
fn locate(
    vault: &Vault,
    point: &Manifest,
    blobs: &[Id],
    hints: &[String],
) -> Result<(Vec<Location>, u64), VaultError> {
    let wanted: HashSet<Id> = blobs.iter().copied().collect();
    let mut found: HashMap<Id, Location> = HashMap::new();
    let mut read = 0u64;
    for name in hints {
        if found.len() == wanted.len() {
            break;
        }
        // A stale or unreadable hint only costs the fallback below.
        let Ok(sealed) = vault.get(name) else {
            continue;
        };
        read += 1;
        let Ok(packs) = vault
            .open_meta(name, &sealed)
            .and_then(|plain| index::decode(&plain).map_err(|e| vault.damaged(name, e)))
        else {
            continue;
        };
        for p in packs {
            for (blob, offset, len, raw) in p.blobs {
                if wanted.contains(&blob) {
                    found.insert(
                        blob,
                        Location {
                            pack: p.id,
                            offset,
                            len,
                            raw,
                        },
                    );
                }
            }
        }
    }
    let full = if found.len() < wanted.len() {
        let idx = vault.full_index()?;
        read += idx.files.len() as u64;
        Some(idx)
    } else {
        None
    };
    let locs = blobs
        .iter()
        .map(|b| {
            found
                .get(b)
                .or_else(|| full.as_ref().and_then(|i| i.blobs.get(b)))
                .copied()
                .ok_or_else(|| VaultError::Missing {
                    url: vault.url.clone(),
                    object: format!("blob {} (needed by point {})", b.short(), point.id.short()),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((locs, read))
}

impl PointReader {
    /// Resolves `disk` of `point` (its chain of deltas) into its data runs
    /// and looks up where each of its blobs is stored (the index objects
    /// the chain names, the whole index only for blobs they miss).
    /// `cache_bytes`: how much opened blob data to keep (at least one blob
    /// is always kept). Nothing here walks the disk block by block.
    ///
    /// Errors: the disk is not in the point, a manifest of the chain or a
    /// blob's index entry is missing or damaged.
    pub fn open(
        vault: Arc<Vault>,
        point: &Manifest,
        disk: &str,
        cache_bytes: u64,
    ) -> Result<PointReader, VaultError> {
        if !point.disks.contains_key(disk) {
            return Err(VaultError::NoSuchDisk {
                point: point.id.short(),
                disk: disk.to_string(),
                have: point.disks.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        let mut manifests = HashMap::new();
        let chain = manifest::chain(&vault, point, disk, &mut manifests)?;
        let (size, blobs, runs) =
            runs_of(&chain).map_err(|(id, e)| vault.damaged(&manifest::point_name(&id), e))?;
        // Newest first: a point's blobs are likelier in its own index.
        let hints: Vec<String> = chain
            .iter()
            .rev()
            .filter_map(|(id, _)| {
                if *id == point.id {
                    point.index.clone()
                } else {
                    manifests.get(id).and_then(|m| m.index.clone())
                }
            })
            .collect();
        let (locs, index_objects) = locate(&vault, point, &blobs, &hints)?;
        let data = runs.values().map(|(l, _, _)| l).sum::<u64>() * BLOCK;
        Ok(PointReader {
            data,
            vault,
            point: point.id,
            size,
            blobs,
            locs,
            runs,
            cache: Mutex::new(Cache {
                budget: cache_bytes,
                bytes: 0,
                tick: 0,
                blobs: HashMap::new(),
            }),
            counters: Counters::default(),
            index_objects,
        })
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of data (not zero) blocks in the disk.
    pub fn data_bytes(&self) -> u64 {
        self.data
    }

    /// Fills `buf` with the disk's bytes from `offset`; a range past the
    /// end of the disk is an error (NBD clients never ask for one).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VaultError> {
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.size {
            return Err(self.vault.damaged(
                &manifest::point_name(&self.point),
                format!(
                    "read of {offset}+{} past the disk's {} bytes",
                    buf.len(),
                    self.size
                ),
            ));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / BLOCK;
            let within = pos % BLOCK;
            let left = (buf.len() - done) as u64;
            let run = self
                .runs
                .range(..=block)
                .next_back()
                .filter(|(s, (l, _, _))| **s + *l > block);
            let n = match run {
                None => {
                    // Zeros up to the next run (or the end).
                    let next = self
                        .runs
                        .range(block + 1..)
                        .next()
                        .map_or(u64::MAX, |(s, _)| s * BLOCK);
                    let n = (next - pos).min(left) as usize;
                    buf[done..done + n].fill(0);
                    n
                }
                Some((&s, &(l, b, k))) => {
                    let n = ((s + l) * BLOCK - pos).min(left) as usize;
                    let plain = self.blob(b)?;
                    let a = ((k + block - s) * BLOCK + within) as usize;
                    let src = plain.get(a..a + n).ok_or_else(|| {
                        self.vault.damaged(
                            &pack_name(&self.locs[b as usize].pack),
                            format!(
                                "blob {} is shorter than the map says",
                                self.blobs[b as usize].short()
                            ),
                        )
                    })?;
                    buf[done..done + n].copy_from_slice(src);
                    n
                }
            };
            done += n;
        }
        self.counters
            .served
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Blob `b` opened: from the cache, else fetched and opened.
    fn blob(&self, b: u32) -> Result<Arc<Vec<u8>>, VaultError> {
        if let Some(p) = self.cache.lock().ok().and_then(|mut c| c.get(b)) {
            return Ok(p);
        }
        let loc = self.locs[b as usize];
        let id = self.blobs[b as usize];
        let read = PackRead {
            pack: loc.pack,
            ranges: std::iter::once(loc.offset..loc.offset + loc.len as u64).collect(),
            whole: false,
        };
        let got: Arc<Mutex<Option<crate::vault::Result<Vec<bytes::Bytes>>>>> =
            Arc::new(Mutex::new(None));
        let slot = Arc::clone(&got);
        self.vault
            .read_packs(&[read], 1, &self.point, move |_, item| {
                if let Ok(mut s) = slot.lock() {
                    *s = Some(item);
                }
                true
            });
        let name = pack_name(&loc.pack);
        let parts = got
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or_else(|| Err(self.vault.damaged(&name, "the read delivered nothing")))?;
        let sealed = parts
            .first()
            .ok_or_else(|| self.vault.damaged(&name, "no bytes for the blob"))?;
        let plain = self
            .vault
            .data_sealer()
            .open(sealed, &blob_context(&id))
            .map_err(|e| {
                self.vault
                    .damaged(&name, format!("blob {} in it: {e}", id.short()))
            })?
            .into_vec();
        self.counters
            .fetched
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        let plain = Arc::new(plain);
        if let Ok(mut c) = self.cache.lock() {
            c.put(b, Arc::clone(&plain));
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-block map the runs replace, built block by block.
    fn naive(chain: &[(Id, DiskMap)]) -> Vec<Option<(Id, u64)>> {
        let mut blocks: Vec<Option<(Id, u64)>> = Vec::new();
        for (_, map) in chain {
            if map.parent.is_none() {
                blocks.clear();
            }
            blocks.resize(map.size.div_ceil(BLOCK) as usize, None);
            for &Extent(off, len, blob, boff) in &map.extents {
                for i in 0..len / BLOCK {
                    blocks[(off / BLOCK + i) as usize] = blob.map(|b| (b, boff / BLOCK + i));
                }
            }
        }
        blocks
    }

    /// Random chains (a full map, then deltas that overwrite, zero and
    /// resize) resolve to the same disk as the block-by-block map, and
    /// the runs number no more than the extents.
    #[test]
    fn runs_equal_the_block_map_for_random_chains() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..300 {
            let mut chain = Vec::new();
            let mut extents_total = 0;
            for depth in 0..1 + rnd(5) {
                let nblocks = 1 + rnd(200);
                let mut extents = Vec::new();
                let mut at = rnd(4);
                while at < nblocks {
                    let len = (1 + rnd(20)).min(nblocks - at);
                    let blob = (rnd(4) != 0).then(|| Id([rnd(6) as u8; 32]));
                    extents.push(Extent(at * BLOCK, len * BLOCK, blob, rnd(30) * BLOCK));
                    at += len + rnd(10);
                }
                extents_total += extents.len();
                let parent = (depth > 0).then_some(Id([0xee; 32]));
                chain.push((
                    Id([depth as u8; 32]),
                    DiskMap {
                        size: nblocks * BLOCK,
                        parent,
                        extents,
                    },
                ));
            }
            let (size, blobs, runs) = runs_of(&chain).unwrap();
            let want = naive(&chain);
            assert_eq!(size.div_ceil(BLOCK), want.len() as u64);
            assert!(runs.len() <= extents_total * 2 + 1);
            let mut got = vec![None; want.len()];
            for (&s, &(l, b, k)) in &runs {
                for i in 0..l {
                    assert!(got[(s + i) as usize].is_none(), "runs overlap");
                    got[(s + i) as usize] = Some((blobs[b as usize], k + i));
                }
            }
            assert_eq!(got, want);
        }
    }
}
