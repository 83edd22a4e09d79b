//! Restoring a disk: resolve the point's chain into a block map, fetch the
//! packs that hold its blobs (two ahead), open the blobs on two threads and
//! write each run where it belongs, with direct I/O where the file system
//! allows (see `direct_io`). Files come out sparse (only data is written);
//! block devices get their zero runs written explicitly.

use super::{Progress, ReplicationError};
use crate::direct_io::{AlignedBuf, DirectFile};
use crate::vault::manifest::{self, BLOCK, Manifest, Resolved, ZERO};
use crate::vault::read::PackRead;
use crate::vault::{Id, Index, Location, Vault, VaultError, blob_context, pack_name};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

/// Where restored bytes go.
pub trait Sink: Sync {
    fn write_at(&self, off: u64, data: &[u8]) -> std::io::Result<()>;
    /// What errors call the target.
    fn target(&self) -> PathBuf;
}

struct FileSink(DirectFile, PathBuf);

impl Sink for FileSink {
    fn write_at(&self, off: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all_at(data, off)
    }
    fn target(&self) -> PathBuf {
        self.1.clone()
    }
}

/// One blob's part in the restore: the runs `(disk block, count, block in blob)`.
struct Want {
    blob: Id,
    loc: Location,
    runs: Vec<(u64, u64, u64)>,
}

/// A pack and the blobs wanted from it; `whole` when fetching it all pays.
struct PackJob {
    pack: Id,
    wants: Vec<Want>,
    whole: bool,
}

fn plan(
    index: &Index,
    r: &Resolved,
    point: &Id,
    vault: &Vault,
) -> Result<Vec<PackJob>, VaultError> {
    let mut by_blob: HashMap<u32, Vec<(u64, u64, u64)>> = HashMap::new();
    for (first, n, b, k) in r.runs() {
        by_blob.entry(b).or_default().push((first, n, k));
    }
    let mut by_pack: BTreeMap<Id, Vec<Want>> = BTreeMap::new();
    for (b, runs) in by_blob {
        let blob = r.blobs[b as usize];
        let loc = *index.blobs.get(&blob).ok_or_else(|| VaultError::Missing {
            url: vault.url.clone(),
            object: format!("blob {} (needed by point {})", blob.short(), point.short()),
        })?;
        by_pack
            .entry(loc.pack)
            .or_default()
            .push(Want { blob, loc, runs });
    }
    let sizes: HashMap<Id, u64> = index
        .packs()
        .into_iter()
        .map(|(id, p)| {
            (
                id,
                p.blobs.iter().map(|b| b.1 + b.2 as u64).max().unwrap_or(0),
            )
        })
        .collect();
    Ok(by_pack
        .into_iter()
        .map(|(pack, mut wants)| {
            wants.sort_by_key(|w| w.loc.offset);
            let need: u64 = wants.iter().map(|w| w.loc.len as u64).sum();
            let whole = need * 2 >= sizes.get(&pack).copied().unwrap_or(0);
            PackJob { pack, wants, whole }
        })
        .collect())
}

/// Write every data run of `r` into `sink`.
pub fn write_resolved(
    vault: &Vault,
    index: &Index,
    r: &Resolved,
    sink: &dyn Sink,
    progress: &Progress,
    point: &Id,
) -> Result<(), ReplicationError> {
    let jobs = plan(index, r, point, vault)?;
    write_jobs(vault, jobs, r, sink, progress, point)
}

/// Fetch and write the packs of `jobs`; fails unless the blocks handed to
/// `sink` are exactly the data blocks of `r` (counted at the writes, not
/// from the jobs, so a job that misses a run cannot pass).
fn write_jobs(
    vault: &Vault,
    jobs: Vec<PackJob>,
    r: &Resolved,
    sink: &dyn Sink,
    progress: &Progress,
    point: &Id,
) -> Result<(), ReplicationError> {
    let total: u64 = jobs
        .iter()
        .flat_map(|j| &j.wants)
        .map(|w| w.loc.raw as u64)
        .sum();
    progress.total.fetch_add(total, Ordering::Relaxed);
    let size = r.size;
    let jobs = Arc::new(jobs);
    let errors: Mutex<Vec<ReplicationError>> = Mutex::new(Vec::new());
    let errors = &errors;
    // Data blocks written, checked against the map at the end.
    let written = std::sync::atomic::AtomicU64::new(0);
    let written = &written;
    std::thread::scope(|s| -> Result<(), ReplicationError> {
        let (tx, rx) = sync_channel::<(usize, Result<Vec<Bytes>, VaultError>)>(2);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for _ in 0..2 {
            let rx = Arc::clone(&rx);
            let jobs = Arc::clone(&jobs);
            workers.push(s.spawn(move || {
                // Opened blobs land here: aligned for direct writes, and
                // reused, so no blob pays for fresh pages.
                let mut buf = AlignedBuf::new();
                loop {
                    let msg = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok((i, got)) = msg else { return };
                    let res = got.map_err(ReplicationError::from).and_then(|parts| {
                        write_pack(vault, &jobs[i], &parts, sink, size, progress, &mut buf)
                    });
                    match res {
                        Ok(blocks) => {
                            written.fetch_add(blocks, Ordering::SeqCst);
                        }
                        Err(e) => {
                            if let Ok(mut v) = errors.lock() {
                                v.push(e);
                            }
                            return;
                        }
                    }
                }
            }));
        }
        // Fetch two packs ahead of the writers.
        let reads: Vec<PackRead> = jobs
            .iter()
            .map(|j| PackRead {
                pack: j.pack,
                ranges: j
                    .wants
                    .iter()
                    .map(|w| w.loc.offset..w.loc.offset + w.loc.len as u64)
                    .collect(),
                whole: j.whole,
            })
            .collect();
        let sender = tx.clone();
        let fetched = vault.read_packs(&reads, 2, point, move |i, item| {
            sender.send((i, item)).is_ok()
        });
        drop(tx);
        // A writer that panicked wrote only part of its packs: its join
        // error is the restore's error, never a success with holes.
        let mut panicked = None;
        for w in workers {
            if let Err(p) = w.join() {
                let why = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_string());
                panicked = Some(why);
            }
        }
        if let Some(why) = panicked {
            return Err(ReplicationError::Io {
                op: "restore",
                path: sink.target(),
                source: std::io::Error::other(format!("a restore writer thread panicked: {why}")),
            });
        }
        let mut errs = errors
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        if let Some(e) = errs.pop() {
            return Err(e);
        }
        // Every data block of the disk accounted for, as capture checks.
        let want = r.blocks.iter().filter(|&&b| b != ZERO).count() as u64;
        let got = written.load(Ordering::SeqCst);
        if fetched && got != want {
            return Err(ReplicationError::Io {
                op: "restore",
                path: sink.target(),
                source: std::io::Error::other(format!(
                    "only {got} of the point's {want} data blocks were written"
                )),
            });
        }
        if !fetched {
            return Err(ReplicationError::Io {
                op: "restore",
                path: PathBuf::from(&vault.url),
                source: std::io::Error::other("the restore writers stopped early"),
            });
        }
        Ok(())
    })
}

fn write_pack(
    vault: &Vault,
    job: &PackJob,
    parts: &[Bytes],
    sink: &dyn Sink,
    size: u64,
    progress: &Progress,
    buf: &mut AlignedBuf,
) -> Result<u64, ReplicationError> {
    let name = pack_name(&job.pack);
    if parts.len() != job.wants.len() {
        return Err(vault
            .damaged(
                &name,
                format!(
                    "{} blobs read of {} asked for",
                    parts.len(),
                    job.wants.len()
                ),
            )
            .into());
    }
    let mut blocks = 0;
    for (w, sealed) in job.wants.iter().zip(parts) {
        let plain = vault
            .data_sealer()
            .open_aligned(sealed, &blob_context(&w.blob), buf)
            .map_err(|e| vault.damaged(&name, format!("blob {} in it: {e}", w.blob.short())))?;
        for &(first, n, k) in &w.runs {
            let a = (k * BLOCK) as usize;
            let b = ((k + n) * BLOCK) as usize;
            if b > plain.len() {
                return Err(vault
                    .damaged(
                        &name,
                        format!("blob {} is shorter than the map says", w.blob.short()),
                    )
                    .into());
            }
            let off = first * BLOCK;
            let keep = (size.saturating_sub(off)).min((b - a) as u64) as usize;
            sink.write_at(off, &plain[a..a + keep])
                .map_err(|source| ReplicationError::Io {
                    op: "write restored data to",
                    path: sink.target(),
                    source,
                })?;
            blocks += n;
        }
        progress
            .stored
            .fetch_add(w.loc.raw as u64, Ordering::Relaxed);
        progress.read.fetch_add(w.loc.raw as u64, Ordering::Relaxed);
    }
    Ok(blocks)
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy)]
pub struct Restored {
    pub size: u64,
    /// Bytes of data written (holes not counted).
    pub data: u64,
}

/// The mean run length from which a restore writes with direct I/O.
const DIRECT_RUN: u64 = 1 << 20;

/// Restore `disk` of `point` to `to`: a file (written as `TO.partial`, then
/// renamed, sparse) or an existing block device (zeros written explicitly).
pub fn restore_disk(
    vault: &Vault,
    point: &Manifest,
    disk: &str,
    to: &Path,
    progress: &Progress,
) -> Result<Restored, ReplicationError> {
    restore_disk_to(vault, point, disk, to, progress, false)
}

/// `standby restore`: [`restore_disk`] after the target checks of
/// [`super::target`] — `to` is not a disk in `in_use`, not a directory or
/// special file, replaces an existing file or writes a block device only
/// with `force`, and no other restore writes it (lock named
/// `TO.restore-lock`; `TO.partial` created exclusively). Nothing is written
/// when a check fails.
pub fn restore_checked(
    vault: &Vault,
    point: &Manifest,
    disk: &str,
    to: &Path,
    force: bool,
    in_use: &[super::target::InUseDisk],
    progress: &Progress,
) -> Result<Restored, ReplicationError> {
    super::target::check(to, force, in_use)?;
    // The disk must be in the point before anything is created.
    if !point.disks.contains_key(disk) {
        return Err(VaultError::NoSuchDisk {
            point: point.id.short(),
            disk: disk.to_string(),
            have: point.disks.keys().cloned().collect::<Vec<_>>().join(", "),
        }
        .into());
    }
    let _lock = super::target::TargetLock::acquire(
        to,
        &super::target::holder(&format!(
            "restoring disk {disk} of point {}",
            point.id.short()
        )),
    )?;
    // Checked again under the lock: a restore that finished while we
    // waited may have created the target.
    super::target::check(to, force, in_use)?;
    restore_disk_to(vault, point, disk, to, progress, true)
}

fn restore_disk_to(
    vault: &Vault,
    point: &Manifest,
    disk: &str,
    to: &Path,
    progress: &Progress,
    exclusive: bool,
) -> Result<Restored, ReplicationError> {
    let index = vault.full_index()?;
    let mut cache = HashMap::new();
    let r = manifest::resolve(vault, point, disk, &mut cache)?;
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplicationError::Io { op, path, source }
    };
    let data = r.blocks.iter().filter(|&&b| b != ZERO).count() as u64 * BLOCK;
    if super::disk::is_block_device(to) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(to)
            .map_err(io("open", to))?;
        let sink = FileSink(DirectFile::new(f, to), to.to_path_buf());
        write_resolved(vault, &index, &r, &sink, progress, &point.id)?;
        let mut zero_buf = AlignedBuf::new();
        let zeros = zero_buf.aligned(1 << 20);
        zeros.fill(0);
        let mut i = 0usize;
        while i < r.blocks.len() {
            if r.blocks[i] != ZERO {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < r.blocks.len() && r.blocks[j] == ZERO && j - i < 256 {
                j += 1;
            }
            let off = i as u64 * BLOCK;
            let len = ((j - i) as u64 * BLOCK).min(r.size - off) as usize;
            sink.write_at(off, &zeros[..len])
                .map_err(io("write zeros to", to))?;
            i = j;
        }
        sink.0.file().sync_all().map_err(io("sync", to))?;
        return Ok(Restored { size: r.size, data });
    }
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let f = if exclusive {
        // Under the target lock a `.partial` can only be a dead restore's
        // leftover; O_EXCL then makes sure no one else writes this one.
        match std::fs::remove_file(&partial) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove the leftover", &partial)(e)),
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(io("create", &partial))?
    } else {
        File::create(&partial).map_err(io("create", &partial))?
    };
    f.set_len(r.size).map_err(io("size", &partial))?;
    // Direct writes pay off for long runs (a full point); a delta's map is
    // cut into short runs, which synchronous direct writes of a few hundred
    // KiB each make slower than the page cache.
    let runs = r.runs().len().max(1) as u64;
    let file = if data / runs >= DIRECT_RUN {
        DirectFile::new(f, &partial)
    } else {
        DirectFile::buffered_only(f)
    };
    let sink = FileSink(file, partial.clone());
    let res = write_resolved(vault, &index, &r, &sink, progress, &point.id);
    if let Err(e) = res {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    sink.0.file().sync_all().map_err(io("sync", &partial))?;
    std::fs::rename(&partial, to).map_err(io("rename into place", to))?;
    // The new name is durable only once its directory is.
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync the directory of", to))?;
    }
    Ok(Restored { size: r.size, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeySource;
    use crate::replication::{Options, Target, take_points};
    use crate::vault::index;

    /// The completeness check counts blocks at the sink: a plan that
    /// misses a run fails the restore instead of leaving a hole.
    #[test]
    fn a_run_missing_from_the_plan_fails_the_restore() {
        let d = tempfile::tempdir().unwrap();
        let key = KeySource::File(d.path().join("vault.key"));
        let url = format!("file://{}", d.path().join("vault").display());
        let vault = Vault::init(&url, &key, d.path()).unwrap().vault;
        let disk = d.path().join("disk");
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&disk, &data).unwrap();
        let target = Target {
            protection: "protection.a".into(),
            machine: "machine.a".into(),
            group: None,
            disks: vec![("root".into(), disk)],
            quiesce: None,
            app: false,
            level: 1,
            site: None,
            vm: None,
        };
        let opts = Options::new(d.path().join("cache"));
        let points = take_points(&vault, &[target], &opts, &Progress::default()).unwrap();
        let point = &points[0];
        let (idx, _) = index::load(&vault, false).unwrap();
        let r = manifest::resolve(&vault, point, "root", &mut HashMap::new()).unwrap();
        let restore = |to: &Path, jobs: Vec<PackJob>| {
            let f = File::create(to).unwrap();
            let sink = FileSink(DirectFile::buffered_only(f), to.to_path_buf());
            write_jobs(&vault, jobs, &r, &sink, &Progress::default(), &point.id)
        };
        // Control: the whole plan restores.
        let jobs = plan(&idx, &r, &point.id, &vault).unwrap();
        restore(&d.path().join("whole"), jobs).unwrap();
        assert_eq!(std::fs::read(d.path().join("whole")).unwrap(), data);
        // One run dropped from the plan: the restore must fail.
        let mut jobs = plan(&idx, &r, &point.id, &vault).unwrap();
        let last = jobs.last_mut().and_then(|j| j.wants.last_mut()).unwrap();
        last.runs.pop().unwrap();
        let err = restore(&d.path().join("holed"), jobs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("data blocks were written"), "{err}");
    }
}
