//! The command line: one module per command, each with its own `Args` and
//! `run`. This module only parses, dispatches and maps outcomes to exit codes.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod apply;
mod approve;
mod args;
mod closing;
mod drill;
mod failback;
mod failover;
mod fmt;
mod graph;
mod plan;
mod points;
mod progress;
mod quickstart;
mod refresh;
mod replicate;
mod restore;
mod run_io;
mod show;
mod state;
mod status;
mod validate;
mod vault;
mod watch;

/// Disaster recovery as code: describe DR topology in HCL, review it as a
/// plan, replicate into an encrypted vault, and prove recovery with drills.
#[derive(Debug, Parser)]
#[command(
    name = "standby",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Run as if started in DIR (the configuration directory).
    #[arg(short = 'C', long = "chdir", global = true, value_name = "DIR")]
    pub chdir: Option<std::path::PathBuf>,

    /// Never colour the output (colour is used only on a terminal without NO_COLOR).
    #[arg(long, global = true)]
    pub no_color: bool,

    /// Terraform's `-input`: `false` never prompts (apply then needs
    /// --auto-approve, a manual step --approve or --wait-for-approval).
    /// standby never prompts when stdin is not a terminal anyway.
    #[arg(long, global = true, value_name = "BOOL", hide_possible_values = true)]
    pub input: Option<bool>,

    /// Terraform's `-lock`: standby always takes the state lock, so only
    /// `true` is accepted (see the error for `false`).
    #[arg(long, global = true, value_name = "BOOL", hide_possible_values = true)]
    pub lock: Option<bool>,

    #[command(subcommand)]
    pub command: Command,
}

/// Set by the global `--input=false` before any command runs.
static NO_INPUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a command may ask on the terminal: stdin is one and no
/// `--input=false`.
pub(crate) fn may_prompt() -> bool {
    use std::io::IsTerminal;
    !NO_INPUT.load(std::sync::atomic::Ordering::Relaxed) && std::io::stdin().is_terminal()
}

/// Set by the global `--no-color` before any command runs.
static NO_COLOR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether colour is allowed at all: no `--no-color`, no non-empty NO_COLOR.
pub(crate) fn color_allowed() -> bool {
    !NO_COLOR.load(std::sync::atomic::Ordering::Relaxed)
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration without touching state or the vault.
    Validate(validate::Args),
    /// Rewrite configuration files in the canonical layout.
    Fmt(fmt::Args),
    /// Show what would change to make the actual state match the configuration.
    Plan(plan::Args),
    /// Carry out the plan: set up vaults, enable protections, record changes.
    Apply(apply::Args),
    /// Print the plan's dependency graph in DOT.
    Graph(graph::Args),
    /// Render a saved plan (`plan --out FILE`) as text, Markdown or JSON.
    Show(show::Args),
    /// Inspect the state document, or forget objects recorded in it.
    #[command(subcommand)]
    State(state::Command),
    /// Manage the vault: create it, prune old points, verify its contents.
    #[command(subcommand)]
    Vault(vault::Command),
    /// Take a recovery point now for the given protections (or all), or keep taking them (--watch).
    #[command(after_help = watch::HELP)]
    Replicate(replicate::Args),
    /// List recovery points.
    Points(points::Args),
    /// Show each protection against its RPO threshold and each recovery plan's last drill.
    #[command(after_help = status::HELP)]
    Status(status::Args),
    /// Write one disk of a recovery point to a file.
    Restore(restore::Args),
    /// Fail a recovery plan over (test, planned, unplanned), clean up a test, or commit.
    #[command(subcommand)]
    Failover(failover::Command),
    /// After a committed failover, protect the replicas back toward the original site (reverse points).
    #[command(after_help = failback::REPROTECT_HELP)]
    Reprotect(failback::ReprotectArgs),
    /// Bring a reprotected plan home: stop the replicas, final point, changed blocks only, start, checks.
    #[command(after_help = failback::FAILBACK_HELP, mut_arg("point", |a| a.hide(true)))]
    Failback(failback::FailbackArgs),
    /// Test-fail a recovery plan over, run every check, clean up, and report RTO/RPO.
    #[command(mut_arg("point", |a| a.help(failover::TEST_POINT_HELP)))]
    Drill(drill::Args),
    /// Approve a manual step of a recovery plan's run in progress.
    Approve(approve::Args),
    /// Set up the embedded quickstart (config, sample machines) and run it end to end.
    Quickstart(quickstart::Args),
}

/// Variable inputs shared by every command that loads the configuration.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VarArgs {
    /// Set a variable: `--var name=value` (also written `-var name=value`).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from an HCL file of `name = value` lines
    /// (`standby.vars.hcl` in the configuration directory is read anyway).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<std::path::PathBuf>,
}

impl VarArgs {
    pub fn inputs(&self) -> crate::config::VarInputs {
        crate::config::VarInputs {
            cli: self.vars.clone(),
            files: self.var_files.clone(),
        }
    }

    /// Load the configuration in the current directory (set by -C), printing
    /// its warnings, or its errors and `None`.
    pub(crate) fn load_or_report(&self, color: bool) -> Option<crate::model::Config> {
        match crate::config::load(std::path::Path::new("."), &self.inputs()) {
            Ok(loaded) => {
                if !loaded.warnings.is_empty() {
                    eprint!("{}", loaded.warnings.render(color));
                }
                Some(loaded.config)
            }
            Err(diags) => {
                eprint!("{}", diags.render(color));
                let errors = diags.items.iter().filter(|d| d.is_error()).count();
                eprintln!("{}", closing::config_invalid(errors));
                None
            }
        }
    }
}

/// Load the configuration in the current directory (set by -C); its
/// diagnostics are printed, and a configuration with errors ends the command.
pub(crate) fn load_config(vars: &VarArgs) -> miette::Result<crate::model::Config> {
    let color = std::io::IsTerminal::is_terminal(&std::io::stderr()) && color_allowed();
    vars.load_or_report(color)
        .ok_or_else(|| closing::Reported.into())
}

/// Where the state is, for commands that read or write it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BackendArgs {
    /// Keep the state at URL instead of the `backend` block's url:
    /// `--backend-config url=az://CONTAINER/PREFIX` (also s3://, file://DIR).
    #[arg(long = "backend-config", value_name = "url=URL")]
    pub backend_config: Vec<String>,
    /// How long to wait for the state lock while another command holds it
    /// (saying who), e.g. `30s`, `5m`; `0s` fails at once. Default: 0s, as
    /// Terraform; recovery runs (failover, drill, reprotect, failback,
    /// approve) wait 60s, so that a run does not fail on a moment's
    /// contention. Lock waits never count toward a run's RTO.
    #[arg(long = "lock-timeout", value_name = "DURATION", value_parser = crate::state::parse_lock_timeout)]
    pub lock_timeout: Option<std::time::Duration>,
}

impl BackendArgs {
    /// The backend given on the command line (last `url=` wins), if any.
    pub fn backend(&self) -> miette::Result<Option<crate::model::Backend>> {
        let mut found = None;
        for item in &self.backend_config {
            let Some((key, value)) = item.split_once('=') else {
                return Err(miette::miette!(
                    help = "write --backend-config url=az://CONTAINER/PREFIX",
                    "--backend-config {item:?} is not KEY=VALUE"
                ));
            };
            if key.trim() != "url" {
                return Err(miette::miette!(
                    help = "the only backend setting is url, e.g. --backend-config url=s3://BUCKET/PREFIX",
                    "unknown backend setting {:?}",
                    key.trim()
                ));
            }
            let url = value.trim().to_string();
            crate::state::check_backend_url(&url).map_err(|e| {
                miette::miette!(
                    help = "use az://CONTAINER/PREFIX, s3://BUCKET/PREFIX or file://DIR",
                    "invalid --backend-config url: {e}"
                )
            })?;
            found = Some(crate::model::Backend { url });
        }
        Ok(found)
    }

    /// Open the state backend: the command line's url, else `configured`
    /// (the configuration's `backend` block), else the local files.
    pub fn open(
        &self,
        configured: Option<&crate::model::Backend>,
    ) -> miette::Result<Box<dyn crate::state::Backend>> {
        let inner = self.open_unwaiting(configured)?;
        Ok(match self.lock_timeout.filter(|t| !t.is_zero()) {
            None => inner,
            Some(timeout) => Box::new(crate::state::Waiting {
                inner,
                timeout,
                notice: Box::new(|line| eprintln!("{line}")),
            }),
        })
    }

    /// [`BackendArgs::open`] without waiting for the lock (for callers that
    /// wait themselves, like a recovery run's recorder).
    pub fn open_unwaiting(
        &self,
        configured: Option<&crate::model::Backend>,
    ) -> miette::Result<Box<dyn crate::state::Backend>> {
        let given = self.backend()?;
        crate::state::open_backend(std::path::Path::new("."), given.as_ref().or(configured))
            .map_err(miette::Report::new)
    }
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    // The helper a VM point leaves behind while a guest is frozen (see
    // replication::vm::thaw_guard): not a command users type.
    if let Some(code) =
        crate::replication::vm::guard_main(std::env::args_os(), &mut std::io::stdin())
    {
        return ExitCode::from(code);
    }
    // An instant recovery's NBD export (recovery::instant::export).
    if let Some(r) = crate::recovery::instant::export::export_main(std::env::args_os()) {
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        };
    }
    let cli = match Cli::try_parse_from(args::normalize(std::env::args())) {
        Ok(cli) => cli,
        Err(e) => return args::usage_exit(e),
    };
    if cli.no_color {
        NO_COLOR.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if cli.input == Some(false) {
        NO_INPUT.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    set_error_style();
    if cli.lock == Some(false) {
        eprintln!("{:?}", args::unlocked_refused());
        return ExitCode::from(1);
    }
    // The watch service logs every point taken or failed at info level.
    let watching = matches!(&cli.command, Command::Replicate(a) if a.watch.watch);
    init_tracing(if watching {
        "warn,standby=info"
    } else {
        "warn"
    });
    if let Some(dir) = &cli.chdir
        && let Err(e) = std::env::set_current_dir(dir)
    {
        eprintln!("error: cannot change to directory {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let outcome = match cli.command {
        Command::Validate(a) => validate::run(a),
        Command::Fmt(a) => fmt::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Apply(a) => apply::run(a),
        Command::Graph(a) => graph::run(a),
        Command::Show(a) => show::run(a),
        Command::State(c) => state::run(c),
        Command::Vault(c) => vault::run(c),
        Command::Replicate(a) => replicate::run(a),
        Command::Points(a) => points::run(a),
        Command::Status(a) => status::run(a),
        Command::Restore(a) => restore::run(a),
        Command::Failover(c) => failover::run(c),
        Command::Reprotect(a) => failback::reprotect(a),
        Command::Failback(a) => failback::failback(a),
        Command::Drill(a) => drill::run(a),
        Command::Approve(a) => approve::run(a),
        Command::Quickstart(a) => quickstart::run(a),
    };
    // Any command's object-store cost, for benchmarks and scripts.
    if std::env::var_os("STANDBY_REQUESTS").is_some_and(|v| v == "1") {
        let c = crate::store::counts();
        eprintln!(
            "requests: {}",
            serde_json::to_string(&c).unwrap_or_default()
        );
    }
    match outcome {
        Ok(code) => code,
        Err(report) if report.downcast_ref::<closing::Reported>().is_some() => ExitCode::from(1),
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(1)
        }
    }
}

/// Errors (miette reports) in colour only where colour is allowed, and
/// never wrapped off a terminal, so a flag or id in a hint stays copyable.
fn set_error_style() {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let color = tty && color_allowed();
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(color)
                .wrap_lines(tty)
                .build(),
        )
    }));
}

/// Logs go to stderr; `STANDBY_LOG` (e.g. `debug`) sets the level.
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STANDBY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let color = std::io::stderr().is_terminal() && color_allowed();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
