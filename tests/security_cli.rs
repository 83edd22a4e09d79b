//! Key files and TLS, through the real binary: a vault key file that group
//! or others can read is refused by every command that needs the key, with
//! the `chmod 600 FILE` hint, and nothing is written; remote object stores
//! are reached over plain http only on a loopback address (an emulator), and
//! a certificate is always verified — even when the environment asks
//! object_store not to (a self-signed `openssl s_server` is refused).

mod watch_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use watch_support::{expect_code, free_port, quickstart, standby};

const POLICY: &str = r#"rpo_threshold = "15m"
crash_consistent_every = "5m"
app_consistent_every = "1h"
retention = "24h""#;

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// stderr with miette's wrapping undone: one line, single spaces.
fn flat(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .replace(['│', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn point_count(qs: &Path) -> usize {
    std::fs::read_dir(qs.join(".standby/vault/points"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_key_file_others_can_read_is_refused_with_the_chmod_hint() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), POLICY, None);
    expect_code(standby(&qs).args(["apply", "--auto-approve"]), 0);
    let key = qs.join(".standby/keys/main.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600,
        "apply writes the key 0600"
    );
    let points = point_count(&qs);
    let restored = d.path().join("restored.img");
    for mode in [0o640, 0o604, 0o644, 0o666] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        for args in [
            vec!["replicate"],
            vec!["points"],
            vec!["vault", "verify"],
            vec!["status"],
            vec![
                "restore",
                "latest",
                "--machine",
                "machine.db",
                "--disk",
                "system",
                "--to",
                restored.to_str().unwrap(),
            ],
        ] {
            let o = standby(&qs)
                .args(&args)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert_ne!(
                o.status.code(),
                Some(0),
                "{args:?} mode {mode:o}:\n{}",
                text(&o)
            );
            let err = flat(&o);
            assert!(
                err.contains("readable by group or others")
                    && err.contains("run `chmod 600 ./.standby/keys/main.key`"),
                "{args:?} mode {mode:o}: {err}"
            );
        }
        assert_eq!(point_count(&qs), points, "no point was taken");
        assert!(!restored.exists(), "nothing was restored");
    }
    // A fresh vault with an open key file is not created either.
    let fresh = d.path().join("fresh");
    std::fs::create_dir_all(fresh.join("keys")).unwrap();
    std::fs::copy(&key, fresh.join("keys/k.key")).unwrap();
    std::fs::set_permissions(
        fresh.join("keys/k.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(
        fresh.join("main.hcl"),
        "vault \"v\" {\n  url      = \"file://vault\"\n  key_file = \"keys/k.key\"\n}\n",
    )
    .unwrap();
    let o = standby(&fresh).args(["vault", "init"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("chmod 600"),
        "{}",
        text(&o)
    );
    assert!(!fresh.join("vault/config").exists(), "no vault was created");

    // chmod 600 is the whole fix.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    expect_code(standby(&qs).args(["replicate"]), 0);
    assert!(point_count(&qs) > points);
}

/// A directory with an s3:// vault and its key.
fn s3_config(d: &Path) -> std::path::PathBuf {
    let dir = d.join("s3");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.hcl"),
        "vault \"v\" {\n  url     = \"s3://standby-tls/x\"\n  key_env = \"TLS_TEST_KEY\"\n}\n",
    )
    .unwrap();
    dir
}

fn s3_init(dir: &Path, endpoint: &str, extra: &[(&str, &str)]) -> Output {
    let mut c = standby(dir);
    c.args(["vault", "init"])
        .env("TLS_TEST_KEY", "11".repeat(32))
        .env("AWS_ACCESS_KEY_ID", "tls-test")
        .env("AWS_SECRET_ACCESS_KEY", "tls-test-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", endpoint)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_S3");
    for (k, v) in extra {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn plain_http_is_refused_for_endpoints_that_are_not_loopback() {
    let d = tempfile::tempdir().unwrap();
    let dir = s3_config(d.path());
    for endpoint in [
        "http://s3.example.com:9000",
        "http://10.9.8.7",
        "http://127.0.0.1.nip.io",
    ] {
        let o = s3_init(&dir, endpoint, &[("AWS_ALLOW_HTTP", "true")]);
        assert_eq!(o.status.code(), Some(1), "{endpoint}: {}", text(&o));
        let err = flat(&o);
        assert!(err.contains("use https://"), "{endpoint}: {err}");
    }
    std::fs::write(
        dir.join("main.hcl"),
        "vault \"v\" {\n  url     = \"az://standby-tls/x\"\n  key_env = \"TLS_TEST_KEY\"\n}\n",
    )
    .unwrap();
    let o = standby(&dir)
        .args(["vault", "init"])
        .env("TLS_TEST_KEY", "11".repeat(32))
        .env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env("AZURITE_BLOB_STORAGE_URL", "http://192.0.2.10:10000")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("use https://"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_self_signed_certificate_is_refused_even_when_the_environment_allows_it() {
    let d = tempfile::tempdir().unwrap();
    let (cert, key) = (d.path().join("cert.pem"), d.path().join("key.pem"));
    let o = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let port = free_port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = s3_config(d.path());
    let o = s3_init(
        &dir,
        &format!("https://127.0.0.1:{port}"),
        &[
            ("AWS_ALLOW_INVALID_CERTIFICATES", "true"),
            ("AWS_ALLOW_HTTP", "true"),
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The error the user sees names the certificate check itself (not
    // merely "tls", which the bucket's name holds), in the message, not
    // only in a log line.
    let stderr = String::from_utf8_lossy(&o.stderr);
    let message = stderr
        .lines()
        .filter(|l| !l.contains("rustls_platform_verifier"))
        .collect::<Vec<_>>()
        .join(" ")
        .replace(['│', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        message.contains("invalid peer certificate"),
        "the failure is the certificate check: {message}"
    );
}
