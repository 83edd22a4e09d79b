//! The local backend: `.standby/state.json` in the configuration directory,
//! written atomically with the previous copy kept, and locked with an OS
//! file lock on `.standby/state.lock`.
//!
//! Crash safety of a write, step by step (at every instant `state.json` or
//! `state.json.backup` holds the last good document, and `state.json` is
//! never missing once it existed, so readers without the lock never see
//! "no state"):
//! 1. the current bytes go to `state.json.backup.tmp`, fsync, rename over
//!    `state.json.backup`, fsync the directory;
//! 2. the new document goes to `state.json.tmp`, fsync, rename over
//!    `state.json`, fsync the directory.
//!
//! The OS lock (flock via fs4) dies with its process, so a `kill -9` never
//! leaves a stuck lock; the holder's [`LockInfo`] text in the lock file is
//! only read when the lock is busy, so stale text is harmless.

use super::{Backend, LockInfo, StateDoc, StateError, StateLock, backup_of, next_document};
use crate::state::parse::parse_document;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The previous copy of the state, relative to the configuration directory.
pub const LOCAL_BACKUP_PATH: &str = ".standby/state.json.backup";
/// The lock file, relative to the configuration directory.
pub const LOCAL_LOCK_PATH: &str = ".standby/state.lock";

/// State kept in files under `DIR/.standby/`.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    state: PathBuf,
    lock: PathBuf,
}

impl LocalBackend {
    /// The backend of the configuration in `dir`.
    pub fn new(dir: impl AsRef<Path>) -> LocalBackend {
        let dir = dir.as_ref();
        LocalBackend {
            state: dir.join(super::LOCAL_STATE_PATH),
            lock: dir.join(LOCAL_LOCK_PATH),
        }
    }

    /// `DIR/.standby/state.json`.
    pub fn state_path(&self) -> &Path {
        &self.state
    }

    /// `DIR/.standby/state.json.backup`.
    pub fn backup_path(&self) -> PathBuf {
        backup_of(&self.state)
    }

    /// `DIR/.standby/state.lock`.
    pub fn lock_path(&self) -> &Path {
        &self.lock
    }

    fn state_dir(&self) -> &Path {
        self.state.parent().unwrap_or(Path::new("."))
    }

    /// The current bytes of the state file; `None` when it does not exist.
    fn read_bytes(&self) -> Result<Option<Vec<u8>>, StateError> {
        match std::fs::read(&self.state) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read {
                path: self.state.clone(),
                source,
            }),
        }
    }

    fn write_err(&self, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
        let path = path.to_path_buf();
        move |source| StateError::Write { path, source }
    }

    /// Write `bytes` to `target` atomically: `target.tmp`, fsync, rename, fsync the directory.
    fn replace_file(&self, target: &Path, bytes: &[u8]) -> Result<(), StateError> {
        let mut tmp_name = target.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut f = File::create(&tmp).map_err(self.write_err(&tmp))?;
        f.write_all(bytes).map_err(self.write_err(&tmp))?;
        f.sync_all().map_err(self.write_err(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, target).map_err(self.write_err(target))?;
        let dir = self.state_dir();
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(self.write_err(dir))
    }

    /// Who holds the lock. A holder that took the lock an instant ago may
    /// not have written who it is yet (two commands started together): give
    /// it a moment, so the refusal can name it.
    fn wait_for_holder(file: &mut File) -> String {
        let text = super::lock::holder_text(file, |t| serde_json::from_str::<LockInfo>(t).is_ok());
        Self::describe_holder(text)
    }

    /// Who holds the lock, as far as the lock file's text says.
    fn describe_holder(text: Option<String>) -> String {
        let Some(text) = text else {
            return "another process (its lock information cannot be read)".to_string();
        };
        if text.trim().is_empty() {
            return "another process (it has not recorded who it is yet)".to_string();
        }
        match serde_json::from_str::<LockInfo>(&text) {
            Ok(info) => info.to_string(),
            Err(_) => "another process (its lock information is unreadable)".to_string(),
        }
    }
}

/// The locked lock file; releasing = clearing the holder text and closing.
struct HeldFile(File);

impl Drop for HeldFile {
    fn drop(&mut self) {
        // Clear the holder text while still holding the lock; closing the
        // file then releases the OS lock. Errors do not matter here: stale
        // text is ignored by whoever takes the lock next.
        let _ = self.0.set_len(0);
        let _ = fs4::FileExt::unlock(&self.0);
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.state.display().to_string()
    }

    fn orphaned_backup(&self) -> Option<String> {
        let backup = self.backup_path();
        (!self.state.exists() && backup.exists()).then(|| backup.display().to_string())
    }

    fn read(&self) -> Result<Option<StateDoc>, StateError> {
        match self.read_bytes()? {
            None => Ok(None),
            Some(bytes) => parse_document(&self.state, &bytes).map(Some),
        }
    }

    fn lock(&self, command: &str) -> Result<StateLock, StateError> {
        let lock_err = |source| StateError::LockIo {
            path: self.lock.clone(),
            source,
        };
        std::fs::create_dir_all(self.state_dir()).map_err(lock_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock)
            .map_err(lock_err)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    path: self.lock.clone(),
                    holder: Self::wait_for_holder(&mut file),
                });
            }
            Err(fs4::TryLockError::Error(source)) => return Err(lock_err(source)),
        }
        let info = LockInfo::for_this_process(command);
        let text = serde_json::to_string_pretty(&info).unwrap_or_default() + "\n";
        // From here the file is locked; `held` releases it on every return path.
        let mut held = HeldFile(file);
        held.0.set_len(0).map_err(lock_err)?;
        held.0.seek(SeekFrom::Start(0)).map_err(lock_err)?;
        held.0.write_all(text.as_bytes()).map_err(lock_err)?;
        held.0.flush().map_err(lock_err)?;
        Ok(StateLock::new(info, self.location(), Box::new(held)))
    }

    fn write(&self, lock: &StateLock, doc: &mut StateDoc) -> Result<(), StateError> {
        if lock.location() != self.location() {
            return Err(StateError::WrongLock {
                path: self.state.clone(),
                lock_path: lock.location().to_string(),
            });
        }
        // Refuse to replace anything that does not parse, or that moved.
        let current = self.read_bytes()?;
        // A state that vanished while its backup remains was lost: a new
        // document would soon replace the backup, the only good copy.
        if current.is_none()
            && let Some(backup) = self.orphaned_backup()
        {
            return Err(StateError::Orphaned {
                location: self.location(),
                backup,
            });
        }
        let (next, text) = next_document(&self.state, current.as_deref(), doc)?;

        let dir = self.state_dir();
        std::fs::create_dir_all(dir).map_err(self.write_err(dir))?;
        if let Some(bytes) = &current {
            self.replace_file(&self.backup_path(), bytes)?;
        }
        self.replace_file(&self.state, &text)?;
        *doc = next;
        Ok(())
    }

    /// The local lock is an OS lock that dies with its process, so there is
    /// never anything to remove: a free lock is reported as not locked, a
    /// held one names its live holder (stop that process instead).
    fn force_unlock(&self, id: &str) -> Result<LockInfo, StateError> {
        let location = self.lock.display().to_string();
        let not_locked = || {
            StateError::NotLocked {
            location: self.location(),
            note: "a local lock is an OS lock that is released when its process exits (also on kill -9), so there is never a stale lock to remove".into(),
        }
        };
        let mut file = match OpenOptions::new().read(true).write(true).open(&self.lock) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_locked()),
            Err(source) => {
                return Err(StateError::LockIo {
                    path: self.lock.clone(),
                    source,
                });
            }
        };
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {
                let _ = fs4::FileExt::unlock(&file);
                Err(not_locked())
            }
            Err(fs4::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let read = file.read_to_string(&mut text).is_ok();
                let info = read
                    .then(|| serde_json::from_str::<LockInfo>(&text).ok())
                    .flatten();
                let holder = Self::describe_holder(read.then_some(text));
                match info {
                    Some(info) if uuid::Uuid::parse_str(id.trim()).ok() == Some(info.id) => {
                        Err(StateError::LocalLockHeld {
                            location,
                            id: info.id,
                            pid: info.pid,
                            host: info.host,
                            holder,
                        })
                    }
                    _ => Err(StateError::WrongLockId {
                        location: self.location(),
                        given: id.to_string(),
                        holder,
                    }),
                }
            }
            Err(fs4::TryLockError::Error(source)) => Err(StateError::LockIo {
                path: self.lock.clone(),
                source,
            }),
        }
    }
}
