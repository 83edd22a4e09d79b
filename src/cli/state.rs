//! `standby state list|show ADDR`.

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the objects in the state.
    List,
    /// Show one object's recorded attributes and status.
    Show {
        /// e.g. machine.db
        address: String,
    },
}

pub fn run(_cmd: Command) -> miette::Result<ExitCode> {
    Err(miette::miette!(
        "`standby state` is not available in this build yet"
    ))
}
