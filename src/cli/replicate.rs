//! `standby replicate [ADDR...]`: take a recovery point now for the given
//! protections (default: all). Protections sharing a consistency group (and
//! a vault) get one point instant together. With `--watch`, a long-running
//! service instead (see `cli::watch` and the `watch` module).

use super::load_config;
use super::vault::parse_addr;
use crate::human::size as human;
use crate::model::{Address, Kind};
use crate::operations::replicate::{self as once, Event, OnceError, ReplicationError};
use crate::progress::Progress;
use crate::vault::Manifest;
use crate::workspace::Workspace;
use miette::{IntoDiagnostic, miette};
use std::cell::RefCell;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Protections to replicate (`protection.db` or just `db`); default: all.
    /// A protection in a consistency group brings the whole group (with
    /// the same vault): its points are one instant or none.
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
        return super::watch::run(cfg, &chosen, &args.watch);
    }
    let ws = Workspace::new(cfg);
    let ui = Terminal {
        json: args.json.then(RefCell::default),
    };
    let opts = once::RunOptions {
        trust_state: args.trust_state,
        parallelism: args.parallelism,
        host: super::watch::host(&args.watch),
    };
    let failed = once::run(&ws, chosen, &opts, &ui).map_err(|e| match e {
        // Rendered as the state's own errors are everywhere else.
        OnceError::State(e) => miette::Report::new(e),
        e => match e.help() {
            Some(help) => miette!(help = help, "{e}"),
            None => miette!("{e}"),
        },
    })?;
    if let Some(json) = ui.json {
        let (taken, errors) = json.into_inner();
        let doc = serde_json::json!({
            "points": taken,
            "errors": errors,
            "requests": crate::operations::requests(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Progress on stderr, a line per point taken on stdout; with `--json`,
/// the points taken and the batches failed (kept for one document at the
/// end) instead of the lines.
struct Terminal {
    json: Option<RefCell<(Vec<serde_json::Value>, Vec<serde_json::Value>)>>,
}

impl once::Ui for Terminal {
    fn event(&self, e: Event<'_>) {
        match e {
            Event::Skipping { protection, reason } => eprintln!("skipping {protection}: {reason}"),
            Event::Nothing => eprintln!("nothing to replicate"),
            Event::Batch { label, vault } => eprintln!("replicating {label} into {vault}"),
            Event::Taken {
                vault,
                protections,
                points,
                took,
                requests,
            } if self.json.is_some() => {
                let Some(json) = &self.json else { return };
                for (a, m) in protections.iter().zip(points) {
                    json.borrow_mut().0.push(serde_json::json!({
                        "protection": a.to_string(),
                        "vault": vault.to_string(),
                        "id": m.id.hex(),
                        "consistency": m.consistency,
                        "group": m.group,
                        "stats": m.stats,
                        "cbt": m.cbt,
                        "seconds": took.as_secs_f64(),
                        // A group's members share one capture: its cost
                        // (null when batches ran in parallel).
                        "requests": requests,
                    }));
                }
            }
            Event::Taken {
                protections,
                points,
                took,
                ..
            } => {
                for (a, m) in protections.iter().zip(points) {
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
                    for line in m.cbt.iter().flat_map(describe) {
                        println!("  {line}");
                    }
                }
            }
            Event::Failed { label, error } => {
                eprintln!("error: {label}: {error}");
                if let Some(json) = &self.json {
                    json.borrow_mut()
                        .1
                        .push(serde_json::json!({"batch": label, "error": error.to_string()}));
                }
            }
        }
    }

    fn capture(
        &self,
        progress: &Progress,
        run: &mut dyn FnMut() -> Result<Vec<Manifest>, ReplicationError>,
    ) -> Result<Vec<Manifest>, ReplicationError> {
        super::progress::with_progress(progress, super::progress::Work::Replicate, run)
    }
}

/// One line per disk, then the timing, for `replicate`'s report: how
/// each disk was read (dirty extents, first full read, or a fallback and
/// why) and the freeze/transaction/spread figures.
fn describe(c: &crate::vault::manifest::Cbt) -> Vec<String> {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let mut out: Vec<String> = c
        .disks
        .iter()
        .map(|(name, d)| match (d.mode.as_str(), &d.reason) {
            ("fallback", Some(r)) => format!(
                "disk {name}: fallback to a whole read ({r}); read {}",
                mib(d.read_bytes)
            ),
            ("full", _) => format!(
                "disk {name}: first point, read {} allocated",
                mib(d.read_bytes)
            ),
            _ => format!(
                "disk {name}: changed-block tracking, read {} in {} requests for {} dirty",
                mib(d.read_bytes),
                d.read_requests,
                mib(d.dirty_bytes)
            ),
        })
        .collect();
    let freeze = c
        .freeze_call_ms
        .map(|f| format!("freeze call {f:.0} ms, "))
        .unwrap_or_default();
    out.push(format!(
        "snapshot: {freeze}transaction {:.1} ms, spread {:.1} ms across {} VM(s)",
        c.transaction_ms, c.spread_ms, c.group_vms
    ));
    out
}
