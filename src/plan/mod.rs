//! The plan is data: [`diff`] compares the desired [`crate::model::Config`] with the
//! recorded [`crate::state::StateDoc`] into a [`Plan`] (changes, dependency graph, review
//! notes). Renderers in [`render`] only read a `Plan`; text, Markdown and
//! JSON are three views of one value. [`saved`] writes and checks plan files.

pub mod attributes;
mod diff;
pub mod drift;
pub mod graph;
mod keys;
pub mod moves;
mod notes;
pub mod refresh;
pub use notes::use_refreshed_facts;
pub mod render;
pub mod saved;
pub mod site;

pub use attributes::{Attributes, ObjectRef, flatten, forces_replacement};
pub use diff::diff;
pub use drift::Drift;

pub use graph::{DependencyGraph, GraphNode, Step, StepOp};
pub use saved::{SavedPlan, SavedPlanError, StalePlan, StaleReason, ensure_applicable};

use crate::model::{Address, Kind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The plan document format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What would change to make the state match the configuration
/// ([`crate::model::Config`] against [`crate::state::StateDoc`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub format_version: u32,
    /// The lineage of the state the plan was made against; when there was no
    /// state yet, the lineage the new state will get.
    pub lineage: uuid::Uuid,
    /// The serial of that state; `None` when there was no state.
    pub serial: Option<u64>,
    /// [`crate::model::Config::source_hash`] of the configuration planned.
    pub source_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    /// Objects that change, ordered by kind then address. No-ops are omitted.
    pub changes: Vec<Change>,
    /// How many objects already match.
    pub unchanged: usize,
    /// What a reviewer must not miss.
    pub notes: Vec<ReviewNote>,
    /// Every object (changed or not) and what it depends on.
    pub graph: DependencyGraph,
    /// Facts that changed outside standby since it last recorded them,
    /// found by refreshing before the diff. Shown, not acted on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    /// Recovery plans whose `active_site` differs from where they run: a
    /// failover or failback, each a chain of steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub site_changes: Vec<site::SiteChange>,
    /// Made with `plan --allow-failover`: applying this saved plan may
    /// carry out its site changes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_failover: bool,
}

/// One object that changes. (No `deny_unknown_fields`: serde does not
/// support it with `flatten`; the schema forbids extra fields.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: Address,
    pub kind: Kind,
    #[serde(flatten)]
    pub action: Action,
    /// For a create, every attribute; for a delete, every recorded attribute;
    /// otherwise only those that differ. Sorted by name.
    pub attributes: Vec<AttributeChange>,
    /// The address the object was recorded at, when a `moved` block (or
    /// `state mv`) renamed it: its state and recovery points follow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<Address>,
}

/// What happens to an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// `+`
    Create,
    /// `~`
    Update,
    /// `-/+`: destroyed then created, because these attributes changed.
    Replace { forced_by: Vec<String> },
    /// `-`
    Delete,
    /// `->`: only renamed (see [`Change::moved_from`]); nothing else changes.
    Move,
}

impl Action {
    /// The terraform-style symbol.
    pub fn symbol(&self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace { .. } => "-/+",
            Action::Delete => "-",
            Action::Move => "->",
        }
    }

    /// A lowercase word: create, update, replace, delete.
    pub fn word(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace { .. } => "replace",
            Action::Delete => "delete",
            Action::Move => "move",
        }
    }
}

/// One attribute's old and new value. Absent means unset on that side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeChange {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// The values are sensitive markers; renderers print `(sensitive)`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sensitive: bool,
    /// Changing this attribute is why the object is replaced.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forces_replacement: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Change {
    /// The attributes the object will have after the change, given the ones
    /// recorded now (`None` for a create). `None` for a delete.
    pub fn after(&self, before: Option<&Attributes>) -> Option<Attributes> {
        match self.action {
            Action::Delete => None,
            Action::Create | Action::Replace { .. } if before.is_none() => Some(
                self.attributes
                    .iter()
                    .filter_map(|a| Some((a.name.clone(), a.after.clone()?)))
                    .collect(),
            ),
            _ => {
                let mut attrs: Attributes = before
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| !k.starts_with(attributes::OBSERVED_PREFIX))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for a in &self.attributes {
                    match &a.after {
                        Some(v) => attrs.insert(a.name.clone(), v.clone()),
                        None => attrs.remove(&a.name),
                    };
                }
                Some(attrs)
            }
        }
    }
}

/// A DR-specific warning shown under the diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewNote {
    /// The object the note is about.
    pub subject: Address,
    pub kind: NoteKind,
    /// One sentence for humans.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// A protection is deleted or replaced: its recovery points go.
    PointsDestroyed,
    /// An RPO threshold is made larger.
    RpoWeakened,
    /// Points are taken less often (or app-consistent points stop).
    FrequencyWeakened,
    /// Retention is shortened: older points will be pruned.
    RetentionShortened,
    /// A machine in a recovery plan loses its last protection.
    MachineUnprotected,
    /// A recovery plan has never been drilled.
    NeverDrilled,
    /// The last drill is older than the drill schedule.
    DrillOverdue,
    /// The last drill failed.
    DrillFailed,
    /// A recovery plan fails over or back (`active_site`): expected data loss.
    SiteChange,
    /// The last drill's measured RTO, for a plan that fails over or back.
    DrillRto,
    /// A vault's key source (`key_file`, `key_env`) changes.
    KeyChanged,
    /// Sensitive attributes cannot be compared: no key for their markers.
    SensitiveUncompared,
}

/// Counts for the summary line; a replace counts as one add and one destroy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub unchanged: usize,
    /// Objects renamed (a move alone, or a move with an update).
    pub moved: usize,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            unchanged: self.unchanged,
            ..Summary::default()
        };
        for c in &self.changes {
            match c.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Replace { .. } => {
                    s.add += 1;
                    s.destroy += 1
                }
                Action::Delete => s.destroy += 1,
                Action::Move => {}
            }
            if c.moved_from.is_some() {
                s.moved += 1;
            }
        }
        s
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty() || !self.site_changes.is_empty()
    }
}

/// A protection with `prevent_destroy = true` that the plan would destroy
/// (delete, or replace).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{address} has prevent_destroy = true, but this plan would {}: its recovery points would be lost. Undo the change, or set prevent_destroy = false in a separate change first.",
    match forced_by { Some(f) => format!("replace it (forced by {})", f.join(", ")), None => "destroy it".to_string() }
)]
pub struct DestroyPrevented {
    pub address: Address,
    /// The attributes forcing a replacement; `None` for a delete.
    pub forced_by: Option<Vec<String>>,
}

impl Plan {
    /// Changes that would destroy a protection marked `prevent_destroy`, as
    /// configured (for a replace) or as recorded (for a delete). A plan with
    /// any is refused, like terraform's `prevent_destroy`.
    pub fn prevented_destroys(
        &self,
        config: &crate::model::Config,
        state: Option<&crate::state::StateDoc>,
    ) -> Vec<DestroyPrevented> {
        let recorded = |a: &Address| {
            state
                .and_then(|s| s.objects.get(a))
                .and_then(|o| o.attributes.get("prevent_destroy"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        self.changes
            .iter()
            .filter(|c| c.kind == Kind::Protection)
            .filter_map(|c| match &c.action {
                Action::Delete if recorded(&c.address) => Some(DestroyPrevented {
                    address: c.address.clone(),
                    forced_by: None,
                }),
                Action::Replace { forced_by }
                    if config
                        .protections
                        .get(&c.address)
                        .is_some_and(|p| p.prevent_destroy) =>
                {
                    Some(DestroyPrevented {
                        address: c.address.clone(),
                        forced_by: Some(forced_by.clone()),
                    })
                }
                _ => None,
            })
            .collect()
    }
}

/// Everything `diff` needs besides the configuration and state.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// "Now", for the plan's timestamp and drill schedules.
    pub now: time::OffsetDateTime,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            now: time::OffsetDateTime::now_utc(),
        }
    }
}
