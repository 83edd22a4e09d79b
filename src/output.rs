//! Printing that never panics. `println!`/`print!`/`eprintln!`/`eprint!`
//! in `cli` (the only room that prints; the crate denies std's printing
//! everywhere else) are the macros defined in `lib.rs`, which end here: when
//! the reader of standard output (or error) goes away (`standby drill shop
//! | head -1`), further output to that stream is dropped quietly and the
//! command goes on (a recovery run must still finish, clean up and record
//! itself); std's macros would panic on the broken pipe instead.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Write `args` (and a newline when `newline`) to standard output; after
/// the first write error (a closed pipe, a full disk) output is dropped.
pub fn stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    write(&mut std::io::stdout().lock(), &STDOUT_CLOSED, args, newline);
}

/// [`stdout`] for standard error.
pub fn stderr(args: std::fmt::Arguments<'_>, newline: bool) {
    write(&mut std::io::stderr().lock(), &STDERR_CLOSED, args, newline);
}

fn write(out: &mut impl Write, closed: &AtomicBool, args: std::fmt::Arguments<'_>, newline: bool) {
    if closed.load(Ordering::Relaxed) {
        return;
    }
    let r = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if r.is_err() {
        closed.store(true, Ordering::Relaxed);
    }
}

/// Whether standard output was found closed (its reader went away).
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Standard output as an [`std::io::Write`], for output written in pieces
/// (`points --json` of a large vault, through a `BufWriter`), with the
/// macros' rule: after the first write error the rest is dropped quietly
/// and every write reports success, so the command goes on.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !STDOUT_CLOSED.load(Ordering::Relaxed)
            && std::io::stdout().lock().write_all(buf).is_err()
        {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !STDOUT_CLOSED.load(Ordering::Relaxed) && std::io::stdout().flush().is_err() {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}
