//! The test guest: a tiny Linux built from Debian packages only (see
//! `guest/build.sh`), cached under a hash of its inputs and built under a
//! lock so parallel tests share one build.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::vm::{Boot, DiskFormat, DiskSpec};

/// The builder script, embedded so the cache key covers it.
pub const BUILD_SCRIPT: &str = include_str!("../guest/build.sh");

/// Packages whose versions go into the cache key.
const PACKAGES: &[&str] = &[
    "linux-image-cloud-amd64",
    "busybox-static",
    "qemu-guest-agent",
    "sqlite3",
];

/// The built guest's files.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The pristine root image (qcow2). Boot from an overlay
    /// ([`Guest::root_overlay`]), never from this file.
    pub root: PathBuf,
}

/// Kernel command line of the guest. `writer` starts the SQLite writer on
/// the second disk (`/dev/vdb`, ext4, mounted at `/data`).
pub fn append(writer: bool) -> String {
    let mut s = String::from("console=ttyS0 quiet panic=-1");
    if writer {
        s.push_str(" standby.writer=1");
    }
    s
}

impl Guest {
    /// Direct kernel boot of this guest.
    pub fn boot(&self, writer: bool) -> Boot {
        Boot::Kernel {
            kernel: self.kernel.clone(),
            initrd: Some(self.initrd.clone()),
            append: append(writer),
        }
    }

    /// Creates `path`, a qcow2 overlay over the pristine root, and returns
    /// it as disk `node_name` (attach it first: it becomes `/dev/vda`).
    pub fn root_overlay(&self, path: &Path, node_name: &str) -> Result<DiskSpec> {
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&self.root)
            .arg(path))?;
        Ok(DiskSpec {
            node_name: node_name.into(),
            path: path.to_path_buf(),
            format: DiskFormat::Qcow2,
            read_only: false,
        })
    }
}

/// Creates a data disk of `size` bytes at `path`: an empty ext4 file system
/// (`mke2fs -t ext4`), stored as `format` (qcow2 converted from a sparse raw
/// file).
pub fn make_data_disk(path: &Path, size: u64, format: DiskFormat) -> Result<()> {
    let raw = path.with_extension("raw.tmp");
    let f = fs::File::create(&raw).map_err(Error::io(format!("creating {}", raw.display())))?;
    f.set_len(size)
        .map_err(Error::io(format!("sizing {}", raw.display())))?;
    drop(f);
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "data"])
        .arg(&raw))?;
    match format {
        DiskFormat::Raw => {
            fs::rename(&raw, path).map_err(Error::io(format!("renaming to {}", path.display())))
        }
        DiskFormat::Qcow2 => {
            run(Command::new("qemu-img")
                .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(path))?;
            fs::remove_file(&raw).map_err(Error::io(format!("removing {}", raw.display())))
        }
    }
}

/// Creates an empty (all-zero) disk image of `size` bytes.
pub fn make_blank_disk(path: &Path, size: u64, format: DiskFormat) -> Result<()> {
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", format.as_str()])
        .arg(path)
        .arg(size.to_string()))
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingTool {
            package: match prog.as_str() {
                "qemu-img" => "qemu-utils",
                "mke2fs" => "e2fsprogs",
                _ => "it",
            }
            .into(),
            tool: prog.clone(),
        },
        _ => Error::Io {
            context: format!("running {prog}"),
            source: e,
        },
    })?;
    if !out.status.success() {
        return Err(Error::Io {
            context: format!(
                "{prog} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            source: std::io::Error::other("command failed"),
        });
    }
    Ok(())
}

/// The cache key: the builder script and the versions of the packages it
/// takes files from (and the kernel files present).
fn cache_key() -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(BUILD_SCRIPT.as_bytes());
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Version} ${Status}\\n"])
        .args(PACKAGES)
        .output()
        .map_err(Error::io("running dpkg-query"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    for p in PACKAGES {
        if !text
            .lines()
            .any(|l| l.starts_with(&format!("{p} ")) && l.ends_with("installed"))
        {
            return Err(Error::MissingTool {
                tool: format!("package {p}"),
                package: (*p).into(),
            });
        }
    }
    h.update(&out.stdout);
    if let Ok(rd) = fs::read_dir("/boot") {
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("vmlinuz-"))
            .collect();
        names.sort();
        h.update(names.join(",").as_bytes());
    }
    Ok(h.finalize().to_hex()[..16].to_string())
}

/// Returns the test guest, building it into `cache/<key>/` first if that
/// does not exist. Concurrent callers (test threads, test binaries) wait on
/// `cache/.lock`; a build goes to a temporary directory renamed into place,
/// so a killed build leaves nothing that looks finished.
pub fn ensure(cache: &Path) -> Result<Guest> {
    // Absolute paths: overlays name the root image as their backing file.
    fs::create_dir_all(cache).map_err(Error::io(format!("creating {}", cache.display())))?;
    let cache =
        &fs::canonicalize(cache).map_err(Error::io(format!("resolving {}", cache.display())))?;
    let key = cache_key()?;
    let dir = cache.join(&key);
    let guest = Guest {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        root: dir.join("root.qcow2"),
    };
    if dir.join("done").exists() {
        return Ok(guest);
    }
    fs::create_dir_all(cache).map_err(Error::io(format!("creating {}", cache.display())))?;
    let lock_path = cache.join(".lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(Error::io(format!("opening {}", lock_path.display())))?;
    // SAFETY: flock on an fd we own; released when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::Io {
            context: format!("locking {}", lock_path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    if dir.join("done").exists() {
        return Ok(guest);
    }
    let tmp = cache.join(format!("{key}.building"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
    let script = tmp.join("build.sh");
    fs::write(&script, BUILD_SCRIPT).map_err(Error::io(format!("writing {}", script.display())))?;
    let out = Command::new("bash")
        .arg(&script)
        .arg(&tmp)
        .output()
        .map_err(Error::io("running the guest builder"))?;
    if !out.status.success() {
        return Err(Error::GuestBuild {
            dir: tmp,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let _ = fs::remove_file(&script);
    fs::write(tmp.join("done"), &key).map_err(Error::io("marking the guest built"))?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir).map_err(Error::io(format!("moving the guest to {}", dir.display())))?;
    // Guests built from older inputs are dead weight now (still under the lock).
    if let Ok(rd) = fs::read_dir(cache) {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name != key && !name.starts_with('.') && e.path().is_dir() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(guest)
}
