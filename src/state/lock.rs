//! The state lock as callers see it: who holds it ([`LockInfo`]) and the
//! guard that releases it ([`StateLock`]), whatever backend made it.

use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;

/// Who holds the state lock; written next to the lock so that a second
/// command can say who is in its way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockInfo {
    pub id: uuid::Uuid,
    pub pid: u32,
    pub host: String,
    /// The command line that took the lock, e.g. `standby state rm machine.db`.
    pub command: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

impl LockInfo {
    /// Describe the current process running `command`.
    pub fn for_this_process(command: &str) -> LockInfo {
        let now = OffsetDateTime::now_utc();
        LockInfo {
            id: uuid::Uuid::new_v4(),
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            command: command.to_string(),
            since: now.replace_nanosecond(0).unwrap_or(now),
        }
    }
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self
            .since
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| self.since.to_string());
        write!(
            f,
            "pid {} on host {} running {:?} since {} (lock id {})",
            self.pid, self.host, self.command, since, self.id
        )
    }
}

/// A held state lock. Dropping it releases the lock (also while unwinding
/// from a panic); the process dying releases it too.
pub struct StateLock {
    info: LockInfo,
    location: String,
    /// What the backend needs to keep alive and release on drop (for the
    /// local backend: the locked file).
    _held: Box<dyn Send + Sync>,
}

impl StateLock {
    /// For backends: wrap what keeps the lock held.
    pub fn new(info: LockInfo, location: String, held: Box<dyn Send + Sync>) -> StateLock {
        StateLock {
            info,
            location,
            _held: held,
        }
    }

    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// The state location this lock guards (the backend's `location()`).
    pub fn location(&self) -> &str {
        &self.location
    }
}

impl fmt::Debug for StateLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateLock")
            .field("info", &self.info)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// The holder text of a lock file just found locked. A holder that locked
/// it an instant ago (two commands started together) may not have written
/// who it is yet, so re-read it for up to 2 s until `ready` accepts it;
/// then the last text read, or None when the file cannot be read.
pub fn holder_text(file: &mut std::fs::File, ready: impl Fn(&str) -> bool) -> Option<String> {
    use std::io::{Read, Seek};
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut text = String::new();
        let read = file.rewind().is_ok() && file.read_to_string(&mut text).is_ok();
        if (read && ready(&text)) || Instant::now() >= deadline {
            return read.then_some(text);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
