//! The local change-tracking cache: per disk, the 4 KiB block hashes as of
//! the newest point, so the next point only compares hashes. The file is
//! valid only for the point id it records; otherwise the hashes are rebuilt
//! by reading that point back from the vault (slower, same result).
//!
//! File: `STBYCTK1 | point id (32) | size (8, LE) | 16-byte hash per block`.
//!
//! A point through changed-block tracking visits only the chunks that
//! changed, so it reads those blocks' hashes from the file and writes
//! theirs back in place ([`record`]): its cost follows what changed, not
//! the disk's size. A point that read every block writes a new file.

use super::capture::{Blocks, HashRun, Hashes, ZERO_HASH, block_hash};
use super::restore::{self, Sink};
use super::{Progress, ReplicationError};
use crate::vault::manifest::{self, BLOCK, Manifest};
use crate::vault::{Id, Index, Vault};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const MAGIC: &[u8; 8] = b"STBYCTK1";

/// Bytes before the first block hash.
pub const HEADER: u64 = 48;

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

/// The cached hashes, if the file records `point` (and is whole): read
/// on demand from the open file.
pub fn load(path: &Path, point: &Id) -> Option<Hashes> {
    let f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; HEADER as usize];
    f.read_exact_at(&mut head, 0).ok()?;
    if &head[..8] != MAGIC || head[8..40] != point.0 {
        return None;
    }
    let size = u64::from_le_bytes(head[40..48].try_into().ok()?);
    if f.metadata().ok()?.len() != HEADER + size.div_ceil(BLOCK) * 16 {
        return None;
    }
    Some(Hashes {
        point: *point,
        size,
        blocks: Blocks::File(f),
    })
}

/// Record the hashes of `point` (`size` bytes) once its manifest is in the
/// vault: `runs` are the hashes of the blocks its capture visited, `prev`
/// the hashes it was compared with. When the capture visited only some
/// chunks and `prev` is this file, those runs are written in place;
/// otherwise a whole new file replaces it.
///
/// A crash never leaves a file that lies: in place, the point id is
/// cleared (and synced) before any hash changes and set last, so a file
/// left half-written names no point and is rebuilt from the vault.
pub fn record(
    path: &Path,
    prev: Option<&Hashes>,
    point: Id,
    size: u64,
    runs: &[HashRun],
) -> std::io::Result<()> {
    let nblocks = size.div_ceil(BLOCK) as usize;
    let visited: usize = runs.iter().map(|r| r.hashes.len()).sum();
    if visited < nblocks
        && let Some(p) = prev.filter(|p| p.size == size)
        && matches!(p.blocks, Blocks::File(_))
    {
        if update_in_place(path, &p.point, &point, size, runs)? {
            return Ok(());
        }
        // Another process rewrote the file meanwhile: its hashes are not
        // ours to trust; the next point rebuilds them from the vault.
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let mut all = match prev {
        Some(p) if visited < nblocks => p.all()?,
        _ => Vec::new(),
    };
    all.resize(nblocks, ZERO_HASH);
    for r in runs {
        let n = r.hashes.len().min(nblocks.saturating_sub(r.first));
        all[r.first..r.first + n].copy_from_slice(&r.hashes[..n]);
    }
    save(path, &point, size, &all)
}

/// Rewrite the runs of a file that records `from` so it records `to`;
/// false when the file no longer records `from` at `size`.
fn update_in_place(
    path: &Path,
    from: &Id,
    to: &Id,
    size: u64,
    runs: &[HashRun],
) -> std::io::Result<bool> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    // Two writers of one machine's file take turns (one process per
    // protection is the rule; this keeps a breach of it from mixing runs).
    // SAFETY: flock on a descriptor we own; released when `f` closes.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut head = [0u8; HEADER as usize];
    f.read_exact_at(&mut head, 0)?;
    if &head[..8] != MAGIC
        || head[8..40] != from.0
        || head[40..48] != size.to_le_bytes()
        || f.metadata()?.len() != HEADER + size.div_ceil(BLOCK) * 16
    {
        return Ok(false);
    }
    let nblocks = size.div_ceil(BLOCK) as usize;
    f.write_all_at(&[0u8; 32], 8)?;
    f.sync_data()?;
    for r in runs {
        let n = r.hashes.len().min(nblocks.saturating_sub(r.first));
        let bytes: Vec<u8> = r.hashes[..n].iter().flatten().copied().collect();
        f.write_all_at(&bytes, HEADER + r.first as u64 * 16)?;
    }
    f.sync_data()?;
    f.write_all_at(&to.0, 8)?;
    Ok(true)
}

/// Write a whole file atomically (temp file, then rename).
fn save(path: &Path, point: &Id, size: u64, blocks: &[[u8; 16]]) -> std::io::Result<()> {
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
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    f.write_all(MAGIC)?;
    f.write_all(&point.0)?;
    f.write_all(&size.to_le_bytes())?;
    for b in blocks {
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
    Ok(Hashes::in_memory(
        point.id,
        resolved.size,
        sink.blocks.into_inner().unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> Id {
        Id([b; 32])
    }

    fn h(b: u8) -> [u8; 16] {
        [b; 16]
    }

    const SIZE: u64 = 10 * BLOCK;

    #[test]
    fn a_whole_capture_writes_a_file_that_loads_for_its_point_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m/disk.ctk");
        let runs = [HashRun {
            first: 0,
            hashes: (0..10).map(h).collect(),
        }];
        record(&p, None, id(1), SIZE, &runs).unwrap();
        let got = load(&p, &id(1)).expect("loads for its point");
        assert!(matches!(got.blocks, Blocks::File(_)));
        assert_eq!(got.all().unwrap(), (0..10).map(h).collect::<Vec<_>>());
        assert_eq!(
            got.range(8, 4).unwrap(),
            vec![h(8), h(9), ZERO_HASH, ZERO_HASH]
        );
        assert!(
            load(&p, &id(2)).is_none(),
            "another point's file is not used"
        );
    }

    #[test]
    fn a_partial_capture_rewrites_only_its_runs_in_place() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.ctk");
        let all: Vec<_> = (0..10).map(h).collect();
        save(&p, &id(1), SIZE, &all).unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap());
        let prev = load(&p, &id(1)).unwrap();
        let runs = [HashRun {
            first: 3,
            hashes: vec![h(33), h(44)],
        }];
        record(&p, Some(&prev), id(2), SIZE, &runs).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap()),
            inode,
            "updated in place, not rewritten"
        );
        assert!(load(&p, &id(1)).is_none());
        let mut want = all.clone();
        want[3] = h(33);
        want[4] = h(44);
        assert_eq!(load(&p, &id(2)).unwrap().all().unwrap(), want);
    }

    #[test]
    fn a_file_another_process_changed_is_dropped_not_mixed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.ctk");
        save(&p, &id(1), SIZE, &[h(1); 10]).unwrap();
        let prev = load(&p, &id(1)).unwrap();
        // Meanwhile another writer recorded its own point.
        save(&p, &id(7), SIZE, &[h(7); 10]).unwrap();
        let runs = [HashRun {
            first: 0,
            hashes: vec![h(2)],
        }];
        record(&p, Some(&prev), id(2), SIZE, &runs).unwrap();
        assert!(!p.exists(), "the next point rebuilds from the vault");
    }

    #[test]
    fn a_partial_capture_over_hashes_in_memory_writes_them_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.ctk");
        let prev = Hashes::in_memory(id(1), SIZE, vec![h(1); 10]);
        let runs = [HashRun {
            first: 9,
            hashes: vec![h(9)],
        }];
        record(&p, Some(&prev), id(2), SIZE, &runs).unwrap();
        let mut want = vec![h(1); 10];
        want[9] = h(9);
        assert_eq!(load(&p, &id(2)).unwrap().all().unwrap(), want);
    }

    #[test]
    fn an_update_cut_short_names_no_point() {
        // What a kill between the two syncs leaves: the id cleared.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.ctk");
        save(&p, &id(1), SIZE, &[h(1); 10]).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&[0u8; 32], 8).unwrap();
        assert!(load(&p, &id(1)).is_none());
    }
}
