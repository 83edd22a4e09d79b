//! Bringing an existing disk to a point's content by writing only the 4 KiB
//! blocks that differ: failback onto the original site's disks, or a
//! failover onto a DR copy left by an earlier one. The disk is hashed
//! locally and compared with the point's block hashes (the change-tracking
//! cache, or rebuilt from the vault), so only differing blocks are fetched.
//!
//! Writes go straight onto the disk: an interrupted resync leaves a disk
//! that is neither old nor new, and running it again finishes the job (the
//! comparison starts over). Callers keep the machine stopped meanwhile.

use super::restore::{self, Sink};
use super::{Progress, ReplicationError, ctk};
use crate::vault::Vault;
use crate::vault::manifest::{self, BLOCK, Manifest, ZERO};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What a resync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resynced {
    pub size: u64,
    /// Bytes of the disk compared with the point.
    pub compared: u64,
    /// Bytes written onto the disk (data and zeroed blocks).
    pub written: u64,
    /// The disk was missing, so the whole point was restored instead.
    pub full: bool,
}

struct InPlace(File, PathBuf);

impl Sink for InPlace {
    fn write_at(&self, off: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all_at(data, off)
    }
    fn target(&self) -> PathBuf {
        self.1.clone()
    }
}

/// Make `target` hold `disk` of `point`, writing only blocks that differ.
/// A missing target gets a full restore (`full` says so).
pub fn restore_onto(
    vault: &Vault,
    point: &Manifest,
    disk: &str,
    target: &Path,
    cache_dir: &Path,
    progress: &Progress,
) -> Result<Resynced, ReplicationError> {
    if !target.exists() {
        let r = restore::restore_disk(vault, point, disk, target, progress)?;
        return Ok(Resynced {
            size: r.size,
            compared: 0,
            written: r.data,
            full: true,
        });
    }
    let io = |op: &'static str| {
        let path = target.to_path_buf();
        move |source| ReplicationError::Io { op, path, source }
    };
    let idx = vault.full_index()?;
    let mut cache = HashMap::new();
    let mut r = manifest::resolve(vault, point, disk, &mut cache)?;
    let want = match ctk::load(
        &ctk::path(cache_dir, &vault.id, &point.machine, disk),
        &point.id,
    ) {
        Some(h) if h.size == r.size => h,
        _ => ctk::rebuild(vault, &idx, point, disk, &mut cache)?,
    }
    .all()
    .map_err(io("read the change-tracking cache for"))?;
    let (have_size, have) = ctk::hash_local(vault, target).map_err(io("read"))?;

    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .map_err(io("open"))?;
    if have_size != r.size && !super::disk::is_block_device(target) {
        f.set_len(r.size).map_err(io("resize"))?;
    }
    // Keep only the blocks that differ; those whose new content is zero are
    // zeroed here, the rest come from the vault.
    let zeros = vec![0u8; BLOCK as usize];
    let mut written = 0u64;
    for (i, slot) in r.blocks.iter_mut().enumerate() {
        let now = have.get(i).copied().unwrap_or(super::capture::ZERO_HASH);
        if want.get(i) == Some(&now) {
            *slot = ZERO;
            continue;
        }
        if *slot == ZERO {
            let off = i as u64 * BLOCK;
            let len = (r.size - off).min(BLOCK) as usize;
            f.write_all_at(&zeros[..len], off)
                .map_err(io("zero a block of"))?;
            written += len as u64;
        }
    }
    written += r.blocks.iter().filter(|&&b| b != ZERO).count() as u64 * BLOCK;
    let sink = InPlace(f, target.to_path_buf());
    restore::write_resolved(vault, &idx, &r, &sink, progress, &point.id)?;
    sink.0.sync_all().map_err(io("sync"))?;
    Ok(Resynced {
        size: r.size,
        compared: have_size.min(r.size),
        written: written.min(r.size),
        full: false,
    })
}

/// How [`restore_onto_export`] found the blocks to write.
pub enum Basis<'a> {
    /// The disk is known to hold this point (its tracking shows no write
    /// since): the blocks whose stored content differs between it and the
    /// target point, from the two manifests alone (nothing read).
    Unchanged(&'a Manifest),
    /// The disk held this point except in these byte ranges `(offset,
    /// length)` (its bitmap's dirty extents since): as `Unchanged`, plus
    /// the blocks in the ranges that differ from the target point, found
    /// by reading those ranges only.
    Dirty(&'a Manifest, &'a [(u64, u64)]),
    /// Read the whole disk through the export and compare its block hashes
    /// with the point's.
    Compare,
}

struct ExportSink<'c>(
    std::sync::Mutex<&'c mut standby_provider_qemu::nbd::Client>,
    String,
);

impl Sink for ExportSink<'_> {
    fn write_at(&self, off: u64, data: &[u8]) -> std::io::Result<()> {
        let mut c = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        c.write(off, data).map_err(std::io::Error::other)
    }
    fn target(&self) -> PathBuf {
        PathBuf::from(&self.1)
    }
}

/// Make the disk behind `client` (a writable NBD export, e.g. a VM's qcow2
/// image served by `qemu-storage-daemon`) hold `disk` of `point`, writing
/// only the 4 KiB blocks that differ, then flush. `compared` counts the
/// bytes read back for [`Basis::Compare`] (0 for `Unchanged`). Errors: the
/// export's size differs from the point's disk, a vault or NBD error. A
/// run cut short leaves blocks of both; running it again with `Compare`
/// finishes the job.
pub fn restore_onto_export(
    vault: &Vault,
    point: &Manifest,
    disk: &str,
    basis: Basis<'_>,
    client: &mut standby_provider_qemu::nbd::Client,
    cache_dir: &Path,
    progress: &Progress,
) -> Result<Resynced, ReplicationError> {
    let nbd = |e: standby_provider_qemu::Error| ReplicationError::Export {
        disk: disk.to_string(),
        detail: e.to_string(),
    };
    let idx = vault.full_index()?;
    let mut cache = HashMap::new();
    let mut r = manifest::resolve(vault, point, disk, &mut cache)?;
    if client.size != r.size {
        return Err(ReplicationError::Export {
            disk: disk.to_string(),
            detail: format!(
                "the image holds {} bytes and the point's disk {}: resize it to match first",
                client.size, r.size
            ),
        });
    }
    let nb = r.blocks.len();
    let mut differs = vec![true; nb];
    let mut compared = 0u64;
    let (base, ranges): (Option<&Manifest>, Vec<(u64, u64)>) = match basis {
        Basis::Unchanged(b) => (Some(b), Vec::new()),
        Basis::Dirty(b, r) => (Some(b), r.to_vec()),
        Basis::Compare => (None, vec![(0, r.size)]),
    };
    match base {
        Some(base) => {
            let b = manifest::resolve(vault, base, disk, &mut cache)?;
            if b.size == r.size {
                let key = |rs: &manifest::Resolved, v: u64| {
                    (v != ZERO).then(|| (rs.blobs[(v >> 32) as usize], v & 0xffff_ffff))
                };
                for (i, d) in differs.iter_mut().enumerate() {
                    *d = key(&b, b.blocks[i]) != key(&r, r.blocks[i]);
                }
            }
        }
        None => differs.fill(false),
    }
    if !ranges.is_empty() {
        let want = match ctk::load(
            &ctk::path(cache_dir, &vault.id, &point.machine, disk),
            &point.id,
        ) {
            Some(h) if h.size == r.size => h,
            _ => ctk::rebuild(vault, &idx, point, disk, &mut cache)?,
        }
        .all()
        .map_err(|source| ReplicationError::Io {
            op: "read the change-tracking cache for",
            path: PathBuf::from(disk),
            source,
        })?;
        let key = vault.id_key();
        let step = 4u64 << 20;
        let mut buf = vec![0u8; step as usize];
        for &(start, len) in &ranges {
            // Whole blocks covering the range, inside the disk.
            let mut off = start / BLOCK * BLOCK;
            let end = (start + len).min(r.size);
            while off < end {
                let n = (end.div_ceil(BLOCK) * BLOCK - off)
                    .min(step)
                    .min(r.size - off) as usize;
                client.read(off, &mut buf[..n]).map_err(nbd)?;
                compared += n as u64;
                for (j, b) in buf[..n].chunks(BLOCK as usize).enumerate() {
                    let i = (off / BLOCK) as usize + j;
                    let h = if super::disk::is_zero(b) {
                        super::capture::ZERO_HASH
                    } else {
                        let mut padded = b.to_vec();
                        padded.resize(BLOCK as usize, 0);
                        super::capture::block_hash(key, &padded).1
                    };
                    // Outside the ranges the disk holds the base, so a
                    // block differs from the point exactly as the base.
                    differs[i] = want.get(i) != Some(&h);
                }
                off += n as u64;
            }
        }
    }
    let zeros = vec![0u8; BLOCK as usize];
    let mut written = 0u64;
    for (i, slot) in r.blocks.iter_mut().enumerate() {
        if !differs[i] {
            *slot = ZERO;
            continue;
        }
        if *slot == ZERO {
            let off = i as u64 * BLOCK;
            let len = (r.size - off).min(BLOCK) as usize;
            client.write(off, &zeros[..len]).map_err(nbd)?;
            written += len as u64;
        }
    }
    written += r.blocks.iter().filter(|&&b| b != ZERO).count() as u64 * BLOCK;
    {
        let sink = ExportSink(std::sync::Mutex::new(&mut *client), disk.to_string());
        restore::write_resolved(vault, &idx, &r, &sink, progress, &point.id)?;
    }
    client.flush().map_err(nbd)?;
    Ok(Resynced {
        size: r.size,
        compared,
        written: written.min(r.size),
        full: false,
    })
}
