//! Waiting for the state lock: bounded (`--lock-timeout`), interruptible,
//! and said aloud. [`Backend::lock`] fails at once when someone else holds
//! the lock; [`lock_waiting`] retries until `timeout` has passed, calling
//! `on_wait` once with the holder (so a command can say who is in its way)
//! and giving up when `interrupted` turns true.

use super::{Backend, StateError, StateLock};
use std::time::{Duration, Instant};

/// How often a waiting command tries the lock again.
const RETRY: Duration = Duration::from_millis(50);

/// A lock taken by [`lock_waiting`], and how long it waited for it.
pub struct Waited {
    pub lock: StateLock,
    pub waited: Duration,
}

/// Take the state lock for `command`, waiting up to `timeout` (zero: fail
/// at once, like [`Backend::lock`]) while another command holds it.
///
/// `on_wait(holder)` is called once, when the first attempt finds the lock
/// held and `timeout` is not zero. Errors: the backend's `Locked` /
/// `RemoteLocked` when `timeout` passed ([`StateError::LockTimeout`] when
/// it was not zero), [`StateError::LockWaitInterrupted`] when `interrupted`
/// returned true while waiting, any other lock error at once.
pub fn lock_waiting(
    backend: &dyn Backend,
    command: &str,
    timeout: Duration,
    interrupted: &dyn Fn() -> bool,
    on_wait: &mut dyn FnMut(&str),
) -> Result<Waited, StateError> {
    let start = Instant::now();
    let mut told = false;
    loop {
        match backend.lock(command) {
            Ok(lock) => {
                return Ok(Waited {
                    lock,
                    waited: start.elapsed(),
                });
            }
            Err(e @ (StateError::Locked { .. } | StateError::RemoteLocked { .. })) => {
                if timeout.is_zero() {
                    return Err(e);
                }
                let holder = match &e {
                    StateError::Locked { holder, .. } | StateError::RemoteLocked { holder, .. } => {
                        holder.clone()
                    }
                    _ => String::new(),
                };
                if start.elapsed() >= timeout {
                    return Err(StateError::LockTimeout {
                        location: backend.location(),
                        waited: format!("{:.0}s", timeout.as_secs_f64()),
                        holder,
                    });
                }
                if interrupted() {
                    return Err(StateError::LockWaitInterrupted {
                        location: backend.location(),
                        holder,
                    });
                }
                if !told {
                    told = true;
                    on_wait(&holder);
                }
                std::thread::sleep(RETRY.min(timeout.saturating_sub(start.elapsed())));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A `--lock-timeout` value that is not a duration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{given:?} is not a duration like 30s, 2m or 0s: {why}")]
pub struct BadDuration {
    pub given: String,
    pub why: String,
}

/// Parse a `--lock-timeout` value: `0`, `30s`, `2m`, `1h` (a bare number
/// is seconds).
pub fn parse_lock_timeout(s: &str) -> Result<Duration, BadDuration> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    if t.trim_end_matches(|c| "smhdw".contains(c)).parse::<u64>() == Ok(0) {
        return Ok(Duration::ZERO);
    }
    t.parse::<crate::model::Duration>()
        .map(|d| Duration::from_secs(d.as_secs()))
        .map_err(|e| BadDuration {
            given: s.to_string(),
            why: e.to_string(),
        })
}

/// A backend whose `lock` waits (see [`lock_waiting`]) up to `timeout` for
/// another command's lock, telling `notice` who holds it; everything else
/// is the inner backend's. Commands that take the lock once (apply, state
/// rm) get `--lock-timeout` through it without knowing.
pub struct Waiting {
    pub inner: Box<dyn Backend>,
    pub timeout: Duration,
    pub notice: Box<dyn Fn(String) + Send + Sync>,
}

impl Backend for Waiting {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn read(&self) -> Result<Option<super::StateDoc>, StateError> {
        self.inner.read()
    }

    fn lock(&self, command: &str) -> Result<StateLock, StateError> {
        let location = self.inner.location();
        let secs = self.timeout.as_secs();
        lock_waiting(&*self.inner, command, self.timeout, &|| false, &mut |holder| {
            (self.notice)(format!(
                "waiting for the state lock on {location}: held by {holder} (up to {secs}s; --lock-timeout)"
            ))
        })
        .map(|w| w.lock)
    }

    fn write(&self, lock: &StateLock, doc: &mut super::StateDoc) -> Result<(), StateError> {
        self.inner.write(lock, doc)
    }

    fn force_unlock(&self, id: &str) -> Result<super::LockInfo, StateError> {
        self.inner.force_unlock(id)
    }

    fn orphaned_backup(&self) -> Option<String> {
        self.inner.orphaned_backup()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_timeouts_parse_as_terraform_spells_them() {
        assert_eq!(parse_lock_timeout("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_lock_timeout("0"), Ok(Duration::ZERO));
        assert_eq!(parse_lock_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_lock_timeout("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_lock_timeout("soon").is_err());
    }
}
