//! Which protections are captured together: one batch per (vault,
//! consistency group), an ungrouped protection alone. `replicate` takes one
//! point instant per batch; `replicate --watch` schedules per batch.

use super::Target;
use crate::model::{Address, Config};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("{from}: no {missing} in the configuration")]
pub struct BatchError {
    pub from: String,
    pub missing: String,
}

/// Protections captured at one point instant, into one vault.
#[derive(Debug, Clone)]
pub struct Batch {
    pub vault: Address,
    /// `group shop` or the protection address: for messages.
    pub label: String,
    pub protections: Vec<Address>,
    /// One per protection, in the same order.
    pub targets: Vec<Target>,
}

/// The capture target for one protection, from the configuration.
pub fn target_for(cfg: &Config, prot: &Address) -> Result<Target, BatchError> {
    let missing = |from: &dyn std::fmt::Display, what: &Address| BatchError {
        from: from.to_string(),
        missing: what.to_string(),
    };
    let p = cfg.protections.get(prot).ok_or_else(|| BatchError {
        from: "replicate".into(),
        missing: prot.to_string(),
    })?;
    let m = cfg
        .machines
        .get(&p.machine)
        .ok_or_else(|| missing(prot, &p.machine))?;
    let policy = cfg
        .policies
        .get(&p.policy)
        .ok_or_else(|| missing(prot, &p.policy))?;
    let site = cfg
        .sites
        .get(&m.site)
        .ok_or_else(|| missing(&m.addr, &m.site))?;
    let root = cfg
        .root
        .join(site.root.clone().unwrap_or_else(|| PathBuf::from(".")));
    Ok(Target::from_model(p, m, policy, &root))
}

/// Group `chosen` protections into batches, ordered by (vault, label).
pub fn batches(cfg: &Config, chosen: &[Address]) -> Result<Vec<Batch>, BatchError> {
    let mut by_key: BTreeMap<(Address, String), Vec<Address>> = BTreeMap::new();
    for a in chosen {
        let p = cfg.protections.get(a).ok_or_else(|| BatchError {
            from: "replicate".into(),
            missing: a.to_string(),
        })?;
        let label = match &p.consistency_group {
            Some(g) => format!("group {g}"),
            None => a.to_string(),
        };
        by_key
            .entry((p.vault.clone(), label))
            .or_default()
            .push(a.clone());
    }
    by_key
        .into_iter()
        .map(|((vault, label), protections)| {
            let targets = protections
                .iter()
                .map(|a| target_for(cfg, a))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Batch {
                vault,
                label,
                protections,
                targets,
            })
        })
        .collect()
}
