//! `standby replicate --watch`: run the replication service (the `watch`
//! module) until SIGTERM or SIGINT, serving `/metrics` and `/healthz`.

use crate::model::{Address, Config, Duration};
use crate::watch::{Settings, Start, WatchError};
use miette::miette;
use std::net::SocketAddr;
use std::process::ExitCode;

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
metrics or on `standby status` exiting 2).

Several services (on several hosts, or several processes on one) may run with
the same configuration and vault: each replicates only the consistency groups
and lone protections whose lease it holds (one lease object per batch in the
vault). A lease is renewed every --lease-renew (default 10s); a service that
sees another's lease unchanged for --lease-expiry (default 30s, at least 2x the
renewal, on its own clock; never by comparing clocks) takes it over, so after a
crash its batches stop for at most about one expiry. Each service takes a fair
share (batches / live services, rounded up), gives leases back above it, takes
at most --max-protections, and only batches whose sites name no `host` or its
--host. /metrics adds standby_lease_held per protection, standby_leases_held
and standby_fleet_services; `standby status` shows each batch's holder. A
one-shot `replicate` refuses a batch a live service holds, naming it.";

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Keep running as a service: points on each policy's schedule, pruning, /metrics (see below).
    #[arg(long)]
    pub watch: bool,
    /// Where to serve /metrics (Prometheus) and /healthz (200 while the loop
    /// runs); a loopback address unless --listen-any.
    #[arg(
        long,
        requires = "watch",
        default_value = "127.0.0.1:9464",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// Allow --listen on a non-loopback address (the endpoints have no authentication).
    #[arg(long, requires = "watch")]
    pub listen_any: bool,
    /// How often to drop points past their policy's retention (with --watch).
    #[arg(
        long,
        requires = "watch",
        default_value = "1h",
        value_name = "DURATION"
    )]
    pub prune_every: Duration,
    /// How long data a prune marked as garbage is kept before a later prune deletes it
    /// (longer than any pause of a writer between its last check and its manifest).
    #[arg(
        long,
        requires = "watch",
        default_value = "1h",
        value_name = "DURATION"
    )]
    pub prune_grace: Duration,
    /// Longest pause between retries of a failed capture (backoff doubles from 1s, jittered).
    #[arg(
        long,
        requires = "watch",
        default_value = "5m",
        value_name = "DURATION"
    )]
    pub retry_max: Duration,
    /// How long one storage request is retried before the attempt counts as failed.
    #[arg(
        long,
        requires = "watch",
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub store_retry: Duration,
    /// How often this service renews its leases and heartbeat (see below).
    #[arg(
        long,
        requires = "watch",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub lease_renew: Duration,
    /// Another service's lease seen unchanged this long (on this service's own clock) is taken over; at least 2x --lease-renew.
    #[arg(
        long,
        requires = "watch",
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub lease_expiry: Duration,
    /// The most protections this service replicates at once (a consistency group counts its members).
    #[arg(long, requires = "watch", value_name = "N")]
    pub max_protections: Option<usize>,
    /// This host's name or label, matched against sites' `host` (default: the host name): a service takes only batches whose disks are at a site naming no host or this one; a one-shot `replicate` skips the others.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

pub fn run(cfg: Config, chosen: &[Address], args: &WatchArgs) -> miette::Result<ExitCode> {
    if !args.listen.ip().is_loopback() && !args.listen_any {
        return Err(miette!(
            help = "use a loopback address such as 127.0.0.1:9464, or pass --listen-any to expose the endpoints",
            "--listen {} is not a loopback address; /metrics and /healthz have no authentication",
            args.listen
        ));
    }
    let lease = crate::vault::lease::Timing {
        renew_every: args.lease_renew.to_std(),
        expire_after: args.lease_expiry.to_std(),
    };
    if lease.renew_every.is_zero() || lease.expire_after < lease.renew_every * 2 {
        return Err(miette!(
            help = "a lease must outlive at least two missed renewals, e.g. --lease-renew 10s --lease-expiry 30s",
            "--lease-expiry {} is less than twice --lease-renew {}",
            args.lease_expiry,
            args.lease_renew
        ));
    }
    let start = Start {
        settings: Settings {
            prune_every: args.prune_every.to_std(),
            retry_max: args.retry_max.to_std(),
            lock_wait: std::time::Duration::from_secs(600),
            prune_grace: args.prune_grace.to_std(),
            lease,
            max_protections: args.max_protections,
            host: host(args),
        },
        listen: args.listen,
        request_retry: args.store_retry.to_std(),
    };
    crate::watch::run(cfg, chosen, start).map_err(|e| match e {
        WatchError::State(e) => miette::Report::new(*e),
        e => match e.help() {
            Some(help) => miette!(help = help, "{e}"),
            None => miette!("{e}"),
        },
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `--host`, else this machine's host name: matched against sites' `host`.
pub fn host(args: &WatchArgs) -> String {
    args.host
        .clone()
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
}
