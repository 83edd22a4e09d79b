//! The Markdown report: verdict, RTO/RPO against their limits, points
//! used, checks, timeline, failures. `drill` prints it.

use super::{Measure, Report};
use crate::recovery::timeline::{EntryKind, Outcome};

/// Durations in the one style every view uses (`crate::human::duration`).
fn secs(s: f64) -> String {
    crate::human::duration(std::time::Duration::from_secs_f64(s.max(0.0)))
}

fn measure(m: &Measure, limit_name: &str) -> String {
    let got = m.seconds.map_or("-".to_string(), secs);
    let limit = m.limit_seconds.map_or("-".to_string(), |l| {
        format!("{} ({limit_name})", secs(l as f64))
    });
    let verdict = match m.within {
        Some(true) => "within",
        Some(false) => "EXCEEDED",
        None => "-",
    };
    format!("{got} | {limit} | {verdict}")
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The detail worth a reader's eye: why something failed or was skipped,
/// and what a restore wrote; passing checks need none (report.json has it).
fn shown(e: &crate::recovery::timeline::Entry) -> String {
    match (e.outcome, e.kind) {
        (
            Outcome::Passed,
            EntryKind::Restore | EntryKind::Step | EntryKind::FinalPoint | EntryKind::LockWait,
        ) => crate::recovery::command::tail(&e.detail, 120),
        (Outcome::Passed, _) => String::new(),
        _ => crate::recovery::command::tail(&e.detail, 300),
    }
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Failed => "**FAILED**",
        Outcome::Skipped => "skipped",
    }
}

/// report.md as a terminal shows it: screenshots are links to their files
/// beside the report.
pub fn markdown(r: &Report) -> String {
    render(r, false)
}

/// report.md as written: screenshots embedded as PNG data, so the file
/// stands alone.
pub fn markdown_embedded(r: &Report) -> String {
    render(r, true)
}

fn render(r: &Report, embed: bool) -> String {
    let what = match r.kind.as_str() {
        "drill" => "Drill".to_string(),
        "failback" => "Failback".to_string(),
        kind => format!("{kind} failover"),
    };
    let mut o = format!(
        "# {what} of {}: {}\n\n",
        r.plan,
        if r.passed {
            "PASSED"
        } else if r.interrupted {
            "INTERRUPTED"
        } else {
            "FAILED"
        }
    );
    o.push_str(&format!(
        "Run `{}`, started {}, finished {}{}.\n\n",
        r.run_id,
        crate::human::time_str(&r.started_at),
        crate::human::time_str(&r.finished_at),
        if r.interrupted { " (interrupted)" } else { "" }
    ));
    o.push_str("| | measured | limit | |\n|---|---|---|---|\n");
    o.push_str(&format!("| RTO | {} |\n", measure(&r.rto, "max_rto")));
    o.push_str(&format!(
        "| RPO | {} |\n\n",
        measure(&r.rpo, "policy rpo_threshold")
    ));

    o.push_str("## Points used\n\n");
    if r.points.is_empty() {
        o.push_str("None.\n\n");
    } else {
        o.push_str(
            "| machine | point | created | consistency | age at start |\n|---|---|---|---|---|\n",
        );
        for p in &r.points {
            o.push_str(&format!(
                "| {} | `{}` | {} | {}{} | {} |\n",
                cell(&p.machine),
                &p.point[..p.point.len().min(12)],
                crate::human::time_str(&p.created),
                p.consistency,
                p.group
                    .as_ref()
                    .map(|g| format!(" (group {g})"))
                    .unwrap_or_default(),
                p.age_seconds.map_or("unknown".to_string(), secs)
            ));
        }
        o.push('\n');
    }

    let checks: Vec<_> = r.checks().collect();
    o.push_str(&format!(
        "## Checks ({} of {} passed)\n\n",
        checks
            .iter()
            .filter(|e| e.outcome == Outcome::Passed)
            .count(),
        checks.len()
    ));
    if !checks.is_empty() {
        o.push_str("| group | machine | check | result | detail |\n|---|---|---|---|---|\n");
        for e in checks {
            o.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                cell(e.group.as_deref().unwrap_or("-")),
                cell(e.machine.as_deref().unwrap_or("-")),
                cell(&e.name),
                outcome(e.outcome),
                cell(&shown(e))
            ));
        }
        o.push('\n');
    }

    o.push_str(&super::machines::markdown(&r.machines, embed));

    o.push_str("## Timeline\n\n| start | end | what | result | detail |\n|---|---|---|---|---|\n");
    for e in &r.timeline {
        let what = match e.kind {
            EntryKind::Group => format!("group {}", e.name),
            EntryKind::Machine => e.name.clone(),
            EntryKind::Restore => format!(
                "{} restore disk {}",
                e.machine.as_deref().unwrap_or(""),
                e.name
            ),
            EntryKind::Boot => format!("{} boot", e.name),
            EntryKind::Check => format!("{} check {}", e.machine.as_deref().unwrap_or(""), e.name),
            EntryKind::Step => {
                format!("group {} step {}", e.group.as_deref().unwrap_or(""), e.name)
            }
            EntryKind::Shutdown => format!("stop source {}", e.name),
            EntryKind::FinalPoint => format!("final point of {}", e.name),
            EntryKind::Cleanup => "cleanup".to_string(),
            EntryKind::LockWait => "waiting for the state lock (not counted in RTO)".to_string(),
            EntryKind::EarlierAttempts => {
                format!("interrupted attempts since run {} (counted in RTO)", e.name)
            }
            EntryKind::Copy => format!(
                "{} instant: {} (not counted in RTO)",
                e.machine.as_deref().unwrap_or(""),
                e.name
            ),
        };
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            secs(e.start_seconds),
            secs(e.end_seconds),
            cell(&what),
            outcome(e.outcome),
            cell(&shown(e))
        ));
    }
    o.push('\n');
    if !r.failures.is_empty() {
        o.push_str("## Failures\n\n");
        for f in &r.failures {
            o.push_str(&format!("- {}\n", f.replace('\n', " ")));
        }
        o.push('\n');
    }
    o
}
