//! Groups of a recovery plan through the real binary: groups that do not
//! depend on each other run at the same time (their steps meet: each waits,
//! bounded, for a file the other creates, so the drill passes only if they
//! overlap, and the report's timeline shows the overlap); a group waits for
//! the groups it depends on; a failed group skips its dependants, naming
//! it, while an unrelated group still recovers; two groups may wait for
//! approvals at once, and approving one leaves the other's wait recorded;
//! on a terminal (`script` provides one) they take turns at the prompt.

mod common;
use common::text;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_standby"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("STANDBY_TEST_AFTER_MATERIALIZE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A shell step that creates `mine`, then waits up to 30 s for `theirs`
/// (exit 1 if it never comes).
fn meet(mine: &str, theirs: &str) -> String {
    format!(
        r#"["sh", "-c", "touch {mine}; i=0; while [ ! -e {theirs} ]; do i=$((i+1)); if [ $i -gt 300 ]; then exit 1; fi; sleep 0.1; done"]"#
    )
}

/// Plan `pair`: groups `a` and `b` independent, whose before steps meet;
/// `c` depends on both. Plan `manual`: independent groups `m` and `n`, each
/// with a manual step. Plan `broken`: `x` fails its before step, `y` is
/// independent, `z` depends on `x`.
fn config(d: &Path) -> PathBuf {
    let root = d.join("groups");
    let mut hcl = String::from(
        r#"
vault "main" {
  url      = "file://.standby/vault"
  key_file = ".standby/keys/main.key"
}
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
"#,
    );
    for m in ["a0", "b0", "c0", "x0", "y0", "z0", "m0", "n0"] {
        let disk = root.join(format!("sites/onprem/{m}/disk.img"));
        std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
        std::fs::write(&disk, vec![m.as_bytes()[0]; 16 * 1024]).unwrap();
        hcl.push_str(&format!(
            r#"
machine "{m}" {{
  site = site.onprem
  disk "disk" {{ path = "{m}/disk.img" }}
  check "disk" {{ command = ["sh", "-c", "test -s \"$STANDBY_DISK_DISK\""] }}
}}
protection "{m}" {{
  machine = machine.{m}
  target  = site.dr
  vault   = vault.main
  policy  = policy.p
}}
"#
        ));
    }
    hcl.push_str(&format!(
        r#"
recovery_plan "pair" {{
  group "a" {{
    machines = [machine.a0]
    before {{
      script "meet" {{
        command = {}
        timeout = "60s"
      }}
    }}
  }}
  group "b" {{
    machines = [machine.b0]
    before {{
      script "meet" {{
        command = {}
        timeout = "60s"
      }}
    }}
  }}
  group "c" {{
    depends_on = [group.a, group.b]
    machines   = [machine.c0]
  }}
}}

recovery_plan "manual" {{
  group "m" {{
    machines = [machine.m0]
    after {{
      manual "ok-m" {{ instructions = "check m" }}
    }}
  }}
  group "n" {{
    machines = [machine.n0]
    after {{
      manual "ok-n" {{ instructions = "check n" }}
    }}
  }}
}}

recovery_plan "broken" {{
  group "x" {{
    machines = [machine.x0]
    before {{
      script "boom" {{ command = ["sh", "-c", "exit 3"] }}
    }}
  }}
  group "y" {{
    machines = [machine.y0]
  }}
  group "z" {{
    depends_on = [group.x]
    machines   = [machine.z0]
  }}
}}
"#,
        meet("a.here", "b.here"),
        meet("b.here", "a.here")
    ));
    std::fs::write(root.join("main.hcl"), hcl).unwrap();
    let o = run(&root, &["apply", "--auto-approve"]);
    assert!(o.status.success(), "{}", text(&o));
    root
}

fn report(dir: &Path) -> Vec<Value> {
    let r: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    r["timeline"].as_array().unwrap().clone()
}

/// (start, end) of the timeline entry of `kind` in `group`.
fn span(timeline: &[Value], kind: &str, group: &str) -> (f64, f64) {
    let e = timeline
        .iter()
        .find(|e| e["kind"] == kind && e["group"] == group)
        .unwrap_or_else(|| panic!("no {kind} of group {group}: {timeline:#?}"));
    (
        e["start_seconds"].as_f64().unwrap(),
        e["end_seconds"].as_f64().unwrap(),
    )
}

#[test]
fn independent_groups_run_at_the_same_time_and_dependants_wait_for_them() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path());
    let reports = d.path().join("reports");
    let o = run(
        &root,
        &["drill", "pair", "--report-dir", reports.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let timeline = report(&reports);
    // The two meeting steps overlap in the timeline.
    let (a, b) = (span(&timeline, "step", "a"), span(&timeline, "step", "b"));
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "steps do not overlap: a {a:?}, b {b:?}"
    );
    // c started only once a and b had ended.
    let c = span(&timeline, "group", "c");
    let (ga, gb) = (span(&timeline, "group", "a"), span(&timeline, "group", "b"));
    assert!(
        c.0 >= ga.1 && c.0 >= gb.1,
        "c {c:?} began before a {ga:?} or b {gb:?} ended"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("group c: done"), "{stdout}");
}

#[test]
fn a_failed_group_skips_its_dependants_and_an_unrelated_group_still_recovers() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path());
    let reports = d.path().join("reports");
    let o = run(
        &root,
        &["drill", "broken", "--report-dir", reports.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("group x: FAILED"), "{stdout}");
    assert!(stdout.contains("group y: done"), "{stdout}");
    assert!(
        stdout.contains("group z: skipped (group x failed)"),
        "{stdout}"
    );
    let timeline = report(&reports);
    let outcome = |kind: &str, group: &str| {
        timeline
            .iter()
            .find(|e| e["kind"] == kind && e["group"] == group)
            .map(|e| (e["outcome"].clone(), e["detail"].clone()))
            .unwrap_or_else(|| panic!("no {kind} of {group}: {timeline:#?}"))
    };
    assert_eq!(outcome("group", "x").0, "failed");
    assert_eq!(outcome("machine", "y").0, "passed");
    assert_eq!(outcome("group", "z").0, "skipped");
    assert_eq!(outcome("machine", "z").1, "group x failed");
    // The run's failure names the step, and cleanup left nothing behind.
    assert!(text(&o).contains("step x.boom"), "{}", text(&o));
}

#[test]
fn independent_groups_wait_for_their_approvals_at_the_same_time() {
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_standby"))
        .arg("-C")
        .arg(&root)
        .args(["failover", "test", "manual", "--wait-for-approval"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let mut seen = Vec::new();
    // Awaits a progress line containing `what` (bounded).
    let mut await_line = |what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !seen.iter().any(|l: &String| l.contains(what)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) => seen.push(l),
                Err(_) => panic!("no line with {what:?}; saw:\n{}", seen.join("\n")),
            }
        }
    };
    // Both groups wait at once.
    await_line("waiting for `standby approve manual ok-m`");
    await_line("waiting for `standby approve manual ok-n`");
    let state = || -> Value {
        serde_json::from_slice(&std::fs::read(root.join(".standby/state.json")).unwrap()).unwrap()
    };
    // Approve the step the state does not name; its group finishes, and
    // the state still names the other wait.
    let named = state()["runs"][0]["waiting_for"]
        .as_str()
        .unwrap()
        .to_string();
    let (first, group) = if named == "n.ok-n" {
        ("ok-m", "m")
    } else {
        ("ok-n", "n")
    };
    let o = run(&root, &["approve", "manual", first]);
    assert!(o.status.success(), "{}", text(&o));
    await_line(&format!("group {group}: done"));
    assert_eq!(state()["runs"][0]["waiting_for"], named.as_str());
    let second = named.rsplit('.').next().unwrap().to_string();
    let o = run(&root, &["approve", "manual", &second]);
    assert!(o.status.success(), "{}", text(&o));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let st = state();
    assert!(st["runs"][0].get("waiting_for").is_none(), "{st:#}");
    let approvals: Vec<&str> = st["runs"][0]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["step"].as_str().unwrap())
        .collect();
    assert_eq!(approvals.len(), 2, "{st:#}");
    let o = run(&root, &["failover", "cleanup", "manual"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Lines of a child's output as they come, awaited with a bound.
struct Watch {
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn new(out: impl std::io::Read + Send + 'static) -> Watch {
        use std::io::BufRead;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l.trim_end_matches('\r').to_string());
            }
        });
        Watch {
            lines,
            seen: Vec::new(),
        }
    }

    /// The index of the `n`th line (from 1) containing `what`, waiting up
    /// to 60 s for it.
    fn nth(&mut self, n: usize, what: &str) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some((i, _)) = self
                .seen
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains(what))
                .nth(n - 1)
            {
                return i;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line {n} with {what:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }
}

#[test]
fn groups_take_turns_at_the_terminal_so_each_yes_answers_the_prompt_on_screen() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let root = config(d.path());
    // `script` gives standby a terminal for stdin; its input is our pipe.
    let cmd = format!(
        "{} -C {} failover test manual",
        env!("CARGO_BIN_EXE_standby"),
        root.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = Watch::new(child.stdout.take().unwrap());
    let prompt = "type yes when done (or run `standby approve manual";
    let done = "done approved on the terminal";
    // Both groups reach their manual step; one prompt is on screen.
    out.nth(2, "MANUAL STEP");
    out.nth(1, prompt);
    stdin.write_all(b"yes\n").unwrap();
    let first_done = out.nth(1, done);
    // The second prompt comes only once the first was answered.
    let second = out.nth(2, prompt);
    assert!(second > first_done, "{}", out.seen.join("\n"));
    stdin.write_all(b"yes\n").unwrap();
    out.nth(2, done);
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", out.seen.join("\n"));
    let st: Value =
        serde_json::from_slice(&std::fs::read(root.join(".standby/state.json")).unwrap()).unwrap();
    let by: Vec<&str> = st["runs"][0]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["by"].as_str().unwrap())
        .collect();
    assert_eq!(by, ["terminal", "terminal"], "{st:#}");
    let o = run(&root, &["failover", "cleanup", "manual"]);
    assert!(o.status.success(), "{}", text(&o));
}
