//! Random access to one disk of a recovery point, straight from the vault:
//! the point's chain resolved once into a block map (4 KiB block -> blob),
//! each blob fetched on first use (one ranged read of its pack), opened
//! and kept in a bounded cache. Zero blocks and holes are answered without
//! fetching anything. What instant recovery's NBD export serves.

use crate::vault::manifest::{self, BLOCK, Manifest, ZERO};
use crate::vault::read::PackRead;
use crate::vault::{Id, Location, Vault, VaultError, blob_context, pack_name};
use std::collections::HashMap;
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

/// One disk of one point, readable at any offset.
pub struct PointReader {
    vault: Arc<Vault>,
    point: Id,
    size: u64,
    blobs: Vec<Id>,
    locs: Vec<Location>,
    /// Per 4 KiB block: `blob index << 32 | block in blob`, or [`ZERO`].
    blocks: Vec<u64>,
    /// Bytes of data (not zero) blocks, counted once.
    data: u64,
    cache: Mutex<Cache>,
    pub counters: Counters,
}

impl PointReader {
    /// Resolves `disk` of `point` (its chain of deltas) and looks up where
    /// each of its blobs is stored. `cache_bytes`: how much opened blob
    /// data to keep (at least one blob is always kept).
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
        let r = manifest::resolve(&vault, point, disk, &mut HashMap::new())?;
        let index = vault.full_index()?;
        let locs = r
            .blobs
            .iter()
            .map(|b| {
                index
                    .blobs
                    .get(b)
                    .copied()
                    .ok_or_else(|| VaultError::Missing {
                        url: vault.url.clone(),
                        object: format!(
                            "blob {} (needed by point {})",
                            b.short(),
                            point.id.short()
                        ),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let data = r.blocks.iter().filter(|&&b| b != ZERO).count() as u64 * BLOCK;
        Ok(PointReader {
            data,
            vault,
            point: point.id,
            size: r.size,
            blobs: r.blobs,
            locs,
            blocks: r.blocks,
            cache: Mutex::new(Cache {
                budget: cache_bytes,
                bytes: 0,
                tick: 0,
                blobs: HashMap::new(),
            }),
            counters: Counters::default(),
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
            let block = (pos / BLOCK) as usize;
            let within = (pos % BLOCK) as usize;
            let n = (BLOCK as usize - within).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            let v = self.blocks.get(block).copied().unwrap_or(ZERO);
            if v == ZERO {
                out.fill(0);
            } else {
                let (b, k) = ((v >> 32) as u32, v & 0xffff_ffff);
                let plain = self.blob(b)?;
                let a = (k * BLOCK) as usize + within;
                let src = plain.get(a..a + n).ok_or_else(|| {
                    self.vault.damaged(
                        &pack_name(&self.locs[b as usize].pack),
                        format!(
                            "blob {} is shorter than the map says",
                            self.blobs[b as usize].short()
                        ),
                    )
                })?;
                out.copy_from_slice(src);
            }
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
