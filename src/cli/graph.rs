//! `standby graph`: the plan's dependency graph in Graphviz DOT.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub vars: crate::cli::VarArgs,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let color = super::plan::use_color(&std::io::stderr());
    let Some(plan) = super::plan::make_plan(
        &args.vars,
        &crate::cli::BackendArgs::default(),
        color,
        false,
    )?
    else {
        return Ok(ExitCode::from(1));
    };
    print!("{}", plan.graph.to_dot());
    Ok(ExitCode::SUCCESS)
}
