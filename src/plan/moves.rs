//! Moves: a protection or machine renamed (a `moved` block, or `standby
//! state mv`) keeps its recorded state and its recovery points. The plan
//! diffs the configuration against the state *as moved*, so a rename is a
//! move (plus any real update), never a destroy and a fresh full copy; apply
//! records the move in each vault that holds points of the object
//! ([`crate::vault::moves`]), then renames the object in state.

use crate::model::{Address, Config, Key, Kind, Move};
use crate::state::{ObjectState, RunRecord, StateDoc};
use crate::vault::moves::Rename;
use serde_json::Value;
use std::collections::BTreeMap;

/// The configuration's `moved` blocks that apply to `state` (and the move
/// of a count instance recorded as `NAME["0"]` to `NAME[0]`, and
/// Terraform's implied moves between `NAME` and `NAME[0]` when `count` is
/// added or removed): `from` is
/// recorded and `to` is not (once applied, a `moved` block is a no-op, as in
/// Terraform). Chains (`a -> b`, `b -> c`) collapse to `a -> c`, whatever
/// their order in the files. Pairs of (recorded address, new address).
pub fn effective(config: &Config, state: Option<&StateDoc>) -> Vec<(Address, Address)> {
    let Some(state) = state else {
        return Vec::new();
    };
    // current address -> the recorded address it came from
    let mut origin: BTreeMap<Address, Address> = state
        .objects
        .keys()
        .map(|a| (a.clone(), a.clone()))
        .collect();
    // Count instances were recorded as `machine.web["0"]` before standby
    // wrote Terraform's `machine.web[0]`: a recorded old spelling moves to
    // the count instance the configuration declares (never a destroy).
    let respelled: Vec<Move> = config
        .machines
        .keys()
        .chain(config.protections.keys())
        .filter_map(|a| {
            a.old_count_spelling().map(|from| Move {
                from,
                to: a.clone(),
            })
        })
        .collect();
    let implied = implied_count_moves(config, &config.moves);
    let all: Vec<&Move> = respelled
        .iter()
        .chain(&config.moves)
        .chain(&implied)
        .collect();
    // Each pass applies what it can; a cycle (a -> b, b -> a) stops the count.
    for _ in 0..=all.len() {
        let mut progressed = false;
        for m in &all {
            if origin.contains_key(&m.from)
                && !origin.contains_key(&m.to)
                && let Some(o) = origin.remove(&m.from)
            {
                origin.insert(m.to.clone(), o);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    origin
        .into_iter()
        .filter(|(now, was)| now != was)
        .map(|(now, was)| (was, now))
        .collect()
}

/// Terraform's implied moves for `count` (1.1+): a block that now has
/// `count` takes the recorded no-key instance as `[0]` (`machine.web` ->
/// `machine.web[0]`), and a block that no longer has `count` (nor
/// `for_each`) takes `[0]` as its no-key instance. As in Terraform, a block
/// that a `moved` block names (as `from` or `to`) gets no implied move.
/// [`effective`] applies them only where `from` is recorded and `to` is not.
fn implied_count_moves(config: &Config, explicit: &[Move]) -> Vec<Move> {
    let named = |a: &Address| {
        explicit.iter().any(|m| {
            [&m.from, &m.to]
                .iter()
                .any(|x| x.kind == a.kind && x.name == a.name)
        })
    };
    let mut implied: Vec<Move> = Vec::new();
    for a in config.machines.keys().chain(config.protections.keys()) {
        let (from, to) = match &a.key {
            // The first instance of a counted block: `count` is set.
            Some(Key::Index(0)) => (Address::new(a.kind, a.name.clone()), a.clone()),
            // A block with neither `count` nor `for_each`.
            None => (Address::indexed(a.kind, a.name.clone(), 0), a.clone()),
            _ => continue,
        };
        if !named(a) {
            implied.push(Move { from, to });
        }
    }
    implied
}

/// `objects` with each `from` renamed `to`, and every recorded attribute
/// that names a moved address (a protection's `machine`, a group's
/// `machines`) naming the new one.
pub fn remap(
    objects: &BTreeMap<Address, ObjectState>,
    moves: &[(Address, Address)],
) -> BTreeMap<Address, ObjectState> {
    if moves.is_empty() {
        return objects.clone();
    }
    let names: BTreeMap<String, String> = moves
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    objects
        .iter()
        .map(|(a, o)| {
            let address = moves
                .iter()
                .find(|(f, _)| f == a)
                .map_or_else(|| a.clone(), |(_, t)| t.clone());
            let mut o = o.clone();
            for v in o.attributes.values_mut() {
                rename_refs(v, &names);
            }
            (address, o)
        })
        .collect()
}

fn rename_refs(v: &mut Value, names: &BTreeMap<String, String>) {
    match v {
        Value::String(s) => {
            if let Some(t) = names.get(s.as_str()) {
                *s = t.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rename_refs(i, names)),
        Value::Object(map) => map.values_mut().for_each(|i| rename_refs(i, names)),
        _ => {}
    }
}

/// What each vault must record for `moves` against the state as recorded
/// (before the moves): a protection's points are in its recorded vault; a
/// machine's in the vaults of the protections recorded for it.
pub fn vault_renames(
    state: &StateDoc,
    moves: &[(Address, Address)],
) -> BTreeMap<Address, Vec<Rename>> {
    let mut out: BTreeMap<Address, Vec<Rename>> = BTreeMap::new();
    let attr = |a: &Address, k: &str| {
        state
            .objects
            .get(a)
            .and_then(|o| o.attributes.get(k))
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Address>().ok())
    };
    for (from, to) in moves {
        let rename = Rename {
            from: from.to_string(),
            to: to.to_string(),
        };
        let vaults: Vec<Address> = match from.kind {
            Kind::Protection => attr(from, "vault").into_iter().collect(),
            Kind::Machine => state
                .objects
                .keys()
                .filter(|p| p.kind == Kind::Protection && attr(p, "machine").as_ref() == Some(from))
                .filter_map(|p| attr(p, "vault"))
                .collect(),
            _ => Vec::new(),
        };
        for v in vaults {
            let list = out.entry(v).or_default();
            if !list.contains(&rename) {
                list.push(rename.clone());
            }
        }
    }
    out
}

/// The first of `moves` whose recorded object a recovery run in `state`
/// holds (a run records its machines by address: renaming one under it
/// would cut the run off from it), with that run.
pub fn held<'a>(
    state: &'a StateDoc,
    moves: &'a [(Address, Address)],
) -> Option<(&'a Address, &'a RunRecord)> {
    moves.iter().find_map(|(from, _)| {
        let name = from.to_string();
        state
            .runs
            .iter()
            .find(|r| r.machines.contains_key(&name))
            .map(|r| (from, r))
    })
}

/// `doc` with `moves` applied to its objects (see [`remap`]).
pub fn apply_to_state(doc: &mut StateDoc, moves: &[(Address, Address)]) {
    doc.objects = remap(&doc.objects, moves);
}
