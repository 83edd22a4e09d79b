//! The operations on a recovery plan: start a run (test, planned,
//! unplanned), clean up a test run, commit a failover, approve a manual
//! step, and drill (test run, checks, cleanup, RTO/RPO). Each refuses
//! what the state says cannot be done, with what to run instead.

use super::approval::Approver;
use super::engine::Engine;
use super::events::{Event, Sink, What};
use super::points::{self, Chosen, PointChoice};
use super::providers;
use super::record::{Recorder, Refusal, UpdateError};
use super::runlock;
use super::timeline::{EntryKind, Outcome, Subject, Timeline};
use crate::exec::Cancel;
use crate::model::{Address, Config, RecoveryPlan};
use crate::state::{Approval, DrillRecord, Phase, RunKind, RunRecord};
use crate::vault::catalog;
use crate::vault::manifest::{self, Manifest};
use crate::workspace::{Workspace, WorkspaceError};
use standby_provider_core::Mode;
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

/// Why a recovery operation did nothing (or, for cleanup, not all of it).
/// [`RecoveryError::help`] says what to do about it; the CLI shows it as
/// the error's help.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The state says no; `help` says what to run.
    #[error("{message}")]
    Refused { message: String, help: String },
    #[error("cannot choose recovery points: {0}")]
    Points(#[from] points::ChooseError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("no {0} in the configuration")]
    NotConfigured(Address),
    #[error("{0} has no protection")]
    Unprotected(Address),
    /// A vault could not be opened or listed.
    #[error("{vault}: {source}")]
    Vault {
        vault: Address,
        source: Box<crate::vault::VaultError>,
    },
    #[error("cannot take the run lock {}: {source}", path.display())]
    RunLock {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Some replicas or sandboxes could not be removed; the run stays recorded.
    #[error(
        "cleanup of test run {run_id} is incomplete: {}; the run stays recorded, run `standby failover cleanup {plan}` again",
        errors.join("; ")
    )]
    CleanupIncomplete {
        run_id: String,
        errors: Vec<String>,
        /// The plan as a command argument.
        plan: String,
    },
    /// A state update refused without advice (the run vanished from it).
    #[error("{0}")]
    Update(String),
    /// The failover run lacks what reprotect needs (`what`).
    #[error("the failover run {run_id} has no {what}")]
    NotPlaced { run_id: String, what: String },
    #[error(transparent)]
    Batches(#[from] crate::replication::BatchError),
    /// Taking a point of a batch (`label`) failed.
    #[error("point of {label}: {source}")]
    TakePoint {
        label: String,
        source: Box<crate::replication::ReplicationError>,
    },
    #[error("interrupted")]
    Interrupted,
}

impl RecoveryError {
    /// What to do about it, when standby knows.
    pub fn help(&self) -> Option<&str> {
        match self {
            RecoveryError::Refused { help, .. } => Some(help),
            _ => None,
        }
    }
}

impl From<UpdateError> for RecoveryError {
    fn from(e: UpdateError) -> RecoveryError {
        match e {
            UpdateError::State(s) => RecoveryError::State(s),
            UpdateError::Refused(Refusal {
                message,
                help: Some(help),
            }) => RecoveryError::Refused { message, help },
            UpdateError::Refused(Refusal {
                message,
                help: None,
            }) => RecoveryError::Update(message),
        }
    }
}

/// What a run did.
pub struct RunResult {
    pub record: RunRecord,
    pub passed: bool,
    pub interrupted: bool,
    pub failures: Vec<String>,
    pub timeline: Timeline,
    pub points: BTreeMap<Address, Chosen>,
    pub started_at: OffsetDateTime,
    pub finished_at: OffsetDateTime,
    /// Run start (the first attempt's, for a rerun of interrupted ones) to
    /// the last machine's checks green; None unless it passed.
    pub rto_seconds: Option<f64>,
    /// Per machine address, what a VM provider saw (qemu sites only).
    pub evidence: BTreeMap<String, standby_provider_core::Evidence>,
}

impl RunResult {
    /// The result of a finished run: its record, outcome and timeline, with
    /// RTO (when the last machine's checks were green) for a passed run.
    pub(super) fn of(
        engine: &mut Engine<'_>,
        record: RunRecord,
        passed: bool,
        interrupted: bool,
        finished_at: OffsetDateTime,
    ) -> RunResult {
        let timeline = std::mem::take(&mut engine.timeline);
        // Waits for another command's state lock are shown, never counted.
        let mut waits = Vec::new();
        for w in engine.recorder.waits() {
            let (from, to) = (timeline.seconds_at(w.from), timeline.seconds_at(w.to));
            if to <= 0.0 {
                continue;
            }
            let from = from.max(0.0);
            waits.push((from, to));
            timeline.record_span(
                Subject::new(EntryKind::LockWait, "state lock"),
                from,
                to,
                Outcome::Passed,
                format!("waited for the state lock held by {}", w.holder),
            );
        }
        // A rerun continues the interrupted attempts before it: the
        // recovery has been under way since the first one started.
        let carried = engine.first_attempt.as_ref().map_or(0.0, |a| {
            let before = (timeline.started_at() - a.started_at)
                .as_seconds_f64()
                .max(0.0);
            timeline.record_span(
                Subject::new(EntryKind::EarlierAttempts, &a.run_id),
                -before,
                0.0,
                Outcome::Failed,
                format!(
                    "interrupted attempts since run {} started (counted in RTO)",
                    a.run_id
                ),
            );
            before
        });
        let rto_seconds = passed.then(|| {
            let end = timeline
                .entries()
                .iter()
                .filter(|e| e.kind == EntryKind::Machine)
                .map(|e| e.end_seconds)
                .fold(0.0, f64::max);
            let waited: f64 = waits.iter().map(|(a, b)| (b.min(end) - a).max(0.0)).sum();
            (end - waited).max(0.0) + carried
        });
        RunResult {
            record,
            passed,
            interrupted,
            failures: engine.failures(),
            points: engine.points.clone(),
            started_at: timeline.started_at(),
            finished_at,
            rto_seconds,
            timeline,
            evidence: std::mem::take(
                &mut *engine.evidence.lock().unwrap_or_else(|p| p.into_inner()),
            ),
        }
    }

    /// Age of the oldest point used, at the run's start; None without
    /// points, or when a point's time cannot be read (unknown, never 0).
    pub fn rpo_seconds(&self) -> Option<f64> {
        let ages: Option<Vec<f64>> = self
            .points
            .values()
            .map(|c| {
                c.point
                    .created_at()
                    .map(|t| (self.started_at - t).as_seconds_f64().max(0.0))
            })
            .collect();
        ages?.into_iter().reduce(f64::max)
    }
}

/// A plan's name as a command argument: `shop` for `recovery_plan.shop`.
pub fn plan_arg(plan: &Address) -> String {
    let n = plan.instance_name();
    if n.contains('[') {
        format!("'{plan}'")
    } else {
        n
    }
}

/// A run id: plan, kind, time and a random suffix, `[A-Za-z0-9-]`.
fn new_run_id(plan: &Address, kind: RunKind) -> String {
    let safe: String = plan
        .instance_name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let now = OffsetDateTime::now_utc();
    format!(
        "{safe}-{}-{:04}{:02}{:02}T{:02}{:02}{:02}-{}",
        kind.as_str(),
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        hex::encode(rand::random::<[u8; 3]>())
    )
}

/// The points of the plan's machines, per vault, oldest first: catalog
/// entries (no extents; [`read_chosen`] reads the manifests of the points
/// picked), read from each machine's catalog, not every manifest of the
/// vault, so a run costs the same whatever else the vault holds.
pub fn list_points(
    ws: &Workspace,
    plan: &RecoveryPlan,
) -> Result<BTreeMap<Address, Vec<Manifest>>, RecoveryError> {
    let mut machines: BTreeMap<Address, BTreeSet<String>> = BTreeMap::new();
    for g in &plan.groups {
        for m in &g.machines {
            if let Some(p) = ws.protection_of(m) {
                machines
                    .entry(p.vault.clone())
                    .or_default()
                    .insert(p.machine.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    for (va, machines) in machines {
        let vault = open_vault(ws, &va)?;
        let list = catalog::list_machines_checked(&vault, &machines).map_err(vault_err(&va))?;
        out.insert(va, list);
    }
    Ok(out)
}

/// `chosen` with each point read whole from its manifest (extents
/// included, names as moved): one manifest read per machine restored.
pub fn read_chosen(
    ws: &Workspace,
    chosen: BTreeMap<Address, Chosen>,
) -> Result<BTreeMap<Address, Chosen>, RecoveryError> {
    let mut out = BTreeMap::new();
    for (m, mut c) in chosen {
        let vault = open_vault(ws, &c.vault)?;
        c.point = manifest::read(&vault, &c.point.id).map_err(vault_err(&c.vault))?;
        out.insert(m, c);
    }
    Ok(out)
}

/// The points `choice` picks for `plan`, their manifests read whole.
/// Runs take no vault lock, so a prune may drop a chosen point between
/// the listing and the read: the choice is then made again from a fresh
/// listing (a point named by id is reported as missing).
fn choose_and_read(
    ws: &Workspace,
    plan: &RecoveryPlan,
    choice: &PointChoice,
) -> Result<BTreeMap<Address, Chosen>, RecoveryError> {
    let mut tries = 0;
    loop {
        let listed = list_points(ws, plan)?;
        match read_chosen(ws, points::choose(&ws.config, plan, &listed, choice)?) {
            Err(RecoveryError::Vault { source, .. })
                if matches!(*source, crate::vault::VaultError::Missing { .. })
                    && !matches!(choice, PointChoice::Id(_))
                    && tries < 5 =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

fn vault_err(va: &Address) -> impl Fn(crate::vault::VaultError) -> RecoveryError + '_ {
    move |source| RecoveryError::Vault {
        vault: va.clone(),
        source: Box::new(source),
    }
}

/// The workspace's handle of vault `va` (opened once per command).
pub(crate) fn open_vault(
    ws: &Workspace,
    va: &Address,
) -> Result<std::sync::Arc<crate::vault::Vault>, RecoveryError> {
    ws.vault(va).map_err(|e| match e {
        WorkspaceError::Vault { error, .. } => RecoveryError::Vault {
            vault: va.clone(),
            source: error,
        },
        _ => RecoveryError::NotConfigured(va.clone()),
    })
}

fn refused(message: String, help: String) -> Refusal {
    Refusal::new(message, help)
}

/// Refuse when the state is missing while its backup exists, or the vault
/// says a machine of `plan` runs elsewhere than the state believes.
pub(crate) fn refuse_to_guess(
    ws: &Workspace,
    plan: &RecoveryPlan,
    doc: Option<&crate::state::StateDoc>,
    recorder: &Recorder,
) -> Result<(), RecoveryError> {
    let prots: Vec<Address> = plan
        .groups
        .iter()
        .flat_map(|g| &g.machines)
        .filter_map(|m| ws.protection_of(m).map(|p| p.addr.clone()))
        .collect();
    let problems =
        super::placement::check_vaults(ws, doc, recorder.orphaned_backup().as_deref(), &prots);
    if problems.is_empty() {
        return Ok(());
    }
    Err(RecoveryError::Refused {
        message: format!(
            "refusing to guess where the machines of {} run:\n  - {}",
            plan.addr,
            problems.join("\n  - ")
        ),
        help: "restore the state from its backup; nothing was changed".into(),
    })
}

/// Refuse when the state is missing while its backup exists: whatever the
/// run would record would start a new state beside the only good copy.
pub(crate) fn refuse_lost_state(
    plan: &RecoveryPlan,
    doc: Option<&crate::state::StateDoc>,
    recorder: &Recorder,
) -> Result<(), RecoveryError> {
    match (doc, recorder.orphaned_backup()) {
        (None, Some(backup)) => Err(RecoveryError::Refused {
            message: format!(
                "refusing to run {} without its state: {}",
                plan.addr,
                super::placement::lost_state(&backup)
            ),
            help: "restore the state from its backup; nothing was changed".into(),
        }),
        _ => Ok(()),
    }
}

/// Why a new run of `kind` cannot start, given the plan's runs in `doc`.
fn refusal(doc: &crate::state::StateDoc, plan: &Address, kind: RunKind) -> Option<Refusal> {
    let name = plan_arg(plan);
    if let Some(t) = doc.run_of(plan, true)
        && kind.is_test()
    {
        return Some(refused(
            format!(
                "{plan} already has a test failover (run {}, {})",
                t.run_id,
                t.phase.as_str()
            ),
            format!(
                "remove its replicas first with `standby failover cleanup {name}`, then run again"
            ),
        ));
    }
    if let Some(f) = doc.run_of(plan, false) {
        let site = f
            .machines
            .values()
            .next()
            .map(|m| m.site.clone())
            .unwrap_or_else(|| "its target site".into());
        let help = match f.phase {
            // Its process was killed: a new attempt replaces it.
            Phase::Running if f.abandoned() => return None,
            Phase::Running => "that run is still in progress on another host or process; wait for it to finish (`standby status` shows where each machine is)".to_string(),
            Phase::Completed => format!(
                "the machines run at {site}; make it final with `standby failover commit {name}`"
            ),
            Phase::Committed => format!(
                "the machines run at {site} and the failover is committed; bring them back with a failback"
            ),
            Phase::Failed => return None,
        };
        return Some(refused(
            format!(
                "{plan} is failed over to {site} ({} failover, run {}, {})",
                f.kind.as_str(),
                f.run_id,
                f.phase.as_str()
            ),
            if kind.is_test() {
                format!("a test failover cannot run while the plan is failed over; {help}")
            } else {
                help
            },
        ));
    }
    None
}

/// Start and finish a run of `plan`: test, planned or unplanned. `Err`
/// means nothing was done (refused, or no points); a run that started
/// always returns its result, passed or not.
#[allow(clippy::too_many_arguments)]
pub fn failover(
    ws: &Workspace,
    plan: &RecoveryPlan,
    kind: RunKind,
    choice: &PointChoice,
    approver: &dyn Approver,
    recorder: &Recorder,
    cancel: &Cancel,
    sink: &dyn Sink,
) -> Result<RunResult, RecoveryError> {
    failover_with(
        ws, plan, kind, choice, false, approver, recorder, cancel, sink,
    )
}

/// [`failover`], with `instant` recovery (`failover --instant`): VMs boot
/// from their disks served out of the vault (see [`super::instant`]).
#[allow(clippy::too_many_arguments)]
pub fn failover_with(
    ws: &Workspace,
    plan: &RecoveryPlan,
    kind: RunKind,
    choice: &PointChoice,
    instant: bool,
    approver: &dyn Approver,
    recorder: &Recorder,
    cancel: &Cancel,
    sink: &dyn Sink,
) -> Result<RunResult, RecoveryError> {
    if instant {
        super::instant::check(&ws.config, plan)?;
    }
    let _run = runlock::acquire(ws, &plan.addr, recorder.command())?;
    recorder.interruptible_by(cancel);
    if kind.is_test() {
        clean_dead_test_run(ws, plan, recorder, sink)?;
    } else {
        end_test_run(ws, plan, recorder, sink)?;
    }
    failover_locked(
        ws, plan, kind, choice, approver, recorder, cancel, sink, false, instant,
    )
}

/// [`failover`] under the plan's run lock; `drill` marks a drill's test run.
#[allow(clippy::too_many_arguments)]
fn failover_locked(
    ws: &Workspace,
    plan: &RecoveryPlan,
    kind: RunKind,
    choice: &PointChoice,
    approver: &dyn Approver,
    recorder: &Recorder,
    cancel: &Cancel,
    sink: &dyn Sink,
    drill: bool,
    instant: bool,
) -> Result<RunResult, RecoveryError> {
    // Refuse before anything is read from the vault.
    let doc = recorder.read()?;
    if let Some(doc) = &doc
        && let Some(r) = refusal(doc, &plan.addr, kind)
    {
        return Err(UpdateError::Refused(r).into());
    }
    // A lost or stale state must not decide what is restored where; a
    // test run restores nowhere that matters, but it records its run, and
    // that write would turn the good backup into a copy of the stale state.
    refuse_to_guess(ws, plan, doc.as_ref(), recorder)?;
    let chosen = if kind == RunKind::Planned {
        BTreeMap::new()
    } else {
        choose_and_read(ws, plan, choice)?
    };
    let run_id = new_run_id(&plan.addr, kind);
    // The attempt this one replaces (refused above unless it failed or its
    // process is gone): its machines may still run.
    let replaced = doc.as_ref().and_then(|d| {
        d.runs
            .iter()
            .find(|r| r.plan == plan.addr && !r.kind.is_test() && !kind.is_test())
    });
    let first_attempt = replaced.map(|r| {
        r.first_attempt.clone().unwrap_or(crate::state::Attempt {
            run_id: r.run_id.clone(),
            started_at: r.started_at,
        })
    });
    let earlier = replaced.map(|r| super::engine::Earlier {
        run_id: r.run_id.clone(),
        machines: r
            .machines
            .iter()
            .map(|(m, at)| {
                let mut at = at.clone();
                at.placed_by.get_or_insert_with(|| r.run_id.clone());
                (m.clone(), at)
            })
            .collect(),
    });
    // A VM an interrupted instant failover left still reads its disks
    // from the vault: only an instant rerun finishes its copy (a plain one
    // would keep it on the exports, or restore over its writes).
    if !instant
        && let Some(m) = earlier.as_ref().and_then(|e| {
            e.machines
                .iter()
                .find(|(_, at)| super::instant::reads_exports(at))
        })
    {
        return Err(RecoveryError::Refused {
            message: format!(
                "the interrupted instant failover of {} left {} running from the vault (its disks are not copied yet)",
                plan.addr, m.0
            ),
            help:
                "run the same failover again with --instant: it keeps the VM and finishes the copy"
                    .into(),
        });
    }
    let timeline = Timeline::new();
    let record = RunRecord {
        plan: plan.addr.clone(),
        run_id: run_id.clone(),
        kind,
        mode: if kind.is_test() {
            Mode::Test
        } else {
            Mode::Failover
        },
        phase: Phase::Running,
        started_at: timeline.started_at(),
        finished_at: None,
        owner: Some(crate::state::Owner::me()),
        waiting_for: None,
        approvals: Vec::new(),
        // Where the earlier attempt left each machine, until this one
        // places it: a kill before then must not lose it.
        machines: earlier
            .as_ref()
            .map(|e| e.machines.clone())
            .unwrap_or_default(),
        reprotect: None,
        failback: None,
        drill,
        first_attempt: first_attempt.clone(),
    };
    recorder.update(|doc| {
        if let Some(r) = refusal(doc, &plan.addr, kind) {
            return Err(r);
        }
        // A failed (or abandoned) failover is replaced by the new attempt.
        doc.runs
            .retain(|r| !(r.plan == plan.addr && r.kind.is_test() == kind.is_test()));
        doc.runs.push(record.clone());
        Ok(())
    })?;

    let mut engine = Engine::new(
        ws,
        plan,
        run_id.clone(),
        kind,
        recorder.clone(),
        cancel.clone(),
        approver,
        timeline,
        sink,
        if instant {
            &super::instant::InstantFailover
        } else {
            &super::failover::Failover
        },
    );
    engine.earlier = earlier;
    engine.first_attempt = first_attempt;
    engine.emit(What::RunStarted {
        kind: kind.as_str().to_string(),
        plan: plan.addr.to_string(),
        run_id: run_id.clone(),
    });
    let mut passed = true;
    if kind == RunKind::Planned {
        passed = match super::failover::check_final_points(&mut engine) {
            Ok(()) => super::failover::stop_sources(&engine),
            Err(e) => {
                engine.fail(e);
                false
            }
        };
        if passed && !cancel.is_cancelled() {
            match super::failover::final_points(&mut engine) {
                Ok(p) => engine.points = p,
                Err(e) => {
                    engine.fail(format!(
                        "{e}; the sources are stopped and no machine was started at the target: fix the cause and run the planned failover again (it takes the final points from the stopped machines), or start the sources again where they ran"
                    ));
                    passed = false;
                }
            }
        } else {
            passed = false;
        }
    } else {
        engine.points = chosen;
    }
    for (m, c) in &engine.points {
        engine.emit(What::PointChosen {
            machine: m.to_string(),
            point: c.point.id.short(),
            created: c.point.created.clone(),
            consistency: c.point.consistency.to_string(),
            group: c.point.group.clone(),
        });
    }
    if passed {
        passed = engine.run_groups();
    }
    let interrupted = cancel.is_cancelled();
    let finished_at = OffsetDateTime::now_utc();
    let phase = if passed {
        Phase::Completed
    } else {
        Phase::Failed
    };
    let finished = recorder.update(|doc| {
        let r = doc
            .run_mut(&run_id)
            .ok_or("the run is no longer in the state")?;
        r.phase = phase;
        r.finished_at = Some(finished_at);
        r.waiting_for = None;
        Ok(r.clone())
    });
    let record = match finished {
        Ok(r) => r,
        Err(e) => {
            engine.fail(format!("record the end of the run: {e}"));
            passed = false;
            record
        }
    };
    Ok(RunResult::of(
        &mut engine,
        record,
        passed,
        interrupted,
        finished_at,
    ))
}

/// What cleanup did.
#[derive(Debug)]
pub enum Cleaned {
    /// No test run was recorded.
    Nothing,
    /// Replicas stopped and removed; the record is gone.
    Done { run_id: String, machines: usize },
}

/// Stop and remove the plan's test replicas (provider `stop` for each
/// machine, `destroy` per site), then forget the test run.
pub fn cleanup(
    ws: &Workspace,
    plan: &RecoveryPlan,
    recorder: &Recorder,
    timeline: Option<&Timeline>,
) -> Result<Cleaned, RecoveryError> {
    let _run = runlock::acquire(ws, &plan.addr, recorder.command())?;
    cleanup_locked(ws, plan, recorder, timeline)
}

/// Under the plan's run lock: remove a test run left by a dead process
/// (a drill killed at any moment, or a `failover test` killed before it
/// finished), so that it does not block the new run. A test run that
/// completed on its own (`failover test`) is the user's and stays.
fn clean_dead_test_run(
    ws: &Workspace,
    plan: &RecoveryPlan,
    recorder: &Recorder,
    sink: &dyn Sink,
) -> Result<(), RecoveryError> {
    let Some(run) = test_run(plan, recorder)? else {
        return Ok(());
    };
    let dead = run.owner.as_ref().is_some_and(|o| !o.may_be_alive());
    if !(dead && (run.drill || run.phase == Phase::Running)) {
        return Ok(());
    }
    sink.event(&Event {
        seconds: 0.0,
        what: What::DeadTestRun {
            run_id: run.run_id.clone(),
            plan: plan.addr.to_string(),
            drill: run.drill,
            pid: run.owner.as_ref().map(|o| o.pid),
            phase: run.phase.as_str().to_string(),
        },
    });
    cleanup_locked(ws, plan, recorder, None).map(|_| ())
}

/// The plan's test run the state records, if any.
fn test_run(plan: &RecoveryPlan, recorder: &Recorder) -> Result<Option<RunRecord>, RecoveryError> {
    Ok(recorder
        .read()?
        .and_then(|doc| doc.run_of(&plan.addr, true).cloned()))
}

/// Under the plan's run lock, before a planned or unplanned failover:
/// remove the plan's test run, if any (a disaster during a test failover
/// or drill left up). Its replicas are throw-away, and they would hold
/// what the real ones need: a forwarded host port, a VM's name.
fn end_test_run(
    ws: &Workspace,
    plan: &RecoveryPlan,
    recorder: &Recorder,
    sink: &dyn Sink,
) -> Result<(), RecoveryError> {
    let Some(run) = test_run(plan, recorder)? else {
        return Ok(());
    };
    sink.event(&Event {
        seconds: 0.0,
        what: What::TestRunEnded {
            run_id: run.run_id.clone(),
            plan: plan.addr.to_string(),
        },
    });
    cleanup_locked(ws, plan, recorder, None).map(|_| ())
}

fn cleanup_locked(
    ws: &Workspace,
    plan: &RecoveryPlan,
    recorder: &Recorder,
    timeline: Option<&Timeline>,
) -> Result<Cleaned, RecoveryError> {
    let Some(doc) = recorder.read()? else {
        refuse_lost_state(plan, None, recorder)?;
        return Ok(Cleaned::Nothing);
    };
    let Some(run) = doc.run_of(&plan.addr, true).cloned() else {
        return Ok(Cleaned::Nothing);
    };
    // Not under a run still at work (a drill cleans up after its run ended).
    if run.phase == Phase::Running && !run.abandoned() {
        let who = run
            .owner
            .as_ref()
            .map(|o| format!(" (pid {} on {})", o.pid, o.host))
            .unwrap_or_default();
        return Err(RecoveryError::Refused {
            message: format!(
                "test run {} of {} is still in progress{who}",
                run.run_id, plan.addr
            ),
            help: "wait for it to finish, or stop it (Ctrl-C or SIGTERM), then clean up".into(),
        });
    }
    let start = timeline.map(|t| t.now());
    let (cfg, root) = (&ws.config, ws.root());
    // Sites: where machines were placed, and every target of the plan
    // (a run killed early may have prepared a sandbox before placing any).
    let mut sites: Vec<String> = run.machines.values().map(|m| m.site.clone()).collect();
    for g in &plan.groups {
        for m in &g.machines {
            if let Some(p) = ws.protection_of(m) {
                sites.push(p.target.to_string());
            }
        }
    }
    sites.sort();
    sites.dedup();
    let mut errors = Vec::new();
    let mut provs = BTreeMap::new();
    for s in &sites {
        let addr: Address = match s.parse() {
            Ok(a) => a,
            Err(e) => {
                errors.push(format!("{s}: {e}"));
                continue;
            }
        };
        match providers::for_site(cfg, &root, &addr) {
            Ok(p) => {
                provs.insert(s.clone(), (addr, p));
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    for (machine, m) in &run.machines {
        if let Some((addr, p)) = provs.get(&m.site) {
            let r = providers::run_at(cfg, &root, addr, &run.run_id, Mode::Test);
            if let Err(e) = p.stop(&r, machine) {
                errors.push(format!("stop {machine}: {e}"));
            }
        }
    }
    for (addr, p) in provs.values() {
        let r = providers::run_at(cfg, &root, addr, &run.run_id, Mode::Test);
        if let Err(e) = p.destroy(&r) {
            errors.push(format!("remove the test run at {addr}: {e}"));
        }
    }
    // Instant test replicas read their points from the vault until now.
    // Every machine of the plan's hold goes, recorded or not: a run killed
    // after it took a hold may not have recorded the disks yet. A vault
    // that cannot be opened fails the cleanup only where a machine is
    // known to have run from an export.
    if errors.is_empty() {
        let mut by_vault: BTreeMap<Address, (Vec<String>, bool)> = BTreeMap::new();
        for g in &plan.groups {
            for m in &g.machines {
                let Some(p) = ws.protection_of(m) else {
                    continue;
                };
                let instant = run
                    .machines
                    .get(&m.to_string())
                    .is_some_and(super::instant::reads_exports);
                let e = by_vault.entry(p.vault.clone()).or_default();
                e.0.push(m.to_string());
                e.1 |= instant;
            }
        }
        for (vault, (machines, instant)) in by_vault {
            let released = ws.vault(&vault).map_err(|e| e.to_string()).and_then(|v| {
                machines.iter().try_for_each(|m| {
                    crate::vault::holds::release(
                        &v,
                        &super::instant::holder(v.owner().as_deref(), &plan.addr, m, Mode::Test),
                    )
                    .map_err(|e| e.to_string())
                })
            });
            match released {
                Err(e) if instant => errors.push(format!("release the holds on {vault}: {e}")),
                Err(e) => tracing::debug!("holds on {vault} not released: {e}"),
                Ok(()) => {}
            }
        }
    }
    let result = if errors.is_empty() {
        recorder
            .update(|doc| {
                doc.runs.retain(|r| r.run_id != run.run_id);
                Ok(())
            })
            .map_err(RecoveryError::from)
            .map(|_| Cleaned::Done {
                run_id: run.run_id.clone(),
                machines: run.machines.len(),
            })
    } else {
        Err(RecoveryError::CleanupIncomplete {
            run_id: run.run_id.clone(),
            errors,
            plan: plan_arg(&plan.addr),
        })
    };
    if let (Some(t), Some(start)) = (timeline, start) {
        let subj = Subject::new(EntryKind::Cleanup, run.run_id.clone());
        match &result {
            Ok(_) => t.record(subj, start, Outcome::Passed, "replicas stopped and removed"),
            Err(e) => t.record(subj, start, Outcome::Failed, e.to_string()),
        }
    }
    result
}

/// Make the plan's completed failover final.
pub fn commit(plan: &Address, recorder: &Recorder) -> Result<RunRecord, RecoveryError> {
    let name = plan_arg(plan);
    Ok(recorder.update(|doc| {
        let Some(r) = doc
            .runs
            .iter_mut()
            .find(|r| &r.plan == plan && !r.kind.is_test())
        else {
            return Err(refused(
                format!("{plan} is not failed over: there is nothing to commit"),
                format!("fail over first with `standby failover planned {name}` (or unplanned)"),
            ));
        };
        match r.phase {
            Phase::Completed => {
                r.phase = Phase::Committed;
                Ok(r.clone())
            }
            Phase::Committed => Err(refused(
                format!(
                    "the failover of {plan} (run {}) is already committed",
                    r.run_id
                ),
                "nothing to do".into(),
            )),
            Phase::Running if r.abandoned() => Err(refused(
                format!("the failover of {plan} (run {}) was interrupted: its process is gone", r.run_id),
                format!("run the failover again (`standby failover unplanned {name}`); the state shows how far it got"),
            )),
            Phase::Running => Err(refused(
                format!("the failover of {plan} (run {}) is still running", r.run_id),
                "wait for it to finish; `standby status` shows where each machine is".into(),
            )),
            Phase::Failed => Err(refused(
                format!("the failover of {plan} (run {}) failed", r.run_id),
                format!(
                    "fix the cause and run the failover again (`standby failover unplanned {name}`)"
                ),
            )),
        }
    })?)
}

/// Record an approval of `step` for the plan's running run.
pub fn approve(
    plan: &Address,
    step: &str,
    by: &str,
    recorder: &Recorder,
) -> Result<RunRecord, RecoveryError> {
    let name = plan_arg(plan);
    Ok(recorder.update(|doc| {
        let mut running: Vec<&mut RunRecord> = doc
            .runs
            .iter_mut()
            .filter(|r| {
                &r.plan == plan
                    && ((r.phase == Phase::Running && !r.abandoned())
                        // A failback under way runs on the committed failover's record.
                        || r.failback.as_ref().is_some_and(|f| {
                            f.owner.as_ref().is_some_and(|o| o.may_be_alive())
                        }))
            })
            .collect();
        // Prefer the run that waits for this very step.
        running.sort_by_key(|r| {
            !r.waiting_for
                .as_deref()
                .is_some_and(|w| w == step || w.ends_with(&format!(".{step}")))
        });
        let Some(r) = running.into_iter().next() else {
            return Err(refused(
                format!("no run of {plan} is in progress, so there is nothing to approve"),
                format!(
                    "start one first (`standby failover test {name}` or `standby drill {name}`), or pre-approve with --approve {step}"
                ),
            ));
        };
        r.approvals.push(Approval {
            step: step.to_string(),
            at: OffsetDateTime::now_utc(),
            by: by.to_string(),
        });
        Ok(r.clone())
    })?)
}

/// What a drill measured.
pub struct DrillResult {
    pub run: RunResult,
    /// Cleanup error, if it failed.
    pub cleanup_error: Option<String>,
    pub max_rto_seconds: Option<u64>,
    /// The plan's policies' smallest RPO threshold.
    pub rpo_threshold_seconds: Option<u64>,
    pub passed: bool,
    pub finished_at: OffsetDateTime,
}

/// A drill: test failover, every check, then cleanup (also after a failed
/// check or an interrupt), RTO/RPO measured and recorded in the state.
pub fn drill(
    ws: &Workspace,
    plan: &RecoveryPlan,
    choice: &PointChoice,
    approver: &dyn Approver,
    recorder: &Recorder,
    cancel: &Cancel,
    sink: &dyn Sink,
) -> Result<DrillResult, RecoveryError> {
    drill_with(ws, plan, choice, false, approver, recorder, cancel, sink)
}

/// [`drill`], with `instant` recovery (`drill --instant`, or the plan's
/// `drill { instant = true }`): the test VMs boot from their disks served
/// out of the vault, which are never copied whole.
#[allow(clippy::too_many_arguments)]
pub fn drill_with(
    ws: &Workspace,
    plan: &RecoveryPlan,
    choice: &PointChoice,
    instant: bool,
    approver: &dyn Approver,
    recorder: &Recorder,
    cancel: &Cancel,
    sink: &dyn Sink,
) -> Result<DrillResult, RecoveryError> {
    if instant {
        super::instant::check(&ws.config, plan)?;
    }
    let _run = runlock::acquire(ws, &plan.addr, recorder.command())?;
    recorder.interruptible_by(cancel);
    clean_dead_test_run(ws, plan, recorder, sink)?;
    let run = failover_locked(
        ws,
        plan,
        RunKind::Test,
        choice,
        approver,
        recorder,
        cancel,
        sink,
        true,
        instant,
    )?;
    sink.event(&Event {
        seconds: run.timeline.now(),
        what: What::CleaningUp,
    });
    let cleanup_error = match cleanup_locked(ws, plan, recorder, Some(&run.timeline)) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    let max_rto_seconds = plan.drill.as_ref().map(|d| d.max_rto.as_secs());
    let rpo_threshold_seconds = rpo_threshold(ws, plan);
    let rto_ok = match (run.rto_seconds, max_rto_seconds) {
        (Some(rto), Some(max)) => rto <= max as f64,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let passed = run.passed && cleanup_error.is_none() && rto_ok;
    let finished_at = OffsetDateTime::now_utc();
    let rec = DrillRecord {
        plan: plan.addr.clone(),
        started_at: run.started_at,
        finished_at,
        passed,
        rto_seconds: run.rto_seconds,
        rpo_seconds: run.rpo_seconds(),
        interrupted: run.interrupted,
    };
    recorder.update(|doc| {
        doc.drills.push(rec);
        Ok(())
    })?;
    Ok(DrillResult {
        run,
        cleanup_error,
        max_rto_seconds,
        rpo_threshold_seconds,
        passed,
        finished_at,
    })
}

/// The smallest RPO threshold of the policies protecting the plan's machines.
pub fn rpo_threshold(ws: &Workspace, plan: &RecoveryPlan) -> Option<u64> {
    plan.groups
        .iter()
        .flat_map(|g| &g.machines)
        .filter_map(|m| ws.protection_of(m))
        .filter_map(|p| ws.policy_of(&p.addr))
        .map(|p| p.rpo_threshold.as_secs())
        .min()
}

/// Plans whose drill is due at `now`: never drilled, or the last drill
/// finished longer ago than the schedule's interval.
pub fn due<'a>(
    cfg: &'a Config,
    doc: Option<&crate::state::StateDoc>,
    now: OffsetDateTime,
) -> Vec<&'a RecoveryPlan> {
    cfg.recovery_plans
        .values()
        .filter(|p| {
            let Some(d) = &p.drill else { return false };
            match doc.and_then(|s| s.last_drill(&p.addr)) {
                None => true,
                Some(last) => {
                    (now - last.finished_at).whole_seconds()
                        > d.schedule.interval().as_secs() as i64
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::state::LocalBackend;
    use std::sync::Arc;

    #[test]
    fn a_refusal_carries_its_help_as_data_not_glued_to_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::new(Arc::new(LocalBackend::new(dir.path())), "test");
        let plan = Address::new(Kind::RecoveryPlan, "shop");
        let e = commit(&plan, &rec).unwrap_err();
        assert_eq!(
            e.to_string(),
            "recovery_plan.shop is not failed over: there is nothing to commit"
        );
        assert_eq!(
            e.help(),
            Some("fail over first with `standby failover planned shop` (or unplanned)")
        );
        assert!(matches!(e, RecoveryError::Refused { .. }));
    }
}
