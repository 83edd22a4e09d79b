//! What commands call: one operation per command that works over the
//! [`Workspace`](crate::workspace::Workspace) and the rooms below it
//! (replication, vaults, state), the way OpenTofu's `backend/local` runs
//! what `internal/command` parses. A command in `src/cli/` calls one of
//! these, renders what it returns and picks the exit code; nothing here
//! prints or reads stdin.

pub mod replicate;
pub mod restore;
pub mod vms;

/// Requests this process has made to vault stores so far (per kind), for
/// the cost lines of `--json` reports.
pub fn requests() -> crate::store::Counts {
    crate::store::counts()
}
