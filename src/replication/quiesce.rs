//! Quiesce hooks: run a machine's `freeze` command (bounded by its timeout)
//! and guarantee its `thaw` runs afterwards — on success, on error, on
//! timeout and on unwinding — through a guard.

use crate::model::Quiesce;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// Run `argv` without a shell; fail on a non-zero exit or after `timeout`
/// (the command is killed then).
pub fn run(argv: &[String], timeout: Duration) -> Result<(), String> {
    let (prog, args) = argv.split_first().ok_or("the command is empty")?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {prog}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let outcome = match rx.recv_timeout(timeout) {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{prog} failed ({status})")),
        Ok(Err(e)) => Err(format!("cannot wait for {prog}: {e}")),
        Err(_) => {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Err(format!(
                "{prog} did not finish within {}s and was killed",
                timeout.as_secs()
            ))
        }
    };
    let _ = waiter.join();
    outcome
}

/// A frozen machine. `thaw` runs when this is dropped if not run before.
pub struct Frozen {
    pub machine: String,
    hooks: Quiesce,
    thawed: bool,
}

impl Frozen {
    /// Run the freeze hook. On failure the thaw hook still runs (a freeze
    /// may have half-happened) before the error is returned.
    pub fn freeze(machine: &str, hooks: &Quiesce) -> Result<Frozen, String> {
        let mut f = Frozen {
            machine: machine.to_string(),
            hooks: hooks.clone(),
            thawed: false,
        };
        if let Err(e) = run(&hooks.freeze, hooks.timeout.to_std()) {
            let _ = f.thaw();
            return Err(e);
        }
        Ok(f)
    }

    pub fn thaw(&mut self) -> Result<(), String> {
        if self.thawed {
            return Ok(());
        }
        self.thawed = true;
        run(&self.hooks.thaw, self.hooks.timeout.to_std())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = self.thaw() {
            tracing::error!(machine = %self.machine, "thaw failed: {e}");
        }
    }
}
