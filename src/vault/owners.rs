//! Owners: which configuration a point belongs to. Every point carries
//! the lineage of the state that wrote it (`Manifest::owner`); a vault
//! handle acts for one lineage (`Vault::set_owner`) and lists, chooses,
//! builds on, prunes and destroys only that lineage's points. Points
//! written before owners were recorded (or by a command run without a
//! state) carry none: no configuration sees them until one claims them
//! with [`claim`] (`standby vault claim`), since nothing in them tells
//! two configurations that share a machine name apart.

use super::lock::Lock;
use super::manifest::{self, Manifest};
use super::{Result, Vault, VaultError};
use std::collections::BTreeSet;
use std::time::Duration;

/// What [`claim`] did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Claimed {
    /// Full ids of the points now owned by the handle's lineage.
    pub points: Vec<String>,
    /// Points without an owner left alone (of machines not asked for).
    pub left: usize,
}

/// Hand the points without an owner of `machines` (addresses as points
/// record them, `machine.db`) to this handle's owner: each manifest is
/// rewritten with the owner (nothing else changes), then the machines'
/// heads are rebuilt. Under the exclusive lock, like prune: no writer
/// runs meanwhile. Err when the handle has no owner (no state yet).
pub fn claim(vault: &Vault, machines: &BTreeSet<String>, lock_wait: Duration) -> Result<Claimed> {
    let Some(owner) = vault.owner() else {
        return Err(VaultError::NoOwner {
            url: vault.url.clone(),
        });
    };
    let lock = Lock::acquire(vault, true, lock_wait)?;
    let (all, _) = manifest::list_every(vault, false)?;
    let mut out = Claimed::default();
    let mut claimed: Vec<Manifest> = Vec::new();
    for m in &all {
        if m.owner.is_some() {
            continue;
        }
        if !machines.contains(&m.machine) {
            out.left += 1;
            continue;
        }
        // Read as stored: `list_every` applied renames, which stay in `moves`.
        let mut stored = manifest::read_stored(vault, &m.id)?;
        stored.owner = Some(owner.clone());
        claimed.push(stored);
    }
    lock.confirm()?;
    for m in &claimed {
        manifest::write(vault, m)?;
        out.points.push(m.id.hex());
    }
    if !claimed.is_empty() && vault.format() >= 2 {
        let (now, _) = manifest::list_every(vault, false)?;
        let touched: BTreeSet<String> = now
            .iter()
            .filter(|m| machines.contains(&m.machine))
            .map(|m| m.machine.clone())
            .collect();
        let listed = now.iter().map(|m| m.id).collect();
        super::catalog::rebuild(vault, &touched, &now, &listed)?;
    }
    Ok(out)
}
