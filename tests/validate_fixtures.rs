//! Runs the real `standby validate` on every invalid configuration under
//! testdata/invalid/ and on every example under plans/.
//!
//! Each fixture directory holds `*.hcl` files, optionally `args` (extra
//! command-line arguments) and `expected.txt` (the exact stderr).
//! `STANDBY_BLESS=1 cargo test --test validate_fixtures` rewrites them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validate(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["validate"];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(&args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .env_remove("STANDBY_LOG")
        .output()
        .expect("run standby")
}

fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("testdata/invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn fixture_args(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("args"))
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// `[file:line:col]` as miette prints the location of a snippet.
fn has_location(text: &str) -> bool {
    text.lines().any(|l| {
        let Some(start) = l.find("─[") else {
            return false;
        };
        let Some(end) = l[start..].find(']') else {
            return false;
        };
        let inner = &l[start + "─[".len()..start + end];
        let mut parts = inner.rsplitn(3, ':');
        let col = parts.next().unwrap_or("");
        let line = parts.next().unwrap_or("");
        let file = parts.next().unwrap_or("");
        !file.is_empty() && line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok()
    })
}

#[test]
fn there_are_at_least_30_fixtures() {
    assert!(
        fixture_dirs().len() >= 30,
        "only {} fixtures",
        fixture_dirs().len()
    );
}

#[test]
fn every_invalid_fixture_fails_with_its_expected_diagnostics() {
    let bless = std::env::var_os("STANDBY_BLESS").is_some();
    let mut failures = Vec::new();
    for dir in fixture_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let args = fixture_args(&dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = validate(&dir, &args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: exit code\n{stderr}");
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
        assert!(
            has_location(&stderr),
            "{name}: no file:line:col in\n{stderr}"
        );
        assert!(
            stderr.contains("standby::"),
            "{name}: no diagnostic code in\n{stderr}"
        );
        assert!(
            !stderr.contains('\u{1b}'),
            "{name}: colour despite NO_COLOR"
        );
        let expected_path = dir.join("expected.txt");
        if bless {
            std::fs::write(&expected_path, &stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{name}: no expected.txt (run with STANDBY_BLESS=1)"));
        if expected != stderr {
            let diff = similar::TextDiff::from_lines(&expected, &stderr);
            failures.push(format!(
                "{name}:\n{}",
                diff.unified_diff().header("expected", "actual")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_invalid_fixture_reports_json_with_positions() {
    for dir in fixture_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut args = fixture_args(&dir);
        args.push("--json".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = validate(&dir, &args);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: stdout is not JSON: {e}"));
        assert_eq!(doc["valid"], false, "{name}");
        let diags = doc["diagnostics"].as_array().expect("diagnostics array");
        assert!(!diags.is_empty(), "{name}: no diagnostics");
        let errors = diags.iter().filter(|d| d["severity"] == "error").count();
        assert!(errors >= 1, "{name}: no error");
        for d in diags {
            assert!(
                d["file"].as_str().is_some_and(|f| !f.is_empty()),
                "{name}: {d}"
            );
            assert!(d["line"].as_u64().is_some_and(|l| l >= 1), "{name}: {d}");
            assert!(d["column"].as_u64().is_some_and(|c| c >= 1), "{name}: {d}");
            assert!(d["end_line"].as_u64() >= d["line"].as_u64(), "{name}: {d}");
            assert!(
                d["code"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("standby::")),
                "{name}: {d}"
            );
            assert!(
                d["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{name}: {d}"
            );
            assert!(
                d["help"].as_str().is_some_and(|h| !h.is_empty()),
                "{name}: every diagnostic has a hint: {d}"
            );
        }
    }
}

#[test]
fn json_positions_match_the_rendered_location() {
    let dir = repo().join("testdata/invalid/02-unknown-reference");
    let out = validate(&dir, &["--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &doc["diagnostics"][0];
    assert_eq!(d["code"], "standby::unknown_reference");
    assert_eq!(d["file"], "main.hcl");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(22), Some(10))
    );
    assert_eq!(
        (d["end_line"].as_u64(), d["end_column"].as_u64()),
        (Some(22), Some(21))
    );
    assert_eq!(d["help"], "did you mean `site.onprem`?");
}

#[test]
fn every_example_under_plans_validates() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("plans"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "quickstart, azure and fleet at least");
    for dir in dirs {
        let out = validate(&dir, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {stdout}{stderr}",
            dir.display()
        );
        assert!(
            stdout.starts_with("Success! The configuration is valid ("),
            "{stdout}"
        );
        assert!(
            dir.join("README.md").is_file(),
            "{} has a README.md",
            dir.display()
        );
    }
}

#[test]
fn the_exec_provider_example_validates() {
    let out = validate(&repo().join("plans/exec-example"), &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Success! The configuration is valid (1 machine, 1 protection, 1 recovery plan).\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_directory_can_be_given_as_argument_or_with_chdir() {
    let quickstart = repo().join("plans/quickstart");
    let by_arg = validate(&repo(), &[quickstart.to_str().unwrap()]);
    assert_eq!(by_arg.status.code(), Some(0));
    let by_chdir = validate(Path::new("/"), &["-C", quickstart.to_str().unwrap()]);
    assert_eq!(by_chdir.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&by_arg.stdout),
        "Success! The configuration is valid (2 machines, 2 protections, 1 recovery plan).\n"
    );
}

#[test]
fn valid_json_output_says_valid() {
    let out = validate(&repo().join("plans/quickstart"), &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert!(doc["diagnostics"].as_array().unwrap().is_empty());
}

#[test]
fn warnings_are_printed_but_validation_passes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.hcl"),
        "policy \"slow\" {\n  rpo_threshold          = \"5m\"\n  crash_consistent_every = \"10m\"\n  retention              = \"1d\"\n}\n",
    )
    .unwrap();
    let out = validate(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("standby::frequency_above_rpo"), "{stderr}");
    assert!(stderr.contains("main.hcl:3:28"), "{stderr}");
    let out = validate(dir.path(), &["--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["diagnostics"][0]["severity"], "warning");
}

#[test]
fn validate_writes_nothing_into_the_configuration_directory() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("plans/quickstart")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "hcl") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(validate(dir.path(), &[]).status.code(), Some(0));
    let after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "no .standby/, no state, no vault"
    );
}
