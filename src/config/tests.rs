//! Evaluation tests on real files in temporary directories.

use super::*;
use crate::model::{Address, Duration, KeySource, Kind, Probe, Schedule, StepAction};

const BASE: &str = r#"
vault "main" { url = "file://.standby/vault" }
site "onprem" {
  provider = "local"
  root     = "sites/onprem"
}
site "dr" {
  provider = "local"
  root     = "sites/dr"
}
policy "p" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  retention              = "24h"
}
"#;

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn load_ok(dir: &Path, inputs: &VarInputs) -> Config {
    match load(dir, inputs) {
        Ok(l) => l.config,
        Err(d) => panic!("{}", d.render(false)),
    }
}

fn codes(dir: &Path, inputs: &VarInputs) -> Vec<&'static str> {
    match load(dir, inputs) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.items.iter().map(|d| d.code).collect(),
    }
}

fn site_root(c: &Config, name: &str) -> String {
    c.sites[&Address::new(Kind::Site, name)]
        .root
        .as_ref()
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn variable_precedence_default_env_file_varfile_cli() {
    let main = r#"
variable "root_prec" { default = "from-default" }
site "s" {
  provider = "local"
  root     = var.root_prec
}
"#;
    let dir = dir_with(&[("main.hcl", main)]);
    let none = VarInputs::default();
    assert_eq!(site_root(&load_ok(dir.path(), &none), "s"), "from-default");

    // SAFETY: this variable name is used by this test only.
    unsafe { std::env::set_var("STANDBY_VAR_root_prec", "from-env") };
    assert_eq!(site_root(&load_ok(dir.path(), &none), "s"), "from-env");

    std::fs::write(
        dir.path().join("standby.vars.hcl"),
        "root_prec = \"from-vars-file\"\n",
    )
    .unwrap();
    assert_eq!(
        site_root(&load_ok(dir.path(), &none), "s"),
        "from-vars-file"
    );

    let extra = dir.path().join("extra.vars");
    std::fs::write(&extra, "root_prec = \"from-var-file\"\n").unwrap();
    let with_file = VarInputs {
        cli: vec![],
        files: vec![extra.clone()],
    };
    assert_eq!(
        site_root(&load_ok(dir.path(), &with_file), "s"),
        "from-var-file"
    );

    let with_cli = VarInputs {
        cli: vec!["root_prec=first".into(), "root_prec=from-cli".into()],
        files: vec![extra],
    };
    assert_eq!(site_root(&load_ok(dir.path(), &with_cli), "s"), "from-cli");
    unsafe { std::env::remove_var("STANDBY_VAR_root_prec") };
}

#[test]
fn typed_variables_parse_values_as_hcl() {
    let main = r#"
variable "names" { type = list(string) }
variable "n" { type = number }
variable "on" {
  type    = bool
  default = false
}
locals {
  joined = "${join(",", var.names)}-${var.n + 1}-${var.on}"
}
site "s" {
  provider = "local"
  root     = local.joined
}
"#;
    let dir = dir_with(&[("main.hcl", main)]);
    let inputs = VarInputs {
        cli: vec![
            r#"names=["a", "b"]"#.into(),
            "n=41".into(),
            "on=true".into(),
        ],
        files: vec![],
    };
    let c = load_ok(dir.path(), &inputs);
    assert_eq!(site_root(&c, "s"), "a,b-42-true");
    assert_eq!(c.variables["names"].value, serde_json::json!(["a", "b"]));
    assert_eq!(c.variables["n"].value, serde_json::json!(41));
}

#[test]
fn unset_and_unknown_variables_are_errors() {
    let dir = dir_with(&[("main.hcl", "variable \"needed\" {}\n")]);
    assert_eq!(
        codes(dir.path(), &VarInputs::default()),
        ["standby::unset_variable"]
    );
    let inputs = VarInputs {
        cli: vec!["neded=x".into()],
        files: vec![],
    };
    assert_eq!(
        codes(dir.path(), &inputs),
        ["standby::unknown_variable", "standby::unset_variable"]
    );
}

#[test]
fn locals_interpolation_and_cycles() {
    let main = format!(
        "{BASE}\nlocals {{\n  a = \"${{local.b}}/x\"\n  b = \"${{var.top}}\"\n}}\nvariable \"top\" {{ default = \"t\" }}\nsite \"s\" {{\n  provider = \"local\"\n  root     = local.a\n}}\n"
    );
    let dir = dir_with(&[("main.hcl", &main)]);
    assert_eq!(
        site_root(&load_ok(dir.path(), &VarInputs::default()), "s"),
        "t/x"
    );

    let cyc = "locals {\n  a = local.b\n  b = local.a\n}\n";
    let dir = dir_with(&[("main.hcl", cyc)]);
    let err = load(dir.path(), &VarInputs::default()).unwrap_err();
    assert_eq!(err.items.len(), 1, "{}", err.render(false));
    assert!(
        err.items[0]
            .message
            .contains("local.a -> local.b -> local.a"),
        "{}",
        err.items[0].message
    );
}

#[test]
fn for_each_expands_machines_and_protections() {
    let main = format!(
        r#"{BASE}
machine "web" {{
  for_each = {{ a = "10.0.0.1", b = "10.0.0.2" }}
  site     = site.onprem
  disk "system" {{ path = "web/${{each.key}}.img" }}
  check "port" {{ tcp = "${{each.value}}:80" }}
}}
protection "web" {{
  for_each = machine.web
  machine  = each.value
  target   = site.dr
  vault    = vault.main
  policy   = policy.p
}}
machine "db" {{
  site = site.onprem
  disk "data" {{ path = "db.img" }}
}}
protection "db" {{
  for_each = toset(["only"])
  machine  = machine.db
  target   = site.dr
  vault    = vault.main
  policy   = policy.p
}}
recovery_plan "all" {{
  group "db" {{ machines = [machine.db] }}
  group "web" {{
    machines   = [machine.web]
    depends_on = [group.db]
  }}
}}
"#
    );
    let dir = dir_with(&[("main.hcl", &main)]);
    let c = load_ok(dir.path(), &VarInputs::default());
    let a = Address::keyed(Kind::Machine, "web", "a");
    assert_eq!(
        c.machines[&a].disks[0].path.display().to_string(),
        "web/a.img"
    );
    assert_eq!(
        c.machines[&a].checks[0].probe,
        Probe::Tcp {
            address: "10.0.0.1:80".into()
        }
    );
    let pb = &c.protections[&Address::keyed(Kind::Protection, "web", "b")];
    assert_eq!(pb.machine, Address::keyed(Kind::Machine, "web", "b"));
    assert!(
        c.protections
            .contains_key(&Address::keyed(Kind::Protection, "db", "only"))
    );
    let plan = &c.recovery_plans[&Address::new(Kind::RecoveryPlan, "all")];
    assert_eq!(
        plan.groups[1].machines,
        vec![a, Address::keyed(Kind::Machine, "web", "b")]
    );
    assert_eq!(plan.groups[1].depends_on, vec!["db".to_string()]);
}

#[test]
fn defaults_and_model_fields() {
    let main = format!(
        r#"{BASE}
vault "other" {{
  url     = "az://c/p"
  key_env = "K"
}}
machine "m" {{
  site = site.onprem
  disk "d" {{ path = "m.img" }}
  quiesce {{
    freeze = ["f"]
    thaw   = ["t"]
  }}
  boot {{ command = ["b"] }}
  check "h" {{ http = "http://x/" }}
}}
protection "m" {{
  machine = machine.m
  target  = site.dr
  vault   = vault.main
  policy  = policy.p
}}
recovery_plan "r" {{
  group "g" {{
    machines = [machine.m]
    before {{
      script "s" {{ command = ["true"] }}
    }}
    after {{
      manual "m" {{ instructions = "do it" }}
      check "c" {{ tcp = "h:1" }}
    }}
  }}
  drill {{
    schedule = "3d"
    max_rto  = "1h30m"
  }}
}}
"#
    );
    let dir = dir_with(&[("main.hcl", &main)]);
    let c = load_ok(dir.path(), &VarInputs::default());
    assert_eq!(
        c.vaults[&Address::new(Kind::Vault, "main")].key,
        KeySource::File(".standby/keys/main.key".into())
    );
    assert_eq!(
        c.vaults[&Address::new(Kind::Vault, "other")].key,
        KeySource::Env("K".into())
    );
    assert_eq!(
        c.policies[&Address::new(Kind::Policy, "p")].compression_level,
        1
    );
    let m = &c.machines[&Address::new(Kind::Machine, "m")];
    assert_eq!(m.quiesce.as_ref().unwrap().timeout, Duration::from_secs(30));
    assert_eq!(m.boot.as_ref().unwrap().timeout, Duration::from_secs(300));
    let h = &m.checks[0];
    assert_eq!(
        (h.timeout.as_secs(), h.retries, h.interval.as_secs()),
        (30, 3, 5)
    );
    assert_eq!(
        h.probe,
        Probe::Http {
            url: "http://x/".into(),
            status: 200,
            contains: None
        }
    );
    let plan = &c.recovery_plans[&Address::new(Kind::RecoveryPlan, "r")];
    let g = &plan.groups[0];
    assert_eq!(g.before[0].timeout.as_secs(), 600);
    assert!(matches!(g.before[0].action, StepAction::Script { .. }));
    assert_eq!(g.after[0].timeout.as_secs(), 86_400);
    assert_eq!(g.after[1].timeout.as_secs(), 300);
    let drill = plan.drill.as_ref().unwrap();
    assert_eq!(
        drill.schedule,
        Schedule::Every(Duration::from_secs(3 * 86_400))
    );
    assert_eq!(drill.max_rto.as_secs(), 5_400);
    assert_eq!(c.root, dir.path());
}

#[test]
fn sensitive_values_are_tracked_per_attribute_and_kept_out_of_messages() {
    let main = r#"
variable "secret" {
  sensitive = true
  default   = "s3cr3t-value"
}
variable "plain" { default = "p" }
site "x" {
  provider = "exec"
  command  = ["provider.sh", var.secret]
}
site "y" {
  provider = "local"
  root     = var.plain
}
"#;
    let dir = dir_with(&[("main.hcl", main)]);
    let c = load_ok(dir.path(), &VarInputs::default());
    let x = &c.sites[&Address::new(Kind::Site, "x")];
    assert_eq!(x.sensitive.iter().collect::<Vec<_>>(), ["command"]);
    assert!(c.sites[&Address::new(Kind::Site, "y")].sensitive.is_empty());
    assert!(c.variables["secret"].sensitive);

    let bad = main.replace("root     = var.plain", "root     = var.plain\n}\npolicy \"q\" {\n  rpo_threshold = var.secret\n  crash_consistent_every = \"1m\"\n  retention = \"1d\"");
    let dir = dir_with(&[("main.hcl", &bad)]);
    let err = load(dir.path(), &VarInputs::default()).unwrap_err();
    let rendered = err.render(false);
    assert!(rendered.contains("standby::bad_duration"), "{rendered}");
    assert!(
        !err.items[0].message.contains("s3cr3t"),
        "{}",
        err.items[0].message
    );
    assert!(!err.to_json().to_string().contains("s3cr3t"));
}

#[test]
fn source_hash_covers_files_and_variable_values() {
    let main = "variable \"v\" { default = \"a\" }\nsite \"s\" {\n  provider = \"local\"\n  root     = var.v\n}\n";
    let dir = dir_with(&[("main.hcl", main)]);
    let h1 = load_ok(dir.path(), &VarInputs::default()).source_hash;
    let h1_again = load_ok(dir.path(), &VarInputs::default()).source_hash;
    let h2 = load_ok(
        dir.path(),
        &VarInputs {
            cli: vec!["v=b".into()],
            files: vec![],
        },
    )
    .source_hash;
    std::fs::write(dir.path().join("more.hcl"), "# comment\n").unwrap();
    let h3 = load_ok(dir.path(), &VarInputs::default()).source_hash;
    assert_eq!(h1, h1_again);
    assert_eq!(h1.len(), 64);
    assert!(h1 != h2 && h1 != h3 && h2 != h3);
}

#[test]
fn errors_from_several_files_are_reported_together() {
    let dir = dir_with(&[
        ("a.hcl", "site \"s\" {\n  provider = \"local\"\n"),
        ("b.hcl", "site \"t\" {\n  provider = \"nope\"\n}\n"),
        (
            "c.hcl",
            "policy \"p\" {\n  rpo_threshold = \"1x\"\n  crash_consistent_every = \"1m\"\n  retention = \"1d\"\n}\n",
        ),
    ]);
    let err = load(dir.path(), &VarInputs::default()).unwrap_err();
    let files: Vec<&str> = err
        .items
        .iter()
        .map(|d| d.loc.source.name.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(files, ["a.hcl", "b.hcl", "c.hcl"], "{}", err.render(false));
}

#[test]
fn warnings_do_not_fail_loading() {
    let main = "policy \"slow\" {\n  rpo_threshold = \"5m\"\n  crash_consistent_every = \"10m\"\n  retention = \"1d\"\n}\n";
    let dir = dir_with(&[("main.hcl", main)]);
    let loaded = load(dir.path(), &VarInputs::default()).unwrap();
    assert_eq!(loaded.warnings.items.len(), 1);
    assert_eq!(
        loaded.warnings.items[0].code,
        "standby::frequency_above_rpo"
    );
    assert!(!loaded.warnings.has_errors());
}

#[test]
fn json_has_one_based_positions() {
    let dir = dir_with(&[("main.hcl", "site \"s\" {\n  provider = \"lokal\"\n}\n")]);
    let err = load(dir.path(), &VarInputs::default()).unwrap_err();
    let j = err.to_json();
    assert_eq!(j[0]["line"], 2);
    assert_eq!(j[0]["column"], 14);
    assert_eq!(j[0]["end_column"], 21);
    assert_eq!(j[0]["severity"], "error");
}

#[test]
fn fleet_example_expands_to_fifty_machines_in_three_tiers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/fleet");
    let c = load_ok(&dir, &VarInputs::default());
    assert_eq!(c.machines.len(), 50);
    assert_eq!(c.protections.len(), 50);
    let web30 = Address::keyed(Kind::Machine, "node", "web-30");
    assert_eq!(
        c.machines[&web30].disks[0].path.display().to_string(),
        "web/web-30/system.img"
    );
    let db1 = &c.protections[&Address::keyed(Kind::Protection, "node", "db-01")];
    assert_eq!(db1.policy, Address::new(Kind::Policy, "db"));
    assert_eq!(db1.consistency_group.as_deref(), Some("db"));
    let app1 = &c.protections[&Address::keyed(Kind::Protection, "node", "app-01")];
    assert_eq!(app1.policy, Address::new(Kind::Policy, "stateless"));
    let plan = &c.recovery_plans[&Address::new(Kind::RecoveryPlan, "fleet")];
    let sizes: Vec<usize> = plan.groups.iter().map(|g| g.machines.len()).collect();
    assert_eq!(sizes, [5, 15, 30]);
    assert_eq!(plan.groups[2].depends_on, ["app"]);
}

#[test]
fn azure_example_marks_the_sensitive_provider_command() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/azure");
    let c = load_ok(&dir, &VarInputs::default());
    let azure = &c.sites[&Address::new(Kind::Site, "azure")];
    assert!(azure.sensitive.contains("command"));
    assert_eq!(
        c.vaults[&Address::new(Kind::Vault, "prod")].key,
        KeySource::Env("STANDBY_VAULT_KEY".into())
    );
    let inputs = VarInputs {
        cli: vec!["rpo=5m".into()],
        files: vec![],
    };
    let c = load_ok(&dir, &inputs);
    assert_eq!(
        c.policies[&Address::new(Kind::Policy, "production")]
            .rpo_threshold
            .as_secs(),
        300
    );
}

#[test]
fn bad_sensitive_values_are_reported_without_the_value() {
    let main = "variable \"token\" {\n  type      = number\n  sensitive = true\n}\n";
    let dir = dir_with(&[
        ("main.hcl", main),
        ("standby.vars.hcl", "token = \"hunter2-secret\"\n"),
    ]);
    let err = load(dir.path(), &VarInputs::default()).unwrap_err();
    let text = format!("{}{}", err.render(false), err.to_json());
    assert!(
        text.contains("sensitive variable `token` is not a valid number"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");

    let dir = dir_with(&[("main.hcl", main)]);
    let err = load(
        dir.path(),
        &VarInputs {
            cli: vec!["token=hunter2-secret".into()],
            files: vec![],
        },
    )
    .unwrap_err();
    let text = format!("{}{}", err.render(false), err.to_json());
    assert!(text.contains("not a valid number"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn rendering_has_colour_only_when_asked() {
    let dir = dir_with(&[("main.hcl", "site \"s\" {\n  provider = \"lokal\"\n}\n")]);
    let err = load(dir.path(), &VarInputs::default()).unwrap_err();
    let plain = err.render(false);
    assert!(!plain.contains('\u{1b}'), "{plain}");
    assert!(plain.contains("main.hcl:2:14"), "{plain}");
    assert!(plain.contains("standby::unknown_provider"), "{plain}");
    assert!(plain.contains("did you mean \"local\"?"), "{plain}");
    assert!(err.render(true).contains('\u{1b}'));
}

#[test]
fn heredocs_conditionals_and_keyed_references() {
    let main = r#"
locals {
  webs = { a = "10.0.0.1", b = "10.0.0.2" }
}
vault "v" { url = "file://x" }
site "one" {
  provider = "local"
  root     = "one"
}
site "two" {
  provider = "exec"
  command  = ["p.sh"]
}
policy "p" {
  rpo_threshold          = "1h30m"
  crash_consistent_every = "90s"
  retention              = "7d"
  compression_level      = 19
}
machine "web" {
  for_each = local.webs
  site     = site.one
  disk "d" { path = "${each.key}.img" }
  check "http" {
    http     = "http://${each.value}/"
    contains = "ok"
    status   = 204
  }
}
protection "web" {
  for_each        = local.webs
  machine         = machine.web[each.key]
  target          = site.two
  vault           = vault.v
  policy          = policy.p
  prevent_destroy = length(local.webs) > 1 ? true : false
}
recovery_plan "r" {
  group "g" {
    machines = [machine.web["a"], machine.web["b"]]
    after {
      manual "m" {
        instructions = <<-EOT
          Do this
            and that
        EOT
      }
    }
  }
}
"#;
    let dir = dir_with(&[("main.hcl", main)]);
    let c = load_ok(dir.path(), &VarInputs::default());
    let p = &c.protections[&Address::keyed(Kind::Protection, "web", "b")];
    assert_eq!(p.machine, Address::keyed(Kind::Machine, "web", "b"));
    assert!(p.prevent_destroy);
    let policy = &c.policies[&Address::new(Kind::Policy, "p")];
    assert_eq!(
        (policy.rpo_threshold.as_secs(), policy.compression_level),
        (5_400, 19)
    );
    let m = &c.machines[&Address::keyed(Kind::Machine, "web", "a")];
    assert_eq!(
        m.checks[0].probe,
        Probe::Http {
            url: "http://10.0.0.1/".into(),
            status: 204,
            contains: Some("ok".into())
        }
    );
    let step = &c.recovery_plans[&Address::new(Kind::RecoveryPlan, "r")].groups[0].after[0];
    assert_eq!(
        step.action,
        StepAction::Manual {
            instructions: "Do this\n  and that\n".into()
        }
    );
    assert_eq!(
        c.sites[&Address::new(Kind::Site, "two")].command,
        Some(vec!["p.sh".to_string()])
    );
}
