//! A command that overruns its timeout is stopped whole (issue 11 item 8,
//! issue 19 item 4): a freeze hook, a script step, a check and a shutdown
//! command that start a background child holding their output. After the
//! timeout the child is dead (it cannot freeze the application again), the
//! run does not wait for it, and the message says what was killed.

mod common;
mod vault_support;

use common::{ok, quickstart, standby, text};
use standby::model::{Duration as ConfigDuration, Quiesce};
use standby::replication::{self, Options, Progress};
use std::path::Path;
use std::time::{Duration, Instant};

/// A shell script that starts `sleep 600` in the background (holding the
/// script's stdout), records its pid in `pidfile`, and waits for it.
fn lingering(pidfile: &Path) -> String {
    format!("sleep 600 & echo $! > {}; wait", pidfile.display())
}

/// Waits (bounded) until `pid` is gone or a zombie; fails if it lives on.
fn assert_dead(pid_file: &Path) {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the background child {pid} outlived its command's timeout"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_freeze_hook_past_its_timeout_leaves_no_child_that_freezes_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = vault_support::new_vault(&vault_support::backend_url("file", d), d);
    let disk = d.join("a");
    std::fs::write(&disk, vec![b'.'; 1 << 20]).unwrap();
    let log = d.join("log");
    let pid = d.join("bg.pid");
    // The background child would "freeze" again 3 s later.
    let freeze = format!(
        "(sleep 3; echo REFROZEN >> {log}) & echo $! > {pid}; echo FROZEN >> {log}; sleep 600",
        log = log.display(),
        pid = pid.display()
    );
    let mut t = vault_support::target("a", &[("root", &disk)]);
    t.app = true;
    t.quiesce = Some(Quiesce {
        freeze: vec!["sh".into(), "-c".into(), freeze],
        thaw: vec![
            "sh".into(),
            "-c".into(),
            format!("echo THAWED >> {}", log.display()),
        ],
        timeout: ConfigDuration::from_secs(1),
    });
    let err = replication::take_points(
        &vault,
        &[t],
        &Options::new(d.join("cache")),
        &Progress::default(),
    )
    .expect_err("a freeze past its timeout fails");
    let msg = err.to_string();
    assert!(
        msg.contains("timed out after 1s; its process group (4 processes) was killed"),
        "{msg}"
    );
    assert_dead(&pid);
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.lines().collect::<Vec<_>>(), ["FROZEN", "THAWED"]);
}

/// The quickstart, applied, with `edit` applied to one of its files.
fn applied(d: &Path, file: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let qs = quickstart(d, 8, 8);
    let p = qs.join(file);
    let before = std::fs::read_to_string(&p).unwrap();
    let after = edit(before.clone());
    assert_ne!(before, after, "the edit of {file} changed nothing");
    std::fs::write(&p, after).unwrap();
    ok(&qs, &["validate"]);
    ok(&qs, &["apply", "--auto-approve"]);
    qs
}

/// Runs `args`, which must fail, and returns its flattened output.
fn fails(qs: &Path, args: &[&str]) -> String {
    let o = standby(qs).args(args).output().unwrap();
    assert!(!o.status.success(), "{args:?} passed:\n{}", text(&o));
    text(&o)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_script_step_past_its_timeout_is_killed_with_its_children() {
    let d = tempfile::tempdir().unwrap();
    let pid = d.path().join("step.pid");
    let qs = applied(d.path(), "recovery.hcl", |s| {
        s.replacen(
            "machines = [machine.db]\n",
            &format!(
                "machines = [machine.db]\n    before {{\n      script \"slow\" {{\n        command = [\"sh\", \"-c\", \"{}\"]\n        timeout = \"1s\"\n      }}\n    }}\n",
                lingering(&pid)
            ),
            1,
        )
    });
    let out = fails(&qs, &["failover", "test", "shop", "--approve", "dns"]);
    assert_dead(&pid);
    assert!(
        out.contains("timed out after 1s; its process group (2 processes) was killed"),
        "{out}"
    );
}

/// A check or script step whose grandchild (`sleep 600`) keeps the output
/// pipe open ends at its timeout: without the group kill the run would
/// wait 600 s, so it is given 60 s and killed (a failure) past that.
#[test]
fn a_step_whose_grandchild_holds_the_pipe_ends_at_its_timeout() {
    for kind in ["check", "script"] {
        let d = tempfile::tempdir().unwrap();
        let qs = applied(d.path(), "recovery.hcl", |s| {
            s.replacen(
                "machines = [machine.db]\n",
                &format!("machines = [machine.db]\n    before {{\n      {kind} \"slow\" {{\n        command = [\"sh\", \"-c\", \"sleep 600; true\"]\n        timeout = \"1s\"\n      }}\n    }}\n"),
                1,
            )
        });
        let log = d.path().join("out.log");
        let mut child = standby(&qs)
            .args(["failover", "test", "shop", "--approve", "dns"])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(d.path().join("err.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the {kind} step's run did not end within 60 s of a 1 s timeout");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(!status.success(), "the {kind} step passed");
        let out = std::fs::read_to_string(&log).unwrap()
            + &std::fs::read_to_string(d.path().join("err.log")).unwrap();
        let out = out
            .replace('│', " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            out.contains("timed out after 1s; its process group (2 processes) was killed"),
            "{kind}: {out}"
        );
    }
}

#[test]
fn a_machine_check_past_its_timeout_is_killed_with_its_children() {
    let d = tempfile::tempdir().unwrap();
    let pid = d.path().join("check.pid");
    let qs = applied(d.path(), "machines.hcl", |s| {
        s.replacen(
            "  check \"filesystem\" {",
            &format!(
                "  check \"slow\" {{\n    command = [\"sh\", \"-c\", \"{}\"]\n    timeout = \"1s\"\n    retries = 0\n  }}\n  check \"filesystem\" {{",
                lingering(&pid)
            ),
            1,
        )
    });
    let out = fails(&qs, &["failover", "test", "shop", "--approve", "dns"]);
    assert_dead(&pid);
    assert!(out.contains("slow"), "{out}");
}

#[test]
fn a_shutdown_command_past_its_timeout_is_killed_with_its_children() {
    let d = tempfile::tempdir().unwrap();
    let pid = d.path().join("shutdown.pid");
    let qs = applied(d.path(), "machines.hcl", |s| {
        s.replacen(
            r#"shutdown { command = ["sh", "scripts/db-stop.sh"] }"#,
            &format!(
                "shutdown {{\n    command = [\"sh\", \"-c\", \"{}\"]\n    timeout = \"1s\"\n  }}",
                lingering(&pid)
            ),
            1,
        )
    });
    let out = fails(&qs, &["failover", "planned", "shop", "--approve", "dns"]);
    assert_dead(&pid);
    assert!(
        out.contains("timed out after 1s; its process group (2 processes) was killed"),
        "{out}"
    );
}
