//! The background copy of instant recovery: a VM runs on qcow2 overlays
//! backed by NBD exports of a recovery point (node `NODE-i`, see
//! [`overlay_node`]); each disk is mirrored (`blockdev-mirror`,
//! `sync: full`) into its final raw image through the tracked wrapper a
//! failover runs on ([`crate::wrapper`], node `NODE`) while the guest
//! runs; when every mirror has converged the guest is paused, QEMU
//! switches each device over to its wrapper (`job-complete`), the
//! overlay's dirty bitmap (the guest's writes since boot) is merged into
//! the wrapper's `standby-1`, the guest resumes, and the overlay nodes —
//! with their NBD backing — are closed (`blockdev-del`). From then on the
//! VM reads and writes the final images only; the exports can stop.
//!
//! Why a mirror to the final image rather than `block-stream` into the
//! overlay: the VM ends on exactly what a normal failover gives it (a
//! tracked wrapper over a raw image at the disk's place, under the disk's
//! node name), so reprotect reads only what the VM wrote since the point;
//! the overlay, a file that only served the first minutes, is thrown away.
//! Why the pause: between the switch and the merge the guest's writes
//! would reach the wrapper with no bitmap counting them (its bitmap stays
//! off while the mirror writes the whole disk into it). The pause lasts
//! the mirrors' last flush, milliseconds when they have converged.

use crate::error::{Error, Result};
use crate::qmp::Qmp;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One disk to copy: the disk's node name (its overlay runs as
/// [`overlay_node`] of it; its wrapper takes it) and the raw image to end
/// on (created, or truncated, by [`copy`] to the disk's size).
#[derive(Debug, Clone)]
pub struct CopyDisk {
    pub node: String,
    pub target: PathBuf,
}

/// Progress of one disk's copy: bytes done of total (QEMU's job offset
/// and length; the length grows while the guest writes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyProgress {
    pub done: u64,
    pub total: u64,
}

/// The node name an instant VM's overlay of disk node `node` runs under
/// (two characters longer: QEMU allows [`crate::vm::NODE_NAME_MAX`]).
pub fn overlay_node(node: &str) -> String {
    format!("{node}-i")
}

fn job_id(i: usize) -> String {
    format!("standby-copy-{i}")
}

fn bitmap() -> String {
    format!("{}1", crate::cbt::BITMAP_PREFIX)
}

/// Copies every disk of `disks` to its target while the VM runs and
/// switches the VM to the targets' wrappers; `progress(disk index,
/// progress)` is called as the jobs move (about every `every`) and stops
/// the copy by returning false. Fails with QEMU's error of a job, when
/// stopped, or after `timeout`. On failure the VM is left running (the
/// jobs cancelled; a disk already switched stays on its wrapper, its
/// writes' count handed over), so a rerun can finish; after a kill (the
/// jobs go on inside QEMU), a second call waits for them and finishes
/// what the first left, disk by disk, and resumes a guest the first left
/// paused for the switch ([`settle_switch`]).
pub fn copy(
    qmp: &mut Qmp,
    disks: &[CopyDisk],
    every: Duration,
    timeout: Duration,
    progress: &mut dyn FnMut(usize, CopyProgress) -> bool,
) -> Result<()> {
    let nodes: Vec<String> = disks.iter().map(|d| d.node.clone()).collect();
    // A killed run may have left the guest paused mid-switch.
    settle_switch(qmp, &nodes)?;
    let r = start_and_wait(qmp, disks, every, timeout, progress);
    if r.is_err() {
        for (i, d) in disks.iter().enumerate() {
            let _ = qmp.execute_value("job-cancel", json!({ "id": job_id(i) }));
            let _ = qmp.execute_value("job-dismiss", json!({ "id": job_id(i) }));
            // Refused (in use) once the device switched to it.
            let _ = qmp.execute_value("blockdev-del", json!({ "node-name": d.node }));
        }
        // Whatever happened, the guest runs on, with the count of its
        // writes handed to any wrapper it was switched to.
        let settled = settle_switch(qmp, &nodes);
        return r.and(settled);
    }
    resume(qmp)
}

/// Resumes the guest if it is paused (by [`copy`], for the switch).
fn resume(qmp: &mut Qmp) -> Result<()> {
    if qmp.status()? == "paused" {
        qmp.execute_value("cont", Value::Null)?;
    }
    Ok(())
}

fn has_bitmap(nodes: &[crate::qmp::BlockNode], node: &str) -> bool {
    nodes
        .iter()
        .any(|n| n.node_name == node && n.dirty_bitmaps.iter().any(|b| b.name == bitmap()))
}

/// Finishes what a copy cut short (killed, interrupted) left while the
/// guest was paused for the switch, then resumes the guest: waits for
/// switches under way, and hands the overlay's count of the guest's
/// writes to each wrapper a device was switched to (so no write the guest
/// makes after it resumes goes uncounted). Does nothing to a VM that is
/// not an instant VM mid-copy (no overlay node `NODE-i` of `nodes`) or
/// not paused. Call before the guest is used: a rerun taking the VM over
/// (provider `adopt`), and [`copy`].
pub fn settle_switch(qmp: &mut Qmp, nodes: &[String]) -> Result<()> {
    let names: Vec<String> = qmp
        .block_nodes()?
        .into_iter()
        .map(|n| n.node_name)
        .collect();
    if !nodes.iter().any(|n| names.contains(&overlay_node(n))) || qmp.status()? != "paused" {
        return Ok(());
    }
    // Switches sent before the kill finish first (a job past `ready`).
    let began = Instant::now();
    while qmp
        .execute::<Vec<Value>>("query-jobs", Value::Null)?
        .iter()
        .any(|j| matches!(j["status"].as_str(), Some("waiting" | "pending")))
    {
        if began.elapsed() > Duration::from_secs(60) {
            return Err(Error::Timeout {
                what: "the disks' switch to their wrappers".into(),
                seconds: 60.0,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let roots = qmp.device_roots()?;
    for node in nodes.iter().filter(|n| roots.contains(n)) {
        hand_over(qmp, node)?;
    }
    resume(qmp)
}

/// Merges the overlay's bitmap (the guest's writes since boot) into a new
/// persistent `standby-1` on the wrapper `node` the device now runs on.
/// Only while the guest is paused since the switch: afterwards the wrapper
/// holds writes no bitmap counted.
fn hand_over(qmp: &mut Qmp, node: &str) -> Result<()> {
    let overlay = overlay_node(node);
    let nodes = qmp.block_nodes()?;
    if !has_bitmap(&nodes, &overlay) {
        return Ok(());
    }
    if !has_bitmap(&nodes, node) {
        qmp.execute_value(
            "block-dirty-bitmap-add",
            json!({ "node": node, "name": bitmap(), "persistent": true,
                    "granularity": crate::wrapper::GRANULARITY }),
        )?;
    }
    qmp.execute_value(
        "block-dirty-bitmap-merge",
        json!({ "node": node, "target": bitmap(),
                "bitmaps": [{ "node": overlay, "name": bitmap() }] }),
    )?;
    Ok(())
}

fn start_and_wait(
    qmp: &mut Qmp,
    disks: &[CopyDisk],
    every: Duration,
    timeout: Duration,
    progress: &mut dyn FnMut(usize, CopyProgress) -> bool,
) -> Result<()> {
    // A copy a killed run started goes on inside QEMU: its job is waited
    // for, never restarted (its target is being written). A job that
    // failed, or a target added without its job, is dropped and the disk
    // copied afresh.
    let jobs: Vec<Value> = qmp.execute("query-jobs", Value::Null)?;
    let block = qmp.block_nodes()?;
    let nodes: Vec<&str> = block.iter().map(|n| n.node_name.as_str()).collect();
    // Disks a killed run finished (switched, job dismissed, overlay
    // closed) are left as they are.
    let roots = qmp.device_roots()?;
    let mut copying = vec![true; disks.len()];
    // A disk switched before this call whose wrapper has no bitmap ran
    // (the guest resumed) with no count of its writes: it gets none now,
    // so reverse points read it whole rather than miss those writes.
    let mut untracked = vec![false; disks.len()];
    for (i, d) in disks.iter().enumerate() {
        let id = job_id(i);
        let overlay = overlay_node(&d.node);
        let job = jobs.iter().find(|j| j["id"] == id.as_str());
        // Switched: the rest of its hand-over is done below.
        if roots.contains(&d.node) {
            if !has_bitmap(&block, &d.node) {
                untracked[i] = true;
            }
            if job.is_none() {
                // Its job was dismissed after the bitmap merge.
                copying[i] = false;
                if nodes.contains(&overlay.as_str()) {
                    qmp.execute_value("blockdev-del", json!({ "node-name": overlay }))?;
                }
            }
            continue;
        }
        if let Some(j) = job {
            let failed = j.get("error").is_some();
            match j["status"].as_str().unwrap_or("") {
                "concluded" if !failed => continue,
                "concluded" | "null" => {
                    qmp.execute_value("job-dismiss", json!({ "id": id }))?;
                }
                "aborting" => {
                    return Err(Error::Copy {
                        node: d.node.clone(),
                        detail: format!("the copy job {id} is being cancelled; run again"),
                    });
                }
                _ => continue,
            }
        }
        if nodes.contains(&d.node.as_str()) {
            qmp.execute_value("blockdev-del", json!({ "node-name": d.node }))?;
        }
        let size = qmp
            .block_node(&overlay)?
            .image
            .map(|i| i.virtual_size)
            .ok_or_else(|| Error::Copy {
                node: d.node.clone(),
                detail: "QEMU reports no size for the disk".into(),
            })?;
        // A fresh sparse image: what the mirror does not write stays a
        // hole. Its wrapper gets its bitmap at the switch: the mirror's
        // own writes are not the guest's.
        let f = std::fs::File::create(&d.target)
            .map_err(Error::io(format!("creating {}", d.target.display())))?;
        f.set_len(size)
            .map_err(Error::io(format!("sizing {}", d.target.display())))?;
        drop(f);
        let wrapper = crate::wrapper::path(&d.target);
        crate::wrapper::make(&d.target, &wrapper, false)?;
        qmp.execute_value(
            "blockdev-add",
            // Zeroes the mirror writes become holes (unmap; the export
            // reports no holes, so zero blocks arrive as data: detected),
            // so the image stays as sparse as a restore leaves it.
            json!({
                "driver": "qcow2",
                "node-name": d.node,
                "discard": "unmap",
                "detect-zeroes": "unmap",
                "file": { "driver": "file", "filename": wrapper.to_string_lossy() },
                "data-file": { "driver": "file", "filename": d.target.to_string_lossy(),
                               "discard": "unmap" },
            }),
        )?;
        qmp.execute_value(
            "blockdev-mirror",
            json!({
                "job-id": id,
                "device": overlay,
                "target": d.node,
                "sync": "full",
                "auto-dismiss": false,
            }),
        )?;
    }
    let began = Instant::now();
    // `job-complete` is sent once per job, all in one pause of the guest,
    // when every mirror has converged; a killed run may have sent it to
    // some already (they are no longer `ready`).
    let mut completed = false;
    loop {
        let jobs: Vec<Value> = qmp.execute("query-jobs", Value::Null)?;
        let (mut ready, mut converged, mut concluded) = (Vec::new(), 0, 0);
        for (i, d) in disks.iter().enumerate() {
            if !copying[i] {
                (converged, concluded) = (converged + 1, concluded + 1);
                continue;
            }
            let id = job_id(i);
            let Some(j) = jobs.iter().find(|j| j["id"] == id.as_str()) else {
                return Err(Error::Copy {
                    node: d.node.clone(),
                    detail: format!("the copy job {id} vanished"),
                });
            };
            let (cur, total) = (
                j["current-progress"].as_u64().unwrap_or(0),
                j["total-progress"].as_u64().unwrap_or(0),
            );
            if !progress(i, CopyProgress { done: cur, total }) {
                return Err(Error::Copy {
                    node: d.node.clone(),
                    detail:
                        "interrupted (the VM runs on: run the failover again to finish the copy)"
                            .into(),
                });
            }
            match j["status"].as_str().unwrap_or("") {
                "ready" => {
                    ready.push(id);
                    converged += 1;
                }
                // Completing: a killed run sent job-complete.
                "waiting" | "pending" => converged += 1,
                "concluded" => {
                    if let Some(e) = j.get("error").and_then(Value::as_str) {
                        return Err(Error::Copy {
                            node: d.node.clone(),
                            detail: format!("copying to {}: {e}", d.target.display()),
                        });
                    }
                    (converged, concluded) = (converged + 1, concluded + 1);
                }
                _ => {}
            }
        }
        if concluded == disks.len() {
            break;
        }
        if !completed && converged == disks.len() {
            if qmp.status()? == "running" {
                qmp.execute_value("stop", Value::Null)?;
            }
            for id in &ready {
                qmp.execute_value("job-complete", json!({ "id": id }))?;
            }
            completed = true;
            continue;
        }
        if began.elapsed() > timeout {
            return Err(Error::Timeout {
                what: "the background copy of the VM's disks".into(),
                seconds: timeout.as_secs_f64(),
            });
        }
        std::thread::sleep(every);
    }
    // Every device runs on its wrapper; the guest is paused (or was never
    // switched by this call). Hand the overlay's count of the guest's
    // writes to the wrapper, then close the overlay (and with it the NBD
    // connection of its backing).
    let nodes = qmp.block_nodes()?;
    for (i, d) in disks.iter().enumerate() {
        if !copying[i] {
            continue;
        }
        if !untracked[i] {
            hand_over(qmp, &d.node)?;
        }
        qmp.execute_value("job-dismiss", json!({ "id": job_id(i) }))?;
        let overlay = overlay_node(&d.node);
        if nodes.iter().any(|n| n.node_name == overlay) {
            qmp.execute_value("blockdev-del", json!({ "node-name": overlay }))?;
        }
    }
    Ok(())
}

/// Whether QEMU still holds a node reading from NBD (an overlay's
/// backing): after [`copy`], none.
pub fn uses_nbd(qmp: &mut Qmp) -> Result<bool> {
    Ok(qmp.block_nodes()?.iter().any(|n| n.drv == "nbd"))
}
