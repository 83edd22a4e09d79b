//! `standby replicate [ADDR...]`: take a recovery point now for the given
//! protections (default: all). Protections sharing a consistency group (and
//! a vault) get one point instant together.

use super::vault::{cache_dir, human, load_config, open, parse_addr};
use crate::model::{Address, Config, Kind};
use crate::replication::{self, Options, Progress, Target};
use miette::miette;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Protections to replicate (`protection.db` or just `db`); default: all.
    #[arg(value_name = "ADDR")]
    pub addrs: Vec<String>,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

/// The capture target for one protection, from the configuration.
pub(crate) fn target_for(cfg: &Config, prot: &Address) -> miette::Result<Target> {
    let p = &cfg.protections[prot];
    let m = cfg
        .machines
        .get(&p.machine)
        .ok_or_else(|| miette!("{prot}: no {} in the configuration", p.machine))?;
    let policy = cfg
        .policies
        .get(&p.policy)
        .ok_or_else(|| miette!("{prot}: no {} in the configuration", p.policy))?;
    let site = cfg
        .sites
        .get(&m.site)
        .ok_or_else(|| miette!("{}: no {} in the configuration", m.addr, m.site))?;
    let root = cfg
        .root
        .join(site.root.clone().unwrap_or_else(|| PathBuf::from(".")));
    Ok(Target::from_model(p, m, policy, &root))
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
                return Err(miette!(
                    "no {a} in the configuration (it has: {})",
                    have.join(", ")
                ));
            }
            v.push(a);
        }
        v
    };
    // One batch per (vault, consistency group); ungrouped protections alone.
    let mut batches: BTreeMap<(Address, String), Vec<Address>> = BTreeMap::new();
    for a in &chosen {
        let p = &cfg.protections[a];
        let key = match &p.consistency_group {
            Some(g) => format!("group {g}"),
            None => a.to_string(),
        };
        batches
            .entry((p.vault.clone(), key))
            .or_default()
            .push(a.clone());
    }
    let opts = Options::new(cache_dir(&cfg));
    let mut failed = 0;
    let mut vaults = BTreeMap::new();
    for ((vault_addr, label), prots) in batches {
        if !vaults.contains_key(&vault_addr) {
            vaults.insert(vault_addr.clone(), open(&cfg, &vault_addr)?);
        }
        let vault = &vaults[&vault_addr];
        let targets = prots
            .iter()
            .map(|a| target_for(&cfg, a))
            .collect::<miette::Result<Vec<_>>>()?;
        eprintln!("replicating {label} into {vault_addr}");
        let started = Instant::now();
        let progress = Progress::default();
        let result = with_progress(&progress, || {
            replication::take_points(vault, &targets, &opts, &progress)
        });
        let took = started.elapsed();
        match result {
            Ok(points) => {
                for (a, m) in prots.iter().zip(&points) {
                    let frozen = m
                        .freeze_ms
                        .map(|ms| format!(", frozen {ms} ms"))
                        .unwrap_or_default();
                    let group = m
                        .group
                        .as_ref()
                        .map(|g| format!(", group {g}"))
                        .unwrap_or_default();
                    println!(
                        "{a}: point {} ({}{group}) read {}, new {}, stored {}{frozen}, {:.1}s",
                        m.id.short(),
                        m.consistency,
                        human(m.stats.read),
                        human(m.stats.new),
                        human(m.stats.stored),
                        took.as_secs_f64()
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

/// Run `f` while showing `progress`: a bar on a terminal, nothing otherwise
/// (the caller prints plain lines before and after).
pub(crate) fn with_progress<T>(progress: &Progress, f: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return f();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} read, {msg} stored, {bytes_per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                bar.set_length(progress.total.load(Ordering::Relaxed));
                bar.set_position(progress.read.load(Ordering::Relaxed));
                bar.set_message(human(progress.stored.load(Ordering::Relaxed)));
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        let out = f();
        done.store(true, Ordering::Relaxed);
        out
    })
}
