//! Writing runs into the state as they go. A run does not hold the state
//! lock while it runs (`standby approve` must be able to write): every
//! update takes the lock, reads the newest document, changes it and writes
//! it, waiting briefly when another standby holds the lock.

use crate::state::{Backend, StateDoc, StateError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an update waits for another command's lock.
const LOCK_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Recorder {
    backend: Arc<dyn Backend>,
    command: String,
    /// One update at a time within this process.
    mine: Arc<Mutex<()>>,
}

impl Recorder {
    pub fn new(backend: Arc<dyn Backend>, command: &str) -> Recorder {
        Recorder {
            backend,
            command: command.to_string(),
            mine: Arc::new(Mutex::new(())),
        }
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

    /// Lock, read, apply `f`, write. `f`'s `Err` writes nothing.
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut StateDoc) -> Result<T, String>,
    ) -> Result<T, UpdateError> {
        let _mine = self.mine.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + LOCK_WAIT;
        let lock = loop {
            match self.backend.lock(&self.command) {
                Ok(l) => break l,
                Err(StateError::Locked { .. } | StateError::RemoteLocked { .. })
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(UpdateError::State(e)),
            }
        };
        let mut doc = self.backend.read()?.unwrap_or_default();
        let out = f(&mut doc).map_err(UpdateError::Refused)?;
        self.backend.write(&lock, &mut doc)?;
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Refused(String),
}
