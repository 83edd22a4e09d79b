//! `standby points`: the recovery points of the workspace's vaults, of one
//! machine or protection, optionally only the point each machine would use
//! for a `--point` (the one point grammar, `vault::query`).

use crate::model::{Address, Config, Kind};
use crate::vault::manifest::Manifest;
use crate::vault::query::{PointQuery, Unmatched};
use crate::workspace::{Workspace, WorkspaceError};

/// Why the points could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum PointsError {
    /// `--point` is not in the point grammar.
    #[error("{0}")]
    BadQuery(String),
    /// `ADDR` names neither a machine nor a protection.
    #[error("{0} is neither a machine nor a protection")]
    NotMachine(Address),
    /// No point and no configured object of that name; `have` lists the
    /// configured machines and protections.
    #[error("no {given} in the configuration")]
    Unknown { given: String, have: Vec<String> },
    /// An id prefix matching several points of one machine.
    #[error("{query} matches several points of {machine} ({ids}); give more of the id")]
    Ambiguous {
        query: String,
        machine: String,
        ids: String,
    },
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

/// A `--point` value read in the point grammar (`latest`, `latest-app`,
/// an id or unique prefix, an RFC 3339 time).
pub fn query(point: &str) -> Result<PointQuery, PointsError> {
    point
        .parse()
        .map_err(|e: crate::vault::query::NotAPoint| PointsError::BadQuery(e.to_string()))
}

/// The points of `filter` (a machine or protection; None: all) in every
/// vault of `ws`, oldest first per vault, with the vault's address; with
/// `query`, per machine and vault only the point it names. Points of a
/// machine or protection removed from the configuration are still listed.
pub fn list(
    ws: &Workspace,
    filter: Option<&Address>,
    query: Option<&PointQuery>,
) -> Result<Vec<(Address, Manifest)>, PointsError> {
    if let Some(a) = filter
        && !matches!(a.kind, Kind::Machine | Kind::Protection)
    {
        return Err(PointsError::NotMachine(a.clone()));
    }
    let filter = filter.map(|a| a.to_string());
    // The catalog: the named machine's points only, when it is known.
    let machine = machine_of(&ws.config, filter.as_deref());
    let mut rows = Vec::new();
    for (addr, m) in ws.machine_points(machine.as_deref())? {
        if filter
            .as_ref()
            .is_some_and(|f| *f != m.machine && *f != m.protection)
        {
            continue;
        }
        rows.push((addr, m));
    }
    if let Some(f) = filter.as_ref().filter(|_| rows.is_empty()) {
        let cfg = &ws.config;
        let mut have: Vec<String> = cfg.machines.keys().map(|a| a.to_string()).collect();
        have.extend(cfg.protections.keys().map(|a| a.to_string()));
        if !have.contains(f) {
            return Err(PointsError::Unknown {
                given: f.clone(),
                have,
            });
        }
    }
    match query {
        Some(q) => named(q, rows),
        None => Ok(rows),
    }
}

/// Per machine (and vault), the point `q` names among `rows` (each
/// vault's points, oldest first); an ambiguous id prefix is an error.
fn named(
    q: &PointQuery,
    rows: Vec<(Address, Manifest)>,
) -> Result<Vec<(Address, Manifest)>, PointsError> {
    let mut keys: Vec<(Address, String)> = Vec::new();
    for (v, m) in &rows {
        let k = (v.clone(), m.machine.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out = Vec::new();
    for (vault, machine) in keys {
        let mine: Vec<Manifest> = rows
            .iter()
            .filter(|(v, m)| *v == vault && m.machine == machine)
            .map(|(_, m)| m.clone())
            .collect();
        match q.select(&mine, None) {
            Ok(m) => out.push((vault, m.clone())),
            Err(Unmatched::None) => {}
            Err(Unmatched::Ambiguous(ids)) => {
                return Err(PointsError::Ambiguous {
                    query: q.to_string(),
                    machine,
                    ids: ids.join(", "),
                });
            }
        }
    }
    // Oldest first, as the whole listing.
    out.sort_by(|a, b| (&a.1.created, a.1.id).cmp(&(&b.1.created, b.1.id)));
    Ok(out)
}

/// The machine whose catalog holds the points `filter` names, when the
/// configuration knows it; None: every machine of the vault.
fn machine_of(cfg: &Config, filter: Option<&str>) -> Option<String> {
    let f = filter?;
    if f.starts_with("machine.") {
        return Some(f.to_string());
    }
    cfg.protections
        .iter()
        .find(|(a, _)| a.to_string() == f)
        .map(|(_, p)| p.machine.to_string())
}
