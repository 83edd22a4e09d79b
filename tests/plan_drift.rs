//! Drift before the diff: plain `plan` (text, Markdown, JSON) and `apply`
//! read the vault and the sites and show what changed outside standby — a
//! point's manifest deleted by hand, a disk that grew, a vault that is gone —
//! in a "Changes outside standby" section before the diff; apply records
//! the refreshed facts, so the next plan shows only new drift.

mod watch_support;

use serde_json::Value;
use std::path::Path;
use watch_support::{expect_code, quickstart, standby, stdout};

const POLICY: &str = r#"rpo_threshold = "15m"
crash_consistent_every = "5m"
app_consistent_every = "1h"
retention = "24h""#;

fn plan(dir: &Path, args: &[&str]) -> String {
    stdout(&expect_code(standby(dir).arg("plan").args(args), 0))
}

fn validate_plan(doc: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/plan.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let v = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn plan_shows_deleted_point_grown_disk_and_gone_vault_before_the_diff() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), POLICY, None);
    expect_code(standby(&qs).args(["apply", "--auto-approve"]), 0);
    let clean = plan(&qs, &[]);
    assert!(!clean.contains("Changes outside standby"), "{clean}");

    // Outside standby: web's point manifest is deleted, db's system disk grows.
    let pts: Vec<Value> = serde_json::from_str(&stdout(&expect_code(
        standby(&qs).args(["points", "--json"]),
        0,
    )))
    .unwrap();
    let web = pts
        .iter()
        .find(|p| p["protection"] == "protection.web")
        .unwrap();
    std::fs::remove_file(
        qs.join(".standby/vault/points")
            .join(web["id"].as_str().unwrap()),
    )
    .unwrap();
    let img = qs.join("sites/onprem/db/system.img");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    // And a configuration change, so there is a diff to come after.
    let main = qs.join("main.hcl");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        text.replace("retention = \"24h\"", "retention = \"48h\""),
    )
    .unwrap();

    let before = std::fs::read(qs.join(".standby/state.json")).unwrap();
    let out = stdout(&expect_code(
        standby(&qs).args(["plan", "--detailed-exitcode"]),
        2,
    ));
    let section = out.find("Changes outside standby:").expect(&out);
    let diff = out.find("Standby will perform").expect(&out);
    assert!(section < diff, "drift comes before the diff:\n{out}");
    assert!(
        out.contains(
            "~ protection.web: recovery_points 1 -> 0 (points were deleted outside standby)"
        ),
        "{out}"
    );
    assert!(
        out.contains("~ machine.db: disk.system.size 16.0 MiB -> 32.0 MiB (the disk grew)"),
        "{out}"
    );
    assert!(out.contains("~ policy.standard"), "{out}");
    let quiet = plan(&qs, &["--no-refresh"]);
    assert!(!quiet.contains("Changes outside standby"), "{quiet}");
    assert!(quiet.contains("~ policy.standard"), "{quiet}");

    let md = plan(&qs, &["--format", "markdown"]);
    let section = md.find("#### Changes outside standby").expect(&md);
    assert!(section < md.find("```diff").expect(&md), "{md}");
    assert!(
        md.contains("- protection.web: recovery_points 1 -> 0 (points were deleted"),
        "{md}"
    );

    let doc: Value = serde_json::from_str(&plan(&qs, &["--json"])).unwrap();
    validate_plan(&doc);
    let drift = doc["drift"].as_array().expect("a drift array");
    assert!(
        drift.iter().any(|d| d["address"] == "protection.web"
            && d["fact"] == "recovery_points"
            && d["before"] == 1
            && d["after"] == 0),
        "{drift:?}"
    );
    assert!(
        drift.iter().any(|d| d["address"] == "machine.db"
            && d["fact"] == "disk.system.size"
            && d["after"] == 32 << 20),
        "{drift:?}"
    );
    assert_eq!(
        std::fs::read(qs.join(".standby/state.json")).unwrap(),
        before,
        "plan writes nothing"
    );

    // apply shows the same section and records the facts with the change.
    let out = stdout(&expect_code(
        standby(&qs).args(["apply", "--auto-approve"]),
        0,
    ));
    assert!(
        out.find("Changes outside standby:").unwrap() < out.find("Standby will perform").unwrap(),
        "{out}"
    );
    let after = plan(&qs, &[]);
    assert!(!after.contains("Changes outside standby"), "{after}");

    // The whole vault goes.
    std::fs::remove_dir_all(qs.join(".standby/vault")).unwrap();
    let out = plan(&qs, &[]);
    assert!(
        out.contains("~ vault.main: present true -> false (the vault is gone)"),
        "{out}"
    );
    assert!(
        out.contains("~ protection.db: recovery_points 1 -> 0"),
        "{out}"
    );
    let md = plan(&qs, &["--format", "markdown"]);
    assert!(
        md.contains("- vault.main: present true -> false (the vault is gone)"),
        "{md}"
    );
    // apply --json emits each drift as an event before anything else.
    let out = stdout(&expect_code(
        standby(&qs).args(["apply", "--auto-approve", "--json"]),
        0,
    ));
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "drift", "{out}");
    assert!(
        out.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| e["event"] == "drift" && e["drift"]["fact"] == "present"),
        "{out}"
    );
    let doc: Value = serde_json::from_str(&plan(&qs, &["--json"])).unwrap();
    validate_plan(&doc);
    assert!(
        doc["drift"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["address"] == "vault.main" && d["fact"] == "present" && d["after"] == false),
        "{doc}"
    );
}

/// A qcow2 image's size is the disk its machine sees (the virtual size):
/// its file grows as the guest writes, which is not drift; a resize is.
#[test]
fn a_qcow2_disk_drifts_by_its_virtual_size_not_its_allocation() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("sites/a/m")).unwrap();
    std::fs::create_dir_all(root.join("keys")).unwrap();
    let img = root.join("sites/a/m/d.qcow2");
    let run = |cmd: &mut std::process::Command| {
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{cmd:?}: {o:?}");
    };
    run(std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("64M"));
    std::fs::write(
        root.join("main.hcl"),
        r#"vault "main" {
  url      = "file://.standby/vault"
  key_file = "keys/vault.key"
}
site "a" {
  provider = "qemu"
  root     = "sites/a"
}
site "dr" {
  provider = "local"
  root     = "sites/dr"
}
policy "p" {
  rpo_threshold          = "1h"
  crash_consistent_every = "10m"
  retention              = "1d"
}
machine "m" {
  site = site.a
  vm {
    memory = "64M"
  }
  disk "d" {
    path   = "m/d.qcow2"
    format = "qcow2"
  }
}
protection "m" {
  machine = machine.m
  target  = site.dr
  vault   = vault.main
  policy  = policy.p
}
"#,
    )
    .unwrap();
    // No VM runs here: the protection's first point is read from the
    // image (qemu-storage-daemon), and the machine's disk size recorded.
    let out = expect_code(standby(root).args(["apply", "--auto-approve"]), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("first point"), "{text}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(root.join(".standby/state.json")).unwrap()).unwrap();
    assert!(
        state
            .to_string()
            .contains(&format!("\"observed.disk.d.size\":{}", 64u64 << 20)),
        "{state}"
    );
    // The guest writes 8 MiB: the file grows, the disk does not.
    let small = std::fs::metadata(&img).unwrap().len();
    run(std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 7 0 8M"])
        .arg(&img));
    assert!(std::fs::metadata(&img).unwrap().len() > small + (7 << 20));
    let out = plan(root, &[]);
    assert!(!out.contains("Changes outside standby"), "{out}");
    // Resized outside standby: that is drift, in the disk's own terms.
    run(std::process::Command::new("qemu-img")
        .args(["resize", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("96M"));
    let out = plan(root, &[]);
    assert!(
        out.contains("~ machine.m: disk.d.size 64.0 MiB -> 96.0 MiB (the disk grew)"),
        "{out}"
    );
}
