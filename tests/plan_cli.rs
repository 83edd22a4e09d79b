//! `standby plan` and `standby graph` end to end: exit codes, errors on bad
//! configuration and state, saved plans, DOT on the shipped examples.

use std::path::{Path, PathBuf};
use std::process::Command;

fn standby(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_standby"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plans")
        .join(name)
}

/// A temporary copy of a golden case's configuration (without its state).
fn case_copy(case: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/plans")
        .join(case)
        .join("config");
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn exit_codes_follow_detailed_exitcode() {
    let dir = case_copy("quickstart_create");
    let (code, out, _) = standby(dir.path(), &["plan"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = standby(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("Plan: 9 to add, 0 to change, 0 to destroy."),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "no colour when not a terminal");
}

#[test]
fn configuration_errors_go_to_stderr_and_exit_1() {
    let dir = case_copy("quickstart_create");
    std::fs::write(
        dir.path().join("broken.hcl"),
        "protection \"x\" {\n  machine = machine.dbb\n}\n",
    )
    .unwrap();
    for args in [&["plan"][..], &["plan", "--detailed-exitcode"], &["graph"]] {
        let (code, out, err) = standby(dir.path(), args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains("broken.hcl:2:"), "{args:?}: {err}");
    }
}

#[test]
fn a_malformed_state_is_a_clear_error_and_is_left_alone() {
    let dir = case_copy("quickstart_create");
    std::fs::create_dir(dir.path().join(".standby")).unwrap();
    let state = dir.path().join(".standby/state.json");
    std::fs::write(&state, "{\"format_version\": 1, \"lin").unwrap();
    let (code, out, err) = standby(dir.path(), &["plan", "--out", "p.json"]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("state.json"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{\"format_version\": 1, \"lin"
    );
    assert!(!dir.path().join("p.json").exists());
}

#[test]
fn out_saves_a_plan_that_load_and_ensure_applicable_accept() {
    let dir = case_copy("quickstart_create");
    // Single-dash `-out` as terraform users type it.
    let (code, out, err) = standby(dir.path(), &["plan", "-out", "tfplan.json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Saved the plan to tfplan.json."), "{out}");
    let saved = standby::plan::SavedPlan::load(&dir.path().join("tfplan.json")).unwrap();
    assert_eq!(saved.plan.changes.len(), 9);
    assert_eq!(saved.plan.serial, None);
    let hash = saved.plan.source_hash.clone();
    standby::plan::ensure_applicable(&saved, None, &hash).unwrap();
    // Editing the configuration makes it stale.
    let main = dir.path().join("main.hcl");
    let text = std::fs::read_to_string(&main)
        .unwrap()
        .replace("\"7d\"", "\"8d\"");
    std::fs::write(&main, text).unwrap();
    let (_, json, _) = standby(dir.path(), &["plan", "--json"]);
    let now: serde_json::Value = serde_json::from_str(&json).unwrap();
    let err = standby::plan::ensure_applicable(&saved, None, now["source_hash"].as_str().unwrap())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the configuration changed since the plan was made"),
        "{err}"
    );
}

#[test]
fn examples_plan_and_graph() {
    for name in ["quickstart", "fleet", "azure"] {
        let dir = example(name);
        assert!(dir.is_dir(), "{} is missing", dir.display());
        let (code, out, err) = standby(&dir, &["plan", "--detailed-exitcode"]);
        assert_eq!(code, 2, "{name}: {err}\n{out}");
        let (code, dot, err) = standby(&dir, &["graph"]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(
            dot.starts_with("digraph plan {\n") && dot.ends_with("}\n"),
            "{dot}"
        );
        assert!(dot.contains(" -> "), "{name}: {dot}");
    }
}

#[test]
fn graph_prints_dependencies_in_dot() {
    let dir = case_copy("quickstart_create");
    let (code, dot, err) = standby(dir.path(), &["graph"]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "  \"protection.db\" [label = \"+ protection.db\"];",
        "  \"protection.db\" -> \"machine.db\";",
        "  \"protection.db\" -> \"policy.standard\";",
        "  \"machine.db\" -> \"site.onprem\";",
        "  \"recovery_plan.shop\" -> \"protection.web\";",
    ] {
        assert!(dot.lines().any(|l| l == line), "missing {line:?} in\n{dot}");
    }
}

#[test]
fn a_plan_that_would_destroy_a_prevent_destroy_protection_fails() {
    let dir = case_copy("no_changes");
    std::fs::create_dir(dir.path().join(".standby")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/plans/no_changes/state.json"),
        dir.path().join(".standby/state.json"),
    )
    .unwrap();
    let file = dir.path().join("machines.hcl");
    let text = std::fs::read_to_string(&file).unwrap().replacen(
        "machine           = machine.db\n  target            = site.dr\n",
        "machine           = machine.db\n  target            = site.dr2\n  prevent_destroy   = true\n",
        1,
    ) + "\nsite \"dr2\" {\n  provider = \"local\"\n  root     = \"sites/dr2\"\n}\n";
    std::fs::write(&file, text).unwrap();
    let (code, out, err) = standby(
        dir.path(),
        &["plan", "--detailed-exitcode", "--out", "p.json"],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("protection.db has prevent_destroy = true, but this plan would replace it (forced by target)"),
        "{err}"
    );
    assert!(!dir.path().join("p.json").exists());
}
