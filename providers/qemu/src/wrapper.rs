//! The tracked wrapper a failed-over VM runs on: a qcow2 image whose data
//! lives in the restored raw image (`data_file`, `data_file_raw=on`,
//! `preallocation=metadata`: the raw image stays a valid raw image at the
//! same offsets), carrying the persistent dirty bitmap `standby-1` that
//! counts what the VM writes after the point it was restored from, so
//! reprotect reads only that.

use crate::error::{Error, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The dirty-bitmap granularity of a wrapper: the vault's 4 KiB block,
/// because failback ships per 4 KiB block (a 64 GiB disk's bitmap is
/// 2 MiB).
pub const GRANULARITY: u64 = 4096;

/// The wrapper of the raw `image`: `DISK.raw` -> `DISK.qcow2`, any other
/// name gets `.qcow2` appended.
pub fn path(image: &Path) -> PathBuf {
    if image.extension().is_some_and(|e| e == "raw") {
        image.with_extension("qcow2")
    } else {
        let mut p = image.as_os_str().to_owned();
        p.push(".qcow2");
        PathBuf::from(p)
    }
}

/// Runs `qemu-img ARGS` (`what` names it in errors).
pub(crate) fn qemu_img(args: &[&std::ffi::OsStr], what: &str) -> Result<()> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(Error::io(format!("running qemu-img for the {what}")))?;
    if !out.status.success() {
        return Err(Error::Image {
            what: what.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Adds the empty persistent bitmap `standby-1` (granularity
/// [`GRANULARITY`]) to the qcow2 `image`, which no process has open.
pub fn add_bitmap(image: &Path) -> Result<()> {
    qemu_img(
        &[
            "bitmap".as_ref(),
            "--add".as_ref(),
            "-g".as_ref(),
            GRANULARITY.to_string().as_ref(),
            image.as_os_str(),
            format!("{}1", crate::cbt::BITMAP_PREFIX).as_ref(),
        ],
        &format!("bitmap --add on {}", image.display()),
    )
}

/// Makes (afresh) the `wrapper` of the raw `image`; with `bitmap`, with an
/// empty `standby-1` (a VM booting it counts from now). `qemu-img create`
/// zeroes the data file it is given, so the image is moved aside
/// meanwhile and moved back; a run killed in between leaves it at
/// `IMAGE.restored`, which the next call moves back first.
pub fn make(image: &Path, wrapper: &Path, bitmap: bool) -> Result<()> {
    let aside = {
        let mut p = image.as_os_str().to_owned();
        p.push(".restored");
        PathBuf::from(p)
    };
    if aside.exists() && !image.exists() {
        fs::rename(&aside, image).map_err(Error::io(format!("moving back {}", aside.display())))?;
    }
    let size = fs::metadata(image)
        .map_err(Error::io(format!("reading {}", image.display())))?
        .len();
    let _ = fs::remove_file(wrapper);
    fs::rename(image, &aside).map_err(Error::io(format!("moving aside {}", image.display())))?;
    let opts = format!(
        "data_file={},data_file_raw=on,preallocation=metadata",
        image.to_string_lossy().replace(',', ",,")
    );
    let made = qemu_img(
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-o".as_ref(),
            opts.as_ref(),
            wrapper.as_os_str(),
            size.to_string().as_ref(),
        ],
        &format!("create of the wrapper of {}", image.display()),
    );
    // Back in place whatever happened: the restored data is the point.
    fs::rename(&aside, image).map_err(Error::io(format!("moving back {}", aside.display())))?;
    made?;
    if bitmap {
        add_bitmap(wrapper)?;
    }
    Ok(())
}
