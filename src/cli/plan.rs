//! `standby plan`: load the configuration and state, diff them, print the
//! plan (text, Markdown or JSON) and optionally save it for `apply`.

use crate::plan::{self, DiffOptions, Plan, SavedPlan, render};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Terraform-like diff for terminals.
    Text,
    /// A pull-request comment: summary table, diff block, review notes.
    Markdown,
    /// The plan document (schema/plan.schema.json).
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How to print the plan.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print the plan as JSON (same as --format json).
    #[arg(long)]
    pub json: bool,
    /// Also save the plan to FILE, for a later `standby apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when nothing changes, 2 when something does (1 on error).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Mark the saved plan (--out) as allowed to carry out its site changes
    /// (`active_site`), so `apply FILE` needs no --allow-failover.
    #[arg(long)]
    pub allow_failover: bool,
    /// Show only what changed outside standby (drift in the vaults and sites), not the diff.
    #[arg(long, conflicts_with = "no_refresh")]
    pub refresh_only: bool,
    /// Do not read the vaults and sites first (no "Changes outside standby" section).
    #[arg(long)]
    pub no_refresh: bool,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
    #[command(flatten)]
    pub backend: crate::cli::BackendArgs,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    if args.refresh_only {
        return crate::cli::refresh::plan_refresh_only(
            &args.vars,
            &args.backend,
            args.detailed_exitcode,
        );
    }
    let color = use_color(&std::io::stdout());
    let color_err = use_color(&std::io::stderr());
    let Some(mut plan) = make_plan(&args.vars, &args.backend, color_err, !args.no_refresh)? else {
        return Ok(ExitCode::from(1));
    };
    plan.allow_failover = args.allow_failover;
    if let Some(out) = &args.out {
        SavedPlan::save(&plan, out).map_err(|e| miette::miette!("{e}"))?;
    }
    let format = if args.json { Format::Json } else { args.format };
    let rendered = match format {
        Format::Text => render::text(&plan, color),
        Format::Markdown => render::markdown(&plan),
        Format::Json => render::json(&plan),
    };
    print!("{rendered}");
    if let (Some(out), Format::Text) = (&args.out, format) {
        println!(
            "\nSaved the plan to {}. Apply exactly these changes with `standby apply {}`.",
            out.display(),
            out.display()
        );
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Load the configuration in the current directory and its state and diff
/// them; with `refresh`, first read the vaults and sites for drift.
/// Diagnostics go to stderr (coloured when `color`); `None` when the
/// configuration has errors or the plan would destroy a protected protection.
pub(crate) fn make_plan(
    vars: &crate::cli::VarArgs,
    backend: &crate::cli::BackendArgs,
    color: bool,
    refresh: bool,
) -> miette::Result<Option<Plan>> {
    let Some(config) = vars.load_or_report(color) else {
        return Ok(None);
    };
    let ws = crate::workspace::Workspace::new(config);
    let config = &ws.config;
    let backend = backend.open(config.backend.as_ref())?;
    let state = backend.read().map_err(miette::Report::new)?;
    // A lost state: a plan from nothing would propose recreating everything.
    if state.is_none()
        && let Some(backup) = backend.orphaned_backup()
    {
        return Err(miette::miette!(
            help = "restore the state from its backup; nothing was planned",
            "{}",
            crate::recovery::placement::lost_state(&backup)
        ));
    }
    if let Some(state) = &state {
        // Show now what apply would refuse: a move of what a run holds.
        let moves = plan::moves::effective(config, Some(state));
        crate::apply::moves::refuse_held(state, &moves).map_err(miette::Report::new)?;
    }
    let mut plan = plan::diff(config, state.as_ref(), &DiffOptions::default());
    if refresh {
        crate::cli::refresh::warn(&crate::plan::refresh::refusals(&ws, state.as_ref()));
    }
    if let Some(state) = state.as_ref().filter(|_| refresh) {
        let r = crate::plan::refresh::refresh(&ws, state);
        crate::cli::refresh::warn(&r.notes);
        plan::use_refreshed_facts(&mut plan, Some(state), &r.facts);
        plan.drift = r.drift;
    }
    let prevented = plan.prevented_destroys(config, state.as_ref());
    if !prevented.is_empty() {
        for p in &prevented {
            eprintln!("error: {p}");
        }
        return Ok(None);
    }
    Ok(Some(plan))
}

/// Colour only when `stream` is a terminal, and never with `--no-color` or
/// NO_COLOR set.
pub(crate) fn use_color(stream: &impl IsTerminal) -> bool {
    crate::cli::color_allowed() && stream.is_terminal()
}
