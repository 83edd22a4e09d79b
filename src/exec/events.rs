//! What the walker reports while it runs ([`Event`]) and where it goes
//! ([`Sink`]): plain lines for people, or one JSON object per line for CI.

use serde::Serialize;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

/// One thing that happened to one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        step: String,
    },
    Finished {
        step: String,
        #[serde(serialize_with = "secs")]
        elapsed: Duration,
        /// What the step did, in a few words (may be empty).
        #[serde(skip_serializing_if = "String::is_empty")]
        detail: String,
    },
    Failed {
        step: String,
        #[serde(serialize_with = "secs")]
        elapsed: Duration,
        error: String,
    },
    /// The step stopped early because of an interrupt.
    Abandoned {
        step: String,
        #[serde(serialize_with = "secs")]
        elapsed: Duration,
        reason: String,
    },
    /// Not run because a step it depends on failed (or was skipped).
    Skipped {
        step: String,
        /// The failed step that caused it.
        cause: String,
    },
    /// Not started because the run was interrupted.
    NotStarted {
        step: String,
    },
    /// The first interrupt arrived: no new steps start.
    Interrupted {
        running: usize,
    },
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// Where events go. Called from the walker's task, one event at a time.
pub trait Sink: Send + Sync {
    fn event(&self, e: &Event);
}

/// Human-readable lines: `vault.main: creating...`, `... done (0.3s)`.
pub struct PlainSink<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> PlainSink<W> {
    pub fn new(out: W) -> Self {
        PlainSink {
            out: Mutex::new(out),
        }
    }
}

impl<W: Write + Send> Sink for PlainSink<W> {
    fn event(&self, e: &Event) {
        let line = match e {
            Event::Started { step } => format!("{step}: started"),
            Event::Finished {
                step,
                elapsed,
                detail,
            } if detail.is_empty() => format!("{step}: done ({:.1}s)", elapsed.as_secs_f64()),
            Event::Finished {
                step,
                elapsed,
                detail,
            } => format!("{step}: done, {detail} ({:.1}s)", elapsed.as_secs_f64()),
            Event::Failed {
                step,
                elapsed,
                error,
            } => format!(
                "{step}: FAILED after {:.1}s: {error}",
                elapsed.as_secs_f64()
            ),
            Event::Abandoned {
                step,
                elapsed,
                reason,
            } => format!(
                "{step}: abandoned after {:.1}s: {reason}",
                elapsed.as_secs_f64()
            ),
            Event::Skipped { step, cause } => format!("{step}: skipped ({cause} failed)"),
            Event::NotStarted { step } => format!("{step}: not started (interrupted)"),
            Event::Interrupted { running } => format!(
                "Interrupted: starting no new steps; waiting for {} to finish (interrupt again to stop at once; state stays true either way)",
                crate::human::count(*running, "running step")
            ),
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// One JSON object per line.
pub struct JsonSink<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> JsonSink<W> {
    pub fn new(out: W) -> Self {
        JsonSink {
            out: Mutex::new(out),
        }
    }
}

impl<W: Write + Send> Sink for JsonSink<W> {
    fn event(&self, e: &Event) {
        let mut v = serde_json::to_value(e).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            let now = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            o.insert("at".into(), now.into());
        }
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{v}");
            let _ = out.flush();
        }
    }
}

/// Keeps every event in memory (for callers that summarise afterwards).
#[derive(Default)]
pub struct Recorded {
    pub events: Mutex<Vec<Event>>,
}

impl Sink for Recorded {
    fn event(&self, e: &Event) {
        if let Ok(mut v) = self.events.lock() {
            v.push(e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_event_step_and_seconds() {
        let mut buf = Vec::new();
        {
            let sink = JsonSink::new(&mut buf);
            sink.event(&Event::Failed {
                step: "create protection.db".into(),
                elapsed: Duration::from_millis(1500),
                error: "boom".into(),
            });
        }
        let line = String::from_utf8(buf).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["event"], "failed");
        assert_eq!(v["step"], "create protection.db");
        assert_eq!(v["elapsed"], 1.5);
        assert_eq!(v["error"], "boom");
        assert!(v["at"].is_string());
    }
}
