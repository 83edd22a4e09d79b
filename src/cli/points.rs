//! `standby points [ADDR] [--json]`: list recovery points, oldest first.

use super::load_config;
use super::vault::parse_addr;
use crate::human::size as human;
use crate::model::Kind;
use crate::vault::manifest::Manifest;
use crate::vault::query::{PointQuery, Unmatched};
use crate::workspace::Workspace;
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
    /// Only the point each machine would use for POINT, as `restore`,
    /// `failover --point` and `drill --point` read it: `latest`,
    /// `latest-app`, a point id or unique prefix, or an RFC 3339 time.
    #[arg(long, value_name = "POINT")]
    pub point: Option<String>,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let query: Option<PointQuery> = match &args.point {
        Some(p) => Some(p.parse().map_err(|e| miette!("--point: {e}"))?),
        None => None,
    };
    let ws = Workspace::new(load_config(&args.vars)?);
    let cfg = &ws.config;
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
    // The catalog: the named machine's points only, when it is known.
    let machine = machine_of(cfg, filter.as_deref());
    for (addr, m) in ws
        .machine_points(machine.as_deref())
        .map_err(|e| miette!("{e}"))?
    {
        if filter
            .as_ref()
            .is_some_and(|f| *f != m.machine && *f != m.protection)
        {
            continue;
        }
        matched_any = true;
        rows.push((addr.to_string(), m));
    }
    if let Some(f) = filter.as_ref().filter(|_| !matched_any) {
        let mut have: Vec<String> = cfg.machines.keys().map(|a| a.to_string()).collect();
        have.extend(cfg.protections.keys().map(|a| a.to_string()));
        if !have.contains(f) {
            return Err(super::closing::unknown_addr(f, &have));
        }
    }
    if let Some(q) = &query {
        rows = named(q, rows).map_err(|e| miette!("--point: {e}"))?;
    }
    let now = crate::vault::clock::now();
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
                    "cbt": m.cbt,
                    "cbt_fallbacks": m.cbt.as_ref().map_or(0, |c| c.fallbacks()),
                    "seq": m.seq,
                    "in_future": m.in_future(now),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?);
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
    let ahead: Vec<String> = rows
        .iter()
        .filter(|(_, m)| m.in_future(now))
        .map(|(_, m)| m.id.short())
        .collect();
    if !ahead.is_empty() {
        println!(
            "dated in the future (its writer's clock ran ahead; never `latest`): {}",
            ahead.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Per machine (and vault), the point `q` names among `rows` (each
/// vault's points, oldest first); an ambiguous id prefix is an error.
fn named(q: &PointQuery, rows: Vec<(String, Manifest)>) -> Result<Vec<(String, Manifest)>, String> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for (v, m) in &rows {
        let k = (v.clone(), m.machine.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out = Vec::new();
    for (vault, machine) in keys {
        let mine: Vec<Manifest> = rows
            .iter()
            .filter(|(v, m)| *v == vault && m.machine == machine)
            .map(|(_, m)| m.clone())
            .collect();
        match q.select(&mine, None) {
            Ok(m) => out.push((vault, m.clone())),
            Err(Unmatched::None) => {}
            Err(Unmatched::Ambiguous(ids)) => {
                return Err(format!(
                    "{q} matches several points of {machine} ({}); give more of the id",
                    ids.join(", ")
                ));
            }
        }
    }
    // Oldest first, as the whole listing.
    out.sort_by(|a, b| (&a.1.created, a.1.id).cmp(&(&b.1.created, b.1.id)));
    Ok(out)
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
