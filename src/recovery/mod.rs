//! Recovery: failover (test, planned, unplanned), cleanup, commit and
//! drills of a recovery plan, with RTO/RPO measurement. Choosing points
//! lives in `points`, the run itself in `engine`, state records in `record`;
//! the way back in `reprotect` and `failback`.

pub mod approval;
pub mod checks;
pub mod command;
pub mod engine;
pub mod events;
pub mod failback;
pub mod placement;
pub mod points;
pub mod providers;
pub mod record;
pub mod reprotect;
pub mod run;
pub mod runlock;
pub mod timeline;

pub use approval::{Approved, Approver, InAdvance, Unattended, WaitForApprove};
pub use engine::TEST_HOOK_ENV;
pub use events::{Event, Sink, What};
pub use points::PointChoice;
pub use record::Recorder;
pub use run::{Cleaned, DrillResult, RecoveryError, RunResult};
