//! `standby restore POINT --disk NAME --to PATH`: write one disk of a
//! recovery point to a file (sparse) or block device, byte for byte.

use super::vault::{human, load_config, open, parse_addr};
use crate::model::Kind;
use crate::replication::{self, Progress};
use crate::vault::manifest;
use miette::miette;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Point id, a unique prefix of one, or `latest`.
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
    /// Only consider points of this machine (needed with `latest` when there are several).
    #[arg(long, value_name = "ADDR")]
    pub machine: Option<String>,
    /// The vault to read (`vault.main`); default: every configured vault.
    #[arg(long, value_name = "VAULT")]
    pub vault: Option<String>,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let cfg = load_config(&args.vars)?;
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
    let in_use = replication::target::in_use_disks(&cfg, state.as_ref());
    replication::target::check(&args.to, args.force, &in_use).map_err(|e| miette!("{e}"))?;
    let vaults = super::vault::pick_vaults(&cfg, args.vault.as_deref())?;
    let mut opened = Vec::new();
    for addr in vaults {
        let vault = open(&cfg, &addr)?;
        // The catalog of the machine (or the vault's), not every manifest:
        // only the chosen point's manifest is read, so a damaged or hostile
        // other one cannot stop the restore of a good point.
        // A full id is looked up by its manifest, the truth, directly.
        let (points, bad) = match crate::vault::Id::parse(&args.point) {
            Some(id) => match manifest::read(&vault, &id) {
                Ok(m) => (vec![m], Vec::new()),
                Err(crate::vault::VaultError::Missing { .. }) => (Vec::new(), Vec::new()),
                Err(e) => (Vec::new(), vec![e]),
            },
            None => (
                crate::vault::catalog::list_for(&vault, machine.as_deref())
                    .map_err(|e| miette!("{addr}: {e}"))?,
                Vec::new(),
            ),
        };
        opened.push((addr, vault, points, bad));
    }
    if args.point == "latest" && machine.is_none() {
        let machines: std::collections::BTreeSet<&str> = opened
            .iter()
            .flat_map(|(_, _, points, _)| points.iter().map(|p| p.machine.as_str()))
            .collect();
        if machines.len() > 1 {
            let list: Vec<&str> = machines.into_iter().collect();
            return Err(miette!(
                "`latest` is ambiguous: the vaults hold points of {}; say which with --machine (e.g. --machine {})",
                list.join(", "),
                list[0]
            ));
        }
    }
    let mut last_err = None;
    for (addr, vault, points, bad) in &opened {
        let point = match manifest::find(vault, points, &args.point, machine.as_deref()) {
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
        // A catalog entry has no extents: the point itself, read whole.
        let point = &manifest::read(vault, &point.id).map_err(|e| miette!("{addr}: {e}"))?;
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
