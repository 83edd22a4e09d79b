//! `standby restore POINT --disk NAME --to PATH`: write one disk of a
//! recovery point to a file (sparse) or block device, byte for byte.

use super::load_config;
use super::vault::parse_addr;
use crate::human::size as human;
use crate::model::Kind;
use crate::replication::{self, Progress};
use crate::vault::manifest;
use crate::vault::query::PointQuery;
use crate::workspace::Workspace;
use miette::miette;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `latest`, `latest-app`, a point id or a unique prefix of one (at
    /// least 4 hex digits), or an RFC 3339 time (the newest point at or
    /// before it).
    #[arg(value_name = "POINT")]
    pub point: String,
    /// Disk name, as declared in the machine (`system`, `data`).
    #[arg(long, value_name = "NAME")]
    pub disk: String,
    /// Where to write the disk: a file (replaced when done) or a block device.
    #[arg(long, value_name = "PATH")]
    pub to: PathBuf,
    /// Replace an existing file, or write over an existing block device.
    #[arg(long)]
    pub force: bool,
    /// Only consider points of this machine (needed with `latest`, `latest-app` or a time when there are several).
    #[arg(long, value_name = "ADDR")]
    pub machine: Option<String>,
    /// The vault to read (`vault.main`); default: every configured vault.
    #[arg(long, value_name = "VAULT")]
    pub vault: Option<String>,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let query: PointQuery = args.point.parse().map_err(|e| miette!("{e}"))?;
    let ws = Workspace::new(load_config(&args.vars)?);
    let cfg = &ws.config;
    let machine = match &args.machine {
        Some(s) => Some(parse_addr(s, Kind::Machine)?.to_string()),
        None => None,
    };
    // Disks machines use, from the configuration and the recovery runs the
    // state records: checked before anything is written.
    let state = crate::state::open_backend(&cfg.root, cfg.backend.as_ref())
        .and_then(|b| b.read())
        .map_err(|e| {
            miette!(
                "cannot read the state to check that {} is no machine's disk: {e}",
                args.to.display()
            )
        })?;
    let in_use = replication::target::in_use_disks(cfg, state.as_ref());
    replication::target::check(&args.to, args.force, &in_use).map_err(|e| miette!("{e}"))?;
    let vaults = super::vault::pick_vaults(cfg, args.vault.as_deref())?;
    let mut opened = Vec::new();
    for addr in vaults {
        let vault = ws.vault(&addr).map_err(|e| miette!("{e}"))?;
        // A damaged or hostile manifest must not stop the restore of a good
        // point: list tolerantly, and name the bad ones only if the point
        // asked for is not among the good.
        let (points, bad) = manifest::list(&vault, true).map_err(|e| miette!("{addr}: {e}"))?;
        opened.push((addr, vault, points, bad));
    }
    if !query.is_id() && machine.is_none() {
        let machines: std::collections::BTreeSet<&str> = opened
            .iter()
            .flat_map(|(_, _, points, _)| points.iter().map(|p| p.machine.as_str()))
            .collect();
        if machines.len() > 1 {
            let list: Vec<&str> = machines.into_iter().collect();
            return Err(miette!(
                "`{}` is ambiguous: the vaults hold points of {}; say which with --machine (e.g. --machine {})",
                args.point,
                list.join(", "),
                list[0]
            ));
        }
    }
    let mut last_err = None;
    for (addr, vault, points, bad) in &opened {
        let found = manifest::find(vault, points, &args.point, machine.as_deref());
        let point = match found {
            Ok(p) => p,
            Err(e) if bad.is_empty() => {
                last_err = Some(miette!("{e}"));
                continue;
            }
            Err(e) => {
                let refused: Vec<String> = bad.iter().map(|b| format!("  - {b}")).collect();
                last_err = Some(miette!(
                    "{e}; {addr} also holds point manifests that were refused, nothing was restored from them:\n{}",
                    refused.join("\n")
                ));
                continue;
            }
        };
        let started = Instant::now();
        let progress = Progress::default();
        let r = super::progress::with_progress(&progress, super::progress::Work::Restore, || {
            replication::restore_checked(
                vault, point, &args.disk, &args.to, args.force, &in_use, &progress,
            )
        })
        .map_err(|e| miette!("{e}"))?;
        println!(
            "restored disk {} of point {} ({}, {}) to {}: {} ({} of data) in {}",
            args.disk,
            point.id.short(),
            point.machine,
            crate::human::time_str(&point.created),
            args.to.display(),
            human(r.size),
            human(r.data),
            crate::human::duration(started.elapsed())
        );
        return Ok(ExitCode::SUCCESS);
    }
    Err(last_err.unwrap_or_else(|| miette!("no vault to restore from")))
}
