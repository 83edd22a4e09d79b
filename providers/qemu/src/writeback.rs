//! A writable NBD export of a stopped VM's qcow2 image, for failback:
//! `qemu-storage-daemon` opens the image (its persistent dirty bitmaps
//! loaded and recording, so every write made here is marked dirty) and
//! serves it on a unix socket; its QMP monitor tells the bitmaps' state.
//!
//! Files, all in `dir` and named after `name`: `NAME.wb.nbd` (the export),
//! `NAME.wb.qmp`, `NAME.wb.pid`. A daemon a killed run left behind is
//! found by its pid file and ended before a new one starts (QEMU's image
//! locking would refuse a second opener).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::nbd::{Address, Client};
use crate::qmp::{DirtyBitmap, Qmp};

/// An open export of one image.
pub struct Export {
    pub node: String,
    /// The bitmap whose dirty extents the export also serves (meta context
    /// [`Export::dirty_context`]): the newest of standby's, when it is the
    /// only one and consistent.
    pub bitmap: Option<String>,
    sock: PathBuf,
    qmp_path: PathBuf,
    pid_path: PathBuf,
    pid: Option<i32>,
}

fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.wb.nbd")),
        dir.join(format!("{name}.wb.qmp")),
        dir.join(format!("{name}.wb.pid")),
    )
}

pub(crate) fn alive(pid: i32, qmp: &Path) -> bool {
    // The pid is ours only while its command line names our monitor.
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let c = String::from_utf8_lossy(&c);
        c.contains("qemu-storage-daemon") && c.contains(&*qmp.to_string_lossy())
    })
}

pub(crate) fn read_pid(p: &Path) -> Option<i32> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Ends a daemon of `name` in `dir` left by an earlier run: QMP `quit`
/// (bitmaps stored), else SIGKILL. Nothing running is nothing to do.
pub fn end_leftover(dir: &Path, name: &str) -> Result<()> {
    let (sock, qmp_path, pid_path) = paths(dir, name);
    end_daemon(name, &qmp_path, &pid_path)?;
    let _ = fs::remove_file(&sock);
    Ok(())
}

/// Ends the `qemu-storage-daemon` whose pid file and monitor these are,
/// if it runs (QMP `quit`, else SIGKILL), and removes both files.
pub(crate) fn end_daemon(name: &str, qmp_path: &Path, pid_path: &Path) -> Result<()> {
    if let Some(pid) = read_pid(pid_path)
        && alive(pid, qmp_path)
    {
        if let Ok(mut q) = Qmp::connect_unix(qmp_path, Duration::from_secs(5)) {
            let _ = q.quit();
        }
        if !wait_gone(pid, qmp_path, Duration::from_secs(10)) {
            // SAFETY: kill(2) on a pid whose command line names our monitor.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            if !wait_gone(pid, qmp_path, Duration::from_secs(10)) {
                return Err(Error::Vm {
                    name: name.into(),
                    detail: format!("qemu-storage-daemon pid {pid} survived SIGKILL for 10 s"),
                });
            }
        }
    }
    for p in [qmp_path, pid_path] {
        let _ = fs::remove_file(p);
    }
    Ok(())
}

pub(crate) fn wait_gone(pid: i32, qmp: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    while alive(pid, qmp) {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Runs `qemu-storage-daemon ARGS --chardev/--monitor at qmp_path
/// --pidfile pid_path --daemonize`; returns once it is up. `what` names
/// the images for QEMU's error.
pub(crate) fn spawn_daemon(
    args: &[String],
    qmp_path: &Path,
    pid_path: &Path,
    name: &str,
    what: &str,
) -> Result<()> {
    let out = Command::new("qemu-storage-daemon")
        .args(args)
        .arg("--chardev")
        .arg(format!(
            "socket,id=sbmon,path={},server=on,wait=off",
            esc(qmp_path)
        ))
        .arg("--monitor")
        .arg("chardev=sbmon")
        .arg("--pidfile")
        .arg(pid_path)
        .arg("--daemonize")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingTool {
                tool: "qemu-storage-daemon".into(),
                package: "qemu-system-x86 (Debian: qemu-system-common)".into(),
            },
            _ => Error::Io {
                context: "running qemu-storage-daemon".into(),
                source: e,
            },
        })?;
    if !out.status.success() {
        return Err(Error::Vm {
            name: name.into(),
            detail: format!(
                "qemu-storage-daemon on {what}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// QEMU's option syntax doubles a comma inside a value.
pub(crate) fn esc(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

impl Export {
    /// Starts `qemu-storage-daemon` on the qcow2 `image` as node `node`,
    /// exported writable as `node` on `dir/NAME.wb.nbd`. Errors: the tool
    /// missing, the image in use by another QEMU (locking), QEMU's error.
    pub fn open(image: &Path, node: &str, dir: &Path, name: &str) -> Result<Export> {
        end_leftover(dir, name)?;
        fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let (sock, qmp_path, pid_path) = paths(dir, name);
        spawn_daemon(
            &[
                "--blockdev".into(),
                format!("driver=file,node-name={node}-file,filename={}", esc(image)),
                "--blockdev".into(),
                format!("driver=qcow2,node-name={node},file={node}-file"),
                "--nbd-server".into(),
                format!("addr.type=unix,addr.path={}", esc(&sock)),
            ],
            &qmp_path,
            &pid_path,
            name,
            &image.display().to_string(),
        )?;
        let mut e = Export {
            node: node.to_string(),
            bitmap: None,
            pid: read_pid(&pid_path),
            sock,
            qmp_path,
            pid_path,
        };
        // Exported after the daemon is up: which bitmap to serve is known
        // only then. A daemon that fails here is ended by the next open.
        let mut q = e.qmp()?;
        let bms = crate::cbt::bitmaps(&mut q, node)?;
        if let [(_, b)] = bms.as_slice()
            && !b.inconsistent
        {
            e.bitmap = Some(b.name.clone());
        }
        let mut args = serde_json::json!({
            "type": "nbd", "id": format!("wb-{node}"), "node-name": node,
            "name": node, "writable": true,
        });
        if let Some(b) = &e.bitmap {
            args["bitmaps"] = serde_json::json!([b]);
        }
        q.execute_value("block-export-add", args)?;
        Ok(e)
    }

    /// The meta context of the served bitmap's dirty extents, if one is
    /// served.
    pub fn dirty_context(&self) -> Option<String> {
        self.bitmap
            .as_ref()
            .map(|b| format!("qemu:dirty-bitmap:{b}"))
    }

    /// A client of the writable export that also negotiates `contexts`.
    pub fn connect_with(&self, contexts: &[&str]) -> Result<Client> {
        Client::connect(Address::Unix(&self.sock), &self.node, contexts)
    }

    /// The daemon's monitor.
    pub fn qmp(&self) -> Result<Qmp> {
        Qmp::connect_unix(&self.qmp_path, Duration::from_secs(10))
    }

    /// standby's bitmaps on the image (generation, bitmap), oldest first.
    pub fn bitmaps(&self) -> Result<Vec<(u64, DirtyBitmap)>> {
        crate::cbt::bitmaps(&mut self.qmp()?, &self.node)
    }

    /// Why the image's tracking cannot be trusted (see
    /// [`crate::cbt::untrusted`]); None when it can.
    pub fn untrusted(&self) -> Result<Option<String>> {
        crate::cbt::untrusted(&mut self.qmp()?, &self.node)
    }

    /// A client of the writable export.
    pub fn connect(&self) -> Result<Client> {
        Client::connect(Address::Unix(&self.sock), &self.node, &[])
    }

    /// Ends the daemon cleanly (QMP `quit`: writes flushed, bitmaps
    /// stored in the image) and waits for it.
    pub fn close(self) -> Result<()> {
        let mut q = self.qmp()?;
        q.quit()?;
        if let Some(pid) = self.pid
            && !wait_gone(pid, &self.qmp_path, Duration::from_secs(30))
        {
            return Err(Error::Timeout {
                what: format!("qemu-storage-daemon (pid {pid}) to quit"),
                seconds: 30.0,
            });
        }
        for p in [&self.sock, &self.qmp_path, &self.pid_path] {
            let _ = fs::remove_file(p);
        }
        Ok(())
    }
}
