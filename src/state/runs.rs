//! Recovery runs as the state records them: where each machine of a
//! recovery plan runs (site, run id, mode, kind, phase, points used, disk
//! paths) and the manual-step approvals given to a run. One record per plan
//! and kind of run: at most one test run and one failover run per plan.
//!
//! A record names sites and machines, never the direction "to DR": a run
//! from the DR site back home (failback) is the same record with the sites
//! swapped.

use crate::model::Address;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Replicas in isolation (a sandbox); the source keeps running.
    Test,
    /// Source stopped, final point taken, no data lost.
    Planned,
    /// Source assumed gone; from a chosen point.
    Unplanned,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Test => "test",
            RunKind::Planned => "planned",
            RunKind::Unplanned => "unplanned",
        }
    }

    pub fn is_test(self) -> bool {
        self == RunKind::Test
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// In progress (or its process died; the machine entries say how far it got).
    Running,
    /// Every group came up and passed its checks.
    Completed,
    /// A step, machine or check failed, or the run was interrupted.
    Failed,
    /// `failover commit`: the failover is final.
    Committed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::Committed => "committed",
        }
    }
}

/// One run of a recovery plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub plan: Address,
    /// Unique, `[A-Za-z0-9-]`; providers key sandboxes and processes by it.
    pub run_id: String,
    pub kind: RunKind,
    /// `test` (sandbox) or `failover` (production paths), as providers see it.
    pub mode: standby_provider_core::Mode,
    pub phase: Phase,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The process carrying the run out, so a run whose process died is
    /// told from one in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The manual step the run waits for now, if any (`GROUP.STEP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Approvals of manual steps given to this run (`standby approve`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
    /// Machines by address, recorded as each one is placed.
    #[serde(default)]
    pub machines: BTreeMap<String, MachineRun>,
    /// `standby reprotect`: the machines' protection now captures their
    /// disks at the site they run at (the paths in `machines`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprotect: Option<Reprotect>,
    /// `standby failback` in progress: how far it got, so a rerun after a
    /// crash goes on from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback: Option<Failback>,
    /// A drill's test run: the drill cleans it up itself, so one left by a
    /// dead drill is removed by the next run whatever its phase.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drill: bool,
    /// A rerun that continues interrupted (killed or failed) attempts of
    /// the same failover: the first attempt. RTO counts from its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt: Option<Attempt>,
}

/// One attempt of a run: its id and when it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    pub run_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

/// Reverse protection of a failed-over plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reprotect {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Machine address -> the first reverse point.
    #[serde(default)]
    pub points: BTreeMap<String, PointUsed>,
}

/// A failback's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failback {
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Machine address -> the final reverse point, taken once the replicas
    /// were stopped. Set: the replicas stay stopped, a rerun restores these.
    #[serde(default)]
    pub final_points: BTreeMap<String, PointUsed>,
    /// Machines placed back at their own site.
    #[serde(default)]
    pub machines: BTreeMap<String, MachineRun>,
}

/// A process on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub pid: u32,
    pub host: String,
}

impl Owner {
    /// This process.
    pub fn me() -> Owner {
        Owner {
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
        }
    }

    /// False only when the process is on this host and certainly gone.
    pub fn may_be_alive(&self) -> bool {
        if self.host != gethostname::gethostname().to_string_lossy() {
            return true;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return true;
        };
        // Signal 0 checks existence; EPERM means it exists under another user.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

impl RunRecord {
    /// A run recorded as running whose process is gone (killed): nothing
    /// will finish it.
    pub fn abandoned(&self) -> bool {
        self.phase == Phase::Running && self.owner.as_ref().is_some_and(|o| !o.may_be_alive())
    }

    /// Whether `step` (`STEP` or `GROUP.STEP`) of `group` is approved.
    pub fn approved(&self, group: &str, step: &str) -> bool {
        self.approvals
            .iter()
            .any(|a| a.step == step || a.step == format!("{group}.{step}"))
    }
}

/// A manual step's approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// `STEP` or `GROUP.STEP`, as given.
    pub step: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who approved: `standby approve` (user@host) or `--approve`.
    pub by: String,
}

/// Where one machine of a run is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineRun {
    /// The site it was recovered from (its own site).
    pub from_site: String,
    /// The site it runs at now.
    pub site: String,
    pub status: MachineStatus,
    /// The point its disks were restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<PointUsed>,
    /// Materialized disks: name -> path.
    #[serde(default)]
    pub disks: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run id of the interrupted attempt that placed it, when not
    /// this run: a rerun carries over where earlier attempts left each
    /// machine until it places the machine itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineStatus {
    /// Disks are being restored or it is booting.
    Starting,
    /// Started and every check passed.
    Running,
    /// Restore, boot or a check failed (it may still run: cleanup stops it).
    Failed,
    /// Stopped (cleanup).
    Stopped,
}

/// A recovery point used by a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointUsed {
    pub vault: String,
    /// Full id, hex.
    pub id: String,
    /// RFC 3339: the capture instant.
    pub created: String,
    /// `crash` or `app`.
    pub consistency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}
