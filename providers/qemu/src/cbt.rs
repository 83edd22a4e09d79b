//! Changed-block tracking of a running VM's disks with QEMU dirty bitmaps.
//!
//! Each tracked disk (a qcow2 format node) carries persistent bitmaps named
//! `standby-<generation>`; the newest one records. A point:
//!
//! 1. sweeps what a killed run left (exports, jobs, fleece nodes; older
//!    bitmap generations merged into the newest, so no change is lost);
//! 2. adds a fleece node per disk (an empty qcow2 backed by the disk);
//! 3. optionally freezes the guest's file systems through the agent;
//! 4. runs one QMP `transaction` per point: for every disk, add the next
//!    generation, disable the current one, `blockdev-backup sync=none` into
//!    the fleece node (copy-before-write: the fleece node keeps showing the
//!    disk as it was at this instant while the guest writes on);
//! 5. thaws at once and reports the freeze window;
//! 6. exports every fleece node over NBD with the disabled bitmap, so a
//!    reader gets the dirty extents (`qemu:dirty-bitmap:standby-N`) and
//!    holes/zeros (`base:allocation`).
//!
//! [`finish`] then commits (the old generation is deleted: call it only
//! once the point is stored) or aborts (the old generation is merged into
//! the new one).
//!
//! Granularity: 64 KiB by default, QEMU's default for qcow2 bitmaps and its
//! cluster size. A 4 KiB bitmap (the vault's block size) costs 16x the
//! bitmap memory and metadata (1 TiB disk: 32 MiB instead of 2 MiB) while
//! guest file systems mostly write whole clusters; the reader re-chunks the
//! dirty 64 KiB ranges into the vault's 4 KiB blocks and deduplication
//! drops the unchanged ones, so the wire cost of the coarser bitmap stays
//! small. Callers may choose any power of two from 512 B to 2 GiB.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::nbd::{self, Client, STATE_DIRTY, STATE_HOLE, STATE_ZERO};
use crate::qga::Agent;
use crate::qmp::{DirtyBitmap, Qmp};

/// Bitmaps standby owns are named `PREFIX<generation>`.
pub const BITMAP_PREFIX: &str = "standby-";
/// The default bitmap granularity in bytes (see the module doc).
pub const DEFAULT_GRANULARITY: u64 = 64 << 10;

fn fleece_node(node: &str) -> String {
    format!("sbf-{node}")
}
fn job_id(node: &str) -> String {
    format!("sbj-{node}")
}
fn export_id(node: &str) -> String {
    format!("sbx-{node}")
}

fn cbt_err(node: &str, detail: impl Into<String>) -> Error {
    Error::Cbt {
        node: node.to_string(),
        detail: detail.into(),
    }
}

/// standby's bitmaps on `node`, oldest generation first.
pub fn bitmaps(qmp: &mut Qmp, node: &str) -> Result<Vec<(u64, DirtyBitmap)>> {
    let n = qmp.block_node(node)?;
    let mut v: Vec<(u64, DirtyBitmap)> = n
        .dirty_bitmaps
        .into_iter()
        .filter_map(|b| {
            let g = b.name.strip_prefix(BITMAP_PREFIX)?.parse().ok()?;
            Some((g, b))
        })
        .collect();
    v.sort_by_key(|(g, _)| *g);
    Ok(v)
}

/// Starts tracking `node` (a qcow2 format node): adds persistent bitmap
/// `standby-1` unless a bitmap of ours already records. Returns the
/// recording bitmap's name and whether it was created now. Errors: the node
/// is not qcow2 (persistent bitmaps need it), QEMU refuses.
pub fn enable(qmp: &mut Qmp, node: &str, granularity: u64) -> Result<(String, bool)> {
    let n = qmp.block_node(node)?;
    if n.drv != "qcow2" {
        return Err(cbt_err(
            node,
            format!(
                "persistent dirty bitmaps need a qcow2 image; this node is {} (changes cannot be tracked across a VM restart)",
                n.drv
            ),
        ));
    }
    if let Some((_, b)) = bitmaps(qmp, node)?
        .into_iter()
        .rev()
        .find(|(_, b)| b.recording)
    {
        return Ok((b.name, false));
    }
    let name = format!("{BITMAP_PREFIX}1");
    qmp.execute_value(
        "block-dirty-bitmap-add",
        json!({ "node": node, "name": name, "persistent": true, "granularity": granularity }),
    )?;
    Ok((name, true))
}

/// Starts tracking `node` afresh: deletes every bitmap of ours (also
/// inconsistent ones, which QEMU leaves after it was killed) and adds
/// `standby-1`. The next point must read the whole disk (`full`), since
/// changes before this call are unknown. Returns the deleted names.
pub fn reset(qmp: &mut Qmp, node: &str, granularity: u64) -> Result<Vec<String>> {
    sweep_jobs(qmp, node, &mut Vec::new())?;
    let mut removed = Vec::new();
    for (_, b) in bitmaps(qmp, node)? {
        qmp.execute_value(
            "block-dirty-bitmap-remove",
            json!({ "node": node, "name": b.name }),
        )?;
        removed.push(b.name);
    }
    enable(qmp, node, granularity)?;
    Ok(removed)
}

/// Whether `node`'s bitmaps can be trusted for a dirty-only point: Ok(None)
/// if so, Ok(Some(reason)) if the point must read the whole disk.
pub fn untrusted(qmp: &mut Qmp, node: &str) -> Result<Option<String>> {
    let bms = bitmaps(qmp, node)?;
    if bms.is_empty() {
        return Ok(Some(
            "no tracking bitmap (first point, or the disk lost it)".into(),
        ));
    }
    if let Some((_, b)) = bms.iter().find(|(_, b)| b.inconsistent) {
        return Ok(Some(format!(
            "bitmap {} is inconsistent: QEMU stopped without storing it (killed or crashed)",
            b.name
        )));
    }
    Ok(None)
}

/// What [`sweep`] cleaned up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Old bitmap generations merged into the newest and deleted.
    pub merged: Vec<String>,
    /// Exports, jobs and fleece nodes a killed run left, removed.
    pub removed: Vec<String>,
}

/// Cleans what an interrupted point left on `node`: its NBD export, backup
/// job and fleece node; then merges every older bitmap generation into the
/// newest (enabling it if it was left disabled) and deletes them, so the
/// next point covers every change since the last committed one.
pub fn sweep(qmp: &mut Qmp, node: &str) -> Result<Swept> {
    let mut s = Swept::default();
    sweep_jobs(qmp, node, &mut s.removed)?;
    let bms = bitmaps(qmp, node)?;
    if bms.iter().any(|(_, b)| b.inconsistent) {
        // Nothing to merge into or from: the caller must `reset` and read
        // the whole disk (see `untrusted`).
        return Ok(s);
    }
    if let Some(((_, newest), older)) = bms.split_last() {
        if !newest.recording {
            qmp.execute_value(
                "block-dirty-bitmap-enable",
                json!({ "node": node, "name": newest.name }),
            )?;
        }
        for (_, b) in older {
            merge_and_remove(qmp, node, &b.name, &newest.name)?;
            s.merged.push(b.name.clone());
        }
    }
    Ok(s)
}

/// Removes the export, job and fleece node of an interrupted point on `node`.
fn sweep_jobs(qmp: &mut Qmp, node: &str, removed: &mut Vec<String>) -> Result<()> {
    let exports = qmp.execute_value("query-block-exports", Value::Null)?;
    if exports
        .as_array()
        .is_some_and(|a| a.iter().any(|e| e["id"] == export_id(node)))
    {
        remove_export(qmp, &export_id(node))?;
        removed.push(export_id(node));
    }
    if qmp.block_jobs()?.iter().any(|j| j.device == job_id(node)) {
        cancel_job(qmp, &job_id(node))?;
        removed.push(job_id(node));
    }
    if qmp
        .block_nodes()?
        .iter()
        .any(|n| n.node_name == fleece_node(node))
    {
        qmp.execute_value("blockdev-del", json!({ "node-name": fleece_node(node) }))?;
        removed.push(fleece_node(node));
    }
    Ok(())
}

fn merge_and_remove(qmp: &mut Qmp, node: &str, from: &str, into: &str) -> Result<()> {
    // One transaction: a crash between merge and remove cannot happen
    // inside QEMU, and a failed merge removes nothing.
    qmp.execute_value(
        "transaction",
        json!({ "actions": [
            { "type": "block-dirty-bitmap-merge",
              "data": { "node": node, "target": into, "bitmaps": [from] } },
            { "type": "block-dirty-bitmap-remove",
              "data": { "node": node, "name": from } },
        ]}),
    )
    .map(|_| ())
}

fn remove_export(qmp: &mut Qmp, id: &str) -> Result<()> {
    qmp.execute_value("block-export-del", json!({ "id": id, "mode": "hard" }))?;
    // Deletion completes once clients are gone; wait for it.
    let start = Instant::now();
    loop {
        let v = qmp.execute_value("query-block-exports", Value::Null)?;
        if !v
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["id"] == id))
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(Error::Timeout {
                what: format!("NBD export {id} to close"),
                seconds: 30.0,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cancel_job(qmp: &mut Qmp, id: &str) -> Result<()> {
    match qmp.execute_value("block-job-cancel", json!({ "device": id, "force": true })) {
        Ok(_) => {}
        // Already gone between the query and the cancel.
        Err(Error::Qmp { class, .. }) if class == "DeviceNotActive" => return Ok(()),
        Err(e) => return Err(e),
    }
    qmp.wait_job_gone(id, Duration::from_secs(30))
}

/// The guest freeze around the snapshot instant.
#[derive(Debug, Clone, Copy)]
pub struct FreezeWindow {
    /// From the freeze request to the thaw's reply: how long the guest's
    /// writes were held (includes the freeze hook).
    pub window: Duration,
    /// The `guest-fsfreeze-freeze` call alone (hook + FIFREEZE).
    pub freeze_call: Duration,
    /// The QMP transaction while frozen.
    pub transaction: Duration,
    /// File systems frozen.
    pub filesystems: u64,
}

/// One disk's part of an open point.
#[derive(Debug, Clone)]
pub struct PointDisk {
    pub node: String,
    /// Bytes.
    pub size: u64,
    /// The generation this point reads (disabled; deleted on commit).
    pub old_bitmap: String,
    /// The generation recording from this point on.
    pub new_bitmap: String,
    pub granularity: u64,
    /// Dirty bytes QEMU counts in `old_bitmap`.
    pub dirty_bytes: u64,
    /// The NBD export name of this disk's point-in-time view.
    pub export: String,
    fleece_path: PathBuf,
}

impl PointDisk {
    /// The meta context of this point's dirty bitmap.
    pub fn bitmap_context(&self) -> String {
        format!("qemu:dirty-bitmap:{}", self.old_bitmap)
    }
}

/// An open point: views exported over NBD at [`Point::socket`].
#[derive(Debug)]
pub struct Point {
    pub disks: Vec<PointDisk>,
    pub freeze: Option<FreezeWindow>,
    /// The NBD server's unix socket.
    pub socket: PathBuf,
    /// The moment of the transaction (wall clock), for reports.
    pub taken_at: std::time::SystemTime,
}

impl Point {
    /// Connects to `disk`'s view with both meta contexts negotiated.
    pub fn connect(&self, disk: &PointDisk) -> Result<Client> {
        Client::connect(
            nbd::Address::Unix(&self.socket),
            &disk.export,
            &["base:allocation", &disk.bitmap_context()],
        )
    }
}

/// Opens a point over `nodes` (each tracked by [`enable`]): sweep, fleece
/// nodes, optional freeze through `agent`, one transaction, thaw, exports
/// on an NBD server at `dir/nbd.sock`. Fleece images go to `dir`. On any
/// error the guest is thawed and everything this call added is removed.
pub fn begin(
    qmp: &mut Qmp,
    agent: Option<&mut Agent>,
    nodes: &[&str],
    dir: &Path,
) -> Result<Point> {
    let mut disks = Vec::new();
    for node in nodes {
        sweep(qmp, node)?;
        let n = qmp.block_node(node)?;
        let size = n
            .image
            .as_ref()
            .map(|i| i.virtual_size)
            .ok_or_else(|| cbt_err(node, "QEMU reports no image size"))?;
        let (gen_, cur) = bitmaps(qmp, node)?
            .pop()
            .ok_or_else(|| cbt_err(node, "tracking is not enabled (no standby bitmap)"))?;
        if cur.inconsistent {
            return Err(cbt_err(
                node,
                format!(
                    "bitmap {} is inconsistent (QEMU was killed); the point must read the whole disk",
                    cur.name
                ),
            ));
        }
        let fleece_path = dir.join(format!("{}.fleece.qcow2", fleece_node(node)));
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&fleece_path)
            .arg(size.to_string())
            .output()
            .map_err(Error::io("running qemu-img create"))?;
        if !out.status.success() {
            return Err(cbt_err(
                node,
                format!(
                    "qemu-img create: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        disks.push(PointDisk {
            node: node.to_string(),
            size,
            old_bitmap: cur.name.clone(),
            new_bitmap: format!("{BITMAP_PREFIX}{}", gen_ + 1),
            granularity: cur.granularity,
            dirty_bytes: 0,
            export: node.to_string(),
            fleece_path,
        });
    }
    let socket = dir.join("nbd.sock");
    let result = begin_inner(qmp, agent, &mut disks, &socket);
    match result {
        Ok(freeze) => Ok(Point {
            disks,
            freeze,
            socket,
            taken_at: std::time::SystemTime::now(),
        }),
        Err(e) => {
            for d in &disks {
                let _ = sweep(qmp, &d.node);
                let _ = std::fs::remove_file(&d.fleece_path);
            }
            Err(e)
        }
    }
}

fn begin_inner(
    qmp: &mut Qmp,
    agent: Option<&mut Agent>,
    disks: &mut [PointDisk],
    socket: &Path,
) -> Result<Option<FreezeWindow>> {
    for d in disks.iter() {
        qmp.execute_value(
            "blockdev-add",
            json!({
                "driver": "qcow2",
                "node-name": fleece_node(&d.node),
                "file": { "driver": "file", "filename": d.fleece_path.to_string_lossy() },
                "backing": d.node,
                "discard": "unmap",
            }),
        )?;
    }
    let mut actions = Vec::new();
    for d in disks.iter() {
        actions.push(json!({ "type": "block-dirty-bitmap-add",
            "data": { "node": d.node, "name": d.new_bitmap, "persistent": true, "granularity": d.granularity } }));
        actions.push(json!({ "type": "block-dirty-bitmap-disable",
            "data": { "node": d.node, "name": d.old_bitmap } }));
        actions.push(json!({ "type": "blockdev-backup",
            "data": { "device": d.node, "target": fleece_node(&d.node), "sync": "none",
                      "job-id": job_id(&d.node), "auto-finalize": true, "auto-dismiss": true } }));
    }
    let freeze = match agent {
        Some(a) => {
            let t0 = Instant::now();
            let n = match a.fsfreeze_freeze() {
                Ok(n) => n,
                Err(e) => {
                    // A failed freeze may leave some file systems frozen.
                    let _ = a.fsfreeze_thaw();
                    return Err(e);
                }
            };
            let freeze_call = t0.elapsed();
            let t1 = Instant::now();
            let tx = qmp.execute_value("transaction", json!({ "actions": actions }));
            let transaction = t1.elapsed();
            // Thaw at once, whatever the transaction did.
            let thaw = a.fsfreeze_thaw();
            let window = t0.elapsed();
            tx?;
            thaw?;
            Some(FreezeWindow {
                window,
                freeze_call,
                transaction,
                filesystems: n,
            })
        }
        None => {
            qmp.execute_value("transaction", json!({ "actions": actions }))?;
            None
        }
    };
    for d in disks.iter_mut() {
        d.dirty_bytes = bitmaps(qmp, &d.node)?
            .into_iter()
            .find(|(_, b)| b.name == d.old_bitmap)
            .map(|(_, b)| b.count)
            .unwrap_or(0);
    }
    // One NBD server per QEMU: restart it on our socket (a killed run may
    // have left one running elsewhere).
    let _ = qmp.execute_value("nbd-server-stop", Value::Null);
    let _ = std::fs::remove_file(socket);
    qmp.execute_value(
        "nbd-server-start",
        // SocketAddressLegacy: QEMU 7.2 wants the path under "data".
        json!({ "addr": { "type": "unix", "data": { "path": socket.to_string_lossy() } } }),
    )?;
    for d in disks.iter() {
        qmp.execute_value(
            "block-export-add",
            json!({ "type": "nbd", "id": export_id(&d.node), "node-name": fleece_node(&d.node),
                    "name": d.export, "writable": false, "bitmaps": [d.old_bitmap] }),
        )?;
    }
    Ok(freeze)
}

/// Closes `point`: exports, jobs and fleece nodes removed, the NBD server
/// stopped. `commit`: the old generations are deleted (the point is
/// stored); else they are merged into the new ones (nothing lost).
pub fn finish(qmp: &mut Qmp, point: Point, commit: bool) -> Result<()> {
    for d in &point.disks {
        remove_export(qmp, &export_id(&d.node))?;
    }
    let _ = qmp.execute_value("nbd-server-stop", Value::Null);
    for d in &point.disks {
        cancel_job(qmp, &job_id(&d.node))?;
        qmp.execute_value("blockdev-del", json!({ "node-name": fleece_node(&d.node) }))?;
        if commit {
            qmp.execute_value(
                "block-dirty-bitmap-remove",
                json!({ "node": d.node, "name": d.old_bitmap }),
            )?;
        } else {
            merge_and_remove(qmp, &d.node, &d.old_bitmap, &d.new_bitmap)?;
        }
        let _ = std::fs::remove_file(&d.fleece_path);
    }
    let _ = std::fs::remove_file(&point.socket);
    Ok(())
}

/// What a reader must do with a range of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Read these bytes from the view.
    Data,
    /// The range reads as zeros (a hole or zero cluster): store zeros
    /// without reading.
    Zero,
}

/// A range of a point to store: byte offset, bytes, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub length: u64,
    pub change: Change,
}

/// The ranges of `disk`'s view to store. `full`: every range that is not a
/// hole (a first point); else only the bitmap's dirty ranges. Either way
/// holes and zero ranges come back as [`Change::Zero`].
pub fn ranges(client: &mut Client, disk: &PointDisk, full: bool) -> Result<Vec<Range>> {
    let alloc = client.block_status("base:allocation", 0, disk.size)?;
    let wanted: Vec<(u64, u64)> = if full {
        vec![(0, disk.size)]
    } else {
        client
            .block_status(&disk.bitmap_context(), 0, disk.size)?
            .into_iter()
            .filter(|e| e.flags & STATE_DIRTY != 0)
            .map(|e| (e.offset, e.offset + e.length))
            .collect()
    };
    let mut out: Vec<Range> = Vec::new();
    let mut ai = 0;
    for (start, end) in wanted {
        while ai < alloc.len() && alloc[ai].offset + alloc[ai].length <= start {
            ai += 1;
        }
        let mut j = ai;
        while j < alloc.len() && alloc[j].offset < end {
            let a = alloc[j];
            let s = a.offset.max(start);
            let e = (a.offset + a.length).min(end);
            let zero = a.flags & (STATE_HOLE | STATE_ZERO) != 0;
            // A first point skips holes entirely: a new disk reads as zeros.
            if !(full && zero) {
                let change = if zero { Change::Zero } else { Change::Data };
                match out.last_mut() {
                    Some(l) if l.change == change && l.offset + l.length == s => l.length += e - s,
                    _ => out.push(Range {
                        offset: s,
                        length: e - s,
                        change,
                    }),
                }
            }
            j += 1;
        }
    }
    Ok(out)
}
