//! Diagnostics: one error or warning with its source span, a stable code and
//! a hint; rendered with miette for people and as JSON for editors and CI.

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Width used for rendering, fixed so output is the same on every terminal.
const RENDER_WIDTH: usize = 100;

/// One source text a diagnostic can point into: a configuration file, a
/// variables file, or the command line.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
    named: NamedSource<String>,
}

impl Source {
    /// Files as editors save them read as their plain twins: a UTF-8
    /// byte-order mark is dropped and CRLF line endings become LF (so
    /// heredocs hold the same text and positions are the same).
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<Source> {
        let name = name.into();
        let mut text: String = text.into();
        if let Some(t) = text.strip_prefix('\u{feff}') {
            text = t.to_string();
        }
        if text.contains("\r\n") {
            text = text.replace("\r\n", "\n");
        }
        let named = NamedSource::new(name.clone(), text.clone());
        Arc::new(Source { name, text, named })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Where in which source a diagnostic points.
#[derive(Debug, Clone)]
pub struct Loc {
    pub source: Arc<Source>,
    pub span: Range<usize>,
}

impl Loc {
    pub fn new(source: &Arc<Source>, span: Option<Range<usize>>) -> Loc {
        let span = span.unwrap_or(0..0);
        Loc {
            source: source.clone(),
            span,
        }
    }

    /// `file:line:col`, for hints that point at a second place.
    pub fn position(&self) -> String {
        let (l, c) = self.source.line_col(self.span.start);
        format!("{}:{l}:{c}", self.source.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in the configuration.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable identifier such as `standby::unknown_reference`.
    pub code: &'static str,
    pub message: String,
    pub loc: Loc,
    /// Text under the underline.
    pub label: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, loc: Loc, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            loc,
            label: "here".into(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, loc: Loc, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, loc, message)
        }
    }

    /// A file or directory that could not be read: there is no span to
    /// underline, so the location is the path itself.
    pub fn unreadable(path: &str, message: impl Into<String>, help: &str) -> Diagnostic {
        Diagnostic::error(
            "standby::io",
            Loc::new(&Source::new(path.to_string(), ""), None),
            message,
        )
        .label("unreadable")
        .help(help)
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        // A diagnostic about a whole directory or file has no text to show.
        if self.loc.source.text.is_empty() {
            return None;
        }
        Some(&self.loc.source.named)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.loc.source.text.is_empty() {
            return None;
        }
        let span = &self.loc.span;
        let label = LabeledSpan::new_primary_with_span(
            Some(self.label.clone()),
            span.start..span.end.max(span.start),
        );
        Some(Box::new(std::iter::once(label)))
    }
}

/// Every problem found in one run, errors and warnings together.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// Human rendering with source snippets; colour only when `color`.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(RENDER_WIDTH)
            .with_links(false);
        let mut out = String::new();
        for d in &self.items {
            if handler.render_report(&mut out, d).is_err() {
                out.push_str(&format!("{}: {}\n", d.loc.position(), d.message));
            }
            out.push('\n');
        }
        out
    }

    /// Machine rendering for editors and CI: an array of
    /// `{severity, code, message, file, line, column, end_line, end_column, help}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.items
                .iter()
                .map(|d| {
                    let (line, column) = d.loc.source.line_col(d.loc.span.start);
                    let (end_line, end_column) = d.loc.source.line_col(d.loc.span.end);
                    serde_json::json!({
                        "severity": match d.severity {
                            Severity::Error => "error",
                            Severity::Warning => "warning",
                        },
                        "code": d.code,
                        "message": d.message,
                        "file": d.loc.source.name,
                        "line": line,
                        "column": column,
                        "end_line": end_line,
                        "end_column": end_column,
                        "help": d.help,
                    })
                })
                .collect(),
        )
    }
}

/// "did you mean X?" when one of `candidates` is close to `name`.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        // Ties go to the alphabetically first name, so output is stable.
        if score > 0.75 && best.is_none_or(|(s, b)| score > s || (score == s && c < b)) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}
