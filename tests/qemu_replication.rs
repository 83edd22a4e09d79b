//! Running QEMU VMs replicated through changed-block tracking, through the
//! real binary (`apply`, `replicate`, `points --json`, `restore`), on the
//! cached test guest (TCG) with its SQLite writer running.
//!
//! - `a_vm_point_chain_survives_kills_and_a_raw_restart`: one VM with a
//!   qcow2 system disk, a 4 GiB qcow2 data disk (the writer) and a raw
//!   scratch disk the test writes itself. App-consistent points through
//!   dirty extents only (bytes read <= 1.2x QEMU's dirty count + one
//!   cluster); SIGKILLs of `replicate` at random moments; then a point that
//!   must equal the guest's own scratch disk (its SHA-256 read in the guest
//!   at the freeze) and leave at most two bitmaps per disk; every point's
//!   data disk restores, passes `e2fsck -fn` and `PRAGMA integrity_check`
//!   and holds the order count the guest recorded at its freeze. Then the
//!   VM restarts: the raw disk's bitmap is gone, its next point falls back
//!   (reason shown, counted in `points --json`) and is still exact; the
//!   qcow2 disks' bitmaps survived the clean restart and stay dirty-only;
//!   those points come from `replicate --watch`, whose /metrics counts the
//!   fallback (`standby_cbt_fallbacks_total`).
//! - `a_consistency_group_of_two_vms_shares_one_instant_and_a_resize_falls_back`:
//!   two VMs in one group take one point: both app-consistent, one freeze
//!   window each, the spread between their snapshot instants reported. Then
//!   the database VM's data disk grows online (`block_resize`): its next
//!   point falls back, says so, and restores at the new size, consistent.
//! - `a_vm_on_a_remote_hypervisor_replicates_over_tls_and_a_wrong_ca_is_refused_by_name`:
//!   a VM whose QMP monitor and guest agent listen on TCP with TLS and
//!   whose points are exported over NBD with TLS (certificates the test
//!   makes): an app-consistent point restores to the guest's order count;
//!   a wrong CA for the monitor, then for the NBD server, is refused naming
//!   it, and the next point is complete. (`quickstart --qemu` is run by
//!   `tests/qemu_recovery.rs`.)
//!
//! `STANDBY_QEMU_POINTS=N` (CI 3; the issue's long form 20) and
//! `STANDBY_QEMU_KILLS=N` (CI 3; long form 20).

#[path = "../providers/qemu/tests/common/shared.rs"]
#[allow(dead_code)]
mod shared;
mod watch_support;

use standby_provider_qemu::guest::{self, Guest};
use standby_provider_qemu::qga::Agent;
use standby_provider_qemu::qmp::Qmp;
use standby_provider_qemu::vm::{DiskFormat, Vm};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn guest() -> Guest {
    shared::test_guest()
}

fn standby(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("STANDBY_LOG")
        .output()
        .expect("run standby")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = standby(dir, args);
    assert!(
        out.status.success(),
        "standby {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn points(dir: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(dir, &["points", "--json"])).expect("points --json")
}

/// Stops the VMs when the test ends, passing or failing.
struct Vms(Vec<Vm>);
impl Drop for Vms {
    fn drop(&mut self) {
        for v in &self.0 {
            let _ = v.kill();
        }
    }
}

fn start(dir: &Path, machine: &str) -> Vm {
    let cfg = standby::config::load(dir, &Default::default())
        .unwrap_or_else(|d| panic!("{}", d.render(false)))
        .config;
    let m = cfg
        .machines
        .values()
        .find(|m| m.addr.to_string() == machine)
        .expect("machine");
    let r = standby::operations::vms::start(&cfg, m).expect("start the VM");
    eprintln!("{machine}: accelerator {}", r.accel);
    r.vm
}

/// The guest agent of VM `name` (its chardev takes one client at a time:
/// drop it before standby needs the agent).
fn agent(d: &Path, name: &str) -> Agent {
    Agent::connect_unix(
        &d.join("hv1").join(format!("{name}.qga")),
        Duration::from_secs(120),
    )
    .unwrap()
}

/// Waits until the guest's file systems are thawed (fails after 60 s).
fn await_thawed(d: &Path, name: &str) {
    let start = Instant::now();
    loop {
        let s = agent(d, name).fsfreeze_status().unwrap();
        if s == "thawed" {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the guest stayed {s} after replicate was killed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sh(agent: &mut Agent, script: &str) -> String {
    agent
        .sh(script, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("guest: {script}: {e}"))
        .trim()
        .to_string()
}

fn orders(agent: &mut Agent) -> u64 {
    sh(
        agent,
        "sqlite3 -cmd '.timeout 10000' /data/orders.db 'SELECT count(*) FROM orders' 2>/dev/null || echo 0",
    )
    .parse()
    .unwrap_or(0)
}

/// Waits until the writer has committed more than `n` orders.
fn await_orders(agent: &mut Agent, n: u64) {
    let start = Instant::now();
    while orders(agent) <= n {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the writer is stuck"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes `n` random 4 KiB blocks at random places of the scratch disk
/// (`/dev/vdc`), synced to the disk.
fn scribble(agent: &mut Agent, n: usize) {
    let mut script = String::new();
    for _ in 0..n {
        let block = rand::random::<u32>() % 8192; // 32 MiB / 4 KiB
        script.push_str(&format!(
            "dd if=/dev/urandom of=/dev/vdc bs=4096 count=1 seek={block} conv=notrunc,fsync 2>/dev/null; "
        ));
    }
    sh(agent, &script);
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn config(g: &Guest, machines: &[(&str, bool)], group: Option<&str>) -> String {
    let mut s = format!(
        r#"vault "main" {{
  url = "file://.standby/vault"
}}

site "hv1" {{
  provider = "qemu"
  root     = "hv1"
}}

site "dr" {{
  provider = "local"
  root     = "dr"
}}

policy "app" {{
  rpo_threshold          = "15m"
  crash_consistent_every = "3s" # `replicate --watch` below
  app_consistent_every   = "3s"
  retention              = "30d"
}}

locals {{
  kernel = "{kernel}"
  initrd = "{initrd}"
}}
"#,
        kernel = g.kernel.display(),
        initrd = g.initrd.display()
    );
    for (name, scratch) in machines {
        let scratch = if *scratch {
            format!(
                "  disk \"scratch\" {{\n    path   = \"{name}/scratch.img\"\n    format = \"raw\"\n  }}\n"
            )
        } else {
            String::new()
        };
        let group = group
            .map(|g| format!("  consistency_group = \"{g}\"\n"))
            .unwrap_or_default();
        s.push_str(&format!(
            r#"
machine "{name}" {{
  site = site.hv1
  vm {{
    memory = "256M"
    kernel = local.kernel
    initrd = local.initrd
    append = "console=ttyS0 quiet panic=-1 standby.writer=1"
  }}
  disk "system" {{ path = "{name}/system.qcow2" }}
  disk "data" {{ path = "{name}/data.qcow2" }}
{scratch}}}

protection "{name}" {{
  machine = machine.{name}
  target  = site.dr
  vault   = vault.main
  policy  = policy.app
{group}}}
"#
        ));
    }
    s
}

fn make_disks(g: &Guest, site: &Path, name: &str, data_size: u64, scratch: bool) {
    let d = site.join(name);
    std::fs::create_dir_all(&d).unwrap();
    g.root_overlay(&d.join("system.qcow2"), "system").unwrap();
    guest::make_data_disk(&d.join("data.qcow2"), data_size, DiskFormat::Qcow2).unwrap();
    if scratch {
        guest::make_blank_disk(&d.join("scratch.img"), 32 << 20, DiskFormat::Raw).unwrap();
    }
}

/// Bitmaps of ours per disk node of the VM.
fn bitmap_counts(vm: &Vm, nodes: &[&str]) -> Vec<usize> {
    let mut qmp =
        Qmp::connect_unix(&Vm::qmp_path(&vm.dir, &vm.name), Duration::from_secs(10)).unwrap();
    nodes
        .iter()
        .map(|n| {
            standby_provider_qemu::cbt::bitmaps(&mut qmp, n)
                .unwrap()
                .len()
        })
        .collect()
}

/// `standby restore ID --disk DISK --to TO` (plus `extra`), which must pass.
fn restore(dir: &Path, id: &str, disk: &str, to: &Path, extra: &[&str]) {
    let mut args = vec!["restore", id, "--disk", disk, "--to", to.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(dir, &args);
}

fn last_cbt(dir: &Path, machine: &str) -> serde_json::Value {
    let ps = points(dir);
    ps.iter()
        .rev()
        .find(|p| p["machine"] == machine)
        .expect("a point")
        .clone()
}

#[test]
fn a_vm_point_chain_survives_kills_and_a_raw_restart() {
    let g = guest();
    let dir = tempfile::Builder::new()
        .prefix("sbqr")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    std::fs::write(d.join("main.hcl"), config(&g, &[("db", true)], None)).unwrap();
    make_disks(&g, &d.join("hv1"), "db", 4 * GIB, true);
    let mut vms = Vms(vec![start(d, "machine.db")]);
    await_orders(&mut agent(d, "db"), 0);

    // (point id, order count at its freeze)
    let mut taken: Vec<(String, u64)> = Vec::new();
    let record = |taken: &mut Vec<(String, u64)>| {
        let p = last_cbt(d, "machine.db");
        let count: u64 = sh(&mut agent(d, "db"), "cat /run/last-freeze-count")
            .parse()
            .unwrap();
        taken.push((p["id"].as_str().unwrap().to_string(), count));
        p
    };

    // The first point comes with apply: every allocated extent.
    ok(d, &["apply", "--auto-approve"]);
    let p = record(&mut taken);
    assert_eq!(p["consistency"], "app", "{p}");
    assert_eq!(p["cbt"]["disks"]["data"]["mode"], "full", "{p}");

    let n = env_n("STANDBY_QEMU_POINTS", 3);
    for _ in 0..n {
        {
            let mut a = agent(d, "db");
            let before = orders(&mut a);
            await_orders(&mut a, before);
            scribble(&mut a, 4);
        }
        let out = ok(d, &["replicate"]);
        assert!(out.contains("changed-block tracking"), "{out}");
        let p = record(&mut taken);
        for disk in ["system", "data", "scratch"] {
            let c = &p["cbt"]["disks"][disk];
            assert_eq!(c["mode"], "dirty", "{disk}: {p}");
            let (read, dirty) = (
                c["read_bytes"].as_u64().unwrap(),
                c["dirty_bytes"].as_u64().unwrap(),
            );
            assert!(
                read as f64 <= 1.2 * dirty as f64 + 65536.0,
                "{disk}: read {read} bytes for {dirty} dirty"
            );
        }
        assert!(p["cbt"]["disks"]["data"]["dirty_bytes"].as_u64().unwrap() > 0);
        assert!(p["freeze_ms"].as_u64().is_some(), "{p}");
    }

    // SIGKILL `replicate` at random moments while the guest writes: every
    // other one inside the point (after its view opened, before commit).
    let kills = env_n("STANDBY_QEMU_KILLS", 3);
    let sock = d.join("hv1/.standby-cbt/db/nbd.sock");
    for round in 0..kills {
        scribble(&mut agent(d, "db"), 3);
        // A killed point leaves its socket file; the next export replaces it.
        let _ = std::fs::remove_file(&sock);
        let mut child = Command::new(env!("CARGO_BIN_EXE_standby"))
            .arg("replicate")
            .current_dir(d)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if round % 2 == 0 {
            std::thread::sleep(Duration::from_millis(u64::from(
                rand::random::<u16>() % 2500,
            )));
        } else {
            // Inside the point: once its point-in-time view is exported
            // (after the transaction that started the next bitmap
            // generation), before that generation is committed.
            let start = Instant::now();
            while !sock.exists() && start.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(u64::from(
                rand::random::<u16>() % 150,
            )));
        }
        let _ = child.kill();
        let _ = child.wait();
        // A kill inside the freeze must not leave the guest frozen: the
        // point's thaw guard thaws it once the killed process is gone.
        await_thawed(d, "db");
    }
    // The next point after the kills holds every change: its scratch disk
    // equals the guest's own at the freeze (nothing else writes to it).
    let expected = {
        let mut a = agent(d, "db");
        scribble(&mut a, 5);
        sh(&mut a, "sync; sha256sum /dev/vdc | cut -d' ' -f1")
    };
    ok(d, &["replicate"]);
    let p = record(&mut taken);
    let got = d.join("scratch.after-kills");
    let id = p["id"].as_str().unwrap();
    restore(d, id, "scratch", &got, &[]);
    assert_eq!(
        sha256(&got),
        expected,
        "the point after the kills misses a change"
    );
    let nodes = ["system", "data", "scratch"];
    for (node, n) in nodes.iter().zip(bitmap_counts(&vms.0[0], &nodes)) {
        assert!(n <= 2, "{node}: {n} bitmaps remain");
    }

    // Every point's data disk restores to a consistent database holding
    // the count at its freeze.
    for (id, count) in &taken {
        let img = d.join(format!("data-{id}.img"));
        restore(d, id, "data", &img, &[]);
        assert_eq!(shared::check_database_image(&img), *count, "point {id}");
        std::fs::remove_file(&img).unwrap();
    }

    // A clean restart: the raw scratch disk's bitmap lived only in QEMU,
    // so its next point falls back (and says why); the qcow2 disks keep
    // their stored bitmaps.
    vms.0[0].stop(Duration::from_secs(60)).unwrap();
    vms.0[0] = start(d, "machine.db");
    let expected = {
        let mut a = agent(d, "db");
        await_orders(&mut a, 0);
        scribble(&mut a, 2);
        sh(&mut a, "sync; sha256sum /dev/vdc | cut -d' ' -f1")
    };
    // This time the continuous service takes the points: the fallback is
    // counted in its /metrics.
    let before = points(d).len();
    let port = watch_support::free_port();
    let mut watch = watch_support::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_standby"))
            .args(["replicate", "--watch", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(d)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let body = watch_support::wait_for("a fallback in /metrics", Duration::from_secs(180), || {
        let (_, body) = watch_support::http_get(port, "/metrics")?;
        let n = watch_support::metric(&body, "standby_cbt_fallbacks_total", "protection.db")?;
        (n >= 1.0).then_some(body)
    });
    assert!(
        body.contains("# TYPE standby_cbt_fallbacks_total counter"),
        "{body}"
    );
    watch_support::terminate(&mut watch.0, Duration::from_secs(120));
    let ps = points(d);
    let after: Vec<&serde_json::Value> = ps
        .iter()
        .filter(|p| p["machine"] == "machine.db")
        .skip(before)
        .collect();
    let fell = after
        .iter()
        .find(|p| p["cbt"]["disks"]["scratch"]["mode"] == "fallback")
        .expect("a point after the restart fell back");
    assert_eq!(
        fell["cbt"]["disks"]["scratch"]["reason"]
            .as_str()
            .unwrap_or("")
            .split(' ')
            .take(3)
            .collect::<Vec<_>>(),
        ["no", "tracking", "bitmap"],
        "{fell}"
    );
    assert_eq!(fell["cbt_fallbacks"], 1, "{fell}");
    assert_eq!(fell["cbt"]["disks"]["data"]["mode"], "dirty", "{fell}");
    // Nothing wrote the scratch disk since: the newest point equals it too.
    let p = last_cbt(d, "machine.db");
    let id = p["id"].as_str().unwrap();
    let got = d.join("scratch.after-restart");
    restore(d, id, "scratch", &got, &[]);
    assert_eq!(sha256(&got), expected);
    let img = d.join("data.after-restart");
    restore(d, id, "data", &img, &[]);
    // The service may have frozen once more for a point SIGTERM then
    // abandoned: the count must be one the guest recorded at a freeze.
    let count = shared::check_database_image(&img);
    let log = sh(&mut agent(d, "db"), "cat /data/freezes.log");
    assert!(
        log.lines().any(|l| l.trim() == count.to_string()),
        "{count} is not a freeze count of the guest: {log}"
    );
}

#[test]
fn a_consistency_group_of_two_vms_shares_one_instant_and_a_resize_falls_back() {
    let g = guest();
    let dir = tempfile::Builder::new()
        .prefix("sbqg")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("main.hcl"),
        config(&g, &[("app", false), ("db", false)], Some("shop")),
    )
    .unwrap();
    for name in ["app", "db"] {
        make_disks(&g, &d.join("hv1"), name, 256 << 20, false);
    }
    let _vms = Vms(vec![start(d, "machine.app"), start(d, "machine.db")]);
    for name in ["app", "db"] {
        await_orders(&mut agent(d, name), 0);
    }
    let out = ok(d, &["apply", "--auto-approve"]);
    let ps = points(d);
    assert_eq!(ps.len(), 2, "{out}");
    for p in &ps {
        assert_eq!(p["group"], "shop", "{p}");
        assert_eq!(p["consistency"], "app", "{p}");
        assert_eq!(p["created"], ps[0]["created"], "one point instant");
        let c = &p["cbt"];
        assert_eq!(c["group_vms"], 2, "{p}");
        assert!(c["spread_ms"].as_f64().is_some(), "{p}");
        assert!(c["freeze_call_ms"].as_f64().is_some(), "{p}");
        assert!(p["freeze_ms"].as_u64().is_some(), "{p}");
    }

    // The database VM's data disk grows while it runs: its next point
    // cannot trust the bitmap's extents and reads the whole disk.
    let db = &_vms.0[1];
    {
        let mut qmp =
            Qmp::connect_unix(&Vm::qmp_path(&db.dir, &db.name), Duration::from_secs(10)).unwrap();
        qmp.execute_value(
            "block_resize",
            serde_json::json!({ "node-name": "data", "size": (256u64 + 64) << 20 }),
        )
        .unwrap();
    }
    let out = ok(d, &["replicate"]);
    assert!(
        out.contains("disk data: fallback to a whole read (the disk was resized from 268435456 to 335544320 bytes)"),
        "{out}"
    );
    let p = last_cbt(d, "machine.db");
    assert_eq!(p["cbt"]["disks"]["data"]["mode"], "fallback", "{p}");
    assert_eq!(p["disks"]["data"]["size"], 335544320u64, "{p}");
    let img = d.join("db-data.img");
    restore(d, p["id"].as_str().unwrap(), "data", &img, &[]);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 335544320);
    let count = shared::check_database_image(&img);
    let log = sh(&mut agent(d, "db"), "cat /data/freezes.log");
    assert!(log.lines().any(|l| l.trim() == count.to_string()), "{log}");
}

#[test]
fn a_vm_on_a_remote_hypervisor_replicates_over_tls_and_a_wrong_ca_is_refused_by_name() {
    // The VM's QMP monitor and guest agent listen on TCP with TLS (QEMU's
    // tls-creds-x509), and its points are exported over NBD with TLS: all
    // that standby needs from a hypervisor on another host, here on
    // loopback with certificates the test makes.
    let g = guest();
    let dir = tempfile::Builder::new()
        .prefix("sbqt")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    let site = d.join("hv1");
    shared::make_pki(&site.join("pki"));
    let (qmp_port, agent_port, nbd_port) = (
        watch_support::free_port(),
        watch_support::free_port(),
        watch_support::free_port(),
    );
    let (qmp_addr, agent_addr) = (
        format!("127.0.0.1:{qmp_port}"),
        format!("127.0.0.1:{agent_port}"),
    );
    let hcl = |tls_ca: &str, export_ca: &str, client: &str| {
        format!(
            r#"vault "main" {{
  url = "file://.standby/vault"
}}
site "hv1" {{
  provider = "qemu"
  root     = "hv1"
}}
site "dr" {{
  provider = "local"
  root     = "dr"
}}
policy "app" {{
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  app_consistent_every   = "5m"
  retention              = "30d"
}}
machine "db" {{
  site = site.hv1
  vm {{
    qmp      = "tcp://{qmp_addr}"
    agent    = "tcp://{agent_addr}"
    work_dir = "{work}"
    tls {{
      ca = "pki/{tls_ca}"
    }}
    export_tls {{
      listen    = "127.0.0.1:{nbd_port}"
      creds_dir = "pki"
      ca        = "pki/{export_ca}"
      cert      = "pki/{client}-cert.pem"
      key       = "pki/{client}-key.pem"
    }}
  }}
  disk "system" {{ path = "db/system.qcow2" }}
  disk "data" {{ path = "db/data.qcow2" }}
}}
protection "db" {{
  machine = machine.db
  target  = site.dr
  vault   = vault.main
  policy  = policy.app
}}
"#,
            work = site.join("work").display()
        )
    };
    std::fs::write(
        d.join("main.hcl"),
        hcl("ca-cert.pem", "ca-cert.pem", "client"),
    )
    .unwrap();
    // On a real remote host, a directory the hypervisor's admin made.
    std::fs::create_dir_all(site.join("work")).unwrap();
    let disks = site.join("db");
    std::fs::create_dir_all(&disks).unwrap();
    let system = g
        .root_overlay(&disks.join("system.qcow2"), "system")
        .unwrap();
    guest::make_data_disk(&disks.join("data.qcow2"), 256 << 20, DiskFormat::Qcow2).unwrap();
    let spec = standby_provider_qemu::vm::VmSpec {
        name: "db".into(),
        memory_mib: 256,
        cpus: 1,
        boot: g.boot(true),
        disks: vec![
            system,
            standby_provider_qemu::vm::DiskSpec {
                node_name: "data".into(),
                path: disks.join("data.qcow2"),
                format: DiskFormat::Qcow2,
                read_only: false,
            },
        ],
        accel: standby_provider_qemu::accel::probe(&g.kernel).accel,
        remote_qmp: Some(standby_provider_qemu::vm::RemoteQmp {
            listen: qmp_addr.clone(),
            agent_listen: Some(agent_addr.clone()),
            creds_dir: site.join("pki"),
            verify_peer: false,
        }),
    };
    let _vms = Vms(vec![Vm::start(&spec, &site).unwrap()]);
    let tls = standby_provider_qemu::tls::TlsConfig {
        ca: site.join("pki/ca-cert.pem"),
        server_name: "127.0.0.1".into(),
        client: None,
    };
    // The agent's chardev takes one client: the test's is dropped before
    // standby connects.
    let remote_agent = || Agent::connect_tls(&agent_addr, &tls, Duration::from_secs(120)).unwrap();
    await_orders(&mut remote_agent(), 0);
    ok(d, &["apply", "--auto-approve"]);
    {
        let mut a = remote_agent();
        let n = orders(&mut a);
        await_orders(&mut a, n + 5);
    }
    let out = ok(d, &["replicate"]);
    assert!(out.contains("disk data: changed-block tracking"), "{out}");
    assert!(
        out.contains("(app"),
        "an app-consistent point through the TLS agent: {out}"
    );
    let p = last_cbt(d, "machine.db");
    let img = d.join("db-data.img");
    restore(d, p["id"].as_str().unwrap(), "data", &img, &[]);
    let count: u64 = sh(&mut remote_agent(), "cat /run/last-freeze-count")
        .parse()
        .unwrap();
    assert_eq!(shared::check_database_image(&img), count);

    // Verified against another CA, the monitor's certificate (then the NBD
    // server's) is refused, naming the reason and the CA file; no point is
    // taken and nothing is lost.
    for (tls_ca, export_ca) in [
        ("other-ca.pem", "ca-cert.pem"),
        ("ca-cert.pem", "other-ca.pem"),
    ] {
        std::fs::write(d.join("main.hcl"), hcl(tls_ca, export_ca, "client")).unwrap();
        let before = points(d).len();
        let out = standby(d, &["replicate"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("UnknownIssuer") && err.contains("other-ca.pem"),
            "{err}"
        );
        assert_eq!(points(d).len(), before);
    }
    // The export verifies standby too (verify-peer=on): a client
    // certificate of another CA reads nothing.
    std::fs::write(
        d.join("main.hcl"),
        hcl("ca-cert.pem", "ca-cert.pem", "other-client"),
    )
    .unwrap();
    let before = points(d).len();
    let out = standby(d, &["replicate"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refused this client's certificate") && err.contains("other-client-cert.pem"),
        "{err}"
    );
    assert_eq!(points(d).len(), before);
    // The refused point merged its bitmap generation back: the next one is
    // dirty-only again and complete.
    std::fs::write(
        d.join("main.hcl"),
        hcl("ca-cert.pem", "ca-cert.pem", "client"),
    )
    .unwrap();
    {
        let mut a = remote_agent();
        let n = orders(&mut a);
        await_orders(&mut a, n + 3);
    }
    let out = ok(d, &["replicate"]);
    assert!(out.contains("disk data: changed-block tracking"), "{out}");
    let p = last_cbt(d, "machine.db");
    restore(d, p["id"].as_str().unwrap(), "data", &img, &["--force"]);
    let count: u64 = sh(&mut remote_agent(), "cat /run/last-freeze-count")
        .parse()
        .unwrap();
    assert_eq!(shared::check_database_image(&img), count);
}
