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
mod remote;
mod runs;
mod wait;

pub use document::*;
pub use local::{LOCAL_BACKUP_PATH, LOCAL_LOCK_PATH, LocalBackend};
pub use lock::{LockInfo, StateLock, holder_text};
pub use parse::parse_document;
pub use remote::{ObjectStoreBackend, REMOTE_BACKUP_NAME, REMOTE_LOCK_NAME, REMOTE_STATE_NAME};
pub use runs::*;
pub use wait::{Waited, Waiting, lock_waiting, parse_lock_timeout};

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
/// The object-store backend ([`ObjectStoreBackend`]) fits the same shape:
/// `lock` creates a lock object with a conditional put (fails if it exists,
/// its body is the [`LockInfo`]), the returned [`StateLock`] deletes it on
/// drop, and `write` puts the document with compare-and-swap on the etag it
/// read. [`open_backend`] picks the backend a configuration asks for.
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

    /// Remove the lock whose id is `id`, left behind by a command that can
    /// no longer release it; returns who held it. Refused unless `id` is the
    /// current lock's id. Backends whose locks die with their process (the
    /// local OS lock) never remove anything and say so instead.
    fn force_unlock(&self, id: &str) -> Result<LockInfo, StateError>;

    /// Where the state's backup copy is, when the state itself is missing
    /// but the backup exists (the state was lost or deleted): a command
    /// must not start over from nothing then. None otherwise.
    fn orphaned_backup(&self) -> Option<String> {
        None
    }
}

/// Check the shape of a state backend URL (`--backend-config url=...`)
/// without opening anything: no credentials or network needed.
pub fn check_backend_url(url: &str) -> Result<(), crate::store::StoreError> {
    crate::store::check_url(url)
}

/// The backend of the configuration in `config_root`: the local files under
/// `.standby/` when there is no `backend` block, else the object store its
/// URL names (`az://`, `s3://`, or `file://DIR`, a directory used like an
/// object store, e.g. a shared mount; relative to `config_root`).
pub fn open_backend(
    config_root: &Path,
    backend: Option<&crate::model::Backend>,
) -> Result<Box<dyn Backend>, StateError> {
    match backend {
        None => Ok(Box::new(LocalBackend::new(config_root))),
        Some(b) => {
            let store = crate::store::open(&b.url, config_root)?;
            Ok(Box::new(ObjectStoreBackend::new(store)?))
        }
    }
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
    #[error(
        "the state is missing but its backup {backup} exists: the state {location} was lost or deleted, and without it standby cannot tell where the machines run; nothing was written"
    )]
    Orphaned { location: String, backup: String },
    #[error("the lock given to write {path} is not held on that state (it belongs to {lock_path})")]
    WrongLock { path: PathBuf, lock_path: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the state {location} is locked by {holder}; lock age {age}")]
    RemoteLocked {
        location: String,
        holder: String,
        age: String,
        /// The lock's id, when its lock object could be read.
        id: Option<uuid::Uuid>,
        lock_object: String,
    },
    #[error(
        "the state lock {id} of this command was removed (force-unlocked) while it ran, so it may no longer write {location}{}",
        now.as_deref().map(|h| format!("; the lock is now held by {h}")).unwrap_or_default()
    )]
    LockLost {
        location: String,
        id: uuid::Uuid,
        now: Option<String>,
    },
    #[error(
        "the state {location} was changed by another writer between reading and writing it; nothing was written"
    )]
    Changed { location: String },
    #[error("the state {location} is not locked")]
    NotLocked { location: String, note: String },
    #[error("{given:?} is not the id of the current lock on {location}; it is held by {holder}")]
    WrongLockId {
        location: String,
        given: String,
        holder: String,
    },
    #[error("the lock {id} on {location} is held by a live process: {holder}")]
    LocalLockHeld {
        location: String,
        id: uuid::Uuid,
        pid: u32,
        host: String,
        holder: String,
    },
    #[error("the container or bucket of {url} does not exist")]
    NoContainer { url: String },
    #[error("the lock object {lock_object} cannot be read: {reason}")]
    LockUnreadable { lock_object: String, reason: String },
    #[error(
        "the state {location} is still locked after waiting {waited} (--lock-timeout): it is held by {holder}"
    )]
    LockTimeout {
        location: String,
        waited: String,
        holder: String,
    },
    #[error(
        "interrupted while waiting for the state lock on {location}, held by {holder}; nothing was changed by the wait"
    )]
    LockWaitInterrupted { location: String, holder: String },
}

impl miette::Diagnostic for StateError {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        let text = match self {
            StateError::Read { .. } => "check the file's permissions".to_string(),
            StateError::Malformed { path, .. } => {
                let backup = backup_of(path);
                if path.to_string_lossy().contains("://") {
                    format!(
                        "standby will not overwrite it; the previous copy is kept in {}: check it and copy it over the state object with your storage tools",
                        backup.display()
                    )
                } else if backup.exists() {
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
            StateError::LockTimeout { .. } => {
                "wait for that command to finish and run again, or wait longer with --lock-timeout (e.g. --lock-timeout 5m)".to_string()
            }
            StateError::LockWaitInterrupted { .. } => return None,
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
            StateError::Orphaned { backup, .. } => orphan_help(backup),
            StateError::WrongLock { .. } => return None,
            StateError::Store(e) => match e {
                crate::store::StoreError::Config { .. } | crate::store::StoreError::Open { .. } => {
                    "check the backend URL and the credentials in the environment".to_string()
                }
                _ => "nothing was changed by the failed request; check the network and credentials and run the command again".to_string(),
            },
            StateError::RemoteLocked { id: Some(id), .. } => format!(
                "wait for that command to finish and run again. A remote lock outlives a killed process: if that command is gone, remove its lock with `standby state force-unlock {id}`"
            ),
            StateError::RemoteLocked { lock_object, .. } => format!(
                "wait for that command to finish and run again; if it is gone, delete the lock object {lock_object} with your storage tools"
            ),
            StateError::LockLost { .. } => {
                "someone removed this command's lock with `standby state force-unlock`; run the command again to start from the current state".to_string()
            }
            StateError::Changed { .. } => {
                "someone wrote the state without holding its lock (or after force-unlocking it); run the command again to start from the new state".to_string()
            }
            StateError::NotLocked { note, .. } => note.clone(),
            StateError::WrongLockId { .. } => {
                "copy the lock id from the \"is locked by\" message; force-unlock only removes the lock it names".to_string()
            }
            StateError::LocalLockHeld { pid, host, .. } => format!(
                "a local lock is an OS lock: it is released when its process exits and cannot be removed while the process lives. Stop that process (pid {pid} on {host}) if it is stuck"
            ),
            StateError::NoContainer { .. } => {
                "create it first (standby creates objects, not containers or buckets), or fix the backend url".to_string()
            }
            StateError::LockUnreadable { lock_object, .. } => format!(
                "standby cannot tell whose lock it is; if no command is running, delete {lock_object} with your storage tools"
            ),
        };
        Some(Box::new(text))
    }
}

/// What to run when the state is missing but its backup `backup` exists:
/// restore it. Writing a new state there would replace the backup, the only
/// good copy, with a document that did not come from it.
pub fn orphan_help(backup: &str) -> String {
    let how = if backup.contains("://") {
        "copy it over the state object (state.json next to it) with your storage tools".to_string()
    } else {
        format!("`cp {backup} {}`", backup.trim_end_matches(".backup"))
    };
    format!(
        "restore it ({how}), then run the command again; only to start over from nothing on purpose, move the backup away first"
    )
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

/// The document that replaces `stored` (the bytes a backend holds now, if
/// any) when `doc` is written: serial bumped, version stamped, with its
/// serialized form. Refused when `stored` does not parse, or is not at
/// `doc`'s lineage and serial, or vanished after `doc` was read.
pub(crate) fn next_document(
    path: &Path,
    stored: Option<&[u8]>,
    doc: &StateDoc,
) -> Result<(StateDoc, Vec<u8>), StateError> {
    match stored {
        None if doc.serial != 0 => {
            return Err(StateError::Vanished {
                path: path.into(),
                expected: doc.serial,
            });
        }
        None => {}
        Some(bytes) => {
            let stored = parse_document(path, bytes)?;
            if stored.lineage != doc.lineage || stored.serial != doc.serial {
                return Err(StateError::Conflict {
                    path: path.into(),
                    lineage: doc.lineage,
                    expected: doc.serial,
                    found_lineage: stored.lineage,
                    found: stored.serial,
                });
            }
        }
    }
    let mut next = doc.clone();
    next.format_version = FORMAT_VERSION;
    next.serial = doc.serial + 1;
    next.standby_version = env!("CARGO_PKG_VERSION").to_string();
    let mut text = serde_json::to_vec_pretty(&next).map_err(|e| StateError::Write {
        path: path.into(),
        source: std::io::Error::other(e),
    })?;
    text.push(b'\n');
    Ok((next, text))
}
