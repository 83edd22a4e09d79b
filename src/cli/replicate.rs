//! `standby replicate [ADDR...]`: take a recovery point now for the given
//! protections (default: all). Protections sharing a consistency group (and
//! a vault) get one point instant together. With `--watch`, a long-running
//! service instead (see `cli::watch` and the `watch` module).

use super::load_config;
use super::vault::parse_addr;
use crate::human::size as human;
use crate::model::{Address, Kind};
use crate::replication::{self, Options, Progress};
use crate::workspace::Workspace;
use miette::miette;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    let cfg = &ws.config;
    let (chosen, doc) = skip_failed_over(cfg, chosen)?;
    if chosen.is_empty() {
        eprintln!("nothing to replicate");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.trust_state {
        let backend = crate::state::open_backend(std::path::Path::new("."), cfg.backend.as_ref())
            .map_err(miette::Report::new)?;
        let problems = crate::recovery::placement::check_vaults(
            cfg,
            doc.as_ref(),
            backend.orphaned_backup().as_deref(),
            &chosen,
        );
        if !problems.is_empty() {
            return Err(miette!(
                help = "restore the state from its backup, or pass --trust-state if the state is right; nothing was captured",
                "refusing to guess where the machines run:\n  - {}",
                problems.join("\n  - ")
            ));
        }
    }
    let mut batches = replication::batches(cfg, &chosen).map_err(|e| miette!("{e}"))?;
    // Reprotected machines: their points come from where they run now.
    if let Some(doc) = &doc {
        crate::recovery::reprotect::redirect(&mut batches, doc);
    }
    let opts = Options::new(ws.cache_dir());
    let mut failed = 0;
    for batch in batches {
        let (vault_addr, label, prots, targets) =
            (batch.vault, batch.label, batch.protections, batch.targets);
        let vault = ws.vault(&vault_addr).map_err(|e| miette!("{e}"))?;
        let vault = vault.as_ref();
        eprintln!("replicating {label} into {vault_addr}");
        let started = Instant::now();
        let progress = Progress::default();
        let result =
            super::progress::with_progress(&progress, super::progress::Work::Replicate, || {
                replication::take_points(vault, &targets, &opts, &progress)
            });
        let took = started.elapsed();
        match result {
            Ok(points) => {
                for (a, m) in prots.iter().zip(&points) {
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
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {label}: {e}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Drop protections whose machine is failed over (a failover run in the
/// state that did not fail) and not reprotected: its source is stopped or
/// gone, and its points must not move past the failover. Says so for each
/// one skipped. A reprotected machine stays (its DR disks are captured).
fn skip_failed_over(
    cfg: &crate::model::Config,
    chosen: Vec<Address>,
) -> miette::Result<(Vec<Address>, Option<crate::state::StateDoc>)> {
    let backend = crate::state::open_backend(std::path::Path::new("."), cfg.backend.as_ref())
        .map_err(miette::Report::new)?;
    let Some(doc) = backend.read().map_err(miette::Report::new)? else {
        return Ok((chosen, None));
    };
    let mut keep = Vec::new();
    for a in chosen {
        let machine = cfg.protections.get(&a).map(|p| p.machine.to_string());
        let capture = machine
            .as_deref()
            .map(|m| crate::recovery::placement::capture_of(cfg, Some(&doc), m));
        match capture {
            Some(crate::recovery::placement::Capture::Skip { reason, .. }) => {
                eprintln!("skipping {a}: {reason}");
            }
            _ => keep.push(a),
        }
    }
    Ok((keep, Some(doc)))
}
