//! Instant recovery: a machine boots while its disks are still in the
//! vault. Each disk of the point is served read-only over NBD by an export
//! process ([`export`]: a [`reader::PointReader`] fetching blobs on demand
//! behind the [`nbd`] server); the VM runs on a local qcow2 overlay backed
//! by that export. A failover then copies each disk to its final place
//! while the VM runs (QEMU `blockdev-mirror`) and drops the export; a test
//! failover or drill never copies the whole disk.

pub mod export;
pub mod nbd;
pub mod reader;
