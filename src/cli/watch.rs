//! `standby replicate --watch`: run the replication service (the `watch`
//! module) until SIGTERM or SIGINT, serving `/metrics` and `/healthz`.

use crate::model::{Config, Duration};
use crate::replication::Batch;
use crate::watch::{Service, Settings, http};
use crate::workspace::Workspace;
use miette::miette;
use std::net::SocketAddr;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

/// Shown after `standby replicate --help`.
pub const HELP: &str = "\
With --watch: crash-consistent points every crash_consistent_every and
app-consistent ones every app_consistent_every (instead of the crash point when
both are due), per consistency group; pruning by retention every --prune-every;
failed attempts retried with exponential backoff (1s doubling, jittered, capped
at --retry-max and the crash interval). A vault outage is logged and counted;
one point catches up when the vault is back. SIGTERM or SIGINT stops it with
exit 0: a capture in progress is abandoned before it writes a point (freeze and
thaw are never cut short), so no partial point is left.

Endpoints (--listen): GET /metrics in Prometheus text format, per protection:
standby_newest_point_age_seconds, standby_rpo_threshold_seconds, standby_points,
standby_bytes_replicated_total, standby_replication_failures_total,
standby_points_taken_total, standby_protection_active (0 while the machine runs
where its protection does not capture: failed over, not reprotected); and
standby_up. Every round re-reads the state: failovers, commits, reprotects and
failbacks are followed as they happen. GET /healthz answers 200 while the
loop runs and 503 once it stops; an RPO breach does not fail it (alert on the
metrics or on `standby status` exiting 2).";

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Keep running as a service: points on each policy's schedule, pruning, /metrics (see below).
    #[arg(long)]
    pub watch: bool,
    /// Where to serve /metrics (Prometheus) and /healthz (200 while the loop
    /// runs); a loopback address unless --listen-any.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Allow --listen on a non-loopback address (the endpoints have no authentication).
    #[arg(long)]
    pub listen_any: bool,
    /// How often to drop points past their policy's retention (with --watch).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub prune_every: Duration,
    /// Longest pause between retries of a failed capture (backoff doubles from 1s, jittered).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub retry_max: Duration,
    /// How long one storage request is retried before the attempt counts as failed.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub store_retry: Duration,
}

pub fn run(cfg: Config, batches: Vec<Batch>, args: &WatchArgs) -> miette::Result<ExitCode> {
    if !args.listen.ip().is_loopback() && !args.listen_any {
        return Err(miette!(
            help = "use a loopback address such as 127.0.0.1:9464, or pass --listen-any to expose the endpoints",
            "--listen {} is not a loopback address; /metrics and /healthz have no authentication",
            args.listen
        ));
    }
    let settings = Settings {
        prune_every: args.prune_every.to_std(),
        retry_max: args.retry_max.to_std(),
        lock_wait: std::time::Duration::from_secs(600),
    };
    // Recovery runs are read from the state every round.
    let state = crate::state::open_backend(std::path::Path::new("."), cfg.backend.as_ref())
        .map_err(miette::Report::new)?;
    if let Some(backup) = state.orphaned_backup() {
        return Err(miette!(
            help = "restore it from the backup (for the local state: `cp .standby/state.json.backup .standby/state.json`), then start the service again",
            "the state is missing but its backup {backup} exists: without it the service cannot tell where the machines run"
        ));
    }
    let ws = Workspace::new(cfg)
        .with_backend(std::sync::Arc::from(state))
        .with_request_retry(args.store_retry.to_std());
    let service =
        Service::new(std::sync::Arc::new(ws), batches, settings).map_err(|e| miette!("{e}"))?;
    // The HTTP endpoint and signal handling; captures use the vault's own runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| miette!("cannot start the async runtime: {e}"))?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(args.listen))
        .map_err(|e| miette!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr().unwrap_or(args.listen);
    let metrics = service.metrics();
    let stop = service.stopper();
    let (mut term, mut int) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .map_err(|e| miette!("cannot install signal handlers: {e}"))?;
    rt.spawn(http::serve(listener, std::sync::Arc::clone(&metrics)));
    tracing::info!("serving /metrics and /healthz on http://{local}");
    let worker = std::thread::spawn(move || service.run());
    let name = rt.block_on(async {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    });
    tracing::info!("{name}: stopping; a capture in progress is abandoned before it writes a point");
    metrics
        .stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    stop.stop();
    let joined = worker.join();
    rt.shutdown_background();
    match joined {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(_) => Err(miette!("a replication thread panicked")),
    }
}
