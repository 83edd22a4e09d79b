//! `standby restore`'s work: one disk of a point named in the point
//! grammar (`vault::query`), looked up in the given vaults, restored with
//! the target checks of [`crate::replication::target`] done before anything is read.

use crate::model::Address;
use crate::progress::Progress;
use crate::replication::{ReplicationError, Restored, restore_checked};
use crate::state::StateError;
use crate::vault::manifest::{self, Manifest};
use crate::vault::query::PointQuery;
use crate::vault::{Vault, VaultError};
use crate::workspace::{Workspace, WorkspaceError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to restore, and where.
#[derive(Debug, Clone)]
pub struct Request {
    /// The point as the user wrote it (messages quote it).
    pub point: String,
    pub query: PointQuery,
    /// Disk name, as declared in the machine.
    pub disk: String,
    pub to: PathBuf,
    /// Replace an existing file or write over a block device.
    pub force: bool,
    /// Only points of this machine (`machine.db`).
    pub machine: Option<String>,
    /// The vaults to look in, in order.
    pub vaults: Vec<Address>,
}

/// A finished restore.
#[derive(Debug, Clone)]
pub struct Done {
    pub point: Manifest,
    pub restored: Restored,
    /// How long writing the disk took.
    pub took: Duration,
}

/// Why a restore did not happen (nothing was written) or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot read the state to check that {} is no machine's disk: {error}", to.display())]
    State { to: PathBuf, error: Box<StateError> },
    #[error("{0}")]
    Workspace(WorkspaceError),
    #[error("{address}: {error}")]
    List {
        address: Address,
        error: Box<VaultError>,
    },
    #[error(
        "`{point}` is ambiguous: the vaults hold points of {}; say which with --machine (e.g. --machine {})",
        machines.join(", "),
        machines.first().map(String::as_str).unwrap_or_default()
    )]
    SeveralMachines {
        point: String,
        machines: Vec<String>,
    },
    /// `--machine` names a machine neither the configuration nor the
    /// vaults know; `known`: the configuration's machines.
    #[error("no {machine} in the configuration, and the vaults hold no point of it")]
    UnknownMachine { machine: String, known: Vec<String> },
    /// No vault holds the point; the message says what was looked at.
    #[error("{0}")]
    NotFound(String),
    #[error("no vault to restore from")]
    NoVault,
    #[error("{0}")]
    Restore(Box<ReplicationError>),
    /// The point named by id was dropped by a concurrent prune.
    #[error("{address}: {error}")]
    Pruned {
        address: Address,
        error: Box<VaultError>,
    },
}

/// A vault, its readable points (oldest first) and its refused manifests.
type Listed = (Address, Arc<Vault>, Vec<Manifest>, Vec<VaultError>);

/// Restore `req` (see [`Request`]), counting into `progress`.
pub fn restore(ws: &Workspace, req: &Request, progress: &Progress) -> Result<Done, RestoreError> {
    let cfg = &ws.config;
    // Disks machines use, from the configuration and the recovery runs the
    // state records: checked before anything is written.
    let state = crate::state::open_backend(&cfg.root, cfg.backend.as_ref())
        .and_then(|b| b.read())
        .map_err(|e| RestoreError::State {
            to: req.to.clone(),
            error: Box::new(e),
        })?;
    let in_use = crate::replication::target::in_use_disks(cfg, state.as_ref());
    crate::replication::target::check(&req.to, req.force, &in_use)
        .map_err(|e| RestoreError::Restore(Box::new(e.into())))?;
    // Restores take no vault lock: a prune may drop the point chosen. A
    // point named by id is then reported as pruned; `latest` or a time is
    // chosen again from a fresh listing.
    let mut tries = 0;
    loop {
        match restore_once(ws, req, progress, &in_use) {
            Err(RestoreError::Pruned { .. }) if !req.query.is_id() && tries < 5 => tries += 1,
            other => return other,
        }
    }
}

fn restore_once(
    ws: &Workspace,
    req: &Request,
    progress: &Progress,
    in_use: &[crate::replication::target::InUseDisk],
) -> Result<Done, RestoreError> {
    let cfg = &ws.config;
    let mut opened: Vec<Listed> = Vec::new();
    for addr in &req.vaults {
        let vault = ws.vault(addr).map_err(RestoreError::Workspace)?;
        // The catalog of the machine (or the vault's), not every manifest:
        // only the chosen point's manifest is read, so a damaged or hostile
        // other one cannot stop the restore of a good point. A full id is
        // looked up by its manifest, the truth, directly.
        let (points, bad) = match crate::vault::Id::parse(&req.point) {
            Some(id) => match manifest::read(&vault, &id) {
                // Another configuration's point is not this one's to use.
                Ok(m) if !vault.shows(&m) => (Vec::new(), Vec::new()),
                Ok(m) => (vec![m], Vec::new()),
                Err(VaultError::Missing { .. }) => (Vec::new(), Vec::new()),
                Err(e) => (Vec::new(), vec![e]),
            },
            None => (
                crate::vault::catalog::list_for(&vault, req.machine.as_deref()).map_err(|e| {
                    RestoreError::List {
                        address: addr.clone(),
                        error: Box::new(e),
                    }
                })?,
                Vec::new(),
            ),
        };
        opened.push((addr.clone(), vault, points, bad));
    }
    // A machine nobody knows is named as such, not as "no point matches"
    // (a machine removed from the configuration may still have points).
    if let Some(m) = &req.machine
        && !cfg.machines.keys().any(|a| &a.to_string() == m)
        && opened
            .iter()
            .all(|(_, _, points, _)| points.iter().all(|p| &p.machine != m))
    {
        return Err(RestoreError::UnknownMachine {
            machine: m.clone(),
            known: cfg.machines.keys().map(|a| a.to_string()).collect(),
        });
    }
    if !req.query.is_id() && req.machine.is_none() {
        let machines: std::collections::BTreeSet<&str> = opened
            .iter()
            .flat_map(|(_, _, points, _)| points.iter().map(|p| p.machine.as_str()))
            .collect();
        if machines.len() > 1 {
            return Err(RestoreError::SeveralMachines {
                point: req.point.clone(),
                machines: machines.into_iter().map(str::to_string).collect(),
            });
        }
    }
    let mut last_err = None;
    for (addr, vault, points, bad) in &opened {
        let point = match manifest::find(vault, points, &req.point, req.machine.as_deref()) {
            Ok(p) => p,
            Err(e) if bad.is_empty() => {
                last_err = Some(RestoreError::NotFound(e.to_string()));
                continue;
            }
            Err(e) => {
                let refused: Vec<String> = bad.iter().map(|b| format!("  - {b}")).collect();
                last_err = Some(RestoreError::NotFound(format!(
                    "{e}; {addr} also holds point manifests that were refused, nothing was restored from them:\n{}",
                    refused.join("\n")
                )));
                continue;
            }
        };
        let pruned = |id: &crate::vault::Id| RestoreError::Pruned {
            address: addr.clone(),
            error: Box::new(VaultError::Pruned {
                url: vault.url.clone(),
                point: id.short(),
            }),
        };
        // A catalog entry has no extents: the point itself, read whole.
        let point = &match manifest::read(vault, &point.id) {
            Ok(m) => m,
            Err(VaultError::Missing { .. }) => return Err(pruned(&point.id)),
            Err(e) => {
                return Err(RestoreError::List {
                    address: addr.clone(),
                    error: Box::new(e),
                });
            }
        };
        let started = Instant::now();
        let restored = match restore_checked(
            vault, point, &req.disk, &req.to, req.force, in_use, progress,
        ) {
            Ok(r) => r,
            // Whatever failed (a pack or ancestor gone): if the point
            // itself is gone, a prune dropped it meanwhile.
            Err(_)
                if !vault
                    .exists(&manifest::point_name(&point.id))
                    .unwrap_or(true) =>
            {
                return Err(pruned(&point.id));
            }
            Err(ReplicationError::Vault(e @ VaultError::Pruned { .. })) => {
                return Err(RestoreError::Pruned {
                    address: addr.clone(),
                    error: Box::new(e),
                });
            }
            Err(e) => return Err(RestoreError::Restore(Box::new(e))),
        };
        return Ok(Done {
            point: point.clone(),
            restored,
            took: started.elapsed(),
        });
    }
    Err(last_err.unwrap_or(RestoreError::NoVault))
}
