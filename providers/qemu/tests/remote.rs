//! A VM on a "remote" hypervisor (loopback TCP, certificates the test
//! makes): the point's view exported by QEMU's own NBD server over TLS, an
//! app-consistent full point and a dirty-only point read through it and
//! rebuilt into a database image that checks out, with QMP and the guest
//! agent on TLS chardevs too; QEMU's TLS QMP port, agent port and NBD
//! server refuse a client holding another CA, by name.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use standby_provider_qemu::cbt::{self, Change, ExportAt, Member};
use standby_provider_qemu::guest::make_data_disk;
use standby_provider_qemu::qmp::Qmp;
use standby_provider_qemu::source::DiskSource;
use standby_provider_qemu::tls::TlsConfig;
use standby_provider_qemu::vm::{DiskFormat, DiskSpec, RemoteQmp, TLS_CREDS_ID, Vm, VmSpec};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn point_exports_over_tls_and_unknown_ca_refused() {
    let g = common::guest();
    let accel = common::accel(&g);
    let dir = common::tempdir();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    common::shared::make_pki(&pki);
    let root = g
        .root_overlay(&dir.path().join("root.qcow2"), "root")
        .unwrap();
    let data = dir.path().join("data.qcow2");
    make_data_disk(&data, 128 << 20, DiskFormat::Qcow2).unwrap();
    let qmp_addr = format!("127.0.0.1:{}", free_port());
    let agent_addr = format!("127.0.0.1:{}", free_port());
    let spec = VmSpec {
        name: "db".into(),
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
        remote_qmp: Some(RemoteQmp {
            listen: qmp_addr.clone(),
            agent_listen: Some(agent_addr.clone()),
            creds_dir: pki.clone(),
            verify_peer: false,
        }),
    };
    let vm = Vm::start(&spec, dir.path()).unwrap();
    let _guard = common::KillOnDrop(vm.clone());
    let good = TlsConfig {
        ca: pki.join("ca-cert.pem"),
        server_name: "127.0.0.1".into(),
        client: None,
    };
    let other = TlsConfig {
        ca: pki.join("other-ca.pem"),
        ..good.clone()
    };
    let err = match Qmp::connect_tls(&qmp_addr, &other) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("QMP accepted under an unknown CA"),
    };
    assert!(
        err.contains("UnknownIssuer") && err.contains("other-ca.pem") && err.contains(&qmp_addr),
        "{err}"
    );

    let err = match standby_provider_qemu::qga::Agent::connect_tls(
        &agent_addr,
        &other,
        Duration::from_secs(5),
    ) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the guest agent accepted under an unknown CA"),
    };
    assert!(
        err.contains("UnknownIssuer") && err.contains("other-ca.pem"),
        "{err}"
    );
    // A refused client leaves the chardevs free for the right one.
    // Everything below goes over TLS: QMP on its TCP port, the guest
    // agent on its, the point's view over NBD.
    let mut qmp = Qmp::connect_tls(&qmp_addr, &good).unwrap();
    assert_eq!(qmp.status().unwrap(), "running");
    let mut agent = standby_provider_qemu::qga::Agent::connect_tls(
        &agent_addr,
        &good,
        Duration::from_secs(120),
    )
    .unwrap();

    cbt::enable(&mut qmp, "data", cbt::DEFAULT_GRANULARITY).unwrap();
    let orders = |agent: &mut standby_provider_qemu::qga::Agent| -> u64 {
        agent
            .sh(
                "sqlite3 -cmd '.timeout 10000' /data/orders.db 'SELECT count(*) FROM orders'",
                Duration::from_secs(30),
            )
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let start = Instant::now();
    while orders(&mut agent) < 2 {
        assert!(start.elapsed() < Duration::from_secs(90), "writer stuck");
        std::thread::sleep(Duration::from_millis(100));
    }

    let img = dir.path().join("restored.raw");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    f.set_len(128 << 20).unwrap();
    let nbd_port = free_port();
    let mut last = 0;
    for full in [true, false] {
        let mut members = [Member {
            qmp: &mut qmp,
            agent: Some(&mut agent),
            nodes: vec!["data".into()],
            dir: dir.path().to_path_buf(),
            at: ExportAt::Tls {
                host: "127.0.0.1".into(),
                port: nbd_port,
                creds: TLS_CREDS_ID.into(),
                client: good.clone(),
            },
        }];
        let mut gp = cbt::begin_group(&mut members).unwrap();
        let p = gp.points.pop().unwrap();
        if full {
            let wrong = standby_provider_qemu::nbd::Client::connect(
                standby_provider_qemu::nbd::Address::Tls(&format!("127.0.0.1:{nbd_port}"), &other),
                "data",
                &[],
            );
            let err = match wrong {
                Err(e) => e.to_string(),
                Ok(_) => panic!("the export accepted a client under an unknown CA"),
            };
            assert!(err.contains("UnknownIssuer"), "{err}");
        }
        let mut src = DiskSource::open(&p, &p.disks[0], full).unwrap();
        let mut read = 0;
        for r in src.ranges().to_vec() {
            let mut buf = vec![0u8; r.length as usize];
            if r.change == Change::Data {
                src.read_at(&mut buf, r.offset).unwrap();
                read += r.length;
            }
            f.write_all_at(&buf, r.offset).unwrap();
        }
        if !full {
            assert!(read <= src.dirty_bytes());
        }
        src.close().unwrap();
        cbt::finish(&mut qmp, p, true).unwrap();
        let count = common::shared::check_database_image(&img);
        assert!(count >= last);
        last = count;
        let start = Instant::now();
        while orders(&mut agent) <= last {
            assert!(start.elapsed() < Duration::from_secs(90), "writer stuck");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(agent);
    vm.stop(Duration::from_secs(60)).unwrap();
}
