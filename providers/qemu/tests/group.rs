//! A consistency group of two VMs takes one point: every guest frozen
//! before the first snapshot transaction, every transaction done before the
//! first thaw; the report carries the freeze window and the spread between
//! the VMs' snapshot instants; each VM's point, restored, is consistent
//! with the order count its own freeze hook recorded.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use standby_provider_qemu::cbt::{self, Change, Member};
use standby_provider_qemu::guest::make_data_disk;
use standby_provider_qemu::source::DiskSource;
use standby_provider_qemu::vm::{DiskFormat, DiskSpec, Vm, VmSpec};

#[test]
fn two_vms_one_point_freezes_then_snapshots_then_thaws() {
    let g = common::guest();
    let accel = common::accel(&g);
    let dir = common::tempdir();
    let mut vms = Vec::new();
    for name in ["app", "db"] {
        let vdir = dir.path().join(name);
        std::fs::create_dir_all(&vdir).unwrap();
        let root = g.root_overlay(&vdir.join("root.qcow2"), "root").unwrap();
        let data = vdir.join("data.qcow2");
        make_data_disk(&data, 128 << 20, DiskFormat::Qcow2).unwrap();
        let spec = VmSpec {
            name: name.into(),
            memory_mib: 256,
            cpus: 1,
            boot: g.boot(true),
            disks: vec![
                root,
                DiskSpec {
                    node_name: "data".into(),
                    path: data,
                    format: DiskFormat::Qcow2,
                    read_only: false,
                },
            ],
            accel: accel.accel,
            remote_qmp: None,
        };
        // Both boot at once.
        let vm = Vm::start(&spec, &vdir).unwrap();
        vms.push((common::KillOnDrop(vm.clone()), vm, vdir));
    }
    let mut conns = Vec::new();
    for (_, vm, _) in &vms {
        let mut qmp = vm.qmp().unwrap();
        let mut agent = vm.agent(Duration::from_secs(120)).unwrap();
        cbt::enable(&mut qmp, "data", cbt::DEFAULT_GRANULARITY).unwrap();
        let start = std::time::Instant::now();
        while agent
            .sh(
                "sqlite3 -cmd '.timeout 10000' /data/orders.db 'SELECT count(*) FROM orders' 2>/dev/null || echo 0",
                Duration::from_secs(30),
            )
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
            < 2
        {
            assert!(start.elapsed() < Duration::from_secs(90), "writer stuck");
            std::thread::sleep(Duration::from_millis(100));
        }
        conns.push((qmp, agent));
    }

    let mut members: Vec<Member<'_>> = conns
        .iter_mut()
        .zip(&vms)
        .map(|((q, a), (_, _, vdir))| Member {
            qmp: q,
            agent: Some(a),
            nodes: vec!["data".into()],
            dir: vdir.clone(),
            at: cbt::ExportAt::Unix,
        })
        .collect();
    let gp = cbt::begin_group(&mut members).unwrap();
    drop(members);
    let last_freeze = gp.last_freeze_done.expect("agents froze");
    let first_thaw = gp.first_thaw.expect("agents thawed");
    assert!(
        last_freeze <= gp.first_transaction,
        "all freezes before any snapshot"
    );
    assert!(
        gp.last_transaction_done <= first_thaw,
        "all snapshots before any thaw"
    );
    let window = gp.window.unwrap();
    assert!(
        gp.spread < window,
        "the snapshot instants lie inside the freeze window"
    );
    eprintln!(
        "group point: freeze window {:.0} ms, spread {:.1} ms, per VM {:?}",
        window.as_secs_f64() * 1e3,
        gp.spread.as_secs_f64() * 1e3,
        gp.points
            .iter()
            .map(|p| (
                p.freeze.unwrap().window.as_millis(),
                p.freeze.unwrap().transaction.as_micros()
            ))
            .collect::<Vec<_>>()
    );

    for (i, p) in gp.points.into_iter().enumerate() {
        let img = vms[i].2.join("restored.raw");
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        f.set_len(128 << 20).unwrap();
        let mut src = DiskSource::open(&p, &p.disks[0], true).unwrap();
        for r in src.ranges().to_vec() {
            assert_eq!(r.change, Change::Data);
            let mut buf = vec![0u8; r.length as usize];
            src.read_at(&mut buf, r.offset).unwrap();
            f.write_all_at(&buf, r.offset).unwrap();
        }
        src.close().unwrap();
        cbt::finish(&mut conns[i].0, p, true).unwrap();
        drop(f);
        common::shared::check_database_image(&img);
        assert_eq!(conns[i].1.fsfreeze_status().unwrap(), "thawed");
    }
}
