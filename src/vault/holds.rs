//! Holds: a recovery run that reads a point from the vault while it runs
//! (instant recovery serves disks on demand, for as long as the copy or
//! the test run lasts) holds it, `holds/<point id>/<holder>`, and prune
//! never drops a held point. Retention may have the point past its age;
//! the hold outlives that until the run lets go (its copy completed, its
//! test run cleaned up).
//!
//! Race-free with prune without a lock on the write path of replication:
//! the holder writes its hold first, then takes a shared vault lock (which
//! waits for a running prune, holding the exclusive one, to end) and
//! checks the point is still there; prune lists holds after it took its
//! exclusive lock. Either prune saw the hold, or the holder waited for that
//! prune and then sees whether the point survived it.

use super::lock::Lock;
use super::manifest::point_name;
use super::{Id, Result, Vault, VaultError};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::Duration;

const DIR: &str = "holds";

/// What a hold records (plain JSON: for people; prune reads only names).
#[derive(Serialize)]
struct Body<'a> {
    holder: &'a str,
    host: String,
    pid: u32,
    /// The holder's clock, seconds since the epoch: shown, never compared.
    since: u64,
}

fn name(point: &Id, holder: &str) -> String {
    format!("{DIR}/{}/{}", point.hex(), holder)
}

/// A holder name made of `parts` (e.g. a plan and a machine address),
/// safe as one object-name segment.
pub fn holder(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| {
            p.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("--")
}

/// Holds `point` for `holder`; waits up to `lock_wait` for a running prune.
/// Errors: the point is gone (pruned meanwhile): the hold is removed
/// again and [`VaultError::Pruned`] names the point; the store fails.
pub fn hold(vault: &Vault, point: &Id, holder: &str, lock_wait: Duration) -> Result<()> {
    let body = Body {
        holder,
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        pid: std::process::id(),
        since: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let n = name(point, holder);
    vault.put(&n, serde_json::to_vec(&body).unwrap_or_default())?;
    let there = {
        let _shared = Lock::acquire(vault, false, lock_wait)?;
        vault.exists(&point_name(point))
    };
    match there {
        Ok(true) => Ok(()),
        Ok(false) => {
            let _ = vault.delete(&n);
            Err(VaultError::Pruned {
                url: vault.url.clone(),
                point: point.short(),
            })
        }
        Err(e) => {
            let _ = vault.delete(&n);
            Err(e)
        }
    }
}

/// Lets go of every hold of `holder` (on any point). Releasing what is
/// not held is not an error.
pub fn release(vault: &Vault, holder: &str) -> Result<()> {
    let names: Vec<String> = vault
        .list(DIR)?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.rsplit('/').next() == Some(holder))
        .collect();
    vault.delete_many(&names)
}

/// Every held point.
pub fn held(vault: &Vault) -> Result<BTreeSet<Id>> {
    Ok(vault
        .list(DIR)?
        .into_iter()
        .filter_map(|(n, _)| Id::parse(n.split('/').nth(1)?))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_names_are_one_segment() {
        assert_eq!(
            holder(&["plan.shop", "machine.db"]),
            "plan.shop--machine.db"
        );
        assert_eq!(holder(&["a/b c"]), "a_b_c");
    }
}
