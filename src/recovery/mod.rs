//! Recovery: failover (test, planned, unplanned), cleanup, commit and
//! drills of a recovery plan, with RTO/RPO measurement. Choosing points
//! lives in `points`, the run itself in `engine`, state records in `record`.

pub mod checks;
pub mod command;
pub mod engine;
pub mod points;
pub mod providers;
pub mod record;
pub mod timeline;
