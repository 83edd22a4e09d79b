//! Helpers shared by the provider's tests and standby's (the VM tests
//! under `tests/` include this file by path): the test guest, test
//! certificates and the check of a restored database disk.

use standby_provider_qemu::guest::{self, Guest};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's target directory: `CARGO_TARGET_DIR`, else `target/`
/// beside the workspace's `Cargo.lock`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let here = Path::new(env!("CARGO_MANIFEST_DIR"));
            here.ancestors()
                .find(|p| p.join("Cargo.lock").exists())
                .unwrap_or(here)
                .join("target")
        })
}

/// The test guest, built once and cached under `target/standby-guest/`.
pub fn test_guest() -> Guest {
    guest::ensure(&target_dir().join("standby-guest")).unwrap_or_else(|e| {
        panic!("building the test guest: {e} (run .ci/run to install its packages)")
    })
}

/// Where the test guest is cached (built first if needed), for
/// `STANDBY_GUEST_CACHE`.
pub fn guest_cache() -> PathBuf {
    test_guest();
    target_dir().join("standby-guest")
}

/// `standby quickstart --qemu D` with `standby` (the binary under test:
/// its tests' `env!("CARGO_BIN_EXE_standby")`, unknown to this file) on the
/// shared guest, asserted to succeed, with a free http port; its stdout.
pub fn quickstart_qemu(standby: &Path, d: &Path) -> String {
    let out = std::process::Command::new(standby)
        .args(["quickstart", "--qemu"])
        .arg(d)
        .env("STANDBY_GUEST_CACHE", guest_cache())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    free_http_port(d);
    text
}

/// Points plans/qemu's forwarded http port (`var.dr_db_http_port`) of the
/// configuration in `d` at a port free now: its default may be taken on a
/// shared machine.
pub fn free_http_port(d: &Path) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        d.join("standby.vars.hcl"),
        format!("dr_db_http_port = {port}\n"),
    )
    .unwrap();
    port
}

/// Processes whose command line names `dir` and satisfies `kind`, as
/// `PID: COMMAND LINE` (arguments space-separated).
pub fn processes_under(dir: &Path, kind: impl Fn(&str) -> bool) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if kind(&cmd) && cmd.contains(&needle) {
            found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

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
