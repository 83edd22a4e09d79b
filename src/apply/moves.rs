//! Carrying out a plan's moves (`moved` blocks): each vault holding points of
//! a renamed protection or machine records the new name first, then the
//! state renames the object in one write. In that order a crash in between
//! leaves the state at the old name, so the next plan moves it again (the
//! vault part finds nothing left to rename).

use super::ApplyError;
use crate::model::Address;
use crate::plan::moves;
use crate::state::{Backend, StateDoc, StateLock};
use crate::workspace::Workspace;

/// What one move did, for the apply output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub from: Address,
    pub to: Address,
    /// Recovery points now known by the new name (machine moves count each
    /// vault's points of the machine).
    pub points: usize,
}

/// Rename `moves` (recorded address, new address) in the vaults (opened
/// through `ws`: as configured, else as recorded in `doc`) and then in
/// `doc`, written through `backend` under `lock`.
pub fn carry_out(
    ws: &Workspace,
    backend: &dyn Backend,
    lock: &StateLock,
    doc: &mut StateDoc,
    list: &[(Address, Address)],
) -> Result<Vec<Moved>, ApplyError> {
    refuse_held(doc, list)?;
    let mut counts = vec![0usize; list.len()];
    for (vault_addr, renames) in moves::vault_renames(doc, list) {
        let vault = ws.vault_as_recorded(&vault_addr, Some(doc))?;
        let moved = crate::vault::moves::record(&vault, &renames).map_err(|error| {
            ApplyError::MoveRecord {
                vault: vault_addr.clone(),
                error: Box::new(error),
            }
        })?;
        for (r, n) in renames.iter().zip(moved) {
            if let Some(i) = list.iter().position(|(f, _)| f.to_string() == r.from) {
                counts[i] += n;
            }
        }
    }
    let mut next = doc.clone();
    moves::apply_to_state(&mut next, list);
    backend.write(lock, &mut next)?;
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
pub fn refuse_held(doc: &StateDoc, list: &[(Address, Address)]) -> Result<(), ApplyError> {
    match moves::held(doc, list) {
        Some((from, r)) => Err(ApplyError::MoveHeld {
            from: from.to_string(),
            run_id: r.run_id.clone(),
            plan: r.plan.clone(),
        }),
        None => Ok(()),
    }
}
