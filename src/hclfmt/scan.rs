//! A line scanner for HCL source: for each physical line, where its code
//! brackets, first assignment `=` and trailing comment are, and whether it
//! starts inside something whose text must stay as written (a string, a
//! heredoc body, a block comment).
//!
//! It knows only as much HCL as layout needs; the parser has already
//! accepted the file, and the formatter checks its result parses to the
//! same body, so a gap here can never change what a file means.

/// What layout needs to know about one physical line.
#[derive(Debug, Default, Clone)]
pub(crate) struct LineInfo {
    /// The line begins inside a string, a heredoc body or a block comment:
    /// it is kept byte for byte and belongs to the line before it.
    pub starts_raw: bool,
    /// The line ends in top-level code, so trailing whitespace is not content.
    pub ends_in_code: bool,
    /// `+1`/`-1` for each bracket in top-level code, with its byte offset.
    pub brackets: Vec<(usize, i32)>,
    /// The first lone `=` in top-level code that has code before it.
    pub eq: Option<usize>,
    /// Where a comment that runs to the end of the line starts: a `#` or
    /// `//` comment, or a `/* */` comment that is alone on its line.
    pub comment: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Ctx {
    /// A quoted string.
    Str,
    /// `${ ... }` or `%{ ... }` inside a string; the count is nested `{`.
    Interp(u32),
    /// A heredoc body, ended by a line holding only the marker.
    Heredoc(String),
    /// `/* ... */`.
    BlockComment,
}

/// Scan `lines` (the text split on `\n`).
pub(crate) fn scan(lines: &[&str]) -> Vec<LineInfo> {
    let mut stack: Vec<Ctx> = Vec::new();
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let mut info = LineInfo {
            starts_raw: !stack.is_empty(),
            ..LineInfo::default()
        };
        if let Some(Ctx::Heredoc(marker)) = stack.last() {
            if line.trim() == marker {
                stack.pop();
            }
            info.ends_in_code = false;
            out.push(info);
            continue;
        }
        scan_line(line, &mut stack, &mut info);
        out.push(info);
    }
    out
}

fn scan_line(line: &str, stack: &mut Vec<Ctx>, info: &mut LineInfo) {
    let b = line.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut i = 0;
    let mut seen_code = false;
    let mut heredoc: Option<String> = None;
    // A `/* */` comment in top-level code: start, and whether it closed on this line.
    let mut block_comment: Option<(usize, bool)> = None;
    while i < b.len() {
        let c = b[i];
        match stack.last_mut() {
            None => {
                if c.is_ascii_whitespace() {
                    i += 1;
                    continue;
                }
                if c == b'#' || (c == b'/' && at(i + 1) == b'/') {
                    info.comment = Some(i);
                    i = b.len();
                    continue;
                }
                if c == b'/' && at(i + 1) == b'*' {
                    block_comment = Some((i, false));
                    stack.push(Ctx::BlockComment);
                    i += 2;
                    continue;
                }
                block_comment = None;
                match c {
                    b'"' => stack.push(Ctx::Str),
                    b'{' | b'[' | b'(' if heredoc.is_none() => info.brackets.push((i, 1)),
                    b'}' | b']' | b')' if heredoc.is_none() => info.brackets.push((i, -1)),
                    b'!' | b'<' | b'>' if at(i + 1) == b'=' => i += 1,
                    b'=' if at(i + 1) == b'=' || at(i + 1) == b'>' => i += 1,
                    b'=' if info.eq.is_none() && seen_code => info.eq = Some(i),
                    b'<' if at(i + 1) == b'<' => {
                        let mut j = i + 2;
                        if at(j) == b'-' {
                            j += 1;
                        }
                        let start = j;
                        while at(j).is_ascii_alphanumeric() || at(j) == b'_' || at(j) == b'-' {
                            j += 1;
                        }
                        if j > start {
                            heredoc = Some(line[start..j].to_string());
                        }
                        i = j - 1;
                    }
                    _ => {}
                }
                seen_code = true;
                i += 1;
            }
            Some(Ctx::Str) => {
                match c {
                    b'\\' => i += 1,
                    b'"' => {
                        stack.pop();
                    }
                    b'$' | b'%' if at(i + 1) == c && at(i + 2) == b'{' => i += 2,
                    b'$' | b'%' if at(i + 1) == b'{' => {
                        stack.push(Ctx::Interp(0));
                        i += 1;
                    }
                    _ => {}
                }
                i += 1;
            }
            Some(Ctx::Interp(depth)) => {
                match c {
                    b'"' => stack.push(Ctx::Str),
                    b'{' => *depth += 1,
                    b'}' if *depth == 0 => {
                        stack.pop();
                    }
                    b'}' => *depth -= 1,
                    b'/' if at(i + 1) == b'*' => {
                        stack.push(Ctx::BlockComment);
                        i += 1;
                    }
                    _ => {}
                }
                i += 1;
            }
            Some(Ctx::BlockComment) => {
                if c == b'*' && at(i + 1) == b'/' {
                    stack.pop();
                    if stack.is_empty()
                        && let Some((start, _)) = block_comment
                    {
                        block_comment = Some((start, true));
                    }
                    i += 2;
                } else {
                    i += 1;
                }
            }
            Some(Ctx::Heredoc(_)) => i = b.len(),
        }
    }
    // A `/* */` comment standing alone on its line is still a comment line
    // (it ends alignment groups); after code it stays part of the code, as
    // in terraform, where only `#` and `//` comments get aligned.
    if info.comment.is_none()
        && !seen_code
        && let Some((start, true)) = block_comment
    {
        info.comment = Some(start);
    }
    info.ends_in_code = stack.is_empty();
    if let Some(marker) = heredoc
        && stack.is_empty()
    {
        stack.push(Ctx::Heredoc(marker));
    }
}
