//! A small typed QMP client: line-delimited JSON over a unix socket or TCP.
//!
//! Why not the `qapi` crate: its `qapi-qmp` 0.15 is marked passively
//! maintained, generates every type of one vendored QEMU schema at build
//! time (long compiles on small CI machines) and pins that schema's version;
//! standby needs about twenty commands, whose shapes are stable across QEMU
//! releases and typed here with serde.

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::wire::{JsonLines, Sock, connect_unix};

/// How long one command may take before the client gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Events kept in [`Qmp::events`] (the oldest are dropped).
pub const MAX_EVENTS: usize = 256;

/// A QMP connection in command mode (capabilities negotiated).
pub struct Qmp {
    chan: JsonLines,
    timeout: Duration,
    /// Events received while waiting for replies, oldest first (at most
    /// [`MAX_EVENTS`]).
    pub events: Vec<Value>,
    /// QEMU's version from the greeting (major, minor, micro).
    pub version: (u64, u64, u64),
    /// The `id` prefix of this connection's commands, and a counter.
    id_prefix: String,
    next_id: u64,
}

/// One entry of `query-named-block-nodes` (fields standby uses).
#[derive(Debug, Clone, Deserialize)]
pub struct BlockNode {
    #[serde(rename = "node-name")]
    pub node_name: String,
    pub drv: String,
    pub file: String,
    #[serde(default)]
    pub image: Option<ImageInfo>,
    #[serde(rename = "dirty-bitmaps", default)]
    pub dirty_bitmaps: Vec<DirtyBitmap>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    /// Bytes.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    pub format: String,
}

/// A dirty bitmap as QEMU reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct DirtyBitmap {
    /// Empty for the anonymous bitmaps block jobs use.
    #[serde(default)]
    pub name: String,
    /// Bytes per bit.
    pub granularity: u64,
    /// Dirty bytes (a multiple of the granularity, except at the disk's end).
    pub count: u64,
    #[serde(default)]
    pub recording: bool,
    #[serde(default)]
    pub persistent: bool,
    #[serde(default)]
    pub busy: bool,
    #[serde(default)]
    pub inconsistent: bool,
}

/// One entry of `query-block-jobs`.
#[derive(Debug, Clone, Deserialize)]
pub struct BlockJob {
    pub device: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
}

impl Qmp {
    /// Connects to a QMP unix socket (retrying while QEMU starts, up to
    /// `timeout`) and negotiates capabilities.
    pub fn connect_unix(path: &Path, timeout: Duration) -> Result<Qmp> {
        let s = connect_unix(path, timeout)?;
        Qmp::handshake(format!("QMP {}", path.display()), Sock::Unix(s))
    }

    /// Connects to QMP on `host:port` (plain TCP: loopback only; use
    /// [`Qmp::connect_tls`] for other hosts).
    pub fn connect_tcp(addr: &str) -> Result<Qmp> {
        let s = TcpStream::connect(addr).map_err(Error::io(format!("connecting to QMP {addr}")))?;
        Qmp::handshake(format!("QMP {addr}"), Sock::Tcp(s))
    }

    /// Connects to QMP on `host:port` over TLS (QEMU's chardev with
    /// `tls-creds`), the server's certificate verified per `tls`; fails
    /// after 30 s when the handshake gets no answer (the chardev serves one
    /// client at a time).
    pub fn connect_tls(addr: &str, tls: &crate::tls::TlsConfig) -> Result<Qmp> {
        let s = TcpStream::connect(addr).map_err(Error::io(format!("connecting to QMP {addr}")))?;
        let peer = format!("QMP {addr}");
        let sock = tls.wrap(s, &peer)?;
        Qmp::handshake(peer, sock)
    }

    fn handshake(peer: String, sock: Sock) -> Result<Qmp> {
        let mut chan = JsonLines::new(peer, sock)?;
        let greeting = chan.recv(DEFAULT_TIMEOUT, "the QMP greeting")?;
        let v = &greeting["QMP"]["version"]["qemu"];
        let version = (
            v["major"].as_u64().unwrap_or(0),
            v["minor"].as_u64().unwrap_or(0),
            v["micro"].as_u64().unwrap_or(0),
        );
        if greeting.get("QMP").is_none() {
            return Err(Error::Protocol {
                peer: chan.peer().to_string(),
                detail: format!("expected a QMP greeting, got {greeting}"),
            });
        }
        let mut q = Qmp {
            chan,
            timeout: DEFAULT_TIMEOUT,
            events: Vec::new(),
            version,
            id_prefix: format!(
                "sb{}.{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)
            ),
            next_id: 0,
        };
        q.execute_value("qmp_capabilities", Value::Null)?;
        Ok(q)
    }

    /// Runs `command` with `arguments` (`Value::Null` for none) and returns
    /// its `return` value; a QMP error becomes [`Error::Qmp`].
    pub fn execute_value(&mut self, command: &str, arguments: Value) -> Result<Value> {
        // Every command carries a unique id and only the reply with that id
        // counts: QEMU delivers the reply to a command whose client
        // disconnected (a killed process) to the next client of the socket.
        self.next_id += 1;
        let id = format!("{}-{}", self.id_prefix, self.next_id);
        let mut req = json!({ "execute": command, "id": id });
        if !arguments.is_null() {
            req["arguments"] = arguments;
        }
        self.chan.send(&req)?;
        loop {
            let v = self
                .chan
                .recv(self.timeout, &format!("the reply to {command}"))?;
            if v.get("event").is_some() {
                // Kept for inspection, bounded: a long-lived connection
                // sees events from every point's jobs.
                if self.events.len() >= MAX_EVENTS {
                    self.events.remove(0);
                }
                self.events.push(v);
                continue;
            }
            if v.get("id").and_then(Value::as_str) != Some(id.as_str()) {
                continue; // a reply meant for an earlier client
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(Error::Qmp {
                    command: command.to_string(),
                    class: e["class"].as_str().unwrap_or("?").to_string(),
                    desc: e["desc"].as_str().unwrap_or("?").to_string(),
                });
            }
            return Err(Error::Protocol {
                peer: self.chan.peer().to_string(),
                detail: format!("unexpected message {v}"),
            });
        }
    }

    /// [`Qmp::execute_value`] with the reply parsed into `T`.
    pub fn execute<T: DeserializeOwned>(&mut self, command: &str, arguments: Value) -> Result<T> {
        let v = self.execute_value(command, arguments)?;
        serde_json::from_value(v).map_err(|e| Error::Protocol {
            peer: self.chan.peer().to_string(),
            detail: format!("reply to {command}: {e}"),
        })
    }

    /// `query-status`: the run state ("running", "paused", ...).
    pub fn status(&mut self) -> Result<String> {
        let v = self.execute_value("query-status", Value::Null)?;
        Ok(v["status"].as_str().unwrap_or("unknown").to_string())
    }

    /// `query-named-block-nodes` (flat: one entry per node).
    pub fn block_nodes(&mut self) -> Result<Vec<BlockNode>> {
        self.execute("query-named-block-nodes", json!({ "flat": true }))
    }

    /// The root node of every block device (`query-block`'s
    /// `inserted.node-name`; a block job's filter while one runs).
    pub fn device_roots(&mut self) -> Result<Vec<String>> {
        let v = self.execute_value("query-block", Value::Null)?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["inserted"]["node-name"].as_str().map(str::to_string))
            .collect())
    }

    /// The node named `node`, or an error naming it.
    pub fn block_node(&mut self, node: &str) -> Result<BlockNode> {
        self.block_nodes()?
            .into_iter()
            .find(|n| n.node_name == node)
            .ok_or_else(|| Error::Cbt {
                node: node.to_string(),
                detail: "QEMU has no block node of that name".into(),
            })
    }

    /// `query-block-jobs`.
    pub fn block_jobs(&mut self) -> Result<Vec<BlockJob>> {
        self.execute("query-block-jobs", Value::Null)
    }

    /// Waits (polling `query-block-jobs`, at most `timeout`) until job `id`
    /// is gone.
    pub fn wait_job_gone(&mut self, id: &str, timeout: Duration) -> Result<()> {
        let start = std::time::Instant::now();
        while self.block_jobs()?.iter().any(|j| j.device == id) {
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("block job {id} to end"),
                    seconds: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// `system_powerdown`: ACPI power button.
    pub fn system_powerdown(&mut self) -> Result<()> {
        self.execute_value("system_powerdown", Value::Null)
            .map(|_| ())
    }

    /// `quit`: QEMU exits at once (no guest shutdown).
    pub fn quit(&mut self) -> Result<()> {
        match self.execute_value("quit", Value::Null) {
            Ok(_) => Ok(()),
            // QEMU may close the socket before the reply arrives.
            Err(Error::Io { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
