//! The local site provider: sites on this host. Disks are files under the
//! site root (test runs: inside a sandbox of their own), machines are boot
//! commands run as process groups and tracked by pid files at the site, so
//! a later standby process can stop them.
//!
//! Layout at a site root:
//!
//! ```text
//! <root>/<disk.path>                          failover disks (same relative path as at the source)
//! <root>/devices/<device path>                failover disks of source block devices
//! <root>/.standby-runs/<run_id>/<m>.pid|.log  failover runs' processes and boot logs
//! <root>/.standby-test/<run_id>/<m>/<disk>    test runs' disks
//! <root>/.standby-test/<run_id>/.runs/        test runs' processes and boot logs
//! ```

mod check;
pub mod layout;
mod process;

use layout::{machine_file_name, runs_dir, sandbox, site_root};
use standby_provider_core::{
    CheckOutcome, CommandCheck, DiskSpec, MachineSpec, Mode, ProviderError, Run, SiteProvider,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `stop` waits after SIGTERM before SIGKILL, by default.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Sites on this host (`provider = "local"`).
#[derive(Debug, Clone)]
pub struct LocalProvider {
    grace: Duration,
}

impl Default for LocalProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalProvider {
    pub fn new() -> Self {
        LocalProvider { grace: STOP_GRACE }
    }

    /// How long `stop` waits after SIGTERM before SIGKILL (default
    /// [`STOP_GRACE`]).
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> ProviderError {
    move |source| ProviderError::Io { context, source }
}

/// Removes a directory tree; a missing one is fine.
fn remove_tree(path: &Path) -> Result<(), ProviderError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", path.display()))(e)),
    }
}

/// Removes a directory if it is empty; anything else (not empty, missing)
/// leaves it as it is.
fn remove_if_empty(path: &Path) {
    let _ = fs::remove_dir(path);
}

/// Stops every machine tracked in `runs`.
fn stop_all(runs: &Path, grace: Duration) -> Result<(), ProviderError> {
    for pid in process::tracked_machines(runs) {
        let machine = pid
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        process::stop(&machine, &pid, grace)?;
    }
    Ok(())
}

/// A failover run's bookkeeping goes once no machine of it is tracked.
fn forget_failover_run(root: &Path, runs: &Path) -> Result<(), ProviderError> {
    if process::tracked_machines(runs).is_empty() {
        remove_tree(runs)?;
        remove_if_empty(&root.join(layout::RUNS_DIR));
    }
    Ok(())
}

impl SiteProvider for LocalProvider {
    /// Test runs: creates the sandbox. Failover runs: makes sure the site
    /// root exists.
    fn prepare(&self, run: &Run) -> Result<(), ProviderError> {
        let root = site_root(run, "prepare")?;
        let dir = match run.mode {
            Mode::Test => sandbox(root, run),
            Mode::Failover => root.to_path_buf(),
        };
        fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))
    }

    /// Creates (or truncates) the target file at `disk.size` bytes, sparse,
    /// with its parent directories.
    fn disk_target(
        &self,
        run: &Run,
        machine: &str,
        disk: &DiskSpec,
    ) -> Result<PathBuf, ProviderError> {
        let root = site_root(run, "disk_target")?;
        let target = layout::disk_target(root, run, machine, &disk.path).map_err(|reason| {
            ProviderError::Action {
                action: "disk_target",
                subject: format!("{machine} disk {:?}", disk.name),
                reason: reason.to_string(),
            }
        })?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        let f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&target)
            .map_err(io(format!("creating disk file {}", target.display())))?;
        f.set_len(disk.size)
            .map_err(io(format!("sizing disk file {}", target.display())))?;
        Ok(target)
    }

    /// Runs the boot command (argv, no shell; a relative program path with a
    /// `/` resolves against the configuration directory, which is also the
    /// working directory) with the machine's environment, in a process group
    /// of its own, stdout and stderr to `<machine>.log`. Exiting 0 within
    /// `min(timeout, 1s)` is a one-shot boot; exiting non-zero fails with the
    /// log's last lines; still running, it is tracked in `<machine>.pid`.
    fn start(
        &self,
        run: &Run,
        machine: &MachineSpec,
        timeout: Duration,
    ) -> Result<(), ProviderError> {
        let root = site_root(run, "start")?;
        let Some(argv) = &machine.boot else {
            return Ok(());
        };
        process::start(run, machine, argv, &runs_dir(root, run), timeout)
    }

    /// Failover runs only. A machine whose boot left no process (a
    /// one-shot boot command, or none) is its disk files: taken over as
    /// they are. One whose boot process still runs: its tracking (pid file
    /// and boot log) moves from `earlier`'s run directory to `run`'s. One
    /// whose process died is not taken over.
    fn adopt(&self, earlier: &Run, run: &Run, machine: &str) -> Result<bool, ProviderError> {
        if run.mode != Mode::Failover || earlier.mode != Mode::Failover {
            return Ok(false);
        }
        let root = site_root(run, "adopt")?;
        let (from, to) = (runs_dir(root, earlier), runs_dir(root, run));
        let file = machine_file_name(machine);
        let pid = process::pid_file(&from, &file);
        match process::read_pid_file(&pid)? {
            None => return Ok(true),
            Some(t) if t.running() => {}
            Some(_) => return Ok(false),
        }
        if from == to {
            return Ok(true);
        }
        fs::create_dir_all(&to).map_err(io(format!("creating {}", to.display())))?;
        fs::rename(&pid, process::pid_file(&to, &file))
            .map_err(io(format!("moving {}", pid.display())))?;
        let _ = fs::rename(
            process::log_file(&from, &file),
            process::log_file(&to, &file),
        );
        forget_failover_run(root, &from)?;
        Ok(true)
    }

    /// SIGTERM to the machine's process group, SIGKILL after the stop grace
    /// (10 s by default).
    fn stop(&self, run: &Run, machine: &str) -> Result<(), ProviderError> {
        let root = site_root(run, "stop")?;
        let runs = runs_dir(root, run);
        let pid = process::pid_file(&runs, &machine_file_name(machine));
        process::stop(machine, &pid, self.grace)?;
        if run.mode == Mode::Failover {
            forget_failover_run(root, &runs)?;
        }
        Ok(())
    }

    fn check(
        &self,
        run: &Run,
        machine: &MachineSpec,
        check: &CommandCheck,
    ) -> Result<CheckOutcome, ProviderError> {
        site_root(run, "check")?;
        Ok(check::run(run, machine, check))
    }

    /// Test runs: stops what still runs, removes the sandbox, and
    /// `.standby-test` when no other sandbox is left. Failover runs: stops
    /// what still runs and drops the run's bookkeeping; disks stay.
    fn destroy(&self, run: &Run) -> Result<(), ProviderError> {
        let root = site_root(run, "destroy")?;
        let runs = runs_dir(root, run);
        stop_all(&runs, self.grace)?;
        match run.mode {
            Mode::Test => {
                remove_tree(&sandbox(root, run))?;
                remove_if_empty(&root.join(layout::TEST_DIR));
            }
            Mode::Failover => forget_failover_run(root, &runs)?,
        }
        Ok(())
    }
}
