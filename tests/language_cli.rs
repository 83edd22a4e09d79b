//! The language's DR cases through the real binary (issue 18) and files as
//! editors save them (issue 12 item 3): a `for_each` built by a `for` with
//! two `web` entries is an error naming both; `null` means "not set";
//! numbers convert where a string is needed; a configuration saved with a
//! BOM and CRLF line endings validates, plans and formats like its plain twin.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn standby(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_standby"))
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const BASE: &str = r#"
vault "main" {
  url      = "file://.standby/vault"
  key_file = "vault.key"
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
"#;

fn config(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.hcl"), format!("{BASE}{extra}")).unwrap();
    dir
}

const INVENTORY: &str = r#"
locals {
  inventory = [
    { name = "web", disk = "web/a.img" },
    { name = "db", disk = "db/a.img" },
    { name = "web", disk = "web/b.img" },
  ]
}
machine "m" {
  for_each = { for m in local.inventory : m.name => m }
  site     = site.onprem
  disk "system" { path = each.value.disk }
}
protection "m" {
  for_each = machine.m
  machine  = each.value
  target   = site.dr
  vault    = vault.main
  policy   = policy.standard
}
"#;

#[test]
fn for_each_over_an_inventory_with_two_web_entries_is_an_error_naming_both() {
    let dir = config(INVENTORY);
    let o = standby(dir.path(), &["validate"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            r#"duplicate object key "web": items [0] and [2] of the `for` both produce it"#
        ),
        "{out}"
    );
    assert!(
        out.contains("main.hcl:28:"),
        "points at the key expression: {out}"
    );
    // Nothing is planned from a configuration with that error.
    let o = standby(dir.path(), &["plan"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn grouping_the_inventory_with_ellipsis_is_valid() {
    let fixed = INVENTORY.replace(
        "{ for m in local.inventory : m.name => m }",
        "{ for name, ms in { for m in local.inventory : m.name => m... } : name => ms[0] }",
    );
    let dir = config(&fixed);
    let o = standby(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("2 machines"), "{}", text(&o));
}

#[test]
fn null_means_not_set_for_optional_attributes() {
    let vault = r#"
variable "use_env" { default = true }
vault "alt" {
  url      = "file://.standby/alt"
  key_env  = var.use_env ? "STANDBY_VAULT_KEY" : null
  key_file = var.use_env ? null : "main.key"
}
machine "db" {
  site = site.onprem
  disk "data" { path = "db/data.img" }
  check "rows" {
    command = ["sh", "-c", "echo 42", 1]
    expect  = 42
    retries = null
  }
}
protection "db" {
  machine = machine.db
  target  = site.dr
  vault   = vault.alt
  policy  = policy.standard
}
"#;
    let dir = config(vault);
    for var in ["use_env=true", "use_env=false"] {
        let o = standby(dir.path(), &["validate", "--var", var]);
        assert_eq!(o.status.code(), Some(0), "{var}: {}", text(&o));
    }
    // Both set is still refused.
    let both = vault.replace("var.use_env ? null : \"main.key\"", "\"main.key\"");
    let dir = config(&both);
    let o = standby(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("key_file"), "{}", text(&o));
}

/// Rewrite every `*.hcl` of `dir` as a Windows editor saves it.
fn to_windows(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hcl") {
            let t = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, format!("\u{feff}{}", t.replace('\n', "\r\n"))).unwrap();
        }
    }
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn a_configuration_saved_with_bom_and_crlf_behaves_like_its_plain_twin() {
    let root = tempfile::tempdir().unwrap();
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/quickstart");
    let (plain, win) = (root.path().join("plain"), root.path().join("win"));
    copy(&quickstart, &plain);
    copy(&quickstart, &win);
    // A heredoc, where line endings are part of a value.
    let extra = "locals {\n  runbook = <<EOT\n  step one\nEOT\n}\n";
    std::fs::write(plain.join("extra.hcl"), extra).unwrap();
    std::fs::write(win.join("extra.hcl"), extra).unwrap();
    to_windows(&win);
    for args in [
        &["validate"][..],
        &["validate", "--json"],
        &["plan", "--detailed-exitcode", "--no-color"],
        &["plan", "--json"],
        &["fmt", "--check"],
        &["fmt", "--check", "--diff"],
    ] {
        let a = standby(&plain, args);
        let b = standby(&win, args);
        assert_eq!(
            a.status.code(),
            b.status.code(),
            "{args:?}: {}\n---\n{}",
            text(&a),
            text(&b)
        );
        if args.contains(&"plan") && args.contains(&"--json") {
            // Each plan has its own lineage and time; the rest (the
            // configuration hash too) is the same.
            let strip = |o: &Output| {
                let mut j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                j["lineage"] = serde_json::Value::Null;
                j["created_at"] = serde_json::Value::Null;
                j
            };
            assert_eq!(strip(&a), strip(&b));
            continue;
        }
        // A diff shows the file's own bytes: its BOM and CRLF endings.
        let b_text = if args.contains(&"--diff") {
            text(&b).replace("\r\n", "\n").replace('\u{feff}', "")
        } else {
            text(&b)
        };
        assert_eq!(text(&a), b_text, "{args:?}");
    }
    // An error is reported at the same line and column in both.
    for (d, nl) in [(&plain, "\n"), (&win, "\r\n")] {
        let p = d.join("extra.hcl");
        let t = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{t}locals {{{nl}  oops = var.nope{nl}}}{nl}")).unwrap();
    }
    let a = standby(&plain, &["validate", "--json"]);
    let b = standby(&win, &["validate", "--json"]);
    assert_eq!(a.status.code(), Some(1));
    assert!(
        text(&a).contains(r#""line": 7"#) && text(&a).contains(r#""column": 10"#),
        "{}",
        text(&a)
    );
    assert_eq!(text(&a), text(&b));
}

#[test]
fn fmt_keeps_a_files_own_line_ending_and_bom_and_makes_it_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let messy = "site \"dr\" {\r\nprovider=\"local\"\r\n    root = \"sites/dr\"\r\n}\r\n";
    std::fs::write(dir.path().join("crlf.hcl"), format!("\u{feff}{messy}")).unwrap();
    // Mostly CRLF with one stray LF line.
    std::fs::write(
        dir.path().join("mixed.hcl"),
        messy.replacen("\r\n", "\n", 1),
    )
    .unwrap();
    std::fs::write(dir.path().join("lf.hcl"), messy.replace("\r\n", "\n")).unwrap();
    let o = standby(dir.path(), &["fmt"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let tidy = "site \"dr\" {\n  provider = \"local\"\n  root     = \"sites/dr\"\n}\n";
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    assert_eq!(
        read("crlf.hcl"),
        format!("\u{feff}{}", tidy.replace('\n', "\r\n"))
    );
    assert_eq!(read("mixed.hcl"), tidy.replace('\n', "\r\n"));
    assert_eq!(read("lf.hcl"), tidy);
    // Formatted files pass --check as they are.
    let o = standby(dir.path(), &["fmt", "--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

const DYNAMIC: &str = r#"
locals {
  inventory = {
    db  = { disks = { system = "db/system.img", data = "db/data.img" }, checks = ["fs", "sql"] }
    web = { disks = { system = "web/system.img" }, checks = [] }
  }
}
machine "m" {
  for_each = local.inventory
  site     = site.onprem
  dynamic "disk" {
    for_each = each.value.disks
    labels   = [disk.key]
    content {
      path = disk.value
    }
  }
  dynamic "check" {
    for_each = each.value.checks
    iterator = c
    labels   = [c.value]
    content {
      command = ["sh", "-c", "exit 0", c.key]
    }
  }
}
protection "m" {
  for_each = machine.m
  machine  = each.value
  target   = site.dr
  vault    = vault.main
  policy   = policy.standard
}
recovery_plan "shop" {
  dynamic "group" {
    for_each = ["db", "web"]
    labels   = [group.value]
    content {
      machines = [machine.m[group.value]]
    }
  }
}
"#;

#[test]
fn dynamic_blocks_generate_disks_checks_and_groups() {
    let dir = config(DYNAMIC);
    let o = standby(dir.path(), &["plan", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let attrs = |addr: &str| -> Vec<(String, serde_json::Value)> {
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["address"] == addr)
            .unwrap_or_else(|| panic!("no {addr} in {plan}"))["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["name"].as_str().unwrap().to_string(), a["after"].clone()))
            .collect()
    };
    let db = attrs(r#"machine.m["db"]"#);
    let names: Vec<&str> = db.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"disk.system.path") && names.contains(&"disk.data.path"),
        "{db:?}"
    );
    assert!(
        names.contains(&"check.fs.command") && names.contains(&"check.sql.command"),
        "{db:?}"
    );
    let sql = db.iter().find(|(n, _)| n == "check.sql.command").unwrap();
    assert_eq!(sql.1, serde_json::json!(["sh", "-c", "exit 0", "1"]));
    let web = attrs(r#"machine.m["web"]"#);
    let names: Vec<&str> = web.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"disk.system.path") && !names.contains(&"disk.data.path"),
        "{web:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("check.")), "{web:?}");
    let shop = attrs("recovery_plan.shop");
    let groups = shop.iter().find(|(n, _)| n == "groups").unwrap();
    assert_eq!(groups.1, serde_json::json!(["db", "web"]));
}

#[test]
fn an_error_inside_a_dynamic_block_points_at_its_content() {
    let bad = DYNAMIC.replace("path = disk.value", "path = disk.value.nope");
    let dir = config(&bad);
    let o = standby(dir.path(), &["validate", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &j["diagnostics"][0];
    // `path = disk.value.nope` is line 33 of main.hcl (BASE is 18 lines).
    assert_eq!(d["line"], 33, "{j}");
    assert!(
        d["message"].as_str().unwrap().contains("cannot index"),
        "{j}"
    );
    // A dynamic block for a block type the machine does not have.
    let wrong = DYNAMIC.replace("dynamic \"disk\"", "dynamic \"disks\"");
    let dir = config(&wrong);
    let o = standby(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("cannot generate `disks` blocks"),
        "{}",
        text(&o)
    );
}

#[test]
fn count_makes_numbered_machines_and_protections() {
    let counted = r#"
machine "web" {
  count = 2
  site  = site.onprem
  disk "system" { path = "web${count.index}/system.img" }
}
protection "web" {
  count   = "2"
  machine = machine.web[count.index]
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard
}
"#;
    let dir = config(counted);
    let o = standby(dir.path(), &["plan", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let changes = plan["changes"].as_array().unwrap();
    let find = |a: &str| changes.iter().find(|c| c["address"] == a).cloned();
    // Count instances are addressed as Terraform writes them: web[1].
    let web1 = find("machine.web[1]").unwrap_or_else(|| panic!("{plan}"));
    assert!(web1.to_string().contains("web1/system.img"), "{web1}");
    let p0 = find("protection.web[0]").unwrap_or_else(|| panic!("{plan}"));
    assert!(p0.to_string().contains("machine.web[0]"), "{p0}");
    assert!(find("machine.web[2]").is_none(), "{plan}");
    assert!(!plan.to_string().contains(r#"web[\"0\"]"#), "{plan}");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/plan.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let v = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(&plan).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let o = standby(dir.path(), &["plan"]);
    assert!(text(&o).contains("machine.web[0]"), "{}", text(&o));
    // A moved block names count instances the same way.
    std::fs::write(
        dir.path().join("moved.hcl"),
        "moved {\n  from = machine.old[0]\n  to   = machine.web[0]\n}\n",
    )
    .unwrap();
    let o = standby(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    std::fs::remove_file(dir.path().join("moved.hcl")).unwrap();
    // An unknown instance: the message names count instances as written.
    let typo = counted.replace("machine.web[count.index]", "machine.web[count.index + 1]");
    let o = standby(config(&typo).path(), &["validate"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("machine.web has no instance [2]")
            && text(&o).contains("machine.web has the instances [0], [1]"),
        "{}",
        text(&o)
    );
    // count beside for_each, and count.index without count, are errors.
    let both = counted.replace("count = 2", "count = 2\n  for_each = [\"a\"]");
    let o = standby(config(&both).path(), &["validate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("sets both `count` and `for_each`"),
        "{}",
        text(&o)
    );
    let stray = counted.replace("count   = \"2\"\n", "");
    let o = standby(config(&stray).path(), &["validate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("only available in a block with `count`"),
        "{}",
        text(&o)
    );
}

#[test]
fn file_refuses_a_symbolic_link_that_leads_outside_the_configuration() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s3cr3t").unwrap();
    let cfg = r#"
machine "db" {
  site = site.onprem
  disk "data" { path = "db/data.img" }
  check "c" { command = ["echo", file("link")] }
}
protection "db" {
  machine = machine.db
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard
}
"#;
    let dir = config(cfg);
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
    let o = standby(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("leads outside the configuration directory"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("s3cr3t"));
    // A link that stays inside is fine.
    std::fs::remove_file(dir.path().join("link")).unwrap();
    std::fs::write(dir.path().join("real.txt"), "inside").unwrap();
    std::os::unix::fs::symlink("real.txt", dir.path().join("link")).unwrap();
    let o = standby(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn function_errors_do_not_show_sensitive_arguments() {
    let cfg = r#"
variable "token" {
  sensitive = true
  default   = "hunter2-token"
}
machine "db" {
  site = site.onprem
  disk "data" { path = "db/data.img" }
  check "c" { command = ["echo", lookup({ a = 1 }, var.token)] }
  check "d" { command = ["echo", jsonencode({ for x in [var.token, var.token] : x => 1 })] }
}
protection "db" {
  machine = machine.db
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard
}
"#;
    let dir = config(cfg);
    let o = standby(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("details hidden"), "{}", text(&o));
    assert!(text(&o).contains("key hidden"), "{}", text(&o));
    assert!(!text(&o).contains("hunter2"), "{}", text(&o));
}

/// The plan's attribute names for one change address.
fn plan_attr_names(dir: &Path, addr: &str) -> Vec<String> {
    let o = standby(dir, &["plan", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == addr)
        .unwrap_or_else(|| panic!("no {addr} in {plan}"))["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn dynamic_over_a_set_keys_each_block_by_its_value() {
    // Terraform: a set element's key is the element, so the checks are
    // named "a" and "b" (not "0" and "1").
    let dir = config(
        r#"
machine "db" {
  site = site.onprem
  disk "data" { path = "db/data.img" }
  dynamic "check" {
    for_each = toset(["b", "a"])
    labels   = [check.key]
    content { command = ["echo", check.value] }
  }
}
"#,
    );
    let names = plan_attr_names(dir.path(), "machine.db");
    assert!(names.contains(&"check.a.command".to_string()), "{names:?}");
    assert!(names.contains(&"check.b.command".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("check.0")), "{names:?}");
    // A list still works in a dynamic block (Terraform allows it), keyed by index.
    let dir = config(
        r#"
machine "db" {
  site = site.onprem
  disk "data" { path = "db/data.img" }
  dynamic "check" {
    for_each = ["b", "a"]
    labels   = [check.key]
    content { command = ["echo", check.value] }
  }
}
"#,
    );
    let names = plan_attr_names(dir.path(), "machine.db");
    assert!(names.contains(&"check.0.command".to_string()), "{names:?}");
    assert!(names.contains(&"check.1.command".to_string()), "{names:?}");
}

#[test]
fn for_each_over_a_list_is_refused_as_terraform_does_even_without_duplicates() {
    for fe in [
        r#"["a", "a", "b"]"#,
        r#"["a", "b"]"#,
        "[for m in local.inventory : m.name]",
    ] {
        let dir = config(&format!(
            r#"
locals {{
  inventory = [{{ name = "web" }}, {{ name = "api" }}, {{ name = "web" }}]
}}
machine "m" {{
  for_each = {fe}
  site     = site.onprem
  disk "system" {{ path = "${{each.key}}/a.img" }}
}}
"#
        ));
        let o = standby(dir.path(), &["plan"]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{fe}: {out}");
        assert!(out.contains("must be a map, or"), "{fe}: {out}");
        assert!(out.contains("toset"), "{fe}: {out}");
    }
    // The same in a protection block.
    let dir = config(
        r#"
machine "m" {
  site = site.onprem
  disk "system" { path = "m/a.img" }
}
protection "p" {
  for_each = ["x"]
  machine  = machine.m
  target   = site.dr
  vault    = vault.main
  policy   = policy.standard
}
"#,
    );
    let o = standby(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("value of type list"), "{}", text(&o));
    // toset() is the way: one instance per distinct name.
    let dir = config(
        r#"
machine "m" {
  for_each = toset(["web", "api", "web"])
  site     = site.onprem
  disk "system" { path = "${each.key}/a.img" }
}
"#,
    );
    let o = standby(dir.path(), &["plan", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let addrs: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["address"].as_str())
        .filter(|a| a.starts_with("machine."))
        .collect();
    assert_eq!(addrs, [r#"machine.m["api"]"#, r#"machine.m["web"]"#]);
}

#[test]
fn a_json_var_file_sets_variables_as_terraform_tfvars_json_does() {
    let dir = config(
        r#"
variable "names" { type = set(string) }
variable "size" { type = number }
machine "m" {
  for_each = var.names
  site     = site.onprem
  disk "system" { path = "${each.key}/a.img" }
  check "size" { command = ["echo", var.size] }
}
"#,
    );
    std::fs::write(
        dir.path().join("prod.json"),
        r#"{"names": ["web", "db", "web"], "size": 3}"#,
    )
    .unwrap();
    let o = standby(dir.path(), &["plan", "--json", "--var-file", "prod.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let addrs: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["address"].as_str())
        .filter(|a| a.starts_with("machine."))
        .collect();
    assert_eq!(addrs, [r#"machine.m["db"]"#, r#"machine.m["web"]"#]);
    // A key twice is an error, as in Terraform's JSON parser.
    std::fs::write(
        dir.path().join("dup.json"),
        r#"{"size": 3, "size": 4, "names": []}"#,
    )
    .unwrap();
    let o = standby(dir.path(), &["validate", "--var-file", "dup.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(r#"duplicate "size" property"#),
        "{}",
        text(&o)
    );
    // A sensitive variable's value never shows, even in a one-line file.
    let dir = config(
        r#"
variable "pw" {
  type      = number
  sensitive = true
}
"#,
    );
    std::fs::write(
        dir.path().join("s.json"),
        r#"{"pw": "s3cret-value", "nope": 1}"#,
    )
    .unwrap();
    let o = standby(dir.path(), &["validate", "--var-file", "s.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("`nope`"), "{}", text(&o));
    assert!(!text(&o).contains("s3cret"), "{}", text(&o));
}

#[test]
fn fmt_on_an_unclosed_block_names_one_position_at_its_brace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.hcl"), "a {\n  b {\n    c = 1\n").unwrap();
    let o = standby(dir.path(), &["fmt"]);
    let out = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("b.hcl:2:5: unclosed `{`"), "{out}");
    assert!(out.contains("[b.hcl:2:5]"), "{out}");
    // Unchanged, as fmt promises for a file it cannot parse.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("b.hcl")).unwrap(),
        "a {\n  b {\n    c = 1\n"
    );
    // A quoted string over two lines is refused by validate and fmt alike.
    std::fs::write(dir.path().join("b.hcl"), "a = \"x\ny\"\n").unwrap();
    let o = standby(dir.path(), &["fmt"]);
    assert!(
        text(&o).contains("Invalid multi-line string"),
        "{}",
        text(&o)
    );
}

/// Replaces `from` (which must be there) with `to` in `file` of `qs`.
fn edit_file(qs: &std::path::Path, file: &str, from: &str, to: &str) {
    let p = qs.join(file);
    let s = std::fs::read_to_string(&p).unwrap();
    assert!(s.contains(from), "{from:?} not in {file}");
    std::fs::write(&p, s.replace(from, to)).unwrap();
}

/// The ids of the recovery points of protection `addr`, as `points` lists them.
fn point_ids_of(qs: &std::path::Path, addr: &str) -> Vec<String> {
    common::points(qs)
        .iter()
        .filter(|p| p["protection"] == addr)
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// State written before count instances were spelled `machine.web[0]`
/// holds `machine.web["0"]` (the spelling of a `for_each` key "0"): the plan
/// moves it to the count instance, and apply keeps every recovery point.
#[test]
fn count_instances_recorded_with_a_string_key_move_and_keep_their_points() {
    use common::{ok, points, quickstart};
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    let edit = |file: &str, from: &str, to: &str| edit_file(&qs, file, from, to);
    // The old spelling: instances keyed by the string "0".
    edit(
        "machines.hcl",
        "machine \"web\" {\n",
        "machine \"web\" {\n  for_each = { \"0\" = 1 }\n",
    );
    edit(
        "protection.hcl",
        "protection \"web\" {\n  machine           = machine.web\n",
        "protection \"web\" {\n  for_each          = { \"0\" = 1 }\n  machine           = machine.web[\"0\"]\n",
    );
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    let old = "protection.web[\"0\"]";
    let ids = |addr: &str| point_ids_of(&qs, addr);
    let before = ids(old);
    assert!(!before.is_empty(), "{:?}", points(&qs));

    // Now with count: the same instances, spelled web[0].
    edit("machines.hcl", "for_each = { \"0\" = 1 }", "count = 1");
    edit(
        "protection.hcl",
        "for_each          = { \"0\" = 1 }\n  machine           = machine.web[\"0\"]",
        "count             = 1\n  machine           = machine.web[count.index]",
    );
    let o = common::standby(&qs)
        .args(["plan", "-detailed-exitcode"])
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("# protection.web[\"0\"] has moved to protection.web[0]"),
        "{out}"
    );
    assert!(
        out.contains("# machine.web[\"0\"] has moved to machine.web[0]"),
        "{out}"
    );
    assert!(out.contains("0 to destroy"), "{out}");
    let applied = ok(&qs, &["apply", "--auto-approve"]);
    assert!(applied.contains(" 0 destroyed."), "{applied}");
    assert_eq!(ids("protection.web[0]"), before);
    assert!(ids(old).is_empty());
    let st = common::state(&qs);
    assert!(st["objects"].get("protection.web[0]").is_some(), "{st}");
    assert!(st["objects"].get(old).is_none(), "{st}");
    // Settled: nothing more to do.
    let o = common::standby(&qs)
        .args(["plan", "-detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Nested `dynamic` blocks work as in Terraform: a `dynamic` inside another
/// one's `content` (and inside a plain block there) sees the outer
/// iterator; every level expands per item.
#[test]
fn nested_dynamic_blocks_see_the_outer_iterator() {
    let dir = config(
        r#"
locals {
  tiers = {
    data = { machines = ["db"], steps = ["check replication", "open the firewall"] }
    web  = { machines = ["web"], steps = ["point DNS"] }
    idle = { machines = [], steps = [] }
  }
  fleet = {
    db  = { disks = { system = "db/system.img", data = "db/data.img" } }
    web = { disks = { system = "web/system.img" } }
  }
}
machine "m" {
  for_each = local.fleet
  site     = site.onprem
  dynamic "disk" {
    for_each = each.value.disks
    labels   = [disk.key]
    content { path = disk.value }
  }
}
protection "m" {
  for_each = machine.m
  machine  = machine.m[each.key]
  target   = site.dr
  vault    = vault.main
  policy   = policy.standard
}
recovery_plan "shop" {
  dynamic "group" {
    for_each = { for k, t in local.tiers : k => t if length(t.machines) > 0 }
    iterator = tier
    labels   = [tier.key]
    content {
      machines = [for m in tier.value.machines : machine.m[m]]
      # a dynamic directly in the content, holding another one
      dynamic "after" {
        for_each = length(tier.value.steps) > 0 ? [tier.key] : []
        content {
          dynamic "manual" {
            for_each = tier.value.steps
            iterator = step
            labels   = ["${after.value}-${step.key}"]
            content { instructions = "${tier.key}: ${step.value}" }
          }
        }
      }
      # a dynamic in a plain block of the content
      before {
        dynamic "script" {
          for_each = tier.value.machines
          labels   = ["warm-${script.value}"]
          content { command = ["echo", tier.key, script.value] }
        }
      }
    }
  }
}
"#,
    );
    let o = standby(dir.path(), &["plan", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rp = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "recovery_plan.shop")
        .cloned()
        .unwrap_or_else(|| panic!("{plan}"));
    let attr = |name: &str| {
        rp["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| a["after"].clone())
            .unwrap_or_else(|| panic!("no {name} in {rp}"))
    };
    assert_eq!(attr("groups"), serde_json::json!(["data", "web"]));
    let after = attr("group.data.after");
    let steps: Vec<(&str, &str)> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["instructions"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("data-0", "data: check replication"),
            ("data-1", "data: open the firewall")
        ]
    );
    assert_eq!(attr("group.web.after")[0]["instructions"], "web: point DNS");
    let before = attr("group.web.before");
    assert_eq!(before[0]["name"], "warm-web", "{before}");
    assert_eq!(
        before[0]["command"],
        serde_json::json!(["echo", "web", "web"]),
        "{before}"
    );
    // An error inside a nested content points at the source as written.
    let bad = std::fs::read_to_string(dir.path().join("main.hcl"))
        .unwrap()
        .replace(
            "instructions = \"${tier.key}: ${step.value}\"",
            "instructions = step.nope",
        );
    std::fs::write(dir.path().join("main.hcl"), &bad).unwrap();
    let o = standby(dir.path(), &["validate"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let line = bad.lines().position(|l| l.contains("step.nope")).unwrap() + 1;
    assert!(
        text(&o).contains(&format!("main.hcl:{line}:")),
        "{}",
        text(&o)
    );
}

/// Terraform's implied moves (1.1+): adding `count` to a block whose state
/// holds the no-key instance moves it to `[0]`, and removing `count` moves
/// `[0]` back; the plan shows moves, no destroy, and the recovery points
/// stay with the protection.
#[test]
fn adding_or_removing_count_moves_the_instance_and_keeps_its_points() {
    use common::{ok, points, quickstart};
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    let edit = |file: &str, from: &str, to: &str| edit_file(&qs, file, from, to);
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    let ids = |addr: &str| point_ids_of(&qs, addr);
    let before = ids("protection.web");
    assert!(!before.is_empty(), "{:?}", points(&qs));
    let plan = |want: &[&str]| {
        let o = common::standby(&qs)
            .args(["plan", "-detailed-exitcode"])
            .output()
            .unwrap();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{out}");
        for w in want {
            assert!(out.contains(w), "{w:?} not in:\n{out}");
        }
        assert!(out.contains("0 to destroy"), "{out}");
    };
    let settled = || {
        let o = common::standby(&qs)
            .args(["plan", "-detailed-exitcode"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    };

    // count added: web -> web[0].
    edit(
        "machines.hcl",
        "machine \"web\" {\n",
        "machine \"web\" {\n  count = 1\n",
    );
    edit(
        "protection.hcl",
        "protection \"web\" {\n  machine           = machine.web\n",
        "protection \"web\" {\n  count             = 1\n  machine           = machine.web[count.index]\n",
    );
    plan(&[
        "# machine.web has moved to machine.web[0]",
        "# protection.web has moved to protection.web[0]",
    ]);
    let applied = ok(&qs, &["apply", "--auto-approve"]);
    assert!(applied.contains(" 0 destroyed."), "{applied}");
    assert_eq!(ids("protection.web[0]"), before);
    assert!(ids("protection.web").is_empty());
    let st = common::state(&qs);
    assert!(st["objects"].get("protection.web[0]").is_some(), "{st}");
    assert!(st["objects"].get("protection.web").is_none(), "{st}");
    settled();

    // count removed: web[0] -> web.
    edit(
        "machines.hcl",
        "machine \"web\" {\n  count = 1\n",
        "machine \"web\" {\n",
    );
    edit(
        "protection.hcl",
        "protection \"web\" {\n  count             = 1\n  machine           = machine.web[count.index]\n",
        "protection \"web\" {\n  machine           = machine.web\n",
    );
    plan(&[
        "# machine.web[0] has moved to machine.web",
        "# protection.web[0] has moved to protection.web",
    ]);
    let applied = ok(&qs, &["apply", "--auto-approve"]);
    assert!(applied.contains(" 0 destroyed."), "{applied}");
    assert_eq!(ids("protection.web"), before);
    let st = common::state(&qs);
    assert!(st["objects"].get("protection.web").is_some(), "{st}");
    assert!(st["objects"].get("protection.web[0]").is_none(), "{st}");
    settled();
}

/// `type = any` reads a value from the environment as an HCL expression,
/// as Terraform reads `TF_VAR_*` (a variable without a type takes the text
/// as it is).
#[test]
fn an_environment_value_of_a_type_any_variable_is_parsed_as_hcl() {
    let dir = config(
        r#"
variable "names" {
  type = any
}
variable "raw" {}
machine "db" {
  site = site.onprem
  disk "data" { path = "db/data.img" }
  check "c" { command = ["echo", jsonencode(var.names), jsonencode(var.raw)] }
}
"#,
    );
    let o = Command::new(env!("CARGO_BIN_EXE_standby"))
        .current_dir(dir.path())
        .args(["plan", "--json"])
        .env("NO_COLOR", "1")
        .env("STANDBY_VAR_names", r#"["db", "web"]"#)
        .env("STANDBY_VAR_raw", r#"["db"]"#)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let command = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "machine.db")
        .and_then(|c| {
            c["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["name"] == "check.c.command")
        })
        .map(|a| a["after"].clone())
        .unwrap_or_else(|| panic!("no check.c.command in {plan}"));
    assert_eq!(
        command,
        serde_json::json!(["echo", r#"["db","web"]"#, r#""[\"db\"]""#])
    );
}

/// go-cty hashes a number by its text, so `-0` and `0` are two set
/// elements: a dynamic block over `toset([-0, 0])` makes two blocks.
#[test]
fn dynamic_over_a_set_holding_minus_zero_and_zero_makes_two_blocks() {
    let dir = config(
        r#"
machine "db" {
  site = site.onprem
  disk "data" { path = "db/data.img" }
  dynamic "check" {
    for_each = toset([0, -0])
    labels   = ["c${check.key}"]
    content { command = ["echo", jsonencode(check.value)] }
  }
}
"#,
    );
    let names = plan_attr_names(dir.path(), "machine.db");
    assert!(
        names.contains(&"check.c-0.command".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"check.c0.command".to_string()), "{names:?}");
}
