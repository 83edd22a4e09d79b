//! `standby state list|show|rm` through the real binary, including the
//! lock held by another process and a lock holder killed with SIGKILL.

mod state_support;

use standby::state::{Backend, LocalBackend};
use state_support::{dir_with_state, fixture, sample_doc};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn standby(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_standby"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// Output as text, with miette's line wrapping undone (wrapped lines of one
/// message continue with `│ ` or the help's indentation).
fn text(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b).into_owned();
    let mut out = String::new();
    for line in s.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("│ ") {
            out.push(' ');
            out.push_str(rest);
        } else if line.starts_with("        ") && !out.is_empty() {
            out.push(' ');
            out.push_str(t);
        } else {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(line);
        }
    }
    if s.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// A configuration directory holding `sample_doc()` written through the backend.
fn dir_with_sample() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path());
    let lock = backend.lock("test setup").unwrap();
    backend.write(&lock, &mut sample_doc()).unwrap();
    dir
}

#[test]
fn list_prints_sorted_addresses() {
    let dir = dir_with_sample();
    let out = standby(dir.path(), &["state", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    // Sorted by kind (in plan order), then name and key.
    let addresses: Vec<standby::model::Address> =
        lines.iter().map(|l| l.parse().unwrap()).collect();
    let mut sorted = addresses.clone();
    sorted.sort();
    assert_eq!(addresses, sorted);
    assert_eq!(lines[0], "vault.main");
    assert_eq!(lines.len(), 7);
    assert!(lines.contains(&"machine.web[\"a\"]".to_string()));
    assert!(lines.contains(&"protection.web[\"a b\"]".to_string()));

    let out = standby(dir.path(), &["state", "list", "--json"]);
    let json: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, lines);
}

#[test]
fn list_without_state_says_so_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = standby(dir.path(), &["state", "list"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains("No state yet"),
        "{}",
        text(&out.stderr)
    );
    let out = standby(dir.path(), &["state", "list", "--json"]);
    assert_eq!(text(&out.stdout).trim(), "[]");
}

#[test]
fn show_prints_kind_status_time_and_attributes() {
    let dir = dir_with_sample();
    let out = standby(dir.path(), &["state", "show", "protection.web[\"a b\"]"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.starts_with("protection.web[\"a b\"]\n"), "{s}");
    assert!(s.contains("  kind       = protection\n"), "{s}");
    assert!(s.contains("  status     = protected\n"), "{s}");
    assert!(
        s.contains("  updated_at = 2026-11-26 05:10:00 UTC\n"),
        "{s}"
    );
    assert!(
        s.contains("    machine = \"machine.web[\\\"a\\\"]\"\n"),
        "{s}"
    );
    assert!(s.contains("    target  = \"site.dr\"\n"), "{s}");

    let out = standby(dir.path(), &["state", "show", "machine.db", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["address"], "machine.db");
    assert_eq!(v["status"], "ready");
    assert_eq!(v["attributes"]["disks"][1], "data");
}

#[test]
fn show_of_a_missing_address_suggests_the_closest() {
    let dir = dir_with_sample();
    let out = standby(dir.path(), &["state", "show", "machine.dv"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("machine.dv is not in the state"), "{err}");
    assert!(err.contains("did you mean machine.db?"), "{err}");

    let out = standby(dir.path(), &["state", "show", "disk.db"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown kind"));
}

#[test]
fn rm_removes_writes_and_keeps_the_rest() {
    let dir = dir_with_sample();
    let backend = LocalBackend::new(dir.path());
    let before = backend.read().unwrap().unwrap();
    let out = standby(
        dir.path(),
        &["state", "rm", "machine.db", "machine.web[\"a\"]"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("Removed machine.db\n"), "{s}");
    assert!(s.contains("Removed machine.web[\"a\"]\n"), "{s}");
    let after = backend.read().unwrap().unwrap();
    assert_eq!(after.serial, before.serial + 1);
    assert_eq!(after.lineage, before.lineage);
    assert_eq!(after.objects.len(), before.objects.len() - 2);
    assert_eq!(after.drills, before.drills);
    let backup: standby::state::StateDoc =
        serde_json::from_slice(&std::fs::read(backend.backup_path()).unwrap()).unwrap();
    assert_eq!(backup, before);
}

#[test]
fn rm_with_one_unknown_address_changes_nothing() {
    let dir = dir_with_sample();
    let path = dir.path().join(".standby/state.json");
    let before = std::fs::read(&path).unwrap();
    let out = standby(dir.path(), &["state", "rm", "machine.db", "site.onprme"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("site.onprme is not in the state"), "{err}");
    assert!(err.contains("did you mean site.onprem?"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn rm_never_overwrites_a_malformed_state() {
    for name in [
        "truncated.json",
        "empty-object.json",
        "format-99.json",
        "garbage.bin",
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let dir = dir_with_state(&bytes);
        let out = standby(dir.path(), &["state", "rm", "machine.db"]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = text(&out.stderr);
        assert!(err.contains("state.json"), "{name}: {err}");
        assert_eq!(
            std::fs::read(dir.path().join(".standby/state.json")).unwrap(),
            bytes,
            "{name}"
        );
        assert!(!dir.path().join(".standby/state.json.backup").exists());
        // Reading commands give the same clear error.
        let out = standby(dir.path(), &["state", "list"]);
        assert_eq!(out.status.code(), Some(1), "{name}");
    }
}

#[test]
fn rm_while_this_process_holds_the_lock_names_the_holder() {
    let dir = dir_with_sample();
    let backend = LocalBackend::new(dir.path());
    let before = std::fs::read(backend.state_path()).unwrap();
    let lock = backend.lock("standby apply").unwrap();
    let out = standby(dir.path(), &["state", "rm", "machine.db"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let info = lock.info();
    assert!(err.contains("the state is locked by"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(err.contains(&format!("on host {}", info.host)), "{err}");
    assert!(err.contains("running \"standby apply\""), "{err}");
    assert_eq!(std::fs::read(backend.state_path()).unwrap(), before);
    drop(lock);
    let out = standby(dir.path(), &["state", "rm", "machine.db"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Run by `a_lock_holder_killed_with_sigkill_leaves_no_stuck_lock` as a
/// child process: take the lock, say so, and wait to be killed.
#[test]
#[ignore = "helper run as a child process"]
fn hold_lock_until_killed() {
    let Ok(dir) = std::env::var("STANDBY_TEST_HOLD_LOCK_DIR") else {
        return;
    };
    let _lock = LocalBackend::new(&dir)
        .lock("standby apply --watch")
        .unwrap();
    println!("LOCKED");
    let mut line = String::new();
    // Blocks until the parent kills us (stdin stays open).
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn a_lock_holder_killed_with_sigkill_leaves_no_stuck_lock() {
    let dir = dir_with_sample();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hold_lock_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env("STANDBY_TEST_HOLD_LOCK_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "child exited early"
        );
        if line.contains("LOCKED") {
            break;
        }
    }
    let out = standby(dir.path(), &["state", "rm", "machine.db"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("pid {}", child.id())), "{err}");
    assert!(err.contains("running \"standby apply --watch\""), "{err}");

    // SIGKILL: no destructor runs, the lock file keeps the holder text.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(rc, 0);
    child.wait().unwrap();
    let stale = std::fs::read_to_string(dir.path().join(".standby/state.lock")).unwrap();
    assert!(stale.contains("standby apply --watch"), "{stale}");

    let out = standby(dir.path(), &["state", "rm", "machine.db"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Removed machine.db"));
}
