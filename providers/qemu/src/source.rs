//! A VM disk as a replication source: the shape the capture pipeline needs
//! (size, which byte ranges to look at, positional reads), over one disk of
//! an open [`cbt::Point`].
//!
//! How the pipeline is meant to use it (the vault and manifest formats stay
//! as they are): blocks outside [`DiskSource::ranges`] are unchanged since
//! the previous point (keep its block hashes); [`Change::Zero`] ranges are
//! zero blocks; [`Change::Data`] ranges are read, hashed at 4 KiB, compared
//! with the previous hashes and stored as today. A first point (or a
//! fallback) passes `full = true`: every non-hole range is read.

use crate::cbt::{self, Change, Point, PointDisk, Range};
use crate::error::Result;
use crate::nbd::Client;

/// One disk of an open point, readable over NBD.
pub struct DiskSource {
    disk: PointDisk,
    client: Client,
    ranges: Vec<Range>,
}

impl DiskSource {
    /// Connects to `disk`'s view in `point` and lists its ranges (`full`:
    /// all allocated ranges, else the dirty ones).
    pub fn open(point: &Point, disk: &PointDisk, full: bool) -> Result<DiskSource> {
        let mut client = point.connect(disk)?;
        let ranges = cbt::ranges(&mut client, disk, full)?;
        Ok(DiskSource {
            disk: disk.clone(),
            client,
            ranges,
        })
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.disk.size
    }

    /// The ranges to store, ascending, not overlapping.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// Bytes the ranges say must be read (Data only).
    pub fn data_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .filter(|r| r.change == Change::Data)
            .map(|r| r.length)
            .sum()
    }

    /// Dirty bytes QEMU counted for this point.
    pub fn dirty_bytes(&self) -> u64 {
        self.disk.dirty_bytes
    }

    /// Reads `buf.len()` bytes at `offset` of the point-in-time view.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.client.read(offset, buf)
    }

    /// Reads every `(offset, buffer)` part of the view, pipelined across
    /// parts.
    pub fn read_many_at(&mut self, parts: &mut [(u64, &mut [u8])]) -> Result<()> {
        self.client.read_many(parts)
    }

    /// Ends the NBD connection.
    pub fn close(self) -> Result<()> {
        self.client.disconnect()
    }
}
