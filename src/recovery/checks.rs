//! Running checks: a machine's command checks through its site provider,
//! HTTP and TCP probes by standby itself; each attempt within its timeout,
//! retried `retries` times `interval` apart.

use super::command;
use crate::exec::Cancel;
use crate::model::{Check, Probe};
use standby_provider_core::{
    CheckOutcome, CommandCheck, GuestCheck, GuestProbe, MachineSpec, Run, SiteProvider,
};
use std::path::Path;
use std::time::{Duration, Instant};

/// Run `check` of a machine until it passes or its attempts are used up;
/// the outcome of the last attempt, with the attempt count.
pub fn machine_check(
    provider: &dyn SiteProvider,
    run: &Run,
    spec: &MachineSpec,
    check: &Check,
    cancel: &Cancel,
) -> CheckOutcome {
    with_retries(
        check.retries,
        check.interval.to_std(),
        cancel,
        || match &check.probe {
            Probe::Command { command, expect } => {
                let c = CommandCheck {
                    name: check.name.clone(),
                    command: command.clone(),
                    expect: expect.clone(),
                    timeout: check.timeout.to_std(),
                };
                provider
                    .check(run, spec, &c)
                    .unwrap_or_else(|e| CheckOutcome {
                        passed: false,
                        detail: e.to_string(),
                    })
            }
            Probe::Guest { command, expect } => guest(
                provider,
                run,
                spec,
                check,
                GuestProbe::Exec {
                    command: command.clone(),
                    expect: expect.clone(),
                },
            ),
            Probe::Console { pattern } => guest(
                provider,
                run,
                spec,
                check,
                GuestProbe::Console {
                    pattern: pattern.clone(),
                },
            ),
            other => probe_once(other, check.timeout.to_std(), &run.config_root, &[], cancel),
        },
    )
}

/// One attempt of a check inside the machine's guest, by its provider.
fn guest(
    provider: &dyn SiteProvider,
    run: &Run,
    spec: &MachineSpec,
    check: &Check,
    probe: GuestProbe,
) -> CheckOutcome {
    let c = GuestCheck {
        name: check.name.clone(),
        probe,
        timeout: check.timeout.to_std(),
    };
    provider
        .guest_check(run, spec, &c)
        .unwrap_or_else(|e| CheckOutcome {
            passed: false,
            detail: e.to_string(),
        })
}

/// One attempt of a probe run by standby (a group's check step, or an
/// HTTP/TCP machine check); command probes run with `env` in `cwd`.
pub fn probe_once(
    probe: &Probe,
    timeout: Duration,
    cwd: &Path,
    env: &[(String, String)],
    cancel: &Cancel,
) -> CheckOutcome {
    match probe {
        Probe::Command { command, expect } => {
            match command::run(command, cwd, env, timeout, Some(cancel)) {
                Err(e) => CheckOutcome {
                    passed: false,
                    detail: e.to_string(),
                },
                Ok(f) if !f.success() => CheckOutcome {
                    passed: false,
                    detail: f.describe(),
                },
                Ok(f) => match expect {
                    Some(want) if f.stdout.trim() != want => CheckOutcome {
                        passed: false,
                        detail: format!(
                            "expected output {want:?}, got {:?}",
                            command::tail(&f.stdout, 200)
                        ),
                    },
                    _ => CheckOutcome {
                        passed: true,
                        detail: f.describe(),
                    },
                },
            }
        }
        Probe::Tcp { address } => tcp(address, timeout),
        Probe::Guest { .. } | Probe::Console { .. } => CheckOutcome {
            passed: false,
            detail: "guest and console checks run inside a machine's VM: put them in the machine's check blocks".into(),
        },
        Probe::Http {
            url,
            status,
            contains,
        } => http(url, *status, contains.as_deref(), timeout),
    }
}

fn tcp(address: &str, timeout: Duration) -> CheckOutcome {
    standby_provider_core::probe::tcp(address, timeout)
}

fn http(url: &str, status: u16, contains: Option<&str>, timeout: Duration) -> CheckOutcome {
    standby_provider_core::probe::http(url, status, contains, timeout)
}

/// Call `attempt` up to `retries + 1` times, `interval` apart, until it passes.
pub fn with_retries(
    retries: u32,
    interval: Duration,
    cancel: &Cancel,
    mut attempt: impl FnMut() -> CheckOutcome,
) -> CheckOutcome {
    let mut n = 0;
    loop {
        n += 1;
        let mut o = attempt();
        if o.passed || n > retries || cancel.is_cancelled() {
            if n > 1 {
                o.detail = format!("attempt {n}: {}", o.detail);
            }
            return o;
        }
        // Wait for the next attempt, but not past an interrupt.
        let until = Instant::now() + interval;
        while Instant::now() < until && !cancel.is_cancelled() {
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }
}
