//! Test certificates, shared by the provider's tests and standby's
//! (`tests/qemu_replication.rs` includes this file by path).

use std::path::Path;
use std::process::Command;

/// Makes a CA and a server certificate for 127.0.0.1/localhost in `dir`
/// (QEMU's tls-creds-x509 layout: ca-cert.pem, server-cert.pem,
/// server-key.pem), and a second, unrelated CA in `dir/other-ca.pem`.
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
}
