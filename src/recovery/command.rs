//! Running a user command (script steps, shutdown, check steps, the test
//! hook) with a timeout: argv without a shell, the configuration root as
//! working directory, through the one runner of `standby_provider_core`.

use crate::exec::Cancel;
use standby_provider_core::command as runner;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Exit code and the tail of the output, for reports.
    pub fn describe(&self) -> String {
        let code = self
            .code
            .map_or("killed by a signal".to_string(), |c| format!("exit {c}"));
        let out = tail(&format!("{}{}", self.stdout, self.stderr), 400);
        if out.is_empty() {
            code
        } else {
            format!("{code}: {out}")
        }
    }
}

/// The last `max` bytes of `s`, trimmed, on char boundaries.
pub fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// Why a command did not finish on its own.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the command is empty")]
    Empty,
    #[error("cannot start {}: {source}", program.display())]
    CannotStart {
        program: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Killed at its timeout, or (`cancelled`) by an interrupt: `how` says
    /// what was killed; `output` is the tail of what it wrote.
    #[error(
        "{}{how}{}{output}",
        // Callers and reports know the word "interrupted".
        if *cancelled { "interrupted (" } else { "" },
        match (*cancelled, output.is_empty()) {
            (true, true) => ")",
            (true, false) => "); its output ended with: ",
            (false, true) => "",
            (false, false) => "; its output ended with: ",
        }
    )]
    Stopped {
        cancelled: bool,
        how: String,
        output: String,
    },
}

/// Run `argv` in `cwd` with an explicit environment (the child base of
/// [`standby_provider_core::command::base_env`] plus `env`) through the one
/// command runner: its own process group, killed whole when the time is up
/// or the run is cancelled. `Err` when it cannot start, runs past `timeout`
/// or is cancelled; the message says what was killed (`timed out after 10s;
/// its process group (2 processes) was killed`) and ends with its output.
pub fn run(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
    cancel: Option<&Cancel>,
) -> Result<Finished, CommandError> {
    let Some(argv0) = argv.first() else {
        return Err(CommandError::Empty);
    };
    let program = runner::program(argv0, cwd);
    let mut cmd = Command::new(&program);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let f = runner::run_until(cmd, None, timeout, &|| {
        cancel.is_some_and(|c| c.is_cancelled())
    })
    .map_err(|source| CommandError::CannotStart {
        program: program.clone(),
        source,
    })?;
    let done = Finished {
        code: f.status.and_then(|s| s.code()),
        stdout: String::from_utf8_lossy(&f.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&f.stderr).into_owned(),
    };
    if f.status.is_none() {
        let out = tail(&format!("{}{}", done.stdout, done.stderr), 400);
        return Err(CommandError::Stopped {
            cancelled: f.cancelled,
            how: f.exit_text(),
            output: out,
        });
    }
    Ok(done)
}
