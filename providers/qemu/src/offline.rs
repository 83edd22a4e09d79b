//! A VM that does not run, read as one that does: `qemu-storage-daemon`
//! opens its disk images under the VM's own node names with a QMP
//! monitor, so a point of it goes through the same changed-block tracking
//! (the persistent dirty bitmaps QEMU stored in each qcow2 image when it
//! quit), fleecing and NBD export as a point of the running VM. Nothing
//! writes the images meanwhile, and QEMU's image locking keeps the VM from
//! starting on them until the daemon ends.
//!
//! Files in `dir`, named after `name`: `NAME.offline.qmp` and
//! `NAME.offline.pid`. A daemon a killed run left is ended before a new
//! one starts; [`Daemon`] ends its own when dropped.

use crate::error::Result;
use crate::vm::DiskFormat;
use crate::writeback::{end_daemon, esc, read_pid, spawn_daemon};
use std::path::{Path, PathBuf};

/// One disk image of the VM, as the VM opens it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The QEMU node name of its format node.
    pub node: String,
    pub path: PathBuf,
    /// As the configuration declares it, never probed (a raw guest disk
    /// can carry a qcow2 header naming a backing file on this host).
    pub format: DiskFormat,
}

/// A running daemon over a stopped VM's images; ended when dropped (QMP
/// `quit`: bitmaps stored; else SIGKILL).
#[derive(Debug)]
pub struct Daemon {
    name: String,
    /// Its QMP monitor (a unix socket).
    pub qmp_path: PathBuf,
    pid_path: PathBuf,
    pub pid: Option<i32>,
}

impl Daemon {
    /// Opens `disks`, each as the VM would: a format node of its name over
    /// a file node. Errors: the tool missing, an image in use (the VM runs
    /// after all), QEMU's error.
    pub fn start(disks: &[Image], dir: &Path, name: &str) -> Result<Daemon> {
        let qmp_path = dir.join(format!("{name}.offline.qmp"));
        let pid_path = dir.join(format!("{name}.offline.pid"));
        end_daemon(name, &qmp_path, &pid_path)?;
        std::fs::create_dir_all(dir).map_err(crate::error::Error::io(format!(
            "creating {}",
            dir.display()
        )))?;
        let mut args = Vec::new();
        for d in disks {
            let node = &d.node;
            args.push("--blockdev".to_string());
            args.push(format!(
                "driver=file,node-name={node}-file,filename={}",
                esc(&d.path)
            ));
            args.push("--blockdev".to_string());
            args.push(format!(
                "driver={},node-name={node},file={node}-file",
                d.format.as_str()
            ));
        }
        let what = disks
            .iter()
            .map(|d| d.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        spawn_daemon(&args, &qmp_path, &pid_path, name, &what)?;
        Ok(Daemon {
            name: name.to_string(),
            pid: read_pid(&pid_path),
            qmp_path,
            pid_path,
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Nothing to report to: a daemon that survives is ended by the
        // next start over the same files.
        let _ = end_daemon(&self.name, &self.qmp_path, &self.pid_path);
    }
}
