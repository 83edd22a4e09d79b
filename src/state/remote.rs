//! The object-store backend: the state document on `az://`, `s3://` or a
//! `file://` directory, next to its previous copy and a lock object.
//!
//! Under the store's prefix:
//! - `state.json`: the document;
//! - `state.json.backup`: the document before the last write (written first);
//! - `state.lock`: the [`LockInfo`] of the command holding the lock, created
//!   with a conditional put so exactly one command can create it.
//!
//! A lock alone does not guard against lost updates (it can be
//! force-unlocked, or a writer can stall past a force-unlock), so every write
//! also checks that the lock object is still ours and replaces the document
//! only if its etag is the one read just before (compare-and-swap). A
//! concurrent writer therefore makes a write fail, never overwrite.
//!
//! The [`Backend`] interface is synchronous while the store is async: each
//! call runs as a task on the process's runtime (`store::runtime`), and
//! the caller waits for the result. This is safe from any thread: outside a
//! runtime it simply blocks; inside a multi-threaded runtime (the apply
//! executor's tasks) it waits in `block_in_place` so the caller's other
//! tasks keep running; inside another, current-thread runtime it blocks
//! that runtime for the length of the call, without deadlock, since the
//! work runs on the process runtime's own threads.

use super::{Backend, LockInfo, StateDoc, StateError, StateLock, next_document};
use crate::state::parse::parse_document;
use crate::store::{Store, StoreError, UpdateVersion};
use bytes::Bytes;
use object_store::ObjectStoreExt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use time::OffsetDateTime;

/// The document's object name under the store's prefix.
pub const REMOTE_STATE_NAME: &str = "state.json";
/// The previous copy of the document.
pub const REMOTE_BACKUP_NAME: &str = "state.json.backup";
/// The lock object.
pub const REMOTE_LOCK_NAME: &str = "state.lock";

/// State kept as objects under a store's prefix.
pub struct ObjectStoreBackend {
    store: Store,
    rt: Arc<Rt>,
}

impl std::fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreBackend")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The process's runtime (`store::runtime`), on which every call runs.
struct Rt(&'static tokio::runtime::Runtime);

impl Rt {
    fn new() -> std::io::Result<Rt> {
        Ok(Rt(crate::store::runtime()?))
    }

    /// Run `fut` on the runtime and wait for its result.
    fn run<T: Send + 'static>(
        &self,
        url: &str,
        what: &str,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StateError> {
        let failed = |message: String| {
            StateError::Store(StoreError::Request {
                url: url.to_string(),
                name: what.to_string(),
                op: "run",
                message,
            })
        };
        let task = self.0.spawn(fut);
        let wait = || futures::executor::block_on(task);
        let joined = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        match joined {
            Ok(result) => result.map_err(StateError::Store),
            Err(e) => Err(failed(format!("the request task failed: {e}"))),
        }
    }
}

impl ObjectStoreBackend {
    /// The backend over `store` (its prefix holds the state objects).
    pub fn new(store: Store) -> Result<ObjectStoreBackend, StateError> {
        let rt = Rt::new().map_err(|source| StateError::LockIo {
            path: "(state runtime)".into(),
            source,
        })?;
        Ok(ObjectStoreBackend {
            store,
            rt: Arc::new(rt),
        })
    }

    /// The store holding the state objects.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `URL/NAME`, for messages.
    fn url_of(&self, name: &str) -> String {
        format!("{}/{name}", self.store.url.trim_end_matches('/'))
    }

    /// The object `name` with its version; `None` when it does not exist.
    fn fetch(&self, name: &'static str) -> Result<Option<(Bytes, UpdateVersion)>, StateError> {
        let store = self.store.clone();
        self.rt.run(&self.store.url, name, async move {
            match store.get_versioned(name).await {
                Ok(found) => Ok(Some(found)),
                Err(StoreError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// The lock object's holder: `None` when there is no lock, `Some(Err)`
    /// when the lock object is not a [`LockInfo`].
    fn holder(&self) -> Result<Option<Result<LockInfo, String>>, StateError> {
        Ok(self.fetch(REMOTE_LOCK_NAME)?.map(|(bytes, _)| {
            serde_json::from_slice::<LockInfo>(&bytes).map_err(|e| e.to_string())
        }))
    }

    /// The error for a lock held by someone else.
    fn locked(&self, holder: Result<LockInfo, String>) -> Result<StateError, StateError> {
        let lock_object = self.url_of(REMOTE_LOCK_NAME);
        Ok(match holder {
            Ok(info) => StateError::RemoteLocked {
                location: self.location(),
                age: age(OffsetDateTime::now_utc() - info.since),
                id: Some(info.id),
                holder: info.to_string(),
                lock_object,
            },
            Err(reason) => {
                // Without readable holder information, the object's own time says the age.
                let store = self.store.clone();
                let modified = self
                    .rt
                    .run(&self.store.url, REMOTE_LOCK_NAME, async move {
                        store.head(REMOTE_LOCK_NAME).await
                    })
                    .ok()
                    .map(|m| m.last_modified);
                let age = modified
                    .map(|t| {
                        let secs = (now_secs() - t.timestamp()).max(0);
                        age(time::Duration::seconds(secs))
                    })
                    .unwrap_or_else(|| "unknown".into());
                StateError::RemoteLocked {
                    location: self.location(),
                    holder: format!(
                        "an unknown holder (its lock information is unreadable: {reason})"
                    ),
                    age,
                    id: None,
                    lock_object,
                }
            }
        })
    }
}

fn now_secs() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// A lock's age for people: `45s`, `12m 5s`, `3h 20m`, `2d 4h`.
fn age(d: time::Duration) -> String {
    let s = d.whole_seconds().max(0);
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

/// What a held remote lock keeps: enough to delete its lock object on drop.
struct HeldObject {
    store: Store,
    rt: Arc<Rt>,
    id: uuid::Uuid,
}

impl Drop for HeldObject {
    fn drop(&mut self) {
        let store = self.store.clone();
        let id = self.id;
        let released = self.rt.run(&self.store.url, REMOTE_LOCK_NAME, async move {
            // Delete only our own lock: after a force-unlock it may be someone else's.
            match store.get_versioned(REMOTE_LOCK_NAME).await {
                Err(StoreError::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
                Ok((bytes, _)) => {
                    let ours = serde_json::from_slice::<LockInfo>(&bytes).is_ok_and(|i| i.id == id);
                    if ours {
                        store.delete(REMOTE_LOCK_NAME).await?;
                    }
                    Ok(ours)
                }
            }
        });
        match released {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the state lock {id} was removed by someone else (force-unlock) before this command released it"
            ),
            Err(e) => tracing::warn!(
                "could not release the state lock {id}: {e}; once no command runs, remove it with `standby state force-unlock {id}`"
            ),
        }
    }
}

impl Backend for ObjectStoreBackend {
    fn location(&self) -> String {
        self.url_of(REMOTE_STATE_NAME)
    }

    fn orphaned_backup(&self) -> Option<String> {
        match (
            self.fetch(REMOTE_STATE_NAME),
            self.fetch(REMOTE_BACKUP_NAME),
        ) {
            (Ok(None), Ok(Some(_))) => Some(self.url_of(REMOTE_BACKUP_NAME)),
            _ => None,
        }
    }

    fn read(&self) -> Result<Option<StateDoc>, StateError> {
        match self.fetch(REMOTE_STATE_NAME)? {
            None => Ok(None),
            Some((bytes, _)) => parse_document(Path::new(&self.location()), &bytes).map(Some),
        }
    }

    fn lock(&self, command: &str) -> Result<StateLock, StateError> {
        let info = LockInfo::for_this_process(command);
        let mut body = serde_json::to_vec_pretty(&info).unwrap_or_default();
        body.push(b'\n');
        let body = Bytes::from(body);
        // A lock released between our failed create and our read of it is
        // simply tried again; three rounds bound a pathological churn.
        for _ in 0..3 {
            let store = self.store.clone();
            let payload = body.clone();
            let created = self.rt.run(&self.store.url, REMOTE_LOCK_NAME, async move {
                match store.put_if_absent(REMOTE_LOCK_NAME, payload).await {
                    Ok(_) => Ok(Some(true)),
                    Err(StoreError::AlreadyExists { .. }) => Ok(Some(false)),
                    // Creating an object answers "not found" only when its
                    // container or bucket is missing.
                    Err(StoreError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            });
            // A create whose answer was lost is settled by the store layer
            // (it reads the lock back: our bytes mean it landed).
            let Some(created) = created? else {
                return Err(StateError::NoContainer {
                    url: self.store.url.clone(),
                });
            };
            if created {
                let held = HeldObject {
                    store: self.store.clone(),
                    rt: self.rt.clone(),
                    id: info.id,
                };
                return Ok(StateLock::new(info, self.location(), Box::new(held)));
            }
            match self.holder()? {
                // Our own create landed but its answer was lost, and the
                // retried create found it: the lock is ours.
                Some(Ok(h)) if h.id == info.id => {
                    let held = HeldObject {
                        store: self.store.clone(),
                        rt: self.rt.clone(),
                        id: info.id,
                    };
                    return Ok(StateLock::new(info, self.location(), Box::new(held)));
                }
                Some(holder) => return Err(self.locked(holder)?),
                None => {}
            }
        }
        Err(self.locked(Err(
            "the lock was taken and released repeatedly while this command tried to take it".into(),
        ))?)
    }

    fn write(&self, lock: &StateLock, doc: &mut StateDoc) -> Result<(), StateError> {
        let location = self.location();
        if lock.location() != location {
            return Err(StateError::WrongLock {
                path: location.into(),
                lock_path: lock.location().to_string(),
            });
        }
        // Still ours? A force-unlock since `lock` means someone else may be writing.
        match self.holder()? {
            Some(Ok(h)) if h.id == lock.info().id => {}
            other => {
                return Err(StateError::LockLost {
                    location,
                    id: lock.info().id,
                    now: match other {
                        Some(Ok(h)) => Some(h.to_string()),
                        Some(Err(_)) => Some("an unknown holder".into()),
                        None => None,
                    },
                });
            }
        }
        let current = self.fetch(REMOTE_STATE_NAME)?;
        // A lost state with its backup left: see `LocalBackend::write`.
        if current.is_none() && self.fetch(REMOTE_BACKUP_NAME)?.is_some() {
            return Err(StateError::Orphaned {
                location,
                backup: self.url_of(REMOTE_BACKUP_NAME),
            });
        }
        self.write_over(current, doc)
    }

    fn force_unlock(&self, id: &str) -> Result<LockInfo, StateError> {
        self.remove_lock(id)
    }
}

impl ObjectStoreBackend {
    /// Replace `current` (the stored document and its version, as read just
    /// now; `None` if there is none) with `doc`, serial bumped, keeping
    /// `current` as the backup. Refused when `current` does not parse or is
    /// not at `doc`'s lineage and serial, and when the stored document is no
    /// longer `current` (compare-and-swap on its version).
    fn write_over(
        &self,
        current: Option<(Bytes, UpdateVersion)>,
        doc: &mut StateDoc,
    ) -> Result<(), StateError> {
        let location = self.location();
        let path = Path::new(&location);
        let stored = current.as_ref().map(|(bytes, _)| bytes.as_ref());
        let (next, text) = next_document(path, stored, doc)?;
        let text = Bytes::from(text);

        let store = self.store.clone();
        let written = self.rt.run(&self.store.url, REMOTE_STATE_NAME, async move {
            let result = match current {
                Some((bytes, version)) => {
                    // The backup first: if we stop between the two puts, the
                    // backup equals the current document and nothing is lost.
                    let backup = store.path(REMOTE_BACKUP_NAME);
                    store
                        .inner
                        .put(&backup, bytes.into())
                        .await
                        .map_err(|e| store.error("write", REMOTE_BACKUP_NAME, e))?;
                    store.put_if_match(REMOTE_STATE_NAME, text, &version).await
                }
                None => store
                    .put_if_absent(REMOTE_STATE_NAME, text)
                    .await
                    .map_err(|e| match e {
                        StoreError::AlreadyExists { url, name } => {
                            StoreError::Changed { url, name }
                        }
                        other => other,
                    }),
            };
            match result {
                Ok(_) => Ok(true),
                Err(StoreError::Changed { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        });
        // A put whose answer was lost, then refused by its own success, is
        // settled by the store layer (our bytes stored mean it landed).
        if !written? {
            return Err(StateError::Changed { location });
        }
        *doc = next;
        Ok(())
    }

    fn remove_lock(&self, id: &str) -> Result<LockInfo, StateError> {
        let location = self.location();
        let lock_object = self.url_of(REMOTE_LOCK_NAME);
        let info = match self.holder()? {
            None => {
                return Err(StateError::NotLocked {
                    location,
                    note: "there is nothing to unlock; run your command".into(),
                });
            }
            Some(Err(reason)) => {
                return Err(StateError::LockUnreadable {
                    lock_object,
                    reason,
                });
            }
            Some(Ok(info)) => info,
        };
        let given = uuid::Uuid::parse_str(id.trim()).ok();
        if given != Some(info.id) {
            return Err(StateError::WrongLockId {
                location,
                given: id.to_string(),
                holder: info.to_string(),
            });
        }
        // Between reading and deleting, the holder may release and another
        // command lock; object stores offer no conditional delete here, and
        // the compare-and-swap on every write keeps even that case safe.
        let store = self.store.clone();
        self.rt.run(&self.store.url, REMOTE_LOCK_NAME, async move {
            store.delete(REMOTE_LOCK_NAME).await
        })?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend under a fresh prefix of `kind` (file, az or s3; the last two
    /// need the test services, see `.ci/services.sh`).
    fn backend(kind: &str, tmp: &Path) -> ObjectStoreBackend {
        let prefix = format!("remote-unit-{}", uuid::Uuid::new_v4().simple());
        let base = |var: &str| {
            std::env::var(var).unwrap_or_else(|_| {
                panic!("{var} is not set: start the services with .ci/services.sh and source .ci/.cache/services.env")
            })
        };
        let url = match kind {
            "file" => format!("file://{}/{prefix}", tmp.display()),
            "az" => format!("{}/{prefix}", base("STANDBY_TEST_AZ_URL")),
            _ => format!("{}/{prefix}", base("STANDBY_TEST_S3_URL")),
        };
        ObjectStoreBackend::new(crate::store::open(&url, tmp).unwrap()).unwrap()
    }

    /// Someone writes the document between our read and our write (without
    /// the lock): the compare-and-swap refuses our write and leaves theirs.
    fn stale_version_is_refused(kind: &str) {
        let tmp = tempfile::tempdir().unwrap();
        let b = backend(kind, tmp.path());
        let lock = b.lock("test").unwrap();
        let mut doc = StateDoc::new();
        b.write(&lock, &mut doc).unwrap();
        let read_at = b.fetch(REMOTE_STATE_NAME).unwrap().unwrap();

        // The other writer: same lineage and serial, different content.
        let mut theirs = doc.clone();
        theirs.drills.clear();
        theirs.standby_version = "someone-else".into();
        let their_bytes = serde_json::to_vec_pretty(&theirs).unwrap();
        let store = b.store.clone();
        let put = their_bytes.clone();
        b.rt.run("test", "test", async move {
            store
                .inner
                .put(&store.path(REMOTE_STATE_NAME), put.into())
                .await
                .map_err(|e| store.error("write", REMOTE_STATE_NAME, e))
        })
        .unwrap();

        let mut ours = doc.clone();
        let err = b.write_over(Some(read_at), &mut ours).unwrap_err();
        assert!(matches!(err, StateError::Changed { .. }), "{err:?}");
        assert!(err.to_string().contains("nothing was written"), "{err}");
        assert_eq!(
            ours.serial, doc.serial,
            "a refused write must not bump the serial"
        );
        let (now, _) = b.fetch(REMOTE_STATE_NAME).unwrap().unwrap();
        assert_eq!(
            &now[..],
            &their_bytes[..],
            "the other writer's document must stay"
        );
    }

    #[test]
    fn stale_version_is_refused_file() {
        stale_version_is_refused("file");
    }

    #[test]
    fn stale_version_is_refused_az() {
        stale_version_is_refused("az");
    }

    #[test]
    fn stale_version_is_refused_s3() {
        stale_version_is_refused("s3");
    }

    #[test]
    fn ages_read_naturally() {
        let s = time::Duration::seconds;
        assert_eq!(age(s(0)), "0s");
        assert_eq!(age(s(45)), "45s");
        assert_eq!(age(s(12 * 60 + 5)), "12m 5s");
        assert_eq!(age(s(3 * 3600 + 20 * 60 + 7)), "3h 20m");
        assert_eq!(age(s(2 * 86_400 + 4 * 3600)), "2d 4h");
        assert_eq!(age(s(-5)), "0s");
    }
}
