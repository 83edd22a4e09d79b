//! Terraform's hands on standby's command line: single-dash long options
//! (`-auto-approve`, `-lock-timeout=30s`) and usage errors that exit 1.

use clap::CommandFactory;
use std::process::ExitCode;

/// Rewrite Terraform-style single-dash long options (`-json`,
/// `-var-file=x.hcl`) to their double-dash form, for whatever long options
/// the command being parsed (and its ancestors' global ones) defines.
///
/// Walks the arguments as clap will: subcommand names descend the command
/// tree, an option that takes a value skips the next argument when it has no
/// `=VALUE`, short options (`-C DIR`) are left alone, and nothing after `--`
/// is touched. Unknown `-words` are left as they are, so clap reports them.
pub(crate) fn normalize(args: impl IntoIterator<Item = String>) -> Vec<String> {
    normalize_for(&super::Cli::command(), args)
}

/// [`normalize`] against any command tree.
fn normalize_for(root: &clap::Command, args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut path: Vec<&clap::Command> = vec![root];
    let mut out = Vec::new();
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    let mut rest_raw = false;
    let mut skip_value = false;
    for arg in iter {
        if rest_raw || skip_value {
            skip_value = false;
            out.push(arg);
            continue;
        }
        if arg == "--" {
            rest_raw = true;
            out.push(arg);
            continue;
        }
        let current = *path.last().expect("path starts at the root");
        if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = split_value(body);
            skip_value = !inline && takes_value(&path, |a| a.get_long() == Some(name));
            out.push(arg);
        } else if let Some(body) = arg.strip_prefix('-').filter(|b| !b.is_empty()) {
            let (name, inline) = split_value(body);
            let mut chars = name.chars();
            let is_short = matches!((chars.next(), chars.next()), (Some(_), None));
            if is_short {
                let c = name.chars().next().unwrap_or_default();
                skip_value = !inline && takes_value(&path, |a| a.get_short() == Some(c));
                out.push(arg);
            } else if find(&path, |a| a.get_long() == Some(name)).is_some() {
                skip_value = !inline && takes_value(&path, |a| a.get_long() == Some(name));
                out.push(format!("-{arg}"));
            } else {
                let first = name.chars().next().unwrap_or_default();
                if find(&path, |a| a.get_short() == Some(first)).is_some() || first.is_ascii_digit()
                {
                    // A short option with its value attached (`-Cdir`), or
                    // a negative number: clap decides.
                    out.push(arg);
                } else {
                    // An unknown long option typed Terraform's way (`-jsn`):
                    // as `--jsn` clap names it and suggests `--json`.
                    out.push(format!("-{arg}"));
                }
            }
        } else {
            if let Some(sub) = current.find_subcommand(&arg) {
                path.push(sub);
            }
            out.push(arg);
        }
    }
    out
}

/// `name=value` -> (`name`, true); `name` -> (`name`, false).
fn split_value(body: &str) -> (&str, bool) {
    match body.split_once('=') {
        Some((name, _)) => (name, true),
        None => (body, false),
    }
}

/// The argument matching `pred` on the innermost command, or a global one
/// of its ancestors.
fn find<'a>(
    path: &[&'a clap::Command],
    pred: impl Fn(&clap::Arg) -> bool,
) -> Option<&'a clap::Arg> {
    let (current, ancestors) = path.split_last()?;
    current.get_arguments().find(|a| pred(a)).or_else(|| {
        ancestors
            .iter()
            .rev()
            .find_map(|c| c.get_arguments().find(|a| a.is_global_set() && pred(a)))
    })
}

fn takes_value(path: &[&clap::Command], pred: impl Fn(&clap::Arg) -> bool) -> bool {
    find(path, pred).is_some_and(|a| a.get_action().takes_values())
}

/// `-lock=false`, refused: a DR tool must not run unlocked.
pub(crate) fn unlocked_refused() -> miette::Report {
    miette::miette!(
        help = "drop -lock=false. If another command holds the lock, wait for it with -lock-timeout=5m; a local lock dies with its process, and a stale remote lock is removed with `standby state force-unlock ID`",
        "-lock=false is not supported: standby always takes the state lock, because two commands writing the state at once (a failover and an apply, two replicates) could record machines at the wrong site or lose recovery points; nothing was run"
    )
}

/// Print a parse error or the help/version text it carries and pick the
/// exit code: 0 for `--help`/`--version`, 1 for every usage error (never 2,
/// which means "changes" to `plan -detailed-exitcode` and "past RPO" to
/// `status`).
pub(crate) fn usage_exit(e: clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn single_dash_long_options_become_double_dash() {
        assert_eq!(
            norm(&[
                "standby",
                "-C",
                "dir",
                "plan",
                "-var",
                "a=b",
                "-var-file=x.hcl",
                "-detailed-exitcode",
                "-no-color"
            ]),
            [
                "standby",
                "-C",
                "dir",
                "plan",
                "--var",
                "a=b",
                "--var-file=x.hcl",
                "--detailed-exitcode",
                "--no-color"
            ]
        );
        assert_eq!(
            norm(&["standby", "apply", "-auto-approve", "-json"]),
            ["standby", "apply", "--auto-approve", "--json"]
        );
        assert_eq!(
            norm(&["standby", "fmt", "-check", "-diff", "-recursive", "-"]),
            ["standby", "fmt", "--check", "--diff", "--recursive", "-"]
        );
    }

    /// Any long option a command gains works with one dash at once, e.g. a
    /// `--lock-timeout` on the commands that take the state lock.
    #[test]
    fn options_added_later_need_no_list() {
        let cmd = clap::Command::new("standby").subcommand(
            clap::Command::new("apply")
                .arg(
                    clap::Arg::new("lock_timeout")
                        .long("lock-timeout")
                        .action(clap::ArgAction::Append),
                )
                .arg(
                    clap::Arg::new("auto")
                        .long("auto-approve")
                        .action(clap::ArgAction::SetTrue),
                ),
        );
        let args = [
            "standby",
            "apply",
            "-lock-timeout=30s",
            "-lock-timeout",
            "1m",
            "-auto-approve",
        ];
        assert_eq!(
            super::normalize_for(&cmd, args.map(String::from)),
            [
                "standby",
                "apply",
                "--lock-timeout=30s",
                "--lock-timeout",
                "1m",
                "--auto-approve"
            ]
        );
        let normalized = super::normalize_for(&cmd, args.map(String::from));
        let m = cmd.try_get_matches_from(normalized).unwrap();
        let (_, sub) = m.subcommand().unwrap();
        assert_eq!(
            sub.get_many::<String>("lock_timeout")
                .unwrap()
                .next_back()
                .unwrap(),
            "1m"
        );
    }

    #[test]
    fn values_shorts_unknowns_and_double_dash_are_left_alone() {
        // `-C plan` is a directory named plan, not the subcommand.
        assert_eq!(
            norm(&["standby", "-C", "plan", "validate"]),
            ["standby", "-C", "plan", "validate"]
        );
        assert_eq!(
            norm(&["standby", "-Cdir", "status", "-jsn"]),
            ["standby", "-Cdir", "status", "--jsn"]
        );
        assert_eq!(
            norm(&["standby", "plan", "-out", "-json", "--", "-json"]),
            ["standby", "plan", "--out", "-json", "--", "-json"]
        );
        // A long option of another command is not this command's: clap
        // reports it as the unknown long option it is.
        assert_eq!(
            norm(&["standby", "status", "-auto-approve"]),
            ["standby", "status", "--auto-approve"]
        );
    }
}
