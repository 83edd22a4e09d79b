//! `standby replicate [ADDR...]`: take a recovery point now for the given
//! protections (default: all). Protections sharing a consistency group (and
//! a vault) get one point instant together. With `--watch`, a long-running
//! service instead (see `cli::watch` and the `watch` module).

use super::vault::{cache_dir, human, load_config, open, parse_addr};
use crate::model::{Address, Kind};
use crate::replication::{self, Options, Progress};
use miette::miette;
use std::collections::BTreeMap;
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
    /// Print what was taken as JSON on stdout, with the object-store
    /// requests each point cost (`requests`: get, put, list, delete, head,
    /// bytes_in, bytes_out).
    #[arg(long)]
    pub json: bool,
    /// Capture this many batches (consistency groups or lone protections)
    /// at once; each still takes one point instant. Points taken in
    /// parallel report no per-point request count, only the run's.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub parallelism: usize,
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
    let (chosen, doc) = skip_failed_over(&cfg, chosen)?;
    if chosen.is_empty() {
        eprintln!("nothing to replicate");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.trust_state {
        let backend = crate::state::open_backend(std::path::Path::new("."), cfg.backend.as_ref())
            .map_err(miette::Report::new)?;
        let problems = crate::recovery::placement::check_vaults(
            &cfg,
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
    let mut batches = replication::batches(&cfg, &chosen).map_err(|e| miette!("{e}"))?;
    // Reprotected machines: their points come from where they run now.
    if let Some(doc) = &doc {
        crate::recovery::reprotect::redirect(&mut batches, doc);
    }
    let opts = Options::new(cache_dir(&cfg));
    let mut failed = 0;
    let mut vaults = BTreeMap::new();
    let mut taken: Vec<serde_json::Value> = Vec::new();
    let mut errors: Vec<serde_json::Value> = Vec::new();
    for b in &batches {
        if !vaults.contains_key(&b.vault) {
            vaults.insert(b.vault.clone(), open(&cfg, &b.vault)?);
        }
    }
    // Several batches at once: a round's time is then not the sum of every
    // point's request latencies. One batch keeps its progress bar.
    let workers = args.parallelism.clamp(1, batches.len().max(1));
    let mut done = parallel_points(&batches, &vaults, &opts, workers);
    for (i, batch) in batches.into_iter().enumerate() {
        let (vault_addr, label, prots) = (batch.vault, batch.label, batch.protections);
        eprintln!("replicating {label} into {vault_addr}");
        let (result, took, cost) = match done.get_mut(i).and_then(Option::take) {
            Some(r) => r,
            None => {
                let vault = &vaults[&vault_addr];
                let started = Instant::now();
                let progress = Progress::default();
                let before = crate::store::counts();
                let result = super::progress::with_progress(
                    &progress,
                    super::progress::Work::Replicate,
                    || replication::take_points(vault, &batch.targets, &opts, &progress),
                );
                let cost = crate::store::counts().since(&before);
                (result, started.elapsed(), Some(cost))
            }
        };
        match result {
            Ok(points) if args.json => {
                for (a, m) in prots.iter().zip(&points) {
                    taken.push(serde_json::json!({
                        "protection": a.to_string(),
                        "vault": vault_addr.to_string(),
                        "id": m.id.hex(),
                        "consistency": m.consistency,
                        "group": m.group,
                        "stats": m.stats,
                        "seconds": took.as_secs_f64(),
                        // A group's members share one capture: its cost
                        // (null when batches ran in parallel).
                        "requests": cost,
                    }));
                }
            }
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
                errors.push(serde_json::json!({"batch": label, "error": e.to_string()}));
            }
        }
    }
    if args.json {
        let doc = serde_json::json!({
            "points": taken,
            "errors": errors,
            "requests": crate::store::counts(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

type Taken = (
    Result<Vec<crate::vault::Manifest>, replication::ReplicationError>,
    Duration,
    Option<crate::store::Counts>,
);

/// Take the points of `batches` with `workers` threads, when more than one:
/// results in batch order (None everywhere with one worker: the caller
/// then takes them one by one, with progress).
fn parallel_points(
    batches: &[replication::Batch],
    vaults: &BTreeMap<Address, crate::vault::Vault>,
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
                        let Some(b) = batches.get(i) else { return };
                        let started = Instant::now();
                        let r = replication::take_points(
                            &vaults[&b.vault],
                            &b.targets,
                            opts,
                            &Progress::default(),
                        );
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
