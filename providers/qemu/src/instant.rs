//! The background copy of instant recovery: a VM runs on qcow2 overlays
//! backed by NBD exports of a recovery point; each disk is mirrored
//! (`blockdev-mirror`, `sync: full`) into its final raw image while the
//! guest runs, QEMU switches the device over to the image when the mirror
//! converges (`job-complete`), and the overlay nodes — with their NBD
//! backing — are closed (`blockdev-del`). From then on the VM reads and
//! writes the final images only; the exports can stop.
//!
//! Why a mirror to the final image rather than `block-stream` into the
//! overlay: the VM ends on exactly what a normal failover gives it (a raw
//! image at the disk's place, which reprotect reads as a file), and the
//! overlay, a file that only served the first minutes, is thrown away.

use crate::error::{Error, Result};
use crate::qmp::Qmp;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One disk to copy: the VM's node (the overlay's format node, the
/// device's root) and the raw image to end on (created, or truncated, by
/// [`copy`] to the node's size).
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

fn job_id(i: usize) -> String {
    format!("standby-copy-{i}")
}

fn target_node(i: usize) -> String {
    format!("standby-final-{i}")
}

/// Copies every disk of `disks` to its target while the VM runs and
/// switches the VM to the targets; `progress(disk index, progress)` is
/// called as the jobs move (about every `every`) and stops the copy by
/// returning false. Fails with QEMU's error of a job, when stopped, or
/// after `timeout`. On failure the VM is left on its
/// overlays (the jobs cancelled), so a rerun can start over; after a kill
/// (the jobs go on inside QEMU), a second call waits for them and finishes
/// what the first left, disk by disk.
pub fn copy(
    qmp: &mut Qmp,
    disks: &[CopyDisk],
    every: Duration,
    timeout: Duration,
    progress: &mut dyn FnMut(usize, CopyProgress) -> bool,
) -> Result<()> {
    let r = start_and_wait(qmp, disks, every, timeout, progress);
    if r.is_err() {
        for i in 0..disks.len() {
            let _ = qmp.execute_value("job-cancel", json!({ "id": job_id(i) }));
            let _ = qmp.execute_value("job-dismiss", json!({ "id": job_id(i) }));
            let _ = qmp.execute_value("blockdev-del", json!({ "node-name": target_node(i) }));
        }
    }
    r
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
    let nodes: Vec<String> = qmp
        .block_nodes()?
        .into_iter()
        .map(|n| n.node_name)
        .collect();
    // Disks a killed run finished (switched, job dismissed, overlay
    // closed) are left as they are.
    let mut copying = vec![true; disks.len()];
    for (i, d) in disks.iter().enumerate() {
        let id = job_id(i);
        let job = jobs.iter().find(|j| j["id"] == id.as_str());
        if job.is_none() && !nodes.contains(&d.node) && nodes.contains(&target_node(i)) {
            copying[i] = false;
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
        if nodes.contains(&target_node(i)) {
            qmp.execute_value("blockdev-del", json!({ "node-name": target_node(i) }))?;
        }
        let size = qmp
            .block_node(&d.node)?
            .image
            .map(|i| i.virtual_size)
            .ok_or_else(|| Error::Copy {
                node: d.node.clone(),
                detail: "QEMU reports no size for the disk".into(),
            })?;
        // A fresh sparse image: what the mirror does not write stays a hole.
        let f = std::fs::File::create(&d.target)
            .map_err(Error::io(format!("creating {}", d.target.display())))?;
        f.set_len(size)
            .map_err(Error::io(format!("sizing {}", d.target.display())))?;
        drop(f);
        qmp.execute_value(
            "blockdev-add",
            json!({
                "driver": "raw",
                "node-name": target_node(i),
                "file": { "driver": "file", "filename": d.target.to_string_lossy() },
            }),
        )?;
        qmp.execute_value(
            "blockdev-mirror",
            json!({
                "job-id": id,
                "device": d.node,
                "target": target_node(i),
                "sync": "full",
                "auto-dismiss": false,
            }),
        )?;
    }
    let began = Instant::now();
    // `job-complete` is sent once per job; one a killed run already sent
    // it to is no longer `ready`.
    let mut completed = vec![false; disks.len()];
    loop {
        let jobs: Vec<Value> = qmp.execute("query-jobs", Value::Null)?;
        let mut concluded = copying.iter().filter(|c| !**c).count();
        for (i, done) in completed.iter_mut().enumerate() {
            if !copying[i] {
                continue;
            }
            let id = job_id(i);
            let Some(j) = jobs.iter().find(|j| j["id"] == id.as_str()) else {
                return Err(Error::Copy {
                    node: disks[i].node.clone(),
                    detail: format!("the copy job {id} vanished"),
                });
            };
            let (cur, total) = (
                j["current-progress"].as_u64().unwrap_or(0),
                j["total-progress"].as_u64().unwrap_or(0),
            );
            if !progress(i, CopyProgress { done: cur, total }) {
                return Err(Error::Copy {
                    node: disks[i].node.clone(),
                    detail: "interrupted (the VM runs on, on its overlays: run the failover again to copy)".into(),
                });
            }
            match j["status"].as_str().unwrap_or("") {
                "ready" if !*done => {
                    qmp.execute_value("job-complete", json!({ "id": id }))?;
                    *done = true;
                }
                "concluded" => {
                    if let Some(e) = j.get("error").and_then(Value::as_str) {
                        return Err(Error::Copy {
                            node: disks[i].node.clone(),
                            detail: format!("copying to {}: {e}", disks[i].target.display()),
                        });
                    }
                    concluded += 1;
                }
                _ => {}
            }
        }
        if concluded == disks.len() {
            break;
        }
        if began.elapsed() > timeout {
            return Err(Error::Timeout {
                what: "the background copy of the VM's disks".into(),
                seconds: timeout.as_secs_f64(),
            });
        }
        std::thread::sleep(every);
    }
    let nodes: Vec<String> = qmp
        .block_nodes()?
        .into_iter()
        .map(|n| n.node_name)
        .collect();
    for (i, d) in disks.iter().enumerate() {
        if !copying[i] {
            continue;
        }
        qmp.execute_value("job-dismiss", json!({ "id": job_id(i) }))?;
        // The device now runs on the final image; the overlay node (and
        // with it the NBD connection of its backing) is closed.
        if nodes.contains(&d.node) {
            qmp.execute_value("blockdev-del", json!({ "node-name": d.node }))?;
        }
    }
    Ok(())
}

/// Whether QEMU still holds a node reading from NBD (an overlay's
/// backing): after [`copy`], none.
pub fn uses_nbd(qmp: &mut Qmp) -> Result<bool> {
    Ok(qmp.block_nodes()?.iter().any(|n| n.drv == "nbd"))
}
