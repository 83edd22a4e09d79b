//! The one command runner: every hook, check, script step, shutdown command
//! and exec-provider call runs through [`run`] (boot, which starts a
//! long-running machine, uses [`isolate`] and its own process group).
//!
//! A command runs in a process group of its own with stdin fed (or
//! /dev/null), stdout and stderr captured (the last [`KEEP`] bytes of each),
//! and an explicit environment ([`isolate`]): never standby's own. When its
//! time runs out or its run is cancelled, the whole group gets SIGKILL;
//! a grandchild that keeps a pipe open past the deadline cannot hold the
//! caller either.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Output kept per stream; older bytes are dropped (only the tail is shown).
pub const KEEP: usize = 8 << 20;

/// Variables a child gets from standby's own environment, when set: what
/// programs need to find things and speak the user's language. Nothing
/// else of standby's environment reaches a child (no vault key, no
/// `STANDBY_VAR_*`, no cloud credentials) unless named in [`PASS_ENV`].
pub const BASE_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
];

/// `STANDBY_PASS_ENV`: names (comma or space separated) of further
/// variables of standby's environment to pass to every child on purpose,
/// e.g. the credentials an exec provider needs. A trailing `*` passes every
/// variable with that prefix (`AWS_*`). Names starting with `STANDBY_` are
/// never passed this way (standby sets the `STANDBY_*` a child gets).
pub const PASS_ENV: &str = "STANDBY_PASS_ENV";

/// Names of variables holding secrets standby itself reads (a vault's
/// `key_env`): never passed to a child, even when [`PASS_ENV`] names them
/// or matches them with a prefix.
static WITHHELD: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Never pass variable `name` to a child (see [`base_env`]). Called for
/// every `key_env` when a configuration is loaded and when a key is read.
pub fn withhold_env(name: &str) {
    if let Ok(mut w) = WITHHELD.lock()
        && !w.iter().any(|n| n == name)
    {
        w.push(name.to_string());
    }
}

/// How long a command is waited for between looks at its cancel flag.
const TICK: Duration = Duration::from_millis(50);

/// How a command ended.
#[derive(Debug)]
pub struct Finished {
    /// `None`: it ran past its timeout or was cancelled, and its process
    /// group was killed.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// It was stopped because its run was cancelled (not timed out).
    pub cancelled: bool,
    /// Live processes of its group when the group was killed (0: not killed).
    pub killed: usize,
    /// The timeout it ran under.
    pub timeout: Duration,
}

impl Finished {
    /// True when it ran past its timeout (or held its output open past it).
    pub fn timed_out(&self) -> bool {
        self.status.is_none() && !self.cancelled
    }

    /// True when the command exited 0 in time.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// `exit code 3`, `killed by signal 9`, or what was killed and why:
    /// `timed out after 10s; its process group (2 processes) was killed`.
    pub fn exit_text(&self) -> String {
        match self.status {
            Some(s) => exit_text(s),
            None => {
                let why = if self.cancelled {
                    "cancelled".to_string()
                } else {
                    format!("timed out after {}", seconds(self.timeout))
                };
                let n = self.killed;
                let what = match n {
                    0 => "its process group was killed (nothing was left in it)".to_string(),
                    1 => "its process group (1 process) was killed".to_string(),
                    n => format!("its process group ({n} processes) was killed"),
                };
                format!("{why}; {what}")
            }
        }
    }
}

/// `10s`, `1.5s`, `250ms`.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `exit code N` or `killed by signal N`.
pub fn exit_text(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "ended".to_string(),
    }
}

/// The environment a child of standby starts from: [`BASE_ENV`], `LC_*`,
/// and what [`PASS_ENV`] names, taken from standby's own environment;
/// never a name given to [`withhold_env`].
pub fn base_env() -> Vec<(OsString, OsString)> {
    let withheld = WITHHELD.lock().map(|w| w.clone()).unwrap_or_default();
    let pass: Vec<String> = std::env::var(PASS_ENV)
        .unwrap_or_default()
        .split([',', ' ', '\n', '\t'])
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with("STANDBY_"))
        .map(str::to_string)
        .collect();
    let wanted = |name: &str| {
        !withheld.iter().any(|w| w == name)
            && (BASE_ENV.contains(&name)
                || name.starts_with("LC_")
                || pass.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix) && !name.starts_with("STANDBY_"),
                    None => p == name,
                }))
    };
    std::env::vars_os()
        .filter(|(k, _)| k.to_str().is_some_and(wanted))
        .collect()
}

/// Gives `cmd` an explicit environment: [`base_env`] plus whatever was set
/// on `cmd` itself (the `STANDBY_*` variables standby passes). Nothing else
/// of standby's environment is inherited.
pub fn isolate(cmd: &mut Command) {
    let set: Vec<(OsString, Option<OsString>)> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_os_string(), v.map(|v| v.to_os_string())))
        .collect();
    cmd.env_clear();
    cmd.envs(base_env());
    for (k, v) in set {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
}

/// Runs `cmd` with [`run_until`] and no cancel flag.
pub fn run(cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> std::io::Result<Finished> {
    run_until(cmd, stdin, timeout, &|| false)
}

/// Runs `cmd` in a process group of its own, with an explicit environment
/// ([`isolate`]) and `stdin` (or /dev/null), and waits up to `timeout`.
/// When the time runs out, or `cancelled()` turns true, the whole group
/// gets SIGKILL. A process of the group that keeps stdout or stderr open
/// past the deadline is killed too: the call never waits for it.
/// Errors only when the command cannot be started.
pub fn run_until(
    mut cmd: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    cancelled: &dyn Fn() -> bool,
) -> std::io::Result<Finished> {
    let deadline = Instant::now() + timeout;
    isolate(&mut cmd);
    cmd.process_group(0)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let pid = child.id();
    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
        // A command that never reads its stdin must not block us: feed it
        // from a thread; a broken pipe just means it did not want it all.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let out = collect(child.stdout.take());
    let err = collect(child.stderr.take());

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let mut stop: Option<bool> = None; // Some(cancelled) once we gave up.
    let mut killed = 0;
    let kill = |cancel: bool, stop: &mut Option<bool>, killed: &mut usize| {
        if stop.is_none() {
            *stop = Some(cancel);
            *killed = group_members(pid);
            kill_group(pid, libc::SIGKILL);
        }
    };
    let status = match wait_for(&rx, deadline, cancelled) {
        Ok(s) => Some(s?),
        Err(cancel) => {
            kill(cancel, &mut stop, &mut killed);
            rx.recv().ok().and_then(Result::ok)
        }
    };
    // The leader is gone; its output is complete once every holder of the
    // pipes is gone too.
    for done in [&out.1, &err.1] {
        if stop.is_some() {
            let _ = done.recv_timeout(Duration::from_secs(1));
        } else if let Err(cancel) = wait_for(done, deadline, cancelled) {
            kill(cancel, &mut stop, &mut killed);
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
    }
    let take = |b: &Arc<Mutex<Vec<u8>>>| b.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(Finished {
        status: if stop.is_some() { None } else { status },
        stdout: take(&out.0),
        stderr: take(&err.0),
        cancelled: stop == Some(true),
        killed,
        timeout,
    })
}

/// Waits on `rx` until `deadline` or a cancel. `Err(true)`: cancelled;
/// `Err(false)`: the deadline passed (or the sender vanished).
fn wait_for<T>(
    rx: &mpsc::Receiver<T>,
    deadline: Instant,
    cancelled: &dyn Fn() -> bool,
) -> Result<T, bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(false);
        }
        match rx.recv_timeout(left.min(TICK)) {
            Ok(v) => return Ok(v),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(false),
            Err(mpsc::RecvTimeoutError::Timeout) if cancelled() => return Err(true),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

type Collected = (Arc<Mutex<Vec<u8>>>, mpsc::Receiver<()>);

/// Reads a pipe to its end on a thread, keeping the last [`KEEP`] bytes.
fn collect(pipe: Option<impl Read + Send + 'static>) -> Collected {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let Some(mut pipe) = pipe else {
        let _ = tx.send(());
        return (buf, rx);
    };
    let shared = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 64 * 1024];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if let Ok(mut b) = shared.lock() {
                b.extend_from_slice(&chunk[..n]);
                if b.len() > KEEP {
                    let cut = b.len() - KEEP;
                    b.drain(..cut);
                }
            }
        }
        let _ = tx.send(());
    });
    (buf, rx)
}

/// Sends `signal` to the process group led by `pid`. Errors (the group is
/// already gone) are ignored: the caller only wants it ended.
pub fn kill_group(pid: u32, signal: i32) {
    if let Ok(p) = i32::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // touches no memory of ours.
        unsafe {
            libc::kill(-p, signal);
        }
    }
}

/// True while a live (not zombie) process of the group led by `pid`
/// exists. Zombies do not count: where nothing reaps orphans (some
/// containers' init), they would otherwise keep a stopped group "alive".
pub fn group_alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(-p, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    // Something is there: look for a member that is not a zombie. Without
    // /proc, assume it is alive.
    std::fs::metadata("/proc/self").is_err() || group_members(pid) > 0
}

/// How many live (not zombie) processes the group led by `pid` has, from
/// /proc (0 when /proc cannot be read).
pub fn group_members(pid: u32) -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| {
                    // Fields after the command name: state, ppid, pgrp, ...
                    let rest = s.get(s.rfind(')')? + 1..)?.to_string();
                    let mut f = rest.split_whitespace();
                    let state = f.next()?;
                    let pgrp: u32 = f.nth(1)?.parse().ok()?;
                    Some(pgrp == pid && state != "Z")
                })
                .unwrap_or(false)
        })
        .count()
}

/// The last `n` lines of `bytes` (lossy UTF-8), trimmed.
pub fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

/// The program to run for `argv0` given a working directory: a relative path
/// with a `/` (`scripts/boot.sh`, `./check`) is taken relative to `cwd`; a
/// bare name (`sh`, `sqlite3`) is looked up on PATH, as a shell would.
pub fn program(argv0: &str, cwd: &std::path::Path) -> std::path::PathBuf {
    let p = std::path::Path::new(argv0);
    if p.is_relative() && argv0.contains('/') {
        cwd.join(p)
    } else {
        p.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn captures_output_and_exit_code() {
        let f = run(
            sh("echo out; echo err >&2; exit 3"),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(f.exit_text(), "exit code 3");
        assert_eq!(f.stdout, b"out\n");
        assert_eq!(f.stderr, b"err\n");
        assert!(!f.success());
    }

    #[test]
    fn feeds_stdin() {
        let f = run(sh("cat"), Some(b"hello".to_vec()), Duration::from_secs(10)).unwrap();
        assert!(f.success());
        assert_eq!(f.stdout, b"hello");
    }

    #[test]
    fn kills_the_whole_group_on_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        // A background child that would outlive its parent and hold stdout.
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let f = run(sh(&script), None, Duration::from_millis(500)).unwrap();
        assert!(f.timed_out());
        assert_eq!(
            f.exit_text(),
            "timed out after 500ms; its process group (2 processes) was killed"
        );
        let bg: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_gone(bg);
    }

    #[test]
    fn a_grandchild_holding_the_pipe_ends_at_the_timeout() {
        // The shell waits for `sleep`, which holds stdout: both must go.
        let started = Instant::now();
        let f = run(sh("sleep 600; true"), None, Duration::from_millis(300)).unwrap();
        assert!(f.timed_out(), "{f:?}");
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(
            f.exit_text(),
            "timed out after 300ms; its process group (2 processes) was killed"
        );
        // A leader that exits at once while its background child keeps the
        // pipe open: the child is killed at the deadline.
        let f = run(sh("sleep 600 & exit 0"), None, Duration::from_millis(300)).unwrap();
        assert!(f.timed_out(), "{f:?}");
        assert_eq!(
            f.exit_text(),
            "timed out after 300ms; its process group (1 process) was killed"
        );
    }

    #[test]
    fn a_cancel_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
        let flag = std::sync::atomic::AtomicBool::new(false);
        let started = Instant::now();
        let f = std::thread::scope(|s| {
            s.spawn(|| {
                while !pidfile.exists() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            run_until(sh(&script), None, Duration::from_secs(600), &|| {
                flag.load(std::sync::atomic::Ordering::SeqCst)
            })
            .unwrap()
        });
        assert!(started.elapsed() < Duration::from_secs(300));
        assert!(f.cancelled && !f.timed_out() && !f.success(), "{f:?}");
        assert!(
            f.exit_text().starts_with("cancelled; its process group ("),
            "{}",
            f.exit_text()
        );
        let bg: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_gone(bg);
    }

    #[test]
    fn children_get_an_explicit_environment() {
        // SAFETY: the test binary's other tests do not read these variables.
        unsafe {
            std::env::set_var("CORE_TEST_SECRET", "s3cr3t-value");
            std::env::set_var("CORE_TEST_PASSED", "passed-value");
            std::env::set_var("AWS_CORE_TEST", "aws-value");
            std::env::set_var(PASS_ENV, "CORE_TEST_PASSED, AWS_*, STANDBY_VAR_X");
            std::env::set_var("STANDBY_VAR_X", "never");
        }
        let mut cmd = sh("env");
        cmd.env("STANDBY_MACHINE", "machine.db");
        let f = run(cmd, None, Duration::from_secs(10)).unwrap();
        let out = String::from_utf8_lossy(&f.stdout);
        assert!(out.contains("STANDBY_MACHINE=machine.db"), "{out}");
        assert!(out.contains("CORE_TEST_PASSED=passed-value"), "{out}");
        assert!(out.contains("AWS_CORE_TEST=aws-value"), "{out}");
        assert!(out.contains("PATH="), "{out}");
        assert!(!out.contains("s3cr3t-value"), "{out}");
        assert!(!out.contains("never"), "{out}");
        assert!(!out.contains(PASS_ENV), "{out}");
    }

    fn assert_gone(pid: u32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "process {pid} survived");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_group_of_only_zombies_is_not_alive() {
        let mut child = Command::new("true").process_group(0).spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie, still a member of its group.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .contains(") Z ")
        {
            assert!(Instant::now() < deadline, "child never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!group_alive(pid));
        child.wait().unwrap();
        assert!(!group_alive(pid));

        let mut live = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        assert!(group_alive(live.id()));
        kill_group(live.id(), libc::SIGKILL);
        live.wait().unwrap();
        assert!(!group_alive(live.id()));
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail(b"", 2), "");
    }

    #[test]
    fn relative_programs_resolve_against_the_working_directory() {
        let cwd = std::path::Path::new("/cfg");
        assert_eq!(
            program("scripts/boot.sh", cwd),
            std::path::PathBuf::from("/cfg/scripts/boot.sh")
        );
        assert_eq!(program("sh", cwd), std::path::PathBuf::from("sh"));
        assert_eq!(program("/bin/sh", cwd), std::path::PathBuf::from("/bin/sh"));
    }
}
