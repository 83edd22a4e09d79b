//! Machine processes: starting a boot command in its own process group,
//! recording it in a pid file (pid + start time, so a reused pid is never
//! mistaken for the machine), and stopping it from any later process.

use standby_provider_core::command::{group_alive, kill_group, tail};
use standby_provider_core::{MachineSpec, ProviderError, Run};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a boot command may run and still count as a one-shot boot.
const SETTLE: Duration = Duration::from_secs(1);
/// Lines of the boot log shown when a boot fails.
const LOG_LINES: usize = 20;

/// A tracked machine process: the leader of its process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    pub pid: u32,
    /// Field 22 of /proc/<pid>/stat (clock ticks since boot).
    pub start_time: u64,
}

pub fn pid_file(runs: &Path, machine_file: &str) -> PathBuf {
    runs.join(format!("{machine_file}.pid"))
}

pub fn log_file(runs: &Path, machine_file: &str) -> PathBuf {
    runs.join(format!("{machine_file}.log"))
}

/// The state letter and start time of `pid`, or None when it does not exist.
fn stat(pid: u32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // after it start past the last `)`.
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Reaps `pid` if it is our own exited child (a no-op otherwise).
fn reap(pid: u32) {
    if let Ok(p) = i32::try_from(pid) {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on a pid that is not our child just
        // returns ECHILD.
        unsafe {
            libc::waitpid(p, &mut status, libc::WNOHANG);
        }
    }
}

impl Tracked {
    /// Is anything of this machine still running? The leader counts only if
    /// its start time matches (else the pid was reused, and Linux reuses a
    /// pid only once no group carries it, so nothing of ours is left); once
    /// the leader is gone, processes left in its group (a boot script's
    /// background children) still count.
    pub fn running(&self) -> bool {
        reap(self.pid);
        match stat(self.pid) {
            Some((state, start)) if state != 'Z' => start == self.start_time,
            _ => group_alive(self.pid),
        }
    }
}

pub fn read_pid_file(path: &Path) -> Result<Option<Tracked>, ProviderError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ProviderError::Io {
                context: format!("reading pid file {}", path.display()),
                source,
            });
        }
    };
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(pid)), Some(Ok(start_time))) => Ok(u32::try_from(pid)
            .ok()
            .map(|pid| Tracked { pid, start_time })),
        // A torn or foreign file: nothing we can safely signal.
        _ => Ok(None),
    }
}

/// Writes the pid file atomically (temp file, fsync, rename), so a crash
/// leaves either no file or a whole one.
fn write_pid_file(path: &Path, t: Tracked) -> Result<(), ProviderError> {
    let io = |source| ProviderError::Io {
        context: format!("writing pid file {}", path.display()),
        source,
    };
    let tmp = path.with_extension("pid.tmp");
    let mut f = File::create(&tmp).map_err(io)?;
    writeln!(f, "{} {}", t.pid, t.start_time).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// Starts `machine`'s boot command (see `LocalProvider::start`).
pub fn start(
    run: &Run,
    machine: &MachineSpec,
    argv: &[String],
    runs: &Path,
    timeout: Duration,
) -> Result<(), ProviderError> {
    let subject = machine.machine.clone();
    let file = crate::layout::machine_file_name(&machine.machine);
    let action = |reason: String| ProviderError::Action {
        action: "start",
        subject: subject.clone(),
        reason,
    };
    let Some(argv0) = argv.first() else {
        return Err(action("the boot command is empty".into()));
    };
    fs::create_dir_all(runs).map_err(|source| ProviderError::Io {
        context: format!("creating {}", runs.display()),
        source,
    })?;
    let pid_path = pid_file(runs, &file);
    if let Some(t) = read_pid_file(&pid_path)?
        && t.running()
    {
        return Err(action(format!(
            "it is already running (pid {}); stop it first",
            t.pid
        )));
    }
    let log_path = log_file(runs, &file);
    let log = File::create(&log_path).map_err(|source| ProviderError::Io {
        context: format!("creating boot log {}", log_path.display()),
        source,
    })?;
    let log_err = log.try_clone().map_err(|source| ProviderError::Io {
        context: format!("opening boot log {}", log_path.display()),
        source,
    })?;
    let mut cmd = Command::new(standby_provider_core::command::program(
        argv0,
        &run.config_root,
    ));
    cmd.args(&argv[1..])
        .current_dir(&run.config_root)
        .envs(machine.env(run))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0);
    // The machine gets the explicit environment every child gets.
    standby_provider_core::command::isolate(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| action(format!("cannot run {argv0:?}: {e}")))?;
    let pid = child.id();
    // Track it at once, so even a standby killed in the settle window
    // leaves the process findable by `cleanup`.
    let start_time = stat(pid).map(|(_, s)| s).unwrap_or(0);
    let tracked = Tracked { pid, start_time };
    if let Err(e) = write_pid_file(&pid_path, tracked) {
        kill_group(pid, libc::SIGKILL);
        let _ = child.wait();
        return Err(e);
    }
    let deadline = Instant::now() + timeout.min(SETTLE);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                // A one-shot boot; if it left processes in its group (a
                // service started in the background), they are the machine.
                if !group_alive(pid) {
                    remove(&pid_path)?;
                }
                return Ok(());
            }
            Ok(Some(status)) => {
                kill_group(pid, libc::SIGKILL);
                remove(&pid_path)?;
                let log = fs::read(&log_path).unwrap_or_default();
                return Err(action(format!(
                    "the boot command {argv0:?} failed ({}); its output ended with:\n{}",
                    standby_provider_core::command::exit_text(status),
                    tail(&log, LOG_LINES)
                )));
            }
            Ok(None) if Instant::now() >= deadline => return Ok(()),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(action(format!("cannot wait for the boot command: {e}"))),
        }
    }
}

/// Stops what `pid_path` tracks: SIGTERM to its process group, up to
/// `grace` for it to end, then SIGKILL; then removes the pid file.
/// Nothing tracked or already gone: OK.
pub fn stop(machine: &str, pid_path: &Path, grace: Duration) -> Result<(), ProviderError> {
    let Some(t) = read_pid_file(pid_path)? else {
        return remove(pid_path);
    };
    if t.running() {
        kill_group(t.pid, libc::SIGTERM);
        if !wait_gone(&t, grace) {
            kill_group(t.pid, libc::SIGKILL);
            if !wait_gone(&t, Duration::from_secs(5)) {
                return Err(ProviderError::Action {
                    action: "stop",
                    subject: machine.to_string(),
                    reason: format!("process group {} is still there after SIGKILL", t.pid),
                });
            }
        }
    }
    remove(pid_path)
}

fn wait_gone(t: &Tracked, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if !t.running() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes a file; a missing one is fine.
pub fn remove(path: &Path) -> Result<(), ProviderError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ProviderError::Io {
            context: format!("removing {}", path.display()),
            source,
        }),
    }
}

/// The machines with a pid file in `runs` (file stems).
pub fn tracked_machines(runs: &Path) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(runs) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pid"))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_a_start_time() {
        let (state, start) = stat(std::process::id()).unwrap();
        assert_ne!(state, 'Z');
        assert!(start > 0);
    }

    #[test]
    fn a_pid_with_another_start_time_is_not_ours() {
        let (_, start) = stat(std::process::id()).unwrap();
        let t = Tracked {
            pid: std::process::id(),
            start_time: start + 1,
        };
        assert!(!t.running());
        let t = Tracked {
            pid: std::process::id(),
            start_time: start,
        };
        assert!(t.running());
    }
}
