//! Shared helpers for the status and watch tests: a quickstart copy with
//! real sample disks and a tuned policy, the binary, and polling an HTTP
//! endpoint with a deadline.
#![allow(dead_code)]

use standby::samples;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

pub fn standby(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_standby"));
    c.arg("-C").arg(dir).env("NO_COLOR", "1");
    c
}

/// Run to completion; panic with its output unless it exits `code`.
pub fn expect_code(cmd: &mut Command, code: i32) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A quickstart copy (machines db and web in group shop) with real disks,
/// its policy's timings replaced by `policy` (e.g. `crash_consistent_every = "2s"`
/// lines), and its vault URL set to `vault_url`.
pub fn quickstart(d: &Path, policy: &str, vault_url: Option<&str>) -> PathBuf {
    let root = d.join("qs");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/quickstart"),
        &root,
    );
    let main = root.join("main.hcl");
    let text = std::fs::read_to_string(&main).unwrap();
    let start = text
        .find("policy \"standard\" {")
        .expect("quickstart policy");
    let end = start + text[start..].find('}').unwrap() + 1;
    let mut text = format!(
        "{}policy \"standard\" {{\n{policy}\n}}{}",
        &text[..start],
        &text[end..]
    );
    if let Some(url) = vault_url {
        text = text.replace("file://.standby/vault", url);
    }
    std::fs::write(&main, text).unwrap();
    let onprem = root.join("sites/onprem");
    std::fs::create_dir_all(onprem.join("db")).unwrap();
    std::fs::create_dir_all(onprem.join("web")).unwrap();
    samples::make_ext4(&onprem.join("db/system.img"), "db", 16).unwrap();
    samples::make_sqlite(&onprem.join("db/data.sqlite"), 500).unwrap();
    samples::make_ext4(&onprem.join("web/system.img"), "web", 16).unwrap();
    root
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from 127.0.0.1:`port`: (status, body), or None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The value of `metric{protection="..."}` in a Prometheus text body.
pub fn metric(body: &str, name: &str, protection: &str) -> Option<f64> {
    let prefix = format!("{name}{{protection=\"{protection}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Poll `f` until it returns Some, or panic naming `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Send SIGTERM and wait (bounded) for the exit status.
pub fn terminate(child: &mut Child, limit: Duration) -> ExitStatus {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_for("the service to exit", limit, || child.try_wait().unwrap())
}

/// Kills the child if a test panics before stopping it.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
