//! apply's site changes (`active_site`): the guard (`--allow-failover`,
//! or a saved plan made with it; `--allow-undrilled` for a plan whose drill
//! record does not vouch for it), and the run: per recovery plan a chain of
//! stages walked by the executor — failover: planned failover, commit,
//! reprotect; failback: reprotect (when not done), failback.

use super::ApplyError;
use crate::exec::{self, Cancel, Sink, StepError};
use crate::model::Address;
use crate::plan::Plan;
use crate::plan::site::{Direction, SiteChange, SiteOp};
use crate::recovery::{self, Approver, PointChoice, Recorder};
use crate::state::RunKind;
use crate::workspace::Workspace;
use petgraph::graph::DiGraph;
use std::fmt;
use std::sync::Arc;

/// Refuse site changes the flags do not allow; nothing has changed yet.
pub fn guard(
    plan: &Plan,
    allow_failover: bool,
    allow_undrilled: bool,
    saved: bool,
) -> Result<(), ApplyError> {
    if plan.site_changes.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = plan
        .site_changes
        .iter()
        .map(|c| format!("  - {} {} -> {}", c.recovery_plan, c.from, c.to))
        .collect();
    if !(allow_failover || (saved && plan.allow_failover)) {
        return Err(ApplyError::SiteChangeNotAllowed(list));
    }
    let undrilled: Vec<String> = plan
        .site_changes
        .iter()
        .filter_map(|c| {
            c.undrilled
                .as_ref()
                .map(|w| format!("  - {}: {w}", c.recovery_plan))
        })
        .collect();
    if !undrilled.is_empty() && !allow_undrilled {
        return Err(ApplyError::Undrilled(undrilled));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Failover,
    Commit,
    Reprotect,
    Failback,
}

#[derive(Debug, Clone)]
struct Stage {
    plan: Address,
    op: Op,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Failover => "planned failover of",
            Op::Commit => "commit the failover of",
            Op::Reprotect => "reprotect",
            Op::Failback => "fail back",
        };
        write!(f, "{op} {}", self.plan)
    }
}

/// The stages that carry out a site change's steps, in order: the steps
/// of one recovery run (stop, final point, groups, and clear after a
/// failback) are one failover or failback stage; commit and reprotect are
/// stages of their own.
fn stages(c: &SiteChange) -> Vec<Op> {
    let run = match c.direction {
        Direction::Failover => Op::Failover,
        Direction::Failback => Op::Failback,
    };
    let mut ops: Vec<Op> = Vec::new();
    for s in &c.steps {
        let op = match s.op {
            SiteOp::Commit => Op::Commit,
            SiteOp::Reprotect => Op::Reprotect,
            SiteOp::Stop | SiteOp::FinalPoint | SiteOp::Group | SiteOp::Clear => run,
        };
        if ops.last() != Some(&op) {
            ops.push(op);
        }
    }
    ops
}

/// Carry out the site changes, stage events to `sink`; manual steps ask
/// `approver`, the recovery runs report to `events`; `on_second` runs on a
/// second interrupt. True when every stage finished.
pub fn run(
    ws: Arc<Workspace>,
    changes: &[SiteChange],
    recorder: Recorder,
    approver: Arc<dyn Approver>,
    events: Arc<dyn recovery::Sink>,
    sink: &dyn Sink,
    on_second: Box<dyn Fn() + Send>,
) -> Result<bool, ApplyError> {
    let mut graph: DiGraph<Stage, ()> = DiGraph::new();
    for c in changes {
        let mut before = None;
        for op in stages(c) {
            let n = graph.add_node(Stage {
                plan: c.recovery_plan.clone(),
                op,
            });
            if let Some(b) = before {
                graph.add_edge(n, b, ());
            }
            before = Some(n);
        }
    }
    let rt = crate::store::runtime().map_err(ApplyError::Runtime)?;
    let cancel = Cancel::new();
    let report = rt.block_on(async {
        let _listening = cancel
            .on_signals(on_second)
            .inspect_err(|e| tracing::warn!("cannot watch for interrupts: {e}"));
        exec::walk(&graph, 1, &cancel, sink, |i, cancel| {
            let stage = graph[i].clone();
            let ws = ws.clone();
            let recorder = recorder.clone();
            let approver = approver.clone();
            let events = events.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    run_stage(&ws, &stage, &recorder, &*approver, &*events, &cancel)
                })
                .await
                .map_err(|e| StepError::Failed(format!("the step crashed: {e}")))?
            }
        })
        .await
    });
    Ok(report.all_done())
}

fn run_stage(
    ws: &Workspace,
    stage: &Stage,
    rec: &Recorder,
    approvals: &dyn Approver,
    events: &dyn recovery::Sink,
    cancel: &Cancel,
) -> Result<String, StepError> {
    let plan = ws
        .config
        .recovery_plans
        .get(&stage.plan)
        .ok_or_else(|| StepError::Failed(format!("no {} in the configuration", stage.plan)))?;
    let failed = |e: recovery::RecoveryError| StepError::Failed(e.to_string());
    let outcome = |r: recovery::RunResult| {
        if r.passed {
            Ok(format!("run {}", r.record.run_id))
        } else {
            Err(StepError::Failed(r.failures.join("; ")))
        }
    };
    match stage.op {
        Op::Failover => outcome(
            recovery::run::failover(
                ws,
                plan,
                RunKind::Planned,
                &PointChoice::Latest,
                approvals,
                rec,
                cancel,
                events,
            )
            .map_err(failed)?,
        ),
        Op::Commit => recovery::run::commit(&plan.addr, rec)
            .map(|r| format!("run {} committed", r.run_id))
            .map_err(failed),
        Op::Reprotect => {
            let made = recovery::reprotect::reprotect(ws, plan, rec, cancel).map_err(failed)?;
            let stored: u64 = made.iter().map(|r| r.point.stats.stored).sum();
            let size: u64 = made.iter().map(|r| r.disk_bytes).sum();
            Ok(format!(
                "first reverse points stored {} of {} of disk",
                crate::human::size(stored),
                crate::human::size(size)
            ))
        }
        Op::Failback => outcome(
            recovery::failback::failback(ws, plan, approvals, rec, cancel, events)
                .map_err(failed)?,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::plan::site::SiteStep;

    fn change(direction: Direction, ops: &[SiteOp]) -> SiteChange {
        SiteChange {
            recovery_plan: Address::new(Kind::RecoveryPlan, "shop"),
            direction,
            from: Address::new(Kind::Site, "a"),
            to: Address::new(Kind::Site, "b"),
            steps: ops
                .iter()
                .map(|&op| SiteStep {
                    op,
                    detail: String::new(),
                })
                .collect(),
            undrilled: None,
        }
    }

    #[test]
    fn a_failover_is_run_then_commit_then_reprotect() {
        use SiteOp::*;
        let c = change(
            Direction::Failover,
            &[Stop, FinalPoint, Group, Group, Commit, Reprotect],
        );
        assert_eq!(stages(&c), [Op::Failover, Op::Commit, Op::Reprotect]);
    }

    #[test]
    fn a_failback_does_what_is_left_before_it() {
        use SiteOp::*;
        let all = change(
            Direction::Failback,
            &[Commit, Reprotect, Stop, FinalPoint, Group, Clear],
        );
        assert_eq!(stages(&all), [Op::Commit, Op::Reprotect, Op::Failback]);
        let reprotected = change(Direction::Failback, &[Stop, FinalPoint, Group, Clear]);
        assert_eq!(stages(&reprotected), [Op::Failback]);
    }

    #[test]
    fn site_ops_keep_their_plan_names() {
        let json = serde_json::to_string(&SiteOp::FinalPoint).unwrap_or_default();
        assert_eq!(json, "\"final_point\"");
        assert_eq!(format!("{:<11}|", SiteOp::Stop), "stop       |");
    }
}
