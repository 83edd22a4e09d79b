//! DR-aware review notes: what a reviewer of a plan must not miss. Computed
//! once here; renderers print `ReviewNote::message` as it is.

use super::attributes::Attributes;
use super::{Action, Change, NoteKind, ReviewNote};
use crate::model::{Address, Config, Duration, Kind};
use crate::state::StateDoc;
use std::collections::{BTreeSet, HashSet};
use time::OffsetDateTime;

pub(super) fn review(
    config: &Config,
    state: Option<&StateDoc>,
    changes: &[Change],
    now: OffsetDateTime,
) -> Vec<ReviewNote> {
    let mut notes = Vec::new();
    let recorded = |a: &Address| state.and_then(|s| s.objects.get(a)).map(|o| &o.attributes);
    let mut protected: Option<HashSet<Address>> = None;

    for c in changes {
        match (c.kind, &c.action) {
            (Kind::Protection, Action::Delete | Action::Replace { .. }) => {
                let before = recorded(&c.address);
                notes.push(points_destroyed(c, before));
                if c.action == Action::Delete {
                    let protected = protected.get_or_insert_with(|| {
                        config
                            .protections
                            .values()
                            .map(|p| p.machine.clone())
                            .collect()
                    });
                    unprotected(&mut notes, config, c, before, protected);
                }
            }
            (Kind::Policy, Action::Update) => {
                if let (Some(before), Some(after)) =
                    (recorded(&c.address), desired_policy(config, &c.address))
                {
                    let users = config
                        .protections
                        .values()
                        .filter(|p| p.policy == c.address)
                        .count();
                    let whom = match users {
                        0 => String::new(),
                        1 => " (used by 1 protection)".to_string(),
                        n => format!(" (used by {n} protections)"),
                    };
                    weakened(
                        &mut notes,
                        &c.address,
                        &c.address.to_string(),
                        &whom,
                        before,
                        &after,
                    );
                }
            }
            (Kind::Protection, Action::Update) => {
                let Some(p) = config.protections.get(&c.address) else {
                    continue;
                };
                let old_policy = c
                    .attributes
                    .iter()
                    .find(|a| a.name == "policy")
                    .and_then(|a| a.before.as_ref()?.as_str()?.parse::<Address>().ok());
                let Some(old_policy) = old_policy else {
                    continue;
                };
                if let (Some(before), Some(after)) =
                    (recorded(&old_policy), desired_policy(config, &p.policy))
                {
                    let subject = format!("{} (policy {} -> {})", c.address, old_policy, p.policy);
                    weakened(&mut notes, &c.address, &subject, "", before, &after);
                }
            }
            _ => {}
        }
    }

    for (addr, plan) in &config.recovery_plans {
        drills(
            &mut notes,
            addr,
            plan.drill.as_ref().map(|d| d.schedule),
            state,
            now,
        );
    }
    notes.sort_by(|a, b| (&a.subject, a.kind).cmp(&(&b.subject, b.kind)));
    notes
}

/// Rewrite the notes that quote the vault's contents (points and bytes a
/// destroy or replace deletes) with `facts`, what a refresh read from the
/// vaults now (`observed.*` keys per object), instead of the numbers state
/// recorded at the last apply: `replicate` adds points after that.
pub fn use_refreshed_facts(
    plan: &mut super::Plan,
    state: Option<&StateDoc>,
    facts: &std::collections::BTreeMap<Address, Attributes>,
) {
    for c in &plan.changes {
        if !(c.kind == Kind::Protection
            && matches!(c.action, Action::Delete | Action::Replace { .. }))
        {
            continue;
        }
        let Some(now) = facts.get(&c.address) else {
            continue;
        };
        let mut seen = state
            .and_then(|s| s.objects.get(&c.address))
            .map(|o| o.attributes.clone())
            .unwrap_or_default();
        for (k, v) in now {
            seen.insert(k.clone(), v.clone());
        }
        // A vault that holds none of its points no longer has stored bytes.
        if now.get("observed.recovery_points").and_then(|v| v.as_u64()) == Some(0) {
            seen.insert("observed.stored_bytes".into(), serde_json::json!(0));
        }
        let fresh = points_destroyed(c, Some(&seen));
        for n in plan.notes.iter_mut() {
            if n.subject == c.address && n.kind == NoteKind::PointsDestroyed {
                *n = fresh.clone();
            }
        }
    }
}

fn desired_policy(config: &Config, addr: &Address) -> Option<Attributes> {
    let p = config.policies.get(addr)?;
    Some(super::flatten(
        super::ObjectRef::Policy(p),
        &[0; 32], // policies hold nothing sensitive
    ))
}

fn points_destroyed(c: &Change, before: Option<&Attributes>) -> ReviewNote {
    let get = |k: &str| before.and_then(|b| b.get(k));
    let vault = get("vault").and_then(|v| v.as_str()).unwrap_or("its vault");
    let points = get("observed.recovery_points").and_then(|v| v.as_u64());
    let bytes = get("observed.stored_bytes").and_then(|v| v.as_u64());
    let what = match (points, bytes) {
        (Some(p), Some(b)) => format!(
            "its {} ({} stored in {vault})",
            crate::human::count(p as usize, "recovery point"),
            human_bytes(b)
        ),
        (Some(p), None) => format!(
            "its {} in {vault}",
            crate::human::count(p as usize, "recovery point")
        ),
        (None, Some(b)) => format!("its recovery points ({} stored in {vault})", human_bytes(b)),
        (None, None) => format!("its recovery points and stored data in {vault}"),
    };
    let message = match &c.action {
        Action::Replace { forced_by } => format!(
            "{} will be replaced (forced by {}): {what} will be destroyed and replication starts again from a full copy.",
            c.address,
            forced_by.join(", ")
        ),
        _ => format!("{} will be destroyed: {what} will be destroyed.", c.address),
    };
    ReviewNote {
        subject: c.address.clone(),
        kind: NoteKind::PointsDestroyed,
        message,
    }
}

fn unprotected(
    notes: &mut Vec<ReviewNote>,
    config: &Config,
    c: &Change,
    before: Option<&Attributes>,
    protected: &HashSet<Address>,
) {
    let Some(machine) = before.and_then(|b| b.get("machine")?.as_str()?.parse::<Address>().ok())
    else {
        return;
    };
    if protected.contains(&machine) {
        return;
    }
    // Recovery plans that will list the machine once applied: the
    // configured ones. A plan recorded with it is updated or destroyed by
    // the same apply (a machine removed with its protection and group).
    let plans: BTreeSet<Address> = config
        .recovery_plans
        .iter()
        .filter(|(_, p)| p.groups.iter().any(|g| g.machines.contains(&machine)))
        .map(|(a, _)| a.clone())
        .collect();
    for plan in plans {
        notes.push(ReviewNote {
            subject: c.address.clone(),
            kind: NoteKind::MachineUnprotected,
            message: format!(
                "{machine} is in {plan} but will have no protection once {} is destroyed: it cannot be failed over.",
                c.address
            ),
        });
    }
}

fn duration(attrs: &Attributes, key: &str) -> Option<Duration> {
    attrs.get(key)?.as_str()?.parse().ok()
}

/// Notes for an RPO threshold or point frequency made larger, and retention made shorter.
fn weakened(
    notes: &mut Vec<ReviewNote>,
    subject: &Address,
    what: &str,
    whom: &str,
    before: &Attributes,
    after: &Attributes,
) {
    let pair = |k: &str| (duration(before, k), duration(after, k));
    if let (Some(old), Some(new)) = pair("rpo_threshold")
        && new > old
    {
        notes.push(ReviewNote {
            subject: subject.clone(),
            kind: NoteKind::RpoWeakened,
            message: format!("{what}{whom}: RPO threshold weakened from {old} to {new}: up to {new} of data may be lost in a disaster."),
        });
    }
    for (key, label) in [
        ("crash_consistent_every", "crash-consistent"),
        ("app_consistent_every", "app-consistent"),
    ] {
        match pair(key) {
            (Some(old), Some(new)) if new > old => notes.push(ReviewNote {
                subject: subject.clone(),
                kind: NoteKind::FrequencyWeakened,
                message: format!("{what}{whom}: {label} points taken less often, every {new} instead of every {old}."),
            }),
            // Absent or "off" now.
            (Some(old), None) => {
                notes.push(ReviewNote {
                    subject: subject.clone(),
                    kind: NoteKind::FrequencyWeakened,
                    message: format!("{what}{whom}: {label} points will no longer be taken (were every {old})."),
                })
            }
            _ => {}
        }
    }
    if let (Some(old), Some(new)) = pair("retention")
        && new < old
    {
        notes.push(ReviewNote {
            subject: subject.clone(),
            kind: NoteKind::RetentionShortened,
            message: format!("{what}{whom}: retention shortened from {old} to {new}: recovery points older than {new} will be pruned."),
        });
    }
}

fn drills(
    notes: &mut Vec<ReviewNote>,
    plan: &Address,
    schedule: Option<crate::model::Schedule>,
    state: Option<&StateDoc>,
    now: OffsetDateTime,
) {
    let last = state.and_then(|s| s.last_drill(plan));
    let Some(last) = last else {
        let message = match schedule {
            Some(s) => {
                format!("{plan} has never been drilled (schedule: {s}): its recovery is unproven.")
            }
            None => format!(
                "{plan} has never been drilled and has no drill schedule: its recovery is unproven."
            ),
        };
        notes.push(ReviewNote {
            subject: plan.clone(),
            kind: NoteKind::NeverDrilled,
            message,
        });
        return;
    };
    let day = date(last.started_at);
    if !last.passed {
        notes.push(ReviewNote {
            subject: plan.clone(),
            kind: NoteKind::DrillFailed,
            message: format!("{plan}: its last drill, on {day}, failed."),
        });
    }
    if let Some(s) = schedule {
        let age = now - last.finished_at;
        if age.whole_seconds() > s.interval().as_secs() as i64 {
            notes.push(ReviewNote {
                subject: plan.clone(),
                kind: NoteKind::DrillOverdue,
                message: format!("{plan}: its last drill, on {day}, is older than its {s} schedule: a drill is overdue."),
            });
        }
    }
}

fn date(t: OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
