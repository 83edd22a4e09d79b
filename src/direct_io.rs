//! Direct I/O (`O_DIRECT`) for big writes: restored disks and vault packs on
//! local files go straight to the device instead of through the page cache.
//! On a machine whose cache is full, a buffered write pays for reclaiming a
//! page and copying into it, which costs more CPU than decrypting and
//! inflating the same bytes; a direct write costs almost none. Holds
//! 4 KiB-aligned buffers and a file handle that writes aligned pieces
//! directly and anything else (a short tail, a file system without
//! `O_DIRECT`) through the page cache.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Alignment of buffers, offsets and lengths for direct writes.
pub const ALIGN: usize = 4096;
/// Shorter writes go through the page cache: a direct write waits for the
/// device, and scattered small ones (a restored delta) would pay that wait
/// thousands of times, where the cache absorbs them.
pub const MIN_DIRECT: usize = 64 << 10;

/// A reusable byte buffer whose data starts on an [`ALIGN`] boundary.
#[derive(Default)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    /// Where the aligned part of the last region starts, and its length.
    at: usize,
    len: usize,
}

// Not derived: the contents are megabytes of disk data.
impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.raw.len())
    }
}

impl AlignedBuf {
    pub fn new() -> AlignedBuf {
        AlignedBuf::default()
    }

    /// `prefix + len` bytes whose byte `prefix` (at most [`ALIGN`]) sits on
    /// an aligned address. Contents are left over from earlier use. Grows
    /// only when asked for more than ever before, so a reused buffer costs
    /// no page faults.
    pub fn region(&mut self, prefix: usize, len: usize) -> &mut [u8] {
        let prefix = prefix.min(ALIGN);
        let need = 2 * ALIGN + len;
        if self.raw.len() < need {
            self.raw = vec![0u8; need];
        }
        let addr = self.raw.as_ptr() as usize;
        let aligned = (ALIGN - addr % ALIGN) % ALIGN + ALIGN;
        (self.at, self.len) = (aligned, len);
        &mut self.raw[aligned - prefix..aligned + len]
    }

    /// Shorten the aligned part of the last region to `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The aligned part of the last region asked for.
    pub fn data(&self) -> &[u8] {
        &self.raw[self.at..self.at + self.len]
    }

    /// `len` bytes starting on an aligned address.
    pub fn aligned(&mut self, len: usize) -> &mut [u8] {
        self.region(0, len)
    }
}

/// True when a direct write of `data` at `off` meets the alignment rules.
pub fn is_aligned(data: &[u8], off: u64) -> bool {
    (data.as_ptr() as usize).is_multiple_of(ALIGN)
        && data.len().is_multiple_of(ALIGN)
        && off.is_multiple_of(ALIGN as u64)
}

/// One file opened twice: normally, and with `O_DIRECT` when the file
/// system allows it.
pub struct DirectFile {
    buffered: File,
    direct: Option<File>,
    /// Cleared when a direct request was refused: later ones skip trying.
    direct_ok: AtomicBool,
}

impl DirectFile {
    /// Pair `buffered` (already open for writing at `path`) with a direct
    /// handle on the same file. Without one, every write is buffered.
    pub fn new(buffered: File, path: &Path) -> DirectFile {
        DirectFile::pair(buffered, OpenOptions::new().write(true), path)
    }

    /// Every write through the page cache (no direct handle).
    pub fn buffered_only(buffered: File) -> DirectFile {
        DirectFile {
            direct_ok: AtomicBool::new(false),
            buffered,
            direct: None,
        }
    }

    /// Pair `buffered` (open for reading at `path`) with a direct read handle.
    pub fn for_reading(buffered: File, path: &Path) -> DirectFile {
        DirectFile::pair(buffered, OpenOptions::new().read(true), path)
    }

    fn pair(buffered: File, opts: &mut OpenOptions, path: &Path) -> DirectFile {
        let direct = opts.custom_flags(libc::O_DIRECT).open(path).ok();
        DirectFile {
            direct_ok: AtomicBool::new(direct.is_some()),
            buffered,
            direct,
        }
    }

    /// Fill `buf` from `off`: directly when aligned, else through the page
    /// cache. Bytes past the end of the file read as zeros.
    pub fn read_full_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let mut done = 0;
        if let Some(d) = &self.direct
            && self.direct_ok.load(Ordering::Relaxed)
            && is_aligned(buf, off)
        {
            while done < buf.len() {
                match d.read_at(&mut buf[done..], off + done as u64) {
                    // A short direct read only happens at the end of the file.
                    Ok(n) if n == 0 || !n.is_multiple_of(ALIGN) => {
                        done += n;
                        buf[done..].fill(0);
                        return Ok(());
                    }
                    Ok(n) => done += n,
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        self.direct_ok.store(false, Ordering::Relaxed);
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        while done < buf.len() {
            match self.buffered.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Write all of `data` at `off`: its aligned part directly, the rest
    /// (or everything, when not aligned or short) through the page cache.
    pub fn write_all_at(&self, data: &[u8], off: u64) -> std::io::Result<()> {
        let whole = data.len() / ALIGN * ALIGN;
        if whole >= MIN_DIRECT
            && let Some(d) = &self.direct
            && self.direct_ok.load(Ordering::Relaxed)
            && is_aligned(&data[..whole], off)
        {
            match d.write_all_at(&data[..whole], off) {
                Ok(()) => {
                    return self
                        .buffered
                        .write_all_at(&data[whole..], off + whole as u64);
                }
                // The device wants a coarser alignment: write buffered from now on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct_ok.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        self.buffered.write_all_at(data, off)
    }

    /// The buffered handle (sync, set_len, metadata go through it).
    pub fn file(&self) -> &File {
        &self.buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_aligned_and_reuse_their_memory() {
        let mut b = AlignedBuf::new();
        let r = b.region(8, 10_000);
        assert_eq!(r.len(), 10_008);
        assert!(is_aligned(&r[8..8 + 4096], 0));
        let first = r.as_ptr() as usize + 8;
        let r = b.aligned(5000);
        assert_eq!(r.as_ptr() as usize, first);
        assert!((r.as_ptr() as usize).is_multiple_of(ALIGN));
    }

    #[test]
    fn aligned_and_unaligned_writes_land_where_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let f = File::create(&path).unwrap();
        let df = DirectFile::new(f, &path);
        let mut b = AlignedBuf::new();
        let block = b.aligned(8192);
        block.fill(7);
        df.write_all_at(block, 4096).unwrap();
        df.write_all_at(b"tail", 4096 + 8192).unwrap();
        let long = b.aligned(MIN_DIRECT + 3);
        long.fill(5);
        df.write_all_at(long, 16384).unwrap();
        df.write_all_at(&[9u8; 100], 10).unwrap();
        df.file().sync_all().unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 16384 + MIN_DIRECT + 3);
        assert!(got[16384..].iter().all(|&x| x == 5));
        assert!(got[..10].iter().all(|&x| x == 0));
        assert!(got[10..110].iter().all(|&x| x == 9));
        assert!(got[4096..4096 + 8192].iter().all(|&x| x == 7));
        assert_eq!(&got[4096 + 8192..4096 + 8192 + 4], b"tail");
    }
}
