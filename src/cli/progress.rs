//! Progress of long transfers (replicate, restore) on stderr. On a terminal
//! a bar that fits its width, counting what is really read (data, not holes)
//! and stored or written, shown only once the total is known (never
//! `0 B/0 B`); off a terminal a plain line every [`LOG_EVERY`] instead, so a
//! CI log gets lines, not carriage returns. Sizes in `crate::human` style.

use crate::human::size;
use crate::progress::Progress;
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often a plain progress line is printed off a terminal.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// What the transfer does, for its wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// Reading disks into the vault: `read` of the data to read, `stored`.
    Replicate,
    /// Writing a point's data out: `written` of the data to write.
    Restore,
}

/// `12.0 MiB/80.0 MiB read, 1.2 MiB stored`, or `None` before the total is known.
pub(crate) fn status(work: Work, total: u64, read: u64, stored: u64) -> Option<String> {
    if total == 0 {
        return None;
    }
    // Never past the total, whatever the counters' order of updates.
    let read = read.min(total);
    Some(match work {
        Work::Replicate => format!(
            "{}/{} read, {} stored",
            size(read),
            size(total),
            size(stored)
        ),
        Work::Restore => format!("{}/{} written", size(read), size(total)),
    })
}

/// Run `f` while showing `progress` on stderr (see the module docs).
pub(crate) fn with_progress<T>(progress: &Progress, work: Work, f: impl FnOnce() -> T) -> T {
    let tty = std::io::stderr().is_terminal();
    // Dropping the sender ends the display at once (a sleeping loop would
    // add up to its period to every command's run time).
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let running = move |pause: Duration| {
        matches!(
            stop.recv_timeout(pause),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        )
    };
    let now = || {
        status(
            work,
            progress.total.load(Ordering::Relaxed),
            progress.read.load(Ordering::Relaxed),
            progress.stored.load(Ordering::Relaxed),
        )
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            if tty {
                let bar = indicatif::ProgressBar::hidden();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{wide_bar} {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                let mut shown = false;
                loop {
                    if let Some(msg) = now() {
                        if !shown {
                            bar.set_draw_target(indicatif::ProgressDrawTarget::term_like(
                                Box::new(Stderr),
                            ));
                            shown = true;
                        }
                        bar.set_length(progress.total.load(Ordering::Relaxed));
                        bar.set_position(progress.read.load(Ordering::Relaxed));
                        bar.set_message(msg);
                    }
                    // Look often until the total is known, so even a short
                    // run shows its bar; then redraw at 10 Hz.
                    if !running(Duration::from_millis(if shown { 100 } else { 10 })) {
                        break;
                    }
                }
                bar.finish_and_clear();
            } else {
                while running(LOG_EVERY) {
                    if let Some(msg) = now() {
                        eprintln!("  {msg}");
                    }
                }
            }
        });
        let out = f();
        drop(done);
        out
    })
}

/// Columns of the terminal on stderr, read now; `None` when unknown. Only
/// the columns: under `script` or a serial console the rows are often 0,
/// which makes some libraries give up on the size and assume 80 columns.
fn stderr_columns() -> Option<u16> {
    // SAFETY: TIOCGWINSZ writes one `winsize` into the zeroed, owned value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(ws.ws_col)
}

/// The terminal on stderr for the bar, its width read at each draw (a
/// resized terminal gets a bar that fits on the next one), 80 columns when
/// unknown.
#[derive(Debug)]
struct Stderr;

impl Stderr {
    fn put(&self, s: &str) -> std::io::Result<()> {
        std::io::Write::write_all(&mut std::io::stderr().lock(), s.as_bytes())
    }
}

impl indicatif::TermLike for Stderr {
    fn width(&self) -> u16 {
        stderr_columns().unwrap_or(80)
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            Ok(())
        } else {
            self.put(&format!("\x1b[{n}A"))
        }
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            Ok(())
        } else {
            self.put(&format!("\x1b[{n}B"))
        }
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            Ok(())
        } else {
            self.put(&format!("\x1b[{n}C"))
        }
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            Ok(())
        } else {
            self.put(&format!("\x1b[{n}D"))
        }
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::Write::flush(&mut std::io::stderr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_bar_before_the_total_and_never_past_it() {
        assert_eq!(status(Work::Replicate, 0, 0, 0), None);
        assert_eq!(
            status(Work::Replicate, 80 << 20, 81 << 20, 1 << 20).as_deref(),
            Some("80.0 MiB/80.0 MiB read, 1.0 MiB stored")
        );
        assert_eq!(
            status(Work::Restore, 4096, 2048, 2048).as_deref(),
            Some("2.0 KiB/4.0 KiB written")
        );
    }
}
