//! The `qemu` site provider's foundation: QEMU virtual machines as protected
//! machines.
//!
//! - [`vm`]: start a VM from [`vm::VmSpec`] (kernel or disk boot, disks with
//!   node names, QMP and guest-agent sockets, serial log, no network), track
//!   it by pid file + start time, stop it cleanly (agent, ACPI, then kill).
//! - [`qmp`] and [`qga`]: small typed clients for the QEMU Machine Protocol
//!   and the guest agent (line-delimited JSON over a socket).
//! - [`accel`]: KVM probe with TCG fallback.
//! - [`nbd`]: an NBD client for the subset changed-block tracking needs
//!   (fixed newstyle, `OPT_GO`/`INFO`, structured replies, meta contexts,
//!   `READ`, `BLOCK_STATUS`) over unix sockets and TCP.
//! - [`cbt`]: changed-block tracking with persistent dirty bitmaps and a
//!   fleecing point-in-time view exported over NBD.
//! - [`tls`]: TLS (rustls) for QMP, the guest agent and NBD over TCP,
//!   certificates verified; [`endpoint`]: a QMP or agent socket, unix or
//!   TCP with TLS.
//! - [`source`]: one disk of a point as a replication source.
//! - [`guest`]: the test guest, built from Debian packages and cached.
//! - [`site`]: the `qemu` site provider at the receiving end (replicas
//!   are VMs; test runs on throw-away overlays), a `SiteProvider`.
//! - [`writeback`]: a writable NBD export of a stopped VM's qcow2 image
//!   (`qemu-storage-daemon`), for failback.
//! - [`wrapper`]: the tracked qcow2 wrapper a failed-over VM runs on over
//!   its restored raw image.
//! - [`offline`]: a stopped VM's images opened by `qemu-storage-daemon`
//!   under its node names, so its points are read as a running VM's.
//!
//! Everything here is blocking: call it from plain threads or
//! `spawn_blocking`.

pub mod accel;
pub mod cbt;
pub mod endpoint;
pub mod error;
pub mod guest;
pub mod instant;
pub mod nbd;
pub mod offline;
pub mod qga;
pub mod qmp;
pub mod site;
pub mod source;
pub mod tls;
pub mod vm;
mod wire;
pub mod wrapper;
pub mod writeback;

pub use error::Error;
