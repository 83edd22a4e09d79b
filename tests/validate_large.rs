//! Validates a generated fleet configuration (`STANDBY_LARGE_N` machines
//! and as many protections; 2,000 by default) with the real binary, and
//! prints how long it took. The 10,000-machine figure in reports comes from
//! `STANDBY_LARGE_N=10000` with a release build; nothing here asserts time.

use std::fmt::Write as _;
use std::process::Command;

fn generate(dir: &std::path::Path, n: usize) {
    let main = r#"variable "root" { default = "sites" }
vault "main" { url = "file://.standby/vault" }
site "onprem" {
  provider = "local"
  root     = "${var.root}/onprem"
}
site "dr" {
  provider = "local"
  root     = "${var.root}/dr"
}
policy "standard" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  app_consistent_every   = "1h"
  retention              = "24h"
}
"#;
    std::fs::write(dir.join("main.hcl"), main).unwrap();
    let mut machines = String::new();
    for i in 0..n {
        write!(
            machines,
            r#"machine "m{i:05}" {{
  site = site.onprem
  disk "system" {{ path = "m{i:05}/system.img" }}
  disk "data" {{ path = "m{i:05}/data.img" }}
  check "fs" {{
    command = ["sh", "-c", "e2fsck -fn \"$STANDBY_DISK_SYSTEM\""]
    expect  = "ok"
  }}
}}

protection "m{i:05}" {{
  machine           = machine.m{i:05}
  target            = site.dr
  vault             = vault.main
  policy            = policy.standard
  consistency_group = "g{}"
}}

"#,
            i % 100
        )
        .unwrap();
    }
    std::fs::write(dir.join("machines.hcl"), machines).unwrap();
    let mut plan = String::from("recovery_plan \"all\" {\n");
    for g in 0..10 {
        let ms: Vec<String> = (g..n)
            .step_by(10)
            .map(|i| format!("machine.m{i:05}"))
            .collect();
        let dep = if g > 0 {
            format!("\n    depends_on = [group.g{}]", g - 1)
        } else {
            String::new()
        };
        write!(
            plan,
            "  group \"g{g}\" {{{dep}\n    machines = [{}]\n  }}\n",
            ms.join(", ")
        )
        .unwrap();
    }
    plan.push_str("}\n");
    std::fs::write(dir.join("plan.hcl"), plan).unwrap();
}

#[test]
fn a_large_generated_fleet_validates() {
    let n: usize = std::env::var("STANDBY_LARGE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), n);
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_standby"))
        .arg("validate")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!(
            "Success! The configuration is valid ({n} machines, {n} protections, 1 recovery plan)."
        )
    );
    eprintln!("validate of {n} machines and {n} protections: {elapsed:?}");
}
