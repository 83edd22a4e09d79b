//! A lost or stale state must not overwrite newer data (issue 11 item 2),
//! through the real binary: the quickstart failed over, committed and
//! reprotected, with orders written at DR and captured; then `state.json`
//! is deleted (its backup kept), then the backup too. `apply`,
//! `replicate` and a planned failover refuse to guess, say what they found
//! and what to run, and change nothing: no point of the stale source, no
//! byte written over the DR database. Restoring the backup brings back
//! normal work; `replicate --trust-state` is the explicit way to adopt the
//! state's view. Every command that writes the state refuses a missing
//! state whose backup exists, and none touches the backup.

mod common;

use common::{ok, points, quickstart, standby, text};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn sql(db: &Path, q: &str) -> String {
    let o = Command::new("sqlite3").arg(db).arg(q).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn flat(s: &str) -> String {
    s.replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run a command that must be refused with `what` in its message,
/// changing no point.
fn refused(qs: &Path, args: &[&str], what: &str) {
    let before: Vec<Value> = points(qs);
    let o = standby(qs).args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{args:?}:\n{}", text(&o));
    let all = flat(&text(&o));
    assert!(all.contains(what), "{args:?} must say {what:?}:\n{all}");
    assert_eq!(points(qs), before, "{args:?} changed the vault");
}

/// `status` reports replicate's refusal: WARNING or worse (exit 2), the
/// protection marked, `what` in the text.
fn status_warns(qs: &Path, what: &str) {
    let o = standby(qs).arg("status").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "status must warn:\n{}", text(&o));
    let all = flat(&text(&o));
    assert!(
        all.contains("protection.db: unprotected: replicate refuses it"),
        "{all}"
    );
    assert!(all.contains(what), "status must say {what:?}:\n{all}");
    let o = standby(qs).args(["status", "--json"]).output().unwrap();
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let db = doc["protections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["protection"] == "protection.db")
        .unwrap();
    assert_ne!(db["level"], "ok", "{doc:#}");
}

#[test]
fn a_lost_state_is_refused_instead_of_overwriting_newer_data_at_dr() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 16, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    ok(&qs, &["replicate"]);
    ok(&qs, &["failover", "planned", "shop", "--approve", "dns"]);
    ok(&qs, &["failover", "commit", "shop"]);
    let dr_db = qs.join("sites/dr/db/data.sqlite");
    sql(
        &dr_db,
        "INSERT INTO orders (customer, total_cents) VALUES ('at-dr-1', 1)",
    );
    ok(&qs, &["reprotect", "shop"]);
    sql(
        &dr_db,
        "INSERT INTO orders (customer, total_cents) VALUES ('at-dr-2', 2)",
    );
    ok(&qs, &["replicate"]);
    let newest = points(&qs)
        .into_iter()
        .rfind(|p| p["protection"] == "protection.db")
        .unwrap();
    assert_eq!(newest["site"], "site.dr", "{newest:#}");
    let rows = sql(&dr_db, "SELECT count(*) FROM orders");
    let dr_bytes = std::fs::read(&dr_db).unwrap();

    // 1. state.json deleted, its backup kept.
    let state = qs.join(".standby/state.json");
    let backup = qs.join(".standby/state.json.backup");
    let saved = d.path().join("state.json.saved");
    std::fs::copy(&state, &saved).unwrap();
    std::fs::remove_file(&state).unwrap();
    assert!(backup.exists());
    let missing = "the state is missing but its backup";
    refused(&qs, &["apply", "--auto-approve"], missing);
    refused(&qs, &["replicate"], missing);
    refused(
        &qs,
        &["failover", "planned", "shop", "--approve", "dns"],
        missing,
    );
    refused(
        &qs,
        &["replicate", "--watch", "--listen", "127.0.0.1:0"],
        missing,
    );
    // Every other writer of the state refuses too (issue 11 item 2: a
    // drill recreated the state and overwrote the backup with it).
    let backup_bytes = std::fs::read(&backup).unwrap();
    for args in [
        &["drill", "shop", "--approve", "dns"][..],
        &["failover", "test", "shop", "--approve", "dns"],
        &["failover", "cleanup", "shop"],
        &["failover", "commit", "shop"],
        &["approve", "shop", "dns"],
        &["reprotect", "shop"],
        &["failback", "shop", "--approve", "dns"],
        &["state", "rm", "machine.web"],
        // Read-only, but a plan from nothing would recreate everything.
        &["plan"],
    ] {
        refused(&qs, args, missing);
        assert!(!state.exists(), "{args:?} started a new state");
        assert_eq!(
            std::fs::read(&backup).unwrap(),
            backup_bytes,
            "{args:?} changed the backup"
        );
    }
    assert!(!state.exists(), "nothing may start a new state");
    status_warns(&qs, missing);

    // 2. The backup lost too: the vault's points say where db runs.
    std::fs::remove_file(&backup).unwrap();
    let stale = "leaves machine.db at site.dr, but the state says it runs at site.onprem";
    refused(&qs, &["apply", "--auto-approve"], stale);
    refused(&qs, &["replicate"], stale);
    refused(
        &qs,
        &["replicate", "protection.db"],
        "--trust-state protection.db",
    );
    refused(
        &qs,
        &["failover", "planned", "shop", "--approve", "dns"],
        stale,
    );
    refused(
        &qs,
        &["failover", "unplanned", "shop", "--approve", "dns"],
        stale,
    );
    // status no longer says OK while every replicate is refused (item 7).
    status_warns(&qs, stale);
    status_warns(&qs, "--trust-state protection.db");
    // plan says so too, instead of a plain "No changes".
    let o = standby(&qs).arg("plan").output().unwrap();
    let all = flat(&text(&o));
    assert!(
        all.contains("warning: apply and replicate refuse this state: protection.db:"),
        "{all}"
    );
    assert!(all.contains(stale), "{all}");
    assert_eq!(sql(&dr_db, "SELECT count(*) FROM orders"), rows);
    assert_eq!(
        std::fs::read(&dr_db).unwrap(),
        dr_bytes,
        "the DR database was written"
    );

    // 3. The state restored: work goes on, capturing where db runs.
    std::fs::copy(&saved, &state).unwrap();
    ok(&qs, &["replicate"]);
    let newest = points(&qs)
        .into_iter()
        .rfind(|p| p["protection"] == "protection.db")
        .unwrap();
    assert_eq!(newest["site"], "site.dr", "{newest:#}");

    // 4. Adopting the state's view is explicit: with a state that says db
    // runs at home (as if it was moved back by hand), plain replicate is
    // refused, --trust-state captures, and from then on they agree.
    std::fs::remove_file(&state).unwrap();
    let _ = std::fs::remove_file(&backup);
    refused(&qs, &["replicate", "protection.db"], stale);
    let o = standby(&qs)
        .args(["replicate", "--trust-state", "protection.db"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let newest = points(&qs)
        .into_iter()
        .rfind(|p| p["protection"] == "protection.db")
        .unwrap();
    assert_eq!(newest["site"], "site.onprem", "{newest:#}");
    ok(&qs, &["replicate", "protection.db"]);
}
