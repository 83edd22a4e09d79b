//! What a recovery run reports while it runs ([`Event`]) and where it goes
//! ([`Sink`]), as `exec` does for apply: the library never prints; the
//! command renders each event (`cli/run_io.rs`). Names are addresses as
//! people read them (`machine.db`), points their short ids.

use std::sync::Mutex;

/// One thing that happened during a run, `seconds` after its start.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the run started (its timeline's clock); 0 for events
    /// before the run has a clock ([`What::DeadTestRun`]).
    pub seconds: f64,
    pub what: What,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// A failover (test, planned or unplanned) began.
    RunStarted {
        kind: String,
        plan: String,
        run_id: String,
    },
    /// A failback began, on the committed failover's run.
    FailbackStarted {
        plan: String,
        run_id: String,
    },
    /// A failback rerun goes on from the final points an earlier attempt took.
    FailbackResumed,
    /// A test run left by a process that is gone is cleaned up first.
    DeadTestRun {
        run_id: String,
        plan: String,
        /// Left by a drill (else by `failover test`).
        drill: bool,
        pid: Option<u32>,
        phase: String,
    },
    /// A planned or unplanned failover removed the plan's test run first:
    /// its throw-away replicas hold what the real ones need (forwarded
    /// ports, VM names).
    TestRunEnded {
        run_id: String,
        plan: String,
    },
    /// The point a machine is recovered from.
    PointChosen {
        machine: String,
        point: String,
        /// RFC 3339, as the manifest has it.
        created: String,
        consistency: String,
        group: Option<String>,
    },
    /// The final reverse point a failback writes back home.
    FinalReversePointChosen {
        machine: String,
        point: String,
        created: String,
    },
    /// A planned failover stopped a source machine.
    SourceStopped {
        machine: String,
        site: String,
        detail: String,
    },
    /// A failback stopped a replica at the site it ran at.
    ReplicaStopped {
        machine: String,
        site: String,
        detail: String,
    },
    /// A planned failover's final point of a protection.
    FinalPoint {
        protection: String,
        point: String,
    },
    /// A failback's final reverse point, `stored` bytes of `disks` bytes.
    FinalReversePoint {
        machine: String,
        point: String,
        stored: u64,
        disks: u64,
    },
    /// Something failed; the run's failures list has the same text.
    Failed {
        what: String,
    },
    GroupStarted {
        group: String,
    },
    GroupFinished {
        group: String,
        passed: bool,
    },
    GroupSkipped {
        group: String,
        why: String,
    },
    /// A `before` or `after` step began (`when` says which).
    StepStarted {
        group: String,
        when: String,
        step: String,
    },
    StepDone {
        group: String,
        step: String,
        detail: String,
    },
    /// A manual step: its instructions, shown before the approval is sought.
    ManualStep {
        key: String,
        instructions: String,
    },
    /// The run waits for `standby approve PLAN STEP`, up to `timeout`.
    WaitingForApproval {
        plan: String,
        step: String,
        timeout: String,
    },
    /// A failover restored a machine's disks from a point.
    DisksRestored {
        machine: String,
        point: String,
        created: String,
        consistency: String,
    },
    /// A failback brought one disk at home to the point: `written` of
    /// `size` bytes, or in `full` when the disk was missing.
    DiskResynced {
        machine: String,
        disk: String,
        path: String,
        written: u64,
        size: u64,
        full: bool,
    },
    MachineStarted {
        machine: String,
        site: String,
    },
    /// A machine an interrupted attempt started still ran from the same
    /// data: kept as it is (not restored, not restarted), checked again.
    MachineKept {
        machine: String,
        /// The interrupted attempt's run id.
        run_id: String,
    },
    /// A machine an interrupted attempt started is stopped and
    /// recovered afresh (`why`: another point, or it no longer runs as
    /// that attempt left it): what it wrote since is replaced.
    MachineReplaced {
        machine: String,
        run_id: String,
        why: String,
    },
    CheckFinished {
        machine: String,
        check: String,
        passed: bool,
        detail: String,
    },
    /// Restored, booted, every check passed.
    MachineUp {
        machine: String,
    },
    /// A drill removes its test run.
    CleaningUp,
    /// Instant failover: the background copy of a disk, `done` of `total`
    /// bytes (sent about every tenth).
    InstantCopy {
        machine: String,
        disk: String,
        done: u64,
        total: u64,
    },
    /// Instant test run: bytes of a disk the VM read from its export so
    /// far, and the blob bytes fetched from the vault for them.
    InstantServed {
        machine: String,
        disk: String,
        served: u64,
        fetched: u64,
        size: u64,
    },
}

/// Where events go. Called from the run's threads, one event at a time
/// per call; an implementation keeps its lines whole.
pub trait Sink: Send + Sync {
    fn event(&self, e: &Event);
}

/// Drops every event (callers that only want the result).
pub struct Quiet;

impl Sink for Quiet {
    fn event(&self, _: &Event) {}
}

/// Keeps every event in memory (tests, callers that summarise afterwards).
#[derive(Default)]
pub struct Recorded {
    pub events: Mutex<Vec<Event>>,
}

impl Sink for Recorded {
    fn event(&self, e: &Event) {
        if let Ok(mut v) = self.events.lock() {
            v.push(e.clone());
        }
    }
}
