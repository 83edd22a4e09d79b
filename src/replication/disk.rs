//! Reading a disk: a regular file (raw image, qcow2/vmdk bytes, a database)
//! or a block device. Finds its size and where its data is (SEEK_DATA /
//! SEEK_HOLE), so holes are never read.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Size in bytes: the file length, or for a block device its end.
pub fn size(file: &mut File) -> std::io::Result<u64> {
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        let end = file.seek(SeekFrom::End(0))?;
        file.seek(SeekFrom::Start(0))?;
        return Ok(end);
    }
    Ok(meta.len())
}

/// The size of the disk a machine sees in the file at `path`: for a VM's
/// qcow2 image (`qcow2`, its `vm` block's format) the virtual size, from
/// the header's big-endian u64 at offset 24 after the magic `QFI\xfb`
/// (QEMU's docs/interop/qcow2.txt), since the file's length is its
/// allocation and grows as the guest writes; else [`size`] (a file's
/// length, a block device's end).
pub fn guest_size(path: &Path, qcow2: bool) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    let mut header = [0u8; 32];
    if qcow2
        && file
            .read_at(&mut header, 0)
            .is_ok_and(|n| n == header.len())
        && header[..4] == *b"QFI\xfb"
    {
        let mut size = [0u8; 8];
        size.copy_from_slice(&header[24..32]);
        return Ok(u64::from_be_bytes(size));
    }
    self::size(&mut file)
}

/// The byte ranges holding data, in order. Falls back to the whole disk where
/// the file system cannot tell (block devices, old file systems).
pub fn data_ranges(file: &File, size: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        // SAFETY: lseek on a file descriptor we own; no memory is touched.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            return vec![(0, size)];
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 {
            size
        } else {
            (hole as u64).min(size)
        };
        if end <= data as u64 {
            break;
        }
        out.push((data as u64, end));
        pos = end;
    }
    out
}

/// Read `buf.len()` bytes at `off`; bytes past the end of the disk read as zeros.
pub fn read_full_at(file: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

/// True when every byte is zero (vectorises: 64 bytes at a time).
pub fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(64);
    let body = chunks.all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0);
    body && chunks.remainder().iter().all(|&x| x == 0)
}

/// Copy `src` to `dst` for staging: a reflink when the file system can
/// (instant), a plain copy otherwise.
pub fn stage_copy(src: &Path, dst: &Path) -> std::io::Result<()> {
    let from = File::open(src)?;
    let to = File::create(dst)?;
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes two file descriptors we own; no memory is passed.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) };
    if rc == 0 {
        return Ok(());
    }
    drop(to);
    std::fs::copy(src, dst).map(|_| ())
}
