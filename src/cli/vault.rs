//! `standby vault init|prune|verify`.

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the vault layout and, when none exists yet, a master key file.
    Init,
    /// Drop points past their policy's retention and delete unreferenced data.
    Prune,
    /// Check that every referenced object exists (and with --read-data, authenticates).
    Verify {
        /// Read and authenticate every object, not just the structure.
        #[arg(long)]
        read_data: bool,
    },
}

pub fn run(_cmd: Command) -> miette::Result<ExitCode> {
    Err(miette::miette!(
        "`standby vault` is not available in this build yet"
    ))
}
