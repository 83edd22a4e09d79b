//! Refresh: read what is actually there — each recorded protection's points
//! in its vault (count, newest, stored bytes), whether each recorded vault
//! still exists, each recorded machine's disks (present, size) — and compare
//! it with the `observed.*` facts recorded in state. What differs changed
//! outside standby (drift): a point deleted by hand, a disk that grew, a
//! vault that is gone. `plan --refresh-only` shows it; `apply --refresh-only`
//! records it. Nothing here prints: what could not be read comes back as
//! notes.

use super::{Attributes, Drift, attributes::OBSERVED_PREFIX};
use crate::model::{Address, Kind};
use crate::state::StateDoc;
use crate::vault::{Vault, VaultError};
use crate::workspace::{Workspace, WorkspaceError};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The facts observed now, per recorded object (only `observed.*` keys), and
/// notes on what could not be read.
pub fn observe(ws: &Workspace, state: &StateDoc) -> (BTreeMap<Address, Attributes>, Vec<String>) {
    let config = &ws.config;
    let mut facts: BTreeMap<Address, Attributes> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut vaults: HashMap<Address, Option<Arc<Vault>>> = HashMap::new();
    // Machines whose protection's vault could not be read.
    let mut unjudged: Vec<Address> = Vec::new();
    for (addr, obj) in &state.objects {
        let get = |k: &str| obj.attributes.get(k).and_then(Value::as_str);
        match addr.kind {
            Kind::Vault => {
                if !config.vaults.contains_key(addr) {
                    continue;
                }
                let present = match ws.vault(addr) {
                    Ok(vault) => {
                        vaults.insert(addr.clone(), Some(vault));
                        true
                    }
                    Err(WorkspaceError::Vault { error, .. })
                        if matches!(*error, VaultError::NotAVault { .. }) =>
                    {
                        vaults.insert(addr.clone(), None);
                        false
                    }
                    Err(WorkspaceError::Vault { error, .. }) => {
                        notes.push(format!("cannot refresh {addr}: {error}"));
                        continue;
                    }
                    Err(e) => {
                        notes.push(format!("cannot refresh {addr}: {e}"));
                        continue;
                    }
                };
                facts
                    .entry(addr.clone())
                    .or_default()
                    .insert("observed.present".into(), json!(present));
            }
            Kind::Machine => {
                let site_root = get("site")
                    .and_then(|s| s.parse::<Address>().ok())
                    .and_then(|s| ws.site_root(&s));
                let Some(root) = site_root else { continue };
                let f = facts.entry(addr.clone()).or_default();
                for (k, v) in &obj.attributes {
                    let (Some(disk), Some(path)) = (
                        k.strip_prefix("disk.")
                            .and_then(|d| d.strip_suffix(".path")),
                        v.as_str(),
                    ) else {
                        continue;
                    };
                    let qcow2 = obj
                        .attributes
                        .get(&format!("disk.{disk}.format"))
                        .and_then(Value::as_str)
                        == Some("qcow2");
                    let size = crate::replication::disk::guest_size(&root.join(path), qcow2);
                    if let Ok(size) = size {
                        f.insert(format!("observed.disk.{disk}.size"), json!(size));
                    }
                }
            }
            _ => {}
        }
    }
    for (addr, obj) in state
        .objects
        .iter()
        .filter(|(a, _)| a.kind == Kind::Protection)
    {
        let Some(va) = obj
            .attributes
            .get("vault")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Address>().ok())
        else {
            continue;
        };
        // The machine's disk sizes are judged against what replication
        // stored; without the vault they are stale facts, not drift.
        let machine = obj
            .attributes
            .get("machine")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Address>().ok());
        let Some(opened) = vaults.get(&va) else {
            unjudged.extend(machine);
            continue;
        };
        let f = facts.entry(addr.clone()).or_default();
        let Some(vault) = opened else {
            f.insert("observed.recovery_points".into(), json!(0));
            continue;
        };
        // The machine's catalog (docs/VAULT.md), not every manifest.
        let listed = crate::vault::catalog::list_checked(
            vault,
            machine.as_ref().map(|m| m.to_string()).as_deref(),
        );
        let points = match listed {
            Ok(p) => p,
            Err(e) => {
                notes.push(format!("cannot list the points of {addr} in {va}: {e}"));
                unjudged.extend(machine);
                continue;
            }
        };
        let name = addr.to_string();
        let mine: Vec<_> = points.iter().filter(|m| m.protection == name).collect();
        f.insert("observed.recovery_points".into(), json!(mine.len()));
        f.insert(
            "observed.stored_bytes".into(),
            json!(mine.iter().map(|m| m.stats.stored).sum::<u64>()),
        );
        if let Some(newest) = mine.last() {
            f.insert("observed.newest_point".into(), json!(newest.created));
            // The disk sizes standby itself last replicated: a disk that is
            // that size now grew through replication's own view (a database
            // file appending rows), which is not drift. Not recorded in state.
            if let Ok(machine) = newest.machine.parse::<Address>()
                && let Some(mf) = facts.get_mut(&machine)
            {
                for (disk, map) in &newest.disks {
                    mf.insert(
                        format!("{REPLICATED_PREFIX}disk.{disk}.size"),
                        json!(map.size),
                    );
                }
            }
        }
    }
    // Without the vault a disk that is there cannot be judged (its size is
    // compared with what replication stored), but a disk that is gone is
    // drift whatever the vault says: keep only that.
    for m in &unjudged {
        let (Some(f), Some(recorded)) = (facts.get_mut(m), state.objects.get(m)) else {
            continue;
        };
        for (k, v) in f.iter_mut() {
            if let Some(was) = recorded.attributes.get(k) {
                *v = was.clone();
            }
        }
    }
    (facts, notes)
}

/// What differs between the recorded facts and `facts`. Only keys recorded
/// before count: a fact seen for the first time is not drift. A
/// protection's points are standby's own progress while they only grow (more
/// points, a newer newest point, more bytes stored; retention pruning old
/// points): they are drift only when points standby took are gone — none
/// left, or the newest one recorded no longer there.
pub fn drift(state: &StateDoc, facts: &BTreeMap<Address, Attributes>) -> Vec<Drift> {
    let mut out = Vec::new();
    for (addr, now) in facts {
        let Some(obj) = state.objects.get(addr) else {
            continue;
        };
        let progress_only = addr.kind == Kind::Protection && !points_lost(&obj.attributes, now);
        for (k, before) in obj
            .attributes
            .iter()
            .filter(|(k, _)| k.starts_with(OBSERVED_PREFIX))
        {
            let after = now.get(k);
            if progress_only && POINT_FACTS.contains(&k.as_str()) {
                continue;
            }
            let fact = k.trim_start_matches(OBSERVED_PREFIX);
            if after.is_some() && now.get(&format!("{REPLICATED_PREFIX}{fact}")) == after {
                continue;
            }
            // Facts this refresh does not read are left alone.
            if after.is_none() && !(k.starts_with("observed.disk.") || k == "observed.newest_point")
            {
                continue;
            }
            if after != Some(before) {
                out.push(Drift {
                    address: addr.clone(),
                    fact: k.trim_start_matches(OBSERVED_PREFIX).to_string(),
                    before: Some(before.clone()),
                    after: after.cloned(),
                });
            }
        }
    }
    out
}

/// Facts of what replication itself last stored (never recorded in state).
const REPLICATED_PREFIX: &str = "replicated.";

/// A protection's facts that replication itself moves forward.
const POINT_FACTS: [&str; 3] = [
    "observed.recovery_points",
    "observed.newest_point",
    "observed.stored_bytes",
];

/// Whether points standby recorded are gone: the count fell to zero, or the
/// newest point recorded is newer than the newest now there (it was deleted),
/// or no point is left.
fn points_lost(recorded: &Attributes, now: &Attributes) -> bool {
    let count = |a: &Attributes| a.get("observed.recovery_points").and_then(Value::as_u64);
    if let (Some(before), Some(0)) = (count(recorded), count(now))
        && before > 0
    {
        return true;
    }
    let newest = |a: &Attributes| {
        a.get("observed.newest_point")
            .and_then(Value::as_str)
            .and_then(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            })
    };
    match (newest(recorded), newest(now)) {
        (Some(_), None) => now.contains_key("observed.recovery_points"),
        (Some(before), Some(after)) => after < before,
        _ => false,
    }
}

/// Write `facts` into `doc`'s objects (replacing the observed keys refreshed).
pub fn record(doc: &mut StateDoc, facts: &BTreeMap<Address, Attributes>) {
    for (addr, now) in facts {
        let Some(obj) = doc.objects.get_mut(addr) else {
            continue;
        };
        obj.attributes.retain(|k, _| {
            !(k.starts_with("observed.disk.") || k == "observed.newest_point")
                || now.contains_key(k)
        });
        for (k, v) in now.iter().filter(|(k, _)| k.starts_with(OBSERVED_PREFIX)) {
            obj.attributes.insert(k.clone(), v.clone());
        }
    }
}

/// What a refresh found: the facts observed now, how they differ from
/// state, and what could not be read (not drift: the next refresh tries
/// again).
#[derive(Debug, Clone, Default)]
pub struct Refreshed {
    pub facts: BTreeMap<Address, Attributes>,
    pub drift: Vec<Drift>,
    pub notes: Vec<String>,
}

/// Why apply and replicate would refuse `state` (missing or not): the
/// vaults' newest points left machines elsewhere than it says (a lost or
/// stale state). A plan may show no changes then; these say otherwise.
pub fn refusals(ws: &Workspace, state: Option<&StateDoc>) -> Vec<String> {
    let protections: Vec<Address> = ws.config.protections.keys().cloned().collect();
    crate::recovery::placement::check_vaults(ws, state, None, &protections)
        .into_iter()
        .map(|p| format!("apply and replicate refuse this state: {p}"))
        .collect()
}

/// Observe and compare, before a plan's diff.
pub fn refresh(ws: &Workspace, state: &StateDoc) -> Refreshed {
    let (facts, notes) = observe(ws, state);
    let drift = drift(state, &facts);
    Refreshed {
        facts,
        drift,
        notes,
    }
}
