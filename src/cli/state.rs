//! `standby state list|show ADDR|rm ADDR...`: inspect the state document,
//! and forget objects without touching anything real.

use crate::model::Address;
use crate::state::{Backend, LocalBackend, ObjectState, StateDoc};
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
    },
    /// Show one object's kind, status, time of last update and attributes.
    Show {
        /// The object, e.g. machine.db or machine.web["a"].
        address: String,
        /// Print the object as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Forget objects: remove them from the state without touching the
    /// real machines, sites or vault (the next plan proposes them again).
    Rm {
        /// The objects to remove, e.g. machine.db protection.web["a"].
        #[arg(required = true)]
        addresses: Vec<String>,
    },
}

pub fn run(cmd: Command) -> miette::Result<ExitCode> {
    let backend = LocalBackend::new(".");
    match cmd {
        Command::List { json } => list(&backend, json),
        Command::Show { address, json } => show(&backend, &address, json),
        Command::Rm { addresses } => rm(&backend, &addresses),
    }
}

fn read(backend: &LocalBackend) -> miette::Result<Option<StateDoc>> {
    backend.read().map_err(miette::Report::new)
}

fn no_state_message(backend: &LocalBackend) -> String {
    format!(
        "No state yet: {} does not exist (standby writes it when it first changes something).",
        backend.state_path().display()
    )
}

fn list(backend: &LocalBackend, json: bool) -> miette::Result<ExitCode> {
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
            Some(d) if d.objects.is_empty() => eprintln!(
                "The state in {} holds no objects.",
                backend.state_path().display()
            ),
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

fn show(backend: &LocalBackend, input: &str, json: bool) -> miette::Result<ExitCode> {
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
    let updated = obj
        .updated_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| obj.updated_at.to_string());
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
        out.push_str(&format!("    {key:<width$} = {value}\n"));
    }
    out
}

fn command_line() -> String {
    let rest: Vec<String> = std::env::args().skip(1).collect();
    format!("standby {}", rest.join(" "))
}

fn rm(backend: &LocalBackend, inputs: &[String]) -> miette::Result<ExitCode> {
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
        "Removed {} object(s) from the state (serial {}); nothing real was changed.",
        addresses.len(),
        doc.serial
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
