//! A group's `before` and `after` steps: scripts, checks and manual steps,
//! in order, the first failure skipping the rest; a manual step shows its
//! instructions and asks the run's [`Approver`](super::approval::Approver),
//! its approval recorded in the state.

use super::approval::Request;
use super::checks;
use super::command;
use super::engine::Engine;
use super::events::What;
use super::timeline::{EntryKind, Subject};
use crate::model::{Group, Step, StepAction, StepWhen};
use crate::state::Approval;

impl Engine<'_> {
    /// Environment of the plan's steps.
    pub(super) fn step_env(&self, group: &str) -> Vec<(String, String)> {
        vec![
            ("STANDBY_PLAN".into(), self.plan.addr.to_string()),
            ("STANDBY_GROUP".into(), group.to_string()),
            ("STANDBY_RUN_ID".into(), self.run_id.clone()),
            ("STANDBY_MODE".into(), self.mode.as_str().to_string()),
            ("STANDBY_KIND".into(), self.kind.as_str().to_string()),
        ]
    }

    /// The steps this run's direction carries out (`when` on each step):
    /// a failback skips failover-only steps and the other way round.
    pub(super) fn directed(&self, steps: &[Step]) -> Vec<Step> {
        steps
            .iter()
            .filter(|s| s.when == StepWhen::Always || s.when == self.way.steps())
            .cloned()
            .collect()
    }

    /// Run `steps` in order; stop at the first failure (the rest are
    /// skipped). `when` (`before`, `after`) names them in progress lines.
    pub(super) fn steps(&self, g: &Group, steps: &[Step], when: &str) -> bool {
        for (i, s) in steps.iter().enumerate() {
            let subj = Subject::new(EntryKind::Step, &s.name).group(&g.name);
            if self.cancel.is_cancelled() {
                for rest in &steps[i..] {
                    let subj = Subject::new(EntryKind::Step, &rest.name).group(&g.name);
                    self.timeline.skipped(subj, "the run was interrupted");
                }
                return false;
            }
            self.emit(What::StepStarted {
                group: g.name.clone(),
                when: when.to_string(),
                step: s.name.clone(),
            });
            let r = self.timeline.timed(subj, || self.step(g, s), |d| d.clone());
            match r {
                Ok(detail) => self.emit(What::StepDone {
                    group: g.name.clone(),
                    step: s.name.clone(),
                    detail,
                }),
                Err(e) => {
                    self.fail(format!("step {}.{}: {e}", g.name, s.name));
                    for rest in &steps[i + 1..] {
                        let subj = Subject::new(EntryKind::Step, &rest.name).group(&g.name);
                        self.timeline
                            .skipped(subj, format!("step {} failed", s.name));
                    }
                    return false;
                }
            }
        }
        true
    }

    pub(super) fn step(&self, g: &Group, s: &Step) -> Result<String, String> {
        let env = self.step_env(&g.name);
        match &s.action {
            StepAction::Script { command: argv } => {
                let f = command::run(
                    argv,
                    &self.root,
                    &env,
                    s.timeout.to_std(),
                    Some(&self.cancel),
                )
                .map_err(|e| e.to_string())?;
                if f.success() {
                    Ok(f.describe())
                } else {
                    Err(f.describe())
                }
            }
            StepAction::Check(probe) => {
                let o =
                    checks::probe_once(probe, s.timeout.to_std(), &self.root, &env, &self.cancel);
                if o.passed {
                    Ok(o.detail)
                } else {
                    Err(o.detail)
                }
            }
            StepAction::Manual { instructions } => self.manual(g, s, instructions),
        }
    }

    /// A manual step: show the instructions, then ask the run's
    /// [`Approver`] (in advance, the terminal, `standby approve`).
    pub(super) fn manual(&self, g: &Group, s: &Step, instructions: &str) -> Result<String, String> {
        let key = format!("{}.{}", g.name, s.name);
        self.emit(What::ManualStep {
            key: key.clone(),
            instructions: instructions.to_string(),
        });
        let approved = || self.approved(g, s);
        let set_waiting = |waiting: bool| self.set_waiting(&key, waiting);
        let req = Request {
            plan: &self.plan.addr,
            group: &g.name,
            step: &s.name,
            timeout: s.timeout,
            approved: &approved,
            set_waiting: &set_waiting,
            cancel: &self.cancel,
            clock: &self.timeline,
            sink: self.sink,
        };
        let got = self.approver.approve(&req).map_err(|e| e.to_string())?;
        if let Some(by) = &got.by {
            self.approve(&key, by)?;
        }
        Ok(got.detail)
    }

    pub(super) fn approved(&self, g: &Group, s: &Step) -> bool {
        match self.recorder.read() {
            Ok(Some(doc)) => doc
                .runs
                .iter()
                .any(|r| r.run_id == self.run_id && r.approved(&g.name, &s.name)),
            _ => false,
        }
    }

    pub(super) fn approve(&self, key: &str, by: &str) -> Result<(), String> {
        let id = self.run_id.clone();
        self.recorder
            .update(|doc| {
                let r = doc
                    .run_mut(&id)
                    .ok_or("the run is no longer in the state")?;
                r.approvals.push(Approval {
                    step: key.to_string(),
                    at: time::OffsetDateTime::now_utc(),
                    by: by.to_string(),
                });
                Ok(())
            })
            .map_err(|e| e.to_string())
    }

    /// Record that the run waits for manual step `key` (`GROUP.STEP`), or
    /// no longer does. Independent groups may wait at the same time: the
    /// state names the latest wait, and ending one clears only its own.
    pub(super) fn set_waiting(&self, key: &str, waiting: bool) {
        let id = self.run_id.clone();
        let r = self.recorder.update(|doc| {
            let r = doc
                .run_mut(&id)
                .ok_or("the run is no longer in the state")?;
            if waiting {
                r.waiting_for = Some(key.to_string());
            } else if r.waiting_for.as_deref() == Some(key) {
                r.waiting_for = None;
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!("cannot record the wait in the state: {e}");
        }
    }
}
