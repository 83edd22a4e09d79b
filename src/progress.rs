//! Live progress counters: a long operation (replication, restore) adds
//! to them from its threads; whoever shows progress reads them. Below every
//! room, so each can take one.

use std::sync::atomic::AtomicU64;

/// Live counters for progress bars: the library adds, the CLI reads.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes expected in total (disk sizes; restore: plain blob bytes).
    pub total: AtomicU64,
    /// Bytes of disk processed.
    pub read: AtomicU64,
    /// Sealed bytes written to the vault (restore: bytes written out).
    pub stored: AtomicU64,
}
