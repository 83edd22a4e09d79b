//! standby: disaster recovery as code.
//!
//! Data flows one way: `config` (HCL) -> `model` (desired state) -> `plan`
//! (diff against `state`) -> `exec` -> `replication` | `recovery` ->
//! `vault` / providers -> `state`. The binary (`main.rs`, `cli`) is thin.

// The library reports through events and values; only `cli` prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod apply;
pub mod config;
pub mod direct_io;
pub mod exec;
#[doc(hidden)]
pub mod fuzz_bodies;
pub mod hclfmt;
pub mod human;
pub mod maintenance;
pub mod model;
pub mod operations;
pub mod output;
pub mod plan;
pub mod points;
pub mod progress;
pub mod recovery;
pub mod replication;
pub mod report;
pub mod samples;
pub mod state;
pub mod status;
pub mod store;
pub mod vault;
pub mod watch;
pub mod workspace;

// std's printing macros panic when the reader of stdout goes away (`| head
// -1`); these shadow them in `cli`, the only room that prints (textual macro
// scope: modules declared below), so a closed stream ends output quietly
// instead: see `output`.
macro_rules! println {
    () => { $crate::output::stdout(format_args!(""), true) };
    ($($t:tt)*) => { $crate::output::stdout(format_args!($($t)*), true) };
}
macro_rules! print {
    ($($t:tt)*) => { $crate::output::stdout(format_args!($($t)*), false) };
}
macro_rules! eprintln {
    () => { $crate::output::stderr(format_args!(""), true) };
    ($($t:tt)*) => { $crate::output::stderr(format_args!($($t)*), true) };
}
macro_rules! eprint {
    ($($t:tt)*) => { $crate::output::stderr(format_args!($($t)*), false) };
}

pub mod cli;
