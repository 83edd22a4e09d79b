//! The local change-tracking cache: per disk, the 4 KiB block hashes as of
//! the newest point, so the next point only compares hashes. The file is
//! valid only for the point id it records; otherwise the hashes are rebuilt
//! by reading that point back from the vault (slower, same result).
//!
//! File: `STBYCTK1 | point id (32) | size (8, LE) | 16-byte hash per block`.

use super::capture::{Hashes, ZERO_HASH, block_hash};
use super::restore::{self, Sink};
use super::{Progress, ReplicationError};
use crate::vault::manifest::{self, BLOCK, Manifest};
use crate::vault::{Id, Index, Vault};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const MAGIC: &[u8; 8] = b"STBYCTK1";

/// `<cache>/<vault id>/<machine>/<disk>.ctk`, with unsafe characters replaced.
pub fn path(cache: &Path, vault_id: &str, machine: &str, disk: &str) -> PathBuf {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    cache
        .join(clean(vault_id))
        .join(clean(machine))
        .join(format!("{}.ctk", clean(disk)))
}

/// The cached hashes, if the file records `point`.
pub fn load(path: &Path, point: &Id) -> Option<Hashes> {
    let b = std::fs::read(path).ok()?;
    if b.len() < 48 || &b[..8] != MAGIC || b[8..40] != point.0 {
        return None;
    }
    let size = u64::from_le_bytes(b[40..48].try_into().ok()?);
    let body = &b[48..];
    if body.len() as u64 != size.div_ceil(BLOCK) * 16 {
        return None;
    }
    let blocks = body
        .chunks_exact(16)
        .map(|c| c.try_into().unwrap_or(ZERO_HASH))
        .collect();
    Some(Hashes {
        point: *point,
        size,
        blocks,
    })
}

/// Write the cache atomically (temp file, then rename).
pub fn save(path: &Path, h: &Hashes) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A private temporary name: two replications of one machine never
    // write into the same file.
    let tmp = path.with_extension(format!(
        "ctk.{}-{}.tmp",
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    ));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    f.write_all(MAGIC)?;
    f.write_all(&h.point.0)?;
    f.write_all(&h.size.to_le_bytes())?;
    for b in &h.blocks {
        f.write_all(b)?;
    }
    let done = f
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Hashes blocks as restore hands them over.
struct HashSink<'a> {
    key: &'a [u8; 32],
    blocks: Mutex<Vec<[u8; 16]>>,
}

impl Sink for HashSink<'_> {
    fn write_at(&self, off: u64, data: &[u8]) -> std::io::Result<()> {
        let first = (off / BLOCK) as usize;
        let hs: Vec<[u8; 16]> = data
            .chunks(BLOCK as usize)
            .map(|b| {
                if super::disk::is_zero(b) {
                    ZERO_HASH
                } else if b.len() < BLOCK as usize {
                    let mut padded = b.to_vec();
                    padded.resize(BLOCK as usize, 0);
                    block_hash(self.key, &padded).1
                } else {
                    block_hash(self.key, b).1
                }
            })
            .collect();
        let mut all = self
            .blocks
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        all[first..first + hs.len()].copy_from_slice(&hs);
        Ok(())
    }
    fn target(&self) -> PathBuf {
        PathBuf::from("the change-tracking cache")
    }
}

/// The block hashes of a local disk as a capture would record them, so a
/// disk can be compared with a point without fetching the point's data.
/// Holes hash as zero blocks without being read.
pub fn hash_local(vault: &Vault, path: &Path) -> std::io::Result<(u64, Vec<[u8; 16]>)> {
    let mut file = std::fs::File::open(path)?;
    let size = super::disk::size(&mut file)?;
    let sink = HashSink {
        key: vault.id_key(),
        blocks: Mutex::new(vec![ZERO_HASH; size.div_ceil(BLOCK) as usize]),
    };
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in super::disk::data_ranges(&file, size) {
        // Ranges start on file-system block boundaries; align to ours.
        let mut off = start / BLOCK * BLOCK;
        while off < end {
            let n = (end.div_ceil(BLOCK) * BLOCK - off).min(buf.len() as u64) as usize;
            let n = n.min((size - off) as usize);
            super::disk::read_full_at(&file, &mut buf[..n], off)?;
            sink.write_at(off, &buf[..n])?;
            off += n as u64;
        }
    }
    let blocks = sink
        .blocks
        .into_inner()
        .map_err(|_| std::io::Error::other("poisoned"))?;
    Ok((size, blocks))
}

/// Rebuild the hashes of `disk` as of `point` by reading it from the vault.
pub fn rebuild(
    vault: &Vault,
    index: &Index,
    point: &Manifest,
    disk: &str,
    cache: &mut HashMap<Id, Manifest>,
) -> Result<Hashes, ReplicationError> {
    let resolved = manifest::resolve(vault, point, disk, cache)?;
    let sink = HashSink {
        key: vault.id_key(),
        blocks: Mutex::new(vec![ZERO_HASH; resolved.size.div_ceil(BLOCK) as usize]),
    };
    restore::write_resolved(
        vault,
        index,
        &resolved,
        &sink,
        &Progress::default(),
        &point.id,
    )?;
    Ok(Hashes {
        point: point.id,
        size: resolved.size,
        blocks: sink.blocks.into_inner().unwrap_or_default(),
    })
}
