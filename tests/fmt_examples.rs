//! Every configuration in the repository (plans/ and testdata/) that parses
//! formats without changing its body, and formatting it twice changes
//! nothing more.

use standby::hclfmt::{FormatError, format_source};
use std::path::{Path, PathBuf};

fn hcl_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            hcl_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "hcl") {
            out.push(p);
        }
    }
}

#[test]
fn repository_configurations_format_stably() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    hcl_files(&root.join("plans"), &mut files);
    hcl_files(&root.join("testdata"), &mut files);
    let (mut formatted, mut syntax_errors) = (0, 0);
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        match format_source(&src) {
            Ok(once) => {
                assert_eq!(
                    format_source(&once).unwrap(),
                    once,
                    "{}: not idempotent",
                    f.display()
                );
                formatted += 1;
                // Layout does not depend on the input's indentation, trailing
                // whitespace or runs of blank lines (files whose raw lines
                // are content are left out).
                if !once.contains("<<") && !once.contains("/*") {
                    let mangled: String = once
                        .lines()
                        .enumerate()
                        .map(|(i, l)| {
                            let pad = ["", "\t", "     ", " "][i % 4];
                            if l.is_empty() {
                                // One blank line becomes a run of them.
                                format!("{pad}\n \n\t\n")
                            } else {
                                format!("{pad}{}  \n", l.trim_start())
                            }
                        })
                        .collect();
                    assert_eq!(
                        format_source(&mangled).unwrap(),
                        once,
                        "{}: layout depends on input whitespace",
                        f.display()
                    );
                }
            }
            // Syntax errors are expected only in the invalid-input
            // fixtures; anywhere else (plans/, golden inputs) it is a bug.
            Err(e @ FormatError::Syntax { .. }) => {
                assert!(
                    f.starts_with(root.join("testdata/invalid")),
                    "{}: {e}",
                    f.display()
                );
                syntax_errors += 1;
            }
            Err(e) => panic!("{}: {e}", f.display()),
        }
    }
    assert!(formatted >= 10, "only {formatted} files formatted");
    assert!(
        syntax_errors >= 1,
        "the syntax-error fixtures were not seen"
    );
}
