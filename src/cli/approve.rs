//! `standby approve PLAN STEP`: approve a manual step of the plan's run in
//! progress; the waiting run sees it in the state and goes on.

use super::load_config;
use super::run_io::{find_plan, recorder, report_err};
use crate::recovery;
use crate::workspace::Workspace;
use miette::miette;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recovery plan (`shop` or `recovery_plan.shop`).
    #[arg(value_name = "PLAN")]
    pub plan: String,
    /// The manual step: its name, or GROUP.STEP when names repeat.
    #[arg(value_name = "STEP")]
    pub step: String,
    #[command(flatten)]
    pub backend: crate::cli::BackendArgs,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(&args.vars)?);
    let plan = find_plan(&ws, &args.plan)?;
    recovery::check_manual_step(plan, &args.step).map_err(|e| miette!(help = e.help(), "{e}"))?;
    let rec = recorder(&ws, &args.backend, "standby approve")?;
    let by = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        gethostname::gethostname().to_string_lossy()
    );
    let r = recovery::run::approve(&plan.addr, &args.step, &by, &rec).map_err(report_err)?;
    println!(
        "Approved step {} of {} for run {}.",
        args.step, plan.addr, r.run_id
    );
    Ok(ExitCode::SUCCESS)
}
