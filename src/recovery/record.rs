//! Writing runs into the state as they go. A run does not hold the state
//! lock while it runs (`standby approve` must be able to write): every
//! update takes the lock, reads the newest document, changes it and writes
//! it. When another command holds the lock, an update waits up to the lock
//! timeout (`--lock-timeout`, default [`DEFAULT_LOCK_TIMEOUT`]), tells who
//! holds it (once per wait, through the notice callback), stops waiting
//! when the run is interrupted, and keeps each wait ([`Recorder::waits`])
//! so that a run's report shows it and its RTO leaves it out.

use crate::exec::Cancel;
use crate::state::{Backend, StateDoc, StateError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a recovery run's state update waits for another command's
/// lock unless `--lock-timeout` says otherwise: a run must not fail because
/// `standby approve` or another plan's run wrote at the same instant.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Called with a line to show the user (who holds the lock a run waits for).
pub type Notice = Arc<dyn Fn(String) + Send + Sync>;

#[derive(Clone)]
pub struct Recorder {
    backend: Arc<dyn Backend>,
    command: String,
    /// One update at a time within this process.
    mine: Arc<Mutex<()>>,
    lock_timeout: Duration,
    notice: Option<Notice>,
    /// Set once by the run: a wait that began before it was cancelled stops.
    cancel: Arc<OnceLock<Cancel>>,
    /// Every wait for the lock, over all clones.
    waits: Arc<Mutex<Vec<LockWait>>>,
}

/// One wait of an update for another command's state lock.
#[derive(Debug, Clone)]
pub struct LockWait {
    pub from: Instant,
    pub to: Instant,
    /// Who held the lock (pid, host, command, since).
    pub holder: String,
}

impl Recorder {
    pub fn new(backend: Arc<dyn Backend>, command: &str) -> Recorder {
        Recorder {
            backend,
            command: command.to_string(),
            mine: Arc::new(Mutex::new(())),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            notice: None,
            cancel: Arc::new(OnceLock::new()),
            waits: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Wait up to `timeout` for another command's lock (zero: fail at once).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Recorder {
        self.lock_timeout = timeout;
        self
    }

    /// Where to say who holds the lock while an update waits for it.
    pub fn with_notice(mut self, notice: Notice) -> Recorder {
        self.notice = Some(notice);
        self
    }

    /// Stop waiting for the lock when `cancel` is set during a wait (a
    /// wait that begins after it was set, as a run's cleanup does, is only
    /// bounded by the timeout). The first call wins.
    pub fn interruptible_by(&self, cancel: &Cancel) {
        let _ = self.cancel.set(cancel.clone());
    }

    /// The waits for another command's lock so far, oldest first.
    pub fn waits(&self) -> Vec<LockWait> {
        self.waits.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The command line the recorder locks the state for (`standby drill`).
    pub fn command(&self) -> &str {
        &self.command
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    pub fn read(&self) -> Result<Option<StateDoc>, StateError> {
        self.backend.read()
    }

    /// The state's backup when the state itself is missing (see
    /// [`Backend::orphaned_backup`]).
    pub fn orphaned_backup(&self) -> Option<String> {
        self.backend.orphaned_backup()
    }

    /// Lock (waiting as described above), read, apply `f`, write. `f`'s
    /// `Err` writes nothing.
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut StateDoc) -> Result<T, Refusal>,
    ) -> Result<T, UpdateError> {
        let _mine = self.mine.lock().unwrap_or_else(|p| p.into_inner());
        let cancel = self.cancel.get();
        let was_cancelled = cancel.is_some_and(|c| c.is_cancelled());
        let interrupted = || !was_cancelled && cancel.is_some_and(|c| c.is_cancelled());
        let location = self.backend.location();
        let timeout = self.lock_timeout;
        let from = Instant::now();
        let mut held_by = None;
        let mut on_wait = |holder: &str| {
            held_by = Some(holder.to_string());
            if let Some(n) = &self.notice {
                n(format!(
                    "waiting for the state lock on {location}: held by {holder} (up to {}s; --lock-timeout)",
                    timeout.as_secs()
                ));
            }
        };
        let taken = crate::state::lock_waiting(
            &*self.backend,
            &self.command,
            timeout,
            &interrupted,
            &mut on_wait,
        );
        if let Some(holder) = held_by
            && let Ok(mut w) = self.waits.lock()
        {
            w.push(LockWait {
                from,
                to: Instant::now(),
                holder,
            });
        }
        let taken = taken?;
        let read = self.backend.read()?;
        // A lost state is refused before `f` decides anything from an
        // empty document (its backup says otherwise).
        if read.is_none()
            && let Some(backup) = self.backend.orphaned_backup()
        {
            return Err(StateError::Orphaned { location, backup }.into());
        }
        let mut doc = read.unwrap_or_default();
        let out = f(&mut doc).map_err(UpdateError::Refused)?;
        self.backend.write(&taken.lock, &mut doc)?;
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Why an update's change was not made, and what to run instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub message: String,
    /// What to run instead (shown as the error's help).
    pub help: Option<String>,
}

impl Refusal {
    pub fn new(message: impl Into<String>, help: impl Into<String>) -> Refusal {
        Refusal {
            message: message.into(),
            help: Some(help.into()),
        }
    }
}

impl From<String> for Refusal {
    fn from(message: String) -> Refusal {
        Refusal {
            message,
            help: None,
        }
    }
}

impl From<&str> for Refusal {
    fn from(message: &str) -> Refusal {
        Refusal::from(message.to_string())
    }
}
