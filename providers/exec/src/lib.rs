//! The exec site provider: every action runs the user's provider command
//! once, with one JSON request on stdin and one JSON reply expected on
//! stdout (protocol: [`protocol`], `schema/exec-provider.schema.json`).
//! This is how standby drives a hypervisor or cloud it has no built-in
//! provider for.

pub mod protocol;

use protocol::{MachineRef, Reply, Request};
use standby_provider_core::command::{self, Finished};
use standby_provider_core::{
    CheckOutcome, CommandCheck, DiskSpec, MachineSpec, ProviderError, Run, SiteProvider,
};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The timeout of actions that have none of their own.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Added to a `start` or `check` timeout, so the provider command can still
/// answer after waiting the full timeout itself.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(10);
/// Lines of the provider command's stderr quoted in an error.
const STDERR_LINES: usize = 20;

/// A site driven by a user command (`provider = "exec"`).
#[derive(Debug, Clone)]
pub struct ExecProvider {
    command: Vec<String>,
    config_root: PathBuf,
    default_timeout: Duration,
    answer_margin: Duration,
}

impl ExecProvider {
    /// `command` is the site's `command` (argv, no shell); a relative
    /// program path with a `/` resolves against `config_root`, which is
    /// also its working directory.
    pub fn new(command: Vec<String>, config_root: PathBuf) -> Self {
        ExecProvider {
            command,
            config_root,
            default_timeout: DEFAULT_TIMEOUT,
            answer_margin: ANSWER_MARGIN,
        }
    }

    /// Overrides [`DEFAULT_TIMEOUT`] (actions without a timeout of their
    /// own) and [`ANSWER_MARGIN`] (added to `start` and `check` timeouts).
    pub fn with_timeouts(mut self, default: Duration, margin: Duration) -> Self {
        self.default_timeout = default;
        self.answer_margin = margin;
        self
    }

    /// The command as errors name it: the program, plus its arguments up to
    /// the script it runs (`python3 provider.py`), never further, since
    /// later arguments may carry sensitive values.
    fn name(&self) -> String {
        let Some(program) = self.command.first() else {
            return "(empty command)".into();
        };
        let mut shown = vec![program.as_str()];
        if !self.is_file(program)
            && let Some(i) = self
                .command
                .iter()
                .skip(1)
                .take(2)
                .position(|a| self.is_file(a))
        {
            shown.extend(self.command[1..=i + 1].iter().map(String::as_str));
        }
        format!("`{}`", shown.join(" "))
    }

    fn is_file(&self, arg: &str) -> bool {
        !arg.starts_with('-') && self.config_root.join(arg).is_file()
    }

    /// Runs the command for one request and returns its successful reply.
    fn call(
        &self,
        req: &Request<'_>,
        subject: &str,
        timeout: Duration,
    ) -> Result<Reply, ProviderError> {
        let action = req.action;
        let fail = |reason: String| ProviderError::Action {
            action,
            subject: subject.to_string(),
            reason,
        };
        let Some(program) = self.command.first() else {
            return Err(fail("the site's provider command is empty".into()));
        };
        let mut body =
            serde_json::to_vec(req).map_err(|e| fail(format!("cannot encode the request: {e}")))?;
        body.push(b'\n');
        let mut cmd = Command::new(command::program(program, &self.config_root));
        cmd.args(&self.command[1..]).current_dir(&self.config_root);
        let f = command::run(cmd, Some(body), timeout).map_err(|e| {
            fail(format!(
                "cannot run the provider command {}: {e}",
                self.name()
            ))
        })?;
        if f.timed_out() {
            return Err(ProviderError::Timeout {
                action,
                subject: format!("{subject} (provider command {})", self.name()),
                timeout,
            });
        }
        if !f.success() {
            return Err(fail(format!(
                "the provider command {} failed ({}){}",
                self.name(),
                f.exit_text(),
                stderr_tail(&f)
            )));
        }
        let reply: Reply = serde_json::from_slice(&f.stdout).map_err(|e| {
            fail(format!(
                "the provider command {} gave no valid reply ({e}); it printed {}{}",
                self.name(),
                printed(&f.stdout),
                stderr_tail(&f)
            ))
        })?;
        if !reply.ok {
            let why = reply
                .error
                .as_deref()
                .unwrap_or("it gave no `error` saying why");
            return Err(fail(format!(
                "the provider command {} reported: {why}",
                self.name()
            )));
        }
        Ok(reply)
    }

    fn missing(&self, action: &'static str, subject: &str, field: &str) -> ProviderError {
        ProviderError::Action {
            action,
            subject: subject.to_string(),
            reason: format!(
                "the provider command {}'s reply has `\"ok\": true` but no `{field}`, which a {action} reply needs",
                self.name()
            ),
        }
    }
}

/// `; stderr ended with:\n...` or nothing when stderr was empty.
fn stderr_tail(f: &Finished) -> String {
    let t = command::tail(&f.stderr, STDERR_LINES);
    if t.is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with:\n{t}")
    }
}

/// The start of what a command printed, for a reply that did not parse.
fn printed(stdout: &[u8]) -> String {
    let s = String::from_utf8_lossy(stdout);
    let s = s.trim();
    if s.is_empty() {
        return "nothing on stdout".into();
    }
    let head: String = s.chars().take(200).collect();
    let more = if s.chars().count() > 200 { "..." } else { "" };
    format!("{head:?}{more}")
}

fn check_subject(machine: &str, check: &CommandCheck) -> String {
    format!("{machine} check {:?}", check.name)
}

impl SiteProvider for ExecProvider {
    fn prepare(&self, run: &Run) -> Result<(), ProviderError> {
        self.call(
            &Request::new("prepare", run),
            &run.site,
            self.default_timeout,
        )
        .map(drop)
    }

    fn disk_target(
        &self,
        run: &Run,
        machine: &str,
        disk: &DiskSpec,
    ) -> Result<PathBuf, ProviderError> {
        let mut req = Request::new("disk_target", run);
        req.machine = Some(MachineRef::Name(machine));
        req.disk = Some(disk);
        let subject = format!("{machine} disk {:?}", disk.name);
        let reply = self.call(&req, &subject, self.default_timeout)?;
        match reply.path {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => Err(self.missing("disk_target", &subject, "path")),
        }
    }

    fn start(
        &self,
        run: &Run,
        machine: &MachineSpec,
        timeout: Duration,
    ) -> Result<(), ProviderError> {
        let mut req = Request::new("start", run);
        req.machine = Some(MachineRef::Spec(machine));
        req.timeout_seconds = Some(timeout.as_secs_f64());
        self.call(&req, &machine.machine, timeout + self.answer_margin)
            .map(drop)
    }

    fn stop(&self, run: &Run, machine: &str) -> Result<(), ProviderError> {
        let mut req = Request::new("stop", run);
        req.machine = Some(MachineRef::Name(machine));
        self.call(&req, machine, self.default_timeout).map(drop)
    }

    fn check(
        &self,
        run: &Run,
        machine: &MachineSpec,
        check: &CommandCheck,
    ) -> Result<CheckOutcome, ProviderError> {
        let mut req = Request::new("check", run);
        req.machine = Some(MachineRef::Spec(machine));
        req.check = Some(check);
        req.timeout_seconds = Some(check.timeout.as_secs_f64());
        let subject = check_subject(&machine.machine, check);
        let reply = self.call(&req, &subject, check.timeout + self.answer_margin)?;
        let Some(passed) = reply.passed else {
            return Err(self.missing("check", &subject, "passed"));
        };
        Ok(CheckOutcome {
            passed,
            detail: reply.detail.unwrap_or_default(),
        })
    }

    fn destroy(&self, run: &Run) -> Result<(), ProviderError> {
        self.call(
            &Request::new("destroy", run),
            &run.site,
            self.default_timeout,
        )
        .map(drop)
    }
}
