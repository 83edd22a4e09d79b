//! bench/gen_fleet.py writes state by mirroring src/plan/attributes.rs; this
//! keeps the two in step: its matching state must plan as "No changes", and
//! its 99% state must show exactly the mismatches it documents.

use std::path::Path;
use std::process::Command;

fn generate(dir: &Path, machines: u32, matching: u32) {
    let status = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/gen_fleet.py"))
        .arg(dir)
        .args(["--machines", &machines.to_string()])
        .args(["--state-match", &matching.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn plan(dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args([
            "-C",
            &dir.display().to_string(),
            "plan",
            "--detailed-exitcode",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn generated_matching_state_has_no_changes() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 20, 100);
    let (code, out, err) = plan(dir.path());
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(
        out.starts_with("No changes. The DR topology matches the configuration."),
        "{out}"
    );
}

#[test]
fn generated_state_differs_by_the_documented_one_percent() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 200, 99);
    let (code, out, err) = plan(dir.path());
    assert_eq!(code, 2, "{err}\n{out}");
    assert!(
        out.contains("Plan: 2 to add, 1 to change, 0 to destroy."),
        "{out}"
    );
    assert!(
        out.contains("~ disk.data.path = \"m00000/data-old.img\" -> \"m00000/data.img\""),
        "{out}"
    );
    assert!(out.contains("  # machine.m00100 will be created"), "{out}");
    assert!(
        out.contains("  # protection.m00100 will be created"),
        "{out}"
    );
}
