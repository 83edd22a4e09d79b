//! A small typed client for the QEMU guest agent (line-delimited JSON over
//! the VM's agent socket; see [`crate::qmp`] for why not the `qapi` crate).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::wire::{JsonLines, Sock, connect_unix};

/// A guest-agent connection, synchronised (stale replies flushed).
pub struct Agent {
    chan: JsonLines,
    timeout: Duration,
    next_id: u64,
}

/// What `guest-exec` produced.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Deserialize)]
struct ExecStatus {
    exited: bool,
    #[serde(default)]
    exitcode: Option<i64>,
    #[serde(default)]
    signal: Option<i64>,
    #[serde(rename = "out-data", default)]
    out: Option<String>,
    #[serde(rename = "err-data", default)]
    err: Option<String>,
}

impl Agent {
    /// Connects to the agent's unix socket and synchronises with
    /// `guest-sync` (a random id; replies to earlier requests are skipped),
    /// retrying until `timeout` while the guest's agent is not up yet.
    pub fn connect_unix(path: &Path, timeout: Duration) -> Result<Agent> {
        Agent::connect_unix_until(path, timeout, &|| false)
    }

    /// [`Agent::connect_unix`] that gives up (with [`Error::Interrupted`])
    /// as soon as `stop` says so, checked every two seconds at most.
    pub fn connect_unix_until(
        path: &Path,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Agent> {
        let peer = format!("guest agent {}", path.display());
        Agent::connect_with(&peer, timeout, stop, || {
            Ok(Sock::Unix(connect_unix(path, timeout)?))
        })
    }

    /// Connects to the agent's chardev on `host:port` over TLS (QEMU's
    /// `tls-creds`), the server's certificate verified per `tls`, then
    /// synchronises as [`Agent::connect_unix`] does.
    pub fn connect_tls(
        addr: &str,
        tls: &crate::tls::TlsConfig,
        timeout: Duration,
    ) -> Result<Agent> {
        let peer = format!("guest agent {addr}");
        Agent::connect_with(&peer, timeout, &|| false, || {
            let s = std::net::TcpStream::connect(addr)
                .map_err(Error::io(format!("connecting to the {peer}")))?;
            tls.wrap(s, &peer)
        })
    }

    fn connect_with(
        peer: &str,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
        connect: impl Fn() -> Result<Sock>,
    ) -> Result<Agent> {
        let start = Instant::now();
        loop {
            if stop() {
                return Err(Error::Interrupted {
                    what: format!("waiting for the {peer}"),
                });
            }
            let chan = JsonLines::new(peer.to_string(), connect()?)?;
            let mut a = Agent {
                chan,
                timeout: Duration::from_secs(30),
                next_id: 0,
            };
            let left = timeout.saturating_sub(start.elapsed());
            match a.sync(left.min(Duration::from_secs(2))) {
                Ok(()) => return Ok(a),
                Err(Error::Timeout { .. }) if start.elapsed() < timeout => continue,
                // A guest still booting may echo our bytes back on its
                // serial line before the agent owns it: start over.
                Err(Error::Protocol { .. }) if start.elapsed() < timeout => continue,
                Err(Error::Timeout { .. }) => {
                    return Err(Error::Timeout {
                        what: format!("the {peer} to answer"),
                        seconds: timeout.as_secs_f64(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn sync(&mut self, wait: Duration) -> Result<()> {
        let id = u64::from(std::process::id()) << 32
            | u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(7),
            );
        // 0xFF makes the agent drop any partial request it holds.
        self.chan.send_raw(&[0xFF])?;
        self.chan
            .send(&json!({ "execute": "guest-sync", "arguments": { "id": id } }))?;
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.chan.recv(left, "the reply to guest-sync")?;
            if v["return"].as_u64() == Some(id) {
                return Ok(());
            }
        }
    }

    /// Sets how long one command may take (default 30 s).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// Runs `command` and returns its `return` value.
    pub fn execute_value(&mut self, command: &str, arguments: Value) -> Result<Value> {
        // A unique id per command: a reply to an earlier command that
        // timed out is skipped instead of taken for this one's.
        self.next_id += 1;
        let id = format!("sb-{}", self.next_id);
        let mut req = json!({ "execute": command, "id": id });
        if !arguments.is_null() {
            req["arguments"] = arguments;
        }
        self.chan.send(&req)?;
        let deadline = Instant::now() + self.timeout;
        let v = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.chan.recv(left, &format!("the reply to {command}"))?;
            if v.get("id").and_then(Value::as_str) == Some(id.as_str()) {
                break v;
            }
        };
        if let Some(r) = v.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = v.get("error") {
            return Err(Error::Agent {
                command: command.to_string(),
                class: e["class"].as_str().unwrap_or("?").to_string(),
                desc: e["desc"].as_str().unwrap_or("?").to_string(),
            });
        }
        Err(Error::Protocol {
            peer: self.chan.peer().to_string(),
            detail: format!("unexpected message {v}"),
        })
    }

    fn execute<T: DeserializeOwned>(&mut self, command: &str, arguments: Value) -> Result<T> {
        let v = self.execute_value(command, arguments)?;
        serde_json::from_value(v).map_err(|e| Error::Protocol {
            peer: self.chan.peer().to_string(),
            detail: format!("reply to {command}: {e}"),
        })
    }

    /// `guest-ping`.
    pub fn ping(&mut self) -> Result<()> {
        self.execute_value("guest-ping", Value::Null).map(|_| ())
    }

    /// `guest-fsfreeze-freeze`: runs the guest's freeze hook, then freezes
    /// every mounted file system. Returns how many were frozen.
    pub fn fsfreeze_freeze(&mut self) -> Result<u64> {
        self.execute("guest-fsfreeze-freeze", Value::Null)
    }

    /// `guest-fsfreeze-thaw`. Returns how many file systems were thawed.
    pub fn fsfreeze_thaw(&mut self) -> Result<u64> {
        self.execute("guest-fsfreeze-thaw", Value::Null)
    }

    /// `guest-fsfreeze-status`: "thawed" or "frozen".
    pub fn fsfreeze_status(&mut self) -> Result<String> {
        self.execute("guest-fsfreeze-status", Value::Null)
    }

    /// `guest-shutdown` (power off). The agent sends no reply when it works.
    pub fn shutdown(&mut self) -> Result<()> {
        self.chan
            .send(&json!({ "execute": "guest-shutdown", "arguments": { "mode": "powerdown" } }))
    }

    /// Runs `path args...` in the guest (`guest-exec` with output captured)
    /// and waits at most `timeout` for it to exit.
    pub fn exec(&mut self, path: &str, args: &[&str], timeout: Duration) -> Result<ExecOutput> {
        #[derive(Deserialize)]
        struct Pid {
            pid: i64,
        }
        let Pid { pid } = self.execute(
            "guest-exec",
            json!({ "path": path, "arg": args, "capture-output": true }),
        )?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let st: ExecStatus = self.execute("guest-exec-status", json!({ "pid": pid }))?;
            if st.exited {
                let decode = |s: Option<String>| s.map(|s| b64_decode(&s)).unwrap_or_default();
                return Ok(ExecOutput {
                    exit_code: st.exitcode.unwrap_or(128 + st.signal.unwrap_or(0)),
                    stdout: decode(st.out),
                    stderr: decode(st.err),
                });
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("guest command {path} to exit"),
                    seconds: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// [`Agent::exec`] of `/bin/sh -c script`, failing unless it exits 0;
    /// returns stdout.
    pub fn sh(&mut self, script: &str, timeout: Duration) -> Result<String> {
        let out = self.exec("/bin/sh", &["-c", script], timeout)?;
        if out.exit_code != 0 {
            return Err(Error::Agent {
                command: format!("guest-exec sh -c {script:.80}"),
                class: format!("exit {}", out.exit_code),
                desc: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Standard base64 (the agent's encoding of captured output).
fn b64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_padding() {
        assert_eq!(super::b64_decode("NDEKNDEK"), b"41\n41\n");
        assert_eq!(super::b64_decode("YQ=="), b"a");
        assert_eq!(super::b64_decode("YWI="), b"ab");
    }
}
