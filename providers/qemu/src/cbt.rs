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
/// The file node under a fleece image.
fn fleece_file_node(node: &str) -> String {
    format!("sbg-{node}")
}
/// The `blockdev-create` job making a fleece image.
fn create_job_id(node: &str) -> String {
    format!("sbc-{node}")
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

/// Starts tracking `node` whatever its format: a qcow2 node gets a
/// persistent bitmap ([`enable`]); any other node (raw) a bitmap that lives
/// only while this QEMU process runs, so after a restart the next point
/// finds no bitmap and reads the whole disk. Returns the recording
/// bitmap's name, whether it was created now, and whether it persists.
pub fn enable_any(qmp: &mut Qmp, node: &str, granularity: u64) -> Result<(String, bool, bool)> {
    let n = qmp.block_node(node)?;
    if n.drv == "qcow2" {
        let (name, created) = enable(qmp, node, granularity)?;
        return Ok((name, created, true));
    }
    if let Some((_, b)) = bitmaps(qmp, node)?
        .into_iter()
        .rev()
        .find(|(_, b)| b.recording)
    {
        return Ok((b.name, false, b.persistent));
    }
    let name = format!("{BITMAP_PREFIX}1");
    qmp.execute_value(
        "block-dirty-bitmap-add",
        json!({ "node": node, "name": name, "persistent": false, "granularity": granularity }),
    )?;
    Ok((name, true, false))
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
    enable_any(qmp, node, granularity)?;
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
    // The fleece image before the file node under it.
    let nodes = qmp.block_nodes()?;
    for name in [fleece_node(node), fleece_file_node(node)] {
        if nodes.iter().any(|n| n.node_name == name) {
            qmp.execute_value("blockdev-del", json!({ "node-name": name }))?;
            removed.push(name);
        }
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
    /// Whether the bitmaps are stored in the image (qcow2) or live only
    /// while QEMU runs (raw).
    pub persistent: bool,
    fleece_path: PathBuf,
}

impl PointDisk {
    /// The meta context of this point's dirty bitmap.
    pub fn bitmap_context(&self) -> String {
        format!("qemu:dirty-bitmap:{}", self.old_bitmap)
    }
}

/// Where QEMU's NBD server listens for a point's exports.
#[derive(Debug, Clone, Default)]
pub enum ExportAt {
    /// `DIR/nbd.sock` of the member (standby on the hypervisor's host).
    #[default]
    Unix,
    /// TCP with TLS (a remote hypervisor): QEMU listens on `host:port`
    /// with its `tls-creds-x509` object `creds` (see
    /// [`crate::vm::TLS_CREDS_ID`]); standby connects with `client`.
    Tls {
        host: String,
        port: u16,
        creds: String,
        client: crate::tls::TlsConfig,
    },
}

/// An open point: views exported over NBD (see [`Point::connect`]).
#[derive(Debug)]
pub struct Point {
    pub disks: Vec<PointDisk>,
    pub freeze: Option<FreezeWindow>,
    /// The NBD server's unix socket (with [`ExportAt::Unix`]).
    pub socket: PathBuf,
    pub at: ExportAt,
    /// The moment of the transaction (wall clock), for reports.
    pub taken_at: std::time::SystemTime,
}

impl Point {
    /// Connects to `disk`'s view with both meta contexts negotiated.
    pub fn connect(&self, disk: &PointDisk) -> Result<Client> {
        let contexts = ["base:allocation", &disk.bitmap_context()];
        match &self.at {
            ExportAt::Unix => {
                Client::connect(nbd::Address::Unix(&self.socket), &disk.export, &contexts)
            }
            ExportAt::Tls {
                host, port, client, ..
            } => {
                let addr = format!("{host}:{port}");
                Client::connect(nbd::Address::Tls(&addr, client), &disk.export, &contexts)
            }
        }
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
    let mut members = [Member {
        qmp,
        agent,
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        dir: dir.to_path_buf(),
        at: ExportAt::Unix,
    }];
    let mut g = begin_group(&mut members)?;
    g.points.pop().ok_or_else(|| Error::Cbt {
        node: nodes.join(","),
        detail: "no point was opened".into(),
    })
}

/// One VM of a consistency group: its QMP and (for app-consistent points)
/// guest-agent connections, the disk nodes, and a directory for its fleece
/// images and NBD socket (one per VM).
pub struct Member<'a> {
    pub qmp: &'a mut Qmp,
    pub agent: Option<&'a mut Agent>,
    pub nodes: Vec<String>,
    pub dir: PathBuf,
    /// Where this VM's QEMU exports the point.
    pub at: ExportAt,
}

/// A point over several VMs.
#[derive(Debug)]
pub struct GroupPoint {
    /// One per member, in order.
    pub points: Vec<Point>,
    /// From the first freeze request to the last thaw reply (None without
    /// agents).
    pub window: Option<Duration>,
    /// Between the first and the last VM's snapshot instant (each taken as
    /// the middle of its transaction call).
    pub spread: Duration,
    /// The phases' order, for evidence: every freeze returned before the
    /// first transaction was sent, and every transaction returned before
    /// the first thaw was sent.
    pub last_freeze_done: Option<Instant>,
    pub first_transaction: Instant,
    pub last_transaction_done: Instant,
    pub first_thaw: Option<Instant>,
}

/// Opens one point across VMs: all guests frozen, then one transaction per
/// VM, then all thawed, then the exports. On any error every guest is
/// thawed and every VM's additions are swept (bitmaps merged, nothing lost).
pub fn begin_group(members: &mut [Member<'_>]) -> Result<GroupPoint> {
    let mut disks: Vec<Vec<PointDisk>> = Vec::new();
    let mut result = Ok(());
    for m in members.iter_mut() {
        match prepare(m.qmp, &m.nodes, &m.dir) {
            Ok(d) => disks.push(d),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let out = result.and_then(|()| snapshot(members, &mut disks));
    match out {
        Ok(g) => Ok(g),
        Err(e) => {
            // Every node of every member, also those a failed prepare left
            // half done: sweep is idempotent.
            for m in members.iter_mut() {
                for node in &m.nodes {
                    let _ = sweep(m.qmp, node);
                    let fleece = m.dir.join(format!("{}.fleece.qcow2", fleece_node(node)));
                    let _ = std::fs::remove_file(fleece);
                }
            }
            Err(e)
        }
    }
}

/// Per VM: sweep, check tracking, create and attach the fleece nodes.
fn prepare(qmp: &mut Qmp, nodes: &[String], dir: &Path) -> Result<Vec<PointDisk>> {
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
        // QEMU makes the image itself (`blockdev-create`), so `dir` is a
        // path on the hypervisor, which need not be this host.
        let filename = fleece_path.to_string_lossy();
        create(
            qmp,
            node,
            json!({ "driver": "file", "filename": filename, "size": 0 }),
        )?;
        qmp.execute_value(
            "blockdev-add",
            json!({ "driver": "file", "node-name": fleece_file_node(node), "filename": filename }),
        )?;
        let d = PointDisk {
            node: node.to_string(),
            size,
            old_bitmap: cur.name.clone(),
            new_bitmap: format!("{BITMAP_PREFIX}{}", gen_ + 1),
            granularity: cur.granularity,
            persistent: cur.persistent,
            dirty_bytes: 0,
            export: node.to_string(),
            fleece_path,
        };
        // Pushed before blockdev-add so a failure below is cleaned up.
        disks.push(d);
        let d = &disks[disks.len() - 1];
        create(
            qmp,
            node,
            json!({ "driver": "qcow2", "file": fleece_file_node(node), "size": size }),
        )?;
        qmp.execute_value(
            "blockdev-add",
            json!({
                "driver": "qcow2",
                "node-name": fleece_node(&d.node),
                "file": fleece_file_node(node),
                "backing": d.node,
                "discard": "unmap",
            }),
        )?;
    }
    Ok(disks)
}

/// Runs `blockdev-create` with `options` for `node`'s fleece image and
/// waits for the job to conclude (QEMU's block-creation jobs stay until
/// dismissed, so a killed run's one is dismissed first).
fn create(qmp: &mut Qmp, node: &str, options: Value) -> Result<()> {
    let id = create_job_id(node);
    let _ = qmp.execute_value("job-dismiss", json!({ "id": id }));
    qmp.execute_value(
        "blockdev-create",
        json!({ "job-id": id, "options": options }),
    )?;
    let start = Instant::now();
    loop {
        let jobs = qmp.execute_value("query-jobs", Value::Null)?;
        let job = jobs
            .as_array()
            .and_then(|a| a.iter().find(|j| j["id"] == id.as_str()).cloned())
            .ok_or_else(|| cbt_err(node, format!("block-creation job {id} vanished")))?;
        if job["status"] == "concluded" {
            qmp.execute_value("job-dismiss", json!({ "id": id }))?;
            return match job["error"].as_str() {
                Some(e) => Err(cbt_err(node, format!("creating the fleece image: {e}"))),
                None => Ok(()),
            };
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(Error::Timeout {
                what: format!("block-creation job {id}"),
                seconds: 30.0,
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn actions(disks: &[PointDisk]) -> Vec<Value> {
    let mut actions = Vec::new();
    for d in disks {
        actions.push(json!({ "type": "block-dirty-bitmap-add",
            "data": { "node": d.node, "name": d.new_bitmap, "persistent": d.persistent, "granularity": d.granularity } }));
        actions.push(json!({ "type": "block-dirty-bitmap-disable",
            "data": { "node": d.node, "name": d.old_bitmap } }));
        actions.push(json!({ "type": "blockdev-backup",
            "data": { "device": d.node, "target": fleece_node(&d.node), "sync": "none",
                      "job-id": job_id(&d.node), "auto-finalize": true, "auto-dismiss": true } }));
    }
    actions
}

/// Runs `f` on every member's agent in parallel (one thread each); None
/// for members without an agent.
fn on_agents<T: Send>(
    members: &mut [Member<'_>],
    f: impl Fn(&mut Agent) -> Result<T> + Sync,
) -> Vec<Option<Result<T>>> {
    let f = &f;
    std::thread::scope(|sc| {
        let handles: Vec<_> = members
            .iter_mut()
            .map(|m| m.agent.as_deref_mut().map(|a| sc.spawn(move || f(a))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Protocol {
                            peer: "guest agent".into(),
                            detail: "the freeze/thaw thread panicked".into(),
                        })
                    })
                })
            })
            .collect()
    })
}

/// Freeze all, transactions, thaw all, then exports.
fn snapshot(members: &mut [Member<'_>], disks: &mut [Vec<PointDisk>]) -> Result<GroupPoint> {
    let t0 = Instant::now();
    // Per member: (freeze start, freeze call, file systems). The guests
    // freeze in parallel, so the group's window is the slowest freeze, not
    // the sum.
    let mut frozen: Vec<Option<(Instant, Duration, u64)>> = vec![None; members.len()];
    let mut failure: Option<Error> = None;
    let results = on_agents(members, |a| {
        let s = Instant::now();
        match a.fsfreeze_freeze() {
            Ok(n) => Ok((s, s.elapsed(), n)),
            Err(e) => {
                // A failed freeze may leave some file systems frozen.
                let _ = a.fsfreeze_thaw();
                Err(e)
            }
        }
    });
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok(f)) => frozen[i] = Some(f),
            Some(Err(e)) => {
                failure.get_or_insert(e);
            }
            None => {}
        }
    }
    let last_freeze_done = frozen.iter().any(Option::is_some).then(Instant::now);
    let first_transaction = Instant::now();
    let mut tx_mid = Vec::new();
    let mut tx_len = vec![Duration::ZERO; members.len()];
    if failure.is_none() {
        for (i, m) in members.iter_mut().enumerate() {
            let s = Instant::now();
            let r = m
                .qmp
                .execute_value("transaction", json!({ "actions": actions(&disks[i]) }));
            tx_len[i] = s.elapsed();
            tx_mid.push(s + tx_len[i] / 2);
            if let Err(e) = r {
                failure = Some(e);
                break;
            }
        }
    }
    let last_transaction_done = Instant::now();
    // Thaw every guest we froze, whatever happened.
    let first_thaw = frozen.iter().any(Option::is_some).then(Instant::now);
    let thawed = on_agents(members, |a| a.fsfreeze_thaw().map(|_| Instant::now()));
    let mut windows = vec![None; members.len()];
    for (i, r) in thawed.into_iter().enumerate() {
        match (frozen[i], r) {
            (Some((s, call, n)), Some(Ok(done))) => {
                windows[i] = Some(FreezeWindow {
                    window: done - s,
                    freeze_call: call,
                    transaction: tx_len[i],
                    filesystems: n,
                })
            }
            (_, Some(Err(e))) => {
                failure.get_or_insert(e);
            }
            _ => {}
        }
    }
    let window = first_thaw.map(|_| t0.elapsed());
    if let Some(e) = failure {
        return Err(e);
    }
    let spread = match (tx_mid.iter().min(), tx_mid.iter().max()) {
        (Some(a), Some(b)) => *b - *a,
        _ => Duration::ZERO,
    };
    let mut points = Vec::new();
    for (i, m) in members.iter_mut().enumerate() {
        let socket = m.dir.join("nbd.sock");
        export(m.qmp, &mut disks[i], &socket, &m.at)?;
        points.push(Point {
            disks: disks[i].clone(),
            freeze: windows[i],
            socket,
            at: m.at.clone(),
            taken_at: std::time::SystemTime::now(),
        });
    }
    Ok(GroupPoint {
        points,
        window,
        spread,
        last_freeze_done,
        first_transaction,
        last_transaction_done,
        first_thaw,
    })
}

/// Dirty counts, then the NBD server and one export per disk.
fn export(qmp: &mut Qmp, disks: &mut [PointDisk], socket: &Path, at: &ExportAt) -> Result<()> {
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
    // SocketAddressLegacy: QEMU 7.2 wants the address under "data".
    let args = match at {
        ExportAt::Unix => {
            let _ = std::fs::remove_file(socket);
            json!({ "addr": { "type": "unix", "data": { "path": socket.to_string_lossy() } } })
        }
        ExportAt::Tls {
            host, port, creds, ..
        } => json!({
            "addr": { "type": "inet", "data": { "host": host, "port": port.to_string() } },
            "tls-creds": creds,
        }),
    };
    qmp.execute_value("nbd-server-start", args)?;
    for d in disks.iter() {
        qmp.execute_value(
            "block-export-add",
            json!({ "type": "nbd", "id": export_id(&d.node), "node-name": fleece_node(&d.node),
                    "name": d.export, "writable": false, "bitmaps": [d.old_bitmap] }),
        )?;
    }
    Ok(())
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
        qmp.execute_value(
            "blockdev-del",
            json!({ "node-name": fleece_file_node(&d.node) }),
        )?;
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
