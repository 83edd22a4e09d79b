//! Golden pairs `testdata/fmt/NAME.in.hcl` -> `NAME.out.hcl`: the formatter's
//! output, its idempotence, and that formatting never changes the body.

use standby::hclfmt::format_source;
use std::path::{Path, PathBuf};

fn pairs() -> Vec<(String, PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fmt");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".in.hcl") {
            out.push((
                stem.to_string(),
                path.clone(),
                dir.join(format!("{stem}.out.hcl")),
            ));
        }
    }
    out.sort();
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn there_are_enough_golden_pairs() {
    let names: Vec<String> = pairs().into_iter().map(|p| p.0).collect();
    for want in [
        "alignment",
        "nested-blocks",
        "comments",
        "heredoc",
        "multiline-lists",
        "blank-lines",
        "tabs",
        "formatted",
        "headers",
        "design-sketch",
    ] {
        assert!(
            names.contains(&want.to_string()),
            "missing {want}: {names:?}"
        );
    }
}

#[test]
fn inputs_format_to_their_golden_output() {
    for (name, input, output) in pairs() {
        let got = format_source(&read(&input)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, read(&output), "{name}: output differs from golden");
    }
}

#[test]
fn formatting_is_idempotent() {
    for (name, _, output) in pairs() {
        let once = read(&output);
        assert_eq!(
            format_source(&once).unwrap(),
            once,
            "{name}: fmt(fmt(x)) != fmt(x)"
        );
    }
}

#[test]
fn formatting_keeps_the_body() {
    for (name, input, output) in pairs() {
        let before: hcl::Body = hcl::from_str(&read(&input)).unwrap();
        let after: hcl::Body = hcl::from_str(&read(&output)).unwrap();
        assert_eq!(before, after, "{name}: the body changed");
    }
}

#[test]
fn already_formatted_input_is_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fmt");
    let input = read(&dir.join("formatted.in.hcl"));
    assert_eq!(format_source(&input).unwrap(), input);
}

#[test]
fn comments_of_every_kind_are_kept() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fmt");
    let out = read(&dir.join("comments.out.hcl"));
    for comment in [
        "# A hash comment at the top.",
        "// A slash comment at the top.",
        "/* A block comment on one line. */",
        "# trailing hash",
        "// trailing slashes",
        "/* trailing block */",
        "* its inner lines stay as written.",
        "#   spaces inside the comment stay",
    ] {
        assert!(out.contains(comment), "lost {comment:?}");
    }
}

/// Whatever the indentation and spacing of the input, the output is the
/// same (files without heredocs or multi-line comments, whose inner lines
/// are content).
#[test]
fn layout_does_not_depend_on_input_whitespace() {
    for (name, _, output) in pairs() {
        let golden = read(&output);
        if golden.contains("<<") || golden.contains("/*") {
            continue;
        }
        let mangled: String = golden
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let l = l
                    .trim_start()
                    .replacen(" = ", ["=", "  =   ", "\t=\t"][i % 3], 1);
                format!("{}{l}   \n", ["", "\t", "       "][i % 3])
            })
            .collect();
        assert_eq!(format_source(&mangled).unwrap(), golden, "{name}");
    }
}

#[test]
fn empty_and_comment_only_files() {
    assert_eq!(format_source("").unwrap(), "");
    assert_eq!(format_source("\n\n\n").unwrap(), "");
    assert_eq!(
        format_source("  # only a comment").unwrap(),
        "# only a comment\n"
    );
}
