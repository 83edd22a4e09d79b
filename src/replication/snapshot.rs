//! Whether a crash-consistent point is an image of one instant.
//!
//! A disk read while it is written mixes blocks of different moments; such
//! an image must not be called crash-consistent. A point's disks are taken
//! from a snapshot where the file system gives one: a reflink clone
//! (FICLONE on xfs, btrfs: atomic against `write(2)` and mapped writes). A
//! lone clone is one instant. Disks read in place, and every disk of a point
//! with several, must be provably quiet over the window in which they were
//! snapshotted or read:
//! - no process has the file open for writing or mapped shared-writable
//!   ([`writers`], from `/proc/*/fd`, `fdinfo` and `maps`), at the window's
//!   start and after the read: writes through an already-dirty mapped page
//!   stamp no time, and a long `write(2)` stamps its time once, before its
//!   data lands;
//! - and the file's modification and change times did not move. A window
//!   starts only once the coarse clock the kernel stamps files with has
//!   passed the file's times, so a write in the same clock tick cannot go
//!   unseen.
//!
//! A disk that fails either (or a block device, whose writes no time
//! records, or a system without `/proc`) makes the point
//! `fuzzy`: kept and listed, never counted as consistent.

use std::collections::HashSet;
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

impl Stamp {
    /// The file's identity: (device, inode).
    pub fn file(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// Which of `files` ((device, inode) pairs) some process has open for
/// writing or mapped shared and writable, by one scan of `/proc`. None when
/// `/proc` cannot be listed. Processes that exit during the scan, and those
/// whose `fd` or `maps` this process may not read (run standby as root to
/// see every writer), are skipped.
pub fn writers(files: &[(u64, u64)]) -> Option<HashSet<(u64, u64)>> {
    let mut found = HashSet::new();
    if files.is_empty() {
        return Some(found);
    }
    // Exited during the scan, or not ours to inspect (another user's when
    // not root; the kernel hides some even from root, as lsof finds): skipped.
    let gone = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
        ) || e.raw_os_error() == Some(libc::ESRCH)
    };
    for entry in std::fs::read_dir("/proc").ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let proc_dir = entry.path();
        let fds = match std::fs::read_dir(proc_dir.join("fd")) {
            Ok(fds) => fds,
            Err(e) if gone(&e) => continue,
            Err(_) => return None,
        };
        for fd in fds.flatten() {
            // Follows the link to the open file; a closed fd is skipped.
            let Ok(m) = std::fs::metadata(fd.path()) else {
                continue;
            };
            let file = (m.dev(), m.ino());
            if !files.contains(&file) || found.contains(&file) {
                continue;
            }
            let info = std::fs::read_to_string(proc_dir.join("fdinfo").join(fd.file_name()));
            let flags = info.ok().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            });
            // Unknown flags (closed meanwhile or unreadable) count as a writer.
            if flags.is_none_or(|f| f & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32) {
                found.insert(file);
            }
        }
        let maps = match std::fs::read_to_string(proc_dir.join("maps")) {
            Ok(maps) => maps,
            Err(e) if gone(&e) => continue,
            Err(_) => return None,
        };
        for line in maps.lines() {
            // address perms offset major:minor inode path
            let mut f = line.split_whitespace();
            let (Some(range), Some(perms), Some(_), Some(dev), Some(ino)) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            if !(perms.as_bytes().get(1) == Some(&b'w') && perms.as_bytes().get(3) == Some(&b's')) {
                continue;
            }
            let Ok(ino) = ino.parse::<u64>() else {
                continue;
            };
            for &file in files.iter().filter(|f| f.1 == ino) {
                // maps names the device of the file system's superblock,
                // not always the file's st_dev (btrfs subvolumes): when they
                // differ, the mapped file itself says (map_files, root
                // only); if it cannot be looked at, it counts, erring toward
                // fuzzy.
                let same = same_dev(dev, file.0)
                    || std::fs::metadata(proc_dir.join("map_files").join(range))
                        .map_or(true, |m| (m.dev(), m.ino()) == file);
                if same {
                    found.insert(file);
                }
            }
        }
    }
    Some(found)
}

/// Whether `major:minor` (hex, as /proc/PID/maps writes it) is `dev`.
fn same_dev(text: &str, dev: u64) -> bool {
    let Some((major, minor)) = text.split_once(':') else {
        return false;
    };
    match (
        u32::from_str_radix(major, 16),
        u32::from_str_radix(minor, 16),
    ) {
        (Ok(major), Ok(minor)) => libc::makedev(major, minor) == dev,
        _ => false,
    }
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
    /// No process had the file open for writing or mapped writable when
    /// the window started ([`writers`]).
    pub quiet: bool,
}

/// Which windows' disks were quiet at their start: `start` stamped, and no
/// writer found by [`writers`]. One flag per window, in order.
pub fn quiet_at_start(windows: &[Window]) -> Vec<bool> {
    let files: Vec<(u64, u64)> = windows
        .iter()
        .filter_map(|w| w.start.map(|s| s.file()))
        .collect();
    let found = writers(&files);
    windows
        .iter()
        .map(|w| match (w.start, &found) {
            (Some(s), Some(found)) => !found.contains(&s.file()),
            _ => false,
        })
        .collect()
}

/// Whether the crash-consistent disks of a batch (`windows`) are images of
/// one instant, asked once every disk read in place has been read. A lone
/// clone is atomic; otherwise every disk must have been quiet in its
/// window: no writer at its start nor now, and its times unchanged.
pub fn one_instant(windows: &[Window]) -> bool {
    if let [w] = windows
        && w.cloned
    {
        return true;
    }
    let files: Vec<(u64, u64)> = windows
        .iter()
        .filter_map(|w| w.start.map(|s| s.file()))
        .collect();
    let Some(now) = writers(&files) else {
        return false;
    };
    windows.iter().all(|w| {
        let end = if w.cloned { w.end } else { stamp(&w.path) };
        w.quiet
            && matches!((w.start, end), (Some(a), Some(b)) if a == b && !now.contains(&a.file()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(p: &Path) -> Window {
        let mut w = Window {
            path: p.to_path_buf(),
            cloned: false,
            start: settled(p),
            end: None,
            quiet: false,
        };
        w.quiet = quiet_at_start(std::slice::from_ref(&w))[0];
        w
    }

    #[test]
    fn a_write_inside_the_window_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk");
        std::fs::write(&p, vec![1u8; 8192]).unwrap();
        let quiet = window(&p);
        assert!(one_instant(&[quiet.clone(), quiet.clone()]));
        let w = window(&p);
        std::os::unix::fs::FileExt::write_at(
            &std::fs::File::options().write(true).open(&p).unwrap(),
            b"x",
            10,
        )
        .unwrap();
        assert!(!one_instant(&[w]));
    }

    #[test]
    fn maps_devices_compare_with_st_dev() {
        assert!(same_dev("fd:01", libc::makedev(0xfd, 1)));
        assert!(same_dev("103:0a", libc::makedev(0x103, 10)));
        assert!(!same_dev("fd:02", libc::makedev(0xfd, 1)));
        assert!(!same_dev("nonsense", 0));
    }

    /// Issue 11 item 3: writers that stamp no time are found by /proc.
    #[test]
    fn an_open_writer_or_a_writable_mapping_is_not_quiet() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk");
        std::fs::write(&p, vec![1u8; 8192]).unwrap();
        // Readers do not count.
        let reader = std::fs::File::open(&p).unwrap();
        assert!(one_instant(&[window(&p), window(&p)]));
        drop(reader);
        // Open for writing, writing nothing: not provably quiet.
        let writer = std::fs::File::options().write(true).open(&p).unwrap();
        assert!(!window(&p).quiet);
        let w = {
            drop(writer);
            window(&p)
        };
        assert!(w.quiet);
        // Opened for writing after the window began: seen at its end.
        let late = std::fs::File::options().write(true).open(&p).unwrap();
        assert!(!one_instant(&[w.clone(), w.clone()]));
        drop(late);
        // Mapped shared and writable, its fd closed.
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        use std::os::unix::io::AsRawFd;
        // SAFETY: a fresh shared mapping of a file we own, unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        drop(f);
        assert!(!window(&p).quiet, "a writable mapping is a writer");
        // SAFETY: the mapping made above, of 8192 bytes.
        unsafe { libc::munmap(addr, 8192) };
        assert!(window(&p).quiet);
    }
}
