//! Opening stores from the environment: precise errors naming what is
//! missing, and no access key or account key in any message or Debug
//! output, against the real Azurite and moto servers where a request is
//! needed. These tests change process environment variables, so each holds
//! `ENV_LOCK` for its whole run (this file is its own process).

mod common;

use object_store::{ObjectStoreExt, PutPayload};
use standby::store::{self, StoreError};
use std::sync::Mutex;

static ENV_LOCK: Mutex<()> = Mutex::new(());

const AZ_VARS: &[&str] = &[
    "AZURE_STORAGE_USE_EMULATOR",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CREDENTIAL_TYPE",
];
const S3_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ALLOW_HTTP",
    "AWS_ALLOW_INVALID_CERTIFICATES",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
];

/// Run `body` with `set` applied on top of the environment and `unset`
/// removed, then put everything back.
fn with_env<T>(unset: &[&str], set: &[(&str, &str)], body: impl FnOnce() -> T) -> T {
    let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let names: Vec<&str> = unset
        .iter()
        .copied()
        .chain(set.iter().map(|(k, _)| *k))
        .collect();
    let saved: Vec<(&str, Option<String>)> =
        names.iter().map(|n| (*n, std::env::var(n).ok())).collect();
    // SAFETY: every test in this process holds ENV_LOCK while it touches or
    // reads the environment, so no other thread reads it concurrently.
    unsafe {
        for n in unset {
            std::env::remove_var(n);
        }
        for (k, v) in set {
            std::env::set_var(k, v);
        }
    }
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    unsafe {
        for (n, v) in saved {
            match v {
                Some(v) => std::env::set_var(n, v),
                None => std::env::remove_var(n),
            }
        }
    }
    out.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn open_err(url: &str) -> String {
    match store::open(url, std::path::Path::new("/nonexistent-base")) {
        Ok(s) => panic!("{url} opened but should not: {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn az_without_account_names_what_is_missing() {
    let msg = with_env(AZ_VARS, &[], || open_err("az://standby-test/p"));
    assert!(msg.contains("az://standby-test/p"), "{msg}");
    assert!(
        msg.contains("az:// needs AZURE_STORAGE_ACCOUNT_NAME or AZURE_STORAGE_USE_EMULATOR=true"),
        "{msg}"
    );
}

#[test]
fn az_without_credentials_names_the_options() {
    let msg = with_env(
        AZ_VARS,
        &[("AZURE_STORAGE_ACCOUNT_NAME", "someaccount")],
        || open_err("az://standby-test"),
    );
    assert!(msg.contains("needs credentials"), "{msg}");
    assert!(msg.contains("AZURE_STORAGE_ACCOUNT_KEY"), "{msg}");
}

#[test]
fn az_malformed_key_is_not_echoed() {
    let key = "Not-Base64-SECRET-KEY-0123456789!!";
    let msg = with_env(
        AZ_VARS,
        &[
            ("AZURE_STORAGE_ACCOUNT_NAME", "someaccount"),
            ("AZURE_STORAGE_ACCOUNT_KEY", key),
        ],
        || open_err("az://standby-test"),
    );
    assert!(msg.contains("not a base64 account key"), "{msg}");
    assert!(!msg.contains("SECRET"), "key leaked: {msg}");
}

#[test]
fn az_wrong_key_is_refused_without_leaking_it() {
    let base = common::service_url("STANDBY_TEST_AZ_URL");
    // Valid base64, wrong key: Azurite refuses the signature.
    let key = "c3RhbmRieS13cm9uZy1rZXktbWF0ZXJpYWwtMDEyMzQ1Njc4OQ==";
    let (debug, msg) = with_env(
        &["AZURE_STORAGE_ACCESS_KEY"],
        &[("AZURE_STORAGE_ACCOUNT_KEY", key)],
        || {
            let s = store::open(
                &format!("{base}/{}", common::unique("wrongkey")),
                "/".as_ref(),
            )
            .unwrap();
            let debug = format!("{s:?}");
            let err = runtime()
                .block_on(s.inner.put(&s.path("x"), PutPayload::from_static(b"x")))
                .expect_err("a wrong key must be refused");
            (debug, s.error("write", "x", err).to_string())
        },
    );
    assert!(msg.contains("write x in store az://standby-test/"), "{msg}");
    assert!(
        msg.contains("403"),
        "expected an authorization failure: {msg}"
    );
    for text in [&msg, &debug] {
        assert!(!text.contains(key), "key leaked: {text}");
        assert!(
            !text.contains("standby-wrong-key"),
            "decoded key leaked: {text}"
        );
    }
}

#[test]
fn s3_half_credentials_name_the_missing_half() {
    let msg = with_env(
        S3_VARS,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_REGION", "eu-west-1"),
        ],
        || open_err("s3://standby-test/p"),
    );
    assert!(msg.contains("needs AWS_SECRET_ACCESS_KEY too"), "{msg}");
    let secret = "s3-SECRET-do-not-print-0123456789";
    let msg = with_env(
        S3_VARS,
        &[
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_REGION", "eu-west-1"),
        ],
        || open_err("s3://standby-test/p"),
    );
    assert!(msg.contains("needs AWS_ACCESS_KEY_ID too"), "{msg}");
    assert!(!msg.contains(secret), "secret leaked: {msg}");
}

#[test]
fn s3_without_credentials_or_region_says_so() {
    let msg = with_env(S3_VARS, &[], || open_err("s3://standby-test"));
    assert!(
        msg.contains("s3:// needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "{msg}"
    );
    let msg = with_env(
        S3_VARS,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "x".repeat(40).as_str()),
        ],
        || open_err("s3://standby-test"),
    );
    assert!(msg.contains("s3:// needs AWS_REGION"), "{msg}");
}

#[test]
fn s3_errors_do_not_leak_the_secret() {
    common::service_url("STANDBY_TEST_S3_URL");
    let secret = "s3-SECRET-do-not-print-0123456789";
    let (debug, msgs) = with_env(
        &["AWS_SESSION_TOKEN"],
        &[("AWS_SECRET_ACCESS_KEY", secret)],
        || {
            // A bucket that does not exist: the server answers with an error.
            let s = store::open("s3://standby-no-such-bucket/p", "/".as_ref()).unwrap();
            let rt = runtime();
            let put = rt
                .block_on(s.inner.put(&s.path("x"), PutPayload::from_static(b"x")))
                .expect_err("no such bucket");
            let get = rt
                .block_on(s.get_versioned("x"))
                .expect_err("no such bucket");
            (
                format!("{s:?}"),
                vec![
                    s.error("write", "x", put).to_string(),
                    get.to_string(),
                    format!("{get:?}"),
                ],
            )
        },
    );
    assert!(
        msgs[0].contains("s3://standby-no-such-bucket/p"),
        "{}",
        msgs[0]
    );
    for text in msgs.iter().chain([&debug]) {
        assert!(!text.contains(secret), "secret leaked: {text}");
    }
}

#[test]
fn redact_masks_secret_values_from_the_environment() {
    let secret = "azure-SECRET-value-0123456789";
    let out = with_env(&[], &[("AZURE_STORAGE_ACCOUNT_KEY", secret)], || {
        store::redact(&format!(
            "failed with key {secret} and https://a/b?sv=1&sig=abcdef123&se=2"
        ))
    });
    assert_eq!(out, "failed with key *** and https://a/b?sv=1&sig=***&se=2");
}

#[test]
fn bad_urls_are_named_with_a_hint() {
    let msg = open_err("gs://bucket/p");
    assert!(
        msg.contains("\"gs://bucket/p\" is not a store URL"),
        "{msg}"
    );
    assert!(msg.contains("use file://, az:// or s3://"), "{msg}");
    let msg = open_err("az://Bad_Name/p");
    assert!(msg.contains("not a valid container name"), "{msg}");
    let msg = open_err("s3://bucket/a//b");
    assert!(msg.contains("prefix"), "{msg}");
    let msg = open_err("vault");
    assert!(msg.contains("no scheme"), "{msg}");
    let msg = open_err("file://");
    assert!(msg.contains("file:// needs a directory"), "{msg}");
}

#[test]
fn file_urls_relative_and_absolute() {
    let tmp = tempfile::tempdir().unwrap();
    let abs = tmp.path().join("abs-vault");
    let s = store::open(
        &format!("file://{}", abs.display()),
        "/nonexistent-base".as_ref(),
    )
    .unwrap();
    let rel = store::open("file://rel/vault", tmp.path()).unwrap();
    let rt = runtime();
    rt.block_on(s.inner.put(&s.path("a/b"), PutPayload::from_static(b"abs")))
        .unwrap();
    rt.block_on(
        rel.inner
            .put(&rel.path("c"), PutPayload::from_static(b"rel")),
    )
    .unwrap();
    assert_eq!(std::fs::read(abs.join("a/b")).unwrap(), b"abs");
    assert_eq!(
        std::fs::read(tmp.path().join("rel/vault/c")).unwrap(),
        b"rel"
    );
}

/// A user who sets AWS_ALLOW_INVALID_CERTIFICATES=true still gets TLS
/// verification: a self-signed https endpoint on loopback is refused.
#[test]
fn tls_certificates_are_always_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success());
    // A TLS server on a free loopback port that answers every request 200.
    let script = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        self.send_response(200); self.send_header("ETag", '"x"'); self.end_headers()
    do_GET = do_PUT
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;
    let mut server = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&cert)
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start TLS server");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line.trim().parse().expect("server port");
    let endpoint = format!("https://127.0.0.1:{port}");
    let result = with_env(
        S3_VARS,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "x".repeat(40).as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", endpoint.as_str()),
            ("AWS_ALLOW_INVALID_CERTIFICATES", "true"),
        ],
        || {
            let s = store::open("s3://standby-test", "/".as_ref()).unwrap();
            runtime().block_on(s.inner.put(&s.path("x"), PutPayload::from_static(b"x")))
        },
    );
    let _ = server.kill();
    let _ = server.wait();
    let err = result.expect_err("a self-signed certificate must be refused");
    let text = store::describe(&err);
    assert!(
        text.contains("certificate"),
        "expected a certificate error: {text}"
    );
}

#[test]
fn store_error_variants_are_typed() {
    // A StoreError is matchable by callers (remote state relies on this).
    let tmp = tempfile::tempdir().unwrap();
    let s = store::open("file://v", tmp.path()).unwrap();
    let rt = runtime();
    rt.block_on(s.put_if_absent("lock", b"a".to_vec())).unwrap();
    let e = rt
        .block_on(s.put_if_absent("lock", b"b".to_vec()))
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }));
    assert_eq!(e.to_string(), "lock already exists in store file://v");
}

/// Transient server errors are retried with backoff: a loopback server that
/// answers 503 to the first two PUTs sees the third succeed.
#[test]
fn transient_errors_are_retried() {
    let script = r#"
import http.server, sys
count = {"put": 0}
class H(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        count["put"] += 1
        if count["put"] <= 2:
            self.send_response(503); self.send_header("Content-Length", "0"); self.end_headers()
        else:
            self.send_response(200); self.send_header("ETag", '"ok"')
            self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):
        body = str(count["put"]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;
    let mut server = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start flaky server");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line.trim().parse().expect("server port");
    let endpoint = format!("http://127.0.0.1:{port}");
    let result = with_env(
        S3_VARS,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "x".repeat(40).as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", endpoint.as_str()),
        ],
        || {
            let s = store::open("s3://standby-test", "/".as_ref()).unwrap();
            runtime().block_on(s.inner.put(&s.path("x"), PutPayload::from_static(b"x")))
        },
    );
    let count = std::process::Command::new("curl")
        .args(["-s", &format!("{endpoint}/count")])
        .output()
        .expect("ask the server");
    let _ = server.kill();
    let _ = server.wait();
    let put = result.expect("the third attempt succeeds");
    assert_eq!(put.e_tag.as_deref(), Some("\"ok\""));
    assert_eq!(
        String::from_utf8_lossy(&count.stdout),
        "3",
        "two failures, then success"
    );
}

/// A write into a container or bucket that does not exist is described
/// with how to create it, not "object not found" and the service's XML.
#[test]
fn a_missing_container_or_bucket_is_named_with_a_hint() {
    let _g = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    for (var, want) in [
        (
            "STANDBY_TEST_AZ_URL",
            "the Azure container does not exist: create it",
        ),
        (
            "STANDBY_TEST_S3_URL",
            "the S3 bucket does not exist: create it",
        ),
    ] {
        let base = common::service_url(var);
        let scheme = &base[..base.find("://").unwrap()];
        let url = format!("{scheme}://{}/p", common::unique("nosuch"));
        let s = store::open(&url, "/".as_ref()).unwrap();
        let err = runtime()
            .block_on(
                s.inner
                    .put(&s.path("config"), PutPayload::from_static(b"x")),
            )
            .expect_err("no such container");
        // What a vault's error says of it (the state backend names the
        // missing container itself, from the NotFound).
        let msg = store::describe(&err);
        assert!(msg.contains(want), "{msg}");
        assert!(!msg.contains("<?xml"), "{msg}");
    }
}
