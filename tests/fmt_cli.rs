//! `standby fmt` through the real binary: rewriting, `--check` exit codes,
//! `--diff`, and syntax errors that leave files alone.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const MESSY: &str = "site \"dr\" {\nprovider=\"local\"\n    root = \"sites/dr\"\n}\n";
const TIDY: &str = "site \"dr\" {\n  provider = \"local\"\n  root     = \"sites/dr\"\n}\n";

fn standby(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_standby"))
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn check_exits_0_when_formatted_and_3_when_not() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ok.hcl", TIDY);
    let out = standby(dir.path(), &["fmt", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");

    write(dir.path(), "messy.hcl", MESSY);
    let out = standby(dir.path(), &["fmt", "--check"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "messy.hcl\n");
    assert_eq!(
        read(dir.path(), "messy.hcl"),
        MESSY,
        "--check changed a file"
    );
}

#[test]
fn fmt_rewrites_changed_files_keeping_permissions() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ok.hcl", TIDY);
    write(dir.path(), "messy.hcl", MESSY);
    write(dir.path(), "notes.txt", MESSY);
    write(dir.path(), "sub/inner.hcl", MESSY);
    write(dir.path(), ".hidden/skip.hcl", MESSY);
    let p = dir.path().join("messy.hcl");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();

    let out = standby(dir.path(), &["fmt"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "messy.hcl\n");
    assert_eq!(read(dir.path(), "messy.hcl"), TIDY);
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(read(dir.path(), "notes.txt"), MESSY);
    assert_eq!(
        read(dir.path(), "sub/inner.hcl"),
        MESSY,
        "not recursive by default"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let out = standby(dir.path(), &["fmt", "--recursive"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "sub/inner.hcl\n");
    assert_eq!(read(dir.path(), "sub/inner.hcl"), TIDY);
    assert_eq!(read(dir.path(), ".hidden/skip.hcl"), MESSY);

    // A file named explicitly is formatted whatever its name.
    let out = standby(dir.path(), &["fmt", "notes.txt"]);
    assert_eq!(stdout(&out), "notes.txt\n");
    assert_eq!(read(dir.path(), "notes.txt"), TIDY);
}

#[test]
fn diff_prints_a_unified_diff() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "messy.hcl", MESSY);
    let out = standby(dir.path(), &["fmt", "--check", "--diff"]);
    assert_eq!(out.status.code(), Some(3));
    let s = stdout(&out);
    assert!(s.contains("--- a/messy.hcl\n+++ b/messy.hcl\n"), "{s}");
    assert!(s.contains("-provider=\"local\"\n"), "{s}");
    assert!(s.contains("+  provider = \"local\"\n"), "{s}");
    assert_eq!(read(dir.path(), "messy.hcl"), MESSY);

    let out = standby(dir.path(), &["fmt", "--diff"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("+++ b/messy.hcl"));
    assert_eq!(read(dir.path(), "messy.hcl"), TIDY);
}

#[test]
fn a_syntax_error_is_reported_with_its_position_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "site \"dr\" {\n    root = \n}\n";
    write(dir.path(), "bad.hcl", bad);
    write(dir.path(), "messy.hcl", MESSY);
    let out = standby(dir.path(), &["fmt"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.hcl:2:12"), "{err}");
    assert!(err.contains("left unchanged"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("bad.hcl")).unwrap(),
        bad.as_bytes()
    );
    // The other files of the run are still formatted.
    assert_eq!(read(dir.path(), "messy.hcl"), TIDY);

    let out = standby(dir.path(), &["fmt", "--check", "bad.hcl"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read(dir.path().join("bad.hcl")).unwrap(),
        bad.as_bytes()
    );
}

#[test]
fn a_missing_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = standby(dir.path(), &["fmt", "nope.hcl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope.hcl"));
}

#[test]
fn dash_formats_standard_input_to_standard_output() {
    use std::io::Write;
    let run = |args: &[&str], input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_standby"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A binary that exits early closes the pipe; the asserts below say why.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        child.wait_with_output().unwrap()
    };
    let out = run(&["fmt", "-"], MESSY);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), TIDY);
    let out = run(&["fmt", "--check", "-"], MESSY);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "");
    let out = run(&["fmt", "--check", "-"], TIDY);
    assert_eq!(out.status.code(), Some(0));
    let out = run(&["fmt", "-"], "a = \n");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("<stdin>:"), "{}", stderr(&out));
}
