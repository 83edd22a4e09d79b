//! An NBD client for exactly what changed-block tracking needs: the fixed
//! newstyle handshake, `NBD_OPT_STRUCTURED_REPLY`, `NBD_OPT_SET_META_CONTEXT`
//! (`base:allocation`, `qemu:dirty-bitmap:NAME`), `NBD_OPT_GO`,
//! `NBD_CMD_READ` and `NBD_CMD_BLOCK_STATUS`, over a unix socket or TCP;
//! and, for failback onto a writable export, `NBD_CMD_WRITE` and
//! `NBD_CMD_FLUSH`.
//!
//! Why our own: the `nbd` crate speaks neither structured replies nor
//! `BLOCK_STATUS`, and libnbd's Rust bindings are not published. The
//! protocol is the one in NBD's `doc/proto.md`; the client is tested
//! against QEMU's own export, `qemu-nbd` and `nbdkit`.
//!
//! Reads are pipelined ([`READ_DEPTH`] requests in flight, reply chunks
//! matched by cookie); other commands go one at a time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::error::{Error, Result};
use crate::wire::Sock;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943; // "NBDMAGIC"
const IHAVEOPT: u64 = 0x4948_4156_454f_5054; // "IHAVEOPT"
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;

const OPT_ABORT: u32 = 2;
const OPT_STARTTLS: u32 = 5;
const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const OPT_SET_META_CONTEXT: u32 = 10;

const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_META_CONTEXT: u32 = 4;
const REP_ERR_BIT: u32 = 1 << 31;

const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_BLOCK_STATUS: u16 = 7;

const REPLY_FLAG_DONE: u16 = 1;
const REPLY_TYPE_NONE: u16 = 0;
const REPLY_TYPE_OFFSET_DATA: u16 = 1;
const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;

/// Transmission flag: the export is read-only.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;

/// `base:allocation` flags.
pub const STATE_HOLE: u32 = 1;
pub const STATE_ZERO: u32 = 2;
/// `qemu:dirty-bitmap:NAME` flag.
pub const STATE_DIRTY: u32 = 1;

/// The largest single read this client sends (QEMU allows 32 MiB).
pub const MAX_READ: u32 = 4 << 20;
/// Reads in flight at once (pipelining hides the round trip).
pub const READ_DEPTH: usize = 8;
/// [`Client::next_chunk`]'s type for a simple reply.
const SIMPLE: u16 = u16::MAX;

/// One run of bytes with the same status flags in one meta context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset.
    pub offset: u64,
    /// Bytes.
    pub length: u64,
    /// The context's flags (see `STATE_*`).
    pub flags: u32,
}

/// Where the server listens.
#[derive(Debug, Clone)]
pub enum Address<'a> {
    Unix(&'a Path),
    /// `host:port`.
    Tcp(&'a str),
    /// `host:port`, upgraded with `NBD_OPT_STARTTLS` before any other
    /// option (the server's certificate verified).
    Tls(&'a str, &'a crate::tls::TlsConfig),
}

/// An open NBD connection in the transmission phase.
pub struct Client {
    sock: Sock,
    peer: String,
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// Block size constraints (minimum, preferred, maximum) if the server
    /// sent them.
    pub block_size: Option<(u32, u32, u32)>,
    /// Negotiated meta contexts: (id, name).
    pub contexts: Vec<(u32, String)>,
    next_cookie: u64,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn rep_error_name(t: u32) -> &'static str {
    match t & !REP_ERR_BIT {
        1 => "unsupported",
        2 => "forbidden by policy",
        3 => "invalid",
        4 => "unsupported on this platform",
        5 => "TLS required",
        6 => "unknown export",
        7 => "server shutting down",
        8 => "block size required",
        9 => "request too big",
        _ => "error",
    }
}

fn errno_name(e: u32) -> &'static str {
    match e {
        1 => "EPERM",
        5 => "EIO",
        12 => "ENOMEM",
        22 => "EINVAL",
        28 => "ENOSPC",
        75 => "EOVERFLOW",
        95 => "ENOTSUP",
        108 => "ESHUTDOWN",
        _ => "unknown",
    }
}

impl Client {
    /// Connects, negotiates structured replies and the meta `contexts`
    /// (e.g. `["base:allocation", "qemu:dirty-bitmap:b0"]`; empty for none)
    /// for `export`, and enters transmission with `NBD_OPT_GO`. Errors:
    /// a server that is not fixed-newstyle, refuses structured replies or
    /// the export (the server's message included), or does not know one of
    /// the requested contexts.
    pub fn connect(addr: Address<'_>, export: &str, contexts: &[&str]) -> Result<Client> {
        let (sock, peer) = match addr {
            Address::Unix(p) => (
                Sock::Unix(
                    UnixStream::connect(p)
                        .map_err(Error::io(format!("connecting to NBD {}", p.display())))?,
                ),
                format!("NBD {}", p.display()),
            ),
            Address::Tcp(a) | Address::Tls(a, _) => {
                let s =
                    TcpStream::connect(a).map_err(Error::io(format!("connecting to NBD {a}")))?;
                let _ = s.set_nodelay(true);
                (Sock::Tcp(s), format!("NBD {a}"))
            }
        };
        let tls = match addr {
            Address::Tls(_, t) => Some(t),
            _ => None,
        };
        let mut c = Client {
            sock,
            peer,
            size: 0,
            flags: 0,
            block_size: None,
            contexts: Vec::new(),
            next_cookie: 1,
        };
        if let Err(e) = c.handshake(export, contexts, tls) {
            // Tell the server we are leaving (best effort), so it does not
            // log a broken negotiation.
            let _ = c.send_option(OPT_ABORT, &[]);
            return Err(e);
        }
        Ok(c)
    }

    fn io_err(&self, what: &str) -> impl FnOnce(std::io::Error) -> Error + use<> {
        Error::io(format!("{} with {}", what, self.peer))
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let e = self.io_err(what);
        self.sock.read_exact(buf).map_err(e)
    }

    fn write_all(&mut self, buf: &[u8], what: &str) -> Result<()> {
        let e = self.io_err(what);
        self.sock.write_all(buf).map_err(e)
    }

    fn protocol(&self, detail: impl Into<String>) -> Error {
        Error::Protocol {
            peer: self.peer.clone(),
            detail: detail.into(),
        }
    }

    fn handshake(
        &mut self,
        export: &str,
        contexts: &[&str],
        tls: Option<&crate::tls::TlsConfig>,
    ) -> Result<()> {
        let mut hello = [0u8; 18];
        self.read_exact(&mut hello, "reading the NBD greeting")?;
        if be64(&hello[0..]) != NBDMAGIC || be64(&hello[8..]) != IHAVEOPT {
            return Err(self.protocol("not a newstyle NBD server (bad greeting magic)"));
        }
        let server_flags = be16(&hello[16..]);
        if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(self.protocol("the server does not speak fixed newstyle"));
        }
        let client_flags = u32::from(FLAG_FIXED_NEWSTYLE | (server_flags & FLAG_NO_ZEROES));
        self.write_all(&client_flags.to_be_bytes(), "sending client flags")?;

        if let Some(t) = tls {
            self.send_option(OPT_STARTTLS, &[])?;
            let (ty, data) = self.read_option_reply(OPT_STARTTLS)?;
            if ty != REP_ACK {
                return Err(Error::NbdRefused {
                    what: "TLS (NBD_OPT_STARTTLS)".into(),
                    detail: self.rep_detail(ty, &data),
                });
            }
            let Sock::Tcp(tcp) = std::mem::replace(&mut self.sock, Sock::Closed) else {
                return Err(self.protocol("TLS over a non-TCP socket"));
            };
            self.sock = t.wrap(tcp, &self.peer)?;
        }

        // Structured replies: needed for BLOCK_STATUS and sparse reads.
        let first = self
            .send_option(OPT_STRUCTURED_REPLY, &[])
            .and_then(|()| self.read_option_reply(OPT_STRUCTURED_REPLY));
        let (t, data) = match (first, tls) {
            // TLS 1.3 tells a client that its certificate was refused only
            // by the server hanging up after the handshake.
            (Err(e), Some(t)) => {
                let who = match &t.client {
                    Some((cert, _)) => format!("this client's certificate {}", cert.display()),
                    None => "a client without a certificate (a server with verify-peer=on needs cert and key)".into(),
                };
                return Err(Error::Tls {
                    peer: self.peer.clone(),
                    detail: format!(
                        "the server ended the session before its first reply; it refused {who} ({e})"
                    ),
                });
            }
            (r, _) => r?,
        };
        if t != REP_ACK {
            return Err(Error::NbdRefused {
                what: "structured replies".into(),
                detail: self.rep_detail(t, &data),
            });
        }

        if !contexts.is_empty() {
            let mut d = Vec::new();
            d.extend_from_slice(&(export.len() as u32).to_be_bytes());
            d.extend_from_slice(export.as_bytes());
            d.extend_from_slice(&(contexts.len() as u32).to_be_bytes());
            for q in contexts {
                d.extend_from_slice(&(q.len() as u32).to_be_bytes());
                d.extend_from_slice(q.as_bytes());
            }
            self.send_option(OPT_SET_META_CONTEXT, &d)?;
            loop {
                let (t, data) = self.read_option_reply(OPT_SET_META_CONTEXT)?;
                match t {
                    REP_META_CONTEXT if data.len() >= 4 => {
                        let id = be32(&data);
                        let name = String::from_utf8_lossy(&data[4..]).into_owned();
                        self.contexts.push((id, name));
                    }
                    REP_ACK => break,
                    _ => {
                        return Err(Error::NbdRefused {
                            what: format!("meta contexts {contexts:?}"),
                            detail: self.rep_detail(t, &data),
                        });
                    }
                }
            }
            for q in contexts {
                if !self.contexts.iter().any(|(_, n)| n == q) {
                    return Err(Error::NbdRefused {
                        what: format!("meta context {q} on export {export:?}"),
                        detail: "the server does not offer it (unknown bitmap name?)".into(),
                    });
                }
            }
        }

        let mut d = Vec::new();
        d.extend_from_slice(&(export.len() as u32).to_be_bytes());
        d.extend_from_slice(export.as_bytes());
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        self.send_option(OPT_GO, &d)?;
        let mut got_export = false;
        loop {
            let (t, data) = self.read_option_reply(OPT_GO)?;
            match t {
                REP_INFO if data.len() >= 2 => match be16(&data) {
                    INFO_EXPORT if data.len() >= 12 => {
                        self.size = be64(&data[2..]);
                        self.flags = be16(&data[10..]);
                        got_export = true;
                    }
                    INFO_BLOCK_SIZE if data.len() >= 14 => {
                        self.block_size =
                            Some((be32(&data[2..]), be32(&data[6..]), be32(&data[10..])));
                    }
                    _ => {}
                },
                REP_ACK => break,
                _ => {
                    return Err(Error::NbdRefused {
                        what: format!("export {export:?}"),
                        detail: self.rep_detail(t, &data),
                    });
                }
            }
        }
        if !got_export {
            return Err(self.protocol("NBD_OPT_GO ended without NBD_INFO_EXPORT"));
        }
        Ok(())
    }

    fn rep_detail(&self, t: u32, data: &[u8]) -> String {
        if t & REP_ERR_BIT != 0 {
            let msg = String::from_utf8_lossy(data);
            if msg.is_empty() {
                rep_error_name(t).to_string()
            } else {
                format!("{}: {msg}", rep_error_name(t))
            }
        } else {
            format!("unexpected reply type {t}")
        }
    }

    fn send_option(&mut self, opt: u32, data: &[u8]) -> Result<()> {
        let mut b = Vec::with_capacity(16 + data.len());
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.write_all(&b, "sending an NBD option")
    }

    fn read_option_reply(&mut self, opt: u32) -> Result<(u32, Vec<u8>)> {
        let mut h = [0u8; 20];
        self.read_exact(&mut h, "reading an NBD option reply")?;
        if be64(&h) != REPLY_MAGIC {
            return Err(self.protocol("bad option reply magic"));
        }
        if be32(&h[8..]) != opt {
            return Err(self.protocol(format!(
                "reply to option {} while waiting for {opt}",
                be32(&h[8..])
            )));
        }
        let t = be32(&h[12..]);
        let len = be32(&h[16..]) as usize;
        if len > 64 << 10 {
            return Err(self.protocol(format!("option reply of {len} bytes")));
        }
        let mut data = vec![0u8; len];
        self.read_exact(&mut data, "reading an NBD option reply")?;
        Ok((t, data))
    }

    /// The id of negotiated meta context `name`.
    pub fn context_id(&self, name: &str) -> Option<u32> {
        self.contexts
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| *id)
    }

    fn send_request(&mut self, cmd: u16, flags: u16, offset: u64, length: u32) -> Result<u64> {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let mut b = [0u8; 28];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&flags.to_be_bytes());
        b[6..8].copy_from_slice(&cmd.to_be_bytes());
        b[8..16].copy_from_slice(&cookie.to_be_bytes());
        b[16..24].copy_from_slice(&offset.to_be_bytes());
        b[24..28].copy_from_slice(&length.to_be_bytes());
        self.write_all(&b, "sending an NBD request")?;
        Ok(cookie)
    }

    /// Reads one reply chunk into `payload`: (cookie, final chunk?, type).
    /// A simple reply comes back as type [`SIMPLE`] with its errno as a
    /// 4-byte payload. Structured error chunks are returned as they are.
    fn next_chunk(&mut self, payload: &mut Vec<u8>) -> Result<(u64, bool, u16)> {
        let mut m = [0u8; 4];
        self.read_exact(&mut m, "reading an NBD reply")?;
        match be32(&m) {
            SIMPLE_REPLY_MAGIC => {
                let mut h = [0u8; 12];
                self.read_exact(&mut h, "reading an NBD reply")?;
                payload.clear();
                payload.extend_from_slice(&h[..4]);
                Ok((be64(&h[4..]), true, SIMPLE))
            }
            STRUCTURED_REPLY_MAGIC => {
                let mut h = [0u8; 16];
                self.read_exact(&mut h, "reading an NBD reply")?;
                let len = be32(&h[12..]) as usize;
                if len > (MAX_READ as usize) + 64 {
                    return Err(self.protocol(format!("reply chunk of {len} bytes")));
                }
                payload.resize(len, 0);
                let mut p = std::mem::take(payload);
                let r = self.read_exact(&mut p, "reading an NBD reply");
                *payload = p;
                r?;
                Ok((
                    be64(&h[4..]),
                    be16(&h) & REPLY_FLAG_DONE != 0,
                    be16(&h[2..]),
                ))
            }
            other => Err(self.protocol(format!("bad reply magic {other:#x}"))),
        }
    }

    /// The error a simple reply or an error chunk carries (None for others).
    fn chunk_error(command: &'static str, offset: u64, kind: u16, p: &[u8]) -> Option<Error> {
        if kind == SIMPLE {
            let errno = be32(p);
            return (errno != 0).then(|| Error::NbdCommand {
                command,
                offset,
                errno,
                detail: errno_name(errno).into(),
            });
        }
        if kind & REPLY_TYPE_ERROR_BIT == 0 {
            return None;
        }
        let errno = if p.len() >= 4 { be32(p) } else { 0 };
        let msg = if p.len() >= 6 {
            let n = be16(&p[4..]) as usize;
            String::from_utf8_lossy(&p[6..(6 + n).min(p.len())]).into_owned()
        } else {
            String::new()
        };
        Some(Error::NbdCommand {
            command,
            offset,
            errno,
            detail: if msg.is_empty() {
                errno_name(errno).into()
            } else {
                format!("{}: {msg}", errno_name(errno))
            },
        })
    }

    /// Reads the reply chunks of request `cookie` (the only one in flight),
    /// calling `chunk(type, payload)` for each non-error chunk, until the
    /// final one.
    fn read_replies(
        &mut self,
        command: &'static str,
        offset: u64,
        cookie: u64,
        mut chunk: impl FnMut(&Client, u16, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut payload = Vec::new();
        let mut error: Option<Error> = None;
        loop {
            let (c, done, kind) = self.next_chunk(&mut payload)?;
            if c != cookie {
                return Err(self.protocol("reply to another request"));
            }
            if kind == SIMPLE && Self::chunk_error(command, offset, kind, &payload).is_none() {
                // Structured replies were negotiated: a successful simple
                // reply means a broken server.
                return Err(
                    self.protocol("simple reply although structured replies were negotiated")
                );
            }
            match Self::chunk_error(command, offset, kind, &payload) {
                Some(e) => {
                    error.get_or_insert(e);
                }
                None if kind != REPLY_TYPE_NONE && error.is_none() => chunk(self, kind, &payload)?,
                None => {}
            }
            if done {
                return match error {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
        }
    }

    /// Reads `buf.len()` bytes at `offset` (any length). Requests of at
    /// most [`MAX_READ`] bytes are pipelined, [`READ_DEPTH`] in flight, and
    /// their reply chunks may come in any order. Holes read as zeros.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_many(&mut [(offset, buf)])
    }

    /// Reads every `(offset, buffer)` part, pipelined across parts as
    /// [`read`](Self::read) pipelines one: many short ranges (a point's
    /// scattered dirty extents) cost about one round trip per
    /// [`READ_DEPTH`] ranges instead of one each.
    pub fn read_many(&mut self, parts: &mut [(u64, &mut [u8])]) -> Result<()> {
        for (offset, buf) in parts.iter() {
            if offset
                .checked_add(buf.len() as u64)
                .is_none_or(|e| e > self.size)
            {
                return Err(Error::NbdCommand {
                    command: "READ",
                    offset: *offset,
                    errno: 22,
                    detail: format!("past the export's end ({} bytes)", self.size),
                });
            }
        }
        struct Req {
            cookie: u64,
            part: usize,
            rel: usize,
            len: usize,
            covered: u64,
            err: Option<Error>,
        }
        let mut inflight: Vec<Req> = Vec::new();
        let (mut part, mut next) = (0usize, 0usize);
        let mut payload = Vec::new();
        let mut failed: Option<Error> = None;
        loop {
            while part < parts.len() && inflight.len() < READ_DEPTH && failed.is_none() {
                let (offset, buf) = &parts[part];
                if next >= buf.len() {
                    (part, next) = (part + 1, 0);
                    continue;
                }
                let len = (buf.len() - next).min(MAX_READ as usize);
                let cookie = self.send_request(CMD_READ, 0, offset + next as u64, len as u32)?;
                inflight.push(Req {
                    cookie,
                    part,
                    rel: next,
                    len,
                    covered: 0,
                    err: None,
                });
                next += len;
            }
            if inflight.is_empty() {
                break;
            }
            let (cookie, done, kind) = self.next_chunk(&mut payload)?;
            let i = inflight
                .iter()
                .position(|r| r.cookie == cookie)
                .ok_or_else(|| self.protocol("reply to a request that is not in flight"))?;
            let r = &mut inflight[i];
            let (offset, buf) = &mut parts[r.part];
            let offset = *offset;
            let start = offset + r.rel as u64;
            let p = &payload;
            if let Some(e) = Self::chunk_error("READ", start, kind, p) {
                r.err.get_or_insert(e);
            } else if kind == SIMPLE {
                return Err(
                    self.protocol("simple reply although structured replies were negotiated")
                );
            } else if kind != REPLY_TYPE_NONE {
                let (at, len, data) = match kind {
                    REPLY_TYPE_OFFSET_DATA if p.len() >= 8 => {
                        (be64(p), p.len() as u64 - 8, Some(&p[8..]))
                    }
                    REPLY_TYPE_OFFSET_HOLE if p.len() >= 12 => {
                        (be64(p), u64::from(be32(&p[8..])), None)
                    }
                    _ => return Err(self.protocol(format!("unexpected chunk type {kind} to READ"))),
                };
                let rel = at
                    .checked_sub(start)
                    .filter(|a| a + len <= r.len as u64)
                    .ok_or_else(|| Error::Protocol {
                        peer: self.peer.clone(),
                        detail: "READ chunk outside its request".into(),
                    })? as usize;
                let dst = &mut buf[r.rel + rel..r.rel + rel + len as usize];
                match data {
                    Some(d) => dst.copy_from_slice(d),
                    None => dst.fill(0),
                }
                r.covered += len;
            }
            if done {
                let r = inflight.swap_remove(i);
                if let Some(e) = r.err {
                    failed.get_or_insert(e);
                } else if r.covered != r.len as u64 {
                    return Err(self.protocol(format!(
                        "READ of {} bytes at {} answered with {}",
                        r.len,
                        parts[r.part].0 + r.rel as u64,
                        r.covered
                    )));
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The extents of meta context `context` over `[offset, offset+length)`,
    /// contiguous, covering exactly that range (adjacent runs with equal
    /// flags merged). Asks repeatedly where the server answers for less.
    pub fn block_status(&mut self, context: &str, offset: u64, length: u64) -> Result<Vec<Extent>> {
        let id = self.context_id(context).ok_or_else(|| Error::NbdRefused {
            what: format!("meta context {context}"),
            detail: "it was not negotiated on this connection".into(),
        })?;
        let end = offset
            .checked_add(length)
            .filter(|e| *e <= self.size)
            .ok_or_else(|| Error::NbdCommand {
                command: "BLOCK_STATUS",
                offset,
                errno: 22,
                detail: format!("past the export's end ({} bytes)", self.size),
            })?;
        let mut out: Vec<Extent> = Vec::new();
        let mut at = offset;
        while at < end {
            // Ask for at most 1 GiB at a time (the length is a u32).
            let n = (end - at).min(1 << 30) as u32;
            let cookie = self.send_request(CMD_BLOCK_STATUS, 0, at, n)?;
            let mut got: Vec<(u64, u32)> = Vec::new();
            self.read_replies("BLOCK_STATUS", at, cookie, |c, kind, p| {
                if kind != REPLY_TYPE_BLOCK_STATUS || p.len() < 4 || (p.len() - 4) % 8 != 0 {
                    return Err(c.protocol(format!("unexpected chunk type {kind} to BLOCK_STATUS")));
                }
                if be32(p) == id {
                    for d in p[4..].chunks_exact(8) {
                        got.push((u64::from(be32(d)), be32(&d[4..])));
                    }
                }
                Ok(())
            })?;
            if got.is_empty() || got.iter().any(|(l, _)| *l == 0) {
                return Err(self.protocol(format!("BLOCK_STATUS at {at} made no progress")));
            }
            for (len, flags) in got {
                let len = len.min(end - at);
                if len == 0 {
                    break;
                }
                match out.last_mut() {
                    Some(last) if last.flags == flags && last.offset + last.length == at => {
                        last.length += len
                    }
                    _ => out.push(Extent {
                        offset: at,
                        length: len,
                        flags,
                    }),
                }
                at += len;
            }
        }
        Ok(out)
    }

    /// Writes `data` at `offset` (`NBD_CMD_WRITE`, at most [`MAX_READ`]
    /// bytes per request, one request at a time). Errors: a read-only
    /// export, a range past the end, the server's errno.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if self.flags & TFLAG_READ_ONLY != 0 {
            return Err(Error::NbdCommand {
                command: "WRITE",
                offset,
                errno: 1,
                detail: "the export is read-only".into(),
            });
        }
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|e| e > self.size)
        {
            return Err(Error::NbdCommand {
                command: "WRITE",
                offset,
                errno: 22,
                detail: format!("past the export's end ({} bytes)", self.size),
            });
        }
        for (i, piece) in data.chunks(MAX_READ as usize).enumerate() {
            let at = offset + (i * MAX_READ as usize) as u64;
            let cookie = self.send_request(CMD_WRITE, 0, at, piece.len() as u32)?;
            self.write_all(piece, "sending NBD write data")?;
            self.generic_reply("WRITE", at, cookie)?;
        }
        Ok(())
    }

    /// Makes every completed write durable on the server (`NBD_CMD_FLUSH`).
    pub fn flush(&mut self) -> Result<()> {
        let cookie = self.send_request(CMD_FLUSH, 0, 0, 0)?;
        self.generic_reply("FLUSH", 0, cookie)
    }

    /// The reply to a command that returns no data: QEMU answers those
    /// with a simple reply even when structured replies were negotiated
    /// (and with an error chunk on failure); both are accepted.
    fn generic_reply(&mut self, command: &'static str, offset: u64, cookie: u64) -> Result<()> {
        let mut payload = Vec::new();
        let mut error = None;
        loop {
            let (c, done, kind) = self.next_chunk(&mut payload)?;
            if c != cookie {
                return Err(self.protocol("reply to another request"));
            }
            if let Some(e) = Self::chunk_error(command, offset, kind, &payload) {
                error.get_or_insert(e);
            }
            if done {
                return error.map_or(Ok(()), Err);
            }
        }
    }

    /// Ends the connection politely (`NBD_CMD_DISC`).
    pub fn disconnect(mut self) -> Result<()> {
        self.send_request(CMD_DISC, 0, 0, 0).map(|_| ())
    }
}
