//! Review output is about the change (issue 12, item 4), through the real
//! binary: standby's own replication progress is not drift, a vault key
//! change gets a review note, and the errors after one lead somewhere.

mod common;

use common::{ok, quickstart, standby, text};
use serde_json::Value;
use std::path::Path;

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    standby(dir).args(args).output().unwrap()
}

#[test]
fn right_after_the_quickstart_plan_shows_no_drift() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("qs");
    let o = standby(d.path())
        .arg("quickstart")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&dir, &["plan", "-detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("Changes outside standby"), "{out}");
    let doc: Value = serde_json::from_slice(&run(&dir, &["plan", "--json"]).stdout).unwrap();
    assert_eq!(doc["drift"].as_array().map_or(0, Vec::len), 0, "{doc}");
}

#[test]
fn replication_progress_is_not_drift_but_lost_points_are() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    // More points, a newer newest point, more bytes stored: standby's own.
    ok(&qs, &["replicate"]);
    ok(&qs, &["replicate"]);
    let out = ok(&qs, &["plan", "--refresh-only"]);
    assert!(out.contains("No drift"), "{out}");
    let out = ok(&qs, &["plan"]);
    assert!(!out.contains("Changes outside standby"), "{out}");

    // Someone deletes every point of protection.web: that is drift, with
    // times to the second and sizes for people.
    let pts: Vec<Value> = serde_json::from_str(&ok(&qs, &["points", "--json"])).unwrap();
    for p in pts.iter().filter(|p| p["protection"] == "protection.web") {
        std::fs::remove_file(
            qs.join(".standby/vault/points")
                .join(p["id"].as_str().unwrap()),
        )
        .unwrap();
    }
    let out = ok(&qs, &["plan"]);
    assert!(out.contains("Changes outside standby"), "{out}");
    assert!(
        out.contains("~ protection.web: recovery_points 1 -> 0"),
        "{out}"
    );
    assert!(!out.contains("protection.db"), "db only progressed:\n{out}");
    let newest = out
        .lines()
        .find(|l| l.contains("newest_point"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(newest.contains(" UTC -> absent"), "{newest}");
    let rfc3339 = newest
        .as_bytes()
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == b'T' && w[2].is_ascii_digit());
    assert!(
        !rfc3339,
        "a time for people, not an RFC 3339 stamp: {newest}"
    );
}

#[test]
fn a_key_file_change_is_noted_and_its_errors_lead_somewhere() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    std::fs::write(
        qs.join("standby.vars.hcl"),
        "vault_key_file = \"keys/moved.key\"\n",
    )
    .unwrap();
    let out = ok(&qs, &["plan"]);
    assert!(
        out.contains("vault.main: the vault key is read from elsewhere (key_file .standby/keys/main.key -> keys/moved.key)"),
        "{out}"
    );
    let doc: Value = serde_json::from_slice(&run(&qs, &["plan", "--json"]).stdout).unwrap();
    assert!(
        doc["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["kind"] == "key_changed"),
        "{doc}"
    );
    let md = ok(&qs, &["plan", "--format", "markdown"]);
    assert!(md.contains("the vault key is read from elsewhere"), "{md}");
    // Apply refuses a key source that cannot open the vault: nothing is
    // recorded, the error names the file and the way out.
    let state = qs.join(".standby/state.json");
    let before = std::fs::read(&state).unwrap();
    let o = run(&qs, &["apply", "-auto-approve"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    assert!(
        err.contains("vault.main: the new key source does not open the vault"),
        "{err}"
    );
    assert!(err.contains("keys/moved.key"), "{err}");
    assert!(err.contains("nothing was recorded"), "{err}");
    assert!(
        err.contains("copy the current key file to .standby/keys/moved.key")
            || err.contains("copy the current key file to keys/moved.key"),
        "{err}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), before, "nothing recorded");

    // Every command now says what to do, and vault init does not pretend a
    // new key would help.
    let o = run(&qs, &["points"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o)
            .contains("restore its key file there from your backup or point key_file back at it"),
        "{}",
        text(&o)
    );
    let o = run(&qs, &["vault", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    assert!(err.contains("exists, but there is no key file at"), "{err}");
    assert!(err.contains("restore the vault's key file"), "{err}");
    assert!(
        !qs.join("keys/moved.key").exists(),
        "no new key was written"
    );
    // A key that is not the vault's is refused alike.
    std::fs::create_dir_all(qs.join("keys")).unwrap();
    std::fs::write(qs.join("keys/moved.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    let o = run(&qs, &["apply", "-auto-approve"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("the new key source does not open the vault"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&state).unwrap(), before, "nothing recorded");
    // Copying the key file is the way out, and then the change applies.
    std::fs::copy(qs.join(".standby/keys/main.key"), qs.join("keys/moved.key")).unwrap();
    ok(&qs, &["points"]);
    ok(&qs, &["apply", "-auto-approve"]);
    let o = run(&qs, &["plan", "-detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    ok(&qs, &["status"]);
}

/// With the vault unreadable (its key file missing), what replication
/// stored cannot be read, so a disk grown through replication is not
/// reported as drift from stale facts; the warning says why nothing was
/// compared.
#[test]
fn an_unreadable_vault_brings_no_drift_from_stale_facts() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    let db = qs.join("sites/onprem/db/data.sqlite");
    let before = std::fs::metadata(&db).unwrap().len();
    let o = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("create table grow(x); insert into grow values (randomblob(16384));")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::metadata(&db).unwrap().len() > before);
    ok(&qs, &["replicate"]);
    // The newest point holds the grown disk: no drift.
    let out = ok(&qs, &["plan"]);
    assert!(!out.contains("Changes outside standby"), "{out}");

    std::fs::write(
        qs.join("standby.vars.hcl"),
        "vault_key_file = \".standby/keys/new.key\"\n",
    )
    .unwrap();
    let o = run(&qs, &["plan"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("warning: cannot refresh vault.main"), "{all}");
    assert!(!all.contains("Changes outside standby"), "{all}");
    assert!(!all.contains("the disk grew"), "{all}");
    let o = run(&qs, &["plan", "--refresh-only", "-detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("No drift"), "{}", text(&o));
}

/// Issue 11 item 9 (gap): removing a machine entirely — the machine, its
/// protection and its recovery group — noted "machine.web is in
/// recovery_plan.shop but will have no protection": false, the plan is
/// updated by the same apply. The plan says what is destroyed and nothing
/// about a machine left unprotected.
#[test]
fn removing_a_machine_with_its_protection_and_group_gives_no_false_note() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    let cut = |file: &str, from: &str, to: &str| {
        let p = qs.join(file);
        let t = std::fs::read_to_string(&p).unwrap();
        let a = t.find(from).unwrap_or_else(|| panic!("{from} in {file}"));
        let b = a + t[a..].find(to).unwrap() + to.len();
        std::fs::write(&p, format!("{}{}", &t[..a], &t[b..])).unwrap();
    };
    cut("machines.hcl", "machine \"web\" {", "\n}\n");
    cut("protection.hcl", "protection \"web\" {", "\n}\n");
    cut("recovery.hcl", "group \"web\" {", "\n  }\n");
    ok(&qs, &["validate"]);
    let out = ok(&qs, &["plan"]);
    assert!(out.contains("machine.web"), "{out}");
    assert!(out.contains("protection.web will be destroyed"), "{out}");
    assert!(!out.contains("will have no protection"), "{out}");
    let doc: Value = serde_json::from_slice(&run(&qs, &["plan", "--json"]).stdout).unwrap();
    let kinds: Vec<&Value> = doc["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["kind"])
        .collect();
    assert!(
        !kinds
            .iter()
            .any(|k| k.as_str() == Some("machine_unprotected")),
        "{doc:#}"
    );
}
