//! Carrying out a plan's moves (`moved` blocks): each vault holding points of
//! a renamed protection or machine records the new name first, then the
//! state renames the object in one write. In that order a crash in between
//! leaves the state at the old name, so the next plan moves it again (the
//! vault part finds nothing left to rename).

use crate::model::{Address, Config, KeySource};
use crate::plan::moves;
use crate::state::{Backend, StateDoc, StateLock};
use crate::vault::Vault;
use miette::miette;

/// What one move did, for the apply output.
pub(crate) struct Moved {
    pub from: Address,
    pub to: Address,
    /// Recovery points now known by the new name (machine moves count each
    /// vault's points of the machine).
    pub points: usize,
}

/// Rename `moves` (recorded address, new address) in the vaults and then in
/// `doc`, written through `backend` under `lock`.
pub(crate) fn carry_out(
    config: Option<&Config>,
    root: &std::path::Path,
    backend: &dyn Backend,
    lock: &StateLock,
    doc: &mut StateDoc,
    list: &[(Address, Address)],
) -> miette::Result<Vec<Moved>> {
    refuse_held(doc, list)?;
    let mut counts = vec![0usize; list.len()];
    for (vault_addr, renames) in moves::vault_renames(doc, list) {
        let vault = open_vault(config, root, doc, &vault_addr)?;
        let moved = crate::vault::moves::record(&vault, &renames)
            .map_err(|e| miette!("{vault_addr}: cannot record the move of its points: {e}"))?;
        for (r, n) in renames.iter().zip(moved) {
            if let Some(i) = list.iter().position(|(f, _)| f.to_string() == r.from) {
                counts[i] += n;
            }
        }
    }
    let mut next = doc.clone();
    moves::apply_to_state(&mut next, list);
    backend
        .write(lock, &mut next)
        .map_err(miette::Report::new)?;
    *doc = next;
    Ok(list
        .iter()
        .zip(counts)
        .map(|((from, to), points)| Moved {
            from: from.clone(),
            to: to.clone(),
            points,
        })
        .collect())
}

/// An error when a recovery run holds one of `list`'s recorded objects
/// (see [`moves::held`]): naming the run and how to finish it. `plan` and
/// `apply` refuse alike.
pub(crate) fn refuse_held(doc: &StateDoc, list: &[(Address, Address)]) -> miette::Result<()> {
    match moves::held(doc, list) {
        Some((from, r)) => Err(miette!(
            help = format!(
                "finish that run first (`standby failover cleanup {}` for a test, failback after a failover), then move",
                crate::recovery::run::plan_arg(&r.plan)
            ),
            "cannot move {from}: run {} of {} holds it",
            r.run_id,
            r.plan
        )),
        None => Ok(()),
    }
}

/// The vault as configured, else as recorded in state (paths relative to `root`).
fn open_vault(
    config: Option<&Config>,
    root: &std::path::Path,
    doc: &StateDoc,
    address: &Address,
) -> miette::Result<Vault> {
    let (url, key) = match config.and_then(|c| c.vaults.get(address)) {
        Some(v) => (v.url.clone(), v.key.clone()),
        None => recorded_vault(doc, address)?,
    };
    Vault::open(&url, &key, root).map_err(|e| miette!("{address}: {e}"))
}

/// A vault's url and key source as recorded in state.
fn recorded_vault(doc: &StateDoc, address: &Address) -> miette::Result<(String, KeySource)> {
    let rec = doc
        .objects
        .get(address)
        .ok_or_else(|| miette!("{address} is neither configured nor recorded"))?;
    let get = |k: &str| rec.attributes.get(k).and_then(|v| v.as_str());
    let url = get("url").ok_or_else(|| miette!("{address} has no recorded url"))?;
    let key = match (get("key_file"), get("key_env")) {
        (Some(f), _) => KeySource::File(f.into()),
        (None, Some(e)) => KeySource::Env(e.to_string()),
        _ => return Err(miette!("{address} has no recorded key source")),
    };
    Ok((url.to_string(), key))
}

/// `protection.web -> protection.webserver: moved, 3 recovery points follow it`.
pub(crate) fn line(m: &Moved) -> String {
    format!(
        "{} -> {}: moved, {} follow{} it",
        m.from,
        m.to,
        crate::human::count(m.points, "recovery point"),
        if m.points == 1 { "s" } else { "" }
    )
}
