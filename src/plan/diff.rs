//! diff(config, state) -> Plan: a linear merge of the desired objects and the
//! recorded ones (both ordered by address), then the graph and review notes.

use super::attributes::{self, Attributes, OBSERVED_PREFIX, desired_objects, flatten};
use super::graph::{DependencyGraph, Entry};
use super::{Action, AttributeChange, Change, DiffOptions, FORMAT_VERSION, Plan, notes};
use crate::model::{Address, Config, Kind};
use crate::state::StateDoc;
use std::cmp::Ordering;
use std::iter::Peekable;

/// Compare the configuration with the state (None: no state yet).
pub fn diff(config: &Config, state: Option<&StateDoc>, options: &DiffOptions) -> Plan {
    let lineage = state.map_or_else(uuid::Uuid::new_v4, |s| s.lineage);
    // Diff against the state as the `moved` blocks rename it.
    let moves = super::moves::effective(config, state);
    let remapped = state
        .map(|s| super::moves::remap(&s.objects, &moves))
        .unwrap_or_default();
    let recorded = &remapped;
    // Without a secret key, markers are keyed at random for this plan only:
    // sensitive values then always show as changed (never a guessable
    // fingerprint in the state, never a silently missed change).
    let (marker, unkeyed) = match super::attributes::marker_key(config, &lineage) {
        Ok(k) => (k, None),
        Err(e) => (rand::random(), Some(e)),
    };

    let mut desired: Peekable<_> = desired_objects(config)
        .map(|(a, o)| (a, flatten(o, &marker)))
        .peekable();
    let mut recorded = recorded.iter().map(|(a, o)| (a, &o.attributes)).peekable();

    let mut entries: Vec<Entry<'_>> = Vec::new();
    let mut changes = Vec::new();
    let mut unchanged = 0;
    loop {
        let order = match (desired.peek(), recorded.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((d, _)), Some((r, _))) => (*d).cmp(*r),
        };
        let (address, want, have) = match order {
            Ordering::Less => {
                let (a, d) = desired.next().expect("peeked");
                (a, Some(d), None)
            }
            Ordering::Greater => {
                let (a, r) = recorded.next().expect("peeked");
                (a, None, Some(r))
            }
            Ordering::Equal => {
                let (a, d) = desired.next().expect("peeked");
                let (_, r) = recorded.next().expect("peeked");
                (a, Some(d), Some(r))
            }
        };
        let moved_from = moves.iter().find(|(_, to)| to == address).map(|(f, _)| f);
        let change = match (compare(address, want.as_ref(), have), moved_from) {
            (Some(mut c), Some(from)) => {
                c.moved_from = Some(from.clone());
                Some(c)
            }
            (None, Some(from)) => Some(Change {
                address: address.clone(),
                kind: address.kind,
                action: Action::Move,
                attributes: Vec::new(),
                moved_from: Some(from.clone()),
            }),
            (c, None) => c,
        };
        let index = match change {
            Some(c) => {
                changes.push(c);
                Some(changes.len() - 1)
            }
            None => {
                unchanged += 1;
                None
            }
        };
        entries.push(Entry {
            address,
            desired: want,
            recorded: have,
            change: index,
        });
    }

    let graph = DependencyGraph::build(&entries, &changes);
    let mut notes = notes::review(config, state, &changes, options.now);
    notes.extend(super::keys::notes(&changes));
    if let (Some(e), Some(subject)) = (unkeyed, super::attributes::first_sensitive(config)) {
        notes.push(super::ReviewNote {
            subject,
            kind: super::NoteKind::SensitiveUncompared,
            message: format!(
                "sensitive attributes cannot be compared with the state ({e}); they show as changed on every plan until this is fixed"
            ),
        });
    }
    let site_changes = super::site::changes(config, state, options.now);
    notes.extend(super::site::notes(config, state, &site_changes));
    Plan {
        format_version: FORMAT_VERSION,
        lineage,
        serial: state.map(|s| s.serial),
        source_hash: config.source_hash.clone(),
        created_at: options.now,
        changes,
        unchanged,
        notes,
        graph,
        drift: Vec::new(),
        site_changes,
        allow_failover: false,
    }
}

/// The change for one object, or `None` when it already matches.
fn compare(
    address: &Address,
    want: Option<&Attributes>,
    have: Option<&Attributes>,
) -> Option<Change> {
    let kind = address.kind;
    let (action, attributes) = match (want, have) {
        (None, None) => return None,
        (Some(w), None) => (Action::Create, all(w, false)),
        (None, Some(h)) => (Action::Delete, all(h, true)),
        (Some(w), Some(h)) => {
            let attrs = changed(kind, w, h);
            if attrs.is_empty() {
                return None;
            }
            let forced_by: Vec<String> = attrs
                .iter()
                .filter(|a| a.forces_replacement)
                .map(|a| a.name.clone())
                .collect();
            if forced_by.is_empty() {
                (Action::Update, attrs)
            } else {
                (Action::Replace { forced_by }, attrs)
            }
        }
    };
    Some(Change {
        address: address.clone(),
        kind,
        action,
        attributes,
        moved_from: None,
    })
}

fn configured(attrs: &Attributes) -> impl Iterator<Item = (&String, &serde_json::Value)> {
    attrs
        .iter()
        .filter(|(k, _)| !k.starts_with(OBSERVED_PREFIX))
}

/// Every attribute of a created (or deleted, `before`) object.
fn all(attrs: &Attributes, before: bool) -> Vec<AttributeChange> {
    configured(attrs)
        .map(|(k, v)| AttributeChange {
            name: k.clone(),
            before: before.then(|| v.clone()),
            after: (!before).then(|| v.clone()),
            sensitive: attributes::is_marker(v),
            forces_replacement: false,
        })
        .collect()
}

/// The attributes that differ, by a merge of the two sorted maps.
fn changed(kind: Kind, want: &Attributes, have: &Attributes) -> Vec<AttributeChange> {
    // States recorded before "off" was written out: absent meant off.
    let with_off;
    let have = if kind == Kind::Policy && !have.contains_key("app_consistent_every") {
        let mut h = have.clone();
        h.insert("app_consistent_every".into(), serde_json::json!("off"));
        with_off = h;
        &with_off
    } else {
        have
    };
    let mut out = Vec::new();
    let mut w = configured(want).peekable();
    let mut h = configured(have).peekable();
    loop {
        let (name, before, after) = match (w.peek(), h.peek()) {
            (None, None) => break,
            (Some(_), None) => {
                let (k, v) = w.next().expect("peeked");
                (k, None, Some(v))
            }
            (None, Some(_)) => {
                let (k, v) = h.next().expect("peeked");
                (k, Some(v), None)
            }
            (Some((kw, _)), Some((kh, _))) => match kw.cmp(kh) {
                Ordering::Less => {
                    let (k, v) = w.next().expect("peeked");
                    (k, None, Some(v))
                }
                Ordering::Greater => {
                    let (k, v) = h.next().expect("peeked");
                    (k, Some(v), None)
                }
                Ordering::Equal => {
                    let (k, a) = w.next().expect("peeked");
                    let (_, b) = h.next().expect("peeked");
                    if a == b {
                        continue;
                    }
                    (k, Some(b), Some(a))
                }
            },
        };
        out.push(AttributeChange {
            name: name.clone(),
            sensitive: before.is_some_and(attributes::is_marker)
                || after.is_some_and(attributes::is_marker),
            forces_replacement: attributes::forces_replacement(kind, name),
            before: before.cloned(),
            after: after.cloned(),
        });
    }
    out
}
