//! Vault locks: `locks/<id>` objects. Replication holds a shared lock while
//! it reads the index and writes packs, index and manifest; prune holds an
//! exclusive one. Each side writes its lock first, then lists the others, and
//! backs off if it sees a conflicting one, so the two never overlap (two
//! writers that see each other both back off and retry after a random
//! pause). Locks older than [`STALE_AFTER`] are ignored (their holder died);
//! holders refresh theirs every [`REFRESH_EVERY`].

use super::{Result, Vault, VaultError};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime};

/// A lock not refreshed for this long belongs to a dead process.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a holder rewrites its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

#[derive(Serialize, Deserialize)]
struct LockBody {
    exclusive: bool,
    host: String,
    pid: u32,
    /// Seconds since the epoch when written.
    time: u64,
}

/// Locks this process released but could not delete (the store was down),
/// as (vault url, name): deleted at the next acquire on that vault, so a
/// long-running process does not block prune with its own dead lock until
/// it goes stale.
static LEFTOVER: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn clear_leftovers(vault: &Vault) {
    let mut left = LEFTOVER.lock().unwrap_or_else(|p| p.into_inner());
    left.retain(|(url, name)| url != &vault.url || vault.delete(name).is_err());
}

/// A held lock; released on drop.
pub struct Lock<'v> {
    vault: &'v Vault,
    name: String,
    body: LockBody,
    written: Instant,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl<'v> Lock<'v> {
    /// Take a shared (`exclusive = false`) or exclusive lock, waiting up to
    /// `wait` for conflicting holders to finish.
    pub fn acquire(vault: &'v Vault, exclusive: bool, wait: Duration) -> Result<Lock<'v>> {
        let started = Instant::now();
        clear_leftovers(vault);
        let id: [u8; 16] = rand::random();
        let name = format!("locks/{}", hex::encode(id));
        let mut pause = Duration::from_millis(20);
        loop {
            let body = LockBody {
                exclusive,
                host: gethostname::gethostname().to_string_lossy().into_owned(),
                pid: std::process::id(),
                time: now(),
            };
            vault.put(&name, serde_json::to_vec(&body).unwrap_or_default())?;
            let conflict = conflicting(vault, &name, exclusive)?;
            let Some(holder) = conflict else {
                return Ok(Lock {
                    vault,
                    name,
                    body,
                    written: Instant::now(),
                });
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

    /// Rewrite the lock if it is due, so long runs do not look stale.
    pub fn refresh(&mut self) -> Result<()> {
        if self.written.elapsed() >= REFRESH_EVERY {
            self.body.time = now();
            self.vault.put(
                &self.name,
                serde_json::to_vec(&self.body).unwrap_or_default(),
            )?;
            self.written = Instant::now();
        }
        Ok(())
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        if self.vault.delete(&self.name).is_err() {
            LEFTOVER
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((self.vault.url.clone(), self.name.clone()));
        }
    }
}

/// A fresh lock other than `mine` that conflicts with the kind we want.
fn conflicting(vault: &Vault, mine: &str, exclusive: bool) -> Result<Option<String>> {
    let names: Vec<String> = vault
        .list("locks")?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n != mine)
        .collect();
    for (name, got) in names.iter().zip(vault.get_many(&names)) {
        let body = match got {
            Ok(b) => serde_json::from_slice::<LockBody>(&b).ok(),
            // Released between listing and reading.
            Err(VaultError::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        let Some(body) = body else {
            // An unreadable lock is treated as exclusive until it goes stale.
            return Ok(Some(format!("{name} (unreadable)")));
        };
        if now().saturating_sub(body.time) > STALE_AFTER.as_secs() {
            continue;
        }
        if exclusive || body.exclusive {
            let kind = if body.exclusive {
                "exclusive"
            } else {
                "shared"
            };
            return Ok(Some(format!(
                "a {kind} lock of pid {} on {}",
                body.pid, body.host
            )));
        }
    }
    Ok(None)
}
