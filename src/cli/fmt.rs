//! `standby fmt [--check] [--diff] [--recursive] [DIR|FILE...]`: rewrite
//! configuration files in the canonical layout (see `crate::hclfmt`).

use crate::hclfmt::{FormatError, format_source};
use miette::{NamedSource, SourceSpan};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code of `--check` when some file is not formatted.
const EXIT_UNFORMATTED: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Change nothing; list the files that are not formatted and exit 3 if
    /// there are any.
    #[arg(long)]
    pub check: bool,
    /// Print a unified diff of each change (with --check, only preview).
    #[arg(long)]
    pub diff: bool,
    /// Also format *.hcl files in subdirectories (hidden ones are skipped).
    #[arg(long)]
    pub recursive: bool,
    /// Directories (their *.hcl files) and files to format; default: the
    /// current directory. `-` reads standard input and writes the result to
    /// standard output.
    #[arg(value_name = "DIR|FILE")]
    pub paths: Vec<PathBuf>,
}

/// A file that does not parse, shown with its source and the spot underlined.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{path}:{line}:{column}: {message}")]
#[diagnostic(help("fix the syntax error; the file was left unchanged"))]
struct SyntaxError {
    path: String,
    line: usize,
    column: usize,
    message: String,
    #[source_code]
    source_code: NamedSource<String>,
    #[label("here")]
    span: SourceSpan,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let roots = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    if roots.len() == 1 && roots[0].as_os_str() == "-" {
        return format_stdin(&args);
    }
    let mut files = Vec::new();
    for root in &roots {
        collect(root, args.recursive, &mut files)?;
    }
    let mut failed = false;
    let mut unformatted = false;
    let stdout = std::io::stdout();
    for path in &files {
        let shown = display(path);
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot read {shown}: {e}");
                failed = true;
                continue;
            }
        };
        let formatted = match format_or_report(&shown, &source) {
            Ok(f) => f,
            Err(report) => {
                eprintln!("{report:?}");
                failed = true;
                continue;
            }
        };
        if formatted == source {
            continue;
        }
        unformatted = true;
        let mut out = stdout.lock();
        let _ = writeln!(out, "{shown}");
        if args.diff {
            write_diff(&mut out, &shown, &source, &formatted);
        }
        if !args.check
            && let Err(e) = write_atomically(path, &formatted)
        {
            eprintln!("error: cannot write {shown}: {e}");
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else if args.check && unformatted {
        ExitCode::from(EXIT_UNFORMATTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The formatted text of `source` (shown as `shown`), or the report that
/// says why it cannot be formatted.
fn format_or_report(shown: &str, source: &str) -> miette::Result<String> {
    format_source(source).map_err(|e| match e {
        FormatError::Syntax {
            line,
            column,
            offset,
            message,
        } => miette::Report::new(SyntaxError {
            path: shown.to_string(),
            line,
            column,
            message,
            span: SourceSpan::from((offset.min(source.len()), 0)),
            source_code: NamedSource::new(shown, source.to_string()),
        }),
        e @ FormatError::Changed => miette::miette!("{shown}: {e}"),
    })
}

/// A unified diff from `source` to `formatted`, headed `a/NAME`, `b/NAME`.
fn write_diff(out: &mut impl Write, shown: &str, source: &str, formatted: &str) {
    let diff = similar::TextDiff::from_lines(source, formatted);
    let _ = write!(
        out,
        "{}",
        diff.unified_diff()
            .context_radius(3)
            .header(&format!("a/{shown}"), &format!("b/{shown}"))
    );
}

/// `standby fmt -`: for editors. Prints the formatted text (or, with
/// `--check`, nothing; with `--diff`, the diff).
fn format_stdin(args: &Args) -> miette::Result<ExitCode> {
    let mut source = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut source)
        .map_err(|e| miette::miette!("cannot read standard input: {e}"))?;
    let formatted = format_or_report("<stdin>", &source)?;
    let mut out = std::io::stdout().lock();
    if args.diff {
        write_diff(&mut out, "<stdin>", &source, &formatted);
    } else if !args.check {
        let _ = out.write_all(formatted.as_bytes());
    }
    Ok(if args.check && formatted != source {
        ExitCode::from(EXIT_UNFORMATTED)
    } else {
        ExitCode::SUCCESS
    })
}

fn display(path: &Path) -> String {
    let s = path.display().to_string();
    s.strip_prefix("./").map(String::from).unwrap_or(s)
}

/// The files `path` names: itself, or the `*.hcl` files of a directory.
fn collect(path: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> miette::Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| miette::miette!("cannot read {}: {e}", path.display()))?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| miette::miette!("cannot list {}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let name = entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if entry.is_dir() {
            if recursive && !name.starts_with('.') {
                collect(&entry, recursive, out)?;
            }
        } else if name.ends_with(".hcl") && !name.starts_with('.') {
            out.push(entry);
        }
    }
    Ok(())
}

/// Replace `path`'s content: a temporary file beside it with the same
/// permissions, fsync, rename over. A symlink's target is what gets replaced.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path)?;
    let perms = std::fs::metadata(&target)?.permissions();
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.standby-fmt.tmp"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(perms)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
