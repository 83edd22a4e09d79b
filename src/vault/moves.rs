//! Renamed protections and machines (`moved` blocks, `standby state mv`)
//! keep their recovery points without rewriting a single sealed manifest:
//! the vault keeps one sealed `moves` object mapping point ids to the
//! addresses they are known by now. [`super::manifest::list`] and
//! [`super::manifest::read`] apply it, so every reader (status, points,
//! replication's parent, recovery, prune, watch) sees the new names.

use super::manifest::Manifest;
use super::{Result, Vault, VaultError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The object's name in the vault.
pub const NAME: &str = "moves";

/// The addresses a point is known by now, where they differ from its manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Known {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

/// The `moves` document: point id (hex) -> its current addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moves {
    pub format: u32,
    pub points: BTreeMap<String, Known>,
}

/// One rename: every point known as `from` becomes known as `to`. Both are
/// addresses of the same kind, `protection.*` or `machine.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

/// The vault's moves (empty when none was ever recorded).
pub fn load(vault: &Vault) -> Result<Moves> {
    match vault.get_meta(NAME) {
        Ok(plain) => serde_json::from_slice(&plain)
            .map_err(|e| vault.damaged(NAME, format!("not a moves document: {e}"))),
        Err(VaultError::Missing { .. }) => Ok(Moves::default()),
        Err(e) => Err(e),
    }
}

/// Give `m` the addresses its point is known by now.
pub fn apply(moves: &Moves, m: &mut Manifest) {
    if let Some(k) = moves.points.get(&m.id.hex()) {
        if let Some(p) = &k.protection {
            m.protection = p.clone();
        }
        if let Some(a) = &k.machine {
            m.machine = a.clone();
        }
    }
}

/// Record `renames` (in order, so `a -> b` then `b -> c` chains) for the
/// points this handle owns ([`Vault::owns`]: another configuration sharing
/// the vault may use the same names for its own points); one write of the
/// `moves` object. Returns how many points each rename moved.
pub fn record(vault: &Vault, renames: &[Rename]) -> Result<Vec<usize>> {
    let mut moves = load(vault)?;
    let (mut points, _) = super::manifest::list_every(vault, false)?;
    let mut counts = Vec::with_capacity(renames.len());
    // Machines whose catalog changes: the old names and the new.
    let mut touched = std::collections::BTreeSet::new();
    for r in renames {
        let mut n = 0;
        for m in points.iter_mut().filter(|m| vault.owns(m)) {
            let old_machine = m.machine.clone();
            let is_protection = r.from.starts_with("protection.");
            let current = if is_protection {
                &mut m.protection
            } else {
                &mut m.machine
            };
            if *current != r.from {
                continue;
            }
            *current = r.to.clone();
            let k = moves.points.entry(m.id.hex()).or_default();
            if is_protection {
                k.protection = Some(r.to.clone());
            } else {
                k.machine = Some(r.to.clone());
            }
            touched.insert(old_machine);
            touched.insert(m.machine.clone());
            n += 1;
        }
        counts.push(n);
    }
    if counts.iter().any(|&n| n > 0) {
        moves.format = 1;
        let plain = serde_json::to_vec(&moves).unwrap_or_default();
        vault.put_meta(NAME, &plain)?;
        if vault.format() >= 2 {
            let listed = points.iter().map(|m| m.id).collect();
            super::catalog::rebuild(vault, &touched, &points, &listed)?;
        }
    }
    Ok(counts)
}

/// Forget the entries of points that are gone (prune dropped them), so the
/// object stays as small as the vault's live points. A stale entry is
/// harmless (no manifest carries its id), so a crash before this is too.
pub fn forget(vault: &Vault, ids: &[String]) -> Result<()> {
    let mut moves = load(vault)?;
    let before = moves.points.len();
    for id in ids {
        moves.points.remove(id);
    }
    if moves.points.len() != before {
        let plain = serde_json::to_vec(&moves).unwrap_or_default();
        vault.put_meta(NAME, &plain)?;
    }
    Ok(())
}
