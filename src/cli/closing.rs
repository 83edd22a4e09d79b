//! How a failed command ends: one closing line, the same in every command.
//!
//! Diagnostics are printed where they arise (configuration errors with their
//! source spans); the command then returns [`Reported`], and `cli::main`
//! ends with exit code 1 and no second message.

/// A failure whose message is already on stderr.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("already reported")]
pub(crate) struct Reported;

/// The one closing line of a configuration that does not load, for every
/// command: `Error: the configuration is not valid (2 errors).` (a command
/// that loads the configuration first has changed nothing when it fails).
pub(crate) fn config_invalid(errors: usize) -> String {
    format!(
        "Error: the configuration is not valid ({}).",
        crate::human::count(errors, "error")
    )
}

/// The error for an address the configuration does not have: names it,
/// then suggests the closest one it has (or lists them).
/// `have` are the addresses of the kinds the command accepts.
pub(crate) fn unknown_addr(given: &str, have: &[String]) -> miette::Report {
    let names: Vec<&str> = have.iter().map(String::as_str).collect();
    // Compare the part after the kind, or every `machine.` would look alike.
    let bare = |a: &'_ str| a.split_once('.').map_or(a, |(_, n)| n).to_string();
    let bares: Vec<String> = names.iter().map(|n| bare(n)).collect();
    let close = crate::config::did_you_mean(&bare(given), bares.iter().map(String::as_str))
        .and_then(|b| bares.iter().position(|x| *x == b))
        .map(|i| names[i]);
    let help = match close {
        Some(s) => format!("did you mean `{s}`?"),
        None if names.is_empty() => "the configuration has none".to_string(),
        None => format!("the configuration has: {}", names.join(", ")),
    };
    miette::miette!(help = help, "no {given} in the configuration")
}
