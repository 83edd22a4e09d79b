//! `standby state list|show ADDR|rm ADDR...|mv FROM TO|force-unlock LOCK_ID`: inspect
//! the state document, forget objects without touching anything real, and
//! remove a lock left behind on a remote backend.

use crate::cli::BackendArgs;
use crate::model::Address;
use crate::state::{Backend, ObjectState, StateDoc};
use miette::{IntoDiagnostic, miette};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the addresses in the state, one a line, sorted by kind (in plan
    /// order), then name.
    List {
        /// Print a JSON array of addresses instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Show one object's kind, status, time of last update and attributes.
    Show {
        /// The object, e.g. machine.db or machine.web["a"].
        address: String,
        /// Print the object as JSON instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Forget objects: remove them from the state without touching the
    /// real machines, sites or vault (the next plan proposes them again).
    Rm {
        /// The objects to remove, e.g. machine.db protection.web["a"].
        #[arg(required = true)]
        addresses: Vec<String>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Rename an object in the state, as a `moved` block would: a renamed
    /// protection or machine keeps its recovery points (each vault holding
    /// them records the new name) and the next plan shows no destroy.
    Mv {
        /// The address recorded now, e.g. protection.web.
        from: String,
        /// The new address, e.g. protection.webserver or machine.web["a"].
        to: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Remove the state lock of a command that died without releasing it.
    ///
    /// Remote backends (az://, s3://, file://) keep the lock as an object,
    /// which outlives a killed or disconnected command. LOCK_ID is the id
    /// printed in the "is locked by" message; the lock is removed only if it
    /// is still that lock. Make sure its command is really gone: if it still
    /// runs, its next write is refused (nothing is lost, but it stops).
    ///
    /// The local backend's lock is an OS lock that dies with its process
    /// (also on kill -9), so there is never a stale one: force-unlock only
    /// names the live process that holds it, and removes nothing.
    ForceUnlock {
        /// The id of the lock to remove, from the "is locked by" message.
        lock_id: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

pub fn run(cmd: Command) -> miette::Result<ExitCode> {
    let args = match &cmd {
        Command::List { backend, .. }
        | Command::Show { backend, .. }
        | Command::Rm { backend, .. }
        | Command::Mv { backend, .. }
        | Command::ForceUnlock { backend, .. } => backend,
    };
    let Some(backend) = open(args)? else {
        return Ok(ExitCode::from(1));
    };
    let backend = backend.as_ref();
    match cmd {
        Command::List { json, .. } => list(backend, json),
        Command::Show { address, json, .. } => show(backend, &address, json),
        Command::Rm { addresses, .. } => rm(backend, &addresses),
        Command::Mv { from, to, .. } => mv(backend, &from, &to),
        Command::ForceUnlock { lock_id, .. } => force_unlock(backend, &lock_id),
    }
}

/// The backend `--backend-config` or the configuration's `backend` block
/// names; `None` (after printing the diagnostics) when that block, or the
/// configuration around it, has errors.
fn open(args: &BackendArgs) -> miette::Result<Option<Box<dyn Backend>>> {
    if args.backend()?.is_some() {
        return args.open(None).map(Some);
    }
    match crate::config::load_backend(std::path::Path::new(".")) {
        Ok(configured) => args.open(configured.as_ref()).map(Some),
        Err(diags) => {
            let color = super::plan::use_color(&std::io::stderr());
            eprint!("{}", diags.render(color));
            let errors = diags.items.iter().filter(|d| d.is_error()).count();
            eprintln!("{}", super::closing::config_invalid(errors));
            Ok(None)
        }
    }
}

fn read(backend: &dyn Backend) -> miette::Result<Option<StateDoc>> {
    backend.read().map_err(miette::Report::new)
}

fn no_state_message(backend: &dyn Backend) -> String {
    if let Some(backup) = backend.orphaned_backup() {
        return crate::recovery::placement::lost_state(&backup);
    }
    format!(
        "No state yet: {} does not exist (standby writes it when it first changes something).",
        backend.location()
    )
}

fn list(backend: &dyn Backend, json: bool) -> miette::Result<ExitCode> {
    let doc = read(backend)?;
    let addresses: Vec<String> = doc
        .as_ref()
        .map(|d| d.objects.keys().map(|a| a.to_string()).collect())
        .unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&addresses).into_diagnostic()?
        );
    } else {
        match &doc {
            None => eprintln!("{}", no_state_message(backend)),
            Some(d) if d.objects.is_empty() => {
                eprintln!("The state in {} holds no objects.", backend.location())
            }
            Some(_) => {
                for a in &addresses {
                    println!("{a}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_address(input: &str) -> miette::Result<Address> {
    input.parse::<Address>().map_err(|e| {
        miette!(
            help = "`standby state list` prints the addresses in the state",
            "{e}"
        )
    })
}

/// The error for an address the state does not hold, with a did-you-mean.
fn not_in_state(doc: &StateDoc, input: &str) -> miette::Report {
    let suggestion = did_you_mean(input, doc.objects.keys().map(|a| a.to_string()));
    let help = match suggestion {
        Some(s) => format!("did you mean {s}? (`standby state list` prints every address)"),
        None => "`standby state list` prints every address in the state".to_string(),
    };
    miette!(help = help, "{input} is not in the state")
}

/// The closest candidate to `input`, when one is close enough to be a typo.
pub(crate) fn did_you_mean(
    input: &str,
    candidates: impl Iterator<Item = String>,
) -> Option<String> {
    candidates
        .map(|c| (strsim::jaro_winkler(input, &c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn show(backend: &dyn Backend, input: &str, json: bool) -> miette::Result<ExitCode> {
    let address = parse_address(input)?;
    let Some(doc) = read(backend)? else {
        return Err(miette!("{}", no_state_message(backend)));
    };
    let Some(obj) = doc.objects.get(&address) else {
        return Err(not_in_state(&doc, input));
    };
    if json {
        let mut value = serde_json::to_value(obj).into_diagnostic()?;
        if let Some(map) = value.as_object_mut() {
            map.insert("address".into(), address.to_string().into());
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&value).into_diagnostic()?
        );
    } else {
        print!("{}", render_object(&address, obj));
    }
    Ok(ExitCode::SUCCESS)
}

/// `key = value` lines, keys padded so the `=` line up.
fn render_object(address: &Address, obj: &ObjectState) -> String {
    let status = serde_json::to_value(obj.status)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let updated = crate::human::time(obj.updated_at);
    let mut out = format!(
        "{address}\n  kind       = {}\n  status     = {status}\n  updated_at = {updated}\n",
        obj.kind
    );
    if obj.attributes.is_empty() {
        out.push_str("  (no attributes)\n");
        return out;
    }
    out.push_str("\n  attributes:\n");
    let width = obj.attributes.keys().map(|k| k.len()).max().unwrap_or(0);
    for (key, value) in &obj.attributes {
        // A recorded time (RFC 3339) and a size read as every time and
        // size for people do (`--json` keeps the exact values).
        let size = (key.ends_with("bytes") || key.ends_with(".size"))
            .then(|| value.as_u64())
            .flatten();
        let shown = match value
            .as_str()
            .map(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339))
        {
            Some(Ok(t)) => crate::human::time(t),
            _ => size.map_or_else(|| value.to_string(), crate::human::size),
        };
        out.push_str(&format!("    {key:<width$} = {shown}\n"));
    }
    out
}

fn command_line() -> String {
    let rest: Vec<String> = std::env::args().skip(1).collect();
    format!("standby {}", rest.join(" "))
}

fn rm(backend: &dyn Backend, inputs: &[String]) -> miette::Result<ExitCode> {
    let addresses = inputs
        .iter()
        .map(|s| parse_address(s))
        .collect::<miette::Result<Vec<_>>>()?;
    let lock = backend.lock(&command_line()).map_err(miette::Report::new)?;
    let Some(mut doc) = read(backend)? else {
        return Err(miette!("{}", no_state_message(backend)));
    };
    // Check every address before removing any: all or nothing.
    for (address, input) in addresses.iter().zip(inputs) {
        if !doc.objects.contains_key(address) {
            return Err(not_in_state(&doc, input));
        }
    }
    for address in &addresses {
        doc.objects.remove(address);
    }
    backend
        .write(&lock, &mut doc)
        .map_err(miette::Report::new)?;
    for address in &addresses {
        println!("Removed {address}");
    }
    println!(
        "Removed {} from the state (serial {}); nothing real was changed.",
        crate::human::count(addresses.len(), "object"),
        doc.serial
    );
    Ok(ExitCode::SUCCESS)
}

fn mv(backend: &dyn Backend, from_input: &str, to_input: &str) -> miette::Result<ExitCode> {
    let from = parse_address(from_input)?;
    let to = parse_address(to_input)?;
    if from.kind != to.kind {
        return Err(miette!(
            help = "state mv renames an object within its kind, e.g. protection.web to protection.webserver",
            "cannot move {from} to {to}: a {} is not a {}",
            from.kind,
            to.kind
        ));
    }
    let lock = backend.lock(&command_line()).map_err(miette::Report::new)?;
    let Some(mut doc) = read(backend)? else {
        return Err(miette!("{}", no_state_message(backend)));
    };
    if !doc.objects.contains_key(&from) {
        return Err(not_in_state(&doc, from_input));
    }
    if doc.objects.contains_key(&to) {
        return Err(miette!(
            help = "pick another address, or `standby state rm` the one there first",
            "{to} is already in the state"
        ));
    }
    // Whether the configuration here (if it loads) still names the old
    // address or already the new one: the closing hint depends on it.
    let declared = crate::config::load(std::path::Path::new("."), &Default::default())
        .ok()
        .map(|l| {
            let has = |a: &Address| {
                l.config.protections.contains_key(a) || l.config.machines.contains_key(a)
            };
            (has(&from), has(&to))
        });
    let hint = match declared {
        Some((false, true)) => format!("The configuration already names it {to}."),
        None => format!(
            "If the configuration does not name it {to} yet, rename it there too, or the next plan proposes to destroy it."
        ),
        Some(_) => format!(
            "Rename it {to} in the configuration too, or the next plan proposes to destroy it."
        ),
    };
    // No configuration is needed: vaults open as the state records them.
    let ws = crate::workspace::Workspace::new(crate::model::Config {
        root: std::path::PathBuf::from("."),
        ..Default::default()
    });
    let done = crate::apply::moves::carry_out(&ws, backend, &lock, &mut doc, &[(from, to)])
        .map_err(super::apply::report)?;
    for m in &done {
        println!("{}", super::apply::moved_line(m));
    }
    println!(
        "Moved 1 object in the state (serial {}). {hint}",
        doc.serial
    );
    Ok(ExitCode::SUCCESS)
}

fn force_unlock(backend: &dyn Backend, lock_id: &str) -> miette::Result<ExitCode> {
    let info = backend.force_unlock(lock_id).map_err(miette::Report::new)?;
    println!(
        "Removed the lock {} on {}.\nIt was held by {}.\nIf that command still runs, its next write to the state will be refused.",
        info.id,
        backend.location(),
        info
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_typos_only() {
        let c = || ["machine.db".to_string(), "machine.web".to_string()].into_iter();
        assert_eq!(
            did_you_mean("machine.dv", c()).as_deref(),
            Some("machine.db")
        );
        assert_eq!(did_you_mean("vault.zzz", c()), None);
    }
}
