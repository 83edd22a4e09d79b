//! How failover, drill, failback and approve meet the person running them:
//! each [`recovery::Event`] as one line on stdout (`[  12.3s] what
//! happened`), the approver of manual steps, whose terminal prompt reads
//! stdin, and their edges: the plan named, the state recorder, errors as
//! miette reports, Ctrl-C/SIGTERM around the run.

use crate::human::{size, time_str};
use crate::recovery::approval::{Answer, ApprovalError, Request};
use crate::recovery::{
    Approved, Approver, Event, InAdvance, Sink, Unattended, WaitForApprove, What,
};
use std::io::{BufRead, Write};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::time::Duration;

use crate::exec::Cancel;
use crate::model::RecoveryPlan;
use crate::recovery::{Recorder, RecoveryError};
use crate::workspace::Workspace;
use miette::miette;
use std::sync::Arc;

/// The recovery plan named `name`, or the error with the plans there are.
pub(crate) fn find_plan<'a>(ws: &'a Workspace, name: &str) -> miette::Result<&'a RecoveryPlan> {
    ws.recovery_plan(name).map_err(|e| match e.help() {
        Some(help) => miette!(help = help, "{e}"),
        None => miette!("{e}"),
    })
}

/// The recorder of a run's state updates: the backend the arguments or the
/// configuration name, waited for up to `--lock-timeout`.
pub(crate) fn recorder(
    ws: &Workspace,
    backend: &crate::cli::BackendArgs,
    command: &str,
) -> miette::Result<Recorder> {
    let b = backend.open_unwaiting(ws.config.backend.as_ref())?;
    Ok(Recorder::new(Arc::from(b), command)
        .with_lock_timeout(
            backend
                .lock_timeout
                .unwrap_or(crate::recovery::record::DEFAULT_LOCK_TIMEOUT),
        )
        .with_notice(Arc::new(|line| eprintln!("{line}"))))
}

/// A recovery error with its help, as miette shows it.
pub(crate) fn report_err(e: RecoveryError) -> miette::Report {
    match e {
        RecoveryError::State(s) => miette::Report::new(s),
        e => match e.help() {
            Some(help) => miette!(help = help.to_string(), "{e}"),
            None => miette!("{e}"),
        },
    }
}

/// Run `f` on a blocking thread with Ctrl-C/SIGTERM setting its [`Cancel`];
/// a second interrupt does not cut short what runs (cleanup must finish).
pub(crate) fn with_cancel<T: Send + 'static>(
    f: impl FnOnce(Cancel) -> T + Send + 'static,
) -> miette::Result<T> {
    crate::exec::with_cancel(
        || {
            eprintln!(
                "interrupted again: standby finishes what it started (cleanup, state) and exits"
            )
        },
        f,
    )
    .map_err(|e| miette!("{e}"))
}

/// Progress lines on stdout, whole even when machines report at once.
#[derive(Default)]
pub(crate) struct Lines {
    one_at_a_time: Mutex<()>,
}

impl Sink for Lines {
    fn event(&self, e: &Event) {
        let _g = self.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
        match &e.what {
            // Before the run has a clock: no time stamp.
            What::DeadTestRun { .. } | What::TestRunEnded { .. } => println!("{}", line(&e.what)),
            what => println!("{}", stamped(e.seconds, &line(what))),
        }
        let _ = std::io::stdout().flush();
    }
}

/// `[  12.3s] text`.
pub(crate) fn stamped(seconds: f64, text: &str) -> String {
    format!("[{seconds:>6.1}s] {text}")
}

/// The text of one event.
fn line(w: &What) -> String {
    match w {
        What::RunStarted { kind, plan, run_id } => {
            format!("{kind} failover of {plan} (run {run_id})")
        }
        What::FailbackStarted { plan, run_id } => {
            format!("failback of {plan} (failover run {run_id})")
        }
        What::FailbackResumed => {
            "an earlier attempt stopped the replicas and took the final points: going on from them"
                .into()
        }
        What::DeadTestRun {
            run_id,
            plan,
            drill,
            pid,
            phase,
        } => format!(
            "The test run {run_id} of {plan} was left by a {} that is gone ({}, {phase}): cleaning it up first.",
            if *drill { "drill" } else { "test failover" },
            pid.map(|p| format!("pid {p}")).unwrap_or_default(),
        ),
        What::TestRunEnded { run_id, plan } => format!(
            "The test failover {run_id} of {plan} is removed first: its throw-away replicas would hold what the failover needs (forwarded ports, VM names)."
        ),
        What::PointChosen {
            machine,
            point,
            created,
            consistency,
            group,
        } => format!(
            "{machine}: point {point} ({}, {consistency}{})",
            time_str(created),
            group
                .as_ref()
                .map(|g| format!(", group {g}"))
                .unwrap_or_default()
        ),
        What::FinalReversePointChosen {
            machine,
            point,
            created,
        } => format!(
            "{machine}: final reverse point {point} ({})",
            time_str(created)
        ),
        What::SourceStopped {
            machine,
            site,
            detail,
        } => format!("{machine}: stopped at {site} ({detail})"),
        What::ReplicaStopped {
            machine,
            site,
            detail,
        } => format!("{machine}: replica stopped at {site} ({detail})"),
        What::FinalPoint { protection, point } => format!("{protection}: final point {point}"),
        What::FinalReversePoint {
            machine,
            point,
            stored,
            disks,
        } => format!(
            "{machine}: final reverse point {point} stored {} (disks {})",
            size(*stored),
            size(*disks)
        ),
        What::Failed { what } => format!("FAILED {what}"),
        What::GroupStarted { group } => format!("group {group}: started"),
        What::GroupFinished { group, passed } => {
            format!("group {group}: {}", if *passed { "done" } else { "FAILED" })
        }
        What::GroupSkipped { group, why } => format!("group {group}: skipped ({why})"),
        What::StepStarted { group, when, step } => {
            format!("group {group} {when} step {step}: started")
        }
        What::StepDone {
            group,
            step,
            detail,
        } => format!("group {group} step {step}: done {detail}"),
        What::ManualStep { key, instructions } => format!("MANUAL STEP {key}: {instructions}"),
        What::WaitingForApproval {
            plan,
            step,
            timeout,
        } => format!("waiting for `standby approve {plan} {step}` (up to {timeout})"),
        What::DisksRestored {
            machine,
            point,
            created,
            consistency,
        } => format!(
            "{machine}: disks restored from point {point} ({}, {consistency})",
            time_str(created)
        ),
        What::DiskResynced {
            machine,
            disk,
            path,
            written,
            size: disk_size,
            full,
        } => {
            // The exact count too when the size for people rounds.
            let exact = if *written >= 1024 {
                format!("{written} bytes, ")
            } else {
                String::new()
            };
            let what = if *full {
                format!(
                    "missing, restored in full: {} written ({exact}the whole disk)",
                    size(*written)
                )
            } else {
                format!(
                    "{} of {} written ({exact}changed blocks only)",
                    size(*written),
                    size(*disk_size)
                )
            };
            format!("{machine}: disk {disk} at {path}: {what}")
        }
        What::MachineStarted { machine, site } => format!("{machine}: started at {site}"),
        What::MachineReplaced {
            machine,
            run_id,
            why,
        } => format!(
            "{machine}: WARNING: run {run_id} started it, but {why}: stopped and recovered afresh (what it wrote since is replaced)"
        ),
        What::MachineKept { machine, run_id } => format!(
            "{machine}: kept running as run {run_id} left it (started from the same data; its writes since stay)"
        ),
        What::CheckFinished {
            machine,
            check,
            passed: true,
            ..
        } => format!("{machine}: check {check} passed"),
        What::CheckFinished {
            machine,
            check,
            detail,
            ..
        } => format!("{machine}: check {check} FAILED: {detail}"),
        What::MachineUp { machine } => format!("{machine}: up, every check passed"),
        What::CleaningUp => "cleaning up the test run".into(),
        What::InstantCopy {
            machine,
            disk,
            done,
            total,
        } => format!(
            "{machine}: disk {disk} copied {} of {} (background copy)",
            crate::human::size(*done),
            crate::human::size(*total)
        ),
        What::InstantServed {
            machine,
            disk,
            served,
            fetched,
            size,
        } => format!(
            "{machine}: disk {disk} served {} of {} from the vault ({} fetched), not copied",
            crate::human::size(*served),
            crate::human::size(*size),
            crate::human::size(*fetched)
        ),
    }
}

/// The approver of a run: steps approved in advance (`--approve`), then
/// the terminal when stdin is one, else `standby approve` from another
/// process when `wait` (`--wait-for-approval`), else none (the step fails
/// saying how to approve it).
pub(crate) fn approver(given: Vec<String>, wait: bool) -> Box<dyn Approver> {
    let then: Box<dyn Approver> = if super::may_prompt() {
        Box::new(Terminal)
    } else if wait {
        Box::new(WaitForApprove)
    } else {
        Box::new(Unattended)
    };
    Box::new(InAdvance { steps: given, then })
}

/// Ask on the terminal: `yes` approves, anything else declines (so does
/// the end of input); `standby approve` from elsewhere counts too.
/// Groups (and apply's plans) may reach manual steps together: they take
/// turns at the terminal, so an answer always answers the prompt on screen.
pub(crate) struct Terminal;

/// The terminal as every [`Terminal`] of the process shares it.
struct Shared {
    answers: Answers,
    /// Held by the step whose prompt is on screen.
    turn: Mutex<()>,
}

/// Stdin is read on one thread for the whole process, so that `standby
/// approve`, an interrupt or the timeout can end a wait while nobody
/// types, and no reader is left behind to swallow the next answer.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim().to_string()).is_err() {
                    return;
                }
            }
            // End of input answers whoever asks with nothing.
            let _ = tx.send(String::new());
        });
        Shared {
            answers: Answers(Mutex::new(rx)),
            turn: Mutex::new(()),
        }
    })
}

impl Approver for Terminal {
    fn approve(&self, req: &Request<'_>) -> Result<Approved, ApprovalError> {
        let t = shared();
        // Wait for the terminal, still taking `standby approve`.
        let _turn = loop {
            if req.approved_elsewhere() {
                return Ok(Approved::elsewhere());
            }
            match t.turn.try_lock() {
                Ok(g) => break g,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
            if req.cancelled() {
                return Err(ApprovalError::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let prompt = || {
            // Lines typed before the question answer nothing.
            t.answers.drain();
            println!(
                "{}",
                stamped(
                    req.seconds(),
                    &format!(
                        "type yes when done (or run `standby approve {} {}` elsewhere):",
                        req.plan_name(),
                        req.step
                    )
                )
            );
            let _ = std::io::stdout().flush();
        };
        req.wait(prompt, || {
            t.answers.next().map(|a| {
                if a == "yes" {
                    Answer::Approved(Approved {
                        by: Some("terminal".into()),
                        detail: "approved on the terminal".into(),
                    })
                } else {
                    Answer::Declined(a)
                }
            })
        })
    }
}

/// Lines typed on the terminal, as they come.
struct Answers(Mutex<Receiver<String>>);

impl Answers {
    /// The next line, if one was typed; `""` once input has ended.
    fn next(&self) -> Option<String> {
        let rx = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match rx.try_recv() {
            Ok(line) => Some(line),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(String::new()),
        }
    }

    /// Forget the lines typed so far (not the end of input).
    fn drain(&self) {
        let rx = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(line) = rx.try_recv() {
            if line.is_empty() {
                // Keep "input ended" for the next question: it is final.
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(seconds: f64, what: What) -> String {
        match &what {
            What::DeadTestRun { .. } => line(&what),
            w => stamped(seconds, &line(w)),
        }
    }

    #[test]
    fn events_read_as_the_progress_lines_always_did() {
        let cases = [
            (
                render(
                    1.25,
                    What::PointChosen {
                        machine: "machine.db".into(),
                        point: "0123456789ab".into(),
                        created: "2026-11-30T09:02:04Z".into(),
                        consistency: "app".into(),
                        group: Some("shop".into()),
                    },
                ),
                "[   1.2s] machine.db: point 0123456789ab (2026-11-30 09:02:04 UTC, app, group shop)",
            ),
            (
                render(
                    12.0,
                    What::DiskResynced {
                        machine: "machine.db".into(),
                        disk: "data".into(),
                        path: "/dr/db/data.sqlite".into(),
                        written: 8192,
                        size: 1 << 20,
                        full: false,
                    },
                ),
                "[  12.0s] machine.db: disk data at /dr/db/data.sqlite: 8.0 KiB of 1.0 MiB written (8192 bytes, changed blocks only)",
            ),
            (
                render(
                    0.0,
                    What::DeadTestRun {
                        run_id: "shop-test-1".into(),
                        plan: "recovery_plan.shop".into(),
                        drill: true,
                        pid: Some(42),
                        phase: "running".into(),
                    },
                ),
                "The test run shop-test-1 of recovery_plan.shop was left by a drill that is gone (pid 42, running): cleaning it up first.",
            ),
            (
                render(
                    3.0,
                    What::CheckFinished {
                        machine: "machine.web".into(),
                        check: "http".into(),
                        passed: false,
                        detail: "exit 1".into(),
                    },
                ),
                "[   3.0s] machine.web: check http FAILED: exit 1",
            ),
            (
                render(
                    3.0,
                    What::GroupSkipped {
                        group: "web".into(),
                        why: "group data failed".into(),
                    },
                ),
                "[   3.0s] group web: skipped (group data failed)",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn answers_typed_before_the_question_are_dropped_and_the_end_of_input_declines() {
        let (tx, rx) = mpsc::channel();
        let a = Answers(Mutex::new(rx));
        assert_eq!(a.next(), None);
        tx.send("yes".into()).unwrap();
        tx.send("oops".into()).unwrap();
        a.drain();
        assert_eq!(a.next(), None, "lines before the prompt answer nothing");
        tx.send("yes".into()).unwrap();
        assert_eq!(a.next().as_deref(), Some("yes"));
        drop(tx);
        a.drain();
        assert_eq!(a.next().as_deref(), Some(""));
        assert_eq!(a.next().as_deref(), Some(""), "input stays ended");
    }
}
