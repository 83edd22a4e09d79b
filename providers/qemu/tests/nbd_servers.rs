//! The NBD client against real servers: `qemu-nbd` (qcow2 with a persistent
//! dirty bitmap, over a unix socket and over TCP) and `nbdkit` (`data` and
//! `memory`). Extents are compared with `nbdinfo --map`, bytes with what
//! was written. (QEMU's own export is covered by tests/cbt.rs.)

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use standby_provider_qemu::nbd::{Address, Client, Extent};
use standby_provider_qemu::tls::TlsConfig;

/// A server process killed when the test ends.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Server {
    Server(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the NBD server"),
    )
}

/// Connects once the server listens.
fn connect(addr: Address<'_>, export: &str, contexts: &[&str]) -> Client {
    let start = Instant::now();
    loop {
        match Client::connect(addr.clone(), export, contexts) {
            Ok(c) => return c,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connecting: {e}"),
        }
    }
}

/// `nbdinfo --map=CONTEXT --json URI` as extents (adjacent equal runs merged).
fn nbdinfo_map(uri: &str, context: &str) -> Vec<Extent> {
    let out = Command::new("nbdinfo")
        .arg(format!("--map={context}"))
        .args(["--json", uri])
        .output()
        .expect("running nbdinfo (.ci/run installs libnbd-bin)");
    assert!(
        out.status.success(),
        "nbdinfo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ext: Vec<Extent> = Vec::new();
    for e in v.as_array().unwrap() {
        let x = Extent {
            offset: e["offset"].as_u64().unwrap(),
            length: e["length"].as_u64().unwrap(),
            flags: e["type"].as_u64().unwrap() as u32,
        };
        match ext.last_mut() {
            Some(l) if l.flags == x.flags && l.offset + l.length == x.offset => {
                l.length += x.length
            }
            _ => ext.push(x),
        }
    }
    ext
}

fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "qcow2"]);
    for x in cmds {
        c.args(["-c", x]);
    }
    let out = c.arg(img).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-io: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn qemu_nbd_extents_bitmap_and_reads_over_unix_and_tcp() {
    common::require_tools();
    let dir = common::tempdir();
    let img = dir.path().join("d.qcow2");
    assert!(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&img)
            .arg("16M")
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("qemu-img")
            .args(["bitmap", "--add", "--granularity", "65536"])
            .arg(&img)
            .arg("b0")
            .status()
            .unwrap()
            .success()
    );
    // Writes the bitmap records: a full cluster, a small write inside one,
    // one straddling two granules, explicit zeros.
    qemu_io(
        &img,
        &[
            "write -P 0xab 1M 64k",
            "write -P 0x01 5000 100",
            "write -P 0x02 4132864 131072",
            "write -z 12M 64k",
        ],
    );

    let sock = dir.path().join("n.sock");
    let _srv = spawn(
        Command::new("qemu-nbd")
            .args(["-t", "-r", "-e", "4", "-f", "qcow2", "-B", "b0", "-k"])
            .arg(&sock)
            .arg(&img),
    );
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    let mut c = connect(
        Address::Unix(&sock),
        "",
        &["base:allocation", "qemu:dirty-bitmap:b0"],
    );
    assert_eq!(c.size, 16 << 20);
    assert_ne!(c.flags & standby_provider_qemu::nbd::TFLAG_READ_ONLY, 0);

    let alloc = c.block_status("base:allocation", 0, c.size).unwrap();
    assert_eq!(alloc, nbdinfo_map(&uri, "base:allocation"));
    let dirty = c.block_status("qemu:dirty-bitmap:b0", 0, c.size).unwrap();
    assert_eq!(dirty, nbdinfo_map(&uri, "qemu:dirty-bitmap:b0"));
    let dirty_ranges: Vec<(u64, u64)> = dirty
        .iter()
        .filter(|e| e.flags == 1)
        .map(|e| (e.offset, e.length))
        .collect();
    assert_eq!(
        dirty_ranges,
        vec![
            (0, 65536),
            (1 << 20, 65536),
            (4128768, 196608),
            (12 << 20, 65536)
        ],
        "the bitmap's dirty granules cover exactly the writes"
    );
    // A sub-range query starts and ends where asked.
    let part = c.block_status("qemu:dirty-bitmap:b0", 1000, 70000).unwrap();
    assert_eq!(part.first().unwrap().offset, 1000);
    assert_eq!(part.iter().map(|e| e.length).sum::<u64>(), 70000);

    // Reads: data, holes as zeros, and a read larger than one request.
    let mut buf = vec![0xffu8; 9 << 20];
    c.read(0, &mut buf).unwrap();
    assert!(buf[..5000].iter().all(|b| *b == 0));
    assert!(buf[5000..5100].iter().all(|b| *b == 1));
    assert!(buf[1 << 20..(1 << 20) + 65536].iter().all(|b| *b == 0xab));
    assert!(buf[4132864..4132864 + 131072].iter().all(|b| *b == 2));
    assert!(buf[(2 << 20)..(4 << 20) - 65536].iter().all(|b| *b == 0));
    // Past the end is refused, naming the command.
    let err = c.read(c.size - 10, &mut [0u8; 20]).unwrap_err().to_string();
    assert!(err.contains("READ"), "{err}");
    // An unknown bitmap is refused by name.
    let err = match Client::connect(Address::Unix(&sock), "", &["qemu:dirty-bitmap:nope"]) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an unknown bitmap was accepted"),
    };
    assert!(err.contains("qemu:dirty-bitmap:nope"), "{err}");
    c.disconnect().unwrap();

    // The same export over TCP, with a name.
    let port = free_port();
    let _tcp = spawn(
        Command::new("qemu-nbd")
            .args([
                "-t",
                "-r",
                "-e",
                "4",
                "-f",
                "qcow2",
                "-B",
                "b0",
                "-x",
                "disk0",
                "-b",
                "127.0.0.1",
                "-p",
            ])
            .arg(port.to_string())
            .arg(&img),
    );
    let addr = format!("127.0.0.1:{port}");
    let mut t = connect(Address::Tcp(&addr), "disk0", &["qemu:dirty-bitmap:b0"]);
    assert_eq!(
        t.block_status("qemu:dirty-bitmap:b0", 0, t.size).unwrap(),
        dirty
    );
    let mut tb = vec![0u8; 9 << 20];
    t.read(0, &mut tb).unwrap();
    assert!(tb == buf, "TCP and unix reads differ");
    // A wrong export name is refused with the server's reason.
    let err = match Client::connect(Address::Tcp(&addr), "nope", &[]) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an unknown export was accepted"),
    };
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn nbdkit_data_and_memory() {
    common::require_tools();
    let dir = common::tempdir();
    let sock = dir.path().join("k.sock");
    // nbdkit's data plugin: bytes at given offsets, the rest sparse.
    let _srv = spawn(
        Command::new("nbdkit")
            .args(["-f", "--exit-with-parent", "-U"])
            .arg(&sock)
            .args([
                "data",
                "1 2 3 @1048576 ( 0x55 )*4096 @8388607 9",
                "size=16M",
            ]),
    );
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    let mut c = connect(Address::Unix(&sock), "", &["base:allocation"]);
    assert_eq!(c.size, 16 << 20);
    let alloc = c.block_status("base:allocation", 0, c.size).unwrap();
    assert_eq!(alloc, nbdinfo_map(&uri, "base:allocation"));
    assert!(
        alloc.iter().any(|e| e.flags & 1 != 0),
        "nbdkit data reports holes: {alloc:?}"
    );
    let mut buf = vec![0xeeu8; 16 << 20];
    c.read(0, &mut buf).unwrap();
    let mut want = vec![0u8; 16 << 20];
    want[..3].copy_from_slice(&[1, 2, 3]);
    want[1 << 20..(1 << 20) + 4096].fill(0x55);
    want[8388607] = 9;
    assert!(buf == want, "nbdkit data read back differently");
    c.disconnect().unwrap();

    // nbdkit memory: writable, sparse, all zero; no bitmap contexts offered.
    let msock = dir.path().join("m.sock");
    let _mem = spawn(
        Command::new("nbdkit")
            .args(["-f", "--exit-with-parent", "-U"])
            .arg(&msock)
            .args(["memory", "4M"]),
    );
    let mut m = connect(Address::Unix(&msock), "", &["base:allocation"]);
    let ext = m.block_status("base:allocation", 0, m.size).unwrap();
    assert_eq!(
        ext,
        vec![Extent {
            offset: 0,
            length: 4 << 20,
            flags: 3
        }]
    );
    let mut z = vec![1u8; 1 << 20];
    m.read(3 << 20, &mut z).unwrap();
    assert!(z.iter().all(|b| *b == 0));
    // A read failing on the server (nbdkit's error filter: every pread
    // fails with EIO) while several requests are in flight: the error names
    // the command and errno, and the connection stays usable.
    let esock = dir.path().join("e.sock");
    let _err_srv = spawn(
        Command::new("nbdkit")
            .args(["-f", "--exit-with-parent", "-U"])
            .arg(&esock)
            .args([
                "--filter=error",
                "memory",
                "32M",
                "error-pread=EIO",
                "error-pread-rate=100%",
            ]),
    );
    let mut e = connect(Address::Unix(&esock), "", &["base:allocation"]);
    let mut big = vec![0u8; 32 << 20];
    let err = e.read(0, &mut big).unwrap_err().to_string();
    assert!(err.contains("READ") && err.contains("EIO"), "{err}");
    assert_eq!(
        e.block_status("base:allocation", 0, e.size).unwrap().len(),
        1,
        "the connection is still in step after a failed pipelined read"
    );
    e.disconnect().unwrap();

    let err = match Client::connect(Address::Unix(&msock), "", &["qemu:dirty-bitmap:x"]) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("nbdkit offered a qemu bitmap"),
    };
    assert!(err.contains("qemu:dirty-bitmap:x"), "{err}");
}

#[test]
fn qemu_nbd_over_tls_verifies_the_server_certificate() {
    common::require_tools();
    let dir = common::tempdir();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    common::shared::make_pki(&pki);
    let img = dir.path().join("d.qcow2");
    assert!(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&img)
            .arg("8M")
            .status()
            .unwrap()
            .success()
    );
    qemu_io(&img, &["write -P 0x5a 2M 64k"]);
    let port = free_port();
    let _srv = spawn(
        Command::new("qemu-nbd")
            .args([
                "-t",
                "-r",
                "-e",
                "8",
                "-f",
                "qcow2",
                "-x",
                "disk0",
                "-b",
                "127.0.0.1",
                "-p",
            ])
            .arg(port.to_string())
            .arg("--object")
            .arg(format!(
                "tls-creds-x509,id=tls0,endpoint=server,dir={},verify-peer=off",
                pki.display()
            ))
            .args(["--tls-creds", "tls0"])
            .arg(&img),
    );
    let addr = format!("127.0.0.1:{port}");
    let good = TlsConfig {
        ca: pki.join("ca-cert.pem"),
        server_name: "127.0.0.1".into(),
        client: None,
    };
    let mut c = connect(Address::Tls(&addr, &good), "disk0", &["base:allocation"]);
    let ext = c.block_status("base:allocation", 0, c.size).unwrap();
    assert!(
        ext.iter().any(|e| e.offset == 2 << 20 && e.flags == 0),
        "{ext:?}"
    );
    let mut buf = vec![0u8; 65536];
    c.read(2 << 20, &mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0x5a));
    c.disconnect().unwrap();

    // Without TLS the server refuses, saying TLS is required.
    let err = match Client::connect(Address::Tcp(&addr), "disk0", &[]) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("plain TCP accepted by a TLS server"),
    };
    assert!(err.contains("TLS required"), "{err}");
    // A certificate from another CA is refused, naming why and the CA.
    let other = TlsConfig {
        ca: pki.join("other-ca.pem"),
        ..good.clone()
    };
    let err = match Client::connect(Address::Tls(&addr, &other), "disk0", &[]) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a certificate of an unknown CA was accepted"),
    };
    assert!(
        err.contains("UnknownIssuer") && err.contains("other-ca.pem"),
        "{err}"
    );
    // A certificate for another name is refused.
    let wrong_name = TlsConfig {
        server_name: "db.example.com".into(),
        ..good.clone()
    };
    let err = match Client::connect(Address::Tls(&addr, &wrong_name), "disk0", &[]) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a certificate for another name was accepted"),
    };
    assert!(
        err.contains("not valid for name") && err.contains("db.example.com"),
        "{err}"
    );
}

#[test]
fn qemu_nbd_with_verify_peer_reads_only_for_a_client_certificate_of_its_ca() {
    // What standby's exports do outside loopback: QEMU verifies standby's
    // client certificate, so reaching the port is not enough to read a disk.
    common::require_tools();
    let dir = common::tempdir();
    let pki = dir.path().join("pki");
    common::shared::make_pki(&pki);
    let img = dir.path().join("d.raw");
    std::fs::write(&img, vec![0x3cu8; 1 << 20]).unwrap();
    let port = free_port();
    let _srv = spawn(
        Command::new("qemu-nbd")
            .args([
                "-t",
                "-r",
                "-e",
                "8",
                "-f",
                "raw",
                "-x",
                "disk0",
                "-b",
                "127.0.0.1",
                "-p",
            ])
            .arg(port.to_string())
            .arg("--object")
            .arg(format!(
                "tls-creds-x509,id=tls0,endpoint=server,dir={},verify-peer=on",
                pki.display()
            ))
            .args(["--tls-creds", "tls0"])
            .arg(&img),
    );
    let addr = format!("127.0.0.1:{port}");
    let with = |client: Option<(&str, &str)>| TlsConfig {
        ca: pki.join("ca-cert.pem"),
        server_name: "127.0.0.1".into(),
        client: client.map(|(c, k)| (pki.join(c), pki.join(k))),
    };
    let mut c = connect(
        Address::Tls(&addr, &with(Some(("client-cert.pem", "client-key.pem")))),
        "disk0",
        &[],
    );
    let mut buf = vec![0u8; 4096];
    c.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0x3c));
    c.disconnect().unwrap();
    // No certificate, or one of another CA: the server ends the session
    // before any byte of the disk is read.
    for client in [
        None,
        Some(("other-client-cert.pem", "other-client-key.pem")),
    ] {
        let read = Client::connect(Address::Tls(&addr, &with(client)), "disk0", &[])
            .and_then(|mut c| c.read(0, &mut buf));
        assert!(read.is_err(), "{client:?} read the disk");
    }
}
