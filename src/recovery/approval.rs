//! How a manual step gets its approval: one interface ([`Approver`]) with
//! its ways, chosen by the command: approved in advance ([`InAdvance`],
//! `--approve STEP`), waiting for `standby approve` from another process
//! ([`WaitForApprove`], `--wait-for-approval`), refusing when nobody can be
//! asked ([`Unattended`]), and the terminal prompt, which lives in the CLI
//! (it reads stdin; the library never does). Every way but the first also
//! accepts an approval `standby approve` already recorded in the state.

use super::events::{Event, Sink, What};
use super::timeline::Timeline;
use crate::exec::Cancel;
use crate::model::{Address, RecoveryPlan, StepAction};
use std::time::{Duration, Instant};

/// `GROUP.STEP` of every manual step of `plan`, in plan order.
pub fn manual_steps(plan: &RecoveryPlan) -> Vec<String> {
    let mut v = Vec::new();
    for g in &plan.groups {
        for s in g.before.iter().chain(&g.after) {
            if matches!(s.action, StepAction::Manual { .. }) {
                v.push(format!("{}.{}", g.name, s.name));
            }
        }
    }
    v
}

/// Check that `step` (a step's name, or `GROUP.STEP`) names a manual step
/// of `plan`, as `--approve` and `standby approve` take it.
pub fn check_manual_step(plan: &RecoveryPlan, step: &str) -> Result<(), UnknownStep> {
    let steps = manual_steps(plan);
    if steps
        .iter()
        .any(|s| s == step || s.ends_with(&format!(".{step}")))
    {
        return Ok(());
    }
    Err(UnknownStep {
        plan: plan.addr.clone(),
        step: step.to_string(),
        steps,
    })
}

/// A step named for approval that is no manual step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{plan} has no manual step {step}")]
pub struct UnknownStep {
    pub plan: Address,
    pub step: String,
    /// The plan's manual steps (`GROUP.STEP`).
    pub steps: Vec<String>,
}

impl UnknownStep {
    /// The manual steps there are.
    pub fn help(&self) -> String {
        let steps = if self.steps.is_empty() {
            "(none)".to_string()
        } else {
            self.steps.join(", ")
        };
        format!("its manual steps: {steps}")
    }
}

/// Gets the approval of one manual step, or says why not.
pub trait Approver: Send + Sync {
    fn approve(&self, req: &Request<'_>) -> Result<Approved, ApprovalError>;
}

/// An approval obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Approved {
    /// Who to record in the run's approvals (`--approve`, `terminal`);
    /// `None` when `standby approve` recorded it already.
    pub by: Option<String>,
    /// What the step's timeline entry says (`approved on the terminal`).
    pub detail: String,
}

impl Approved {
    /// Recorded in the state by `standby approve`.
    pub fn elsewhere() -> Approved {
        Approved {
            by: None,
            detail: "approved with standby approve".into(),
        }
    }
}

/// Why a manual step was not approved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApprovalError {
    #[error(
        "manual step {key} needs an approval and this run cannot ask for one (stdin is not a terminal); run again with --approve {step} after doing it, or with --wait-for-approval and approve it from another shell with `standby approve {plan} {step}`"
    )]
    CannotAsk {
        key: String,
        step: String,
        plan: String,
    },
    #[error("not approved (answered {0:?})")]
    Declined(String),
    #[error("interrupted while waiting for approval")]
    Interrupted,
    #[error("not approved within {0}")]
    TimedOut(String),
}

/// A manual step asking for approval, with what an [`Approver`] may use:
/// the state (`standby approve`), the run's clock, sink and cancel flag.
pub struct Request<'a> {
    pub plan: &'a Address,
    pub group: &'a str,
    pub step: &'a str,
    /// How long the step may wait (its `timeout`).
    pub timeout: crate::model::Duration,
    pub(super) approved: &'a (dyn Fn() -> bool + Sync),
    /// Record in the state that the run waits for this step (`true`), or
    /// no longer does.
    pub(super) set_waiting: &'a (dyn Fn(bool) + Sync),
    pub(super) cancel: &'a Cancel,
    pub(super) clock: &'a Timeline,
    pub(super) sink: &'a dyn Sink,
}

/// What someone answered a prompt.
pub enum Answer {
    Approved(Approved),
    Declined(String),
}

impl Request<'_> {
    /// `GROUP.STEP`.
    pub fn key(&self) -> String {
        format!("{}.{}", self.group, self.step)
    }

    /// The plan as `standby approve` takes it (`shop`).
    pub fn plan_name(&self) -> String {
        self.plan.instance_name()
    }

    /// Seconds since the run started.
    pub fn seconds(&self) -> f64 {
        self.clock.now()
    }

    /// The run was interrupted.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// `standby approve` recorded an approval of this step for the run.
    pub fn approved_elsewhere(&self) -> bool {
        (self.approved)()
    }

    pub fn emit(&self, what: What) {
        self.sink.event(&Event {
            seconds: self.seconds(),
            what,
        });
    }

    /// Record the wait in the state (`waiting_for`), call `prompt` (to say
    /// how to approve: the state already shows the wait), then wait until
    /// `standby approve` approves the step, `answer` returns an answer
    /// (polled every 200 ms), the run is cancelled or the step's timeout
    /// passes.
    pub fn wait(
        &self,
        prompt: impl FnOnce(),
        mut answer: impl FnMut() -> Option<Answer>,
    ) -> Result<Approved, ApprovalError> {
        (self.set_waiting)(true);
        prompt();
        let deadline = Instant::now() + self.timeout.to_std();
        let r = loop {
            if self.approved_elsewhere() {
                break Ok(Approved::elsewhere());
            }
            match answer() {
                Some(Answer::Approved(a)) => break Ok(a),
                Some(Answer::Declined(a)) => break Err(ApprovalError::Declined(a)),
                None => {}
            }
            if self.cancel.is_cancelled() {
                break Err(ApprovalError::Interrupted);
            }
            if Instant::now() >= deadline {
                break Err(ApprovalError::TimedOut(self.timeout.to_string()));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        (self.set_waiting)(false);
        r
    }
}

/// Steps approved in advance (`--approve STEP` or `GROUP.STEP`); any other
/// step goes to `then`.
pub struct InAdvance {
    pub steps: Vec<String>,
    pub then: Box<dyn Approver>,
}

impl Approver for InAdvance {
    fn approve(&self, req: &Request<'_>) -> Result<Approved, ApprovalError> {
        let key = req.key();
        if self.steps.iter().any(|a| a == req.step || *a == key) {
            return Ok(Approved {
                by: Some("--approve".into()),
                detail: "approved in advance (--approve)".into(),
            });
        }
        self.then.approve(req)
    }
}

/// Nobody to ask: only an approval already recorded by `standby approve`.
pub struct Unattended;

impl Approver for Unattended {
    fn approve(&self, req: &Request<'_>) -> Result<Approved, ApprovalError> {
        if req.approved_elsewhere() {
            return Ok(Approved::elsewhere());
        }
        Err(ApprovalError::CannotAsk {
            key: req.key(),
            step: req.step.to_string(),
            plan: req.plan_name(),
        })
    }
}

/// Wait for `standby approve PLAN STEP` from another process, up to the
/// step's timeout.
pub struct WaitForApprove;

impl Approver for WaitForApprove {
    fn approve(&self, req: &Request<'_>) -> Result<Approved, ApprovalError> {
        if req.approved_elsewhere() {
            return Ok(Approved::elsewhere());
        }
        let prompt = || {
            req.emit(What::WaitingForApproval {
                plan: req.plan_name(),
                step: req.step.to_string(),
                timeout: req.timeout.to_string(),
            })
        };
        req.wait(prompt, || None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::recovery::events::Recorded;
    use std::sync::Mutex;

    #[test]
    fn manual_steps_by_name_or_group_dot_name() {
        let d = tempfile::tempdir().unwrap();
        let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/quickstart");
        for e in std::fs::read_dir(&from).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "hcl") {
                std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        let cfg = crate::config::load(d.path(), &Default::default())
            .unwrap_or_else(|e| panic!("{}", e.render(false)))
            .config;
        let plan = &cfg.recovery_plans[&Address::new(Kind::RecoveryPlan, "shop")];
        assert_eq!(manual_steps(plan), vec!["web.dns".to_string()]);
        assert_eq!(check_manual_step(plan, "dns"), Ok(()));
        assert_eq!(check_manual_step(plan, "web.dns"), Ok(()));
        let e = check_manual_step(plan, "dnz").unwrap_err();
        assert_eq!(e.to_string(), "recovery_plan.shop has no manual step dnz");
        assert_eq!(e.help(), "its manual steps: web.dns");
        let mut none = plan.clone();
        none.groups.iter_mut().for_each(|g| g.after.clear());
        assert_eq!(
            check_manual_step(&none, "dns").unwrap_err().help(),
            "its manual steps: (none)"
        );
    }

    /// Ask `approver` for `web.dns`; `elsewhere` stands for `standby approve`.
    fn ask(
        approver: &dyn Approver,
        elsewhere: bool,
        cancel: &Cancel,
    ) -> (Result<Approved, ApprovalError>, Vec<bool>, Vec<Event>) {
        let plan = Address::new(Kind::RecoveryPlan, "shop");
        let waits = Mutex::new(Vec::new());
        let approved = move || elsewhere;
        let set_waiting = |w: bool| waits.lock().unwrap().push(w);
        let (clock, sink) = (Timeline::new(), Recorded::default());
        let req = Request {
            plan: &plan,
            group: "web",
            step: "dns",
            timeout: "1s".parse().unwrap(),
            approved: &approved,
            set_waiting: &set_waiting,
            cancel,
            clock: &clock,
            sink: &sink,
        };
        let r = approver.approve(&req);
        let events = sink.events.lock().unwrap().clone();
        (r, waits.into_inner().unwrap(), events)
    }

    #[test]
    fn in_advance_takes_the_step_or_group_dot_step_and_passes_on_the_rest() {
        let cancel = Cancel::new();
        for given in ["dns", "web.dns"] {
            let a = InAdvance {
                steps: vec![given.into()],
                then: Box::new(Unattended),
            };
            let (r, _, _) = ask(&a, false, &cancel);
            assert_eq!(r.unwrap().by.as_deref(), Some("--approve"));
        }
        let a = InAdvance {
            steps: vec!["data.dns".into()],
            then: Box::new(Unattended),
        };
        let (r, waits, _) = ask(&a, false, &cancel);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("--approve dns"), "{e}");
        assert!(e.contains("`standby approve shop dns`"), "{e}");
        assert!(waits.is_empty());
    }

    #[test]
    fn waiting_records_the_wait_and_ends_on_approve_interrupt_or_timeout() {
        let cancel = Cancel::new();
        let (r, waits, events) = ask(&WaitForApprove, true, &cancel);
        assert_eq!(r.unwrap(), Approved::elsewhere());
        assert!(waits.is_empty() && events.is_empty());

        let (r, waits, events) = ask(&WaitForApprove, false, &cancel);
        assert_eq!(r.unwrap_err(), ApprovalError::TimedOut("1s".into()));
        assert_eq!(waits, [true, false]);
        assert!(matches!(
            &events[0].what,
            What::WaitingForApproval { plan, step, .. } if plan == "shop" && step == "dns"
        ));

        cancel.cancel();
        let (r, waits, _) = ask(&WaitForApprove, false, &cancel);
        assert_eq!(r.unwrap_err(), ApprovalError::Interrupted);
        assert_eq!(waits.last(), Some(&false));
    }
}
