//! `replicate --watch` from start to stop: the state backend and the
//! workspace, the service, its HTTP endpoint and the signals that stop it.

use super::{Service, Settings, WatchError, http};
use crate::model::{Address, Config};
use crate::workspace::Workspace;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// How the service is started.
#[derive(Debug, Clone)]
pub struct Start {
    pub settings: Settings,
    /// Where `/metrics` and `/healthz` are served.
    pub listen: SocketAddr,
    /// The longest one store request is retried before the attempt counts
    /// as failed (the service retries whole captures itself).
    pub request_retry: Duration,
}

/// Replicate the `chosen` protections of `cfg` on their schedules until
/// SIGTERM or SIGINT; returns once every thread stopped. Recovery runs are
/// read every round from the configuration's state backend. Errors: the
/// configuration's batches, a state that is missing while its backup
/// exists, the runtime, the listen address, the signal handlers, a panicked
/// thread.
pub fn run(cfg: Config, chosen: &[Address], start: Start) -> Result<(), WatchError> {
    // The service decides every round where each machine runs.
    let batches = crate::replication::batches(&cfg, chosen)
        .map_err(|e| WatchError::Batches(e.to_string()))?;
    let state = crate::state::open_backend(std::path::Path::new("."), cfg.backend.as_ref())
        .map_err(|e| WatchError::State(Box::new(e)))?;
    if let Some(backup) = state.orphaned_backup() {
        return Err(WatchError::OrphanedBackup(backup.to_string()));
    }
    let ws = Workspace::new(cfg)
        .with_backend(Arc::from(state))
        .with_request_retry(start.request_retry);
    let service = Service::new(Arc::new(ws), batches, start.settings)?;
    serve(service, start.listen)
}

/// Run `service` until SIGTERM or SIGINT, serving its metrics on `listen`.
pub fn serve(service: Service, listen: SocketAddr) -> Result<(), WatchError> {
    // The endpoint and the signals; captures block on plain threads.
    let rt = crate::store::runtime().map_err(WatchError::Runtime)?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|source| WatchError::Listen {
            address: listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(listen);
    let metrics = service.metrics();
    let stop = service.stopper();
    let (mut term, mut int) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .map_err(WatchError::Signals)?;
    let endpoint = rt.spawn(http::serve(listener, Arc::clone(&metrics)));
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
    endpoint.abort();
    match joined {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(_) => Err(WatchError::Panicked),
    }
}
