//! README runs as written (issue 12, item 8): every ```sh block of README.md,
//! in order, in one fresh temporary directory, with the built `standby` on
//! PATH, through `bash -e` (a failing command fails the block); then the
//! ```sh blocks of the README.md that `standby quickstart` writes, inside the
//! directory it made. Blocks are found generically (any fence whose info
//! string starts with `sh`), so README edits are covered as they come.
//!
//! Two rules, both stated in README.md: `cargo install --path .` is what
//! put the binary on PATH, so that line is taken as done; blocks marked
//! `bash` are for developing standby (running this very suite) and are not
//! run.

use std::path::Path;
use std::process::{Command, Stdio};

/// The ```sh blocks of a Markdown text: (line of the fence, body).
fn sh_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String, bool)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            match current.take() {
                None => {
                    let lang = info.split([' ', ',', '{']).next().unwrap_or("");
                    current = Some((i + 1, String::new(), lang == "sh" || lang == "shell"));
                }
                Some((at, body, true)) => out.push((at, body)),
                Some(_) => {}
            }
            continue;
        }
        if let Some((_, body, _)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// A block as run: `cargo install --path .` lines are already done.
fn runnable(body: &str) -> String {
    body.lines()
        .map(|l| {
            if l.trim_start().starts_with("cargo install --path .") {
                "true  # installed by the test harness: the built binary is on PATH"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_blocks(file: &Path, cwd: &Path, bin_dir: &Path) {
    let text = std::fs::read_to_string(file).unwrap();
    let blocks = sh_blocks(&text);
    assert!(!blocks.is_empty(), "no sh blocks in {}", file.display());
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (line, body) in blocks {
        let o = Command::new("bash")
            .arg("-e")
            .arg("-o")
            .arg("pipefail")
            .arg("-c")
            .arg(runnable(&body))
            .current_dir(cwd)
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}:{line}: the block failed ({}):\n{body}\nstdout:\n{}\nstderr:\n{}",
            file.display(),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn every_sh_block_of_the_readme_runs() {
    let d = tempfile::tempdir().unwrap();
    let bin_dir = d.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_standby"), bin_dir.join("standby")).unwrap();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    run_blocks(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
        &work,
        &bin_dir,
    );
    // The README quickstart writes names commands that work where it is.
    let qs = work.join("standby-quickstart");
    run_blocks(&qs.join("README.md"), &qs, &bin_dir);
}

#[test]
fn blocks_are_found_generically() {
    let md = "text\n```sh\na\nb\n```\n```bash\nnot run\n```\n```hcl\nx = 1\n```\n  ```sh title\nc\n  ```\n";
    assert_eq!(
        sh_blocks(md),
        vec![(2, "a\nb\n".to_string()), (12, "c\n".to_string())]
    );
    assert_eq!(
        runnable("cargo install --path .   # x\nstandby"),
        "true  # installed by the test harness: the built binary is on PATH\nstandby"
    );
}
