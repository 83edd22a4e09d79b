//! One run per recovery plan at a time: an exclusive OS file lock on
//! `.standby/runs/<plan>.lock` in the configuration directory, held by a
//! failover, cleanup, drill, reprotect or failback for its whole length.
//! The lock dies with its process (also on `kill -9`), so a dead run never
//! blocks the next one; the holder's [`LockInfo`] in the file lets a second
//! run name who is in its way. `standby approve` does not take it: it
//! writes to the run that holds it.
//!
//! The lock is per configuration directory and host; a run from another
//! host sharing a remote state is still refused by the run recorded in the
//! state (its owner cannot be checked from here, so it counts as alive).

use super::run::{RecoveryError, plan_arg};
use crate::model::Address;
use crate::state::LockInfo;
use crate::workspace::Workspace;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

/// A held run lock; dropping it (or the process dying) releases it.
pub struct RunLock {
    file: File,
    pub info: LockInfo,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Clear the holder text while still holding the lock.
        let _ = self.file.set_len(0);
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

/// `<config dir>/.standby/runs/<plan>.lock`.
pub fn path(ws: &Workspace, plan: &Address) -> PathBuf {
    let safe: String = plan
        .instance_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '%'
            }
        })
        .collect();
    ws.root().join(".standby/runs").join(format!("{safe}.lock"))
}

/// Take the plan's run lock for `command`, or refuse at once naming the
/// run that holds it.
pub fn acquire(ws: &Workspace, plan: &Address, command: &str) -> Result<RunLock, RecoveryError> {
    let path = path(ws, plan);
    let io = |source| RecoveryError::RunLock {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => {}
        Err(fs4::TryLockError::WouldBlock) => {
            let holder = holder(&mut file);
            return Err(RecoveryError::Refused {
                message: format!("another run of {plan} is in progress: {holder}"),
                help: format!(
                    "one run per recovery plan at a time: wait for it to finish (`standby status` shows where each machine is), or stop it (Ctrl-C or SIGTERM) and run `standby {}` again; a run whose process is gone does not block",
                    command.strip_prefix("standby ").map_or_else(
                        || format!("... {}", plan_arg(plan)),
                        |c| format!("{c} {}", plan_arg(plan))
                    )
                ),
            });
        }
        Err(fs4::TryLockError::Error(e)) => return Err(io(e)),
    }
    let info = LockInfo::for_this_process(command);
    let text = serde_json::to_string_pretty(&info).unwrap_or_default() + "\n";
    let lock = RunLock { file, info };
    let mut f = &lock.file;
    f.set_len(0).map_err(io)?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    Ok(lock)
}

/// Who holds the lock. A holder that took it an instant ago may not have
/// written who it is yet: give it a moment, so the refusal can name it.
fn holder(file: &mut File) -> String {
    crate::state::holder_text(file, |t| serde_json::from_str::<LockInfo>(t).is_ok())
        .and_then(|t| serde_json::from_str::<LockInfo>(&t).ok())
        .map_or_else(
            || "another standby process (it has not recorded who it is)".into(),
            |info| info.to_string(),
        )
}
