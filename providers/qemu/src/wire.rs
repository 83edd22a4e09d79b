//! Line-delimited JSON over a unix or TCP socket: the transport of QMP and
//! the guest agent.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};

/// A connected socket, unix or TCP.
pub(crate) enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// Taken apart (while being upgraded to TLS); every I/O fails.
    Closed,
}

fn closed() -> std::io::Error {
    std::io::ErrorKind::NotConnected.into()
}

impl Sock {
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Sock::Unix(s) => s.set_read_timeout(t),
            Sock::Tcp(s) => s.set_read_timeout(t),
            Sock::Tls(s) => s.sock.set_read_timeout(t),
            Sock::Closed => Err(closed()),
        }
    }
}

impl std::io::Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Unix(s) => s.read(buf),
            Sock::Tcp(s) => s.read(buf),
            Sock::Tls(s) => s.read(buf),
            Sock::Closed => Err(closed()),
        }
    }
}

impl std::io::Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sock::Unix(s) => s.write(buf),
            Sock::Tcp(s) => s.write(buf),
            Sock::Tls(s) => s.write(buf),
            Sock::Closed => Err(closed()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sock::Unix(s) => s.flush(),
            Sock::Tcp(s) => s.flush(),
            Sock::Tls(s) => s.flush(),
            Sock::Closed => Err(closed()),
        }
    }
}

/// Connects to a unix socket, retrying until `timeout` while it does not
/// exist yet or refuses (QEMU creates it while starting).
pub(crate) fn connect_unix(path: &Path, timeout: Duration) -> Result<UnixStream> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e)
                if start.elapsed() < timeout
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(Error::Io {
                    context: format!("connecting to {}", path.display()),
                    source: e,
                });
            }
        }
    }
}

/// A JSON-lines channel with a per-read deadline.
pub(crate) struct JsonLines {
    peer: String,
    /// Reads are buffered; writes go to the socket underneath (a TLS
    /// stream cannot be cloned into a reader and a writer).
    reader: BufReader<Sock>,
    line: Vec<u8>,
}

impl JsonLines {
    pub(crate) fn new(peer: String, sock: Sock) -> Result<JsonLines> {
        Ok(JsonLines {
            peer,
            reader: BufReader::new(sock),
            line: Vec::new(),
        })
    }

    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    pub(crate) fn send(&mut self, v: &Value) -> Result<()> {
        let mut bytes = serde_json::to_vec(v).map_err(|e| Error::Protocol {
            peer: self.peer.clone(),
            detail: e.to_string(),
        })?;
        bytes.push(b'\n');
        self.send_raw(&bytes)
    }

    /// Sends raw bytes (a line, or the guest agent's 0xFF resync marker).
    ///
    /// Over TLS a lone newline follows in a record of its own: QEMU 7.2's
    /// TLS chardevs (monitor and agent alike) act on a record only once
    /// more bytes arrive after it, so without the newline every reply
    /// comes one command late (seen with rustls and Python's `ssl`). The
    /// newline is whitespace to both JSON parsers.
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let w = self.reader.get_mut();
        let tls = matches!(w, Sock::Tls(_));
        w.write_all(bytes)
            .and_then(|()| w.flush())
            .and_then(|()| {
                if tls {
                    w.write_all(b"\n").and_then(|()| w.flush())
                } else {
                    Ok(())
                }
            })
            .map_err(Error::io(format!("writing to {}", self.peer)))
    }

    /// Reads one JSON object, waiting at most `timeout`. Lines that are not
    /// JSON objects (a resync's 0xFF, blank lines) are skipped.
    pub(crate) fn recv(&mut self, timeout: Duration, what: &str) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!("{what} from {}", self.peer),
                    seconds: timeout.as_secs_f64(),
                });
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(Error::io(format!("setting a timeout on {}", self.peer)))?;
            match self.reader.read_until(b'\n', &mut self.line) {
                Ok(0) => {
                    return Err(Error::Io {
                        context: format!("reading {what} from {}", self.peer),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    });
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    // read_until keeps what it read in `line`; wait for the rest.
                    continue;
                }
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("reading {what} from {}", self.peer),
                        source: e,
                    });
                }
            }
            if self.line.last() != Some(&b'\n') {
                continue; // EOF mid-line is reported by the next read
            }
            let text: Vec<u8> = self.line.iter().copied().filter(|b| *b != 0xFF).collect();
            self.line.clear();
            let text = String::from_utf8_lossy(&text);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(text) {
                Ok(v) if v.is_object() => return Ok(v),
                Ok(_) | Err(_) if !text.starts_with('{') => continue,
                Ok(_) | Err(_) => {
                    return Err(Error::Protocol {
                        peer: self.peer.clone(),
                        detail: format!("not a JSON object: {text:.200}"),
                    });
                }
            }
        }
    }
}
