//! The capture pipeline for one disk: a reader thread reads 4 MiB chunks
//! (skipping holes), two workers hash every 4 KiB block, drop zero blocks,
//! compare with the previous point's hashes, and compress + seal the changed
//! runs; the calling thread packs the sealed blobs and uploads them.
//! Queues are bounded, so memory stays flat whatever the disk size.

use super::disk;
use super::{Progress, ReplicationError};
use crate::vault::manifest::{BLOCK, DiskMap, Extent};
use crate::vault::pack::PackWriter;
use crate::vault::{Id, Location, Vault, blob_context};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

/// Bytes read per chunk.
const CHUNK: u64 = 4 << 20;
/// Longest run of blocks stored as one blob (1 MiB).
const MAX_RUN: usize = 256;
/// The block hash recorded for an all-zero block.
pub const ZERO_HASH: [u8; 16] = [0; 16];

/// Block hashes of a disk as of one point (the change-tracking state):
/// `size` bytes, one 16-byte hash per 4 KiB block. Held in memory (rebuilt
/// from the vault, or hashed from a local disk) or read from the local
/// change-tracking file on demand, so a point that visits few blocks reads
/// few hashes (see [`super::ctk`]).
#[derive(Debug)]
pub struct Hashes {
    pub point: Id,
    pub size: u64,
    pub(super) blocks: Blocks,
}

#[derive(Debug)]
pub(super) enum Blocks {
    Memory(Vec<[u8; 16]>),
    /// The change-tracking file; hashes start at byte `ctk::HEADER`.
    File(File),
}

impl Hashes {
    /// Hashes held in memory.
    pub fn in_memory(point: Id, size: u64, blocks: Vec<[u8; 16]>) -> Hashes {
        Hashes {
            point,
            size,
            blocks: Blocks::Memory(blocks),
        }
    }

    /// The hashes of blocks `first..first + n`; blocks past the disk's end
    /// read as [`ZERO_HASH`]. Errors: reading the change-tracking file.
    pub fn range(&self, first: usize, n: usize) -> std::io::Result<Vec<[u8; 16]>> {
        let mut out = vec![ZERO_HASH; n];
        match &self.blocks {
            Blocks::Memory(v) => {
                let have = v.len().saturating_sub(first).min(n);
                if have > 0 {
                    out[..have].copy_from_slice(&v[first..first + have]);
                }
            }
            Blocks::File(f) => {
                let total = self.size.div_ceil(BLOCK) as usize;
                let have = total.saturating_sub(first).min(n);
                if have > 0 {
                    let mut raw = vec![0u8; have * 16];
                    let at = super::ctk::HEADER + first as u64 * 16;
                    std::os::unix::fs::FileExt::read_exact_at(f, &mut raw, at)?;
                    for (o, c) in out.iter_mut().zip(raw.chunks_exact(16)) {
                        o.copy_from_slice(c);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every block's hash (reads the whole file when file-backed).
    pub fn all(&self) -> std::io::Result<Vec<[u8; 16]>> {
        match &self.blocks {
            Blocks::Memory(v) => Ok(v.clone()),
            Blocks::File(_) => self.range(0, self.size.div_ceil(BLOCK) as usize),
        }
    }
}

/// New hashes of the blocks a capture visited: `hashes[i]` is block
/// `first + i`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct HashRun {
    pub first: usize,
    pub hashes: Vec<[u8; 16]>,
}

/// What capturing one disk produced.
pub struct Captured {
    pub map: DiskMap,
    /// The hashes of every chunk read, in disk order; blocks in chunks the
    /// source reported untouched keep their previous hashes.
    pub hashes: Vec<HashRun>,
    pub size: u64,
    pub read: u64,
    pub new: u64,
    pub stored: u64,
}

/// Keyed hash of one block, truncated to 128 bits for change tracking.
pub fn block_hash(key: &[u8; 32], block: &[u8]) -> ([u8; 32], [u8; 16]) {
    let full = *blake3::keyed_hash(key, block).as_bytes();
    let mut short = [0u8; 16];
    short.copy_from_slice(&full[..16]);
    (full, short)
}

/// One chunk of a disk as a [`ChunkSource`] hands it to the workers.
pub struct Chunk {
    pub idx: u64,
    /// None: the chunk lies in a hole (or, with `keep`, nothing was read).
    pub data: Option<Vec<u8>>,
    /// Per 4 KiB block: true when the block is known unchanged since the
    /// previous point (changed-block tracking); it keeps its previous hash
    /// and `data` is not looked at there. None: every block is in `data`.
    pub keep: Option<Vec<bool>>,
    /// Bytes read from the source for this chunk.
    pub read: u64,
}

/// Where the pipeline's chunks come from: a disk file (today's path) or a
/// VM's point-in-time view ([`super::vm`]).
pub trait ChunkSource: Send {
    /// The chunk covering bytes `start..end` (`end - start` <= 4 MiB).
    /// `buf` is a recycled buffer to fill (resize it to whole blocks).
    fn chunk(&mut self, idx: u64, start: u64, end: u64, buf: Vec<u8>) -> std::io::Result<Chunk>;

    /// True when every block of `start..end` is known unchanged since the
    /// previous point (changed-block tracking): the chunk is not read,
    /// hashed or even visited, so a point's cost follows what changed.
    fn untouched(&self, _start: u64, _end: u64) -> bool {
        false
    }
}

/// Today's source: a disk file, holes skipped.
struct FileSource<'a> {
    file: &'a File,
    ranges: &'a [(u64, u64)],
}

impl ChunkSource for FileSource<'_> {
    fn chunk(
        &mut self,
        idx: u64,
        start: u64,
        end: u64,
        mut buf: Vec<u8>,
    ) -> std::io::Result<Chunk> {
        let has_data = self.ranges.iter().any(|&(a, b)| a < end && b > start);
        if !has_data {
            return Ok(Chunk {
                idx,
                data: None,
                keep: None,
                read: 0,
            });
        }
        let len = ((end - start).div_ceil(BLOCK) * BLOCK) as usize;
        buf.resize(len, 0);
        disk::read_full_at(self.file, &mut buf, start)?;
        Ok(Chunk {
            idx,
            data: Some(buf),
            keep: None,
            read: end - start,
        })
    }
}

struct Done {
    idx: u64,
    hashes: Vec<[u8; 16]>,
    extents: Vec<Extent>,
    blobs: Vec<(Id, Vec<u8>, u32)>,
    /// The chunk buffer, handed back for reuse.
    buf: Option<Vec<u8>>,
    read: u64,
    new: u64,
}

/// Shared, read-only inputs of the workers.
struct Ctx<'a> {
    vault: &'a Vault,
    known: &'a HashMap<Id, Location>,
    claimed: &'a Mutex<HashSet<Id>>,
    prev: Option<&'a Hashes>,
    level: i32,
}

/// Capture `path` into `packer`. With `prev`, only blocks whose hash differs
/// are stored and the map is a delta against `prev.point`. `tick` runs once
/// per chunk (the caller refreshes its vault lock there).
#[allow(clippy::too_many_arguments)]
pub fn capture(
    vault: &Vault,
    known: &HashMap<Id, Location>,
    claimed: &Mutex<HashSet<Id>>,
    packer: &mut PackWriter<'_>,
    path: &Path,
    prev: Option<&Hashes>,
    level: i32,
    progress: &Progress,
    tick: &mut dyn FnMut() -> Result<(), crate::vault::VaultError>,
) -> Result<Captured, ReplicationError> {
    let io = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| ReplicationError::Io { op, path, source }
    };
    let mut file = File::open(path).map_err(io("open disk"))?;
    let size = disk::size(&mut file).map_err(io("read the size of disk"))?;
    let ranges = disk::data_ranges(&file, size);
    let nchunks = size.div_ceil(CHUNK);
    // Progress counts what is read: the chunks holding data, not the holes.
    let to_read: u64 = (0..nchunks)
        .map(|i| (i * CHUNK, ((i + 1) * CHUNK).min(size)))
        .filter(|&(s, e)| ranges.iter().any(|&(a, b)| a < e && b > s))
        .map(|(s, e)| e - s)
        .sum();
    let mut source = FileSource {
        file: &file,
        ranges: &ranges,
    };
    let sink = Sink {
        vault,
        known,
        claimed,
        packer,
        prev,
        level,
        progress,
        tick,
    };
    capture_from(sink, &mut source, size, to_read, path)
}

/// Where captured blocks go and what they are compared with.
pub struct Sink<'a, 'p> {
    pub vault: &'a Vault,
    pub known: &'a HashMap<Id, Location>,
    pub claimed: &'a Mutex<HashSet<Id>>,
    pub packer: &'a mut PackWriter<'p>,
    pub prev: Option<&'a Hashes>,
    pub level: i32,
    pub progress: &'a Progress,
    pub tick: &'a mut dyn FnMut() -> Result<(), crate::vault::VaultError>,
}

/// The pipeline over any [`ChunkSource`] of `size` bytes; `to_read` is the
/// progress total; `path` names the disk in errors.
pub fn capture_from(
    sink: Sink<'_, '_>,
    source: &mut dyn ChunkSource,
    size: u64,
    to_read: u64,
    path: &Path,
) -> Result<Captured, ReplicationError> {
    let Sink {
        vault,
        known,
        claimed,
        packer,
        prev,
        level,
        progress,
        tick,
    } = sink;
    let nchunks = size.div_ceil(CHUNK);
    let visit: Vec<u64> = (0..nchunks)
        .filter(|&i| !source.untouched(i * CHUNK, ((i + 1) * CHUNK).min(size)))
        .collect();
    progress.total.fetch_add(to_read, Ordering::Relaxed);
    let ctx = Ctx {
        vault,
        known,
        claimed,
        prev,
        level,
    };
    let mut hashes: BTreeMap<u64, HashRun> = BTreeMap::new();
    let mut extents: BTreeMap<u64, Vec<Extent>> = BTreeMap::new();
    let (mut read, mut new, mut stored) = (0u64, 0u64, 0u64);

    std::thread::scope(|s| -> Result<(), ReplicationError> {
        let (chunk_tx, chunk_rx) = sync_channel::<std::io::Result<Chunk>>(3);
        let (done_tx, done_rx) = sync_channel::<Result<Done, ReplicationError>>(2);
        // Chunk buffers go back to the reader instead of being freed and
        // zero-filled again.
        let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(8);
        let visit = &visit;
        s.spawn(move || {
            for &idx in visit {
                let start = idx * CHUNK;
                let end = (start + CHUNK).min(size);
                let buf = pool_rx.try_recv().unwrap_or_default();
                let msg = source.chunk(idx, start, end, buf);
                let failed = msg.is_err();
                if chunk_tx.send(msg).is_err() || failed {
                    return;
                }
            }
        });
        let chunk_rx = Arc::new(Mutex::new(chunk_rx));
        for _ in 0..2 {
            let rx = Arc::clone(&chunk_rx);
            let tx = done_tx.clone();
            let ctx = &ctx;
            s.spawn(move || worker(ctx, &rx, size, &tx, path));
        }
        drop(done_tx);
        for done in done_rx {
            let mut done = done?;
            tick()?;
            let first = (done.idx * CHUNK / BLOCK) as usize;
            let run = HashRun {
                first,
                hashes: std::mem::take(&mut done.hashes),
            };
            hashes.insert(done.idx, run);
            for (id, sealed, raw) in done.blobs {
                let n = sealed.len() as u64;
                packer.add(id, sealed, raw)?;
                stored += n;
                progress.stored.fetch_add(n, Ordering::Relaxed);
            }
            if let Some(buf) = done.buf {
                let _ = pool_tx.try_send(buf);
            }
            extents.insert(done.idx, done.extents);
            read += done.read;
            progress.read.fetch_add(done.read, Ordering::Relaxed);
            new += done.new;
        }
        Ok(())
    })?;
    if extents.len() != visit.len() {
        return Err(ReplicationError::Io {
            op: "read",
            path: path.to_path_buf(),
            source: std::io::Error::other("the reader stopped early"),
        });
    }
    Ok(Captured {
        map: DiskMap {
            size,
            parent: prev.map(|p| p.point),
            extents: extents.into_values().flatten().collect(),
        },
        hashes: hashes.into_values().collect(),
        size,
        read,
        new,
        stored,
    })
}

fn worker(
    ctx: &Ctx<'_>,
    rx: &Mutex<Receiver<std::io::Result<Chunk>>>,
    size: u64,
    tx: &std::sync::mpsc::SyncSender<Result<Done, ReplicationError>>,
    path: &Path,
) {
    loop {
        let next = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(chunk) = next else { return };
        let out = match chunk {
            Ok(c) => process(ctx, c, size).map_err(|source| ReplicationError::Io {
                op: "read the change-tracking hashes of",
                path: path.to_path_buf(),
                source,
            }),
            Err(source) => Err(ReplicationError::Io {
                op: "read disk",
                path: path.to_path_buf(),
                source,
            }),
        };
        if tx.send(out).is_err() {
            return;
        }
    }
}

fn process(ctx: &Ctx<'_>, chunk: Chunk, size: u64) -> std::io::Result<Done> {
    let start = chunk.idx * CHUNK;
    let end = (start + CHUNK).min(size);
    let nb = (end - start).div_ceil(BLOCK) as usize;
    let first = (start / BLOCK) as usize;
    let mut short = vec![ZERO_HASH; nb];
    let mut full = vec![[0u8; 32]; nb];
    let key = ctx.vault.id_key();
    let keep = |i: usize| chunk.keep.as_ref().is_some_and(|k| k[i]);
    let prev = match ctx.prev {
        Some(p) => Some(p.range(first, nb)?),
        None => None,
    };
    if let Some(buf) = &chunk.data {
        for i in (0..nb).filter(|&i| !keep(i)) {
            let b = &buf[i * BLOCK as usize..(i + 1) * BLOCK as usize];
            if !disk::is_zero(b) {
                (full[i], short[i]) = block_hash(key, b);
            }
        }
    }
    // Blocks tracking says are unchanged keep their previous hashes, so
    // they compare equal below and are not stored.
    for i in (0..nb).filter(|&i| keep(i)) {
        short[i] = prev.as_ref().map_or(ZERO_HASH, |p| p[i]);
    }
    let changed = |i: usize| match &prev {
        None => short[i] != ZERO_HASH,
        Some(p) => p[i] != short[i],
    };
    let mut done = Done {
        idx: chunk.idx,
        hashes: Vec::new(),
        extents: Vec::new(),
        blobs: Vec::new(),
        buf: None,
        read: chunk.read,
        new: 0,
    };
    let mut i = 0;
    while i < nb {
        if !changed(i) {
            i += 1;
            continue;
        }
        let zero = short[i] == ZERO_HASH;
        let mut j = i + 1;
        while j < nb && j - i < MAX_RUN && changed(j) && (short[j] == ZERO_HASH) == zero {
            j += 1;
        }
        let off = start + i as u64 * BLOCK;
        let len = (j - i) as u64 * BLOCK;
        if zero {
            done.extents.push(Extent(off, len, None, 0));
        } else if let Some(buf) = &chunk.data {
            let mut h = blake3::Hasher::new_keyed(key);
            h.update(b"blob");
            h.update(&len.to_le_bytes());
            for f in &full[i..j] {
                h.update(f);
            }
            let id = Id(*h.finalize().as_bytes());
            let fresh =
                !ctx.known.contains_key(&id) && ctx.claimed.lock().is_ok_and(|mut c| c.insert(id));
            if fresh {
                let plain = &buf[i * BLOCK as usize..j * BLOCK as usize];
                let sealed = ctx
                    .vault
                    .data_sealer()
                    .seal(plain, ctx.level, &blob_context(&id));
                done.new += len;
                done.blobs.push((id, sealed, len as u32));
            }
            done.extents.push(Extent(off, len, Some(id), 0));
        }
        i = j;
    }
    done.hashes = short;
    done.buf = chunk.data;
    Ok(done)
}
