//! `standby points [ADDR] [--json]`: list recovery points, oldest first.

use super::load_config;
use super::vault::parse_addr;
use crate::human::size as human;
use crate::model::Kind;
use crate::points::{self, PointsError};
use crate::workspace::Workspace;
use miette::{IntoDiagnostic, miette};
use serde::Serializer;
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only points of this machine or protection (`machine.db`, `protection.db`).
    #[arg(value_name = "ADDR")]
    pub addr: Option<String>,
    /// Print the points as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Only the point each machine would use for POINT, as `restore`,
    /// `failover --point` and `drill --point` read it: `latest`,
    /// `latest-app`, a point id or unique prefix, or an RFC 3339 time.
    #[arg(long, value_name = "POINT")]
    pub point: Option<String>,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let query = match &args.point {
        Some(p) => Some(points::query(p).map_err(|e| miette!("--point: {e}"))?),
        None => None,
    };
    let ws = Workspace::new(load_config(&args.vars)?);
    let filter = match &args.addr {
        None => None,
        Some(s) => Some(parse_addr(s, Kind::Machine)?),
    };
    let rows = points::list(&ws, filter.as_ref(), query.as_ref()).map_err(|e| match e {
        PointsError::Unknown { given, have } => super::closing::unknown_addr(&given, &have),
        e @ PointsError::Ambiguous { .. } => miette!("--point: {e}"),
        e => miette!("{e}"),
    })?;
    let now = crate::vault::clock::now();
    // Buffered: a vault of 100,000 points is millions of lines.
    let mut out = std::io::BufWriter::new(crate::output::Stdout);
    if args.json {
        // Streamed, one row's value at a time.
        let rows = rows.iter().map(|(v, m)| {
            serde_json::json!({
                "id": m.id.hex(),
                "vault": v.to_string(),
                "created": m.created,
                "machine": m.machine,
                "protection": m.protection,
                "consistency": m.consistency,
                "group": m.group,
                "freeze_ms": m.freeze_ms,
                "site": m.site,
                "moves_to": m.moves_to,
                "disks": m.disks.iter().map(|(n, d)| (n.clone(), serde_json::json!({
                    "size": d.size,
                    "parent": d.parent.map(|p| p.hex()),
                }))).collect::<serde_json::Map<_, _>>(),
                "stats": m.stats,
                "cbt": m.cbt,
                "cbt_fallbacks": m.cbt.as_ref().map_or(0, |c| c.fallbacks()),
                "seq": m.seq,
                "in_future": m.in_future(now),
                "writer": m.writer,
            })
        });
        serde_json::Serializer::pretty(&mut out)
            .collect_seq(rows)
            .into_diagnostic()?;
        writeln!(out).into_diagnostic()?;
        out.flush().into_diagnostic()?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() && query.is_some() {
        println!("No point matches {}.", args.point.as_deref().unwrap_or(""));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No points yet; `standby replicate` takes one.");
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<12}  {:<23}  {:<20}  {:<5}  {:<10}  {:>10}",
        "ID", "CREATED", "MACHINE", "CONS.", "GROUP", "ADDED"
    )
    .into_diagnostic()?;
    for (_, m) in &rows {
        writeln!(
            out,
            "{:<12}  {:<23}  {:<20}  {:<5}  {:<10}  {:>10}",
            m.id.short(),
            crate::human::time_str(&m.created),
            m.machine,
            m.consistency.to_string(),
            m.group.as_deref().unwrap_or("-"),
            human(m.stats.stored)
        )
        .into_diagnostic()?;
    }
    let ahead: Vec<String> = rows
        .iter()
        .filter(|(_, m)| m.in_future(now))
        .map(|(_, m)| m.id.short())
        .collect();
    if !ahead.is_empty() {
        writeln!(
            out,
            "dated in the future (its writer's clock ran ahead; never `latest`): {}",
            ahead.join(", ")
        )
        .into_diagnostic()?;
    }
    out.flush().into_diagnostic()?;
    Ok(ExitCode::SUCCESS)
}
