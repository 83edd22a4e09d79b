//! Command checks at a local site: the check command runs with the
//! machine's environment in the configuration directory, and its process
//! group is killed at the check's timeout.

use standby_provider_core::command::{self, Finished};
use standby_provider_core::{CheckOutcome, CommandCheck, MachineSpec, Run};
use std::process::Command;

/// Lines of output shown in a check's detail.
const DETAIL_LINES: usize = 20;

pub fn run(run: &Run, machine: &MachineSpec, check: &CommandCheck) -> CheckOutcome {
    let Some(argv0) = check.command.first() else {
        return CheckOutcome {
            passed: false,
            detail: "the check command is empty".into(),
        };
    };
    let mut cmd = Command::new(command::program(argv0, &run.config_root));
    cmd.args(&check.command[1..])
        .current_dir(&run.config_root)
        .envs(machine.env(run));
    match command::run(cmd, None, check.timeout) {
        Ok(f) => outcome(&f, check),
        Err(e) => CheckOutcome {
            passed: false,
            detail: format!("could not run {argv0:?}: {e}"),
        },
    }
}

/// Judges a finished check command: exit 0 in time and, if set, the
/// expected output.
fn outcome(f: &Finished, check: &CommandCheck) -> CheckOutcome {
    let out = String::from_utf8_lossy(&f.stdout);
    let mut passed = f.success();
    let mut detail = if f.timed_out() {
        format!(
            "timed out after {:?} (its process group was killed)",
            check.timeout
        )
    } else {
        f.exit_text()
    };
    if let (true, Some(want)) = (passed, &check.expect) {
        let got = out.trim();
        if got != want.trim() {
            passed = false;
            detail.push_str(&format!(", expected output {want:?}, got {:?}", clip(got)));
        }
    }
    let stdout = command::tail(&f.stdout, DETAIL_LINES);
    let stderr = command::tail(&f.stderr, DETAIL_LINES);
    if !stdout.is_empty() {
        detail.push_str("\nstdout:\n");
        detail.push_str(&stdout);
    }
    if !stderr.is_empty() {
        detail.push_str("\nstderr:\n");
        detail.push_str(&stderr);
    }
    CheckOutcome { passed, detail }
}

fn clip(s: &str) -> String {
    if s.chars().count() <= 200 {
        s.to_string()
    } else {
        let head: String = s.chars().take(200).collect();
        format!("{head}...")
    }
}
