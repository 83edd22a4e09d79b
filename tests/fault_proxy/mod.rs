//! A TCP proxy on loopback that injects network faults between standby and
//! a storage server (Azurite, moto): in `Chaos` mode some connections stall,
//! are reset (RST) or are cut short (truncated) after a random number of
//! bytes; in `Pass` mode it only forwards.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Stall,
    Reset,
    Truncate,
}

/// Faults injected so far, by kind.
#[derive(Debug, Default)]
pub struct Counts {
    pub stalls: AtomicU64,
    pub resets: AtomicU64,
    pub truncations: AtomicU64,
    pub connections: AtomicU64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
            + self.resets.load(Ordering::Relaxed)
            + self.truncations.load(Ordering::Relaxed)
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    chaos: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    pub counts: Arc<Counts>,
}

impl Proxy {
    /// Forward 127.0.0.1:<new port> to `upstream`; in chaos mode about
    /// `percent` of the connections get a fault; `seed` drives the choices.
    pub fn start(upstream: SocketAddr, percent: u64, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let chaos = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let rng = Arc::new(Mutex::new(seed | 1));
        {
            let (chaos, stop, counts) = (chaos.clone(), stop.clone(), counts.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            counts.connections.fetch_add(1, Ordering::Relaxed);
                            let plan = if chaos.load(Ordering::Relaxed) {
                                let mut r = rng.lock().unwrap();
                                let roll = next(&mut r);
                                // Most faults land in the headers, so
                                // they fire even on short exchanges.
                                let after = match next(&mut r) % 4 {
                                    0 => next(&mut r) % 65_536,
                                    _ => next(&mut r) % 512,
                                };
                                let upload = next(&mut r).is_multiple_of(2);
                                if roll % 100 >= percent {
                                    None
                                } else {
                                    let kind = match next(&mut r) % 3 {
                                        0 => Fault::Stall,
                                        1 => Fault::Reset,
                                        _ => Fault::Truncate,
                                    };
                                    Some((kind, after, upload))
                                }
                            } else {
                                None
                            };
                            let counts = counts.clone();
                            std::thread::spawn(move || serve(client, upstream, plan, &counts));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => return,
                    }
                }
            });
        }
        Proxy {
            addr,
            chaos,
            stop,
            counts,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Inject faults from now on (true) or only forward (false).
    pub fn chaos(&self, on: bool) {
        self.chaos.store(on, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Close with RST instead of FIN.
fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    plan: Option<(Fault, u64, bool)>,
    counts: &Arc<Counts>,
) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    // The fault hits one direction: the upload (request) or the response.
    let (up_plan, down_plan) = match plan {
        Some((f, after, true)) => (Some((f, after)), None),
        Some((f, after, false)) => (None, Some((f, after))),
        None => (None, None),
    };
    let up_counts = counts.clone();
    let up = std::thread::spawn(move || pump(c2, s2, up_plan, &up_counts));
    pump(server, client, down_plan, counts);
    let _ = up.join();
}

fn pump(mut from: TcpStream, mut to: TcpStream, plan: Option<(Fault, u64)>, counts: &Counts) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent: u64 = 0;
    let mut fired = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let (Some((fault, after)), false) = (plan, fired)
            && sent + n as u64 > after
        {
            fired = true;
            match fault {
                Fault::Stall => {
                    counts.stalls.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1500));
                }
                Fault::Reset => {
                    counts.resets.fetch_add(1, Ordering::Relaxed);
                    reset(&to);
                    reset(&from);
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
                Fault::Truncate => {
                    counts.truncations.fetch_add(1, Ordering::Relaxed);
                    let keep = (after - sent) as usize;
                    let _ = to.write_all(&buf[..keep.min(n)]);
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = to.shutdown(Shutdown::Write);
}
