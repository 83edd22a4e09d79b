//! `standby apply [PLANFILE]`: make the recorded state match the
//! configuration. Without PLANFILE it plans, shows the diff and asks; with
//! one it applies exactly that saved plan (refused when state or
//! configuration moved since). The work is [`crate::apply::run`]; this
//! command parses, renders its events and picks the exit code.

use crate::apply::{self, ApplyError, Event, Moved, Outcome, RefreshOutcome};
use crate::cli::load_config;
use crate::cli::plan::use_color;
use crate::cli::refresh;
use crate::exec::{JsonSink, PlainSink, Sink};
use crate::plan::render;
use crate::workspace::Workspace;
use miette::miette;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    let ws = Workspace::new(config).with_backend(Arc::from(backend));
    let sink: Box<dyn Sink> = if args.json {
        Box::new(JsonSink::new(std::io::stdout()))
    } else {
        Box::new(PlainSink::new(std::io::stdout()))
    };
    let ui = Terminal {
        json: args.json,
        color,
        refresh_only: args.refresh_only,
        sink,
    };
    if args.refresh_only {
        return Ok(
            match apply::refresh_only(&ws, !args.auto_approve, &ui).map_err(report)? {
                RefreshOutcome::NoState => {
                    println!("No state yet: nothing to refresh.");
                    ExitCode::SUCCESS
                }
                RefreshOutcome::Unchanged => ExitCode::SUCCESS,
                RefreshOutcome::Cancelled => ExitCode::from(1),
                RefreshOutcome::Recorded { serial } => {
                    println!("Recorded the refreshed facts in state (serial {serial}).");
                    ExitCode::SUCCESS
                }
            },
        );
    }
    let opts = apply::Options {
        saved: args.plan_file.clone(),
        ask: args.plan_file.is_none() && !args.auto_approve,
        parallelism: usize::from(args.parallelism),
        refresh: !args.no_refresh,
        allow_destroy: args.allow_destroy,
        allow_failover: args.allow_failover,
        allow_undrilled: args.allow_undrilled,
        approve: args.approve.clone(),
    };
    Ok(
        match apply::run(Arc::new(ws), &opts, &ui).map_err(report)? {
            Outcome::NoChanges | Outcome::Done { sites: None } => ExitCode::SUCCESS,
            Outcome::Cancelled | Outcome::StepsIncomplete => ExitCode::from(1),
            Outcome::Done { sites: Some(false) } => {
                println!(
                    "\nThe site change did not finish: the state records how far it got (`standby status`); fix the cause and apply again."
                );
                ExitCode::from(1)
            }
            Outcome::Done { sites: Some(true) } => {
                println!("\nSite changes complete.");
                ExitCode::SUCCESS
            }
        },
    )
}

/// An apply error for the terminal: its message and help.
pub(crate) fn report(e: ApplyError) -> miette::Report {
    match e {
        // Rendered as the state's own errors are everywhere else.
        ApplyError::State(e) => miette::Report::new(e),
        e => miette::Report::new(e),
    }
}

/// `protection.web -> protection.webserver: moved, 3 recovery points follow it`.
pub(crate) fn moved_line(m: &Moved) -> String {
    format!(
        "{} -> {}: moved, {} follow{} it",
        m.from,
        m.to,
        crate::human::count(m.points, "recovery point"),
        if m.points == 1 { "s" } else { "" }
    )
}

/// Apply's events as lines (or JSON lines with `--json`) on stdout.
struct Terminal {
    json: bool,
    color: bool,
    refresh_only: bool,
    sink: Box<dyn Sink>,
}

impl apply::Ui for Terminal {
    fn event(&self, e: Event<'_>) {
        match e {
            Event::Refreshed { notes, drift } if self.refresh_only => {
                refresh::print_drift(drift, notes)
            }
            Event::Refreshed { notes, drift } => {
                refresh::warn(notes);
                if self.json {
                    for d in drift {
                        println!(
                            "{}",
                            serde_json::json!({"event": "drift", "drift": d, "message": d.to_string()})
                        );
                    }
                }
            }
            Event::Plan { plan, changes } => {
                if !self.json {
                    print!("{}", render::text(plan, self.color));
                } else if !changes {
                    println!("{}", serde_json::json!({"event": "summary", "changes": 0}));
                }
            }
            Event::StepsStarting { moved } => {
                if !self.json {
                    println!();
                }
                for m in moved {
                    if self.json {
                        println!(
                            "{}",
                            serde_json::json!({"event": "moved", "from": m.from, "to": m.to, "points": m.points})
                        );
                    } else {
                        println!("{}", moved_line(m));
                    }
                }
            }
            Event::StepsDone {
                report,
                steps,
                summary,
            } => {
                let (done, failed, skipped, not_started) = apply::tally(report);
                if self.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "event": "summary",
                            "changes": steps,
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
            }
            Event::SiteChangesStarting => {
                if !self.json {
                    println!();
                }
            }
        }
    }

    fn sink(&self) -> &dyn Sink {
        self.sink.as_ref()
    }

    fn confirm(&self) -> Result<bool, ApplyError> {
        confirmed()
    }

    fn on_second_interrupt(&self, sites: bool) -> Box<dyn Fn() + Send> {
        if sites {
            Box::new(|| eprintln!("interrupted again: standby finishes what it started and exits"))
        } else {
            // Every finished step is in state already.
            Box::new(|| std::process::exit(130))
        }
    }
    fn approver(&self, given: Vec<String>) -> Box<dyn crate::recovery::Approver> {
        super::run_io::approver(given, false)
    }
    fn run_events(&self) -> std::sync::Arc<dyn crate::recovery::Sink> {
        std::sync::Arc::new(super::run_io::Lines::default())
    }
}

/// Ask for `yes` on the terminal; refuse when stdin is not one.
fn confirmed() -> Result<bool, ApplyError> {
    if !super::may_prompt() {
        return Err(ApplyError::CannotAsk);
    }
    print!("\nDo you want to perform these actions? Only 'yes' will be accepted: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(ApplyError::Answer)?;
    if answer.trim() == "yes" {
        Ok(true)
    } else {
        println!("Apply cancelled; nothing was changed.");
        Ok(false)
    }
}
