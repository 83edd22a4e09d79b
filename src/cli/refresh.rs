//! Rendering drift (`plan::refresh` observes it): `plan --refresh-only`,
//! and the lines `apply --refresh-only` shows before it asks.

use crate::plan::Drift;

/// `plan --refresh-only`: show drift alone. Exit 2 with `detailed` when there is any.
pub(crate) fn plan_refresh_only(
    vars: &crate::cli::VarArgs,
    backend: &crate::cli::BackendArgs,
    detailed: bool,
) -> miette::Result<std::process::ExitCode> {
    let ws = crate::workspace::Workspace::new(crate::cli::load_config(vars)?);
    let backend = backend.open(ws.config.backend.as_ref())?;
    let state = backend
        .read()
        .map_err(miette::Report::new)?
        .unwrap_or_default();
    let r = crate::plan::refresh::refresh(&ws, &state);
    print_drift(&r.drift, &r.notes);
    Ok(if detailed && !r.drift.is_empty() {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// What could not be read, as warnings on stderr.
pub(crate) fn warn(notes: &[String]) {
    for n in notes {
        eprintln!("warning: {n}");
    }
}

/// Print drift (or that there is none) and what could not be read.
pub(crate) fn print_drift(found: &[Drift], notes: &[String]) {
    warn(notes);
    if found.is_empty() {
        println!("No drift: what standby recorded matches the vaults and the sites.");
        return;
    }
    println!("Objects changed outside standby (since standby last recorded them):\n");
    for d in found {
        println!("  {d}");
    }
    println!(
        "\n{} changed. `standby apply --refresh-only` records them in state.",
        crate::human::count(found.len(), "fact")
    );
}
