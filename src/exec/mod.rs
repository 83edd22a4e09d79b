//! The executor: walks a graph of steps with tokio (after OpenTofu's dag
//! walker). Each step runs once every step it depends on finished OK;
//! independent steps run in parallel, at most `parallelism` at a time (a
//! tokio semaphore). A failed step stops its dependants (reported as
//! skipped, naming the failure) and lets unrelated steps finish. On
//! cancellation no new step starts; running ones finish or, if they watch
//! the [`Cancel`] they are given, stop early. Every change of a step's
//! fate goes to a [`Sink`] as an [`Event`].
//!
//! The walker knows nothing of vaults or machines: a node is anything
//! printable, and the caller's function does the work. Edges point from a
//! step to a step it depends on (the plan graph's direction).

mod cancel;
mod events;

pub use cancel::{Cancel, CancelRunError, Listening, with_cancel};
pub use events::{Event, JsonSink, PlainSink, Recorded, Sink};

use futures::FutureExt;
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::VecDeque;
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How a step did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// It failed; its dependants are skipped.
    Failed(String),
    /// It saw the cancellation and stopped early, leaving things consistent.
    Abandoned(String),
}

/// What became of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Finished OK, with the step's own short description of what it did.
    Done {
        elapsed: Duration,
        detail: String,
    },
    Failed {
        elapsed: Duration,
        error: String,
    },
    Abandoned {
        elapsed: Duration,
        reason: String,
    },
    /// A step it depends on (this one, directly or not) failed.
    Skipped {
        cause: NodeIndex,
    },
    /// The run was interrupted before it could start.
    NotStarted,
}

impl Outcome {
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done { .. })
    }
}

/// The result of a walk: one outcome per node, indexed by node index.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Cancellation was requested during the walk.
    pub interrupted: bool,
}

impl Report {
    /// Every step finished OK.
    pub fn all_done(&self) -> bool {
        self.outcomes.iter().all(Outcome::is_done)
    }

    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|o| f(o)).count()
    }
}

/// Walk `graph`, calling `step(node, cancel)` for each node in dependency
/// order, at most `parallelism` (at least 1) at a time.
pub async fn walk<N, F, Fut>(
    graph: &DiGraph<N, ()>,
    parallelism: usize,
    cancel: &Cancel,
    sink: &dyn Sink,
    step: F,
) -> Report
where
    N: Display,
    F: Fn(NodeIndex, Cancel) -> Fut,
    Fut: Future<Output = Result<String, StepError>> + Send + 'static,
{
    let n = graph.node_count();
    let name = |i: NodeIndex| graph[i].to_string();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    // How many dependencies each node still waits for (edges deduplicated).
    let mut waiting: Vec<usize> = graph
        .node_indices()
        .map(|i| {
            let mut deps: Vec<NodeIndex> =
                graph.neighbors_directed(i, Direction::Outgoing).collect();
            deps.sort_unstable();
            deps.dedup();
            deps.len()
        })
        .collect();
    let mut ready: VecDeque<NodeIndex> = graph
        .node_indices()
        .filter(|i| waiting[i.index()] == 0)
        .collect();
    let permits = Arc::new(Semaphore::new(parallelism.max(1)));
    let mut running: JoinSet<(NodeIndex, Duration, Result<String, StepError>)> = JoinSet::new();
    let mut interrupted = false;

    loop {
        // Checked here as well as in the select below: a step may cancel
        // and finish at once, and the select may see its end first.
        if !interrupted && cancel.is_cancelled() {
            interrupted = true;
            sink.event(&Event::Interrupted {
                running: running.len(),
            });
        }
        // Start everything ready that a permit allows. The token itself is
        // asked, not only `interrupted`: a step that saw the interrupt and
        // ended frees its permit before this loop has noticed it.
        while let Some(i) = ready
            .front()
            .copied()
            .filter(|_| !interrupted && !cancel.is_cancelled())
        {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            ready.pop_front();
            sink.event(&Event::Started { step: name(i) });
            let fut = step(i, cancel.clone());
            running.spawn(async move {
                let started = Instant::now();
                // A panicking step fails like any other, keeping its index.
                let r = AssertUnwindSafe(fut)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(StepError::Failed("the step panicked (a bug)".to_string()))
                    });
                drop(permit);
                (i, started.elapsed(), r)
            });
        }
        if running.is_empty() {
            break;
        }
        let joined = tokio::select! {
            j = running.join_next() => j,
            // Handled at the top of the loop.
            _ = cancel.cancelled(), if !interrupted => continue,
        };
        let Some(joined) = joined else { break };
        let (i, elapsed, result) = match joined {
            Ok(r) => r,
            // Only an aborted task ends here; the walker aborts none.
            Err(e) => {
                tracing::error!("a step task ended abnormally: {e}");
                continue;
            }
        };
        match result {
            Ok(detail) => {
                sink.event(&Event::Finished {
                    step: name(i),
                    elapsed,
                    detail: detail.clone(),
                });
                outcomes[i.index()] = Some(Outcome::Done { elapsed, detail });
                for d in dependants(graph, i) {
                    waiting[d.index()] -= 1;
                    if waiting[d.index()] == 0 && outcomes[d.index()].is_none() {
                        ready.push_back(d);
                    }
                }
            }
            Err(StepError::Failed(error)) => {
                sink.event(&Event::Failed {
                    step: name(i),
                    elapsed,
                    error: error.clone(),
                });
                outcomes[i.index()] = Some(Outcome::Failed { elapsed, error });
                skip_dependants(graph, i, &mut outcomes, sink);
            }
            Err(StepError::Abandoned(reason)) => {
                sink.event(&Event::Abandoned {
                    step: name(i),
                    elapsed,
                    reason: reason.clone(),
                });
                outcomes[i.index()] = Some(Outcome::Abandoned { elapsed, reason });
            }
        }
    }
    let outcomes = graph
        .node_indices()
        .map(|i| {
            outcomes[i.index()].clone().unwrap_or_else(|| {
                sink.event(&Event::NotStarted { step: name(i) });
                Outcome::NotStarted
            })
        })
        .collect();
    Report {
        outcomes,
        interrupted,
    }
}

/// The steps that depend on `i` directly.
fn dependants<N>(graph: &DiGraph<N, ()>, i: NodeIndex) -> Vec<NodeIndex> {
    let mut v: Vec<NodeIndex> = graph.neighbors_directed(i, Direction::Incoming).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Mark every step depending on `failed`, directly or not, as skipped.
fn skip_dependants<N: Display>(
    graph: &DiGraph<N, ()>,
    failed: NodeIndex,
    outcomes: &mut [Option<Outcome>],
    sink: &dyn Sink,
) {
    let mut todo = dependants(graph, failed);
    while let Some(d) = todo.pop() {
        if outcomes[d.index()].is_some() {
            continue;
        }
        sink.event(&Event::Skipped {
            step: graph[d].to_string(),
            cause: graph[failed].to_string(),
        });
        outcomes[d.index()] = Some(Outcome::Skipped { cause: failed });
        todo.extend(dependants(graph, d));
    }
}

#[cfg(test)]
mod tests;
