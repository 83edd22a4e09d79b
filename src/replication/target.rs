//! Where a user-facing `standby restore` may write, checked before a byte is
//! written: never a disk a machine uses (configured at any site, or placed by
//! a recovery run the state records), never a directory or a special file
//! (character device, FIFO, socket), an existing file or block device only
//! when told (`--force`), and one restore per target at a time (an OS lock
//! on `TARGET.restore-lock` naming its holder, and the `.partial` created
//! with `O_EXCL`).
//!
//! Failover's restores into provider disk targets and failback's
//! `restore_onto` write where the recovery engine decided; these checks are
//! for the restore command only.

use crate::model::Config;
use crate::state::StateDoc;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// A disk some machine uses or would use: restore must not write there.
#[derive(Debug, Clone)]
pub struct InUseDisk {
    pub path: PathBuf,
    /// For messages: `disk data of machine.db at site.onprem (its own site)`.
    pub what: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{path} is {what}; restore never writes onto a machine's disk (hint: restore to another path and inspect it there; to bring the machine back to a point use `standby failover` or `standby failback`)"
    )]
    InUse { path: PathBuf, what: String },
    #[error("{path} is a directory; --to names the disk file to write (e.g. {path}/DISK.img)")]
    Directory { path: PathBuf },
    #[error(
        "{path} is a {kind}; restore writes a regular file or a block device (hint: restore to a file)"
    )]
    Special { path: PathBuf, kind: &'static str },
    #[error(
        "{path} exists ({what}); nothing was written (hint: pass --force to replace it, or restore to a new path)"
    )]
    Exists { path: PathBuf, what: &'static str },
    #[error(
        "another restore to {path} is in progress ({holder}); nothing was written (hint: wait for it, or restore to another path)"
    )]
    Busy { path: PathBuf, holder: String },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the target turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A new or replaced regular file (written as `TARGET.partial`, renamed).
    File,
    /// An existing block device, written in place.
    BlockDevice,
}

/// The disks machines use: every configured disk at its machine's own site;
/// for protected machines also where a failover places it at the target
/// site; and every disk a recovery run recorded in the state (tests'
/// sandboxes included) for a machine not stopped.
pub fn in_use_disks(cfg: &Config, state: Option<&StateDoc>) -> Vec<InUseDisk> {
    let site_root = |site: &crate::model::Address| {
        let rel = cfg
            .sites
            .get(site)
            .and_then(|s| s.root.clone())
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.root.join(rel)
    };
    let mut out = Vec::new();
    for m in cfg.machines.values() {
        let own = site_root(&m.site);
        for d in &m.disks {
            out.push(InUseDisk {
                path: own.join(&d.path),
                what: format!("disk {} of {} at {} (its own site)", d.name, m.addr, m.site),
            });
        }
        for p in cfg.protections.values().filter(|p| p.machine == m.addr) {
            let dr = site_root(&p.target);
            for d in &m.disks {
                if let Ok(rel) = standby_provider_local::layout::disk_relative(&d.path) {
                    out.push(InUseDisk {
                        path: dr.join(rel),
                        what: format!(
                            "where a failover places disk {} of {} at {}",
                            d.name, m.addr, p.target
                        ),
                    });
                }
            }
        }
    }
    for run in state.map(|s| s.runs.as_slice()).unwrap_or_default() {
        for (machine, mr) in &run.machines {
            if mr.status == crate::state::MachineStatus::Stopped {
                continue;
            }
            for (disk, path) in &mr.disks {
                out.push(InUseDisk {
                    path: cfg.root.join(path),
                    what: format!(
                        "disk {disk} of {machine} placed at {} by the {} run {} of {}",
                        mr.site,
                        run.kind.as_str(),
                        run.run_id,
                        run.plan
                    ),
                });
            }
        }
    }
    out
}

/// An absolute path with `.`/`..` folded and every existing ancestor's
/// symlinks resolved: two spellings of one place compare equal.
fn normalize(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    // Resolve the longest existing ancestor (symlinked directories).
    let mut tail = Vec::new();
    let mut head = out.clone();
    while !head.exists() {
        match (head.file_name().map(|n| n.to_owned()), head.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                head = parent.to_path_buf();
            }
            _ => return out,
        }
    }
    let mut r = std::fs::canonicalize(&head).unwrap_or(head);
    for name in tail.into_iter().rev() {
        r.push(name);
    }
    r
}

fn same_place(a: &Path, b: &Path) -> bool {
    if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        // Hard links and bind mounts included.
        return ma.dev() == mb.dev() && ma.ino() == mb.ino();
    }
    normalize(a) == normalize(b)
}

/// Check `to` as a restore target: nothing is written. `force` allows
/// replacing an existing file or writing an existing block device.
pub fn check(to: &Path, force: bool, in_use: &[InUseDisk]) -> Result<TargetKind, TargetError> {
    if let Some(d) = in_use.iter().find(|d| same_place(to, &d.path)) {
        return Err(TargetError::InUse {
            path: to.to_path_buf(),
            what: d.what.clone(),
        });
    }
    let meta = match std::fs::metadata(to) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symlink would be written through: refuse it as
            // something that exists.
            if std::fs::symlink_metadata(to).is_ok() && !force {
                return Err(TargetError::Exists {
                    path: to.to_path_buf(),
                    what: "a symbolic link to nothing",
                });
            }
            return Ok(TargetKind::File);
        }
        Err(source) => {
            return Err(TargetError::Io {
                op: "look at",
                path: to.to_path_buf(),
                source,
            });
        }
    };
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(TargetError::Directory {
            path: to.to_path_buf(),
        });
    }
    let special = if ft.is_char_device() {
        Some("character device")
    } else if ft.is_fifo() {
        Some("FIFO")
    } else if ft.is_socket() {
        Some("socket")
    } else {
        None
    };
    if let Some(kind) = special {
        return Err(TargetError::Special {
            path: to.to_path_buf(),
            kind,
        });
    }
    let (kind, what) = if ft.is_block_device() {
        (
            TargetKind::BlockDevice,
            "a block device: its contents would be overwritten",
        )
    } else {
        (TargetKind::File, "a file")
    };
    if !force {
        return Err(TargetError::Exists {
            path: to.to_path_buf(),
            what,
        });
    }
    Ok(kind)
}

/// `TARGET` + `suffix`, beside it.
pub fn sibling(to: &Path, suffix: &str) -> PathBuf {
    let mut s = to.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// One restore's hold on a target: an OS lock (released when the process
/// dies, so a killed restore never blocks the next) on `TARGET.restore-lock`,
/// which names the holder. Dropped, the lock file is removed.
#[derive(Debug)]
pub struct TargetLock {
    file: File,
    path: PathBuf,
}

impl TargetLock {
    /// Take the lock for `to`, or say who holds it. `holder` is written into
    /// the lock file for the next one to read (`pid 123 on host, point ...`).
    pub fn acquire(to: &Path, holder: &str) -> Result<TargetLock, TargetError> {
        let path = sibling(to, ".restore-lock");
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| TargetError::Io { op, path, source }
        };
        // The lock file may be unlinked by its holder between our open and
        // our lock: then we hold a lock on a file nobody else can see, so
        // check it is still the one at the path, and retry if not.
        for _ in 0..20 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io("create the lock file", &path))?;
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => {}
                Err(fs4::TryLockError::WouldBlock) => {
                    let who = crate::state::holder_text(&mut file, |t| !t.trim().is_empty())
                        .unwrap_or_default();
                    let who = who.trim();
                    return Err(TargetError::Busy {
                        path: to.to_path_buf(),
                        holder: if who.is_empty() {
                            format!("lock {}", path.display())
                        } else {
                            format!("{who}; lock {}", path.display())
                        },
                    });
                }
                Err(fs4::TryLockError::Error(source)) => {
                    return Err(TargetError::Io {
                        op: "lock",
                        path,
                        source,
                    });
                }
            }
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            file.set_len(0).map_err(io("write", &path))?;
            file.write_all(holder.as_bytes())
                .map_err(io("write", &path))?;
            return Ok(TargetLock { file, path });
        }
        Err(TargetError::Busy {
            path: to.to_path_buf(),
            holder: format!("the lock {} keeps changing hands", path.display()),
        })
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        // Unlink while still holding it; a waiter that opened it already
        // sees the inode change and retries.
        let _ = std::fs::remove_file(&self.path);
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

/// Who this process is, for the lock file.
pub fn holder(what: &str) -> String {
    let started = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!(
        "pid {} on {}, started {started}, {what}",
        std::process::id(),
        gethostname::gethostname().to_string_lossy()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder() {
        let d = tempfile::tempdir().unwrap();
        let to = d.path().join("disk.img");
        let a = TargetLock::acquire(&to, "pid 1 on h, restoring point abc").unwrap();
        let e = TargetLock::acquire(&to, "second").unwrap_err().to_string();
        assert!(e.contains("restoring point abc"), "{e}");
        drop(a);
        assert!(!sibling(&to, ".restore-lock").exists());
        TargetLock::acquire(&to, "third").unwrap();
    }

    #[test]
    fn two_spellings_of_one_place_are_the_same() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("l")).unwrap();
        assert!(same_place(
            &d.path().join("l/x.img"),
            &d.path().join("a/../a/x.img")
        ));
        assert!(!same_place(
            &d.path().join("a/x.img"),
            &d.path().join("a/y.img")
        ));
    }
}
