//! Sealing: zstd (skipped when it does not pay) then AES-256-GCM with a
//! random 96-bit nonce. The associated data binds the header flag and the
//! object's name or blob id, so a swapped or altered object fails to open.
//!
//! Layout: `flag(1) | nonce(12) | AES-GCM(len(8, LE) | body) | tag(16)`;
//! flag 1 = body is zstd, 0 = body is raw.

use crate::direct_io::AlignedBuf;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use std::cell::RefCell;

const RAW: u8 = 0;
const ZSTD: u8 = 1;
/// Bytes a sealed object carries beyond its body.
pub const OVERHEAD: usize = 1 + 12 + 8 + 16;
/// Largest plaintext we agree to inflate: a damaged length cannot make us allocate more.
const MAX_PLAIN: u64 = 1 << 32;

/// Why sealed bytes could not be opened; the caller names the object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("too short to be a sealed object")]
    Short,
    #[error("authentication failed (altered, truncated, swapped, or sealed under another key)")]
    Auth,
    #[error("its compressed body does not inflate to the recorded length")]
    Inflate,
}

/// Opened bytes; derefs to the plain text (avoids moving a raw body).
#[derive(Debug, PartialEq, Eq)]
pub struct Plain {
    buf: Vec<u8>,
    start: usize,
}

impl Plain {
    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.drain(..self.start);
        self.buf
    }
}

impl std::ops::Deref for Plain {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// One AES-256-GCM key with the compression policy.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    /// Decrypted compressed bodies, reused by [`Sealer::open_aligned`].
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut slot = c.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, comp) = slot.as_mut()?;
        comp.compress(data).ok()
    })
}

/// Cheap guess whether zstd will pay: compress two 16 KiB samples first.
fn worth_compressing(data: &[u8], level: i32) -> bool {
    const SAMPLE: usize = 16 * 1024;
    if data.len() < 4 * SAMPLE {
        return true;
    }
    let mid = data.len() / 2;
    let samples = [&data[..SAMPLE], &data[mid..mid + SAMPLE]];
    let packed: usize = samples
        .iter()
        .map(|s| compress(s, level).map_or(SAMPLE, |c| c.len()))
        .sum();
    packed < 2 * SAMPLE * 95 / 100
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// Compress (when it pays) and seal `plain`, bound to `context`.
    pub fn seal(&self, plain: &[u8], level: i32, context: &[u8]) -> Vec<u8> {
        let compressed = if worth_compressing(plain, level) {
            compress(plain, level).filter(|c| c.len() < plain.len())
        } else {
            None
        };
        let (flag, body) = match &compressed {
            Some(c) => (ZSTD, c.as_slice()),
            None => (RAW, plain),
        };
        let nonce: [u8; 12] = rand::random();
        let mut out = Vec::with_capacity(body.len() + OVERHEAD);
        out.push(flag);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&(plain.len() as u64).to_le_bytes());
        out.extend_from_slice(body);
        let ad = associated(flag, context);
        // Encrypting a buffer shorter than 64 GiB cannot fail.
        let tag = self
            .cipher
            .encrypt_inout_detached(&Nonce::from(nonce), &ad, (&mut out[13..]).into())
            .unwrap_or_default();
        out.extend_from_slice(tag.as_slice());
        out
    }

    /// Authenticate and open sealed bytes made by [`Sealer::seal`] with the same context.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Plain, OpenError> {
        let (flag, nonce, body, tag) = split(sealed)?;
        let mut buf = body.to_vec();
        let ad = associated(flag, context);
        self.cipher
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                &ad,
                buf.as_mut_slice().into(),
                &tag.into(),
            )
            .map_err(|_| OpenError::Auth)?;
        let len = u64::from_le_bytes(buf[..8].try_into().map_err(|_| OpenError::Short)?);
        if len > MAX_PLAIN {
            return Err(OpenError::Inflate);
        }
        if flag == RAW {
            if buf.len() - 8 != len as usize {
                return Err(OpenError::Inflate);
            }
            return Ok(Plain { buf, start: 8 });
        }
        let out = DECOMPRESSOR.with(|d| {
            let mut slot = d.borrow_mut();
            if slot.is_none() {
                *slot = zstd::bulk::Decompressor::new().ok();
            }
            slot.as_mut()
                .and_then(|dec| dec.decompress(&buf[8..], len as usize).ok())
        });
        match out {
            Some(o) if o.len() == len as usize => Ok(Plain { buf: o, start: 0 }),
            _ => Err(OpenError::Inflate),
        }
    }
}

/// The parts of a sealed object: flag, nonce, ciphertext (`len | body`), tag.
type Parts<'a> = (u8, [u8; 12], &'a [u8], [u8; 16]);

fn split(sealed: &[u8]) -> Result<Parts<'_>, OpenError> {
    if sealed.len() < OVERHEAD {
        return Err(OpenError::Short);
    }
    let flag = sealed[0];
    if flag != RAW && flag != ZSTD {
        return Err(OpenError::Auth);
    }
    let nonce: [u8; 12] = sealed[1..13].try_into().map_err(|_| OpenError::Short)?;
    let tag_at = sealed.len() - 16;
    let tag: [u8; 16] = sealed[tag_at..].try_into().map_err(|_| OpenError::Short)?;
    Ok((flag, nonce, &sealed[13..tag_at], tag))
}

impl Sealer {
    /// Like [`Sealer::open`], but the plain text lands in `out` (reused
    /// between calls) at a 4 KiB-aligned address, ready for a direct write.
    /// A raw body is decrypted straight into place, without a copy.
    pub fn open_aligned<'o>(
        &self,
        sealed: &[u8],
        context: &[u8],
        out: &'o mut AlignedBuf,
    ) -> Result<&'o [u8], OpenError> {
        let (flag, nonce, cipher, tag) = split(sealed)?;
        let ad = associated(flag, context);
        let decrypt = |dst: &mut [u8]| {
            let io = InOutBuf::new(cipher, dst).map_err(|_| OpenError::Short)?;
            self.cipher
                .decrypt_inout_detached(&Nonce::from(nonce), &ad, io, &tag.into())
                .map_err(|_| OpenError::Auth)?;
            let len = u64::from_le_bytes(dst[..8].try_into().map_err(|_| OpenError::Short)?);
            if len > MAX_PLAIN {
                return Err(OpenError::Inflate);
            }
            Ok(len as usize)
        };
        if flag == RAW {
            // The 8-byte length goes just before the aligned start.
            let dst = out.region(8, cipher.len() - 8);
            let len = decrypt(dst)?;
            if len != dst.len() - 8 {
                return Err(OpenError::Inflate);
            }
            let dst: &'o [u8] = dst;
            return Ok(&dst[8..]);
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.resize(cipher.len(), 0);
            let len = decrypt(&mut scratch)?;
            let dst = out.aligned(len);
            let got = DECOMPRESSOR.with(|d| {
                let mut slot = d.borrow_mut();
                if slot.is_none() {
                    *slot = zstd::bulk::Decompressor::new().ok();
                }
                slot.as_mut()
                    .and_then(|dec| dec.decompress_to_buffer(&scratch[8..], &mut *dst).ok())
            });
            match got {
                Some(n) if n == len => {
                    let dst: &'o [u8] = dst;
                    Ok(dst)
                }
                _ => Err(OpenError::Inflate),
            }
        })
    }
}

fn associated(flag: u8, context: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(1 + context.len());
    ad.push(flag);
    ad.extend_from_slice(context);
    ad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_compressible_and_random() {
        let s = Sealer::new(&[7; 32]);
        let text = b"hello hello hello hello ".repeat(10_000);
        let sealed = s.seal(&text, 1, b"ctx");
        assert!(sealed.len() < text.len() / 10);
        assert_eq!(&*s.open(&sealed, b"ctx").unwrap(), &text[..]);
        let random: Vec<u8> = (0..300_000).map(|_| rand::random::<u8>()).collect();
        let sealed = s.seal(&random, 1, b"ctx");
        assert_eq!(sealed[0], RAW);
        assert_eq!(&*s.open(&sealed, b"ctx").unwrap(), &random[..]);
    }

    #[test]
    fn open_aligned_matches_open_and_is_aligned() {
        let s = Sealer::new(&[7; 32]);
        let text = b"hello hello hello hello ".repeat(10_000);
        let random: Vec<u8> = (0..300_000).map(|_| rand::random::<u8>()).collect();
        let mut out = AlignedBuf::new();
        for plain in [&text[..], &random[..], b"short"] {
            let sealed = s.seal(plain, 1, b"ctx");
            let got = s.open_aligned(&sealed, b"ctx", &mut out).unwrap();
            assert_eq!(got, plain);
            assert!((got.as_ptr() as usize).is_multiple_of(crate::direct_io::ALIGN));
            assert_eq!(
                s.open_aligned(&sealed, b"other", &mut out),
                Err(OpenError::Auth)
            );
            for i in [0, 5, 13, 20, sealed.len() / 2, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[i] ^= 0x01;
                assert!(
                    s.open_aligned(&bad, b"ctx", &mut out).is_err(),
                    "flip at {i}"
                );
            }
        }
    }

    #[test]
    fn any_flipped_bit_or_other_context_fails() {
        let s = Sealer::new(&[7; 32]);
        let sealed = s.seal(b"some data worth keeping", 1, b"ctx");
        assert_eq!(s.open(&sealed, b"other"), Err(OpenError::Auth));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(
                s.open(&bad, b"ctx").is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
        assert!(Sealer::new(&[8; 32]).open(&sealed, b"ctx").is_err());
    }
}
