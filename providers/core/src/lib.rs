//! The contract a site provider implements: prepare a run, materialize a
//! machine's disks, start, stop, run a check, destroy.
//!
//! Providers never see HCL or the vault: standby hands them plain requests.
//! To materialize a disk, a provider says where the disk's bytes go
//! ([`SiteProvider::disk_target`]); standby writes the restored point there.
//!
//! Providers are stateless between calls: one `standby failover test` process
//! may start machines that a later `standby failover cleanup` process stops,
//! so whatever a provider must remember (pids, sandboxes) it keeps at the site.
//!
//! Calls for one run come in this order: `prepare` once, then per machine
//! `disk_target` for each disk, `start`, `check` (any number of times),
//! `stop`; finally `destroy` once (test runs; cleanup). `stop` and `destroy`
//! must succeed when there is nothing left to stop or remove, so cleanup can
//! be rerun after an interruption.

pub mod command;
pub mod probe;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Why a run happens. A `Test` run lives in a sandbox of its own and never
/// touches a production path of either site; a `Failover` run puts the
/// machines on the site's production paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Test,
    Failover,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::Failover => "failover",
        }
    }
}

/// Whether the user interrupted the run (Ctrl-C, SIGTERM): a provider
/// waiting for a machine to come up gives up early instead of waiting for
/// its timeout. Never serialized (an exec provider is interrupted by its
/// process group's signal); equal to any other.
#[derive(Clone, Default)]
pub struct Interrupt(Option<std::sync::Arc<dyn Fn() -> bool + Send + Sync>>);

impl Interrupt {
    /// Interrupted when `f` says so.
    pub fn new(f: impl Fn() -> bool + Send + Sync + 'static) -> Interrupt {
        Interrupt(Some(std::sync::Arc::new(f)))
    }

    pub fn is_set(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f())
    }
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interrupt({})", self.is_set())
    }
}

impl PartialEq for Interrupt {
    fn eq(&self, _: &Interrupt) -> bool {
        true
    }
}

impl Eq for Interrupt {}

/// One recovery run (all machines of one recovery plan) at one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Unique per run, safe as a file name (`[A-Za-z0-9-]`).
    pub run_id: String,
    pub mode: Mode,
    /// The site's address, e.g. `site.dr`.
    pub site: String,
    /// The site's root directory (local provider), absolute.
    pub site_root: Option<PathBuf>,
    /// The configuration directory, absolute: relative commands and paths
    /// in the configuration (boot scripts, check scripts) resolve against it
    /// and commands run with it as their working directory.
    pub config_root: PathBuf,
    #[serde(skip)]
    pub interrupt: Interrupt,
}

/// A disk to materialize: its name, size, and where it lives on the
/// machine's own site, relative to that site's root (or absolute: a device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub name: String,
    pub size: u64,
    pub path: PathBuf,
}

/// A machine of a run, with where its disks were materialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSpec {
    /// The machine's address, e.g. `machine.db` or `machine.web["a"]`.
    pub machine: String,
    /// The machine's `boot` command (argv, no shell), if any.
    pub boot: Option<Vec<String>>,
    /// Materialized disks by disk name (paths from `disk_target`).
    pub disks: BTreeMap<String, PathBuf>,
}

impl MachineSpec {
    /// The environment every command of this machine gets:
    /// `STANDBY_MACHINE`, `STANDBY_RUN_ID`, `STANDBY_MODE`, and
    /// `STANDBY_DISK_<NAME>` (upper case, `-` and `.` as `_`) per disk.
    pub fn env(&self, run: &Run) -> Vec<(String, String)> {
        let mut env = vec![
            ("STANDBY_MACHINE".to_string(), self.machine.clone()),
            ("STANDBY_RUN_ID".to_string(), run.run_id.clone()),
            ("STANDBY_MODE".to_string(), run.mode.as_str().to_string()),
        ];
        for (name, path) in &self.disks {
            env.push((disk_env_name(name), path.display().to_string()));
        }
        env
    }
}

/// `STANDBY_DISK_<NAME>` for a disk name.
pub fn disk_env_name(disk: &str) -> String {
    let upper: String = disk
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("STANDBY_DISK_{upper}")
}

/// A command check run with the machine's environment: passes when the
/// command exits 0 within `timeout` and, if `expect` is set, its trimmed
/// stdout equals it. (HTTP and TCP checks are run by standby itself.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandCheck {
    pub name: String,
    pub command: Vec<String>,
    pub expect: Option<String>,
    #[serde(with = "secs")]
    pub timeout: Duration,
}

/// The outcome of one check attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub passed: bool,
    /// What was seen: exit code and the tail of the output, or why it failed.
    pub detail: String,
}

/// A check run inside the machine's guest by a provider that runs VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestCheck {
    pub name: String,
    pub probe: GuestProbe,
    /// How long one attempt may take.
    #[serde(with = "secs")]
    pub timeout: Duration,
}

/// What a [`GuestCheck`] looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestProbe {
    /// `command` (argv, no shell) runs in the guest through the guest
    /// agent; passes when it exits 0 within the timeout and, if set, its
    /// trimmed stdout equals `expect`.
    Exec {
        command: Vec<String>,
        expect: Option<String>,
    },
    /// Passes when the serial console's log so far holds a line matching
    /// the regular expression `pattern`.
    Console { pattern: String },
}

/// What a provider that runs VMs saw of one machine, for the run's
/// report: taken when its checks finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// `kvm` or `tcg`, with why (the KVM probe's finding).
    pub accelerator: String,
    pub accelerator_reason: String,
    /// What the VM ran with: memory in MiB and virtual CPUs.
    pub memory_mib: u64,
    pub cpus: u32,
    /// From starting the VM to the guest agent answering `guest-ping`.
    pub boot_seconds: Option<f64>,
    /// The last lines of the serial console (at most 20).
    pub console_tail: Vec<String>,
    /// SHA-256 (hex) of the whole serial console log at that moment.
    pub console_sha256: String,
    /// The display as a PNG (QMP `screendump`), if one could be taken.
    #[serde(skip)]
    pub screenshot_png: Option<Vec<u8>>,
    /// Why there is no screenshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screenshot_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{action} failed for {subject}: {reason}")]
    Action {
        action: &'static str,
        subject: String,
        reason: String,
    },
    #[error("{action} for {subject} did not finish within {timeout:?}")]
    Timeout {
        action: &'static str,
        subject: String,
        timeout: Duration,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// What every site provider does.
pub trait SiteProvider: Send + Sync {
    /// Set up the place a run lives (for test runs, a fresh sandbox).
    fn prepare(&self, run: &Run) -> Result<(), ProviderError>;

    /// Where `machine`'s disk should be written: an existing or new file of
    /// `disk.size` bytes (or a device) that standby then fills with the
    /// restored point. Test runs get a path inside the run's sandbox.
    fn disk_target(
        &self,
        run: &Run,
        machine: &str,
        disk: &DiskSpec,
    ) -> Result<PathBuf, ProviderError>;

    /// Boot the machine from its materialized disks. Returns once the boot
    /// command has been started (a long-running process is tracked so
    /// `stop` can end it, even from another standby process) or, for a boot
    /// command that exits, once it exited 0 within `timeout`.
    fn start(
        &self,
        run: &Run,
        machine: &MachineSpec,
        timeout: Duration,
    ) -> Result<(), ProviderError>;

    /// Stop the machine if it runs; succeeds when it does not.
    fn stop(&self, run: &Run, machine: &str) -> Result<(), ProviderError>;

    /// Take over `machine` as `earlier` (an interrupted attempt of the same
    /// failover or failback) started it, if it still runs: from now on it
    /// is tracked as `run`'s (so `run`'s `stop` ends it) and true is
    /// returned. False when it does not run, or when this provider cannot
    /// take a machine over (the default): the caller then stops it with
    /// `earlier` and starts it afresh.
    fn adopt(&self, earlier: &Run, run: &Run, machine: &str) -> Result<bool, ProviderError> {
        let _ = (earlier, run, machine);
        Ok(false)
    }

    /// Whether `machine`, started by `run`, still runs: Some when this
    /// provider can tell (a VM's process), None when it cannot (the
    /// default). `status` uses it so a recovered machine that died is not
    /// reported as running.
    fn runs(&self, run: &Run, machine: &str) -> Result<Option<bool>, ProviderError> {
        let _ = (run, machine);
        Ok(None)
    }

    /// Run one attempt of a command check with the machine's environment.
    fn check(
        &self,
        run: &Run,
        machine: &MachineSpec,
        check: &CommandCheck,
    ) -> Result<CheckOutcome, ProviderError>;

    /// Remove everything the run created (the test sandbox); succeeds when
    /// there is nothing left. Never removes production disks.
    fn destroy(&self, run: &Run) -> Result<(), ProviderError>;

    /// Run one attempt of a check inside the machine's guest. Providers
    /// that run no VMs refuse it.
    fn guest_check(
        &self,
        run: &Run,
        machine: &MachineSpec,
        check: &GuestCheck,
    ) -> Result<CheckOutcome, ProviderError> {
        let _ = (run, check);
        Err(ProviderError::Action {
            action: "guest check",
            subject: machine.machine.clone(),
            reason:
                "this site's provider runs no VMs; guest and console checks need a \"qemu\" site"
                    .into(),
        })
    }

    /// What the provider saw of a started machine (accelerator, boot
    /// time, console, screenshot); None from providers that run no VMs.
    fn evidence(&self, run: &Run, machine: &str) -> Result<Option<Evidence>, ProviderError> {
        let _ = (run, machine);
        Ok(None)
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_env_names_are_shell_safe() {
        assert_eq!(disk_env_name("system"), "STANDBY_DISK_SYSTEM");
        assert_eq!(disk_env_name("data-1.v2"), "STANDBY_DISK_DATA_1_V2");
    }

    #[test]
    fn machine_env_names_run_mode_and_disks() {
        let run = Run {
            run_id: "r1".into(),
            mode: Mode::Test,
            site: "site.dr".into(),
            site_root: None,
            config_root: PathBuf::from("/cfg"),
            interrupt: Default::default(),
        };
        let m = MachineSpec {
            machine: "machine.db".into(),
            boot: None,
            disks: BTreeMap::from([("data".to_string(), PathBuf::from("/x/data"))]),
        };
        let env = m.env(&run);
        assert!(env.contains(&("STANDBY_MODE".into(), "test".into())));
        assert!(env.contains(&("STANDBY_DISK_DATA".into(), "/x/data".into())));
    }
}
