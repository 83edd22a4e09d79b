//! Vault locks: `locks/<id>` objects. Writers (replication) take none:
//! prune marks before it deletes (see [`super::gc`]). Prune, compaction
//! and `vault claim` hold an exclusive lock, so two of them never overlap;
//! `vault verify` a shared one, so it does not see a prune half done.
//! Each side creates its lock first, then lists the others, and backs off
//! if it sees a conflicting one (two that see each other both back off and
//! retry after a random pause).
//!
//! No wall clock decides whether a lock is alive. A holder renews its lock
//! every [`REFRESH_EVERY`] from a background thread, by compare-and-swap on
//! the version it last wrote (so it learns at once when someone else
//! removed it). Another process takes a lock for dead only when it has
//! itself watched the lock's bytes stay the same for [`STALE_AFTER`] of its
//! own monotonic time, or when the lock's holder ran on this very kernel
//! and pid namespace and its pid is gone. The time a lock records is the
//! holder's clock, shown to people and never compared. A process that
//! takes a dead lock's place deletes it first; the holder, if it was only
//! slow, then fails its [`Lock::confirm`] and commits nothing.

use super::{Result, Vault, VaultError};
use crate::store::{StoreError, UpdateVersion};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A lock this process has watched unchanged for this long, on its own
/// monotonic clock, belongs to a dead process.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);
/// How often a holder renews its lock (a background thread).
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Serialize, Deserialize)]
struct LockBody {
    exclusive: bool,
    host: String,
    pid: u32,
    /// The holder's clock (seconds since the epoch) at its last renewal:
    /// for people reading the lock; never compared with another clock.
    time: u64,
    /// Renewals so far: each one changes the object, which is what an
    /// observer watches.
    #[serde(default)]
    renewals: u64,
    /// The holder's kernel boot id and pid namespace: a process on the same
    /// ones may judge the pid directly.
    #[serde(default)]
    kernel: String,
}

/// Locks this process released but could not delete (the store was down),
/// as (vault url, name): deleted at the next acquire on that vault, so a
/// long-running process does not block prune with its own dead lock until
/// it goes stale.
static LEFTOVER: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn clear_leftovers(vault: &Vault) {
    let mut left = LEFTOVER.lock().unwrap_or_else(|p| p.into_inner());
    left.retain(|(url, name)| url != &vault.url || vault.delete(name).is_err());
}

/// What the renewer and [`Lock::confirm`] share.
struct Held {
    store: crate::store::Store,
    rt: &'static tokio::runtime::Runtime,
    name: String,
    /// The body and the version last written; held across a renewal so
    /// two renewals never race each other.
    current: Mutex<(LockBody, UpdateVersion)>,
    /// Someone else removed or replaced the lock: nothing may be committed.
    lost: AtomicBool,
}

impl Held {
    /// Rewrite the lock if it is still the one we wrote. Ok(false): it is
    /// not (taken for dead and removed by another process).
    fn renew(&self) -> std::result::Result<bool, StoreError> {
        if self.lost.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut body = cur.0.clone();
        body.renewals += 1;
        body.time = epoch_secs();
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        match self
            .rt
            .block_on(self.store.put_if_match(&self.name, bytes, &cur.1))
        {
            Ok(v) => {
                *cur = (body, v);
                Ok(true)
            }
            Err(StoreError::Changed { .. } | StoreError::NotFound { .. }) => {
                self.lost.store(true, Ordering::SeqCst);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// A held lock, renewed in the background; released on drop.
pub struct Lock<'v> {
    vault: &'v Vault,
    held: Arc<Held>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

pub(super) fn epoch_secs() -> u64 {
    let t = super::clock::now().unix_timestamp();
    u64::try_from(t).unwrap_or(0)
}

/// This kernel's boot id and this process's pid namespace, or "" when
/// either cannot be read (then no pid is ever judged directly).
pub(super) fn kernel_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if boot.trim().is_empty() || ns.is_empty() {
        return String::new();
    }
    format!("{}/{ns}", boot.trim())
}

/// Whether `body`'s holder ran here and is gone.
fn holder_gone_here(body: &LockBody, here: &str) -> bool {
    pid_gone_here(&body.kernel, body.pid, here)
}

/// Whether process `pid`, which recorded kernel id `kernel`, ran on this
/// kernel (`here`, from [`kernel_id`]) and is gone (also for leases).
pub(super) fn pid_gone_here(kernel: &str, pid: u32, here: &str) -> bool {
    if here.is_empty() || kernel != here || pid == 0 {
        return false;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

impl<'v> Lock<'v> {
    /// Take a shared (`exclusive = false`) or exclusive lock, waiting up to
    /// `wait` for conflicting holders to finish.
    pub fn acquire(vault: &'v Vault, exclusive: bool, wait: Duration) -> Result<Lock<'v>> {
        let started = Instant::now();
        clear_leftovers(vault);
        let id: [u8; 16] = rand::random();
        let name = format!("locks/{}", hex::encode(id));
        let kernel = kernel_id();
        let mut pause = Duration::from_millis(20);
        loop {
            let body = LockBody {
                exclusive,
                host: gethostname::gethostname().to_string_lossy().into_owned(),
                pid: std::process::id(),
                time: epoch_secs(),
                renewals: 0,
                kernel: kernel.clone(),
            };
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            let version = vault
                .rt
                .block_on(vault.store.put_if_absent(&name, bytes))
                .map_err(|e| VaultError::Open(Box::new(e)))?;
            let conflict = conflicting(vault, &name, exclusive, &kernel)?;
            let Some(holder) = conflict else {
                return Ok(Lock::hold(vault, name, body, version));
            };
            vault.delete(&name)?;
            if started.elapsed() >= wait {
                return Err(VaultError::Locked {
                    url: vault.url.clone(),
                    holder,
                });
            }
            // Nothing notifies us when another lock goes away: poll, with jitter
            // so two contenders do not keep colliding.
            let jitter = Duration::from_millis(rand::random::<u64>() % 20);
            std::thread::sleep(pause + jitter);
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    fn hold(vault: &'v Vault, name: String, body: LockBody, version: UpdateVersion) -> Lock<'v> {
        let held = Arc::new(Held {
            store: vault.store.clone(),
            rt: vault.rt,
            name,
            current: Mutex::new((body, version)),
            lost: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel::<()>();
        let h = Arc::clone(&held);
        let renewer = std::thread::Builder::new()
            .name("vault-lock".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH_EVERY) {
                    match h.renew() {
                        Ok(true) => {}
                        Ok(false) => break,
                        // A failed request: the next renewal tries again;
                        // observers give a holder STALE_AFTER, many renewals.
                        Err(e) => tracing::warn!("cannot renew vault lock {}: {e}", h.name),
                    }
                }
            })
            .ok();
        Lock {
            vault,
            held,
            stop: Some(tx),
            renewer,
        }
    }

    /// Fail fast once the lock is known lost (no request): for long loops.
    pub fn refresh(&mut self) -> Result<()> {
        if self.held.lost.load(Ordering::SeqCst) {
            return Err(self.lost());
        }
        Ok(())
    }

    /// Prove the lock still holds before committing (a manifest, a
    /// deletion): renews it by compare-and-swap on the version last
    /// written (one request). Err([`VaultError::LockLost`]) when another
    /// process took it for dead and removed it.
    pub fn confirm(&self) -> Result<()> {
        match self.held.renew() {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.lost()),
            Err(e) => Err(VaultError::Open(Box::new(e))),
        }
    }

    fn lost(&self) -> VaultError {
        VaultError::LockLost {
            url: self.vault.url.clone(),
            name: self.held.name.clone(),
        }
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        let name = &self.held.name;
        if self.vault.delete(name).is_err() {
            LEFTOVER
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((self.vault.url.clone(), name.clone()));
        }
    }
}

/// A live lock other than `mine` that conflicts with the kind we want.
/// Dead ones (see the module doc) that would conflict are deleted.
fn conflicting(vault: &Vault, mine: &str, exclusive: bool, here: &str) -> Result<Option<String>> {
    let names: Vec<String> = vault
        .list("locks")?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n != mine)
        .collect();
    let mut watched = vault.locks_seen.lock().unwrap_or_else(|p| p.into_inner());
    watched.retain(|n, _| names.contains(n));
    let mut conflict = None;
    for (name, got) in names.iter().zip(vault.get_many(&names)) {
        let bytes = match got {
            Ok(b) => b,
            // Released between listing and reading.
            Err(VaultError::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        // Observed on our own monotonic clock: since when these exact bytes.
        let digest = *blake3::hash(&bytes).as_bytes();
        let since = match watched.get(name) {
            Some((d, t)) if *d == digest => *t,
            _ => {
                watched.insert(name.clone(), (digest, Instant::now()));
                Instant::now()
            }
        };
        let body = serde_json::from_slice::<LockBody>(&bytes).ok();
        // An unreadable lock is treated as exclusive until it goes stale.
        let conflicts = exclusive || body.as_ref().is_none_or(|b| b.exclusive);
        if !conflicts {
            continue;
        }
        let dead = since.elapsed() >= STALE_AFTER
            || body.as_ref().is_some_and(|b| holder_gone_here(b, here));
        if dead {
            tracing::warn!(
                "vault {}: lock {name} is dead (unchanged for {}s as seen here, or its process is gone); removing it",
                vault.url,
                since.elapsed().as_secs()
            );
            vault.delete(name)?;
            watched.remove(name);
            continue;
        }
        conflict.get_or_insert_with(|| match &body {
            Some(b) => format!(
                "a {} lock of pid {} on {} (unchanged for {}s as seen here)",
                if b.exclusive { "exclusive" } else { "shared" },
                b.pid,
                b.host,
                since.elapsed().as_secs()
            ),
            None => format!("{name} (unreadable)"),
        });
    }
    Ok(conflict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeySource;

    fn vault(d: &std::path::Path) -> Vault {
        let key = KeySource::File(d.join("vault.key"));
        let url = format!("file://{}", d.join("vault").display());
        Vault::init(&url, &key, d).unwrap().vault
    }

    #[test]
    fn a_live_lock_blocks_whatever_its_time_says() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(d.path());
        let shared = Lock::acquire(&v, false, Duration::ZERO).unwrap();
        // Its recorded time, as a host whose clock is far behind wrote it:
        // not a reason to ignore it.
        let name = shared.held.name.clone();
        let mut body: LockBody = serde_json::from_slice(&v.get(&name).unwrap()).unwrap();
        body.time = 0;
        body.kernel = String::new();
        v.put(&name, serde_json::to_vec(&body).unwrap()).unwrap();
        let e = Lock::acquire(&v, true, Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(matches!(e, VaultError::Locked { .. }), "{e}");
        // Shared locks do not conflict.
        drop(Lock::acquire(&v, false, Duration::ZERO).unwrap());
        // Rewritten behind its back, the holder's confirm fails.
        assert!(matches!(shared.confirm(), Err(VaultError::LockLost { .. })));
    }

    #[test]
    fn a_confirmed_lock_is_renewed_and_a_removed_one_is_lost() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(d.path());
        let mut l = Lock::acquire(&v, false, Duration::ZERO).unwrap();
        let before = v.get(&l.held.name).unwrap();
        l.confirm().unwrap();
        l.confirm().unwrap();
        let after: LockBody = serde_json::from_slice(&v.get(&l.held.name).unwrap()).unwrap();
        assert_eq!(after.renewals, 2);
        assert_ne!(before, v.get(&l.held.name).unwrap());
        v.delete(&l.held.name).unwrap();
        assert!(matches!(l.confirm(), Err(VaultError::LockLost { .. })));
        assert!(matches!(l.refresh(), Err(VaultError::LockLost { .. })));
    }

    #[test]
    fn a_holder_gone_from_this_kernel_is_dead_at_once() {
        let here = kernel_id();
        assert!(!here.is_empty());
        let mut b = LockBody {
            exclusive: false,
            host: "h".into(),
            pid: std::process::id(),
            time: 0,
            renewals: 0,
            kernel: here.clone(),
        };
        assert!(!holder_gone_here(&b, &here), "we are alive");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        b.pid = child.id();
        child.wait().unwrap();
        assert!(holder_gone_here(&b, &here));
        // Another kernel's pid says nothing here.
        b.kernel = "other-boot/pid:[1]".into();
        assert!(!holder_gone_here(&b, &here));
    }
}
