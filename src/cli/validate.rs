//! `standby validate`: load and check the configuration, touching neither
//! state nor the vault.

use crate::config;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration directory (default: the current directory, or -C DIR).
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Print `{"valid": bool, "diagnostics": [...]}` to stdout instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

/// Colour only on a terminal, and never when NO_COLOR is set.
fn use_color() -> bool {
    std::io::stderr().is_terminal() && crate::cli::color_allowed()
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let result = config::load(&args.dir, &args.vars.inputs());
    if args.json {
        let (valid, diags) = match &result {
            Ok(l) => (true, l.warnings.to_json()),
            Err(d) => (false, d.to_json()),
        };
        let doc = serde_json::json!({ "valid": valid, "diagnostics": diags });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(if valid {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    match result {
        Ok(loaded) => {
            if !loaded.warnings.is_empty() {
                eprint!("{}", loaded.warnings.render(use_color()));
            }
            let c = &loaded.config;
            println!(
                "Success! The configuration is valid ({}, {}, {}).",
                crate::human::count(c.machines.len(), "machine"),
                crate::human::count(c.protections.len(), "protection"),
                crate::human::count(c.recovery_plans.len(), "recovery plan")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            eprint!("{}", diags.render(use_color()));
            let errors = diags.items.iter().filter(|d| d.is_error()).count();
            eprintln!("{}", super::closing::config_invalid(errors));
            Ok(ExitCode::from(1))
        }
    }
}
