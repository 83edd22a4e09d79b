//! `standby restore`.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> miette::Result<ExitCode> {
    Err(miette::miette!(
        "`standby restore` is not available in this build yet"
    ))
}
