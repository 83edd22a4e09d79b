//! Quiesce hooks: run a machine's `freeze` command (bounded by its timeout,
//! through the one command runner)
//! and guarantee its `thaw` runs afterwards — on success, on error, on
//! timeout and on unwinding — through a guard.

use crate::model::Quiesce;
use standby_provider_core::command as runner;
use std::process::Command;
use std::time::Duration;

/// Why a freeze or thaw hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("the command is empty")]
    Empty,
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    /// `status` is the runner's text (an exit code, a signal, or the
    /// timeout after which the hook's whole process group was killed);
    /// `output` the last lines it printed.
    #[error("{program} failed ({status}){}", if output.is_empty() { String::new() } else { format!("; its output ended with:\n{output}") })]
    Failed {
        program: String,
        status: String,
        output: String,
    },
}

/// Run a hook `argv` without a shell through the one command runner (own
/// process group, explicit environment plus `STANDBY_MACHINE` and
/// `STANDBY_HOOK`); fail on a non-zero exit or after the timeout, when its
/// whole process group is killed: a background child the hook started
/// cannot freeze the application again after thaw.
fn run_hook(argv: &[String], timeout: Duration, env: &[(&str, &str)]) -> Result<(), HookError> {
    let (prog, args) = argv.split_first().ok_or(HookError::Empty)?;
    let mut cmd = Command::new(prog);
    cmd.args(args).envs(env.iter().copied());
    let f = runner::run(cmd, None, timeout).map_err(|source| HookError::Start {
        program: prog.clone(),
        source,
    })?;
    if f.success() {
        return Ok(());
    }
    Err(HookError::Failed {
        program: prog.clone(),
        status: f.exit_text(),
        output: runner::tail(&[f.stdout.as_slice(), f.stderr.as_slice()].concat(), 5),
    })
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
    pub fn freeze(machine: &str, hooks: &Quiesce) -> Result<Frozen, HookError> {
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

    /// Run the thaw hook (once; later calls do nothing).
    pub fn thaw(&mut self) -> Result<(), HookError> {
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
