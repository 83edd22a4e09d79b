//! `standby restore POINT --disk NAME --to PATH`: write one disk of a
//! recovery point to a file (sparse) or block device, byte for byte.

use super::load_config;
use super::vault::parse_addr;
use crate::human::size as human;
use crate::model::Kind;
use crate::operations::restore::{self as named, Request};
use crate::progress::Progress;
use crate::workspace::Workspace;
use miette::miette;
use std::path::PathBuf;
use std::process::ExitCode;

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
    let query = crate::points::query(&args.point).map_err(|e| miette!("{e}"))?;
    let ws = Workspace::new(load_config(&args.vars)?);
    let cfg = &ws.config;
    let machine = match &args.machine {
        Some(s) => Some(parse_addr(s, Kind::Machine)?.to_string()),
        None => None,
    };
    let vaults = super::vault::pick_vaults(cfg, args.vault.as_deref())?;
    let req = Request {
        point: args.point.clone(),
        query,
        disk: args.disk.clone(),
        to: args.to.clone(),
        force: args.force,
        machine,
        vaults,
    };
    let progress = Progress::default();
    let done = super::progress::with_progress(&progress, super::progress::Work::Restore, || {
        named::restore(&ws, &req, &progress)
    })
    .map_err(|e| match e {
        named::RestoreError::UnknownMachine { machine, known } => {
            super::closing::unknown_addr(&machine, &known)
        }
        e => miette!("{e}"),
    })?;
    let (point, r) = (&done.point, &done.restored);
    println!(
        "restored disk {} of point {} ({}, {}) to {}: {} ({} of data) in {}",
        args.disk,
        point.id.short(),
        point.machine,
        crate::human::time_str(&point.created),
        args.to.display(),
        human(r.size),
        human(r.data),
        crate::human::duration(done.took)
    );
    Ok(ExitCode::SUCCESS)
}
