//! The timeline of a run: one entry per group, machine, restore, boot,
//! check and step, with start, end and outcome. Reports and RTO are
//! computed from it.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Instant;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A whole group: before steps, its machines, after steps.
    Group,
    /// One machine: restore, boot and checks.
    Machine,
    /// Restoring one disk of a machine from its point.
    Restore,
    Boot,
    Check,
    /// A `before`/`after` step of a group.
    Step,
    /// Stopping a source machine (planned failover).
    Shutdown,
    /// The final point of a planned failover.
    FinalPoint,
    /// Stopping and removing test replicas.
    Cleanup,
    /// Waiting for another command's state lock (not part of RTO).
    LockWait,
    /// Instant recovery after the checks (not part of RTO): a failover's
    /// background copy of a machine's disks, or what a test run served.
    Copy,
    /// Before this run (negative seconds): the interrupted attempts it
    /// continues, since the first one started (part of RTO).
    EarlierAttempts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    /// Not run: something it needs failed, or the run was interrupted.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: EntryKind,
    /// Group name, machine address, disk, check or step name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// RFC 3339 with fractions.
    pub started_at: String,
    pub ended_at: String,
    /// Seconds since the run started.
    pub start_seconds: f64,
    pub end_seconds: f64,
    pub outcome: Outcome,
    /// What was seen: check output, the error, what a step did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Entries of one run, appended from any thread.
pub struct Timeline {
    started: Instant,
    started_at: OffsetDateTime,
    entries: Mutex<Vec<Entry>>,
}

/// Where an entry is: its kind, name, group and machine.
#[derive(Debug, Clone)]
pub struct Subject {
    pub kind: EntryKind,
    pub name: String,
    pub group: Option<String>,
    pub machine: Option<String>,
}

impl Subject {
    pub fn new(kind: EntryKind, name: impl Into<String>) -> Subject {
        Subject {
            kind,
            name: name.into(),
            group: None,
            machine: None,
        }
    }

    pub fn group(mut self, g: &str) -> Subject {
        self.group = Some(g.to_string());
        self
    }

    pub fn machine(mut self, m: &str) -> Subject {
        self.machine = Some(m.to_string());
        self
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline {
            started: Instant::now(),
            started_at: OffsetDateTime::now_utc(),
            entries: Mutex::new(Vec::new()),
        }
    }

    pub fn started_at(&self) -> OffsetDateTime {
        self.started_at
    }

    /// Seconds since the run started.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Seconds from the run's start to `at` (negative before it).
    pub fn seconds_at(&self, at: Instant) -> f64 {
        match at.checked_duration_since(self.started) {
            Some(d) => d.as_secs_f64(),
            None => -(self.started.duration_since(at).as_secs_f64()),
        }
    }

    /// Record `what` that ran from `start` (seconds, from [`Timeline::now`]) until now.
    pub fn record(&self, what: Subject, start: f64, outcome: Outcome, detail: impl Into<String>) {
        let end = self.now();
        self.record_span(what, start, end, outcome, detail);
    }

    /// Record `what` that ran from `start` to `end` (seconds since the run started).
    pub fn record_span(
        &self,
        what: Subject,
        start: f64,
        end: f64,
        outcome: Outcome,
        detail: impl Into<String>,
    ) {
        let at = |s: f64| rfc3339(self.started_at + time::Duration::seconds_f64(s));
        let e = Entry {
            kind: what.kind,
            name: what.name,
            group: what.group,
            machine: what.machine,
            started_at: at(start),
            ended_at: at(end),
            start_seconds: round(start),
            end_seconds: round(end),
            outcome,
            detail: detail.into(),
        };
        if let Ok(mut v) = self.entries.lock() {
            v.push(e);
        }
    }

    /// Time `f`, record it, and pass its result on.
    pub fn timed<T, E: std::fmt::Display>(
        &self,
        what: Subject,
        f: impl FnOnce() -> Result<T, E>,
        detail: impl Fn(&T) -> String,
    ) -> Result<T, E> {
        let start = self.now();
        let r = f();
        match &r {
            Ok(v) => self.record(what, start, Outcome::Passed, detail(v)),
            Err(e) => self.record(what, start, Outcome::Failed, e.to_string()),
        }
        r
    }

    /// A thing that did not run.
    pub fn skipped(&self, what: Subject, why: impl Into<String>) {
        let now = self.now();
        self.record(what, now, Outcome::Skipped, why);
    }

    /// Every entry, in order of start.
    pub fn entries(&self) -> Vec<Entry> {
        let mut v = self.entries.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_by(|a, b| a.start_seconds.total_cmp(&b.start_seconds));
        v
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}
