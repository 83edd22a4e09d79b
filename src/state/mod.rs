//! The actual state: one versioned JSON document ([`StateDoc`]) and where it
//! is kept. What the document holds lives in `document`; how it is stored
//! and locked lives behind the small [`Backend`] interface (modelled on
//! OpenTofu's statemgr: read, lock, write), with the local file backend in
//! `local`.
//!
//! Secrets never reach state: a backend stores exactly the attributes the
//! caller gives it, and `plan` only records non-sensitive attributes (see
//! [`ObjectState::attributes`]).

mod document;
mod local;
mod lock;
mod parse;

pub use document::*;
pub use local::{LOCAL_BACKUP_PATH, LOCAL_LOCK_PATH, LocalBackend};
pub use lock::{LockInfo, StateLock};
pub use parse::parse_document;

use std::path::{Path, PathBuf};

/// Where the local backend keeps the state, relative to the configuration directory.
pub const LOCAL_STATE_PATH: &str = ".standby/state.json";

/// Where the state is kept and how writers exclude each other.
///
/// Every command that writes takes the lock first, reads, changes the
/// document, and writes it under the lock:
///
/// ```no_run
/// # use standby::state::{Backend, LocalBackend, StateDoc};
/// # fn f() -> Result<(), standby::state::StateError> {
/// let backend = LocalBackend::new(".");
/// let lock = backend.lock("standby apply")?;
/// let mut doc = backend.read()?.unwrap_or_default();
/// // ... change doc.objects ...
/// backend.write(&lock, &mut doc)?;
/// # Ok(()) }
/// ```
///
/// An object-store backend fits the same shape: `lock` creates a lock
/// object with a conditional put (fails if it exists, its body is the
/// [`LockInfo`]), the returned [`StateLock`] deletes it on drop, and `write`
/// puts the document with compare-and-swap on the etag it read.
pub trait Backend: Send + Sync {
    /// Where the state lives, for messages (`.standby/state.json`, `az://...`).
    fn location(&self) -> String;

    /// The current document; `None` when no state was ever written.
    /// A document that does not parse is an error, never `None`.
    fn read(&self) -> Result<Option<StateDoc>, StateError>;

    /// Take the state lock for `command` (e.g. `standby state rm machine.db`).
    /// Fails at once with [`StateError::Locked`] when someone else holds it.
    /// The lock is released when the returned value is dropped (also during
    /// a panic) and when the process dies.
    fn lock(&self, command: &str) -> Result<StateLock, StateError>;

    /// Write `doc` under `lock`. `doc.serial` must be the serial the caller
    /// read (0 for a new state): the write is refused when the stored
    /// document moved since, has another lineage, or does not parse (a
    /// malformed state is never overwritten). On success `doc.serial` is
    /// bumped and `doc.standby_version` set to this build; the previous
    /// document is kept as a backup.
    fn write(&self, lock: &StateLock, doc: &mut StateDoc) -> Result<(), StateError>;
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not a valid state document: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "state file {path} has format version {found}, written by standby {written_by}; this build of standby {ours} reads format version {supported}"
    )]
    NewerFormat {
        path: PathBuf,
        found: u64,
        written_by: String,
        ours: &'static str,
        supported: u32,
    },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot take the state lock {path}: {source}")]
    LockIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state is locked by {holder}")]
    Locked { path: PathBuf, holder: String },
    #[error(
        "the state moved while this command ran: it was read at serial {expected} (lineage {lineage}), but {path} now holds serial {found} (lineage {found_lineage})"
    )]
    Conflict {
        path: PathBuf,
        lineage: uuid::Uuid,
        expected: u64,
        found_lineage: uuid::Uuid,
        found: u64,
    },
    #[error(
        "the state file {path} disappeared while this command ran (it was read at serial {expected})"
    )]
    Vanished { path: PathBuf, expected: u64 },
    #[error("the lock given to write {path} is not held on that state (it belongs to {lock_path})")]
    WrongLock { path: PathBuf, lock_path: String },
}

impl miette::Diagnostic for StateError {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        let text = match self {
            StateError::Read { .. } => "check the file's permissions".to_string(),
            StateError::Malformed { path, .. } => {
                let backup = backup_of(path);
                if backup.exists() {
                    format!(
                        "standby will not overwrite it; the previous copy is kept in {}: check it and restore it with `cp {} {}`",
                        backup.display(),
                        backup.display(),
                        path.display()
                    )
                } else {
                    "standby will not overwrite it; fix it by hand or restore it from your backups or version control".to_string()
                }
            }
            StateError::NewerFormat { written_by, .. } => {
                format!("upgrade standby to {written_by} or newer to read this state")
            }
            StateError::Write { .. } => {
                "the previous state is unchanged; check free space and permissions".to_string()
            }
            StateError::LockIo { .. } => "check the directory's permissions".to_string(),
            StateError::Locked { path, .. } => format!(
                "wait for that command to finish and run again; the lock is held by a live process (it is released when the process exits), so do not delete {}",
                path.display()
            ),
            StateError::Conflict { .. } => {
                "another command changed the state: run the command again to start from the new state"
                    .to_string()
            }
            StateError::Vanished { path, .. } => format!(
                "nothing was written; if the state was removed on purpose, restore it from {} or start over with a new state",
                backup_of(path).display()
            ),
            StateError::WrongLock { .. } => return None,
        };
        Some(Box::new(text))
    }
}

/// `state.json` -> `state.json.backup`: where the previous copy is kept.
pub(crate) fn backup_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".backup");
    PathBuf::from(name)
}

/// Read the local state of the configuration in `dir`; `None` when no state exists yet.
pub fn read_local(dir: &Path) -> Result<Option<StateDoc>, StateError> {
    LocalBackend::new(dir).read()
}
