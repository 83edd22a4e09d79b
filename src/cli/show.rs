//! `standby show PLANFILE`: render a saved plan (`plan --out FILE`) for
//! review, e.g. as a pull-request comment from CI, without reading the
//! configuration, the state or the vaults.

use super::plan::{Format, use_color};
use crate::plan::{SavedPlan, render};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plan file written by `standby plan --out FILE`.
    #[arg(value_name = "PLANFILE")]
    pub plan_file: PathBuf,
    /// How to print the plan.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print the plan as JSON (same as --format json).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let saved = SavedPlan::load(&args.plan_file).map_err(|e| miette::miette!("{e}"))?;
    let plan = &saved.plan;
    let format = if args.json { Format::Json } else { args.format };
    let rendered = match format {
        Format::Text => render::text(plan, use_color(&std::io::stdout())),
        Format::Markdown => render::markdown(plan),
        Format::Json => render::json(plan),
    };
    print!("{rendered}");
    Ok(ExitCode::SUCCESS)
}
