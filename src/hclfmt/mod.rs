//! `standby fmt`'s formatter: rewrites HCL source in the canonical layout,
//! the way `terraform fmt` does.
//!
//! The rules, applied line by line after the file parses:
//! - indentation is two spaces per open bracket level (`{`, `[`, `(`),
//!   counted the way terraform's hclwrite counts them: a line that opens
//!   brackets indents what follows by one level, whatever the count;
//! - one space each side of an attribute's `=`, and the `=` of consecutive
//!   single-line attributes aligned. An alignment group ends at any line
//!   without such an `=`: a blank line, a comment-only line, a block or
//!   bracket opener or closer, or an attribute whose value spans lines (as
//!   in terraform, a comment line ends a group);
//! - trailing `#` and `//` comments of consecutive lines are aligned one
//!   space past the longest code (a trailing `/* */` comment is part of the
//!   code before it, as in terraform);
//! - a value that spans lines (a heredoc, a multi-line string) ends the
//!   alignment groups after its line, since its inner lines have no `=`;
//! - block headers are written `type "label" {` with single spaces;
//! - no trailing whitespace, at most one blank line in a row, none at the
//!   start or end of the file or right inside brackets, exactly one newline
//!   at the end;
//! - strings, heredoc bodies and comment text stay as written, as does
//!   everything inside an expression apart from its line's indentation;
//!   lines inside a multi-line comment, string or heredoc are kept byte
//!   for byte.
//!
//! The result is checked to parse to the same body as the input, so a bug
//! here can refuse a file but never change what it means.

mod scan;

use scan::{LineInfo, scan};

/// Why a source cannot be formatted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// The input is not valid HCL.
    #[error("{line}:{column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        /// Byte offset of the error.
        offset: usize,
        message: String,
    },
    /// The formatter's own result would mean something else: a bug, and
    /// the file is left alone.
    #[error(
        "formatting would change the meaning of this file (a bug in standby fmt); the file is left unchanged"
    )]
    Changed,
}

/// Format HCL `source`; `Err` when it does not parse.
///
/// Files as editors save them keep their form: a UTF-8 byte-order mark
/// stays, and the file's own line ending (CRLF when most of its line
/// breaks are CRLF, else LF) is written on every line, so a file ends up
/// with one consistent ending and a formatted Windows file is left as is.
pub fn format_source(source: &str) -> Result<String, FormatError> {
    let (bom, text) = match source.strip_prefix('\u{feff}') {
        Some(t) => ("\u{feff}", t),
        None => ("", source),
    };
    let crlf = text.matches("\r\n").count();
    let lf = text.matches('\n').count();
    let normal = text.replace("\r\n", "\n");
    let out = format_with(&normal, layout)?;
    let out = if lf > 0 && crlf * 2 > lf {
        out.replace('\n', "\r\n")
    } else {
        out
    };
    Ok(format!("{bom}{out}"))
}

/// Format with `layout`, refusing any result that means something else.
fn format_with(source: &str, layout: fn(&str) -> String) -> Result<String, FormatError> {
    let before = parse(source)?;
    let out = layout(source);
    match hcl::parse(&out) {
        Ok(after) if after == before => Ok(out),
        _ => Err(FormatError::Changed),
    }
}

/// Parse to hcl-rs's body; on failure, ask hcl-edit's parser (which hcl-rs
/// uses underneath) for the error's position. A quoted string over several
/// lines is refused as Terraform does; a file ending inside a block points
/// at the block's unclosed `{`.
fn parse(source: &str) -> Result<hcl::Body, FormatError> {
    let syntax = |offset: usize, message: String| {
        let (line, column) = line_column(source, offset);
        FormatError::Syntax {
            line,
            column,
            offset,
            message,
        }
    };
    match hcl_edit::parser::parse_body(source) {
        Err(pe) => {
            let at = pe.location().offset().min(source.len());
            if source[at..].trim().is_empty()
                && let Some(open) = unclosed_brace(source)
            {
                return Err(syntax(
                        open,
                        "unclosed `{`: this block (or object) has no closing `}` before the end of the file".into(),
                    ));
            }
            return Err(syntax(at, pe.message().to_string()));
        }
        Ok(body) => {
            if let Some(&at) = crate::config::parse::multi_line_strings(source, &body).first() {
                return Err(syntax(
                    at,
                    "Invalid multi-line string: quoted strings may not be split over multiple lines (write \\n, or use a heredoc)".into(),
                ));
            }
        }
    }
    hcl::parse(source).map_err(|e| syntax(0, e.to_string()))
}

/// 1-based line and column (in characters) of a byte offset, as the
/// rendered source snippet counts them.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// The offset of the innermost `{` never closed, skipping strings,
/// comments and heredocs; None when the braces balance.
pub(crate) fn unclosed_brace(source: &str) -> Option<usize> {
    let b = source.as_bytes();
    let mut stack = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = source[i + 2..]
                    .find("*/")
                    .map_or(b.len(), |e| i + 2 + e + 1);
            }
            b'<' if b.get(i + 1) == Some(&b'<') => {
                // A heredoc: skip to the line holding only its marker.
                let rest = &source[i + 2..];
                let rest_t = rest.trim_start_matches('-');
                let marker: String = rest_t
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let Some(nl) = rest.find('\n') else { break };
                let mut pos = i + 2 + nl + 1;
                loop {
                    let end = source[pos..].find('\n').map_or(source.len(), |e| pos + e);
                    if marker.is_empty() || source[pos..end].trim() == marker || end >= source.len()
                    {
                        i = end;
                        break;
                    }
                    pos = end + 1;
                }
            }
            b'{' => stack.push(i),
            b'}' => {
                stack.pop();
            }
            _ => {}
        }
        i += 1;
    }
    stack.pop()
}

/// One logical line: a physical line plus the raw lines that continue it
/// (the inside of a multi-line string, heredoc or block comment).
struct Logical<'a> {
    first: &'a str,
    info: &'a LineInfo,
    rest: Vec<&'a str>,
    /// Bracket change over the whole logical line.
    net: i32,
    /// Bracket change from the `=` on (0: the value ends on this line).
    net_after_eq: i32,
}

/// A logical line cut into terraform's cells: indentation + lead, then the
/// assignment, then a trailing comment.
struct Cells {
    indent: usize,
    lead: String,
    assign: Option<String>,
    comment: Option<String>,
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn layout(source: &str) -> String {
    let text = source.strip_prefix('\u{feff}').unwrap_or(source);
    let lines: Vec<&str> = text.split('\n').collect();
    let infos = scan(&lines);

    let mut logical: Vec<Logical> = Vec::new();
    for (line, info) in lines.iter().zip(&infos) {
        let bracket_sum = |from: usize| {
            info.brackets
                .iter()
                .filter(|(at, _)| *at >= from)
                .map(|(_, d)| d)
                .sum::<i32>()
        };
        match logical.last_mut() {
            Some(l) if info.starts_raw => {
                l.rest.push(line);
                l.net += bracket_sum(0);
                l.net_after_eq += bracket_sum(0);
            }
            _ => logical.push(Logical {
                first: line,
                info,
                rest: Vec::new(),
                net: bracket_sum(0),
                net_after_eq: info.eq.map_or(0, bracket_sum),
            }),
        }
    }

    // Indentation, as terraform's hclwrite computes it.
    let mut indents: Vec<i32> = Vec::new();
    let mut cells: Vec<Option<Cells>> = Vec::with_capacity(logical.len());
    for l in &logical {
        if l.rest.is_empty() && l.first.trim().is_empty() {
            cells.push(None);
            continue;
        }
        let level = if l.net > 0 {
            let level = indents.len();
            indents.push(l.net);
            level
        } else {
            let mut closed = -l.net;
            while closed > 0 {
                let Some(top) = indents.last_mut() else { break };
                if closed >= *top {
                    closed -= *top;
                    indents.pop();
                } else {
                    *top -= closed;
                    closed = 0;
                }
            }
            indents.len()
        };
        cells.push(Some(cut(l, level * 2)));
    }

    let multi_line: Vec<bool> = logical.iter().map(|l| !l.rest.is_empty()).collect();
    align_assignments(&mut cells, &multi_line);
    let rendered: Vec<Option<String>> = align_comments(&cells, &multi_line);

    let mut out = String::with_capacity(source.len());
    let mut pending_blank = false;
    let mut after_opener = false;
    for (l, r) in logical.iter().zip(&rendered) {
        match r {
            None => pending_blank = !out.is_empty() && !after_opener,
            Some(first) => {
                let closer = first.trim_start().starts_with(['}', ']', ')']);
                if pending_blank && !closer {
                    out.push('\n');
                }
                pending_blank = false;
                after_opener = l.net > 0;
                out.push_str(first);
                out.push('\n');
                let shift = comment_shift(l, first);
                for raw in &l.rest {
                    out.push_str(&shifted(raw, shift));
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// How far a multi-line block comment standing on its own moved: its inner
/// lines move with it, so ` * text` lines stay under the `/*`. `None` when
/// they cannot all move (not enough leading spaces) or it is not such a comment.
fn comment_shift(l: &Logical, rendered: &str) -> Option<isize> {
    let trimmed = l.first.trim_start();
    if l.rest.is_empty() || !trimmed.starts_with("/*") {
        return None;
    }
    let old_indent = &l.first[..l.first.len() - trimmed.len()];
    if old_indent.contains('\t') {
        return None;
    }
    let new = (rendered.len() - rendered.trim_start().len()) as isize;
    let delta = new - old_indent.len() as isize;
    let fits = l
        .rest
        .iter()
        .all(|r| delta >= 0 || r.trim().is_empty() || r.starts_with(&" ".repeat(-delta as usize)));
    fits.then_some(delta)
}

fn shifted(raw: &str, shift: Option<isize>) -> String {
    match shift {
        Some(d) if d > 0 && !raw.trim().is_empty() => format!("{}{raw}", " ".repeat(d as usize)),
        Some(d) if d < 0 => raw.get(-d as usize..).unwrap_or("").to_string(),
        _ => raw.to_string(),
    }
}

fn cut(l: &Logical, indent: usize) -> Cells {
    let line = l.first;
    let start = line.len() - line.trim_start().len();
    let single = l.rest.is_empty();
    // A comment is a cell of its own only when code comes before it.
    let comment_at = l.info.comment.filter(|&c| c > start && single);
    let code_end = comment_at.unwrap_or(line.len());
    let code = &line[start..code_end];
    let code = if comment_at.is_some() || l.info.ends_in_code {
        code.trim_end()
    } else {
        code
    };
    let comment = comment_at.map(|c| line[c..].trim_end().to_string());
    match l.info.eq {
        Some(eq) if eq < code_end && l.net_after_eq == 0 => {
            let value = &line[eq + 1..code_end];
            let value = if comment_at.is_some() || l.info.ends_in_code {
                value.trim()
            } else {
                value.trim_start()
            };
            let assign = if value.is_empty() {
                "=".to_string()
            } else {
                format!("= {value}")
            };
            Cells {
                indent,
                lead: line[start..eq].trim_end().to_string(),
                assign: Some(assign),
                comment,
            }
        }
        // A value that opens brackets it closes on a later line: one space
        // each side of `=`, but no alignment (as terraform).
        Some(eq) if eq < code_end && l.net_after_eq > 0 => Cells {
            indent,
            lead: format!(
                "{} = {}",
                line[start..eq].trim_end(),
                code[eq + 1 - start..].trim_start()
            ),
            assign: None,
            comment,
        },
        Some(eq) if eq < code_end && l.net_after_eq == -1 && single => Cells {
            indent,
            lead: one_line_block(line, start, eq, code_end)
                .unwrap_or_else(|| normalize_header(code)),
            assign: None,
            comment,
        },
        _ => Cells {
            indent,
            lead: normalize_header(code),
            assign: None,
            comment,
        },
    }
}

/// `type  "label"   {` -> `type "label" {`; anything else unchanged.
fn normalize_header(code: &str) -> String {
    match code.find('{') {
        Some(brace) => match block_header(&code[..brace]) {
            Some(h) => format!("{h} {}", &code[brace..]),
            None => code.to_string(),
        },
        None => code.to_string(),
    }
}

/// `type "label" ...` (what comes before a block's `{`) with single spaces;
/// `None` when `head` is not a block type and labels.
fn block_header(head: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    let mut s = head.trim();
    while !s.is_empty() {
        let end = if let Some(quoted) = s.strip_prefix('"') {
            quoted.find('"')? + 2
        } else {
            s.find(|c: char| c.is_whitespace()).unwrap_or(s.len())
        };
        let part = &s[..end];
        let ident = !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
        // Quoted labels hold no escapes or interpolation in practice; leave
        // anything fancier as written.
        let label = part.starts_with('"') && !part.contains('\\') && !part.contains("${");
        // The block type comes first and is an identifier.
        let fits = if parts.is_empty() {
            ident
        } else {
            ident || label
        };
        if !fits {
            return None;
        }
        parts.push(part);
        s = s[end..].trim_start();
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// A one-line block `type "label" { name = value }` with single spaces.
fn one_line_block(line: &str, start: usize, eq: usize, code_end: usize) -> Option<String> {
    let brace = line[start..eq].find('{')? + start;
    let header = block_header(&line[start..brace])?;
    let name = line[brace + 1..eq].trim();
    let value = line[eq + 1..code_end].trim().strip_suffix('}')?.trim_end();
    if name.is_empty() || value.is_empty() {
        return None;
    }
    Some(format!("{header} {{ {name} = {value} }}"))
}

/// Pad the leads of each run of consecutive assignment lines to one width.
/// A line that continues over raw lines (`multi_line`) ends its group.
fn align_assignments(cells: &mut [Option<Cells>], multi_line: &[bool]) {
    let mut i = 0;
    while i < cells.len() {
        let has = |c: &Option<Cells>| c.as_ref().is_some_and(|c| c.assign.is_some());
        if !has(&cells[i]) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < cells.len() && has(&cells[j]) {
            j += 1;
            if multi_line[j - 1] {
                break;
            }
        }
        let widest = cells[i..j]
            .iter()
            .flatten()
            .map(|c| c.indent + width(&c.lead))
            .max()
            .unwrap_or(0);
        for c in cells[i..j].iter_mut().flatten() {
            let pad = widest - c.indent - width(&c.lead);
            c.lead.push_str(&" ".repeat(pad));
        }
        i = j;
    }
}

/// Render each line, placing the trailing comments of consecutive lines
/// one space past the longest code among them.
fn align_comments(cells: &[Option<Cells>], multi_line: &[bool]) -> Vec<Option<String>> {
    let code: Vec<Option<String>> = cells
        .iter()
        .map(|c| {
            c.as_ref().map(|c| {
                let mut s = " ".repeat(c.indent);
                s.push_str(&c.lead);
                if let Some(a) = &c.assign {
                    s.push(' ');
                    s.push_str(a);
                }
                s
            })
        })
        .collect();
    let mut out = code.clone();
    let has = |i: usize| cells[i].as_ref().is_some_and(|c| c.comment.is_some());
    let mut i = 0;
    while i < cells.len() {
        if !has(i) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < cells.len() && has(j) && !multi_line[j] {
            j += 1;
        }
        if j == i {
            // A comment on a line that continues below stands alone.
            j = i + 1;
        }
        let widest = (i..j)
            .filter_map(|k| code[k].as_deref().map(width))
            .max()
            .unwrap_or(0);
        for k in i..j {
            if let (Some(line), Some(c)) = (&mut out[k], &cells[k]) {
                let comment = c.comment.as_deref().unwrap_or("");
                let pad = widest - width(line) + 1;
                line.push_str(&" ".repeat(pad));
                line.push_str(comment);
            }
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_and_indents() {
        let src = "a {\nx=1\nlong_name   =  2\n}\n";
        assert_eq!(
            format_source(src).unwrap(),
            "a {\n  x         = 1\n  long_name = 2\n}\n"
        );
    }

    #[test]
    fn headers_get_single_spaces() {
        assert_eq!(normalize_header("disk   \"data\"   {"), "disk \"data\" {");
        assert_eq!(normalize_header("x = {"), "x = {");
        assert_eq!(normalize_header("a{"), "a {");
    }

    #[test]
    fn a_layout_that_changes_the_body_is_refused() {
        let src = "a = 1\n";
        let broken: fn(&str) -> String = |s| s.replace('1', "2");
        assert_eq!(format_with(src, broken), Err(FormatError::Changed));
        let garbage: fn(&str) -> String = |s| format!("{s} {{");
        assert_eq!(format_with(src, garbage), Err(FormatError::Changed));
        assert_eq!(format_with(src, layout), Ok(src.to_string()));
    }

    #[test]
    fn an_unclosed_block_points_at_its_brace_with_one_position() {
        let err = format_source("a {\n  b {\n    c = 1\n").unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::Syntax {
                    line: 2,
                    column: 5,
                    offset: 8,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = format_source("a {\n  s = \"}\"\n  h = <<EOT\n}\nEOT\n").unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::Syntax {
                    line: 1,
                    column: 3,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_quoted_string_over_two_lines_is_refused() {
        let err = format_source("a = \"x\ny\"\n").unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::Syntax {
                    line: 1,
                    column: 7,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(format_source("a = \"${join(\",\",\n[])}\"\n").is_ok());
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = format_source("a {\n  b = \n}\n").unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::Syntax {
                    line: 2,
                    column: 7,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
