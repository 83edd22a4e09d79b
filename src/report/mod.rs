//! Drill and failover reports: one [`Report`] value built from a run, and
//! three views of it: JSON (`schema/report.schema.json`), JUnit XML (one
//! test case per check and step, so CI shows which failed) and Markdown.

mod junit;
pub mod machines;
mod markdown;

pub use junit::junit;
pub use markdown::{markdown, markdown_embedded};

use crate::recovery::run::{DrillResult, RunResult};
use crate::recovery::timeline::{Entry, EntryKind, Outcome};
use serde::Serialize;
use std::path::Path;
use time::OffsetDateTime;

/// The report format this build writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format_version: u32,
    /// `drill`, or the failover kind: `test`, `planned`, `unplanned`.
    pub kind: String,
    pub plan: String,
    pub run_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub passed: bool,
    pub interrupted: bool,
    pub rto: Measure,
    pub rpo: Measure,
    pub points: Vec<PointReport>,
    pub timeline: Vec<Entry>,
    pub failures: Vec<String>,
    /// Drills: how the cleanup went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<CleanupReport>,
    /// Machines run as VMs: accelerator, boot time, checks, console,
    /// screenshot (`machines.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<machines::MachineReport>,
}

/// A measured time against its limit.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    pub seconds: Option<f64>,
    /// RTO: the drill's `max_rto`; RPO: the smallest policy `rpo_threshold`.
    pub limit_seconds: Option<u64>,
    /// Whether `seconds` is within the limit; None when either is unknown.
    pub within: Option<bool>,
}

impl Measure {
    fn new(seconds: Option<f64>, limit_seconds: Option<u64>) -> Measure {
        let within = match (seconds, limit_seconds) {
            (Some(s), Some(l)) => Some(s <= l as f64),
            _ => None,
        };
        Measure {
            seconds: seconds.map(|s| (s * 1000.0).round() / 1000.0),
            limit_seconds,
            within,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PointReport {
    pub machine: String,
    pub vault: String,
    pub point: String,
    pub created: String,
    pub consistency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Age of the point when the run started.
    /// Age at the run's start; None when the point's time cannot be read
    /// (never reported as 0).
    pub age_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CleanupReport {
    pub passed: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Report {
    /// The report of a failover run.
    pub fn of_run(run: &RunResult, rpo_threshold: Option<u64>) -> Report {
        let points = run
            .points
            .iter()
            .map(|(m, c)| PointReport {
                machine: m.to_string(),
                vault: c.vault.to_string(),
                point: c.point.id.hex(),
                created: c.point.created.clone(),
                consistency: c.point.consistency.to_string(),
                group: c.point.group.clone(),
                age_seconds: c.point.created_at().map(|t| {
                    ((run.started_at - t).as_seconds_f64().max(0.0) * 1000.0).round() / 1000.0
                }),
            })
            .collect();
        Report {
            format_version: FORMAT_VERSION,
            kind: run.record.kind.as_str().to_string(),
            plan: run.record.plan.to_string(),
            run_id: run.record.run_id.clone(),
            started_at: rfc3339(run.started_at),
            finished_at: rfc3339(run.finished_at),
            passed: run.passed,
            interrupted: run.interrupted,
            rto: Measure::new(run.rto_seconds, None),
            rpo: Measure::new(run.rpo_seconds(), rpo_threshold),
            points,
            timeline: run.timeline.entries(),
            failures: run.failures.clone(),
            cleanup: None,
            machines: machines::of_run(run),
        }
    }

    /// The report of a failback (its run is the failover run it ends).
    pub fn of_failback(run: &RunResult, rpo_threshold: Option<u64>) -> Report {
        let mut r = Report::of_run(run, rpo_threshold);
        r.kind = "failback".into();
        r
    }

    /// The report of a drill.
    pub fn of_drill(d: &DrillResult) -> Report {
        let mut r = Report::of_run(&d.run, d.rpo_threshold_seconds);
        r.kind = "drill".into();
        r.finished_at = rfc3339(d.finished_at);
        r.passed = d.passed;
        r.rto = Measure::new(d.run.rto_seconds, d.max_rto_seconds);
        if r.rto.within == Some(false) {
            r.failures.push(format!(
                "RTO {:.1}s exceeds max_rto {}s",
                d.run.rto_seconds.unwrap_or(0.0),
                d.max_rto_seconds.unwrap_or(0)
            ));
        }
        r.cleanup = Some(CleanupReport {
            passed: d.cleanup_error.is_none(),
            detail: d.cleanup_error.clone().unwrap_or_default(),
        });
        if let Some(e) = &d.cleanup_error {
            r.failures.push(format!("cleanup: {e}"));
        }
        r
    }

    /// Check entries, in timeline order.
    pub fn checks(&self) -> impl Iterator<Item = &Entry> {
        self.timeline.iter().filter(|e| e.kind == EntryKind::Check)
    }

    pub fn failed_checks(&self) -> usize {
        self.checks()
            .filter(|e| e.outcome == Outcome::Failed)
            .count()
    }

    /// Write `report.json`, `junit.xml` and `report.md` into `dir`.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        json.push(b'\n');
        write_atomic(&dir.join("report.json"), &json)?;
        write_atomic(&dir.join("junit.xml"), junit(self).as_bytes())?;
        for m in &self.machines {
            if let (Some(png), Some(name)) = (&m.png, &m.screenshot) {
                write_atomic(&dir.join(name), png)?;
            }
        }
        write_atomic(&dir.join("report.md"), markdown_embedded(self).as_bytes())?;
        Ok(())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
