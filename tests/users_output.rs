//! Human output reads well, machine output stays exact (issue 12, item 5),
//! through the real binary: times to the second with their zone, one
//! duration style (the drill report and `status` agree on RTO), one size
//! style, right plurals, no wrapping inside a flag off a terminal, JSON at
//! full precision.

mod common;

use common::{ok, quickstart, standby, text};
use serde_json::Value;

/// `2026-11-30 09:02:04 UTC` somewhere in `s`.
fn has_human_time(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(22)).any(|i| {
        let w = &b[i..i + 23];
        w[4] == b'-'
            && w[7] == b'-'
            && w[10] == b' '
            && w[13] == b':'
            && w[16] == b':'
            && &w[19..23] == b" UTC"
            && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
                .iter()
                .all(|&j| w[j].is_ascii_digit())
    })
}

#[test]
fn times_durations_sizes_and_plurals_read_well() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    let out = ok(&qs, &["validate"]);
    assert!(
        out.contains("(2 machines, 2 protections, 1 recovery plan)"),
        "{out}"
    );
    ok(&qs, &["apply", "--auto-approve"]);

    let pts = ok(&qs, &["points"]);
    let first = pts.lines().nth(1).unwrap();
    assert!(has_human_time(first), "{pts}");
    // JSON keeps the full precision.
    let json: Vec<Value> = serde_json::from_str(&ok(&qs, &["points", "--json"])).unwrap();
    let created = json[0]["created"].as_str().unwrap();
    assert!(
        created.contains('T') && created.ends_with('Z') && created.contains('.'),
        "{created}"
    );

    let shown = ok(&qs, &["state", "show", "protection.db"]);
    assert!(has_human_time(&shown), "{shown}");
    // Sizes too, in the one size style (issue 12 item 5): no raw bytes.
    let stored = shown
        .lines()
        .find(|l| l.contains("observed.stored_bytes"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(stored.ends_with("iB") || stored.ends_with(" B"), "{stored}");
    let machine = ok(&qs, &["state", "show", "machine.db"]);
    let sizes: Vec<&str> = machine.lines().filter(|l| l.contains(".size ")).collect();
    assert!(!sizes.is_empty(), "{machine}");
    assert!(sizes.iter().all(|l| l.ends_with("iB")), "{sizes:?}");
    let json: Value =
        serde_json::from_str(&ok(&qs, &["state", "show", "protection.db", "--json"])).unwrap();
    assert!(
        json["attributes"]["observed.stored_bytes"].is_u64(),
        "{json}"
    );

    let out = ok(
        &qs,
        &[
            "restore",
            "latest",
            "--machine",
            "machine.web",
            "--disk",
            "system",
            "--to",
            "r.img",
        ],
    );
    assert!(has_human_time(&out), "{out}");
    assert!(out.contains("8.0 MiB ("), "{out}");

    // The drill report and status say the same RTO, in the same style.
    ok(
        &qs,
        &[
            "drill",
            "shop",
            "--approve",
            "dns",
            "--report-dir",
            "report",
        ],
    );
    let md = std::fs::read_to_string(qs.join("report/report.md")).unwrap();
    assert!(
        has_human_time(md.lines().find(|l| l.starts_with("Run ")).unwrap()),
        "{md}"
    );
    let rto_md = md
        .lines()
        .find(|l| l.starts_with("| RTO | "))
        .and_then(|l| l.split(" | ").nth(1))
        .unwrap()
        .to_string();
    let status =
        String::from_utf8_lossy(&standby(&qs).arg("status").output().unwrap().stdout).into_owned();
    assert!(
        status.contains(&format!("passed, RTO {rto_md}")),
        "report RTO {rto_md}, status:\n{status}"
    );
    let doc: Value = serde_json::from_slice(
        &standby(&qs)
            .args(["status", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let rto = doc["recovery_plans"][0]["last_drill"]["rto_seconds"]
        .as_f64()
        .unwrap();
    assert!(
        rto > 0.0 && rto.fract() != 0.0,
        "full precision in JSON: {rto}"
    );

    let out = ok(&qs, &["vault", "verify"]);
    assert!(!out.contains("(s)"), "{out}");
}

#[test]
fn a_flag_in_a_hint_is_never_wrapped_off_a_terminal() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    let prot = qs.join("protection.hcl");
    let hcl = std::fs::read_to_string(&prot).unwrap();
    let cut = hcl.find("protection \"web\"").unwrap();
    std::fs::write(&prot, &hcl[..cut]).unwrap();
    let rec = qs.join("recovery.hcl");
    std::fs::write(
        &rec,
        std::fs::read_to_string(&rec)
            .unwrap()
            .replace("[machine.web]", "[]"),
    )
    .unwrap();
    let o = standby(&qs)
        .args(["apply", "--auto-approve"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("run apply again with --allow-destroy"),
        "wrapped:\n{err}"
    );
}

/// An RFC 3339 stamp (`2026-11-30T11:16:56.102623133Z`) somewhere in `s`:
/// digit, `T`, two digits, `:` (a run id's `20261130T122406` is not one).
fn has_rfc3339(s: &str) -> bool {
    s.as_bytes().windows(5).any(|w| {
        w[0].is_ascii_digit()
            && w[1] == b'T'
            && w[2].is_ascii_digit()
            && w[3].is_ascii_digit()
            && w[4] == b':'
    })
}

/// Recovery and apply logs, `state show` and `state mv` read as the rest:
/// times to the second with their zone, counted nouns with the right
/// plural, and a rename hint only when the configuration lacks the name.
#[test]
fn recovery_logs_state_and_plurals_read_well() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    let out = ok(&qs, &["apply", "-auto-approve"]);
    assert!(out.contains("one instant "), "{out}");
    assert!(!has_rfc3339(&out), "{out}");
    ok(&qs, &["replicate"]);

    let o = standby(&qs)
        .args(["failover", "test", "shop", "--approve", "dns"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains(": point "), "{out}");
    assert!(has_human_time(&out), "{out}");
    assert!(!has_rfc3339(&out), "{out}");
    let out = ok(&qs, &["failover", "cleanup", "shop"]);
    assert!(
        out.contains(": 2 machines stopped, sandbox removed."),
        "{out}"
    );
    assert!(!out.contains("(s)"), "{out}");

    let out = ok(&qs, &["state", "show", "protection.db"]);
    let newest = out
        .lines()
        .find(|l| l.contains("observed.newest_point"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(has_human_time(newest), "{newest}");
    assert!(!has_rfc3339(&out), "{out}");

    // Renamed in the configuration first: state mv says so, no rename hint.
    let prot = qs.join("protection.hcl");
    let hcl = std::fs::read_to_string(&prot).unwrap();
    std::fs::write(
        &prot,
        hcl.replace("protection \"web\" {", "protection \"web2\" {"),
    )
    .unwrap();
    let out = ok(&qs, &["state", "mv", "protection.web", "protection.web2"]);
    assert!(
        out.contains("The configuration already names it protection.web2."),
        "{out}"
    );
    assert!(!out.contains("Rename it"), "{out}");
    // Not renamed there: the hint says to.
    let out = ok(&qs, &["state", "mv", "protection.db", "protection.db2"]);
    assert!(
        out.contains("Rename it protection.db2 in the configuration too"),
        "{out}"
    );

    // Drift counts its facts with the right plural.
    std::fs::remove_dir_all(qs.join(".standby/vault")).unwrap();
    let o = standby(&qs)
        .args(["plan", "--refresh-only"])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(!out.contains("fact(s)"), "{out}");
    assert!(
        out.contains(" changed. `standby apply --refresh-only`"),
        "{out}"
    );
}
