//! What the watch service knows about each protection, and its rendering
//! in the Prometheus text exposition format for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use time::OffsetDateTime;

/// Per-protection figures.
#[derive(Debug, Clone, Default)]
pub struct ProtectionFigures {
    pub rpo_threshold_seconds: u64,
    /// Creation instant of the newest point, when one is known.
    pub newest: Option<OffsetDateTime>,
    /// Points in the vault (None until the vault was first listed).
    pub points: Option<u64>,
    /// Sealed bytes written by points this process took.
    pub bytes_replicated: u64,
    pub failures: u64,
    pub points_taken: u64,
    /// VM disks whose point could not trust changed-block tracking and
    /// read the whole disk (points this process took).
    pub cbt_fallbacks: u64,
    /// Its machine runs somewhere its protection does not capture (failed
    /// over and not reprotected).
    pub unprotected: bool,
    /// This service holds the lease of the protection's batch.
    pub lease_held: bool,
}

/// Shared between the scheduler threads and the HTTP server.
#[derive(Debug, Default)]
pub struct Metrics {
    figures: Mutex<BTreeMap<String, ProtectionFigures>>,
    /// Set once shutdown began: `/healthz` answers 503 from then on.
    pub stopping: AtomicBool,
    /// Scheduler threads that should be running, and those that are.
    pub expected_workers: AtomicUsize,
    pub live_workers: AtomicUsize,
    /// Live services sharing the work (by their heartbeats), and the
    /// batch leases this one holds.
    pub services: AtomicUsize,
    pub leases_held: AtomicUsize,
}

impl Metrics {
    /// Change one protection's figures.
    pub fn update(&self, protection: &str, f: impl FnOnce(&mut ProtectionFigures)) {
        let mut g = self.figures.lock().unwrap_or_else(|p| p.into_inner());
        f(g.entry(protection.to_string()).or_default());
    }

    pub fn snapshot(&self) -> BTreeMap<String, ProtectionFigures> {
        self.figures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The loop runs: not shutting down and every scheduler thread alive.
    pub fn healthy(&self) -> bool {
        !self.stopping.load(Ordering::Relaxed)
            && self.live_workers.load(Ordering::Relaxed)
                >= self.expected_workers.load(Ordering::Relaxed)
    }

    /// The Prometheus text format, ages judged at `now`.
    pub fn render(&self, now: OffsetDateTime) -> String {
        let figs = self.snapshot();
        let mut out = String::new();
        type Get = fn(&ProtectionFigures, OffsetDateTime) -> Option<f64>;
        let families: [(&str, &str, &str, Get); 9] = [
            (
                "standby_lease_held",
                "gauge",
                "1 when this service holds the lease of the protection's batch and so replicates it; 0 when another service does.",
                |f, _| Some(if f.lease_held { 1.0 } else { 0.0 }),
            ),
            (
                "standby_protection_active",
                "gauge",
                "1 when the protection captures the disks where its machine runs; 0 when the machine runs elsewhere unprotected (failed over, not reprotected).",
                |f, _| Some(if f.unprotected { 0.0 } else { 1.0 }),
            ),
            (
                "standby_newest_point_age_seconds",
                "gauge",
                "Age of the protection's newest recovery point (absent until one exists).",
                |f, now| f.newest.map(|t| (now - t).as_seconds_f64().max(0.0)),
            ),
            (
                "standby_rpo_threshold_seconds",
                "gauge",
                "The RPO threshold of the protection's policy.",
                |f, _| Some(f.rpo_threshold_seconds as f64),
            ),
            (
                "standby_points",
                "gauge",
                "Recovery points of the protection in its vault.",
                |f, _| f.points.map(|n| n as f64),
            ),
            (
                "standby_bytes_replicated_total",
                "counter",
                "Sealed bytes written to the vault by points this process took.",
                |f, _| Some(f.bytes_replicated as f64),
            ),
            (
                "standby_replication_failures_total",
                "counter",
                "Capture attempts that failed (each is retried with backoff).",
                |f, _| Some(f.failures as f64),
            ),
            (
                "standby_points_taken_total",
                "counter",
                "Recovery points this process took.",
                |f, _| Some(f.points_taken as f64),
            ),
            (
                "standby_cbt_fallbacks_total",
                "counter",
                "VM disk points that could not trust changed-block tracking (no or inconsistent bitmap, VM restarted on a raw disk, disk resized, VM moved) and read the whole disk; `points --json` says why.",
                |f, _| Some(f.cbt_fallbacks as f64),
            ),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (prot, f) in &figs {
                if let Some(v) = get(f, now) {
                    let _ = writeln!(out, "{name}{{protection=\"{}\"}} {v}", escape(prot));
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP standby_fleet_services Live replication services sharing this configuration's work (by their heartbeats in the vault).\n# TYPE standby_fleet_services gauge\nstandby_fleet_services {}",
            self.services.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP standby_leases_held Batch leases (consistency groups or lone protections) this service holds.\n# TYPE standby_leases_held gauge\nstandby_leases_held {}",
            self.leases_held.load(Ordering::Relaxed)
        );
        let c = crate::store::counts();
        let _ = writeln!(
            out,
            "# HELP standby_store_requests_total Object-store requests this process made, by kind.\n# TYPE standby_store_requests_total counter"
        );
        for (op, n) in c.by_op() {
            let _ = writeln!(out, "standby_store_requests_total{{op=\"{op}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP standby_store_bytes_total Object bytes this process read (in) and wrote (out).\n# TYPE standby_store_bytes_total counter\nstandby_store_bytes_total{{direction=\"in\"}} {}\nstandby_store_bytes_total{{direction=\"out\"}} {}",
            c.bytes_in, c.bytes_out
        );
        let _ = writeln!(
            out,
            "# HELP standby_up 1 while the replication loop runs.\n# TYPE standby_up gauge\nstandby_up {}",
            u8::from(self.healthy())
        );
        out
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_samples() {
        let m = Metrics::default();
        let now = OffsetDateTime::now_utc();
        m.update("protection.db", |f| {
            f.rpo_threshold_seconds = 900;
            f.newest = Some(now - time::Duration::seconds(30));
            f.points = Some(2);
            f.bytes_replicated = 1234;
            f.cbt_fallbacks = 2;
        });
        let text = m.render(now);
        assert!(
            text.contains("# TYPE standby_newest_point_age_seconds gauge"),
            "{text}"
        );
        assert!(
            text.contains("standby_newest_point_age_seconds{protection=\"protection.db\"} 30"),
            "{text}"
        );
        assert!(text.contains("standby_rpo_threshold_seconds{protection=\"protection.db\"} 900"));
        assert!(text.contains("standby_bytes_replicated_total{protection=\"protection.db\"} 1234"));
        assert!(text.contains("standby_cbt_fallbacks_total{protection=\"protection.db\"} 2"));
        assert!(
            text.contains("standby_replication_failures_total{protection=\"protection.db\"} 0")
        );
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
        // The process's object-store cost, one sample per kind.
        assert!(text.contains("# TYPE standby_store_requests_total counter"));
        for op in crate::store::counting::OPS {
            assert!(
                text.contains(&format!("standby_store_requests_total{{op=\"{op}\"}} ")),
                "{text}"
            );
        }
        assert!(text.contains("standby_store_bytes_total{direction=\"out\"} "));
    }
}
