//! `standby failover test|planned|unplanned|cleanup|commit PLAN`, and the
//! arguments `drill`, `reprotect` and `failback` share with it.

use super::load_config;
use super::run_io::{find_plan, recorder, report_err, with_cancel};
use crate::model::RecoveryPlan;
use crate::recovery::{self, Approver, Cleaned, PointChoice};
use crate::report::Report;
use crate::state::RunKind;
use crate::workspace::Workspace;
use miette::miette;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Bring the plan's replicas up in isolation (a sandbox); the source and its replication go on untouched.
    #[command(mut_arg("point", |a| a.help(TEST_POINT_HELP)))]
    Test(RunArgs),
    /// Stop the source machines, take a final point, and fail over from it: no data lost.
    #[command(mut_arg("point", |a| a.hide(true)))]
    Planned(RunArgs),
    /// Fail over with the source assumed gone, from the chosen points.
    Unplanned(RunArgs),
    /// Stop and remove the replicas of the plan's test failover.
    Cleanup(PlanArgs),
    /// Make the plan's completed failover final.
    Commit(PlanArgs),
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The recovery plan (`shop` or `recovery_plan.shop`).
    #[arg(value_name = "PLAN")]
    pub plan: String,
    #[command(flatten)]
    pub backend: crate::cli::BackendArgs,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub run: RunOptions,
    /// Also write report.json, junit.xml and report.md of the run into DIR.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
}

/// `--point` of a test failover or drill: the source runs on, nothing is lost.
pub(crate) const TEST_POINT_HELP: &str = "Which point to test from: latest (the default), latest-app, \
a point id, or an RFC 3339 time (the newest point at or before it)";

/// Options of anything that runs a plan (failover, drill).
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Which point to fail over to: latest, latest-app, a point id, or an
    /// RFC 3339 time (the newest point at or before it). Default: the latest
    /// app-consistent point where the policy takes them, else the latest.
    #[arg(long, value_name = "POINT")]
    pub point: Option<String>,
    /// Approve manual step STEP (or GROUP.STEP) in advance; repeatable.
    #[arg(long = "approve", value_name = "STEP")]
    pub approve: Vec<String>,
    /// When not on a terminal, wait for `standby approve PLAN STEP` at a
    /// manual step (up to its timeout) instead of failing.
    #[arg(long)]
    pub wait_for_approval: bool,
    /// Instant recovery (VMs at qemu sites): boot each VM at once from its
    /// disks served out of the vault over NBD. A failover then copies the
    /// disks to their final place while the VM runs and finishes when the
    /// copy has; a test failover or drill never copies them whole.
    #[arg(long)]
    pub instant: bool,
}

impl RunOptions {
    pub fn choice(&self, default: PointChoice) -> miette::Result<PointChoice> {
        match &self.point {
            None => Ok(default),
            Some(s) => s.parse().map_err(|e| miette!("--point: {e}")),
        }
    }

    pub fn approvals(&self, plan: &RecoveryPlan) -> miette::Result<Box<dyn Approver>> {
        for a in &self.approve {
            recovery::check_manual_step(plan, a)
                .map_err(|e| miette!(help = e.help(), "--approve {a}: {e}"))?;
        }
        Ok(super::run_io::approver(
            self.approve.clone(),
            self.wait_for_approval,
        ))
    }
}

pub fn run(cmd: Command) -> miette::Result<ExitCode> {
    match cmd {
        Command::Test(a) => start(a, RunKind::Test),
        Command::Planned(a) => start(a, RunKind::Planned),
        Command::Unplanned(a) => start(a, RunKind::Unplanned),
        Command::Cleanup(a) => cleanup(a),
        Command::Commit(a) => commit(a),
    }
}

fn start(args: RunArgs, kind: RunKind) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(&args.plan.vars)?);
    let plan = find_plan(&ws, &args.plan.plan)?.clone();
    let default = if kind == RunKind::Unplanned {
        PointChoice::PreferApp
    } else {
        PointChoice::Latest
    };
    if kind == RunKind::Planned && args.run.point.is_some() {
        return Err(miette!(
            help = "drop --point: a planned failover always uses the final point it takes",
            "--point does not apply to a planned failover"
        ));
    }
    let choice = args.run.choice(default)?;
    let approvals = args.run.approvals(&plan)?;
    let rec = recorder(
        &ws,
        &args.plan.backend,
        &format!("standby failover {}", kind.as_str()),
    )?;
    let threshold = recovery::run::rpo_threshold(&ws, &plan);
    let instant = args.run.instant;
    let result = with_cancel(move |cancel| {
        let sink = super::run_io::Lines::default();
        recovery::run::failover_with(
            &ws,
            &plan,
            kind,
            &choice,
            instant,
            &*approvals,
            &rec,
            &cancel,
            &sink,
        )
    })?
    .map_err(report_err)?;
    let report = Report::of_run(&result, threshold);
    if let Some(dir) = &args.report_dir {
        report
            .write_to(dir)
            .map_err(|e| miette!("cannot write the report into {}: {e}", dir.display()))?;
    }
    let name = recovery::run::plan_arg(&result.record.plan);
    if result.passed {
        if let Some(line) = instant_times(&result) {
            println!("\n{line}");
        }
        match kind {
            RunKind::Test => println!(
                "\nTest failover of {} is up (run {}). Remove it with `standby failover cleanup {name}`.",
                result.record.plan, result.record.run_id
            ),
            _ => println!(
                "\nFailover of {} complete (run {}). Make it final with `standby failover commit {name}`.",
                result.record.plan, result.record.run_id
            ),
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "\n{} failover of {} FAILED (run {}{}):",
            kind.as_str(),
            result.record.plan,
            result.record.run_id,
            if result.interrupted {
                ", interrupted"
            } else {
                ""
            }
        );
        for f in &result.failures {
            eprintln!("  - {f}");
        }
        if kind == RunKind::Test {
            eprintln!("Remove what it started with `standby failover cleanup {name}`.");
        } else {
            eprintln!(
                "The state records where each machine is (`standby status`); fix the cause and run the failover again."
            );
        }
        Ok(ExitCode::from(1))
    }
}

/// An instant run's two times: RTO (checks passing) and, for a failover,
/// when the background copy ended. None without `copy` entries.
fn instant_times(r: &recovery::RunResult) -> Option<String> {
    use crate::recovery::timeline::EntryKind;
    let copies: Vec<_> = r
        .timeline
        .entries()
        .into_iter()
        .filter(|e| e.kind == EntryKind::Copy)
        .collect();
    if copies.is_empty() {
        return None;
    }
    let rto = r
        .rto_seconds
        .map_or_else(|| "unknown".to_string(), |s| format!("{s:.1}s"));
    let copied = copies.iter().all(|e| e.name == "disks");
    // A rerun's RTO counts from the first interrupted attempt's start (its
    // `earlier_attempts` entry starts that long before this run): the copy's
    // end is told from there too.
    let carried = r
        .timeline
        .entries()
        .iter()
        .filter(|e| e.kind == EntryKind::EarlierAttempts)
        .map(|e| -e.start_seconds)
        .fold(0.0, f64::max);
    let end = copies.iter().map(|e| e.end_seconds).fold(0.0, f64::max) + carried;
    let since = if carried > 0.0 {
        " (both from the first attempt's start)"
    } else {
        ""
    };
    Some(if copied {
        format!(
            "Instant recovery: RTO {rto} (checks passing); the background copy ended at {end:.1}s{since}."
        )
    } else {
        format!(
            "Instant recovery: RTO {rto} (checks passing); the disks stay in the vault (test run)."
        )
    })
}

fn cleanup(args: PlanArgs) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(&args.vars)?);
    let plan = find_plan(&ws, &args.plan)?;
    let rec = recorder(&ws, &args.backend, "standby failover cleanup")?;
    match recovery::run::cleanup(&ws, plan, &rec, None).map_err(report_err)? {
        Cleaned::Nothing => println!("{} has no test failover to clean up.", plan.addr),
        Cleaned::Done { run_id, machines } => println!(
            "Cleaned up test failover {run_id} of {}: {} stopped, sandbox removed.",
            plan.addr,
            crate::human::count(machines, "machine")
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn commit(args: PlanArgs) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(&args.vars)?);
    let plan = find_plan(&ws, &args.plan)?;
    let rec = recorder(&ws, &args.backend, "standby failover commit")?;
    let r = recovery::run::commit(&plan.addr, &rec).map_err(report_err)?;
    println!(
        "Committed the {} failover of {} (run {}): its machines run at {}.",
        r.kind.as_str(),
        r.plan,
        r.run_id,
        sites(&r)
    );
    Ok(ExitCode::SUCCESS)
}

fn sites(r: &crate::state::RunRecord) -> String {
    let mut s: Vec<&str> = r.machines.values().map(|m| m.site.as_str()).collect();
    s.sort();
    s.dedup();
    s.join(", ")
}
