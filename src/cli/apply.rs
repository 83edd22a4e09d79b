//! `standby apply [PLANFILE]`: make the recorded state match the
//! configuration. Without PLANFILE it plans, shows the diff and asks; with
//! one it applies exactly that saved plan (refused when state or
//! configuration moved since). The state lock is held for the whole run;
//! the steps (see `steps`) are walked by [`crate::exec::walk`].

pub(crate) mod moves;
mod site;
mod steps;

use crate::cli::plan::use_color;
use crate::cli::refresh;
use crate::cli::vault::load_config;
use crate::exec::{self, Cancel, JsonSink, Outcome, PlainSink, Sink};
use crate::model::{Address, Kind};
use crate::plan::{self, Action, DiffOptions, Plan, SavedPlan, StepOp, render};
use crate::state::StateDoc;
use miette::miette;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use steps::{ApplyStep, Context};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved by `standby plan --out FILE`: apply exactly it, without asking.
    #[arg(value_name = "PLANFILE")]
    pub plan_file: Option<PathBuf>,
    /// Apply without asking for confirmation (needed when stdin is not a terminal).
    #[arg(long)]
    pub auto_approve: bool,
    /// How many independent steps may run at once.
    #[arg(long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub parallelism: u16,
    /// Print progress as one JSON event per line on stdout (needs --auto-approve or PLANFILE).
    #[arg(long)]
    pub json: bool,
    /// Allow deleting protections, which destroys their recovery points.
    #[arg(long)]
    pub allow_destroy: bool,
    /// Allow the plan's site changes (a recovery plan's `active_site`
    /// moved): planned failover + commit + reprotect, or failback.
    #[arg(long)]
    pub allow_failover: bool,
    /// Allow a site change of a recovery plan never drilled, whose last
    /// drill failed, or is older than its schedule.
    #[arg(long)]
    pub allow_undrilled: bool,
    /// Approve manual step STEP (or GROUP.STEP) of a site change in advance; repeatable.
    #[arg(long = "approve", value_name = "STEP")]
    pub approve: Vec<String>,
    /// Only record what changed outside standby (drift); change nothing else.
    #[arg(long, conflicts_with_all = ["plan_file", "no_refresh"])]
    pub refresh_only: bool,
    /// Do not read the vaults and sites first (no drift shown or recorded).
    #[arg(long)]
    pub no_refresh: bool,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
    #[command(flatten)]
    pub backend: crate::cli::BackendArgs,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let color = use_color(&std::io::stdout());
    if args.json && !args.auto_approve && args.plan_file.is_none() {
        return Err(miette!(
            help = "add --auto-approve, or apply a saved plan: `standby plan --out FILE`, then `standby apply --json FILE`",
            "--json cannot ask for confirmation"
        ));
    }
    let config = load_config(&args.vars)?;
    let backend = args.backend.open(config.backend.as_ref())?;
    let lock = backend.lock("standby apply").map_err(miette::Report::new)?;
    let current = backend.read().map_err(miette::Report::new)?;
    if args.refresh_only {
        return refresh_only(args.auto_approve, &config, backend.as_ref(), &lock, current);
    }
    // A lost or stale state must not adopt the vault's points as new.
    let prots: Vec<crate::model::Address> = config.protections.keys().cloned().collect();
    let problems = crate::recovery::placement::check_vaults(
        &config,
        current.as_ref(),
        backend.orphaned_backup().as_deref(),
        &prots,
    );
    if !problems.is_empty() {
        return Err(miette!(
            help = "restore the state from its backup; nothing was changed",
            "refusing to guess where the machines run:\n  - {}",
            problems.join("\n  - ")
        ));
    }

    let mut plan = match &args.plan_file {
        Some(path) => {
            let saved = SavedPlan::load(path).map_err(|e| miette!("{e}"))?;
            plan::ensure_applicable(&saved, current.as_ref(), &config.source_hash).map_err(
                |stale| {
                    let reasons: Vec<String> =
                        stale.reasons.iter().map(|r| format!("  - {r}")).collect();
                    miette!(
                        help = "make a new plan with `standby plan --out FILE` and review it",
                        "the saved plan {} cannot be applied:\n{}",
                        path.display(),
                        reasons.join("\n")
                    )
                },
            )?;
            saved.plan
        }
        None => plan::diff(&config, current.as_ref(), &DiffOptions::default()),
    };
    // Drift is what is found now, also for a saved plan.
    let refreshed = current
        .as_ref()
        .filter(|_| !args.no_refresh)
        .map(|s| refresh::refresh(&config, s));
    if let Some(r) = &refreshed {
        plan::use_refreshed_facts(&mut plan, current.as_ref(), &r.facts);
        plan.drift = r.drift.clone();
    }
    if args.json {
        for d in &plan.drift {
            println!(
                "{}",
                serde_json::json!({"event": "drift", "drift": d, "message": d.to_string()})
            );
        }
    }

    let prevented = plan.prevented_destroys(&config, current.as_ref());
    if !prevented.is_empty() {
        let lines: Vec<String> = prevented.iter().map(|p| format!("  - {p}")).collect();
        return Err(miette!(
            "refusing to apply: a protection with prevent_destroy would be destroyed:\n{}",
            lines.join("\n")
        ));
    }
    let destroyed = destroyed_protections(&plan);
    if !destroyed.is_empty() && !args.allow_destroy {
        let lines: Vec<String> = destroyed.iter().map(|a| format!("  - {a}")).collect();
        return Err(miette!(
            help = "review the plan; if their points may go, run apply again with --allow-destroy",
            "refusing to apply: this plan destroys the recovery points of:\n{}",
            lines.join("\n")
        ));
    }

    site::guard(
        &plan,
        args.allow_failover,
        args.allow_undrilled,
        args.plan_file.is_some(),
    )?;

    if !plan.has_changes() {
        if args.json {
            println!("{}", serde_json::json!({"event": "summary", "changes": 0}));
        } else {
            print!("{}", render::text(&plan, color));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        print!("{}", render::text(&plan, color));
    }
    if args.plan_file.is_none() && !args.auto_approve && !confirmed()? {
        return Ok(ExitCode::from(1));
    }

    // A new state takes the plan's lineage: sensitive markers are keyed by it.
    let mut doc = current.unwrap_or_else(|| StateDoc {
        lineage: plan.lineage,
        ..StateDoc::new()
    });
    // Record the refreshed facts first, so the next plan shows only new drift.
    if let Some(r) = &refreshed {
        let mut next = doc.clone();
        refresh::record(&mut next, &r.facts);
        if next.objects != doc.objects {
            backend
                .write(&lock, &mut next)
                .map_err(miette::Report::new)?;
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
        moves::carry_out(
            Some(&config),
            &config.root,
            backend.as_ref(),
            &lock,
            &mut doc,
            &renames,
        )?
    };
    let (graph, _) = step_graph(&plan);
    let site_config = config.clone();
    let ctx = Arc::new(Context::new(
        config,
        plan.changes.clone(),
        backend,
        lock,
        doc,
    ));
    let sink: Box<dyn Sink> = if args.json {
        Box::new(JsonSink::new(std::io::stdout()))
    } else {
        println!();
        Box::new(PlainSink::new(std::io::stdout()))
    };
    for m in &moved {
        if args.json {
            println!(
                "{}",
                serde_json::json!({"event": "moved", "from": m.from, "to": m.to, "points": m.points})
            );
        } else {
            println!("{}", moves::line(m));
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| miette!("cannot start the async runtime: {e}"))?;
    let cancel = Cancel::new();
    let report = rt.block_on(async {
        // A second interrupt stops at once: every finished step is in state already.
        if let Err(e) = cancel.on_signals(|| std::process::exit(130)) {
            tracing::warn!("cannot watch for interrupts: {e}");
        }
        // Running first replications watch this flag and stop before writing.
        let flag = ctx.cancel.clone();
        let watched = cancel.clone();
        tokio::spawn(async move {
            watched.cancelled().await;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        exec::walk(
            &graph,
            usize::from(args.parallelism),
            &cancel,
            sink.as_ref(),
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
        .await
    });
    drop(rt);
    // Release the state lock: site changes record their runs update by update.
    drop(ctx);

    let count = |f: fn(&Outcome) -> bool| report.count(f);
    let done = count(|o| o.is_done());
    let failed = count(|o| matches!(o, Outcome::Failed { .. }));
    let skipped = count(|o| matches!(o, Outcome::Skipped { .. }));
    let not_started = count(|o| matches!(o, Outcome::NotStarted | Outcome::Abandoned { .. }));
    let summary = plan.summary();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "event": "summary",
                "changes": graph.node_count(),
                "done": done,
                "failed": failed,
                "skipped": skipped,
                "not_started": not_started,
                "interrupted": report.interrupted,
            })
        );
    } else if report.all_done() {
        let moved = if summary.moved > 0 {
            format!("{} moved, ", summary.moved)
        } else {
            String::new()
        };
        println!(
            "\nApply complete: {moved}{} added, {} changed, {} destroyed.",
            summary.add, summary.change, summary.destroy
        );
    } else {
        println!(
            "\nApply {}: {} done, {failed} failed, {skipped} skipped, {not_started} not started.\nState records every finished step; `standby plan` shows what is left.",
            if report.interrupted {
                "interrupted"
            } else {
                "failed"
            },
            crate::human::count(done, "step")
        );
    }
    if !report.all_done() {
        return Ok(ExitCode::from(1));
    }
    if !plan.site_changes.is_empty() {
        let b = args.backend.open(site_config.backend.as_ref())?;
        let rec = crate::recovery::Recorder::new(Arc::from(b), "standby apply");
        let done = site::run(
            site_config,
            &plan.site_changes,
            rec,
            args.approve.clone(),
            args.json,
        )?;
        if !done {
            println!(
                "\nThe site change did not finish: the state records how far it got (`standby status`); fix the cause and apply again."
            );
            return Ok(ExitCode::from(1));
        }
        println!("\nSite changes complete.");
    }
    Ok(ExitCode::SUCCESS)
}

/// `apply --refresh-only`: show drift, ask, and record the facts in one write.
fn refresh_only(
    auto_approve: bool,
    config: &crate::model::Config,
    backend: &dyn crate::state::Backend,
    lock: &crate::state::StateLock,
    current: Option<StateDoc>,
) -> miette::Result<ExitCode> {
    let Some(mut doc) = current else {
        println!("No state yet: nothing to refresh.");
        return Ok(ExitCode::SUCCESS);
    };
    let (facts, notes) = refresh::observe(config, &doc);
    let found = refresh::drift(&doc, &facts);
    refresh::print_drift(&found, &notes);
    let mut next = doc.clone();
    refresh::record(&mut next, &facts);
    if next.objects == doc.objects {
        return Ok(ExitCode::SUCCESS);
    }
    if !auto_approve && !confirmed()? {
        return Ok(ExitCode::from(1));
    }
    next.serial = doc.serial;
    doc = next;
    backend.write(lock, &mut doc).map_err(miette::Report::new)?;
    println!(
        "Recorded the refreshed facts in state (serial {}).",
        doc.serial
    );
    Ok(ExitCode::SUCCESS)
}

/// Protections the plan deletes or replaces (their points are destroyed).
fn destroyed_protections(plan: &Plan) -> Vec<&Address> {
    plan.changes
        .iter()
        .filter(|c| c.kind == Kind::Protection)
        .filter(|c| matches!(c.action, Action::Delete | Action::Replace { .. }))
        .map(|c| &c.address)
        .collect()
}

/// Ask for `yes` on the terminal; refuse when stdin is not one.
fn confirmed() -> miette::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(miette!(
            help = "review the plan above, then run `standby apply --auto-approve`; or save it with `standby plan --out FILE` and run `standby apply FILE`",
            "stdin is not a terminal, so apply cannot ask for confirmation; nothing was changed"
        ));
    }
    print!("\nDo you want to perform these actions? Only 'yes' will be accepted: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| miette!("cannot read the answer: {e}"))?;
    if answer.trim() == "yes" {
        Ok(true)
    } else {
        println!("Apply cancelled; nothing was changed.");
        Ok(false)
    }
}

/// The graph of apply steps. Deletes wait for the deletes of what depends
/// on them; creates and updates wait for the creates and updates of what
/// they depend on; the create half of a replace waits for its delete half.
/// Edges point from a step to a step it depends on.
fn step_graph(plan: &Plan) -> (DiGraph<ApplyStep, ()>, HashMap<(Address, bool), NodeIndex>) {
    let index_of: HashMap<&Address, usize> = plan
        .changes
        .iter()
        .enumerate()
        .map(|(i, c)| (&c.address, i))
        .collect();
    let mut g = DiGraph::new();
    // Key: (address, is_delete).
    let mut nodes: HashMap<(Address, bool), NodeIndex> = HashMap::new();
    for s in plan.graph.apply_order(&plan.changes) {
        let Some(&change) = index_of.get(&s.address) else {
            continue;
        };
        let delete = s.op == StepOp::Delete;
        let n = g.add_node(ApplyStep {
            address: s.address.clone(),
            op: s.op,
            change,
        });
        nodes.insert((s.address, delete), n);
    }
    let pg = &plan.graph.graph;
    for e in pg.edge_indices() {
        let Some((a, b)) = pg.edge_endpoints(e) else {
            continue;
        };
        // `a` depends on `b`.
        let (a, b) = (&pg[a].address, &pg[b].address);
        if let (Some(da), Some(db)) = (nodes.get(&(a.clone(), true)), nodes.get(&(b.clone(), true)))
        {
            g.update_edge(*db, *da, ());
        }
        if let (Some(ca), Some(cb)) = (
            nodes.get(&(a.clone(), false)),
            nodes.get(&(b.clone(), false)),
        ) {
            g.update_edge(*ca, *cb, ());
        }
    }
    let pairs: Vec<(NodeIndex, NodeIndex)> = nodes
        .iter()
        .filter(|((_, delete), _)| !*delete)
        .filter_map(|((a, _), c)| Some((*c, *nodes.get(&(a.clone(), true))?)))
        .collect();
    for (create, delete) in pairs {
        g.update_edge(create, delete, ());
    }
    (g, nodes)
}
