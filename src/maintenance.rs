//! The vault maintenance commands' work (`standby vault init|prune|claim|
//! compact|verify`), one vault of a workspace at a time, so the command can show
//! each vault's result as it comes. Errors name the vault
//! ([`WorkspaceError::Vault`]).

use crate::model::Address;
use crate::vault::Vault;
use crate::vault::index::{self, Compacted};
use crate::vault::owners::{self, Claimed};
use crate::vault::prune::{self, PruneReport};
use crate::vault::verify::{self, Report as VerifyReport};
use crate::workspace::{Workspace, WorkspaceError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// What `init` did to one vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initialised {
    /// The vault's URL as configured.
    pub url: String,
    /// The vault existed already (and the key opens it).
    pub existed: bool,
    /// The key file written, when there was none.
    pub key_created: Option<PathBuf>,
}

fn vault_error(address: &Address) -> impl FnOnce(crate::vault::VaultError) -> WorkspaceError {
    let address = address.clone();
    move |error| WorkspaceError::Vault {
        address,
        error: Box::new(error),
    }
}

/// Create the configured vault at `address` (and its key file when there
/// is none); an existing vault is opened, not overwritten.
pub fn init(ws: &Workspace, address: &Address) -> Result<Initialised, WorkspaceError> {
    let v = ws
        .config
        .vaults
        .get(address)
        .ok_or_else(|| WorkspaceError::NotConfigured(address.clone()))?;
    let out = Vault::init(&v.url, &v.key, &ws.config.root).map_err(vault_error(address))?;
    let done = Initialised {
        url: v.url.clone(),
        existed: out.existed,
        key_created: out.key_created,
    };
    ws.keep_vault(address, out.vault);
    Ok(done)
}

/// Drop the points of `address` past their protection's retention at
/// `now` and delete what no point references (`dry_run`: only say what
/// would go); data is marked first and deleted by a prune at least `grace`
/// later; waits up to `lock_wait` for another prune or compaction.
pub fn prune(
    ws: &Workspace,
    address: &Address,
    now: time::OffsetDateTime,
    dry_run: bool,
    lock_wait: Duration,
    grace: Duration,
) -> Result<PruneReport, WorkspaceError> {
    let vault = ws.vault(address)?;
    let retention: BTreeMap<String, Duration> = ws
        .config
        .protections
        .values()
        .filter(|p| &p.vault == address)
        .filter_map(|p| {
            let pol = ws.policy_of(&p.addr)?;
            Some((p.addr.to_string(), pol.retention.to_std()))
        })
        .collect();
    prune::prune(&vault, &retention, now, dry_run, lock_wait, grace).map_err(vault_error(address))
}

/// Hand the points without an owner of the machines `address` protects
/// in this configuration to the workspace's owner (its state's lineage);
/// waits up to `lock_wait` for running replications. Err when there is
/// no state yet (no owner to hand them to).
pub fn claim(
    ws: &Workspace,
    address: &Address,
    lock_wait: Duration,
) -> Result<Claimed, WorkspaceError> {
    let vault = ws.vault(address)?;
    let machines: BTreeSet<String> = ws
        .config
        .protections
        .values()
        .filter(|p| &p.vault == address)
        .map(|p| p.machine.to_string())
        .collect();
    owners::claim(&vault, &machines, lock_wait).map_err(vault_error(address))
}

/// Merge the index objects of `address` into one.
pub fn compact(ws: &Workspace, address: &Address) -> Result<Compacted, WorkspaceError> {
    let vault = ws.vault(address)?;
    index::compact(&vault, &ws.cache_dir()).map_err(vault_error(address))
}

/// Check every object `address` references exists (`read_data`: and
/// authenticates); returns the vault's URL with the report.
pub fn verify(
    ws: &Workspace,
    address: &Address,
    read_data: bool,
) -> Result<(String, VerifyReport), WorkspaceError> {
    let vault = ws.vault(address)?;
    let r = verify::verify(&vault, read_data).map_err(vault_error(address))?;
    Ok((vault.url.clone(), r))
}
