//! `standby approve PLAN STEP`: approve a manual step of the plan's run in
//! progress; the waiting run sees it in the state and goes on.

use super::failover::{find_plan, manual_steps, recorder, report_err};
use super::load_config;
use crate::recovery;
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
    let cfg = load_config(&args.vars)?;
    let plan = find_plan(&cfg, &args.plan)?;
    let steps = manual_steps(plan);
    if !steps
        .iter()
        .any(|s| s == &args.step || s.ends_with(&format!(".{}", args.step)))
    {
        return Err(miette!(
            help = format!("its manual steps: {}", steps.join(", ")),
            "{} has no manual step {}",
            plan.addr,
            args.step
        ));
    }
    let rec = recorder(&cfg, &args.backend, "standby approve")?;
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
