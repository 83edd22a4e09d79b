//! `standby status [--json]`: each protection's newest point against its
//! RPO threshold and each recovery plan's last drill against its schedule.
//! Exit 0 when every protection is OK, 2 when any is past its threshold,
//! 1 when the configuration, a vault or the state cannot be read.

use super::load_config;
use crate::human::size as human;
use crate::status::{self, DrillState, Level, PlanStatus, ProtectionStatus};
use crate::workspace::Workspace;
use miette::{IntoDiagnostic, miette};
use owo_colors::OwoColorize;
use std::io::IsTerminal;
use std::process::ExitCode;
use time::OffsetDateTime;

/// Shown after `standby status --help`.
pub const HELP: &str = "\
Levels: OK when the newest point is no older than the policy's rpo_threshold;
WARNING when older, up to twice the threshold; CRITICAL beyond that, or when
the protection has no point, or when its machine was recovered to a site
where it should run but its VM no longer does (status `down`: killed or
crashed there). A recovery plan is OVERDUE when its last drill is
older than its drill schedule's interval (\"never drilled\" when none is
recorded in the state).

Exit status: 0 every protection OK; 2 any protection WARNING or CRITICAL (past
its RPO threshold), so cron or CI can alert; 1 an error (configuration, vault
or state unreadable). Drill results are shown but do not change the exit
status.

STANDBY_NOW=<RFC 3339 instant> judges ages as of that instant instead of the
clock (tests use it; also answers \"what will status say at ...\").";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object on stdout (schema/status.schema.json).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backend: crate::cli::BackendArgs,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

/// The instant ages are judged at: STANDBY_NOW when set, else the clock.
fn now() -> miette::Result<OffsetDateTime> {
    match std::env::var("STANDBY_NOW") {
        Ok(s) if !s.is_empty() => {
            OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| miette!("STANDBY_NOW={s:?} is not an RFC 3339 instant: {e}"))
        }
        _ => Ok(crate::vault::clock::now()),
    }
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(&args.vars)?);
    let now = now()?;
    // Drill history: from the state wherever it is kept (local or `backend`).
    let backend = args.backend.open(ws.config.backend.as_ref())?;
    let state = backend.read().map_err(miette::Report::new)?;
    let backup = backend.orphaned_backup();
    let st =
        status::status(&ws, state.as_ref(), backup.as_deref(), now).map_err(|e| miette!("{e}"))?;
    let code = st.exit_code();
    let (prots, plans, placed) = (&st.protections, &st.plans, &st.placements);
    if args.json {
        let doc = serde_json::json!({
            "now": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "protections": prots,
            "recovery_plans": plans,
            "recoveries": placed,
            "exit_code": code,
            "requests": crate::operations::requests(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?);
    } else {
        let color = std::io::stdout().is_terminal() && crate::cli::color_allowed();
        print!("{}", render(prots, plans, color));
        print!("{}", render_placements(placed));
    }
    Ok(ExitCode::from(code))
}

/// Where recovered machines run, when any run is recorded.
fn render_placements(placed: &[status::Placement]) -> String {
    if placed.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n{:<24}  {:<20}  {:<16}  {:<10}  {:<10}  {:<9}  {:<12}  {}\n",
        "RECOVERED MACHINE", "RUNS AT", "FROM", "KIND", "PHASE", "STATUS", "PROTECTION", "RUN"
    );
    for p in placed {
        out.push_str(&format!(
            "{:<24}  {:<20}  {:<16}  {:<10}  {:<10}  {:<9}  {:<12}  {}\n",
            p.machine,
            if p.kind == "test" {
                format!("{} (test)", p.site)
            } else {
                p.site.clone()
            },
            p.from_site,
            p.kind,
            p.phase,
            p.status,
            match p.protection.as_str() {
                "reverse" => format!("<- {}", p.site),
                "forward" => format!("-> {}", p.site),
                other => other.to_string(),
            },
            p.run_id
        ));
    }
    out
}

/// A point's age: `-` without a point, `unknown` when its time cannot be read.
fn point_age(p: Option<&status::PointSummary>) -> String {
    match p {
        None => "-".into(),
        Some(p) => match p.age_seconds {
            None => "unknown".into(),
            Some(s) if s < 0.0 => "in the future".into(),
            Some(s) => secs_f64(s),
        },
    }
}

/// Ages in the one duration style (`crate::human::duration`); "-" when absent.
fn age(secs: Option<i64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 0 => "in the future".into(),
        Some(s) => crate::human::seconds(s),
    }
}

/// A measured duration (RTO) exactly as the drill report shows it.
fn secs_f64(s: f64) -> String {
    crate::human::duration(std::time::Duration::from_secs_f64(s.max(0.0)))
}

fn paint(text: String, level: Level, color: bool) -> String {
    if !color {
        return text;
    }
    match level {
        Level::Ok => text.green().to_string(),
        Level::Warning => text.yellow().to_string(),
        Level::Critical => text.red().bold().to_string(),
    }
}

fn render(prots: &[ProtectionStatus], plans: &[PlanStatus], color: bool) -> String {
    let mut out = String::new();
    if prots.is_empty() {
        out.push_str("No protections in the configuration.\n");
    } else {
        out.push_str(&format!(
            "{:<24}  {:<8}  {:>10}  {:>10}  {:>10}  {:>6}  {:>10}\n",
            "PROTECTION", "RPO", "NEWEST", "THRESHOLD", "NEWEST APP", "POINTS", "STORED"
        ));
        for p in prots {
            let level = format!("{:<8}", p.level.label());
            out.push_str(&format!(
                "{:<24}  {}  {:>10}  {:>10}  {:>10}  {:>6}  {:>10}\n",
                p.protection,
                paint(level, p.level, color),
                point_age(p.newest_point.as_ref()),
                age(Some(p.rpo_threshold_seconds as i64)),
                point_age(p.newest_app_point.as_ref()),
                p.points,
                human(p.stored_bytes),
            ));
        }
        for p in prots {
            if !p.future_points.is_empty() {
                out.push_str(&format!(
                    "  {}: {} dated in the future (a writer's clock ran ahead; not counted as newest)\n",
                    p.protection,
                    crate::human::count(p.future_points.len(), "point")
                ));
            }
            if let Some(why) = &p.unprotected {
                out.push_str(&format!("  {}: unprotected: {why}\n", p.protection));
            }
            if let (None, Some(h), false) = (&p.lease, &p.host, p.level == Level::Ok) {
                out.push_str(&format!(
                    "  {}: no service holds its lease; its site names host {h}: only a `replicate --watch` service there (or started with --host {h}) replicates it\n",
                    p.protection
                ));
            }
            if let Some(l) = &p.lease {
                out.push_str(&format!(
                    "  {}: replicated by service {} on {} (pid {}) since {}, renewed {} at {} (the holder's clock)\n",
                    p.protection,
                    l.service,
                    l.host,
                    l.pid,
                    crate::human::time_str(&l.since),
                    crate::human::count(l.renewals as usize, "time"),
                    crate::human::time_str(&l.renewed),
                ));
            }
        }
    }
    if !plans.is_empty() {
        out.push('\n');
        out.push_str(&format!(
            "{:<24}  {:<14}  {:>10}  {:>10}  {}\n",
            "RECOVERY PLAN", "DRILL", "LAST", "SCHEDULE", "RESULT"
        ));
        for p in plans {
            let level = match p.state {
                DrillState::Ok | DrillState::NotScheduled => Level::Ok,
                DrillState::Overdue | DrillState::NeverDrilled => Level::Warning,
                DrillState::Failed => Level::Critical,
            };
            let result = match &p.last_drill {
                None => "-".to_string(),
                Some(d) => {
                    let rto = d.rto_seconds.map(|s| format!(", RTO {}", secs_f64(s)));
                    format!(
                        "{}{}",
                        if d.passed { "passed" } else { "failed" },
                        rto.unwrap_or_default()
                    )
                }
            };
            out.push_str(&format!(
                "{:<24}  {}  {:>10}  {:>10}  {}\n",
                p.recovery_plan,
                paint(format!("{:<14}", p.state.label()), level, color),
                age(p.last_drill.as_ref().map(|d| d.age_seconds)),
                p.schedule.as_deref().unwrap_or("-"),
                result
            ));
        }
    }
    out
}
