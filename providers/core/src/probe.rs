//! Checks standby runs itself, from the host it runs on: HTTP (status and
//! body), TCP (connect), and the retry loop every check kind shares.
//!
//! These block: call them from a plain thread or `spawn_blocking`. (`http`
//! runs its request on a thread of its own, so reqwest's blocking client
//! never meets a caller's tokio runtime, but it still blocks the caller.)

use crate::{CheckOutcome, ProviderError};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Body bytes read for a `contains` check; a page larger than this is
/// searched in its first part only.
const BODY_LIMIT: u64 = 4 << 20;

/// GETs `url` (redirects followed, TLS always verified) and passes when the
/// final response has `status` and, if given, its body contains `contains`.
pub fn http(url: &str, status: u16, contains: Option<&str>, timeout: Duration) -> CheckOutcome {
    // reqwest's blocking client panics when used inside a tokio runtime;
    // a thread of its own keeps that from ever reaching the caller.
    std::thread::scope(|s| {
        s.spawn(|| http_attempt(url, status, contains, timeout))
            .join()
            .unwrap_or_else(|_| fail(format!("GET {}: the HTTP client failed", shown_url(url))))
    })
}

fn http_attempt(url: &str, status: u16, contains: Option<&str>, timeout: Duration) -> CheckOutcome {
    let shown = shown_url(url);
    let url_text = url;
    let url = shown.as_str();
    let client = match reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot build an HTTP client: {}", chain(&e))),
    };
    let resp = match client.get(url_text).send() {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return fail(format!("GET {url}: no answer within {timeout:?}"));
        }
        Err(e) => return fail(format!("GET {url}: {}", chain(&e))),
    };
    let got = resp.status().as_u16();
    if got != status {
        return fail(format!("GET {url}: status {got}, expected {status}"));
    }
    let Some(needle) = contains else {
        return pass(format!("GET {url}: status {got}"));
    };
    let mut body = Vec::new();
    use std::io::Read;
    if let Err(e) = resp.take(BODY_LIMIT).read_to_end(&mut body) {
        return fail(format!(
            "GET {url}: status {got}, reading the body failed: {e}"
        ));
    }
    if String::from_utf8_lossy(&body).contains(needle) {
        pass(format!("GET {url}: status {got}, body contains {needle:?}"))
    } else {
        fail(format!(
            "GET {url}: status {got}, body ({} bytes) does not contain {needle:?}",
            body.len()
        ))
    }
}

/// Passes when a TCP connection to `address` (`host:port`) opens within
/// `timeout` (each resolved address is tried in turn).
pub fn tcp(address: &str, timeout: Duration) -> CheckOutcome {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<_> = match address.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return fail(format!("cannot resolve {address}: {e}")),
    };
    if addrs.is_empty() {
        return fail(format!("{address} resolves to no address"));
    }
    let mut last = String::new();
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return fail(format!(
                "connect to {address}: no answer within {timeout:?}"
            ));
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(_) => return pass(format!("connected to {address} ({a})")),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = format!("connect to {address} ({a}): no answer within {timeout:?}");
            }
            Err(e) => last = format!("connect to {address} ({a}): {e}"),
        }
    }
    fail(last)
}

/// Runs `attempt` once and then up to `retries` more times, waiting
/// `interval` after each failed attempt (an error counts as a failure).
/// Stops early when an attempt passes or `cancel()` turns true (checked
/// between attempts and while waiting). Returns the last result and how many
/// attempts ran.
pub fn with_retries(
    retries: u32,
    interval: Duration,
    cancel: &dyn Fn() -> bool,
    mut attempt: impl FnMut() -> Result<CheckOutcome, ProviderError>,
) -> (Result<CheckOutcome, ProviderError>, u32) {
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let result = attempt();
        let passed = matches!(&result, Ok(o) if o.passed);
        if passed || attempts > retries || cancel() {
            return (result, attempts);
        }
        let until = Instant::now() + interval;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if cancel() {
                return (result, attempts);
            }
            // Short naps so a cancel is seen promptly.
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// The URL as details show it: a password in it is masked.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn pass(detail: String) -> CheckOutcome {
    CheckOutcome {
        passed: true,
        detail,
    }
}

fn fail(detail: String) -> CheckOutcome {
    CheckOutcome {
        passed: false,
        detail,
    }
}

/// An error with its causes: reqwest's own message alone is terse.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A real HTTP server on a free port answering every request with
    /// `status` and `body`; returns its base URL.
    fn server(status: u16, body: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[test]
    fn http_checks_status_and_body() {
        let url = server(200, "db ok: 42 rows");
        let o = http(&url, 200, Some("42 rows"), Duration::from_secs(5));
        assert!(o.passed, "{}", o.detail);
        let o = http(&url, 200, Some("99 rows"), Duration::from_secs(5));
        assert!(!o.passed);
        assert!(
            o.detail.contains("does not contain \"99 rows\""),
            "{}",
            o.detail
        );
        let o = http(&url, 204, None, Duration::from_secs(5));
        assert!(!o.passed);
        assert!(
            o.detail.contains("status 200, expected 204"),
            "{}",
            o.detail
        );
    }

    #[test]
    fn http_works_from_inside_an_async_runtime() {
        let url = server(200, "ok");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let o = rt.block_on(async { http(&url, 200, Some("ok"), Duration::from_secs(5)) });
        assert!(o.passed, "{}", o.detail);
    }

    #[test]
    fn http_reports_a_server_error_status() {
        let url = server(503, "down");
        let o = http(&url, 200, None, Duration::from_secs(5));
        assert!(!o.passed);
        assert!(o.detail.contains("status 503"), "{}", o.detail);
    }

    #[test]
    fn http_times_out_on_a_silent_server() {
        // Accepts connections (the backlog does) but never answers.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let o = http(&url, 200, None, Duration::from_millis(300));
        assert!(!o.passed);
        assert!(o.detail.contains("no answer within"), "{}", o.detail);
        drop(l);
    }

    #[test]
    fn http_refused_connection_fails_with_the_cause() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let o = http(
            &format!("http://127.0.0.1:{port}/"),
            200,
            None,
            Duration::from_secs(5),
        );
        assert!(!o.passed);
        assert!(o.detail.to_lowercase().contains("refused"), "{}", o.detail);
    }

    #[test]
    fn https_to_a_plain_http_server_fails_the_handshake() {
        let url = server(200, "plain").replace("http://", "https://");
        let o = http(&url, 200, None, Duration::from_secs(5));
        assert!(!o.passed);
        assert!(
            o.detail.starts_with(&format!("GET {url}: ")),
            "{}",
            o.detail
        );
    }

    /// A self-signed HTTPS server (openssl + Python's ssl) is refused: TLS
    /// is always verified.
    #[test]
    fn https_with_an_untrusted_certificate_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
        let status = std::process::Command::new("openssl")
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
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let script = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"secure")
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
            .unwrap();
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = format!("https://127.0.0.1:{}/", line.trim());
        let o = http(&url, 200, Some("secure"), Duration::from_secs(5));
        server.kill().unwrap();
        server.wait().unwrap();
        assert!(!o.passed);
        assert!(
            o.detail.to_lowercase().contains("certificate"),
            "{}",
            o.detail
        );
    }

    #[test]
    fn a_password_in_the_url_is_masked() {
        let url = server(500, "x").replace("http://", "http://user:hunter2@");
        let o = http(&url, 200, None, Duration::from_secs(5));
        assert!(!o.passed);
        assert!(!o.detail.contains("hunter2"), "{}", o.detail);
        assert!(o.detail.contains("user:***@"), "{}", o.detail);
    }

    #[test]
    fn tcp_open_and_closed_ports() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap().to_string();
        assert!(tcp(&open, Duration::from_secs(5)).passed);
        drop(l);
        let o = tcp(&open, Duration::from_secs(5));
        assert!(!o.passed);
        assert!(o.detail.to_lowercase().contains("refused"), "{}", o.detail);
        let o = tcp("no-such-host.invalid:80", Duration::from_secs(5));
        assert!(!o.passed);
        assert!(o.detail.contains("cannot resolve"), "{}", o.detail);
    }

    #[test]
    fn retries_until_pass_and_counts_attempts() {
        let n = Cell::new(0);
        let (r, attempts) = with_retries(5, Duration::from_millis(1), &|| false, || {
            n.set(n.get() + 1);
            Ok(CheckOutcome {
                passed: n.get() == 3,
                detail: format!("try {}", n.get()),
            })
        });
        assert!(r.unwrap().passed);
        assert_eq!(attempts, 3);
    }

    #[test]
    fn retries_give_up_after_the_last_and_keep_its_result() {
        let (r, attempts) = with_retries(2, Duration::ZERO, &|| false, || {
            Err(ProviderError::Action {
                action: "check",
                subject: "m".into(),
                reason: "nope".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(attempts, 3);
    }

    #[test]
    fn cancel_stops_retrying_even_while_waiting() {
        // The cancel turns true on its third look, inside the hour-long wait.
        let looks = Cell::new(0);
        let cancel = || {
            looks.set(looks.get() + 1);
            looks.get() >= 3
        };
        let (r, attempts) = with_retries(10, Duration::from_secs(3600), &cancel, || {
            Ok(fail("no".into()))
        });
        assert!(!r.unwrap().passed);
        assert_eq!(attempts, 1);
    }
}
