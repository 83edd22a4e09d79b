//! A real VM: boot the test guest under the probed accelerator, talk QMP
//! and the guest agent, freeze and thaw through the agent's hook (the
//! writer's count recorded), find the VM again from another handle via the
//! pid file, and stop it cleanly.

mod common;

use std::time::{Duration, Instant};

use standby_provider_qemu::guest::{make_blank_disk, make_data_disk};
use standby_provider_qemu::vm::{DiskFormat, DiskSpec, Stopped, Vm, VmSpec};

#[test]
fn guest_boots_freezes_through_agent_and_stops_cleanly() {
    let g = common::guest();
    let accel = common::accel(&g);
    let dir = common::tempdir();
    let root = g
        .root_overlay(&dir.path().join("root.qcow2"), "root")
        .unwrap();
    let data_path = dir.path().join("data.qcow2");
    make_data_disk(&data_path, 64 << 20, DiskFormat::Qcow2).unwrap();
    let raw_path = dir.path().join("raw.img");
    make_blank_disk(&raw_path, 8 << 20, DiskFormat::Raw).unwrap();
    let spec = VmSpec {
        name: "app".into(),
        memory_mib: 256,
        cpus: 1,
        boot: g.boot(true),
        disks: vec![
            root,
            DiskSpec {
                node_name: "data".into(),
                path: data_path.clone(),
                format: DiskFormat::Qcow2,
                read_only: false,
            },
            DiskSpec {
                node_name: "scratch".into(),
                path: raw_path.clone(),
                format: DiskFormat::Raw,
                read_only: false,
            },
        ],
        accel: accel.accel,
        remote_qmp: None,
    };
    let t0 = Instant::now();
    let vm = Vm::start(&spec, dir.path()).unwrap();
    let _guard = common::KillOnDrop(vm.clone());
    // A second start of the same name is refused while it runs.
    let again = Vm::start(&spec, dir.path()).unwrap_err().to_string();
    assert!(again.contains("already running"), "{again}");

    let mut qmp = vm.qmp().unwrap();
    assert_eq!(qmp.status().unwrap(), "running");
    assert_eq!(qmp.version.0, 7, "the tests pin QEMU 7.2 (.ci/run)");
    let nodes = qmp.block_nodes().unwrap();
    let data = nodes
        .iter()
        .find(|n| n.node_name == "data")
        .expect("node 'data'");
    assert_eq!(data.image.as_ref().unwrap().virtual_size, 64 << 20);
    // A raw disk cannot carry a persistent bitmap: refused, saying why.
    let err = standby_provider_qemu::cbt::enable(&mut qmp, "scratch", 65536)
        .unwrap_err()
        .to_string();
    assert!(err.contains("scratch") && err.contains("qcow2"), "{err}");
    // A node that does not exist is named.
    let err = standby_provider_qemu::cbt::enable(&mut qmp, "nope", 65536)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");

    let mut agent = vm.agent(Duration::from_secs(120)).unwrap();
    let boot = t0.elapsed();
    eprintln!(
        "boot to guest agent: {:.2} s ({:?})",
        boot.as_secs_f64(),
        accel.accel
    );
    agent.ping().unwrap();

    // Wait for the writer's first commits.
    let count = |a: &mut standby_provider_qemu::qga::Agent| -> u64 {
        a.sh(
            "sqlite3 -cmd '.timeout 10000' /data/orders.db 'SELECT count(*) FROM orders'",
            Duration::from_secs(30),
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
    };
    let start = Instant::now();
    while count(&mut agent) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the writer never committed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let f0 = Instant::now();
    let frozen = agent.fsfreeze_freeze().unwrap();
    let froze_in = f0.elapsed();
    assert!(frozen >= 2, "root and /data frozen, got {frozen}");
    assert_eq!(agent.fsfreeze_status().unwrap(), "frozen");
    // While frozen the agent refuses guest-exec (it could block on the
    // frozen file systems).
    let refused = agent
        .sh("true", Duration::from_secs(10))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("frozen"), "{refused}");
    let t1 = Instant::now();
    assert_eq!(agent.fsfreeze_thaw().unwrap(), frozen);
    let window = f0.elapsed();
    eprintln!(
        "freeze call {:.0} ms, thaw {:.0} ms, window {:.0} ms",
        froze_in.as_secs_f64() * 1e3,
        t1.elapsed().as_secs_f64() * 1e3,
        window.as_secs_f64() * 1e3
    );
    // The hook paused the writer and recorded its count before the freeze.
    let recorded: u64 = agent
        .sh("cat /run/last-freeze-count", Duration::from_secs(10))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(recorded >= 3);
    // The writer resumes after the thaw.
    let start = Instant::now();
    while count(&mut agent) <= recorded {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the writer did not resume after thaw"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = agent
        .sh("cat /data/freezes.log", Duration::from_secs(10))
        .unwrap();
    assert_eq!(log.trim(), recorded.to_string());

    // Another "process" finds the VM by its pid file and stops it.
    drop(agent);
    drop(qmp);
    let found = Vm::open("app", dir.path())
        .unwrap()
        .expect("the VM is found by its pid file");
    assert_eq!((found.pid, found.start_time), (vm.pid, vm.start_time));
    let how = found.stop(Duration::from_secs(60)).unwrap();
    assert_eq!(how, Stopped::GuestAgent, "serial:\n{}", vm.serial());
    assert!(!vm.running());
    assert!(Vm::open("app", dir.path()).unwrap().is_none());
    assert!(vm.serial().contains("standby-guest: up"));

    // The data disk is clean after the guest's shutdown.
    let out = std::process::Command::new("qemu-img")
        .args(["check"])
        .arg(&data_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Firmware boot from the first disk: a hand-made boot sector that writes
/// "SB" to the first serial port and halts. SeaBIOS must find it on the
/// virtio disk; the console log shows it. (No guest kernel involved.)
#[test]
fn firmware_boots_the_first_disk() {
    common::require_tools();
    let dir = common::tempdir();
    let disk = dir.path().join("boot.raw");
    let mut sector = vec![
        0xBA, 0xF8, 0x03, // mov dx, 0x3f8
        0xB0, b'S', 0xEE, // mov al, 'S'; out dx, al
        0xB0, b'B', 0xEE, // mov al, 'B'; out dx, al
        0xB0, b'\n', 0xEE, // mov al, '\n'; out dx, al
        0xF4, 0xEB, 0xFD, // hlt; jmp back to hlt
    ];
    sector.resize(510, 0);
    sector.extend_from_slice(&[0x55, 0xAA]);
    sector.resize(1 << 20, 0);
    std::fs::write(&disk, &sector).unwrap();
    let spec = VmSpec {
        name: "fw".into(),
        memory_mib: 64,
        cpus: 1,
        boot: standby_provider_qemu::vm::Boot::Disk,
        disks: vec![DiskSpec {
            node_name: "boot".into(),
            path: disk,
            format: DiskFormat::Raw,
            read_only: true,
        }],
        accel: standby_provider_qemu::accel::Accel::Tcg,
        remote_qmp: None,
    };
    let vm = Vm::start(&spec, dir.path()).unwrap();
    let _guard = common::KillOnDrop(vm.clone());
    let start = Instant::now();
    while !vm.serial().contains("SB") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the boot sector never ran; console: {:?}",
            vm.serial()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // No agent in this guest: stop falls through to ACPI, then QMP quit.
    let how = vm.stop(Duration::from_secs(2)).unwrap();
    assert_eq!(how, Stopped::Quit);
    assert!(!vm.running());
}
