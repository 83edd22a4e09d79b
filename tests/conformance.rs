//! The language conformance suite (issue 18): expressions, templates,
//! heredocs, `for` expressions, type conversions and functions, with the
//! values Terraform gives them, each run through the real loader
//! (`standby::config::load` on a configuration directory written to disk).
//!
//! Cases live in `testdata/conformance/*.json`:
//! `{"source": "where the cases come from", "cases": [CASE, ...]}` where a
//! CASE is `{"name", "expr", "want": JSON}` (the value of `expr`, compared
//! through `jsonencode`) or `{"name", "expr", "error": "TEXT"}` (loading
//! fails with a diagnostic whose message or help contains TEXT), with
//! optional `"json"` (the exact `jsonencode` text, for numbers whose
//! digits matter beyond a 64-bit float; alone, without `want`, for a
//! value past the range of serde_json's floats), `"hcl"` (more top-level blocks), `"files"` (`{name: content}`
//! written beside the configuration) and `"vars"` (`--var` values). A case
//! standby knowingly answers differently carries `"differs"` (why) and
//! `"standby"` (its value) or `"error"` (its refusal) beside Terraform's
//! `"want"`.

use serde_json::Value as Json;
use standby::config::{VarInputs, load};
use standby::model::Probe;
use std::path::Path;

const BASE: &str = r#"
vault "main" {
  url = "file://.standby/vault"
}
site "onprem" {
  provider = "local"
  root     = "sites/onprem"
}
site "dr" {
  provider = "local"
  root     = "sites/dr"
}
policy "standard" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  retention              = "24h"
}
machine "db" {
  site = site.onprem
  disk "data" { path = "db/data.img" }
  check "value" { command = ["echo", jsonencode(local.v)] }
}
protection "db" {
  machine = machine.db
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard
}
recovery_plan "shop" {
  group "data" { machines = [machine.db] }
}
"#;

/// JSON equality with numbers compared by value (3 == 3.0).
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Evaluate one case: Ok((value, its jsonencode text)) or Err(every
/// diagnostic's text).
fn run(dir: &Path, case: &Json) -> Result<(Json, String), String> {
    let expr = case["expr"].as_str().expect("expr");
    let hcl = case["hcl"].as_str().unwrap_or("");
    let text = format!("{BASE}\n{hcl}\nlocals {{\n  v = {expr}\n}}\n");
    std::fs::write(dir.join("main.hcl"), text).unwrap();
    if let Some(files) = case["files"].as_object() {
        for (name, content) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content.as_str().unwrap()).unwrap();
        }
    }
    let vars = VarInputs {
        cli: case["vars"]
            .as_array()
            .map(|v| v.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default(),
        files: Vec::new(),
    };
    match load(dir, &vars) {
        Ok(loaded) => {
            let machine = loaded.config.machines.values().next().expect("a machine");
            let check = &machine.checks[0];
            let Probe::Command { command, .. } = &check.probe else {
                panic!("not a command probe");
            };
            match serde_json::from_str(&command[1]) {
                Ok(v) => Ok((v, command[1].clone())),
                // A number past serde_json's floats: compared as text.
                Err(e) if e.to_string().contains("number out of range") => {
                    Ok((Json::Null, command[1].clone()))
                }
                Err(e) => Err(format!("bad JSON {}: {e}", command[1])),
            }
        }
        Err(diags) => Err(diags
            .items
            .iter()
            .map(|d| {
                format!(
                    "{} {}: {} ({})",
                    d.code,
                    d.loc.position(),
                    d.message,
                    d.help.clone().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

#[test]
fn conformance_cases_match_terraform() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/conformance");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no conformance cases");
    let mut failures = Vec::new();
    let mut count = 0;
    for f in &files {
        let suite: Json = serde_json::from_str(&std::fs::read_to_string(f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let file = f.file_name().unwrap().to_string_lossy().to_string();
        for case in suite["cases"].as_array().expect("cases") {
            count += 1;
            let tmp = tempfile::tempdir().unwrap();
            let name = format!("{file}: {}", case["name"].as_str().unwrap_or("?"));
            let got = run(tmp.path(), case);
            // A recorded difference: `want` is Terraform's value, `standby`
            // standby's, `differs` why (docs/LANGUAGE.md lists them).
            let want = match case.get("differs") {
                Some(_) => case.get("standby"),
                None => case.get("want"),
            };
            let text = case.get("json").and_then(Json::as_str);
            match (want, case.get("error").and_then(Json::as_str), got) {
                (Some(want), None, Ok((got, raw)))
                    if same(want, &got) && text.is_none_or(|t| t == raw) => {}
                // Only the text (a number past a 64-bit float's range).
                (None, None, Ok((_, raw))) if text.is_some_and(|t| t == raw) => {}
                (None, Some(text), Err(diags))
                    if diags.to_lowercase().contains(&text.to_lowercase()) => {}
                (_, _, got) => failures.push(format!(
                    "{name}\n  expr: {}\n  want: {}\n  got:  {:?}",
                    case["expr"],
                    text.map(str::to_string)
                        .unwrap_or_else(|| case.get("want").map_or_else(
                            || format!("error containing {:?}", case["error"]),
                            |w| w.to_string()
                        )),
                    got.map(|(_, raw)| raw)
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} conformance cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
