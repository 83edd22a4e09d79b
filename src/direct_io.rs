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

/// A reusable byte buffer whose data starts on an [`ALIGN`] boundary.
#[derive(Default)]
pub struct AlignedBuf {
    raw: Vec<u8>,
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
        &mut self.raw[aligned - prefix..aligned + len]
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
    /// Cleared when a direct write was refused: later writes skip trying.
    direct_ok: AtomicBool,
}

impl DirectFile {
    /// Pair `buffered` (already open for writing at `path`) with a direct
    /// handle on the same file. Without one, every write is buffered.
    pub fn new(buffered: File, path: &Path) -> DirectFile {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        DirectFile {
            direct_ok: AtomicBool::new(direct.is_some()),
            buffered,
            direct,
        }
    }

    /// Write all of `data` at `off`: its aligned part directly, the rest
    /// (or everything, when not aligned) through the page cache.
    pub fn write_all_at(&self, data: &[u8], off: u64) -> std::io::Result<()> {
        let whole = data.len() / ALIGN * ALIGN;
        if whole > 0
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
        let long = b.aligned(4096 + 3);
        long.fill(5);
        df.write_all_at(long, 16384).unwrap();
        df.write_all_at(&[9u8; 100], 10).unwrap();
        df.file().sync_all().unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 16384 + 4096 + 3);
        assert!(got[16384..].iter().all(|&x| x == 5));
        assert!(got[..10].iter().all(|&x| x == 0));
        assert!(got[10..110].iter().all(|&x| x == 9));
        assert!(got[4096..4096 + 8192].iter().all(|&x| x == 7));
        assert_eq!(&got[4096 + 8192..4096 + 8192 + 4], b"tail");
    }
}
