//! `standby drill PLAN|--due`: a test failover, every check, cleanup
//! (always), RTO/RPO measured and recorded; reports into --report-dir; the
//! Markdown summary on stdout. Exit 1 when a check failed or RTO exceeded
//! `max_rto`.

use super::failover::RunOptions;
use super::load_config;
use super::run_io::{find_plan, recorder, report_err, with_cancel};
use crate::model::RecoveryPlan;
use crate::recovery::{self, PointChoice};
use crate::report::{self, Report};
use crate::workspace::Workspace;
use miette::miette;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recovery plan to drill (`shop` or `recovery_plan.shop`).
    #[arg(
        value_name = "PLAN",
        required_unless_present = "due",
        conflicts_with = "due"
    )]
    pub plan: Option<String>,
    /// Drill every plan whose `drill { schedule }` is due (never drilled, or
    /// the last drill is older than the schedule's interval).
    #[arg(long)]
    pub due: bool,
    /// Write report.json, junit.xml and report.md here (with --due: one
    /// subdirectory per plan).
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunOptions,
    #[command(flatten)]
    pub backend: crate::cli::BackendArgs,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let ws = Arc::new(Workspace::new(load_config(&args.vars)?));
    let cfg = &ws.config;
    let rec = recorder(&ws, &args.backend, "standby drill")?;
    let plans: Vec<RecoveryPlan> = match &args.plan {
        Some(name) => vec![find_plan(&ws, name)?.clone()],
        None => {
            let doc = rec.read().map_err(miette::Report::new)?;
            let now = time::OffsetDateTime::now_utc();
            recovery::run::due(cfg, doc.as_ref(), now)
                .into_iter()
                .cloned()
                .collect()
        }
    };
    if plans.is_empty() {
        println!("No drill is due.");
        return Ok(ExitCode::SUCCESS);
    }
    let choice = args.run.choice(PointChoice::Latest)?;
    let mut all_passed = true;
    let many = args.plan.is_none();
    for plan in plans {
        let approvals = args.run.approvals(&plan)?;
        let dir = args.report_dir.as_ref().map(|d| {
            if many {
                d.join(plan.addr.instance_name())
            } else {
                d.clone()
            }
        });
        let (ws2, rec2, choice2) = (ws.clone(), rec.clone(), choice.clone());
        let plan2 = plan.clone();
        let instant = args.run.instant || plan.drill.as_ref().is_some_and(|d| d.instant);
        let result = with_cancel(move |cancel| {
            let sink = super::run_io::Lines::default();
            recovery::run::drill_with(
                &ws2,
                &plan2,
                &choice2,
                instant,
                &*approvals,
                &rec2,
                &cancel,
                &sink,
            )
        })?;
        let result = match result {
            Ok(r) => r,
            Err(e) if many => {
                all_passed = false;
                eprintln!("error: drill of {}: {:?}", plan.addr, report_err(e));
                continue;
            }
            Err(e) => return Err(report_err(e)),
        };
        let report = Report::of_drill(&result);
        if let Some(dir) = &dir {
            report
                .write_to(dir)
                .map_err(|e| miette!("cannot write the report into {}: {e}", dir.display()))?;
        }
        println!("\n{}", report::markdown(&report));
        if let Some(dir) = &dir {
            println!("Reports written to {}.", dir.display());
        }
        all_passed &= result.passed;
        if result.run.interrupted {
            break;
        }
    }
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
