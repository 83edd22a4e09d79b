//! `replicate --watch`: the long-running replication service. One thread
//! per batch (a consistency group, or a protection alone) takes points on
//! its policy's schedule; one thread per vault prunes by retention; the
//! HTTP endpoint (`http`) serves what `metrics` holds.
//!
//! Schedule: a crash-consistent point every `crash_consistent_every`, an
//! app-consistent one every `app_consistent_every` (it replaces the crash
//! point when both are due). A failed attempt is retried with exponential
//! backoff (1 s doubling, jittered, capped at `retry_max` and the crash
//! interval) until it succeeds; missed points are not replayed: one point
//! catches up. A point exists only once its manifest is written (the
//! replication library writes it last), so an outage or a stop mid-capture
//! never leaves a damaged point.
//!
//! Every scheduling round re-reads the state and the vault, so the service
//! follows recovery runs as they happen: a machine that is failed over and
//! not reprotected (or being moved by a failover or failback) is skipped
//! and reported unprotected; a reprotected one is captured from the disks
//! where it runs; a failed-back one from its own site again. Points taken
//! by other processes (`replicate`, a planned failover's final point)
//! count toward the schedule and the newest-point age: a thread reads the
//! vault at least every 10 s while nothing is due. An app-consistent point
//! is due by the members that can take one (quiesce hooks or a VM freeze).

pub mod http;
pub mod metrics;
mod serve;

pub use serve::{Start, run, serve};

use crate::model::{Address, Config};
use crate::recovery::placement;
use crate::replication::{self, Batch, Options, Progress, ReplicationError};
use crate::state::Backend;
use crate::vault::lease::{self, Leases, Peer};
use crate::vault::{Consistency, Manifest, Vault, VaultError, catalog, prune};
use crate::workspace::{Workspace, WorkspaceError};
use metrics::Metrics;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often each vault is pruned by retention.
    pub prune_every: Duration,
    /// The longest pause between retries of a failed capture.
    pub retry_max: Duration,
    /// How long a prune waits for another prune or a compaction.
    pub lock_wait: Duration,
    /// How long data a prune marked as garbage stays before a later prune
    /// may delete it (see docs/VAULT.md, "Prune").
    pub prune_grace: Duration,
    /// How often this service renews its leases and when another's are
    /// dead (docs/VAULT.md, "Leases").
    pub lease: lease::Timing,
    /// The most protections this service replicates at once (a
    /// consistency group counts its members); None: no cap.
    pub max_protections: Option<usize>,
    /// This service's host name or label: it takes only batches whose
    /// sites name no `host` or this one.
    pub host: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{from}: no {missing} in the configuration")]
    Missing { from: String, missing: String },
    #[error("nothing to replicate: the configuration has no protection")]
    Nothing,
    #[error("{0}")]
    Batches(String),
    #[error(transparent)]
    State(Box<crate::state::StateError>),
    #[error(
        "the state is missing but its backup {0} exists: without it the service cannot tell where the machines run"
    )]
    OrphanedBackup(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("a replication thread panicked")]
    Panicked,
}

impl WatchError {
    /// What to do about it, when there is something to say.
    pub fn help(&self) -> Option<&'static str> {
        match self {
            WatchError::OrphanedBackup(_) => Some(
                "restore it from the backup (for the local state: `cp .standby/state.json.backup .standby/state.json`), then start the service again",
            ),
            _ => None,
        }
    }
}

/// Asks every thread to stop and wakes their waits. `cancel` is handed to
/// running captures, which abandon before writing a point.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
    pub cancel: Arc<AtomicBool>,
}

impl Stop {
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cancel.store(true, Ordering::Relaxed);
        self.cv.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait up to `d`, or until stopped; true when stopped.
    pub fn wait(&self, d: Duration) -> bool {
        let g = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, d, |s| !*s)
            .unwrap_or_else(|p| p.into_inner());
        *g
    }
}

/// Exponential backoff for the `failures`-th consecutive failure: 1 s
/// doubling, capped at `cap`, with jitter (a random 50–100% of it) so that
/// many services do not retry in step.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let exp = Duration::from_secs(1)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(cap);
    exp.mul_f64(0.5 + 0.5 * rand::random::<f64>())
}

/// A vault of the workspace, opened on first use (an outage at start is a
/// failed attempt, not a failed service) and kept; shared by its threads.
struct VaultSlot {
    addr: Address,
    ws: Arc<Workspace>,
    /// Who this service is in leases (one id per process run).
    me: lease::Holder,
    timing: lease::Timing,
    leases: std::sync::OnceLock<Arc<Leases>>,
    /// Batches capturing now: never given back mid-capture.
    busy: Mutex<BTreeSet<String>>,
}

impl VaultSlot {
    /// This service's leases in the vault, made on first use (the vault
    /// must be open: the lease names are keyed by it).
    fn leases(&self, v: &Vault) -> Arc<Leases> {
        Arc::clone(
            self.leases
                .get_or_init(|| Arc::new(Leases::new(v, self.me.clone(), self.timing))),
        )
    }

    fn set_busy(&self, label: &str, busy: bool) {
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if busy {
            b.insert(label.to_string());
        } else {
            b.remove(label);
        }
    }

    fn get(&self) -> Result<Arc<Vault>, VaultError> {
        match self.ws.vault(&self.addr) {
            Ok(v) => Ok(v),
            Err(WorkspaceError::Vault { error, .. }) => Err(*error),
            // Service::new checked that the vault is configured.
            Err(e) => Err(VaultError::Missing {
                url: self.addr.to_string(),
                object: e.to_string(),
            }),
        }
    }
}

struct Job {
    /// The protections as configured; each round redirects or skips
    /// members by where their machines run (`recovery::placement`).
    batch: Batch,
    crash_every: Duration,
    /// Set when some member takes app-consistent points.
    app_every: Option<Duration>,
    slot: Arc<VaultSlot>,
}

struct Pruner {
    slot: Arc<VaultSlot>,
    retention: BTreeMap<String, Duration>,
    /// The machines of those protections: whose catalogs the metrics read.
    machines: BTreeSet<String>,
}

/// The service: build it, hand out `metrics()` and `stopper()`, then `run`.
pub struct Service {
    jobs: Vec<Job>,
    /// One per vault: its leases are managed by one thread.
    slots: Vec<Arc<VaultSlot>>,
    pruners: Vec<Pruner>,
    metrics: Arc<Metrics>,
    stop: Arc<Stop>,
    settings: Settings,
    ws: Arc<Workspace>,
}

impl Service {
    /// The workspace's configuration, vaults (opened as its store options
    /// say) and cache; its state backend, when it has one, is where
    /// recovery runs are recorded, read every round (none: every machine
    /// is captured at its own site).
    pub fn new(
        ws: Arc<Workspace>,
        batches: Vec<Batch>,
        settings: Settings,
    ) -> Result<Service, WatchError> {
        let cfg = &ws.config;
        if batches.is_empty() {
            return Err(WatchError::Nothing);
        }
        let metrics = Arc::new(Metrics::default());
        let me =
            lease::Holder::this_process(&hex::encode(rand::random::<[u8; 4]>()), &settings.host);
        tracing::info!(
            "service {} on {} (pid {}): leases renewed every {}ms, another service's taken over after {}ms without renewal",
            me.service,
            me.host,
            me.pid,
            settings.lease.renew_every.as_millis(),
            settings.lease.expire_after.as_millis()
        );
        let mut slots: BTreeMap<Address, Arc<VaultSlot>> = BTreeMap::new();
        let mut retention: BTreeMap<Address, BTreeMap<String, Duration>> = BTreeMap::new();
        let mut pruned: BTreeMap<Address, BTreeSet<String>> = BTreeMap::new();
        let mut jobs = Vec::new();
        for batch in batches {
            if !cfg.vaults.contains_key(&batch.vault) {
                return Err(WatchError::Missing {
                    from: batch.label.clone(),
                    missing: batch.vault.to_string(),
                });
            }
            let slot = slots
                .entry(batch.vault.clone())
                .or_insert_with(|| {
                    Arc::new(VaultSlot {
                        addr: batch.vault.clone(),
                        ws: Arc::clone(&ws),
                        me: me.clone(),
                        timing: settings.lease,
                        leases: Default::default(),
                        busy: Default::default(),
                    })
                })
                .clone();
            let mut crash_every = Duration::MAX;
            let mut app_every: Option<Duration> = None;
            for (a, t) in batch.protections.iter().zip(&batch.targets) {
                let policy = ws.policy_of(a).ok_or_else(|| WatchError::Missing {
                    from: a.to_string(),
                    missing: cfg
                        .protections
                        .get(a)
                        .map_or_else(|| a.to_string(), |p| p.policy.to_string()),
                })?;
                crash_every = crash_every.min(policy.crash_consistent_every.to_std());
                if let (true, Some(e)) = (t.app, policy.app_consistent_every) {
                    let e = e.to_std();
                    app_every = Some(app_every.map_or(e, |x| x.min(e)));
                }
                retention
                    .entry(batch.vault.clone())
                    .or_default()
                    .insert(a.to_string(), policy.retention.to_std());
                pruned
                    .entry(batch.vault.clone())
                    .or_default()
                    .insert(t.machine.clone());
                metrics.update(&a.to_string(), |f| {
                    f.rpo_threshold_seconds = policy.rpo_threshold.as_secs();
                });
            }
            let floor = Duration::from_secs(1);
            jobs.push(Job {
                batch,
                crash_every: crash_every.max(floor),
                app_every: app_every.map(|e| e.max(floor)),
                slot,
            });
        }
        let pruners = retention
            .into_iter()
            .filter_map(|(addr, retention)| {
                Some(Pruner {
                    slot: slots.get(&addr)?.clone(),
                    retention,
                    machines: pruned.remove(&addr).unwrap_or_default(),
                })
            })
            .collect();
        Ok(Service {
            jobs,
            slots: slots.into_values().collect(),
            pruners,
            metrics,
            stop: Arc::new(Stop::default()),
            settings,
            ws,
        })
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub fn stopper(&self) -> Arc<Stop> {
        Arc::clone(&self.stop)
    }

    /// Run every thread until `stopper().stop()`; returns when all ended.
    pub fn run(self) {
        let Service {
            jobs,
            slots,
            pruners,
            metrics,
            stop,
            settings,
            ws,
        } = self;
        let world = World {
            cfg: &ws.config,
            state: ws.backend().ok().map(|b| &**b),
            cache_dir: ws.cache_dir(),
        };
        metrics
            .expected_workers
            .store(jobs.len() + pruners.len() + 1, Ordering::Relaxed);
        std::thread::scope(|s| {
            for job in &jobs {
                let (m, st, se, w) = (&metrics, &stop, &settings, &world);
                s.spawn(move || {
                    let _alive = Alive::new(m);
                    run_job(job, se, m, st, w);
                });
            }
            for p in &pruners {
                let (m, st, se) = (&metrics, &stop, &settings);
                s.spawn(move || {
                    let _alive = Alive::new(m);
                    run_pruner(p, se, m, st);
                });
            }
            let (m, st, se, j, sl, w) = (&metrics, &stop, &settings, &jobs, &slots, &world);
            s.spawn(move || {
                let _alive = Alive::new(m);
                run_leases(sl, j, se, m, st, w);
            });
        });
    }
}

/// Counts a live scheduler thread, also when it panics.
struct Alive<'a>(&'a Metrics);

impl<'a> Alive<'a> {
    fn new(m: &'a Metrics) -> Alive<'a> {
        m.live_workers.fetch_add(1, Ordering::Relaxed);
        Alive(m)
    }
}

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.live_workers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often a scheduler thread reads the state and the vault while no
/// point is due (a Prometheus scrape interval).
const REFRESH: Duration = Duration::from_secs(10);

/// How long ago `m` was taken (zero if in the future; the longest
/// duration if its time cannot be read: such a point is never fresh).
fn age_of(m: &Manifest) -> Duration {
    m.created_at()
        .map(|t| (OffsetDateTime::now_utc() - t).unsigned_abs())
        .unwrap_or(Duration::MAX)
}

/// Record what the vault holds for `protections` in `metrics`.
fn record_points(metrics: &Metrics, protections: &[String], points: &[Manifest]) {
    for a in protections {
        let mine: Vec<&Manifest> = points.iter().filter(|m| &m.protection == a).collect();
        metrics.update(a, |f| {
            f.points = Some(mine.len() as u64);
            f.newest = mine.iter().filter_map(|m| m.created_at()).max();
        });
    }
}

/// When a batch is next due, from the newest points in the vault: the
/// oldest of its members' newest points decides (a member without a point
/// makes it due now).
fn due_from_points(
    members: &[String],
    points: &[Manifest],
    kind: Option<Consistency>,
    every: Duration,
) -> Instant {
    let now = Instant::now();
    let mut oldest_newest = Duration::ZERO;
    for a in members {
        let newest = points
            .iter()
            .filter(|m| &m.protection == a && kind.is_none_or(|k| m.consistency == k))
            .map(age_of)
            .min();
        match newest {
            None => return now,
            Some(age) => oldest_newest = oldest_newest.max(age),
        }
    }
    now + every.saturating_sub(oldest_newest)
}

/// What a scheduler thread reads every round besides the vault.
struct World<'a> {
    cfg: &'a Config,
    state: Option<&'a dyn Backend>,
    /// Change-tracking cache and staging area.
    cache_dir: std::path::PathBuf,
}

/// This round's capture targets of `job` (names and targets), members
/// skipped by where their machines run logged when that changes, and
/// every member's protection state recorded in `metrics`.
fn targets_now(
    job: &Job,
    world: &World<'_>,
    doc: Option<&crate::state::StateDoc>,
    points: &[Manifest],
    metrics: &Metrics,
    skipped: &mut BTreeMap<String, String>,
) -> (Vec<String>, Vec<replication::Target>) {
    let mut names = Vec::new();
    let mut targets = Vec::new();
    for (a, t) in job.batch.protections.iter().zip(&job.batch.targets) {
        let name = a.to_string();
        let capture = placement::capture_of(world.cfg, doc, &t.machine);
        // A lost or stale state: the vault's newest point came from another
        // site than the state says; capturing would store an old copy.
        let stale = placement::refuse_to_guess(world.cfg, doc, None, points, [a]);
        let unprotected = !stale.is_empty()
            || matches!(
                capture,
                placement::Capture::Skip {
                    unprotected: true,
                    ..
                }
            );
        metrics.update(&name, |f| f.unprotected = unprotected);
        let now = match stale.into_iter().next() {
            Some(why) => Err(why),
            None => placement::target_now(world.cfg, doc, t).map_err(|e| e.0),
        };
        match now {
            Ok(t) => {
                if skipped.remove(&name).is_some() {
                    tracing::info!(
                        "{name}: protected again, capturing the disks at {}",
                        t.site.as_deref().unwrap_or("its site")
                    );
                }
                names.push(name);
                targets.push(t);
            }
            Err(reason) => {
                if skipped.get(&name) != Some(&reason) {
                    tracing::warn!("{name}: skipped: {reason}");
                    skipped.insert(name, reason);
                }
            }
        }
    }
    (names, targets)
}

fn run_job(job: &Job, settings: &Settings, metrics: &Metrics, stop: &Stop, world: &World<'_>) {
    let label = &job.batch.label;
    let all: Vec<String> = job
        .batch
        .protections
        .iter()
        .map(|a| a.to_string())
        .collect();
    let cap = settings
        .retry_max
        .min(job.crash_every)
        .max(Duration::from_secs(1));
    let mut next_crash = Instant::now();
    let mut next_app = job.app_every.map(|_| Instant::now());
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    let mut skipped: BTreeMap<String, String> = BTreeMap::new();
    tracing::info!(
        "{label}: crash-consistent every {}s{}",
        job.crash_every.as_secs(),
        job.app_every
            .map(|e| format!(", app-consistent every {}s", e.as_secs()))
            .unwrap_or_default()
    );
    loop {
        let now = Instant::now();
        let mut due = next_app.map_or(next_crash, |a| a.min(next_crash));
        if let Some(r) = retry_at {
            due = due.max(r);
        }
        if due > now {
            // Wake at least every REFRESH to read the vault again: points
            // other processes take show in /metrics and move the schedule.
            if stop.wait((due - now).min(REFRESH)) {
                return;
            }
            if retry_at.is_some() || Instant::now() >= due {
                continue;
            }
            // Not due by this thread's own schedule: look at the vault
            // anyway (below), so that points other processes took show in
            // /metrics and move the schedule.
        }
        if stop.is_stopped() {
            return;
        }
        let fail = |e: &dyn std::fmt::Display, failures: u32| {
            for a in &all {
                metrics.update(a, |f| f.failures += 1);
            }
            let wait = backoff(failures, cap);
            tracing::warn!(
                "{label}: attempt failed ({failures} in a row), retrying in {:.1}s: {e}",
                wait.as_secs_f64()
            );
            Instant::now() + wait
        };
        let vault = match job.slot.get() {
            Ok(v) => v,
            Err(e) => {
                failures += 1;
                retry_at = Some(fail(&e, failures));
                continue;
            }
        };
        // Where the machines run now: recovery runs change it under us.
        let doc = match world.state.map(|b| b.read()).transpose() {
            Ok(d) => d.flatten(),
            Err(e) => {
                failures += 1;
                retry_at = Some(fail(&format!("cannot read the state: {e}"), failures));
                continue;
            }
        };
        // What the vault holds now, also points other processes took: the
        // catalog of this batch's machines (docs/VAULT.md).
        let machines = job
            .batch
            .targets
            .iter()
            .map(|t| t.machine.clone())
            .collect();
        let points = match crate::vault::catalog::list_machines(&vault, &machines) {
            Ok(p) => p,
            Err(e) => {
                failures += 1;
                retry_at = Some(fail(&e, failures));
                continue;
            }
        };
        record_points(metrics, &all, &points);
        // Only the service holding the batch's lease captures it; the
        // others keep its figures (the vault-wide newest point) current.
        let leases = job.slot.leases(&vault);
        let held = leases.holds(label);
        for a in &all {
            metrics.update(a, |f| f.lease_held = held);
        }
        if !held {
            failures = 0;
            retry_at = None;
            // Look again when the lease manager takes the lease (no
            // request to notice) or after a renewal interval.
            let until = Instant::now() + settings.lease.renew_every.min(REFRESH);
            while Instant::now() < until && !leases.holds(label) {
                if stop.wait(Duration::from_millis(200)) {
                    return;
                }
            }
            next_crash = Instant::now();
            next_app = job.app_every.map(|_| Instant::now());
            continue;
        }
        let (names, targets) =
            targets_now(job, world, doc.as_ref(), &points, metrics, &mut skipped);
        if targets.is_empty() {
            // Nothing to capture; look again at the next interval.
            failures = 0;
            retry_at = None;
            next_crash = now + job.crash_every;
            next_app = job.app_every.map(|e| now + e);
            continue;
        }
        let due_crash = due_from_points(&names, &points, None, job.crash_every);
        // An app-consistent point is due by the members that can take one:
        // a member without quiesce hooks never has one.
        let app_names: Vec<String> = names
            .iter()
            .zip(&targets)
            .filter(|(_, t)| t.app)
            .map(|(n, _)| n.clone())
            .collect();
        let due_app = job
            .app_every
            .filter(|_| !app_names.is_empty())
            .map(|e| due_from_points(&app_names, &points, Some(Consistency::App), e));
        let now = Instant::now();
        if due_crash > now && due_app.is_none_or(|a| a > now) {
            // Someone else took a point meanwhile: not due yet.
            next_crash = due_crash;
            next_app = due_app;
            retry_at = None;
            continue;
        }
        let app = due_app.is_some_and(|a| a <= now);
        let targets: Vec<_> = targets
            .into_iter()
            .map(|mut t| {
                t.app &= app;
                t
            })
            .collect();
        let opts = Options {
            cache_dir: world.cache_dir.clone(),
            cancel: Some(Arc::clone(&stop.cancel)),
            baseline: Default::default(),
            moves_to: Default::default(),
            lease: replication::Lease::Held(leases),
        };
        let started = Instant::now();
        job.slot.set_busy(label, true);
        let taken = replication::take_points(&vault, &targets, &opts, &Progress::default());
        job.slot.set_busy(label, false);
        match taken {
            Ok(made) => {
                for (a, m) in names.iter().zip(&made) {
                    tracing::info!(
                        "{a}: point {} ({}{}) of {} read {}, stored {} in {}",
                        m.id.short(),
                        m.consistency,
                        m.group
                            .as_ref()
                            .map(|g| format!(", group {g}"))
                            .unwrap_or_default(),
                        m.site.as_deref().unwrap_or("its site"),
                        crate::human::size(m.stats.read),
                        crate::human::size(m.stats.stored),
                        crate::human::duration(started.elapsed())
                    );
                    metrics.update(a, |f| {
                        f.newest = m.created_at().or(f.newest);
                        f.points = Some(f.points.unwrap_or(0) + 1);
                        f.bytes_replicated += m.stats.stored;
                        f.points_taken += 1;
                        f.cbt_fallbacks += m.cbt.as_ref().map_or(0, |c| c.fallbacks() as u64);
                    });
                }
                if failures > 0 {
                    tracing::info!(
                        "{label}: caught up after {}",
                        crate::human::count(failures as usize, "failed attempt")
                    );
                }
                failures = 0;
                retry_at = None;
                next_crash = started + job.crash_every;
                match (app, job.app_every) {
                    (true, Some(e)) => next_app = Some(started + e),
                    _ => next_app = due_app,
                }
            }
            Err(ReplicationError::Cancelled) => {
                tracing::info!("{label}: capture abandoned on stop; no point was taken");
                return;
            }
            Err(ReplicationError::Lease(lease::LeaseError::Lost { .. })) => {
                // Another service took the batch over (it saw no renewal):
                // it replicates the batch from now on; not a failure.
                tracing::warn!(
                    "{label}: lease lost to another service during the capture; no point was written"
                );
                retry_at = None;
            }
            Err(e) => {
                failures += 1;
                retry_at = Some(fail(&e, failures));
            }
        }
    }
}

fn run_pruner(p: &Pruner, settings: &Settings, metrics: &Metrics, stop: &Stop) {
    let addr = &p.slot.addr;
    let names: Vec<String> = p.retention.keys().cloned().collect();
    let every = settings.prune_every.max(Duration::from_secs(1));
    while !stop.wait(every) {
        let result = p.slot.get().and_then(|v| {
            // One service of the fleet prunes a vault at a time: the
            // holder of its prune lease (kept and renewed like the others).
            if !matches!(
                p.slot.leases(&v).take(PRUNE_UNIT)?,
                lease::Taken::Fresh | lease::Taken::Over(_) | lease::Taken::Ours
            ) {
                return Ok(None);
            }
            let r = prune::prune(
                &v,
                &p.retention,
                OffsetDateTime::now_utc(),
                false,
                settings.lock_wait,
                settings.prune_grace,
            )?;
            // Prune reads every manifest (its job); the metrics only
            // need the catalogs of this service's machines.
            let points = catalog::list_machines(&v, &p.machines)?;
            Ok(Some((r, points)))
        });
        match result {
            Ok(None) => tracing::debug!("{addr}: another service prunes this vault"),
            Ok(Some((r, points))) => {
                record_points(metrics, &names, &points);
                if let Some(ahead) = r.host_clock_ahead_seconds {
                    tracing::warn!(
                        "{addr}: this host's clock is {ahead}s ahead of the store's: retention judged by the store's clock"
                    );
                }
                tracing::info!(
                    "{addr}: pruned {}, kept {}, deleted {} ({})",
                    crate::human::count(r.dropped.len(), "point"),
                    r.kept,
                    crate::human::count(r.packs_deleted, "pack"),
                    crate::human::size(r.bytes_freed)
                );
            }
            Err(e) => tracing::warn!(
                "{addr}: prune failed, next try in {}s: {e}",
                every.as_secs()
            ),
        }
    }
}

/// The lease unit whose holder prunes a vault (not a batch label: those
/// are `group NAME` or an address).
const PRUNE_UNIT: &str = "(prune)";

/// The lease manager: every `renew_every` it renews this service's
/// leases and heartbeats in every vault, counts the live services by
/// their heartbeats (each says how many leases its service holds), and
/// balances: above its fair share (all batches over the live services,
/// rounded up) or two more than the least loaded service, it gives one
/// lease back; below its share, and no more loaded than the least loaded
/// other service, it takes free or dead batches it can reach, within
/// `--max-protections`. Every third round it takes a free or dead batch
/// whatever the loads, so a batch that only some services can reach is
/// never left behind. Releases everything on stop.
fn run_leases(
    slots: &[Arc<VaultSlot>],
    jobs: &[Job],
    settings: &Settings,
    metrics: &Metrics,
    stop: &Stop,
    world: &World<'_>,
) {
    let every = settings.lease.renew_every.max(Duration::from_millis(50));
    let mut round = 0u64;
    // Per job: None while the state was never read (take nothing new),
    // else why this service cannot reach its disks, if it cannot.
    let mut reach: Vec<Option<Result<(), String>>> = vec![None; jobs.len()];
    let mut doc: Option<crate::state::StateDoc> = None;
    // Held since which round: a lease just taken is not given back at once.
    let mut taken_at: BTreeMap<(Address, String), u64> = BTreeMap::new();
    let mut opened: BTreeMap<Address, (Arc<Vault>, Arc<Leases>)> = BTreeMap::new();
    let mut first = true;
    loop {
        for slot in slots {
            if !opened.contains_key(&slot.addr)
                && let Ok(v) = slot.get()
            {
                let l = slot.leases(&v);
                opened.insert(slot.addr.clone(), (v, l));
            }
        }
        if first && !opened.is_empty() {
            first = false;
            // Services started together: let their heartbeats show before
            // sharing, so the first does not take everything.
            for (addr, (_, l)) in &opened {
                if let Err(e) = l.beat(0, false) {
                    tracing::warn!("{addr}: heartbeat: {e}");
                }
            }
            if stop.wait(every.min(Duration::from_millis(500))) {
                break;
            }
        }
        // Where the machines run now (a reprotect moves them to another
        // site, maybe another host's): read each round.
        match world.state.map(|b| b.read()).transpose() {
            Ok(read) => {
                doc = read.flatten();
                for (j, r) in jobs.iter().zip(reach.iter_mut()) {
                    let doc = doc.as_ref();
                    let now = reachable(j, world.cfg, doc, &settings.host);
                    if r.as_ref() != Some(&now) {
                        match &now {
                            Err(why) => tracing::info!("{}: {why}", j.batch.label),
                            Ok(()) if r.is_some() => tracing::info!(
                                "{}: its disks are reachable from {} again",
                                j.batch.label,
                                settings.host
                            ),
                            Ok(()) => {}
                        }
                    }
                    *r = Some(now);
                }
            }
            Err(e) => tracing::warn!("leases: cannot read the state: {e}"),
        }
        let now: Vec<Option<bool>> = reach
            .iter()
            .map(|r| r.as_ref().map(Result::is_ok))
            .collect();
        let peer = |j: &Job, host: &str| reachable(j, world.cfg, doc.as_ref(), host).is_ok();
        let r = Reach {
            here: &now,
            peer: &peer,
        };
        match manage(&opened, slots, jobs, &r, settings, round, &mut taken_at) {
            Ok(live) => metrics.services.store(live, Ordering::Relaxed),
            Err(e) => tracing::warn!("leases: {e}"),
        }
        let held: usize = opened
            .values()
            .map(|(_, l)| l.held().iter().filter(|u| u.as_str() != PRUNE_UNIT).count())
            .sum();
        metrics.leases_held.store(held, Ordering::Relaxed);
        round += 1;
        if stop.wait(every) {
            break;
        }
    }
    // Let captures in progress end first (they are cancelled).
    while slots
        .iter()
        .any(|s| !s.busy.lock().unwrap_or_else(|p| p.into_inner()).is_empty())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (addr, (_, l)) in opened {
        l.release_all();
        tracing::info!("{addr}: leases released");
    }
}

/// Whether this service (`host`, its `--host`) reaches every member's
/// disks now: the site each machine's disks are at (its own, or the one a
/// reprotect placed it at) names no host or this one. `Err` says which
/// site names which host.
fn reachable(
    job: &Job,
    cfg: &Config,
    doc: Option<&crate::state::StateDoc>,
    host: &str,
) -> Result<(), String> {
    for t in &job.batch.targets {
        if let Some(why) = placement::other_host(cfg, doc, &t.machine, host) {
            return Err(format!("{why}; left to the services there"));
        }
    }
    Ok(())
}

/// Which batches can be captured where, for [`manage`].
struct Reach<'a> {
    /// `here[i]`: whether `jobs[i]`'s disks are reachable from this service
    /// (None: not known yet, the state unread).
    here: &'a [Option<bool>],
    /// Whether a service on host `h` reaches a job's disks.
    peer: &'a dyn Fn(&Job, &str) -> bool,
}

/// One round of [`run_leases`]; returns the live services (us included).
fn manage(
    opened: &BTreeMap<Address, (Arc<Vault>, Arc<Leases>)>,
    slots: &[Arc<VaultSlot>],
    jobs: &[Job],
    reach: &Reach<'_>,
    settings: &Settings,
    round: u64,
    taken_at: &mut BTreeMap<(Address, String), u64>,
) -> Result<usize, VaultError> {
    let size = |addr: &Address, label: &str| {
        jobs.iter()
            .find(|j| &j.slot.addr == addr && j.batch.label == label)
            .map_or(0, |j| j.batch.protections.len())
    };
    let cap = settings.max_protections.unwrap_or(usize::MAX);
    let mut held_total = 0;
    let mut count_total = 0;
    for (addr, (_, l)) in opened {
        for u in l.held() {
            l.renew(&u)?;
        }
        for u in l.held().into_iter().filter(|u| u != PRUNE_UNIT) {
            held_total += 1;
            count_total += size(addr, &u);
        }
    }
    // Every other live service, by id (the most load any vault says).
    let mut others: BTreeMap<String, Peer> = BTreeMap::new();
    for (v, l) in opened.values() {
        l.beat(held_total, count_total >= cap)?;
        for p in l.others(v)? {
            match others.get_mut(&p.service) {
                Some(e) => {
                    e.held = e.held.max(p.held);
                    e.full |= p.full;
                }
                None => {
                    others.insert(p.service.clone(), p);
                }
            }
        }
    }
    let live = others.len() + 1;
    let share = jobs.len().div_ceil(live);
    // Only services that can take more count for balance: one at its
    // --max-protections takes nothing given back.
    let takers: Vec<&Peer> = others.values().filter(|p| !p.full).collect();
    let least = takers.iter().map(|p| p.held as usize).min();
    let busy = |a: &Address, u: &str| {
        slots
            .iter()
            .find(|s| &s.addr == a)
            .is_some_and(|s| s.busy.lock().unwrap_or_else(|p| p.into_inner()).contains(u))
    };
    let job_of = |a: &Address, u: &str| {
        jobs.iter()
            .position(|j| &j.slot.addr == a && j.batch.label == u)
    };
    let mut held: Vec<(Address, String)> = Vec::new();
    for (addr, (_, l)) in opened {
        for u in l.held().into_iter().filter(|u| u != PRUNE_UNIT) {
            held.push((addr.clone(), u));
        }
    }
    // A batch whose machines moved to another host's site is theirs now.
    for (addr, u) in &held {
        let gone = job_of(addr, u).is_some_and(|i| reach.here[i] == Some(false));
        if gone
            && !busy(addr, u)
            && let Some((_, l)) = opened.get(addr)
        {
            l.release(u)?;
            tracing::info!("{u}: lease given back (its disks are at another host's site)");
        }
    }
    held.retain(|(a, u)| opened.get(a).is_some_and(|(_, l)| l.held().contains(u)));
    taken_at.retain(|k, _| held.contains(k));
    let mut count: usize = held.iter().map(|(a, u)| size(a, u)).sum();
    let why = if count > cap {
        Some(format!(
            "{count} protections held, above --max-protections {cap}"
        ))
    } else if held.len() > share {
        Some(format!(
            "{} held, above the fair share {share} of {} over {live} services",
            held.len(),
            jobs.len()
        ))
    } else {
        least
            .filter(|m| held.len() >= m + 2)
            .map(|m| format!("{} held, another service holds {m}", held.len()))
    };
    if let Some(why) = why {
        // Given back only to be taken: to a service that can take more and
        // reach its disks (over the cap, given back anyway).
        let takeable = |k: &(Address, String)| {
            count > cap
                || job_of(&k.0, &k.1)
                    .is_some_and(|i| takers.iter().any(|p| (reach.peer)(&jobs[i], &p.host)))
        };
        let spare = held.iter().rev().find(|k| {
            !busy(&k.0, &k.1) && taken_at.get(*k).is_none_or(|t| round >= t + 3) && takeable(k)
        });
        if let Some((addr, u)) = spare
            && let Some((_, l)) = opened.get(addr)
        {
            l.release(u)?;
            tracing::info!("{u}: lease given back ({why})");
            return Ok(live);
        }
        if count > cap {
            return Ok(live);
        }
        // Nothing another service could take: go on, and take beyond the
        // share what only this service can (below).
        tracing::debug!("leases: {why}, but no other service can take a batch of ours");
    }
    let beyond = round.is_multiple_of(3);
    let eager = held.len() < share && least.is_none_or(|m| held.len() <= m);
    if !eager && !beyond {
        return Ok(live);
    }
    let mut order: Vec<&Job> = jobs
        .iter()
        .zip(reach.here)
        .filter(|(j, r)| {
            **r == Some(true) && !held.contains(&(j.slot.addr.clone(), j.batch.label.clone()))
        })
        .map(|(j, _)| j)
        .collect();
    // Services start together: different orders keep them from contending
    // for the same batch.
    order.sort_by_cached_key(|_| rand::random::<u32>());
    let mut n = held.len();
    for j in order {
        if n >= share && !beyond {
            break;
        }
        let Some((_, l)) = opened.get(&j.slot.addr) else {
            continue;
        };
        let size = j.batch.protections.len();
        if count + size > cap {
            continue;
        }
        match l.take(&j.batch.label)? {
            lease::Taken::Fresh | lease::Taken::Over(_) => {
                tracing::info!("{}: lease taken", j.batch.label);
                taken_at.insert((j.slot.addr.clone(), j.batch.label.clone()), round);
                n += 1;
                count += size;
                if n > share || !eager {
                    // Beyond the share: one per round at most.
                    break;
                }
            }
            lease::Taken::Ours | lease::Taken::Busy(_) => {}
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let cap = Duration::from_secs(30);
        for n in 1..=10u32 {
            let d = backoff(n, cap);
            let full = Duration::from_secs(1u64 << (n - 1)).min(cap);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?}");
        }
        assert!(backoff(100, cap) <= cap);
    }

    #[test]
    fn stop_wakes_a_waiter() {
        let s = Arc::new(Stop::default());
        let s2 = Arc::clone(&s);
        let t = std::thread::spawn(move || s2.wait(Duration::from_secs(3600)));
        s.stop();
        assert!(t.join().unwrap());
        assert!(s.cancel.load(Ordering::Relaxed));
    }
}
