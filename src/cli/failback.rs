//! `standby reprotect PLAN` and `standby failback PLAN`: the way home after
//! a committed failover. Thin: load, call `recovery::reprotect` /
//! `recovery::failback`, print, pick an exit code.

use super::failover::PlanArgs;
use super::load_config;
use super::run_io::{find_plan, recorder, report_err, with_cancel};
use crate::human::size as human;
use crate::recovery;
use crate::report::Report;
use crate::workspace::Workspace;
use std::path::PathBuf;
use std::process::ExitCode;

pub const REPROTECT_HELP: &str = "\
Needs a committed failover of PLAN (`standby failover planned PLAN`, then
`standby failover commit PLAN`). The vault is the meeting point of both
directions: a machine's points form one chain whatever site it runs at, so
the first reverse point is a delta holding only the blocks written at the DR
site since the failover point. Afterwards `standby replicate` (and
`--watch`) takes the machines' points from their DR disks until failback.";

pub const FAILBACK_HELP: &str = "\
Needs `standby reprotect PLAN` first. Stops the replicas at the DR site
(groups in reverse order; each machine's shutdown command runs with its DR
disks), takes the final reverse point, writes only the blocks that differ
onto the original disks at each machine's own site (a missing disk is
restored in full, and said so), starts the machines there in group order
with their checks and before/after/manual steps, then clears the failover
from the state: forward protection resumes without a full resync.
Interrupted or killed, run it again: it goes on from where it stopped.";

#[derive(Debug, clap::Args)]
pub struct ReprotectArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
}

#[derive(Debug, clap::Args)]
pub struct FailbackArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub run: super::failover::RunOptions,
    /// Also write report.json, junit.xml and report.md of the failback into DIR.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
}

pub fn reprotect(args: ReprotectArgs) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(&args.plan.vars)?);
    let plan = find_plan(&ws, &args.plan.plan)?.clone();
    let rec = recorder(&ws, &args.plan.backend, "standby reprotect")?;
    let addr = plan.addr.clone();
    let made =
        with_cancel(move |cancel| recovery::reprotect::reprotect(&ws, &plan, &rec, &cancel))?
            .map_err(report_err)?;
    for r in &made {
        println!(
            "{}: first reverse point {} ({}) stored {} of {} disk",
            r.machine,
            r.point.id.short(),
            r.point.consistency,
            human(r.point.stats.stored),
            human(r.disk_bytes),
        );
    }
    println!(
        "\nReprotected {addr}: its machines' points now come from the disks where they run. Fail back with `standby failback {}`.",
        recovery::run::plan_arg(&addr)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn failback(args: FailbackArgs) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(&args.plan.vars)?);
    let plan = find_plan(&ws, &args.plan.plan)?.clone();
    if args.run.point.is_some() {
        return Err(miette::miette!(
            help = "drop --point: a failback always uses the final reverse point it takes",
            "--point does not apply to a failback"
        ));
    }
    if args.run.instant {
        return Err(miette::miette!(
            help = "drop --instant: a failback writes only the changed blocks onto the machines' own disks and boots them there, so there is nothing to serve from the vault",
            "--instant does not apply to a failback"
        ));
    }
    let approvals = args.run.approvals(&plan)?;
    let rec = recorder(&ws, &args.plan.backend, "standby failback")?;
    let threshold = recovery::run::rpo_threshold(&ws, &plan);
    let result = with_cancel(move |cancel| {
        let sink = super::run_io::Lines::default();
        recovery::failback::failback(&ws, &plan, &*approvals, &rec, &cancel, &sink)
    })?
    .map_err(report_err)?;
    if let Some(dir) = &args.report_dir {
        Report::of_failback(&result, threshold)
            .write_to(dir)
            .map_err(|e| miette::miette!("cannot write the report into {}: {e}", dir.display()))?;
    }
    let name = recovery::run::plan_arg(&result.record.plan);
    if result.passed {
        println!(
            "\nFailback of {} complete: its machines run at their own site again and forward protection resumes (`standby replicate`).",
            result.record.plan
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "\nfailback of {} FAILED{}:",
            result.record.plan,
            if result.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        for f in &result.failures {
            eprintln!("  - {f}");
        }
        eprintln!(
            "Fix the cause and run `standby failback {name}` again: it goes on from where it stopped."
        );
        Ok(ExitCode::from(1))
    }
}
