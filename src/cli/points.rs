//! `standby points [ADDR] [--json]`: list recovery points, oldest first.

use super::vault::{human, load_config, open, parse_addr};
use crate::model::Kind;
use miette::{IntoDiagnostic, miette};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only points of this machine or protection (`machine.db`, `protection.db`).
    #[arg(value_name = "ADDR")]
    pub addr: Option<String>,
    /// Print the points as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let cfg = load_config(&args.vars)?;
    let filter = match &args.addr {
        None => None,
        Some(s) => {
            let a = parse_addr(s, Kind::Machine)?;
            if !matches!(a.kind, Kind::Machine | Kind::Protection) {
                return Err(miette!("{a} is neither a machine nor a protection"));
            }
            Some(a.to_string())
        }
    };
    let mut rows = Vec::new();
    // Points of a machine or protection removed from the configuration can
    // still be listed; anything else named is a typo.
    let mut matched_any = false;
    for addr in cfg.vaults.keys() {
        let vault = open(&cfg, addr)?;
        // The catalog: the named machine's points only, when it is known.
        let machine = machine_of(&cfg, filter.as_deref());
        let points = crate::vault::catalog::list_for(&vault, machine.as_deref())
            .map_err(|e| miette!("{addr}: {e}"))?;
        for m in points {
            if filter
                .as_ref()
                .is_some_and(|f| *f != m.machine && *f != m.protection)
            {
                continue;
            }
            matched_any = true;
            rows.push((addr.to_string(), m));
        }
    }
    if let Some(f) = filter.as_ref().filter(|_| !matched_any) {
        let mut have: Vec<String> = cfg.machines.keys().map(|a| a.to_string()).collect();
        have.extend(cfg.protections.keys().map(|a| a.to_string()));
        if !have.contains(f) {
            return Err(super::closing::unknown_addr(f, &have));
        }
    }
    if args.json {
        let doc: Vec<serde_json::Value> = rows
            .iter()
            .map(|(v, m)| {
                serde_json::json!({
                    "id": m.id.hex(),
                    "vault": v,
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
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No points yet; `standby replicate` takes one.");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12}  {:<23}  {:<20}  {:<5}  {:<10}  {:>10}",
        "ID", "CREATED", "MACHINE", "CONS.", "GROUP", "ADDED"
    );
    for (_, m) in &rows {
        println!(
            "{:<12}  {:<23}  {:<20}  {:<5}  {:<10}  {:>10}",
            m.id.short(),
            crate::human::time_str(&m.created),
            m.machine,
            m.consistency.to_string(),
            m.group.as_deref().unwrap_or("-"),
            human(m.stats.stored)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The machine whose catalog holds the points `filter` names, when the
/// configuration knows it; None: every machine of the vault.
fn machine_of(cfg: &crate::model::Config, filter: Option<&str>) -> Option<String> {
    let f = filter?;
    if f.starts_with("machine.") {
        return Some(f.to_string());
    }
    cfg.protections
        .iter()
        .find(|(a, _)| a.to_string() == f)
        .map(|(_, p)| p.machine.to_string())
}
