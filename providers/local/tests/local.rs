//! The local provider driven through its contract on real directories and
//! real processes.

use standby_provider_core::{CommandCheck, DiskSpec, MachineSpec, Mode, Run, SiteProvider};
use standby_provider_local::LocalProvider;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Sites {
    _dir: tempfile::TempDir,
    onprem: PathBuf,
    dr: PathBuf,
    config: PathBuf,
}

fn sites() -> Sites {
    let dir = tempfile::tempdir().unwrap();
    let onprem = dir.path().join("sites/onprem");
    let dr = dir.path().join("sites/dr");
    let config = dir.path().join("config");
    fs::create_dir_all(onprem.join("db")).unwrap();
    fs::write(onprem.join("db/data.img"), b"production bytes").unwrap();
    fs::create_dir_all(dr.join("db")).unwrap();
    fs::write(dr.join("db/data.img"), b"old dr copy").unwrap();
    fs::create_dir_all(config.join("scripts")).unwrap();
    Sites {
        onprem,
        dr,
        config,
        _dir: dir,
    }
}

fn run(s: &Sites, id: &str, mode: Mode) -> Run {
    Run {
        run_id: id.into(),
        mode,
        site: "site.dr".into(),
        site_root: Some(s.dr.clone()),
        config_root: s.config.clone(),
        interrupt: Default::default(),
    }
}

fn script(s: &Sites, name: &str, body: &str) -> String {
    let p = s.config.join("scripts").join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    format!("scripts/{name}")
}

/// Every file and directory under `root` with its contents.
fn tree(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                stack.push(p);
                out.insert(rel, None);
            } else {
                out.insert(rel, Some(fs::read(&p).unwrap()));
            }
        }
    }
    out
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

fn pid_in(file: &Path) -> u32 {
    fs::read_to_string(file)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn disk(name: &str, path: &str, size: u64) -> DiskSpec {
    DiskSpec {
        name: name.into(),
        size,
        path: PathBuf::from(path),
    }
}

fn check(command: &[&str], expect: Option<&str>, timeout: Duration) -> CommandCheck {
    CommandCheck {
        name: "c".into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        expect: expect.map(str::to_string),
        timeout,
    }
}

#[test]
fn a_test_run_stays_in_its_sandbox_and_leaves_nothing_behind() {
    let s = sites();
    let before = (tree(&s.onprem), tree(&s.dr));
    let p = LocalProvider::new();
    let r = run(&s, "t-1", Mode::Test);
    p.prepare(&r).unwrap();
    let sandbox = s.dr.join(".standby-test/t-1");
    assert!(sandbox.is_dir());

    let web = "machine.web[\"a\"]";
    let sys = p
        .disk_target(&r, web, &disk("system", "web/sys.img", 1 << 20))
        .unwrap();
    assert_eq!(sys, sandbox.join("machine.web-a/web/sys.img"));
    assert_eq!(fs::metadata(&sys).unwrap().len(), 1 << 20);
    let data = p
        .disk_target(&r, "machine.db", &disk("data", "db/data.img", 4096))
        .unwrap();
    assert_eq!(data, sandbox.join("machine.db/db/data.img"));
    let dev = p
        .disk_target(&r, "machine.db", &disk("raw", "/dev/sdb", 4096))
        .unwrap();
    assert_eq!(dev, sandbox.join("machine.db/devices/dev/sdb"));
    fs::write(&data, b"restored").unwrap();

    // The boot records its environment next to its disk, then keeps running.
    let boot = script(
        &s,
        "boot.sh",
        "env | grep ^STANDBY_ | sort > \"$(dirname \"$STANDBY_DISK_SYSTEM\")/env.txt\"\nexec sleep 60",
    );
    let m = MachineSpec {
        machine: web.into(),
        boot: Some(vec![boot]),
        disks: BTreeMap::from([("system".to_string(), sys.clone())]),
    };
    p.start(&r, &m, Duration::from_secs(30)).unwrap();
    let pid_file = sandbox.join(".runs/machine.web-a.pid");
    let pid = pid_in(&pid_file);
    assert!(alive(pid));
    let env_file = sys.parent().unwrap().join("env.txt");
    wait_for("the boot's env file", || {
        fs::read_to_string(&env_file).is_ok_and(|t| t.contains("STANDBY_RUN_ID"))
    });
    let env = fs::read_to_string(&env_file).unwrap();
    assert!(
        env.contains(&format!("STANDBY_DISK_SYSTEM={}", sys.display())),
        "{env}"
    );
    assert!(env.contains("STANDBY_MACHINE=machine.web[\"a\"]"), "{env}");
    assert!(env.contains("STANDBY_MODE=test"), "{env}");
    assert!(env.contains("STANDBY_RUN_ID=t-1"), "{env}");

    // Mid-run, nothing outside the sandbox changed.
    let mut dr_now = tree(&s.dr);
    dr_now.retain(|p, _| !p.starts_with(".standby-test"));
    assert_eq!((tree(&s.onprem), dr_now), before);

    // Checks see the same environment and run in the configuration dir.
    let c = check(
        &[
            "sh",
            "-c",
            "test -f scripts/boot.sh && cat \"$STANDBY_DISK_SYSTEM\" | wc -c",
        ],
        Some("1048576"),
        Duration::from_secs(10),
    );
    let o = p.check(&r, &m, &c).unwrap();
    assert!(o.passed, "{}", o.detail);

    p.stop(&r, web).unwrap();
    assert!(!alive(pid));
    assert!(!pid_file.exists());
    p.destroy(&r).unwrap();
    assert_eq!((tree(&s.onprem), tree(&s.dr)), before);
    // Cleanup can be rerun.
    p.stop(&r, web).unwrap();
    p.destroy(&r).unwrap();
}

#[test]
fn destroy_stops_machines_still_running_and_keeps_other_sandboxes() {
    let s = sites();
    let p = LocalProvider::new();
    let a = run(&s, "t-a", Mode::Test);
    let b = run(&s, "t-b", Mode::Test);
    p.prepare(&a).unwrap();
    p.prepare(&b).unwrap();
    let m = MachineSpec {
        machine: "machine.db".into(),
        boot: Some(vec!["sleep".into(), "60".into()]),
        disks: BTreeMap::new(),
    };
    p.start(&a, &m, Duration::from_secs(30)).unwrap();
    let pid = pid_in(&s.dr.join(".standby-test/t-a/.runs/machine.db.pid"));
    p.destroy(&a).unwrap();
    assert!(!alive(pid));
    assert!(!s.dr.join(".standby-test/t-a").exists());
    assert!(s.dr.join(".standby-test/t-b").is_dir());
    p.destroy(&b).unwrap();
    assert!(!s.dr.join(".standby-test").exists());
}

#[test]
fn failover_disks_take_the_source_paths_at_the_dr_site() {
    let s = sites();
    let p = LocalProvider::new();
    let r = run(&s, "f-1", Mode::Failover);
    p.prepare(&r).unwrap();
    let data = p
        .disk_target(&r, "machine.db", &disk("data", "db/data.img", 8192))
        .unwrap();
    assert_eq!(data, s.dr.join("db/data.img"));
    // The old copy is gone: a fresh sparse file of the disk's size.
    assert_eq!(fs::read(&data).unwrap(), vec![0u8; 8192]);
    let dev = p
        .disk_target(&r, "machine.db", &disk("raw", "/dev/vdb", 4096))
        .unwrap();
    assert_eq!(dev, s.dr.join("devices/dev/vdb"));
    let e = p
        .disk_target(
            &r,
            "machine.db",
            &disk("bad", "../../onprem/db/data.img", 1),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("leaves its directory"), "{e}");
    assert_eq!(
        fs::read(s.onprem.join("db/data.img")).unwrap(),
        b"production bytes"
    );

    let m = MachineSpec {
        machine: "machine.db".into(),
        boot: Some(vec!["sleep".into(), "60".into()]),
        disks: BTreeMap::from([("data".to_string(), data.clone())]),
    };
    p.start(&r, &m, Duration::from_secs(30)).unwrap();
    let runs = s.dr.join(".standby-runs/f-1");
    let pid = pid_in(&runs.join("machine.db.pid"));
    assert!(runs.join("machine.db.log").exists());
    // A second start of a running machine is refused.
    let e = p
        .start(&r, &m, Duration::from_secs(30))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already running"), "{e}");
    p.stop(&r, "machine.db").unwrap();
    assert!(!alive(pid));
    assert!(!s.dr.join(".standby-runs").exists());
    p.destroy(&r).unwrap();
    assert!(data.exists(), "destroy never removes production disks");
}

#[test]
fn one_shot_boots_finish_and_failing_boots_show_their_output() {
    let s = sites();
    let p = LocalProvider::new();
    let r = run(&s, "t-2", Mode::Test);
    p.prepare(&r).unwrap();
    let ok = script(&s, "ok.sh", "echo booted");
    let m = MachineSpec {
        machine: "machine.a".into(),
        boot: Some(vec![ok]),
        disks: BTreeMap::new(),
    };
    p.start(&r, &m, Duration::from_secs(30)).unwrap();
    let runs = s.dr.join(".standby-test/t-2/.runs");
    assert!(!runs.join("machine.a.pid").exists());
    assert_eq!(
        fs::read_to_string(runs.join("machine.a.log")).unwrap(),
        "booted\n"
    );

    let bad = script(&s, "bad.sh", "echo disk is not bootable >&2\nexit 7");
    let m = MachineSpec {
        machine: "machine.b".into(),
        boot: Some(vec![bad]),
        disks: BTreeMap::new(),
    };
    let e = p
        .start(&r, &m, Duration::from_secs(30))
        .unwrap_err()
        .to_string();
    assert!(e.contains("start failed for machine.b"), "{e}");
    assert!(e.contains("exit code 7"), "{e}");
    assert!(e.contains("disk is not bootable"), "{e}");
    assert!(!runs.join("machine.b.pid").exists());

    let m = MachineSpec {
        machine: "machine.c".into(),
        boot: Some(vec!["scripts/missing.sh".into()]),
        disks: BTreeMap::new(),
    };
    let e = p
        .start(&r, &m, Duration::from_secs(30))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot run \"scripts/missing.sh\""), "{e}");

    // No boot command: nothing runs.
    let m = MachineSpec {
        machine: "machine.d".into(),
        boot: None,
        disks: BTreeMap::new(),
    };
    p.start(&r, &m, Duration::from_secs(30)).unwrap();
    p.destroy(&r).unwrap();
}

#[test]
fn a_boot_that_backgrounds_its_service_is_tracked_by_its_group() {
    let s = sites();
    let p = LocalProvider::new();
    let r = run(&s, "t-3", Mode::Test);
    p.prepare(&r).unwrap();
    let daemon = script(&s, "daemon.sh", "sleep 60 &\necho $! > \"$PIDOUT\"\nexit 0");
    let pidout = s.dr.join(".standby-test/t-3/bg.pid");
    let mut m = MachineSpec {
        machine: "machine.svc".into(),
        boot: Some(vec![
            "env".into(),
            format!("PIDOUT={}", pidout.display()),
            daemon,
        ]),
        disks: BTreeMap::new(),
    };
    p.start(&r, &m, Duration::from_secs(30)).unwrap();
    assert!(
        s.dr.join(".standby-test/t-3/.runs/machine.svc.pid")
            .exists()
    );
    wait_for("the background pid", || {
        fs::read_to_string(&pidout).is_ok_and(|t| t.ends_with('\n'))
    });
    let bg = pid_in(&pidout);
    assert!(alive(bg));
    p.stop(&r, &m.machine).unwrap();
    wait_for("the background service to end", || !alive(bg));
    m.boot = None;
    p.destroy(&r).unwrap();
}

#[test]
fn stop_kills_a_machine_that_ignores_sigterm() {
    let s = sites();
    let p = LocalProvider::new().with_stop_grace(Duration::from_millis(300));
    let r = run(&s, "t-4", Mode::Test);
    p.prepare(&r).unwrap();
    let stubborn = script(&s, "stubborn.sh", "trap '' TERM\nwhile :; do sleep 1; done");
    let m = MachineSpec {
        machine: "machine.x".into(),
        boot: Some(vec![stubborn]),
        disks: BTreeMap::new(),
    };
    p.start(&r, &m, Duration::from_secs(30)).unwrap();
    let pid = pid_in(&s.dr.join(".standby-test/t-4/.runs/machine.x.pid"));
    p.stop(&r, "machine.x").unwrap();
    assert!(!alive(pid));
    p.destroy(&r).unwrap();
}

#[test]
fn stop_leaves_a_reused_pid_alone() {
    let s = sites();
    let p = LocalProvider::new();
    let r = run(&s, "t-5", Mode::Test);
    p.prepare(&r).unwrap();
    // A pid file naming a live process (this test) with another start time:
    // the machine it recorded is long gone and the pid was reused.
    let runs = s.dr.join(".standby-test/t-5/.runs");
    fs::create_dir_all(&runs).unwrap();
    let pid_file = runs.join("machine.old.pid");
    fs::write(&pid_file, format!("{} 1\n", std::process::id())).unwrap();
    p.stop(&r, "machine.old").unwrap();
    assert!(!pid_file.exists());
    p.destroy(&r).unwrap();
}

#[test]
fn command_checks_judge_exit_output_and_time() {
    let s = sites();
    let p = LocalProvider::new();
    let r = run(&s, "t-6", Mode::Test);
    p.prepare(&r).unwrap();
    let m = MachineSpec {
        machine: "machine.db".into(),
        boot: None,
        disks: BTreeMap::from([("data".to_string(), PathBuf::from("/x/data.img"))]),
    };
    let o = p
        .check(
            &r,
            &m,
            &check(
                &["sh", "-c", "echo \"$STANDBY_DISK_DATA\""],
                Some("/x/data.img"),
                Duration::from_secs(10),
            ),
        )
        .unwrap();
    assert!(o.passed, "{}", o.detail);

    let o = p
        .check(
            &r,
            &m,
            &check(
                &["sh", "-c", "echo 41"],
                Some("42"),
                Duration::from_secs(10),
            ),
        )
        .unwrap();
    assert!(!o.passed);
    assert!(
        o.detail.contains("expected output \"42\", got \"41\""),
        "{}",
        o.detail
    );

    let o = p
        .check(
            &r,
            &m,
            &check(
                &["sh", "-c", "echo integrity failed; exit 2"],
                None,
                Duration::from_secs(10),
            ),
        )
        .unwrap();
    assert!(!o.passed);
    assert!(o.detail.starts_with("exit code 2"), "{}", o.detail);
    assert!(o.detail.contains("integrity failed"), "{}", o.detail);

    let o = p
        .check(
            &r,
            &m,
            &check(
                &["sh", "-c", "echo started; sleep 60"],
                None,
                Duration::from_millis(300),
            ),
        )
        .unwrap();
    assert!(!o.passed);
    assert!(o.detail.contains("timed out after 300ms"), "{}", o.detail);
    assert!(o.detail.contains("started"), "{}", o.detail);

    let o = p
        .check(
            &r,
            &m,
            &check(&["no-such-command-here"], None, Duration::from_secs(10)),
        )
        .unwrap();
    assert!(!o.passed);
    assert!(o.detail.contains("could not run"), "{}", o.detail);
    p.destroy(&r).unwrap();
}

#[test]
fn a_site_without_a_root_is_a_clear_error() {
    let s = sites();
    let mut r = run(&s, "t-7", Mode::Test);
    r.site_root = None;
    let e = LocalProvider::new().prepare(&r).unwrap_err().to_string();
    assert!(e.contains("prepare failed for site.dr"), "{e}");
    assert!(e.contains("needs the site's root directory"), "{e}");
}

/// Run by `a_machine_started_by_one_process_is_stopped_by_another` in a
/// process of its own (this test binary again): starts a machine, exits.
#[test]
#[ignore = "a helper process for another test"]
fn helper_start_a_machine_and_exit() {
    let (Ok(dr), Ok(config)) = (
        std::env::var("LOCAL_TEST_HELPER_DR"),
        std::env::var("LOCAL_TEST_HELPER_CONFIG"),
    ) else {
        return;
    };
    let r = Run {
        run_id: "x-1".into(),
        mode: Mode::Failover,
        site: "site.dr".into(),
        site_root: Some(PathBuf::from(dr)),
        config_root: PathBuf::from(config),
        interrupt: Default::default(),
    };
    let p = LocalProvider::new();
    p.prepare(&r).unwrap();
    let m = MachineSpec {
        machine: "machine.db".into(),
        boot: Some(vec!["sleep".into(), "60".into()]),
        disks: BTreeMap::new(),
    };
    p.start(&r, &m, Duration::from_secs(30)).unwrap();
}

#[test]
fn a_machine_started_by_one_process_is_stopped_by_another() {
    let s = sites();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "helper_start_a_machine_and_exit"])
        .env("LOCAL_TEST_HELPER_DR", &s.dr)
        .env("LOCAL_TEST_HELPER_CONFIG", &s.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let runs = s.dr.join(".standby-runs/x-1");
    let pid = pid_in(&runs.join("machine.db.pid"));
    // The starter is gone; the machine runs on, no longer anyone's child here.
    assert!(alive(pid));
    let r = run(&s, "x-1", Mode::Failover);
    LocalProvider::new().stop(&r, "machine.db").unwrap();
    assert!(!alive(pid));
    assert!(!s.dr.join(".standby-runs").exists());
}
