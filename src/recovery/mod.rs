//! Recovery: failover (test, planned, unplanned), cleanup, commit and
//! drills of a recovery plan, with RTO/RPO measurement. Choosing points
//! lives in `points`; what both directions share (groups through the
//! walker in `engine`, steps and approvals in `steps`, restore -> boot ->
//! checks in `machine`); the two paths in
//! `failover` and `failback` (each an `engine::Way`); the operations in
//! `run`; state records in `record`; progress goes out as `events`,
//! approvals come in through `approval`; the way back starts with
//! `reprotect`.

pub mod approval;
pub mod checks;
pub mod command;
pub mod engine;
pub mod events;
pub mod failback;
pub mod failover;
pub mod instant;
mod machine;
pub mod placement;
pub mod points;
pub mod providers;
pub mod record;
pub mod reprotect;
pub mod run;
pub mod runlock;
mod steps;
pub mod timeline;
pub mod vms;

pub use approval::{
    Approved, Approver, InAdvance, Unattended, UnknownStep, WaitForApprove, check_manual_step,
    manual_steps,
};
pub use engine::TEST_HOOK_ENV;
pub use events::{Event, Sink, What};
pub use points::PointChoice;
pub use record::Recorder;
pub use run::{Cleaned, DrillResult, RecoveryError, RunResult};
