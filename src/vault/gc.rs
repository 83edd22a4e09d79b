//! Garbage marks: how prune deletes data without stopping writers.
//!
//! Prune never deletes a pack the moment it finds it unreferenced. It
//! *marks* it: a `gc/<id>` object lists the packs (with their index
//! entries, so a reader or a later prune can still find their blobs), and
//! the pack leaves the index writers deduplicate against. A later prune
//! deletes a marked pack only when the mark is older than the grace period
//! *as observed by the store* (the mark's last-modified time against a
//! probe object the prune writes first, both stamped by the store's
//! clock, never a host's) and no manifest present then references it;
//! one that is referenced goes back into the index. docs/VAULT.md
//! ("Prune and garbage collection") gives the argument why a writer that
//! reused a marked blob is never broken.
//!
//! A mark is written twice: `pending` before the index stops listing its
//! packs (so a kill never loses their entries), then `marked` once the
//! index no longer lists them and the generation has changed; only a
//! `marked` mark's time counts. A `pending` mark (its prune was killed)
//! is marked afresh by the next prune.

use super::index::PackEntry;
use super::{Result, Vault, VaultError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where marks live.
pub const DIR: &str = "gc";
/// The object prune writes to learn the store's time.
const CLOCK: &str = "gc-clock";

/// The grace period when none is given: far longer than the few requests
/// between a writer's last check and its manifest (see docs/VAULT.md), so
/// that a paused or slow writer is still covered.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Written before the index stopped listing the packs: its time
    /// counts for nothing.
    Pending,
    /// The index no longer lists the packs: the grace period runs from
    /// this object's last-modified time.
    Marked,
}

#[derive(Serialize, Deserialize)]
struct MarkFile {
    state: State,
    packs: Vec<PackEntry>,
}

/// One mark as read.
#[derive(Debug, Clone)]
pub struct Mark {
    pub name: String,
    pub state: State,
    /// Last modified, seconds since the epoch, by the store's clock.
    pub time: i64,
    /// The marked packs; an unindexed pack has no blobs listed.
    pub packs: Vec<PackEntry>,
}

/// The store's current time (seconds since the epoch): one write of a
/// probe object, then its last-modified time as the store reports it.
pub fn store_now(vault: &Vault) -> Result<i64> {
    vault.put(CLOCK, b"prune clock probe".to_vec())?;
    let meta = vault
        .rt
        .block_on(vault.store.head(CLOCK))
        .map_err(|e| VaultError::Open(Box::new(e)))?;
    Ok(meta.last_modified.timestamp())
}

/// Every mark, with its store time. A mark deleted between the listing
/// and the read was resolved by a prune: left out.
pub fn list(vault: &Vault) -> Result<Vec<Mark>> {
    let listed = vault.list_timed(DIR)?;
    let names: Vec<String> = listed.iter().map(|(n, _)| n.clone()).collect();
    let mut out = Vec::new();
    for ((name, time), got) in listed.into_iter().zip(vault.get_many(&names)) {
        let bytes = match got {
            Ok(b) => b,
            Err(VaultError::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        let plain = vault.open_meta(&name, &bytes)?;
        let f: MarkFile = serde_json::from_slice(&plain)
            .map_err(|e| vault.damaged(&name, format!("unreadable mark: {e}")))?;
        check(vault, &name, &f.packs)?;
        out.push(Mark {
            name,
            state: f.state,
            time,
            packs: f.packs,
        });
    }
    Ok(out)
}

/// The same bounds as an index object's entries.
fn check(vault: &Vault, name: &str, packs: &[PackEntry]) -> Result<()> {
    let plain = serde_json::to_vec(&serde_json::json!({ "packs": packs })).unwrap_or_default();
    super::index::decode(&plain)
        .map(|_| ())
        .map_err(|e| vault.damaged(name, e))
}

/// A new mark's name.
pub fn new_name() -> String {
    format!("{DIR}/{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Write (or rewrite) the mark `name`.
pub fn write(vault: &Vault, name: &str, state: State, packs: &[PackEntry]) -> Result<()> {
    let plain = serde_json::to_vec(&serde_json::json!({ "state": state, "packs": packs }))
        .unwrap_or_default();
    vault.put_meta(name, &plain)
}
