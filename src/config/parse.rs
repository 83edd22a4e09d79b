//! Parsing one source into an hcl-edit body, turning syntax errors into
//! diagnostics at the exact offset.

use super::diag::{Diagnostic, Diagnostics, Loc, Source};
use hcl_edit::structure::Body;
use std::sync::Arc;

pub fn parse(source: &Arc<Source>, diags: &mut Diagnostics) -> Option<Body> {
    match hcl_edit::parser::parse_body(&source.text) {
        Ok(body) => {
            let bad = multi_line_strings(&source.text, &body);
            for &at in &bad {
                diags.push(
                    Diagnostic::error(
                        "standby::syntax",
                        Loc::new(source, Some(at..at)),
                        "Invalid multi-line string: quoted strings may not be split over multiple lines",
                    )
                    .label("the string continues on the next line")
                    .help("write \\n for a newline, or use a heredoc (<<-EOT ... EOT) for text over several lines"),
                );
            }
            bad.is_empty().then_some(body)
        }
        Err(e) => {
            let at = e.location().offset().min(source.text.len());
            // The file ends inside a block: point at the block's `{`.
            if source.text[at..].trim().is_empty()
                && let Some(open) = crate::hclfmt::unclosed_brace(&source.text)
            {
                diags.push(
                        Diagnostic::error(
                            "standby::syntax",
                            Loc::new(source, Some(open..open + 1)),
                            "unclosed `{`: this block (or object) has no closing `}` before the end of the file",
                        )
                        .label("opened here")
                        .help("add the missing `}`"),
                    );
                return None;
            }
            let end = source.text[at..]
                .chars()
                .next()
                .map_or(at, |c| if c == '\n' { at } else { at + c.len_utf8() });
            // hcl-edit stops at the exponent of a number past the float
            // range (`1e400`): name the number instead of the syntax.
            let rest = &source.text[at..];
            let exp_len = rest
                .char_indices()
                .take_while(|&(i, c)| {
                    (i == 0 && matches!(c, 'e' | 'E'))
                        || (i == 1 && matches!(c, '+' | '-'))
                        || (i > 0 && c.is_ascii_digit())
                })
                .count();
            let lead = source.text[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .count();
            if lead > 0
                && exp_len > 1
                && rest[..exp_len]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_ascii_digit())
            {
                let start = at - lead;
                let text = &source.text[start..at + exp_len];
                if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                    diags.push(
                        Diagnostic::error(
                            "standby::number_range",
                            Loc::new(source, Some(start..at + exp_len)),
                            format!("the number literal {text} is past 1.8e308, which standby's HCL parser does not support"),
                        )
                        .label("this number")
                        .help("Terraform would keep it; write it as a string and convert it with tonumber(\"...\") if it is really needed"),
                    );
                    return None;
                }
            }
            diags.push(
                Diagnostic::error(
                    "standby::syntax",
                    Loc::new(source, Some(at..end)),
                    format!("syntax error: {}", e.message()),
                )
                .label("the parser stopped here")
                .help(if e.message().contains("redefined attribute") {
                    "an attribute is set once per block: remove one of the two"
                } else if e.message().contains("redefined object key") {
                    "a key appears once per object: remove one of the two"
                } else {
                    "check for a missing quote, brace, bracket or `=` just before this point"
                }),
            );
            None
        }
    }
}

/// Byte offsets of the newlines that split quoted strings over lines in
/// `body` (parsed from `text`). Terraform refuses such a string ("Invalid
/// multi-line string"; a newline is allowed only inside `${ ... }` or
/// `%{ ... }`); hcl-edit accepts it, so the raw text is checked here.
pub fn multi_line_strings(text: &str, body: &Body) -> Vec<usize> {
    let mut v = QuotedLines {
        text,
        found: Vec::new(),
    };
    hcl_edit::visit::Visit::visit_body(&mut v, body);
    v.found
}

struct QuotedLines<'a> {
    text: &'a str,
    found: Vec<usize>,
}

impl hcl_edit::visit::Visit for QuotedLines<'_> {
    fn visit_expr(&mut self, e: &hcl_edit::expr::Expression) {
        use hcl_edit::Span;
        use hcl_edit::expr::Expression;
        if let (Expression::String(_) | Expression::StringTemplate(_), Some(r)) = (e, e.span())
            && let Some(at) = self
                .text
                .get(r.clone())
                .and_then(newline_outside_interpolation)
        {
            self.found.push(r.start + at);
            return;
        }
        hcl_edit::visit::visit_expr(self, e);
    }
}

/// The offset of the first newline of a quoted string's raw text that is
/// not inside an interpolation or directive.
fn newline_outside_interpolation(raw: &str) -> Option<usize> {
    let b = raw.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if depth == 0 => i += 1,
            // `$${` and `%%{` are escapes for the literal text.
            b'$' | b'%' if depth == 0 && b.get(i + 1) == Some(&b[i]) => i += 1,
            b'$' | b'%' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'{' if depth > 0 => depth += 1,
            b'}' if depth > 0 => depth -= 1,
            b'"' if depth > 0 => {
                // A string inside an interpolation: skip to its end.
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\n' if depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}
