//! The contract a site provider implements: prepare a run, materialize a
//! machine's disks from a recovery point, start, stop, run a check, destroy.
//!
//! Providers never see HCL or the vault: standby hands them plain requests
//! and a reader for each disk's restored bytes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Why a run happens; test runs must never touch production paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Test,
    Failover,
}

/// One recovery run of one machine at one site.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunContext {
    pub run_id: String,
    pub mode: Mode,
    pub site: String,
    pub machine: String,
}

/// Where a materialized disk ended up, by disk name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Materialized {
    pub disks: BTreeMap<String, PathBuf>,
}

/// The outcome of one check attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{action} failed for machine {machine}: {reason}")]
    Action {
        action: &'static str,
        machine: String,
        reason: String,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What every site provider does. Methods are called in order:
/// prepare, materialize, start, check (repeatedly), stop, destroy.
pub trait SiteProvider: Send + Sync {
    /// Set up the place a run lives (a sandbox for test runs).
    fn prepare(&self, ctx: &RunContext) -> Result<(), ProviderError>;
    /// Create an empty disk named `disk` of `size` bytes; standby writes its contents to the returned path.
    fn materialize_disk(
        &self,
        ctx: &RunContext,
        disk: &str,
        size: u64,
    ) -> Result<PathBuf, ProviderError>;
    /// Boot the machine from its materialized disks.
    fn start(&self, ctx: &RunContext, disks: &Materialized) -> Result<(), ProviderError>;
    /// Stop the machine if it runs.
    fn stop(&self, ctx: &RunContext) -> Result<(), ProviderError>;
    /// Run one check command with the machine's disks in its environment.
    fn check(
        &self,
        ctx: &RunContext,
        disks: &Materialized,
        command: &[String],
    ) -> Result<CheckOutcome, ProviderError>;
    /// Remove everything the run created.
    fn destroy(&self, ctx: &RunContext) -> Result<(), ProviderError>;
}
