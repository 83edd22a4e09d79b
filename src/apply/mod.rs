//! Apply: make the recorded state match the configuration. [`run`] takes a
//! plan (made now, or a saved one checked against the state and the
//! configuration), refreshes drift, refuses what the options do not allow,
//! carries out renames, walks the step graph ([`graph`], steps in
//! [`steps`]) with [`crate::exec::walk`] under the state lock held for the
//! whole run, then the site changes ([`site`]). It never prints and never
//! reads stdin: what a user sees goes through [`Ui`] as [`Event`]s and exec
//! events, and confirmation is asked of the [`Ui`] — the command renders.

pub mod graph;
pub mod moves;
pub mod site;
pub mod steps;

use crate::exec::{self, Cancel, Outcome as StepOutcome, Sink};
use crate::model::{Address, Kind};
use crate::plan::{self, Action, DiffOptions, Drift, Plan, SavedPlan, SavedPlanError};
use crate::state::{StateDoc, StateError};
use crate::workspace::{Workspace, WorkspaceError};
use std::path::PathBuf;
use std::sync::Arc;
use steps::Context;

pub use graph::step_graph;
pub use moves::Moved;

/// What apply may do, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// A plan saved by `standby plan --out FILE`: apply exactly it.
    pub saved: Option<PathBuf>,
    /// Ask [`Ui::confirm`] before changing anything.
    pub ask: bool,
    /// How many independent steps may run at once (at least 1).
    pub parallelism: usize,
    /// Read the vaults and sites for drift first.
    pub refresh: bool,
    pub allow_destroy: bool,
    pub allow_failover: bool,
    pub allow_undrilled: bool,
    /// Manual steps of site changes approved in advance (`STEP`, `GROUP.STEP`).
    pub approve: Vec<String>,
}

/// What apply tells its user, in order.
pub enum Event<'a> {
    /// The refresh is done: facts that could not be read (not drift: the
    /// next refresh tries again) and the drift found.
    Refreshed {
        notes: &'a [String],
        drift: &'a [Drift],
    },
    /// The plan to carry out, refusals passed; `changes`: whether it has
    /// any (without, apply ends after this event).
    Plan { plan: &'a Plan, changes: bool },
    /// The steps begin; renames already carried out.
    StepsStarting { moved: &'a [Moved] },
    /// Every step ended (see the report).
    StepsDone {
        report: &'a exec::Report,
        steps: usize,
        summary: &'a plan::Summary,
    },
    /// The site changes begin.
    SiteChangesStarting,
}

/// The user's side of apply: events, the step sink, confirmation.
pub trait Ui: Sync {
    fn event(&self, e: Event<'_>);
    /// Where step and stage events go (started, finished, failed...).
    fn sink(&self) -> &dyn Sink;
    /// The plan was shown: may apply go on? Asked only with [`Options::ask`].
    fn confirm(&self) -> Result<bool, ApplyError>;
    /// Called on a second interrupt while steps (`sites` false) or site
    /// changes run (the first one cancels what has not started).
    fn on_second_interrupt(&self, sites: bool) -> Box<dyn Fn() + Send>;
    /// Who approves the manual steps of site changes (`given`: the steps
    /// approved in advance with `--approve`).
    fn approver(&self, given: Vec<String>) -> Box<dyn crate::recovery::Approver>;
    /// Where the recovery runs of site changes report their progress.
    fn run_events(&self) -> std::sync::Arc<dyn crate::recovery::Sink>;
}

/// How an apply ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to change.
    NoChanges,
    /// The user said no; nothing was changed.
    Cancelled,
    /// A step failed, was skipped or was interrupted.
    StepsIncomplete,
    /// Every step finished; `sites`: whether the site changes (if any)
    /// all finished too.
    Done { sites: Option<bool> },
}

/// Why apply refused or stopped. Each carries its help as data
/// ([`ApplyError::help`]).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Workspace(WorkspaceError),
    #[error("{0}")]
    SavedPlan(SavedPlanError),
    #[error("refusing to guess where the machines run:\n  - {}", .0.join("\n  - "))]
    Placement(Vec<String>),
    #[error("the saved plan {} cannot be applied:\n{}", path.display(), lines(reasons))]
    Stale { path: PathBuf, reasons: Vec<String> },
    #[error(
        "refusing to apply: a protection with prevent_destroy would be destroyed:\n{}",
        lines(.0)
    )]
    PreventDestroy(Vec<String>),
    #[error("refusing to apply: this plan destroys the recovery points of:\n{}", lines(.0))]
    Destroys(Vec<String>),
    #[error(
        "refusing to apply: this plan moves recovery plans to another site (active_site); nothing was changed:\n{}",
        .0.join("\n")
    )]
    SiteChangeNotAllowed(Vec<String>),
    #[error(
        "refusing to apply: a recovery plan that moves site is not proven by a recent passing drill; nothing was changed:\n{}",
        .0.join("\n")
    )]
    Undrilled(Vec<String>),
    #[error("cannot move {from}: run {run_id} of {plan} holds it")]
    MoveHeld {
        from: String,
        run_id: String,
        plan: Address,
    },
    #[error("{vault}: cannot record the move of its points: {error}")]
    MoveRecord {
        vault: Address,
        error: Box<crate::vault::VaultError>,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// Confirmation cannot be asked (stdin is not a terminal, or `-input=false`).
    #[error(
        "apply cannot ask for confirmation (stdin is not a terminal, or -input=false); nothing was changed"
    )]
    CannotAsk,
    #[error("cannot read the answer: {0}")]
    Answer(std::io::Error),
}

fn lines(items: &[String]) -> String {
    items
        .iter()
        .map(|l| format!("  - {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl From<WorkspaceError> for ApplyError {
    fn from(e: WorkspaceError) -> Self {
        ApplyError::Workspace(e)
    }
}

impl ApplyError {
    /// What the user can do about it, when there is something to say.
    pub fn help(&self) -> Option<String> {
        use miette::Diagnostic;
        Some(match self {
            ApplyError::State(e) => return e.help().map(|h| h.to_string()),
            ApplyError::Placement(_) => {
                "restore the state from its backup; nothing was changed".into()
            }
            ApplyError::Stale { .. } => {
                "make a new plan with `standby plan --out FILE` and review it".into()
            }
            ApplyError::Destroys(_) => {
                "review the plan; if their points may go, run apply again with --allow-destroy"
                    .into()
            }
            ApplyError::SiteChangeNotAllowed(_) => "review the plan; to carry it out run apply again with --allow-failover (or save it with `standby plan --allow-failover --out FILE` and apply that file)".into(),
            ApplyError::Undrilled(_) => {
                "drill it first (`standby drill PLAN`), or accept the risk with --allow-undrilled"
                    .into()
            }
            ApplyError::MoveHeld { plan, .. } => format!(
                "finish that run first (`standby failover cleanup {}` for a test, failback after a failover), then move",
                crate::recovery::run::plan_arg(plan)
            ),
            ApplyError::CannotAsk => "review the plan above, then run `standby apply --auto-approve`; or save it with `standby plan --out FILE` and run `standby apply FILE`".into(),
            _ => return None,
        })
    }
}

impl miette::Diagnostic for ApplyError {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        ApplyError::help(self).map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
}

/// Apply `ws`'s configuration (its backend must be open): see the module
/// docs. Takes the state lock for the whole run.
pub fn run(ws: Arc<Workspace>, opts: &Options, ui: &dyn Ui) -> Result<Outcome, ApplyError> {
    let config = &ws.config;
    let backend = ws.backend()?.clone();
    let lock = backend.lock("standby apply")?;
    let current = backend.read()?;
    // A lost or stale state must not adopt the vault's points as new.
    let prots: Vec<Address> = config.protections.keys().cloned().collect();
    let problems = crate::recovery::placement::check_vaults(
        &ws,
        current.as_ref(),
        backend.orphaned_backup().as_deref(),
        &prots,
    );
    if !problems.is_empty() {
        return Err(ApplyError::Placement(problems));
    }

    let mut plan = match &opts.saved {
        Some(path) => {
            let saved = SavedPlan::load(path).map_err(ApplyError::SavedPlan)?;
            plan::ensure_applicable(&saved, current.as_ref(), &config.source_hash).map_err(
                |stale| ApplyError::Stale {
                    path: path.clone(),
                    reasons: stale.reasons.iter().map(|r| r.to_string()).collect(),
                },
            )?;
            saved.plan
        }
        None => plan::diff(config, current.as_ref(), &DiffOptions::default()),
    };
    // Drift is what is found now, also for a saved plan.
    let refreshed = current
        .as_ref()
        .filter(|_| opts.refresh)
        .map(|s| plan::refresh::refresh(&ws, s));
    if let Some(r) = &refreshed {
        plan::use_refreshed_facts(&mut plan, current.as_ref(), &r.facts);
        plan.drift = r.drift.clone();
        ui.event(Event::Refreshed {
            notes: &r.notes,
            drift: &r.drift,
        });
    }

    let prevented = plan.prevented_destroys(config, current.as_ref());
    if !prevented.is_empty() {
        return Err(ApplyError::PreventDestroy(
            prevented.iter().map(|p| p.to_string()).collect(),
        ));
    }
    let destroyed = destroyed_protections(&plan);
    if !destroyed.is_empty() && !opts.allow_destroy {
        return Err(ApplyError::Destroys(
            destroyed.iter().map(|a| a.to_string()).collect(),
        ));
    }

    site::guard(
        &plan,
        opts.allow_failover,
        opts.allow_undrilled,
        opts.saved.is_some(),
    )?;

    let changes = plan.has_changes();
    ui.event(Event::Plan {
        plan: &plan,
        changes,
    });
    if !changes {
        return Ok(Outcome::NoChanges);
    }
    if opts.ask && !ui.confirm()? {
        return Ok(Outcome::Cancelled);
    }

    // A new state takes the plan's lineage: sensitive markers are keyed by it.
    let mut doc = current.unwrap_or_else(|| StateDoc {
        lineage: plan.lineage,
        ..StateDoc::new()
    });
    // The points this apply writes, adopts or deletes are this lineage's.
    ws.set_owner(doc.lineage);
    // Record the refreshed facts first, so the next plan shows only new drift.
    if let Some(r) = &refreshed {
        let mut next = doc.clone();
        plan::refresh::record(&mut next, &r.facts);
        if next.objects != doc.objects {
            backend.write(&lock, &mut next)?;
            doc = next;
        }
    }
    // Renames first: the steps after them work on the new addresses.
    let renames: Vec<(Address, Address)> = plan
        .changes
        .iter()
        .filter_map(|c| Some((c.moved_from.clone()?, c.address.clone())))
        .collect();
    let moved = if renames.is_empty() {
        Vec::new()
    } else {
        moves::carry_out(&ws, backend.as_ref(), &lock, &mut doc, &renames)?
    };
    let (graph, _) = step_graph(&plan);
    let ctx = Arc::new(Context::new(ws.clone(), plan.changes.clone(), lock, doc));
    ui.event(Event::StepsStarting { moved: &moved });

    let rt = crate::store::runtime().map_err(ApplyError::Runtime)?;
    let cancel = Cancel::new();
    let report = rt.block_on(async {
        // A second interrupt stops at once: every finished step is in state already.
        let _listening = cancel
            .on_signals(ui.on_second_interrupt(false))
            .inspect_err(|e| tracing::warn!("cannot watch for interrupts: {e}"));
        // Running first replications watch this flag and stop before writing.
        let flag = ctx.cancel.clone();
        let watched = cancel.clone();
        let watcher = tokio::spawn(async move {
            watched.cancelled().await;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let report = exec::walk(
            &graph,
            opts.parallelism,
            &cancel,
            ui.sink(),
            |i, _cancel| {
                let ctx = ctx.clone();
                let step = graph[i].clone();
                async move {
                    tokio::task::spawn_blocking(move || ctx.run(&step))
                        .await
                        .map_err(|e| exec::StepError::Failed(format!("the step crashed: {e}")))?
                }
            },
        )
        .await;
        watcher.abort();
        report
    });
    // Release the state lock: site changes record their runs update by update.
    drop(ctx);

    ui.event(Event::StepsDone {
        report: &report,
        steps: graph.node_count(),
        summary: &plan.summary(),
    });
    if !report.all_done() {
        return Ok(Outcome::StepsIncomplete);
    }
    if plan.site_changes.is_empty() {
        return Ok(Outcome::Done { sites: None });
    }
    ui.event(Event::SiteChangesStarting);
    let rec = crate::recovery::Recorder::new(backend, "standby apply");
    let done = site::run(
        ws.clone(),
        &plan.site_changes,
        rec,
        std::sync::Arc::from(ui.approver(opts.approve.clone())),
        ui.run_events(),
        ui.sink(),
        ui.on_second_interrupt(true),
    )?;
    Ok(Outcome::Done { sites: Some(done) })
}

/// How a refresh-only apply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// No state yet: nothing to refresh.
    NoState,
    /// The facts match what is recorded; nothing written.
    Unchanged,
    /// The user said no; nothing was changed.
    Cancelled,
    /// The facts were recorded; the state's new serial.
    Recorded { serial: u64 },
}

/// `apply --refresh-only`: observe, show the drift (as
/// [`Event::Refreshed`]), ask, and record the facts in one write.
pub fn refresh_only(ws: &Workspace, ask: bool, ui: &dyn Ui) -> Result<RefreshOutcome, ApplyError> {
    let backend = ws.backend()?;
    let lock = backend.lock("standby apply")?;
    let Some(mut doc) = backend.read()? else {
        return Ok(RefreshOutcome::NoState);
    };
    let r = plan::refresh::refresh(ws, &doc);
    ui.event(Event::Refreshed {
        notes: &r.notes,
        drift: &r.drift,
    });
    let mut next = doc.clone();
    plan::refresh::record(&mut next, &r.facts);
    if next.objects == doc.objects {
        return Ok(RefreshOutcome::Unchanged);
    }
    if ask && !ui.confirm()? {
        return Ok(RefreshOutcome::Cancelled);
    }
    next.serial = doc.serial;
    doc = next;
    backend.write(&lock, &mut doc)?;
    Ok(RefreshOutcome::Recorded { serial: doc.serial })
}

/// Protections the plan deletes or replaces (their points are destroyed).
pub fn destroyed_protections(plan: &Plan) -> Vec<&Address> {
    plan.changes
        .iter()
        .filter(|c| c.kind == Kind::Protection)
        .filter(|c| matches!(c.action, Action::Delete | Action::Replace { .. }))
        .map(|c| &c.address)
        .collect()
}

/// Count the outcomes of a step walk: (done, failed, skipped, not started).
pub fn tally(report: &exec::Report) -> (usize, usize, usize, usize) {
    let count = |f: fn(&StepOutcome) -> bool| report.count(f);
    (
        count(|o| o.is_done()),
        count(|o| matches!(o, StepOutcome::Failed { .. })),
        count(|o| matches!(o, StepOutcome::Skipped { .. })),
        count(|o| matches!(o, StepOutcome::NotStarted | StepOutcome::Abandoned { .. })),
    )
}
