//! The state document: what standby last recorded about each managed object.
//! Schema: `schema/state.schema.json`.

use crate::model::{Address, Kind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDoc {
    pub format_version: u32,
    /// Set once when the state is created; a saved plan made against another
    /// lineage is refused.
    pub lineage: uuid::Uuid,
    /// Bumped on every write.
    pub serial: u64,
    /// The standby version that last wrote the document.
    pub standby_version: String,
    #[serde(default)]
    pub objects: BTreeMap<Address, ObjectState>,
    #[serde(default)]
    pub drills: Vec<DrillRecord>,
    /// Recovery runs in effect: test runs until cleanup, failovers until
    /// failback. See [`super::RunRecord`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<super::RunRecord>,
}

impl StateDoc {
    /// A new, empty state with a fresh lineage (serial 0: never written).
    pub fn new() -> StateDoc {
        StateDoc {
            format_version: FORMAT_VERSION,
            lineage: uuid::Uuid::new_v4(),
            serial: 0,
            standby_version: env!("CARGO_PKG_VERSION").to_string(),
            objects: BTreeMap::new(),
            drills: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// The newest drill of a recovery plan, if it was ever drilled.
    /// The plan's newest drill that ran to its end (interrupted ones do not count).
    pub fn last_drill(&self, plan: &Address) -> Option<&DrillRecord> {
        self.drills
            .iter()
            .filter(|d| &d.plan == plan && !d.interrupted)
            .max_by_key(|d| d.started_at)
    }
}

impl StateDoc {
    /// The plan's current test run (`test`) or failover run.
    pub fn run_of(&self, plan: &Address, test: bool) -> Option<&super::RunRecord> {
        self.runs
            .iter()
            .find(|r| &r.plan == plan && r.kind.is_test() == test)
    }

    /// The run with this id.
    pub fn run_mut(&mut self, run_id: &str) -> Option<&mut super::RunRecord> {
        self.runs.iter_mut().find(|r| r.run_id == run_id)
    }
}

impl Default for StateDoc {
    fn default() -> Self {
        StateDoc::new()
    }
}

/// One managed object as last recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectState {
    pub kind: Kind,
    /// The attributes as applied: the same flattening `plan` diffs against.
    /// Sensitive values are never stored; see `plan`'s attribute rules.
    pub attributes: BTreeMap<String, serde_json::Value>,
    pub status: Status,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Where an object stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created and in use (vaults, sites, policies, machines, recovery plans).
    Ready,
    /// A protection whose initial replication is not finished.
    Initializing,
    /// A protection with at least one recovery point.
    Protected,
    /// A recovery plan's machines run at the DR site.
    FailedOver,
    /// A test failover is running.
    TestFailover,
    /// Replication runs the other way after a failover.
    Reprotecting,
    /// The last operation on it failed.
    Failed,
}

/// One drill run, kept for `status` and `plan`'s review notes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillRecord {
    pub plan: Address,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub passed: bool,
    /// Measured, as the drill report shows it (not rounded, so `status`
    /// and the report agree).
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    /// Stopped by Ctrl-C/SIGTERM before it could finish: neither passed
    /// nor a failed recovery, and not the plan's last drill for `status`
    /// and `drill --due`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}
