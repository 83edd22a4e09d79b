//! Golden plan renderings: each `testdata/plans/NAME/` holds `config/*.hcl`,
//! optionally `state.json` (copied to `.standby/state.json`), `args` (extra
//! command-line arguments, one per line), `secrets` (strings that must appear
//! in no output), and the expected `expected.txt`, `expected.md`,
//! `expected.json`. The real binary runs in a temporary copy with NO_COLOR=1.
//! `STANDBY_BLESS=1 cargo test --test plan_golden` rewrites the expectations.
//!
//! In JSON, `created_at` is replaced by "<created_at>"; when the case has no
//! state, the fresh lineage and the sensitive hashes keyed by it are replaced
//! too, since they are new on every run.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/plans");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config").is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 4,
        "expected at least 4 golden cases in {}",
        root.display()
    );
    cases
}

/// A temporary copy of the case's configuration and state.
fn workdir(case: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(case.join("config")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    if case.join("state.json").exists() {
        std::fs::create_dir_all(dir.path().join(".standby")).unwrap();
        std::fs::copy(
            case.join("state.json"),
            dir.path().join(".standby/state.json"),
        )
        .unwrap();
    }
    dir
}

/// Every file under `dir` with its contents.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn run(dir: &Path, case: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args: Vec<String> = vec!["-C".into(), dir.display().to_string(), "plan".into()];
    if let Ok(text) = std::fs::read_to_string(case.join("args")) {
        args.extend(text.lines().filter(|l| !l.is_empty()).map(String::from));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(&args)
        .env("NO_COLOR", "1")
        .env_remove("STANDBY_LOG")
        // Sensitive markers are keyed by the vault key: a fixed one keeps
        // them stable (the cases that use `key_env` name this variable).
        .env("STANDBY_VAULT_KEY", "42".repeat(32))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn normalise(doc: &mut Value, fresh_lineage: bool) {
    doc["created_at"] = Value::String("<created_at>".into());
    if fresh_lineage {
        doc["lineage"] = Value::String("<new lineage>".into());
        mask_markers(doc);
    }
}

fn mask_markers(v: &mut Value) {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("sensitive") => {
            m.insert("sensitive".into(), Value::String("<hash>".into()));
        }
        Value::Object(m) => m.values_mut().for_each(mask_markers),
        Value::Array(a) => a.iter_mut().for_each(mask_markers),
        _ => {}
    }
}

fn check(case: &Path, file: &str, actual: &str, failures: &mut Vec<String>) {
    let path = case.join(file);
    if std::env::var_os("STANDBY_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let diff = similar::TextDiff::from_lines(expected.as_str(), actual);
        failures.push(format!(
            "{} differs (STANDBY_BLESS=1 to accept):\n{}",
            path.display(),
            diff.unified_diff().header("expected", "actual")
        ));
    }
}

#[test]

fn golden_plans() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/plan.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let state_schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/state.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let state_validator = jsonschema::draft202012::new(&state_schema).unwrap();
    let mut failures = Vec::new();
    // Secrets searched for, over all cases: a lost `secrets` file must not
    // make the search vacuous.
    let mut secrets_checked = 0;
    for case in cases() {
        if let Ok(text) = std::fs::read_to_string(case.join("state.json")) {
            let doc: Value = serde_json::from_str(&text).unwrap();
            let errors: Vec<String> = state_validator
                .iter_errors(&doc)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{}/state.json: {errors:#?}",
                case.display()
            );
        }
        let dir = workdir(&case);
        let fresh = !case.join("state.json").exists();
        let secrets: Vec<String> = std::fs::read_to_string(case.join("secrets"))
            .map(|t| {
                t.lines()
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        secrets_checked += secrets.len();

        let (code, text, err) = run(dir.path(), &case, &["--detailed-exitcode"]);
        let changes = !text.contains("No changes.");
        assert_eq!(
            code,
            if changes { 2 } else { 0 },
            "{}: {err}\n{text}",
            case.display()
        );
        check(&case, "expected.txt", &text, &mut failures);

        let (code, md, err) = run(dir.path(), &case, &["--format", "markdown"]);
        assert_eq!(code, 0, "{}: {err}", case.display());
        check(&case, "expected.md", &md, &mut failures);

        let (code, json, err) = run(dir.path(), &case, &["--json", "--out", "saved.json"]);
        assert_eq!(code, 0, "{}: {err}", case.display());
        let saved = std::fs::read_to_string(dir.path().join("saved.json")).unwrap();
        assert_eq!(
            saved,
            json,
            "{}: --out writes the JSON document",
            case.display()
        );
        let mut doc: Value = serde_json::from_str(&json).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", case.display());
        normalise(&mut doc, fresh);
        check(
            &case,
            "expected.json",
            &(serde_json::to_string_pretty(&doc).unwrap() + "\n"),
            &mut failures,
        );

        let (code, dot, err) = Command::new(env!("CARGO_BIN_EXE_standby"))
            .args(["-C", &dir.path().display().to_string(), "graph"])
            .args(
                std::fs::read_to_string(case.join("args"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.is_empty()),
            )
            .output()
            .map(|o| {
                (
                    o.status.code().unwrap_or(-1),
                    String::from_utf8(o.stdout).unwrap(),
                    String::from_utf8(o.stderr).unwrap(),
                )
            })
            .unwrap();
        assert_eq!(code, 0, "{}: {err}", case.display());
        assert!(dot.starts_with("digraph plan {"), "{dot}");

        for s in &secrets {
            for (name, out) in [
                ("text", &text),
                ("markdown", &md),
                ("json", &json),
                ("dot", &dot),
            ] {
                assert!(
                    !out.contains(s.as_str()),
                    "{}: secret in {name} output",
                    case.display()
                );
            }
            assert!(
                !saved.contains(s.as_str()),
                "{}: secret in saved plan",
                case.display()
            );
            // What the runs wrote (state, saved plan, anything under the
            // working copy), not the case's input files.
            for (path, bytes) in files(dir.path()) {
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(s.as_str()),
                    "{}: secret in {}",
                    case.display(),
                    path.display()
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(secrets_checked > 0, "no case named a secret to search for");
}
