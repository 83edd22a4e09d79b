//! `standby replicate` (without `--watch`): one point now for the chosen
//! protections. Failed-over machines are skipped, a state the vaults
//! contradict is refused (unless trusted), protections sharing a
//! consistency group and a vault are captured together, reprotected
//! machines from where they run now. Progress and results go to a [`Ui`];
//! nothing here prints.

use super::{BatchError, Options, Progress, ReplicationError, batches, take_points};
use crate::model::Address;
use crate::recovery::placement::{self, Capture};
use crate::state::{StateDoc, StateError};
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
    /// A batch's points, one per protection, in order; `took` is its wall time.
    Taken {
        protections: &'a [Address],
        points: &'a [Manifest],
        took: Duration,
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

/// Take one point of each of `chosen` (configured protections). Returns
/// how many batches failed.
pub fn run(
    ws: &Workspace,
    chosen: Vec<Address>,
    trust_state: bool,
    ui: &dyn Ui,
) -> Result<usize, OnceError> {
    let cfg = &ws.config;
    let (chosen, doc) = skip_failed_over(ws, chosen, ui)?;
    if chosen.is_empty() {
        ui.event(Event::Nothing);
        return Ok(0);
    }
    if !trust_state {
        let backend = crate::state::open_backend(std::path::Path::new("."), cfg.backend.as_ref())?;
        let problems = placement::check_vaults(
            cfg,
            doc.as_ref(),
            backend.orphaned_backup().as_deref(),
            &chosen,
        );
        if !problems.is_empty() {
            return Err(OnceError::Placement(problems));
        }
    }
    let mut batches = batches(cfg, &chosen).map_err(OnceError::Batch)?;
    // Reprotected machines: their points come from where they run now.
    if let Some(doc) = &doc {
        crate::recovery::reprotect::redirect(&mut batches, doc);
    }
    let opts = Options::new(ws.cache_dir());
    let mut failed = 0;
    for batch in batches {
        let vault = ws.vault(&batch.vault).map_err(OnceError::Workspace)?;
        ui.event(Event::Batch {
            label: &batch.label,
            vault: &batch.vault,
        });
        let started = Instant::now();
        let progress = Progress::default();
        let result = ui.capture(&progress, &mut || {
            take_points(&vault, &batch.targets, &opts, &progress)
        });
        let took = started.elapsed();
        match result {
            Ok(points) => ui.event(Event::Taken {
                protections: &batch.protections,
                points: &points,
                took,
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
