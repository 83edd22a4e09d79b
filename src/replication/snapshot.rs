//! Whether a crash-consistent point is an image of one instant.
//!
//! A disk read while it is written mixes blocks of different moments; such
//! an image must not be called crash-consistent. A point's disks are taken
//! from a snapshot where the file system gives one: a reflink clone
//! (FICLONE on xfs, btrfs: atomic against `write(2)`). Disks read in place,
//! and every disk of a point with several, are checked for writes over the
//! window in which they were snapshotted or read: a file's modification and
//! change times move with every write. A window starts only once the coarse
//! clock the kernel stamps files with has passed the file's times, so a
//! write in the same clock tick cannot go unseen. A disk that was written
//! in its window (or a block device, whose writes no time records) makes
//! the point `fuzzy`: kept and listed, never counted as consistent.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

/// What a write changes in a file's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The file's stamp now, or None for what writes do not stamp (block
/// devices) or what cannot be looked at.
pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    if m.file_type().is_block_device() {
        return None;
    }
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

fn coarse_now() -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    (ts.tv_sec, ts.tv_nsec)
}

/// The start of a window: the file's stamp once the clock files are
/// stamped with has moved past its times (waiting a few ms at most), so a
/// later write changes them. None when that does not happen (the file is
/// written all the time) or the file is not stamped by writes.
pub fn settled(path: &Path) -> Option<Stamp> {
    for _ in 0..20 {
        let s = stamp(path)?;
        let now = coarse_now();
        if s.mtime < now && s.ctime < now {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Clone `src` to `dst` with FICLONE: true when the file system made an
/// atomic copy-on-write snapshot; false (and `dst` removed) otherwise.
pub fn reflink(src: &Path, dst: &Path) -> bool {
    use std::os::unix::io::AsRawFd;
    let (Ok(from), Ok(to)) = (std::fs::File::open(src), std::fs::File::create(dst)) else {
        let _ = std::fs::remove_file(dst);
        return false;
    };
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes two file descriptors we own; no memory is passed.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) };
    if rc != 0 {
        drop(to);
        let _ = std::fs::remove_file(dst);
        return false;
    }
    true
}

/// One crash-consistent disk of a batch: how it was taken and its window.
#[derive(Debug, Clone)]
pub struct Window {
    pub path: std::path::PathBuf,
    /// Taken from a reflink clone (the window ends with the clone).
    pub cloned: bool,
    pub start: Option<Stamp>,
    /// For clones: the stamp right after cloning.
    pub end: Option<Stamp>,
}

/// Whether the crash-consistent disks of a batch (`windows`) are images of
/// one instant, asked once every disk read in place has been read. A lone
/// clone is atomic; otherwise no disk may have been written in its window.
pub fn one_instant(windows: &[Window]) -> bool {
    if let [w] = windows
        && w.cloned
    {
        return true;
    }
    windows.iter().all(|w| {
        let end = if w.cloned { w.end } else { stamp(&w.path) };
        matches!((w.start, end), (Some(a), Some(b)) if a == b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_inside_the_window_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk");
        std::fs::write(&p, vec![1u8; 8192]).unwrap();
        let w = |start| Window {
            path: p.clone(),
            cloned: false,
            start,
            end: None,
        };
        let quiet = w(settled(&p));
        assert!(one_instant(&[quiet.clone(), quiet.clone()]));
        let start = settled(&p);
        std::os::unix::fs::FileExt::write_at(
            &std::fs::File::options().write(true).open(&p).unwrap(),
            b"x",
            10,
        )
        .unwrap();
        assert!(!one_instant(&[w(start)]));
    }
}
