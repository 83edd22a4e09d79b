//! The exec provider driven through its contract: the real example provider
//! script (plans/exec-example/provider.py) for a whole run, with every
//! request and reply validated against schema/exec-provider.schema.json,
//! and broken provider commands for each way a call can fail.

use serde_json::Value;
use standby_provider_core::{
    CommandCheck, DiskSpec, MachineSpec, Mode, ProviderError, Run, SiteProvider,
};
use standby_provider_exec::ExecProvider;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example() -> PathBuf {
    repo().join("plans/exec-example")
}

/// The schema with its root pointed at `$defs/<def>`.
fn validator(def: &str) -> jsonschema::Validator {
    let text = fs::read_to_string(repo().join("schema/exec-provider.schema.json")).unwrap();
    let mut schema: Value = serde_json::from_str(&text).unwrap();
    let obj = schema.as_object_mut().unwrap();
    obj.remove("oneOf");
    obj.insert("$ref".into(), Value::String(format!("#/$defs/{def}")));
    jsonschema::options().build(&schema).unwrap()
}

fn run(config: &Path, id: &str, mode: Mode) -> Run {
    Run {
        run_id: id.into(),
        mode,
        site: "site.dr".into(),
        site_root: None,
        config_root: config.to_path_buf(),
        interrupt: Default::default(),
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap()..].starts_with(") Z"))
        .unwrap_or(false)
}

/// A configuration directory holding the example's scripts, and a provider
/// command that runs the example's provider.py while logging every request
/// and reply (one JSON document a line) for the schema check.
fn example_site() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("scripts")).unwrap();
    for e in fs::read_dir(example().join("scripts")).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, dir.path().join("scripts").join(p.file_name().unwrap())).unwrap();
    }
    let provider = example().join("provider.py");
    let command = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!(
            "tee -a requests.jsonl | python3 {} --root hypervisor | tee -a replies.jsonl",
            provider.display()
        ),
    ];
    (dir, command)
}

fn lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_example_provider_runs_a_whole_test_run_in_its_sandbox() {
    let (dir, command) = example_site();
    let cfg = dir.path();
    let p = ExecProvider::new(command, cfg.to_path_buf());
    let r = run(cfg, "t-1", Mode::Test);
    p.prepare(&r).unwrap();

    let disk = DiskSpec {
        name: "system".into(),
        size: 1 << 20,
        path: PathBuf::from("app/system.img"),
    };
    let target = p.disk_target(&r, "machine.app", &disk).unwrap();
    assert!(
        target.starts_with(cfg.join("hypervisor/sandboxes/t-1")),
        "{}",
        target.display()
    );
    assert_eq!(fs::metadata(&target).unwrap().len(), 1 << 20);
    fs::write(&target, b"restored system disk").unwrap();

    let m = MachineSpec {
        machine: "machine.app".into(),
        boot: Some(vec!["sh".into(), "scripts/app-start.sh".into()]),
        disks: BTreeMap::from([("system".to_string(), target.clone())]),
    };
    p.start(&r, &m, Duration::from_secs(30)).unwrap();
    let record: Value = serde_json::from_str(
        &fs::read_to_string(cfg.join("hypervisor/vms/t-1/machine.app.json")).unwrap(),
    )
    .unwrap();
    let pid = record["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid));
    // The boot got the machine's environment: its heartbeat is beside the disk.
    let beat = PathBuf::from(format!("{}.heartbeat", target.display()));
    wait_for("the heartbeat", || beat.exists());

    let check = |expect: &str| CommandCheck {
        name: "disk".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "test -s \"$STANDBY_DISK_SYSTEM\" && echo present".into(),
        ],
        expect: Some(expect.into()),
        timeout: Duration::from_secs(10),
    };
    let o = p.check(&r, &m, &check("present")).unwrap();
    assert!(o.passed, "{}", o.detail);
    let o = p.check(&r, &m, &check("absent")).unwrap();
    assert!(!o.passed);
    assert!(
        o.detail.contains("expected output 'absent'"),
        "{}",
        o.detail
    );

    p.stop(&r, "machine.app").unwrap();
    assert!(!alive(pid));
    p.stop(&r, "machine.app").unwrap();
    p.destroy(&r).unwrap();
    p.destroy(&r).unwrap();
    assert!(!cfg.join("hypervisor/sandboxes").exists());
    assert!(!cfg.join("hypervisor/vms").exists());

    let requests = lines(&cfg.join("requests.jsonl"));
    let replies = lines(&cfg.join("replies.jsonl"));
    let actions: Vec<&str> = requests
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "prepare",
            "disk_target",
            "start",
            "check",
            "check",
            "stop",
            "stop",
            "destroy",
            "destroy"
        ]
    );
    assert_eq!(replies.len(), requests.len());
    let (vreq, vrep) = (validator("request"), validator("reply"));
    for doc in &requests {
        let errors: Vec<String> = vreq.iter_errors(doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{doc}: {errors:?}");
    }
    for doc in &replies {
        let errors: Vec<String> = vrep.iter_errors(doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{doc}: {errors:?}");
    }
    // The schema is not vacuous: a stop without its machine is refused.
    let mut bad = requests[5].clone();
    bad.as_object_mut().unwrap().remove("machine");
    assert!(!vreq.is_valid(&bad));
    assert!(!vrep.is_valid(&serde_json::json!({"ok": false})));
}

#[test]
fn the_example_provider_keeps_failover_disks_after_destroy() {
    let (dir, command) = example_site();
    let cfg = dir.path();
    let p = ExecProvider::new(command, cfg.to_path_buf());
    let r = run(cfg, "f-1", Mode::Failover);
    p.prepare(&r).unwrap();
    let disk = DiskSpec {
        name: "system".into(),
        size: 4096,
        path: PathBuf::from("app/system.img"),
    };
    let target = p.disk_target(&r, "machine.app", &disk).unwrap();
    assert_eq!(target, cfg.join("hypervisor/disks/machine.app/system.img"));
    let m = MachineSpec {
        machine: "machine.app".into(),
        boot: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo 'no bootable disk' >&2; exit 1".into(),
        ]),
        disks: BTreeMap::from([("system".to_string(), target.clone())]),
    };
    let e = p
        .start(&r, &m, Duration::from_secs(30))
        .unwrap_err()
        .to_string();
    assert!(e.contains("start failed for machine.app"), "{e}");
    assert!(e.contains("no bootable disk"), "{e}");
    p.destroy(&r).unwrap();
    assert!(target.exists());
}

/// A provider command that is a shell script in a fresh config directory.
fn scripted(body: &str) -> (tempfile::TempDir, ExecProvider) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("provider.sh"), body).unwrap();
    let p = ExecProvider::new(
        vec!["sh".into(), "provider.sh".into(), "s3cr3t-token".into()],
        dir.path().to_path_buf(),
    )
    .with_timeouts(Duration::from_millis(500), Duration::from_millis(200));
    (dir, p)
}

#[test]
fn a_failing_provider_command_names_action_command_and_stderr() {
    let (dir, p) = scripted("echo 'vCenter: 401 unauthorized' >&2\nexit 3\n");
    let r = run(dir.path(), "t-2", Mode::Test);
    let e = p.prepare(&r).unwrap_err().to_string();
    assert!(e.starts_with("prepare failed for site.dr"), "{e}");
    assert!(e.contains("`sh provider.sh`"), "{e}");
    assert!(e.contains("exit code 3"), "{e}");
    assert!(e.contains("vCenter: 401 unauthorized"), "{e}");
    assert!(
        !e.contains("s3cr3t"),
        "arguments after the script stay out: {e}"
    );
}

#[test]
fn a_garbage_reply_is_an_error_quoting_it() {
    let (dir, p) =
        scripted("cat >/dev/null\necho 'hello, I am not JSON'\necho 'debug: done' >&2\n");
    let r = run(dir.path(), "t-3", Mode::Test);
    let e = p.stop(&r, "machine.db").unwrap_err().to_string();
    assert!(e.starts_with("stop failed for machine.db"), "{e}");
    assert!(e.contains("gave no valid reply"), "{e}");
    assert!(e.contains("hello, I am not JSON"), "{e}");
    assert!(e.contains("debug: done"), "{e}");
}

#[test]
fn a_reply_without_the_needed_field_is_an_error() {
    let (dir, p) = scripted("cat >/dev/null\necho '{\"ok\": true}'\n");
    let r = run(dir.path(), "t-4", Mode::Test);
    let disk = DiskSpec {
        name: "data".into(),
        size: 1,
        path: PathBuf::from("db/data.img"),
    };
    let e = p
        .disk_target(&r, "machine.db", &disk)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("disk_target failed for machine.db disk \"data\""),
        "{e}"
    );
    assert!(e.contains("no `path`"), "{e}");
    let m = MachineSpec {
        machine: "machine.db".into(),
        boot: None,
        disks: BTreeMap::new(),
    };
    let c = CommandCheck {
        name: "db".into(),
        command: vec!["true".into()],
        expect: None,
        timeout: Duration::from_secs(1),
    };
    let e = p.check(&r, &m, &c).unwrap_err().to_string();
    assert!(e.contains("no `passed`"), "{e}");
}

#[test]
fn an_error_reply_is_shown_with_the_action() {
    let (dir, p) =
        scripted("cat >/dev/null\necho '{\"ok\": false, \"error\": \"datastore full\"}'\n");
    let r = run(dir.path(), "t-5", Mode::Test);
    let e = p.destroy(&r).unwrap_err().to_string();
    assert!(e.starts_with("destroy failed for site.dr"), "{e}");
    assert!(e.contains("reported: datastore full"), "{e}");
}

#[test]
fn a_hung_provider_command_times_out_and_its_group_is_killed() {
    let (dir, p) = scripted("sleep 60 &\necho $! > bg.pid\nwait\n");
    let r = run(dir.path(), "t-6", Mode::Test);
    let e = p.prepare(&r).unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::Timeout {
                action: "prepare",
                ..
            }
        ),
        "{e:?}"
    );
    let e = e.to_string();
    assert!(e.contains("`sh provider.sh`"), "{e}");
    assert!(e.contains("did not finish within 500ms"), "{e}");
    let bg: u32 = fs::read_to_string(dir.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the background sleep to die", || !alive(bg));
}
