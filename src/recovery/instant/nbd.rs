//! A read-only NBD server (the protocol of `nbd.txt`/`proto.md`): fixed
//! newstyle handshake with `NBD_FLAG_NO_ZEROES`, options `NBD_OPT_GO`,
//! `NBD_OPT_INFO`, `NBD_OPT_EXPORT_NAME`, `NBD_OPT_LIST`, `NBD_OPT_ABORT`
//! (anything else, structured replies included, is refused with
//! `NBD_REP_ERR_UNSUP`, so clients fall back to simple replies), then
//! `NBD_CMD_READ` and `NBD_CMD_DISC`; writes and trims get `EPERM`. One
//! thread per client, requests answered in order. Exports one disk.

use super::reader::PointReader;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const CLIENT_NO_ZEROES: u32 = 2;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;

const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
const REP_ERR_INVALID: u32 = (1 << 31) + 3;
const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

const TFLAG_HAS_FLAGS: u16 = 1;
const TFLAG_READ_ONLY: u16 = 1 << 1;
/// Read-only: every connection sees the same bytes.
const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;

const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;

/// Largest read served in one request (QEMU asks for at most 32 MiB).
const MAX_REQUEST: u32 = 32 << 20;
/// Longest option payload accepted.
const MAX_OPTION: u32 = 64 << 10;

/// The export: its name and the disk behind it.
pub struct Export {
    pub name: String,
    pub reader: Arc<PointReader>,
}

/// Accept clients on `listener` until it fails; each client on its own
/// thread. Never returns `Ok` (the process serving it is ended by a
/// signal).
pub fn serve(listener: UnixListener, export: Arc<Export>) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept()?;
        let export = Arc::clone(&export);
        std::thread::spawn(move || {
            // A client that breaks the protocol or goes away ends its own
            // connection only.
            let _ = client(stream, &export);
        });
    }
}

fn client(mut s: UnixStream, export: &Export) -> io::Result<()> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello)?;
    let client_flags = read_u32(&mut s)?;
    if !matches!(options(&mut s, export, client_flags)?, Go::Transmit) {
        return Ok(());
    }
    transmission(&mut s, export)
}

enum Go {
    Transmit,
    Close,
}

fn options(s: &mut UnixStream, export: &Export, client_flags: u32) -> io::Result<Go> {
    loop {
        if read_u64(s)? != IHAVEOPT {
            return Ok(Go::Close);
        }
        let opt = read_u32(s)?;
        let len = read_u32(s)?;
        if len > MAX_OPTION {
            return Ok(Go::Close);
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;
        match opt {
            OPT_EXPORT_NAME => {
                if !name_matches(export, &data) {
                    // No way to refuse here but to hang up.
                    return Ok(Go::Close);
                }
                let mut out = Vec::new();
                out.extend_from_slice(&export.reader.size().to_be_bytes());
                out.extend_from_slice(&tflags().to_be_bytes());
                if client_flags & CLIENT_NO_ZEROES == 0 {
                    out.extend_from_slice(&[0u8; 124]);
                }
                s.write_all(&out)?;
                return Ok(Go::Transmit);
            }
            OPT_ABORT => {
                let _ = reply(s, opt, REP_ACK, &[]);
                return Ok(Go::Close);
            }
            OPT_LIST => {
                let mut d = (export.name.len() as u32).to_be_bytes().to_vec();
                d.extend_from_slice(export.name.as_bytes());
                reply(s, opt, REP_SERVER, &d)?;
                reply(s, opt, REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => {
                // u32 name length, name, u16 count, u16 info requests.
                let name = data
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .and_then(|n| data.get(4..4 + n));
                let Some(name) = name else {
                    reply(s, opt, REP_ERR_INVALID, b"malformed option")?;
                    continue;
                };
                if !name_matches(export, name) {
                    let msg = format!("no export {:?}", String::from_utf8_lossy(name));
                    reply(s, opt, REP_ERR_UNKNOWN, msg.as_bytes())?;
                    continue;
                }
                let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                info.extend_from_slice(&export.reader.size().to_be_bytes());
                info.extend_from_slice(&tflags().to_be_bytes());
                reply(s, opt, REP_INFO, &info)?;
                let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                bs.extend_from_slice(&1u32.to_be_bytes());
                bs.extend_from_slice(&4096u32.to_be_bytes());
                bs.extend_from_slice(&MAX_REQUEST.to_be_bytes());
                reply(s, opt, REP_INFO, &bs)?;
                reply(s, opt, REP_ACK, &[])?;
                if opt == OPT_GO {
                    return Ok(Go::Transmit);
                }
            }
            _ => reply(s, opt, REP_ERR_UNSUP, &[])?,
        }
    }
}

/// The default export ("") is this one too.
fn name_matches(export: &Export, name: &[u8]) -> bool {
    name.is_empty() || name == export.name.as_bytes()
}

fn tflags() -> u16 {
    TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_CAN_MULTI_CONN
}

fn reply(s: &mut UnixStream, opt: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    s.write_all(&out)
}

fn transmission(s: &mut UnixStream, export: &Export) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let mut h = [0u8; 28];
        s.read_exact(&mut h)?;
        let magic = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        if magic != REQUEST_MAGIC {
            return Ok(());
        }
        let kind = u16::from_be_bytes([h[6], h[7]]);
        let cookie = &h[8..16];
        let offset = u64::from_be_bytes(h[16..24].try_into().unwrap_or_default());
        let len = u32::from_be_bytes([h[24], h[25], h[26], h[27]]);
        match kind {
            CMD_READ => {
                let within = offset
                    .checked_add(len as u64)
                    .is_some_and(|e| e <= export.reader.size());
                if len > MAX_REQUEST || !within {
                    simple(s, EINVAL, cookie, &[])?;
                    continue;
                }
                buf.resize(len as usize, 0);
                match export.reader.read_at(offset, &mut buf) {
                    Ok(()) => simple(s, 0, cookie, &buf)?,
                    // The vault failed or is damaged: the guest sees an I/O
                    // error, never wrong bytes.
                    Err(_) => simple(s, EIO, cookie, &[])?,
                }
            }
            CMD_DISC => return Ok(()),
            CMD_WRITE => {
                // Its payload follows; read it off before refusing.
                io::copy(&mut (&mut *s).take(len as u64), &mut io::sink())?;
                simple(s, EPERM, cookie, &[])?;
            }
            // Flush of a read-only export has nothing to do.
            3 => simple(s, 0, cookie, &[])?,
            // Trim, write zeroes and the rest: not on a read-only export.
            _ => simple(s, EPERM, cookie, &[])?,
        }
    }
}

fn simple(s: &mut UnixStream, error: u32, cookie: &[u8], data: &[u8]) -> io::Result<()> {
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    h.extend_from_slice(&error.to_be_bytes());
    h.extend_from_slice(cookie);
    s.write_all(&h)?;
    if !data.is_empty() {
        s.write_all(data)?;
    }
    Ok(())
}

fn read_u32(s: &mut UnixStream) -> io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(s: &mut UnixStream) -> io::Result<u64> {
    let mut b = [0u8; 8];
    s.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}
