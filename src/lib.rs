//! standby: disaster recovery as code.
//!
//! Data flows one way: `config` (HCL) -> `model` (desired state) -> `plan`
//! (diff against `state`) -> `exec` -> `replication` | `recovery` ->
//! `vault` / providers -> `state`. The binary (`main.rs`, `cli`) is thin.

pub mod cli;
pub mod config;
pub mod direct_io;
pub mod exec;
#[doc(hidden)]
pub mod fuzz_bodies;
pub mod hclfmt;
pub mod human;
pub mod model;
pub mod plan;
pub mod recovery;
pub mod replication;
pub mod report;
pub mod samples;
pub mod state;
pub mod status;
pub mod store;
pub mod vault;
pub mod watch;
