//! `standby replicate [ADDR...]`: take a recovery point now for the given
//! protections (default: all). Protections sharing a consistency group (and
//! a vault) get one point instant together. With `--watch`, a long-running
//! service instead (see `cli::watch` and the `watch` module).

use super::load_config;
use super::vault::parse_addr;
use crate::human::size as human;
use crate::model::{Address, Kind};
use crate::replication::once::{self, Event, OnceError};
use crate::replication::{self, Progress, ReplicationError};
use crate::vault::manifest::Manifest;
use crate::workspace::Workspace;
use miette::miette;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Protections to replicate (`protection.db` or just `db`); default: all.
    #[arg(value_name = "ADDR")]
    pub addrs: Vec<String>,
    /// Capture although the state and the vault disagree on where a machine
    /// runs (its newest point came from another site): the state is right,
    /// e.g. the machine was moved back by hand. Without it such a
    /// protection is refused, since a lost or stale state would capture an
    /// old copy over newer data.
    #[arg(long)]
    pub trust_state: bool,
    #[command(flatten)]
    pub watch: super::watch::WatchArgs,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let cfg = load_config(&args.vars)?;
    let chosen: Vec<Address> = if args.addrs.is_empty() {
        cfg.protections.keys().cloned().collect()
    } else {
        let mut v = Vec::new();
        for s in &args.addrs {
            let a = parse_addr(s, Kind::Protection)?;
            if !cfg.protections.contains_key(&a) {
                let have: Vec<String> = cfg.protections.keys().map(|a| a.to_string()).collect();
                return Err(super::closing::unknown_addr(&a.to_string(), &have));
            }
            v.push(a);
        }
        v
    };
    if args.watch.watch {
        // The service decides every round where each machine runs.
        let batches = replication::batches(&cfg, &chosen).map_err(|e| miette!("{e}"))?;
        return super::watch::run(cfg, batches, &args.watch);
    }
    let ws = Workspace::new(cfg);
    let failed = once::run(&ws, chosen, args.trust_state, &Terminal).map_err(|e| match e {
        // Rendered as the state's own errors are everywhere else.
        OnceError::State(e) => miette::Report::new(e),
        e => match e.help() {
            Some(help) => miette!(help = help, "{e}"),
            None => miette!("{e}"),
        },
    })?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Progress on stderr, a line per point taken on stdout.
struct Terminal;

impl once::Ui for Terminal {
    fn event(&self, e: Event<'_>) {
        match e {
            Event::Skipping { protection, reason } => eprintln!("skipping {protection}: {reason}"),
            Event::Nothing => eprintln!("nothing to replicate"),
            Event::Batch { label, vault } => eprintln!("replicating {label} into {vault}"),
            Event::Taken {
                protections,
                points,
                took,
            } => {
                for (a, m) in protections.iter().zip(points) {
                    let frozen = m
                        .freeze_ms
                        .map(|ms| {
                            format!(
                                ", frozen {}",
                                crate::human::duration(Duration::from_millis(ms))
                            )
                        })
                        .unwrap_or_default();
                    let group = m
                        .group
                        .as_ref()
                        .map(|g| format!(", group {g}"))
                        .unwrap_or_default();
                    println!(
                        "{a}: point {} ({}{group}) read {}, new {}, stored {}{frozen}, {}",
                        m.id.short(),
                        m.consistency,
                        human(m.stats.read),
                        human(m.stats.new),
                        human(m.stats.stored),
                        crate::human::duration(took)
                    );
                    for line in m.cbt.iter().flat_map(crate::replication::vm::describe) {
                        println!("  {line}");
                    }
                }
            }
            Event::Failed { label, error } => eprintln!("error: {label}: {error}"),
        }
    }

    fn capture(
        &self,
        progress: &Progress,
        run: &mut dyn FnMut() -> Result<Vec<Manifest>, ReplicationError>,
    ) -> Result<Vec<Manifest>, ReplicationError> {
        super::progress::with_progress(progress, super::progress::Work::Replicate, run)
    }
}
