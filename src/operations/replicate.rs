//! `standby replicate` (without `--watch`): one point now for the chosen
//! protections. Failed-over machines are skipped, a state the vaults
//! contradict is refused (unless trusted), protections sharing a
//! consistency group and a vault are captured together, reprotected
//! machines from where they run now. Progress and results go to a [`Ui`];
//! nothing here prints.

use crate::model::Address;
use crate::progress::Progress;
use crate::recovery::placement::{self, Capture};
/// The error a capture reports, inside [`OnceError`].
pub use crate::replication::ReplicationError;
use crate::replication::{BatchError, Options, batches, take_points};
use crate::state::{StateDoc, StateError};
use crate::store::Counts;
use crate::vault::manifest::Manifest;
use crate::workspace::{Workspace, WorkspaceError};
use std::time::{Duration, Instant};

/// What a replicate run tells its user, in order.
pub enum Event<'a> {
    /// A protection left out: its machine is failed over and not reprotected.
    Skipping {
        protection: &'a Address,
        reason: &'a str,
    },
    /// Nothing is left to capture.
    Nothing,
    /// A batch (consistency group or lone protection) begins.
    Batch { label: &'a str, vault: &'a Address },
    /// A batch's points, one per protection, in order; `took` is its wall
    /// time, `requests` the object-store requests its capture cost (a
    /// group's members share one capture; None when batches ran in
    /// parallel, since the counters are process-wide).
    Taken {
        vault: &'a Address,
        protections: &'a [Address],
        points: &'a [Manifest],
        took: Duration,
        requests: Option<Counts>,
    },
    /// A batch failed; the others go on.
    Failed {
        label: &'a str,
        error: &'a ReplicationError,
    },
}

/// The user's side of a replicate run.
pub trait Ui {
    fn event(&self, e: Event<'_>);
    /// Run one batch's capture (`run`) while showing `progress`.
    fn capture(
        &self,
        progress: &Progress,
        run: &mut dyn FnMut() -> Result<Vec<Manifest>, ReplicationError>,
    ) -> Result<Vec<Manifest>, ReplicationError>;
}

/// Why nothing was captured.
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("refusing to guess where the machines run:\n  - {}", .0.join("\n  - "))]
    Placement(Vec<String>),
    #[error("{0}")]
    Batch(BatchError),
    #[error("{0}")]
    Workspace(WorkspaceError),
}

impl OnceError {
    /// What the user can do about it.
    pub fn help(&self) -> Option<&'static str> {
        match self {
            OnceError::Placement(_) => Some(
                "restore the state from its backup, or pass --trust-state if the state is right; nothing was captured",
            ),
            _ => None,
        }
    }
}

/// `chosen` and every protection sharing a consistency group and a vault
/// with one of them: a member replicated alone would make a point no
/// recovery uses (a group recovers to an instant all members share), while
/// `points` and `status` would count it as the member's newest.
fn with_whole_groups(cfg: &crate::model::Config, chosen: Vec<Address>) -> Vec<Address> {
    let groups: std::collections::BTreeSet<(&Address, &str)> = chosen
        .iter()
        .filter_map(|a| cfg.protections.get(a))
        .filter_map(|p| Some((&p.vault, p.consistency_group.as_deref()?)))
        .collect();
    let mut out = chosen.clone();
    for (a, p) in &cfg.protections {
        if let Some(g) = p.consistency_group.as_deref()
            && groups.contains(&(&p.vault, g))
            && !out.contains(a)
        {
            out.push(a.clone());
        }
    }
    out
}

/// How [`run`] runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Capture even where the vaults contradict the state.
    pub trust_state: bool,
    /// Batches captured at once (1: one after the other, with progress).
    pub parallelism: usize,
    /// This host's name or label (`--host`, else the host name): a
    /// protection whose disks are at a site naming another host is
    /// skipped.
    pub host: String,
}

/// Take one point of each of `chosen` (configured protections), capturing
/// up to `parallelism` batches at once (each batch still one point
/// instant; 1: one after the other, with progress). Events come in batch
/// order either way. Returns how many batches failed.
pub fn run(
    ws: &Workspace,
    chosen: Vec<Address>,
    opts: &RunOptions,
    ui: &dyn Ui,
) -> Result<usize, OnceError> {
    let (trust_state, parallelism) = (opts.trust_state, opts.parallelism);
    let cfg = &ws.config;
    let chosen = with_whole_groups(cfg, chosen);
    let (chosen, doc) = skip_failed_over(ws, chosen, ui)?;
    // Disks at a site of another host are that host's to capture.
    let mut here = Vec::new();
    for a in chosen {
        let why = cfg.protections.get(&a).and_then(|p| {
            placement::other_host(cfg, doc.as_ref(), &p.machine.to_string(), &opts.host)
        });
        match why {
            Some(why) => ui.event(Event::Skipping {
                protection: &a,
                reason: &format!(
                    "{why} (run it on that host, or pass --host with that name if this is it)"
                ),
            }),
            None => here.push(a),
        }
    }
    let chosen = here;
    if chosen.is_empty() {
        ui.event(Event::Nothing);
        return Ok(0);
    }
    let backend = crate::state::open_backend(std::path::Path::new("."), cfg.backend.as_ref())?;
    let backup = backend.orphaned_backup();
    // --trust-state trusts a state that is there; a missing one with its
    // backup left is never trusted (there is nothing to be right).
    if let (None, Some(backup)) = (&doc, &backup) {
        return Err(OnceError::Placement(vec![placement::lost_state(backup)]));
    }
    if !trust_state {
        let problems = placement::check_vaults(ws, doc.as_ref(), backup.as_deref(), &chosen);
        if !problems.is_empty() {
            return Err(OnceError::Placement(problems));
        }
    }
    let mut batches = batches(cfg, &chosen).map_err(OnceError::Batch)?;
    // Reprotected machines: their points come from where they run now.
    if let Some(doc) = &doc {
        crate::recovery::reprotect::redirect(&mut batches, doc);
        crate::recovery::reprotect::redirect_vms(&mut batches, cfg, &ws.root(), doc);
    }
    let mut opts = Options::new(ws.cache_dir());
    // A batch a live `replicate --watch` service holds is refused, naming it.
    opts.lease = crate::replication::Lease::Take;
    let mut vaults = Vec::new();
    for b in &batches {
        vaults.push(ws.vault(&b.vault).map_err(OnceError::Workspace)?);
    }
    // Several batches at once: a round's time is then not the sum of every
    // point's request latencies. One at a time keeps the progress bar.
    let workers = parallelism.clamp(1, batches.len().max(1));
    let mut done = in_parallel(&batches, &vaults, &opts, workers);
    let mut failed = 0;
    for (i, batch) in batches.iter().enumerate() {
        ui.event(Event::Batch {
            label: &batch.label,
            vault: &batch.vault,
        });
        let (result, took, requests) = match done.get_mut(i).and_then(Option::take) {
            Some(r) => r,
            None => {
                let started = Instant::now();
                let progress = Progress::default();
                let before = crate::store::counts();
                let result = ui.capture(&progress, &mut || {
                    take_points(&vaults[i], &batch.targets, &opts, &progress)
                });
                let cost = crate::store::counts().since(&before);
                (result, started.elapsed(), Some(cost))
            }
        };
        match result {
            Ok(points) => ui.event(Event::Taken {
                vault: &batch.vault,
                protections: &batch.protections,
                points: &points,
                took,
                requests,
            }),
            Err(error) => {
                failed += 1;
                ui.event(Event::Failed {
                    label: &batch.label,
                    error: &error,
                });
            }
        }
    }
    Ok(failed)
}

/// One batch's capture: its points, wall time and request cost.
type Taken = (
    Result<Vec<Manifest>, ReplicationError>,
    Duration,
    Option<Counts>,
);

/// Take the points of `batches` with `workers` threads, when more than one:
/// results in batch order (None everywhere with one worker: the caller
/// then takes them one by one, with progress).
fn in_parallel(
    batches: &[crate::replication::Batch],
    vaults: &[std::sync::Arc<crate::vault::Vault>],
    opts: &Options,
    workers: usize,
) -> Vec<Option<Taken>> {
    let slots: Vec<std::sync::Mutex<Option<Taken>>> = batches
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    if workers > 1 {
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (Some(b), Some(vault)) = (batches.get(i), vaults.get(i)) else {
                            return;
                        };
                        let started = Instant::now();
                        let r = take_points(vault, &b.targets, opts, &Progress::default());
                        if let Ok(mut slot) = slots[i].lock() {
                            *slot = Some((r, started.elapsed(), None));
                        }
                    }
                });
            }
        });
    }
    slots
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect()
}

/// Drop protections whose machine is failed over (a failover run in the
/// state that did not fail) and not reprotected: its source is stopped or
/// gone, and its points must not move past the failover. Says so for each
/// one skipped. A reprotected machine stays (its DR disks are captured).
fn skip_failed_over(
    ws: &Workspace,
    chosen: Vec<Address>,
    ui: &dyn Ui,
) -> Result<(Vec<Address>, Option<StateDoc>), OnceError> {
    let cfg = &ws.config;
    let backend = crate::state::open_backend(std::path::Path::new("."), cfg.backend.as_ref())?;
    let Some(doc) = backend.read()? else {
        return Ok((chosen, None));
    };
    let mut keep = Vec::new();
    for a in chosen {
        let machine = cfg.protections.get(&a).map(|p| p.machine.to_string());
        let capture = machine
            .as_deref()
            .map(|m| placement::capture_of(cfg, Some(&doc), m));
        match capture {
            Some(Capture::Skip { reason, .. }) => ui.event(Event::Skipping {
                protection: &a,
                reason: &reason,
            }),
            _ => keep.push(a),
        }
    }
    Ok((keep, Some(doc)))
}
