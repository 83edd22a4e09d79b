//! Quiesce hooks: run a machine's `freeze` command (bounded by its timeout,
//! through the one command runner)
//! and guarantee its `thaw` runs afterwards — on success, on error, on
//! timeout and on unwinding — through a guard.

use crate::model::Quiesce;
use standby_provider_core::command as runner;
use std::process::Command;
use std::time::Duration;

/// Run a hook `argv` without a shell through the one command runner (own
/// process group, explicit environment plus `STANDBY_MACHINE` and
/// `STANDBY_HOOK`); fail on a non-zero exit or after `timeout`, when its
/// whole process group is killed: a background child the hook started
/// cannot freeze the application again after thaw.
pub fn run(argv: &[String], timeout: Duration) -> Result<(), String> {
    run_hook(argv, timeout, &[])
}

fn run_hook(argv: &[String], timeout: Duration, env: &[(&str, &str)]) -> Result<(), String> {
    let (prog, args) = argv.split_first().ok_or("the command is empty")?;
    let mut cmd = Command::new(prog);
    cmd.args(args).envs(env.iter().copied());
    let f = runner::run(cmd, None, timeout).map_err(|e| format!("cannot start {prog}: {e}"))?;
    if f.success() {
        return Ok(());
    }
    let out = runner::tail(&[f.stdout.as_slice(), f.stderr.as_slice()].concat(), 5);
    let out = if out.is_empty() {
        String::new()
    } else {
        format!("; its output ended with:\n{out}")
    };
    Err(format!("{prog} failed ({}){out}", f.exit_text()))
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
        let env = [("STANDBY_MACHINE", machine), ("STANDBY_HOOK", "freeze")];
        if let Err(e) = run_hook(&hooks.freeze, hooks.timeout.to_std(), &env) {
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
        let env = [
            ("STANDBY_MACHINE", self.machine.as_str()),
            ("STANDBY_HOOK", "thaw"),
        ];
        run_hook(&self.hooks.thaw, self.hooks.timeout.to_std(), &env)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = self.thaw() {
            tracing::error!(machine = %self.machine, "thaw failed: {e}");
        }
    }
}
