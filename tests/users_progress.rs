//! Progress that tells the truth (issue 12, item 6), through the real
//! binary: on a terminal (a pty from `script`) the replicate and restore
//! bars fit 80 columns, never show `0 B/0 B` or a missing value, and count
//! data, not holes; off a terminal no bar at all (no carriage returns, no
//! escape codes), only plain lines.

mod common;

use common::{ok, quickstart, standby, text};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

/// Run standby ARGS in `dir` under a pseudo-terminal 80 columns wide; the
/// raw bytes the terminal received.
fn on_a_terminal(dir: &Path, args: &str) -> String {
    on_a_terminal_sized(dir, "cols 80 rows 24", args)
}

/// As [`on_a_terminal`], the terminal sized by `stty SIZE`.
fn on_a_terminal_sized(dir: &Path, size: &str, args: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_standby");
    let o = Command::new("script")
        .arg("-qfec")
        .arg(format!("stty {size}; {bin} -C {} {args}", dir.display()))
        .arg("/dev/null")
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The frames a terminal shows: split at \r and \n, escape codes removed.
fn frames(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in raw.split(['\r', '\n']) {
        let mut s = String::new();
        let mut chars = part.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                // CSI: ESC [ params final-letter
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                continue;
            }
            s.push(c);
        }
        if !s.trim().is_empty() {
            out.push(s);
        }
    }
    out
}

fn short(s: &str) -> &str {
    &s[..s.len().min(2000)]
}

#[test]
fn bars_fit_the_terminal_and_count_data_not_holes() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 8, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    // A mostly-hole disk: 256 MiB apparent, 8 MiB of data.
    let sparse = qs.join("sites/onprem/web/system.img");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&sparse)
        .unwrap();
    f.set_len(256 << 20).unwrap();
    f.write_all_at(&vec![0x42; 8 << 20], 128 << 20).unwrap();
    drop(f);

    let raw = on_a_terminal(&qs, "replicate");
    let shown = frames(&raw);
    let bars: Vec<&String> = shown.iter().filter(|l| l.contains(" read, ")).collect();
    for l in &shown {
        assert!(!l.contains("0 B/0 B"), "{l}");
    }
    for l in &bars {
        assert!(
            l.chars().count() <= 80,
            "wider than the terminal ({}): {l}",
            l.chars().count()
        );
        assert!(!l.contains("0 B/0 B"), "{l}");
        assert!(
            !l.contains(",  stored") && !l.ends_with("read, "),
            "a missing value: {l}"
        );
    }
    // Whatever the bar showed, its total is the data to read, far below
    // the 256 MiB the sparse disk pretends to be.
    assert!(!bars.is_empty(), "no bar on a terminal:\n{}", short(&raw));
    for b in &bars {
        let total = b
            .split_once('/')
            .and_then(|(_, rest)| rest.split_once(" MiB read"))
            .and_then(|(n, _)| n.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no MiB total in {b}"));
        assert!(total < 128.0, "the total counts holes: {b}");
    }
    assert!(
        shown
            .iter()
            .any(|l| l.starts_with("protection.web: point ")),
        "{}",
        short(&raw)
    );

    let out = on_a_terminal(
        &qs,
        "restore latest --machine machine.web --disk system --to restored.img",
    );
    for l in frames(&out).iter().filter(|l| l.contains(" written")) {
        assert!(l.chars().count() <= 80, "{l}");
        assert!(!l.contains("0 B/0 B") && !l.contains(" read"), "{l}");
    }
    assert!(
        out.contains("restored disk system of point"),
        "{}",
        short(&out)
    );

    // Off a terminal: plain lines only.
    let o = standby(&qs).arg("replicate").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    assert!(
        err.starts_with("replicating group shop into vault.main"),
        "{err}"
    );
}

/// The bar fits the terminal's real width, not an assumed 80 columns, also
/// when the terminal reports no rows (as under `script` by default).
#[test]
fn the_bar_fits_a_narrow_terminal() {
    let d = tempfile::tempdir().unwrap();
    let qs = quickstart(d.path(), 64, 8);
    ok(&qs, &["apply", "--auto-approve"]);
    let img = qs.join("sites/onprem/db/system.img");
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&vec![0x42; 32 << 20], 16 << 20).unwrap();
    drop(f);
    for size in ["cols 50", "cols 50 rows 20"] {
        let raw = on_a_terminal_sized(&qs, size, "replicate");
        let shown = frames(&raw);
        let bars: Vec<&String> = shown.iter().filter(|l| l.contains(" read, ")).collect();
        assert!(!bars.is_empty(), "{size}: no bar:\n{}", short(&raw));
        for l in &bars {
            assert!(
                l.chars().count() <= 50,
                "{size}: wider than the terminal ({}): {l}",
                l.chars().count()
            );
        }
    }
}
