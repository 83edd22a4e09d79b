//! Helpers shared by the provider's tests and standby's
//! (`tests/qemu_replication.rs` includes this file by path): test
//! certificates and the check of a restored database disk.

use std::path::Path;
use std::process::Command;

/// Makes a CA and a server certificate for 127.0.0.1/localhost in `dir`
/// (QEMU's tls-creds-x509 layout: ca-cert.pem, server-cert.pem,
/// server-key.pem), a client certificate of that CA (client-cert.pem,
/// client-key.pem: what standby presents to a server with verify-peer=on),
/// and a second, unrelated CA in `dir/other-ca.pem` with a client
/// certificate of its own (other-client-cert.pem, other-client-key.pem).
pub fn make_pki(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(&format!(
        "openssl req -x509 {ec} -keyout ca-key.pem -out ca-cert.pem -days 2 -subj /CN=standby-test-ca"
    ));
    sh(&format!(
        "openssl req -x509 {ec} -keyout other-key.pem -out other-ca.pem -days 2 -subj /CN=other-ca"
    ));
    sh(&format!(
        "openssl req -new {ec} -keyout server-key.pem -out server.csr -subj /CN=localhost"
    ));
    sh(
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > ext.cnf && \
        openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
        -out server-cert.pem -days 2 -extfile ext.cnf",
    );
    for (name, ca) in [("client", "ca"), ("other-client", "other")] {
        let ca_cert = if ca == "ca" {
            "ca-cert.pem"
        } else {
            "other-ca.pem"
        };
        sh(&format!(
            "openssl req -new {ec} -keyout {name}-key.pem -out {name}.csr -subj /CN=standby-{name} && \
            printf 'extendedKeyUsage=clientAuth\\n' > {name}.cnf && \
            openssl x509 -req -in {name}.csr -CA {ca_cert} -CAkey {ca}-key.pem -CAcreateserial \
            -out {name}-cert.pem -days 2 -extfile {name}.cnf"
        ));
    }
}

/// A restored database disk image passes `e2fsck -fn` and
/// `PRAGMA integrity_check`, and its order count equals the last count the
/// guest's freeze hook recorded in it (`/freezes.log`). Returns the count.
pub fn check_database_image(img: &Path) -> u64 {
    let fsck = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let dir = tempfile::tempdir().unwrap();
    for name in ["orders.db", "orders.db-wal", "freezes.log"] {
        let out = Command::new("debugfs")
            .args([
                "-R",
                &format!("dump /{name} {}", dir.path().join(name).display()),
            ])
            .arg(img)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let db = dir.path().join("orders.db");
    let q = |sql: &str| {
        let o = Command::new("sqlite3").arg(&db).arg(sql).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(q("PRAGMA integrity_check"), "ok");
    let count: u64 = q("SELECT count(*) FROM orders").parse().unwrap();
    let log = std::fs::read_to_string(dir.path().join("freezes.log")).unwrap();
    let recorded: u64 = log.lines().last().unwrap().trim().parse().unwrap();
    assert_eq!(
        count, recorded,
        "the point's order count equals the count at its freeze"
    );
    count
}
