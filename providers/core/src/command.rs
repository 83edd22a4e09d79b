//! Running one command to completion under a deadline: stdin fed, stdout and
//! stderr captured, and the command's whole process group killed when time
//! runs out. Providers use it for checks and for exec-provider actions.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Output kept per stream; older bytes are dropped (only the tail is shown).
const KEEP: usize = 8 << 20;

/// How a command ended.
#[derive(Debug)]
pub struct Finished {
    /// `None`: it ran past its timeout and its process group was killed.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// True when the command exited 0 in time.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// `exit code 3`, `killed by signal 9` or `timed out`.
    pub fn exit_text(&self) -> String {
        match self.status {
            None => "timed out".to_string(),
            Some(s) => exit_text(s),
        }
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

/// Runs `cmd` in a process group of its own with `stdin` (or /dev/null) and
/// waits up to `timeout`. On timeout the group gets SIGKILL. A process of the
/// group that keeps stdout or stderr open past the deadline is killed too.
/// Errors only when the command cannot be started.
pub fn run(
    mut cmd: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<Finished> {
    let deadline = Instant::now() + timeout;
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
    let mut timed_out = false;
    let status = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(s) => Some(s?),
        Err(_) => {
            timed_out = true;
            kill_group(pid, libc::SIGKILL);
            rx.recv().ok().and_then(Result::ok)
        }
    };
    // The leader is gone; its output is complete once every holder of the
    // pipes is gone too.
    for done in [&out.1, &err.1] {
        let left = deadline.saturating_duration_since(Instant::now());
        if done.recv_timeout(left).is_err() {
            timed_out = true;
            kill_group(pid, libc::SIGKILL);
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
    }
    let take = |b: &Arc<Mutex<Vec<u8>>>| b.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(Finished {
        status: if timed_out { None } else { status },
        stdout: take(&out.0),
        stderr: take(&err.0),
    })
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
    // Something is there: look for a member that is not a zombie.
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    procs.filter_map(Result::ok).any(|e| {
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
        let bg: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{bg}")).exists()
            && std::fs::read_to_string(format!("/proc/{bg}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "background sleep survived");
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
