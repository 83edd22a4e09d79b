//! `standby vault init|prune|claim|compact|verify`; `pick_vaults` and `parse_addr` also
//! serve `restore` and the commands that name an object.

use super::load_config;
use crate::human::size as human;
use crate::maintenance;
use crate::model::{Address, Config, Kind};
use crate::workspace::Workspace;
use miette::{IntoDiagnostic, miette};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the vault layout and, when none exists yet, a master key file.
    Init {
        /// The vault to create (e.g. `vault.main`); default: every vault.
        vault: Option<String>,
        #[command(flatten)]
        vars: crate::cli::VarArgs,
    },
    /// Drop points past their policy's retention and delete unreferenced data.
    Prune {
        /// The vault to prune; default: every vault.
        vault: Option<String>,
        /// Show what would be dropped and freed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long to wait for another prune, compaction or claim: `30s`, `10m`
        /// (a bare number is seconds). Writers never make it wait.
        #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = wait_secs)]
        wait: u64,
        /// How long data this prune finds unreferenced stays marked before a later
        /// prune deletes it (longer than any pause of a writer: writers never wait).
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        grace: crate::model::Duration,
        #[command(flatten)]
        vars: crate::cli::VarArgs,
    },
    /// Hand this configuration the points of its machines that carry no owner
    /// (written before owners were recorded, or without a state).
    Claim {
        /// The vault; default: every vault.
        vault: Option<String>,
        /// How long to wait for a prune or compaction to finish: `30s`, `10m` (a
        /// bare number is seconds). Replications hold no lock and go on.
        #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = wait_secs)]
        wait: u64,
        #[command(flatten)]
        vars: crate::cli::VarArgs,
    },
    /// Merge the vault's index objects into one (replications may run meanwhile).
    Compact {
        /// The vault to compact; default: every vault.
        vault: Option<String>,
        #[command(flatten)]
        vars: crate::cli::VarArgs,
    },
    /// Check that every referenced object exists (and with --read-data, authenticates).
    Verify {
        /// The vault to verify; default: every vault.
        vault: Option<String>,
        /// Read and authenticate every object, not just the structure.
        #[arg(long)]
        read_data: bool,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        vars: crate::cli::VarArgs,
    },
}

/// Parse `kind.name` or a bare `name` of the given kind.
pub(crate) fn parse_addr(s: &str, kind: Kind) -> miette::Result<Address> {
    Address::parse_as(s, kind).map_err(|e| miette!("{e}"))
}

/// The vaults named (or all), each checked to exist.
pub(crate) fn pick_vaults(cfg: &Config, which: Option<&str>) -> miette::Result<Vec<Address>> {
    match which {
        None => {
            if cfg.vaults.is_empty() {
                return Err(miette!("the configuration declares no vault"));
            }
            Ok(cfg.vaults.keys().cloned().collect())
        }
        Some(s) => {
            let a = parse_addr(s, Kind::Vault)?;
            if !cfg.vaults.contains_key(&a) {
                let have: Vec<String> = cfg.vaults.keys().map(|a| a.to_string()).collect();
                return Err(super::closing::unknown_addr(&a.to_string(), &have));
            }
            Ok(vec![a])
        }
    }
}

pub fn run(cmd: Command) -> miette::Result<ExitCode> {
    match cmd {
        Command::Init { vault, vars } => init(vault.as_deref(), &vars),
        Command::Prune {
            vault,
            dry_run,
            wait,
            grace,
            vars,
        } => prune_cmd(vault.as_deref(), dry_run, wait, grace.to_std(), &vars),
        Command::Verify {
            vault,
            read_data,
            json,
            vars,
        } => verify_cmd(vault.as_deref(), read_data, json, &vars),
        Command::Compact { vault, vars } => compact_cmd(vault.as_deref(), &vars),
        Command::Claim { vault, wait, vars } => claim_cmd(vault.as_deref(), wait, &vars),
    }
}

fn compact_cmd(which: Option<&str>, vars: &crate::cli::VarArgs) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(vars)?);
    for addr in pick_vaults(&ws.config, which)? {
        let r = maintenance::compact(&ws, &addr).map_err(|e| miette!("{e}"))?;
        println!(
            "{addr}: merged {} into one ({} packs, {} blobs)",
            crate::human::count(r.merged, "index object"),
            r.packs,
            r.blobs
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn init(which: Option<&str>, vars: &crate::cli::VarArgs) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(vars)?);
    for addr in pick_vaults(&ws.config, which)? {
        let out = maintenance::init(&ws, &addr).map_err(|e| miette!("{e}"))?;
        if out.existed {
            println!(
                "{addr}: vault {} exists already; the key opens it.",
                out.url
            );
        } else {
            println!("{addr}: created vault {}.", out.url);
        }
        if let Some(path) = out.key_created {
            println!(
                "{addr}: wrote a new master key to {} (mode 0600).\n  Back it up somewhere safe: without it nothing in the vault can be read.",
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn claim_cmd(
    which: Option<&str>,
    wait: u64,
    vars: &crate::cli::VarArgs,
) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(vars)?);
    for addr in pick_vaults(&ws.config, which)? {
        let r = maintenance::claim(&ws, &addr, Duration::from_secs(wait))
            .map_err(|e| miette!("{e}"))?;
        println!(
            "{addr}: claimed {}; {} without an owner left (other machines)",
            crate::human::count(r.points.len(), "point"),
            r.left
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn prune_cmd(
    which: Option<&str>,
    dry_run: bool,
    wait: u64,
    grace: Duration,
    vars: &crate::cli::VarArgs,
) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(vars)?);
    for addr in pick_vaults(&ws.config, which)? {
        let r = maintenance::prune(
            &ws,
            &addr,
            crate::vault::clock::now(),
            dry_run,
            Duration::from_secs(wait),
            grace,
        )
        .map_err(|e| miette!("{e}"))?;
        let verb = if dry_run { "would drop" } else { "dropped" };
        println!(
            "{addr}: {verb} {}, kept {}; {} {}, {} freed",
            crate::human::count(r.dropped.len(), "point"),
            r.kept,
            if dry_run { "would delete" } else { "deleted" },
            crate::human::count(r.packs_deleted as usize, "pack"),
            human(r.bytes_freed)
        );
        for id in &r.dropped {
            println!("  - {}", &id[..12]);
        }
        if let Some(ahead) = r.host_clock_ahead_seconds {
            eprintln!(
                "warning: this host's clock is {} ahead of the vault store's: retention was judged by the store's clock (fix this host's time sync)",
                crate::model::Duration::from_secs(ahead.unsigned_abs())
            );
        }
        if r.packs_marked > 0 {
            println!(
                "  {} ({}) no point references: marked, deleted by a prune {} from now",
                crate::human::count(r.packs_marked, "pack"),
                human(r.bytes_marked),
                crate::model::Duration::from_secs(grace.as_secs())
            );
        }
        if !r.held.is_empty() {
            println!(
                "  {} past retention kept: a recovery run reads {} from the vault (instant recovery); pruned once it lets go",
                crate::human::count(r.held.len(), "point"),
                if r.held.len() == 1 { "it" } else { "them" }
            );
            for id in &r.held {
                println!("  = {}", &id[..12]);
            }
        }
        if !r.folded.is_empty() {
            println!(
                "  {} re-based onto kept ancestors",
                crate::human::count(r.folded.len(), "point")
            );
        }
        if r.packs_partly_garbage > 0 {
            println!(
                "  {} still {} {} of unreferenced data next to live data (not repacked)",
                crate::human::count(r.packs_partly_garbage as usize, "pack"),
                if r.packs_partly_garbage == 1 {
                    "holds"
                } else {
                    "hold"
                },
                human(r.garbage_bytes_left)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_cmd(
    which: Option<&str>,
    read_data: bool,
    json: bool,
    vars: &crate::cli::VarArgs,
) -> miette::Result<ExitCode> {
    let ws = Workspace::new(load_config(vars)?);
    let mut ok = true;
    let mut docs = Vec::new();
    for addr in pick_vaults(&ws.config, which)? {
        let (url, r) = maintenance::verify(&ws, &addr, read_data).map_err(|e| miette!("{e}"))?;
        ok &= r.problems.is_empty();
        if json {
            docs.push(serde_json::json!({ "vault": addr.to_string(), "url": url, "report": r }));
            continue;
        }
        if r.problems.is_empty() {
            println!(
                "{addr}: ok — {}, {}, {}{}",
                crate::human::count(r.points, "point"),
                crate::human::count(r.packs, "pack"),
                crate::human::count(r.blobs, "blob"),
                if read_data {
                    format!(", {} read and authenticated", human(r.bytes_read))
                } else {
                    String::new()
                }
            );
        } else {
            println!(
                "{addr}: {}",
                crate::human::count(r.problems.len(), "problem")
            );
            for p in &r.problems {
                println!("  {}: {}", p.object, p.reason);
                if !p.points.is_empty() {
                    let ids: Vec<&str> = p.points.iter().map(|s| &s[..12]).collect();
                    let what = if ids.len() == 1 { "point" } else { "points" };
                    println!("    affects {what}: {}", ids.join(", "));
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&docs).into_diagnostic()?);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--wait`: a duration (`30s`, `10m`) or, as before, bare seconds.
fn wait_secs(s: &str) -> Result<u64, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    s.parse::<crate::model::Duration>()
        .map(|d| d.as_secs())
        .map_err(|e| format!("{e} (e.g. `30s`, `10m`)"))
}
