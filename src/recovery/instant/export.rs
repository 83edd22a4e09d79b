//! The export process: one disk of one point served read-only over NBD on
//! a unix socket by a helper process started from this executable (like
//! the thaw guard), so a test failover's VMs keep their disks after the
//! command that booted them has exited. Its files sit beside the VM's run
//! files at the site: `VM.DISK.nbd` (the socket), `.nbd.pid` (pid and
//! start time), `.nbd.json` (bytes served and fetched), `.nbd.log`
//! (its error, if it failed to start).
//!
//! The process ends when told (SIGTERM through [`Handle::stop`]) or by
//! itself once its socket file is gone (a cleanup removed the run's
//! directory), so no export outlives its run.

use super::nbd;
use super::reader::PointReader;
use crate::model::KeySource;
use crate::vault::{Id, Vault, manifest};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The first argument that makes this executable an export process.
pub const EXPORT_ARG: &str = "__standby-nbd-export";

/// Opened blob data an export keeps (bytes).
pub const CACHE_BYTES: u64 = 256 << 20;

/// What an export has done, as its `.nbd.json` says (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The disk's size.
    pub size: u64,
    /// Data (not zero) bytes in the point's disk.
    pub data: u64,
    /// Bytes handed to NBD clients.
    pub served: u64,
    /// Plain bytes of blobs fetched from the vault.
    pub fetched: u64,
    /// Requests this export made to the vault's store (opening the point
    /// and its index included).
    #[serde(default)]
    pub requests: u64,
    /// Bytes those requests read.
    #[serde(default)]
    pub request_bytes: u64,
    /// Index objects read to find the point's blobs.
    #[serde(default)]
    pub index_objects: u64,
    /// From the process's start until it accepted clients, ms.
    #[serde(default)]
    pub open_ms: u64,
}

/// Where an export's files are: `dir/VM.DISK.nbd*`.
#[derive(Debug, Clone)]
pub struct Files {
    pub socket: PathBuf,
    pub pid: PathBuf,
    pub stats: PathBuf,
    pub log: PathBuf,
}

impl Files {
    pub fn new(dir: &Path, vm: &str, disk: &str) -> Files {
        let base = format!("{vm}.{disk}.nbd");
        Files {
            socket: dir.join(&base),
            pid: dir.join(format!("{base}.pid")),
            stats: dir.join(format!("{base}.json")),
            log: dir.join(format!("{base}.log")),
        }
    }

    /// The export as a QEMU/qemu-img file name.
    pub fn url(&self, disk: &str) -> String {
        format!("nbd+unix:///{disk}?socket={}", self.socket.display())
    }

    /// The export's last written counters.
    pub fn stats(&self) -> Option<Stats> {
        std::fs::read(&self.stats)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Removes every file of the export (once it has ended): nothing of a
    /// finished run stays beside the VM's files.
    pub fn remove(&self) {
        for p in [&self.socket, &self.pid, &self.stats, &self.log] {
            let _ = std::fs::remove_file(p);
        }
        for p in [&self.socket, &self.stats, &self.pid] {
            let _ = std::fs::remove_file(format!("{}.tmp", p.display()));
        }
    }
}

/// What the export process needs to open the point (no secret: a key file
/// path or the name of the variable holding the key, inherited).
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub key: KeySource,
    /// The configuration directory (relative vault paths and key files).
    pub base: PathBuf,
    pub point: Id,
    pub disk: String,
}

/// `pid start-time` of a live process, else None.
fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    if state == "Z" {
        return None;
    }
    f.nth(18)?.parse().ok()
}

fn write_pid(path: &Path, pid: u32) -> std::io::Result<()> {
    let t = start_time(pid).unwrap_or(0);
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid} {t}\n"))?;
    std::fs::rename(&tmp, path)
}

/// A running export, found by its pid file.
#[derive(Debug)]
pub struct Handle {
    pub files: Files,
    pid: u32,
    start: u64,
}

impl Handle {
    /// The export whose pid file is in `files`, if it still runs (the same
    /// process: pid and start time match).
    pub fn find(files: &Files) -> Option<Handle> {
        let text = std::fs::read_to_string(&files.pid).ok()?;
        let mut it = text.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(pid)), Some(Ok(start))) = (it.next(), it.next()) else {
            return None;
        };
        let pid = u32::try_from(pid).ok()?;
        (start_time(pid) == Some(start)).then(|| Handle {
            files: files.clone(),
            pid,
            start,
        })
    }

    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    /// Ends the export (SIGTERM, then SIGKILL after 5 s) and removes its
    /// socket and pid file; the counters and log stay ([`Files::remove`]).
    pub fn stop(&self) {
        let _ = signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.alive() {
            let _ = signal(self.pid, libc::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_file(&self.files.socket);
        let _ = std::fs::remove_file(&self.files.pid);
    }
}

fn signal(pid: u32, sig: i32) -> std::io::Result<()> {
    let pid = i32::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) with a pid we recorded and checked by start time.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Why an export could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "the NBD socket path {0} is longer than the 107 bytes a unix socket allows; use a shorter site root"
    )]
    PathTooLong(PathBuf),
    #[error("instant recovery needs the standby executable to serve NBD: {0}")]
    NoExecutable(String),
    #[error("starting the NBD export of disk {disk}: {reason}")]
    Start { disk: String, reason: String },
}

/// Starts the export of `src` with its files at `files` (a leftover export
/// there is stopped first) and waits until its socket accepts clients.
pub fn start(src: &Source, files: &Files, timeout: Duration) -> Result<Handle, ExportError> {
    use std::os::unix::process::CommandExt;
    if files.socket.as_os_str().len() >= 108 {
        return Err(ExportError::PathTooLong(files.socket.clone()));
    }
    if let Some(old) = Handle::find(files) {
        old.stop();
    }
    let _ = std::fs::remove_file(&files.socket);
    let start_err = |reason: String| ExportError::Start {
        disk: src.disk.clone(),
        reason,
    };
    let exe = std::env::current_exe().map_err(|e| ExportError::NoExecutable(e.to_string()))?;
    let exe = standby_exe(&exe).ok_or_else(|| {
        ExportError::NoExecutable(format!(
            "{} is not the standby binary, and none was found beside it",
            exe.display()
        ))
    })?;
    let log = std::fs::File::create(&files.log)
        .map_err(|e| start_err(format!("creating {}: {e}", files.log.display())))?;
    let (kind, key) = match &src.key {
        KeySource::File(p) => ("file", p.to_string_lossy().into_owned()),
        KeySource::Env(v) => ("env", v.clone()),
    };
    let mut child = std::process::Command::new(exe)
        .arg(EXPORT_ARG)
        .arg(&src.url)
        .arg(kind)
        .arg(key)
        .arg(&src.base)
        .arg(src.point.hex())
        .arg(&src.disk)
        .arg(&files.socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        // Its own process group: an interrupt of the command does not end
        // the export a running VM reads its disk from.
        .process_group(0)
        .spawn()
        .map_err(|e| start_err(format!("running {EXPORT_ARG}: {e}")))?;
    let _ = write_pid(&files.pid, child.id());
    let began = Instant::now();
    loop {
        if std::os::unix::net::UnixStream::connect(&files.socket).is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let why = std::fs::read_to_string(&files.log).unwrap_or_default();
            return Err(start_err(format!("it exited ({status}): {}", why.trim())));
        }
        if began.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(start_err(format!(
                "its socket did not accept clients within {} s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reaped by a thread while this process lives; after it, by init.
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(Handle {
        files: files.clone(),
        pid,
        start: start_time(pid).unwrap_or(0),
    })
}

/// The standby binary: this one, or (for a test binary calling the
/// library) `target/debug/standby` beside its `deps/` directory.
fn standby_exe(exe: &Path) -> Option<PathBuf> {
    if exe.file_name().is_some_and(|n| n == "standby") {
        return Some(exe.to_path_buf());
    }
    let beside = exe.parent()?.parent()?.join("standby");
    beside.is_file().then_some(beside)
}

/// Runs the export when `args` (the process's, program name first) say
/// this process was started as one, until it is ended; its error, for the
/// caller to write to stderr (the `.nbd.log` the parent reads). None: not
/// an export.
pub fn export_main(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Option<Result<(), ServeError>> {
    let mut args = args.into_iter().skip(1);
    if args.next()? != EXPORT_ARG {
        return None;
    }
    let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let [url, kind, key, base, point, disk, socket] = rest.as_slice() else {
        return Some(Err(ServeError::Usage));
    };
    let key = if kind == "env" {
        KeySource::Env(key.clone())
    } else {
        KeySource::File(PathBuf::from(key))
    };
    let Some(point) = Id::parse(point) else {
        return Some(Err(ServeError::BadPoint(point.clone())));
    };
    let socket = PathBuf::from(socket);
    let files = Files {
        pid: PathBuf::from(format!("{}.pid", socket.display())),
        stats: PathBuf::from(format!("{}.json", socket.display())),
        log: PathBuf::from(format!("{}.log", socket.display())),
        socket,
    };
    let _ = write_pid(&files.pid, std::process::id());
    let began = Instant::now();
    Some(
        run_export(began, url, &key, Path::new(base), point, disk, &files)
            .map_err(ServeError::Failed),
    )
}

/// Why an export process (the helper [`start`] runs) ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{arg}: expected 7 arguments", arg = EXPORT_ARG)]
    Usage,
    #[error("{arg}: bad point id {0:?}", arg = EXPORT_ARG)]
    BadPoint(String),
    /// Opening the vault or the point, or serving, failed (the text says
    /// which).
    #[error("{0}")]
    Failed(String),
}

fn run_export(
    began: Instant,
    url: &str,
    key: &KeySource,
    base: &Path,
    point: Id,
    disk: &str,
    files: &Files,
) -> Result<(), String> {
    let vault = Arc::new(Vault::open(url, key, base).map_err(|e| e.to_string())?);
    // The configuration's index cache (`workspace::cache_dir`), for the
    // blobs the point's own index objects do not list.
    vault.use_index_cache(base.join(".standby").join("cache"));
    let m = manifest::read(&vault, &point).map_err(|e| e.to_string())?;
    let reader = Arc::new(
        PointReader::open(Arc::clone(&vault), &m, disk, CACHE_BYTES).map_err(|e| e.to_string())?,
    );
    // Bound under a temporary name and renamed: the socket appears only
    // once it accepts clients.
    let tmp = PathBuf::from(format!("{}.tmp", files.socket.display()));
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .map_err(|e| format!("binding {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &files.socket)
        .map_err(|e| format!("renaming {} into place: {e}", tmp.display()))?;
    let open_ms = began.elapsed().as_millis() as u64;
    let export = Arc::new(nbd::Export {
        name: disk.to_string(),
        reader: Arc::clone(&reader),
    });
    let watch = files.clone();
    std::thread::spawn(move || watchdog(&watch, &reader, open_ms));
    nbd::serve(listener, export).map_err(|e| format!("serving: {e}"))
}

/// Writes the counters when they change and ends the process once its
/// socket file is gone (its run was cleaned up) or stops being ours.
fn watchdog(files: &Files, reader: &PointReader, open_ms: u64) {
    let mut last = Stats::default();
    let ino = std::fs::metadata(&files.socket).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    loop {
        let c = &reader.counters;
        let now = Stats {
            size: reader.size(),
            data: reader.data_bytes(),
            served: c.served.load(Ordering::Relaxed),
            fetched: c.fetched.load(Ordering::Relaxed),
            requests: crate::store::counts().requests(),
            request_bytes: crate::store::counts().bytes_in,
            index_objects: reader.index_objects,
            open_ms,
        };
        if now != last {
            let tmp = PathBuf::from(format!("{}.tmp", files.stats.display()));
            if let Ok(b) = serde_json::to_vec(&now)
                && std::fs::write(&tmp, b).is_ok()
                && std::fs::rename(&tmp, &files.stats).is_ok()
            {
                last = now;
            }
        }
        let same = std::fs::metadata(&files.socket).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        if same.is_none() || same != ino {
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
