//! Benchmark driver (bench/instant.sh runs it): the time from `failover
//! test --instant` to checks passing (RTO) for a VM with a 1 GiB and an
//! 8 GiB data disk (median of `STANDBY_BENCH_REPEAT`, default 3), beside
//! a full-restore test failover of the same
//! points, through the real binary on the test guest. Not a test: it
//! prints the numbers and the ratios (goal: instant differs by at most 20%
//! between the sizes; the full restore grows).
//!
//! Per size: `quickstart --qemu` (the guest, vault and plan `shop`), the
//! database VM's data disk replaced by a sparse qcow2 of that size with
//! `STANDBY_BENCH_DATA_EIGHTHS`/8 of it (default 1) random data (64 MiB
//! runs spread over the disk), both VMs
//! started without the writer (nothing mounts the data disk), one
//! `replicate`, VMs stopped; then `failover test shop --instant` and
//! `failover test shop`, each followed by `failover cleanup shop`, RTO
//! from each run's report.json.
//!
//! `STANDBY_BENCH_FULL=0` skips the full-restore runs.
//!
//! `cargo run --example instant_bench -- [WORKDIR] [STANDBY_BINARY]`

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const MACHINES: &str = include_str!("../testdata/instant/machines.hcl");

fn run(bin: &Path, dir: &Path, args: &[&str]) -> (Duration, String) {
    let t = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run standby");
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "standby {args:?}: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (took, text)
}

fn tool(cmd: &mut Command) {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `STANDBY_BENCH_DATA_EIGHTHS` (1-8), else 1: eighths of each data disk
/// filled with random data.
fn data_eighths() -> u64 {
    std::env::var("STANDBY_BENCH_DATA_EIGHTHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=8).contains(n))
        .unwrap_or(1)
}

/// A sparse raw image of `size` with `STANDBY_BENCH_DATA_EIGHTHS`/8
/// (default 1/8) random data in 64 MiB runs, converted to the qcow2 the
/// VM runs on.
fn data_disk(qcow2: &Path, size: u64) {
    let raw = qcow2.with_extension("raw");
    let mut f = std::fs::File::create(&raw).unwrap();
    f.set_len(size).unwrap();
    let runs = size * data_eighths() / 8 / (64 * MIB);
    let stride = size / runs;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; (64 * MIB) as usize];
    for i in 0..runs {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.seek(SeekFrom::Start(i * stride)).unwrap();
        f.write_all(&buf).unwrap();
    }
    drop(f);
    let _ = std::fs::remove_file(qcow2);
    tool(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(qcow2),
    );
    std::fs::remove_file(&raw).unwrap();
}

fn rto(report: &Path) -> f64 {
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    r["rto"]["seconds"].as_f64().expect("RTO")
}

struct Figures {
    gib: u64,
    instant: f64,
    instant_wall: f64,
    full: f64,
    full_wall: f64,
    served: String,
}

/// `quickstart --qemu` with the database VM's data disk at `gib`, one
/// point of both VMs; returns the directory.
fn setup(bin: &Path, work: &Path, gib: u64, guest_cache: &Path) -> PathBuf {
    let d = work.join(format!("instant-{gib}g"));
    let _ = std::fs::remove_dir_all(&d);
    let out = Command::new(bin)
        .args(["quickstart", "--qemu"])
        .arg(&d)
        .env("STANDBY_GUEST_CACHE", guest_cache)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "quickstart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(d.join("machines.hcl"), MACHINES).unwrap();
    data_disk(&d.join("sites/hv1/db/data.qcow2"), gib * GIB);
    let cfg = standby::config::load(&d, &Default::default())
        .unwrap_or_else(|e| panic!("{}", e.render(false)))
        .config;
    let mut running = Vec::new();
    for m in cfg.machines.values() {
        running.push(standby::operations::vms::start(&cfg, m).expect("start VM"));
    }
    let (took, _) = run(bin, &d, &["replicate"]);
    eprintln!("{gib} GiB: replicate {:.1} s", took.as_secs_f64());
    let site = d.join("sites/hv1");
    for name in ["app", "db"] {
        if let Ok(Some(v)) = standby_provider_qemu::vm::Vm::open(name, &site) {
            let _ = v.stop(Duration::from_secs(30));
        }
    }
    drop(running);
    d
}

/// One instant test failover and its cleanup: RTO, wall time and what
/// each export served, fetched and asked of the vault (the report's
/// `copy` entries).
fn instant_once(bin: &Path, d: &Path, gib: u64) -> (f64, f64, String) {
    let rep = d.join("report-instant");
    let (wall, _) = run(
        bin,
        d,
        &[
            "failover",
            "test",
            "shop",
            "--instant",
            "--point",
            "latest",
            "--report-dir",
            &rep.to_string_lossy(),
        ],
    );
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rep.join("report.json")).unwrap()).unwrap();
    let served = r["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "copy")
        .map(|e| {
            format!(
                "{} {}: {}",
                e["machine"].as_str().unwrap_or(""),
                e["name"].as_str().unwrap_or(""),
                e["detail"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n    ");
    let rto = rto(&rep);
    eprintln!("{gib} GiB: instant RTO {rto:.1} s");
    run(bin, d, &["failover", "cleanup", "shop"]);
    (rto, wall.as_secs_f64(), served)
}

/// A full-restore test failover and its cleanup: RTO and wall time.
fn full_once(bin: &Path, d: &Path, gib: u64) -> (f64, f64) {
    let rep = d.join("report-full");
    let (wall, _) = run(
        bin,
        d,
        &[
            "failover",
            "test",
            "shop",
            "--point",
            "latest",
            "--report-dir",
            &rep.to_string_lossy(),
        ],
    );
    let full = rto(&rep);
    eprintln!("{gib} GiB: full-restore RTO {full:.1} s");
    run(bin, d, &["failover", "cleanup", "shop"]);
    (full, wall.as_secs_f64())
}

/// Every size set up first, then the instant runs taken in turns across
/// the sizes (1, 8, 1, 8, ...) so the shared machine's load moves both
/// alike; median per size. Then one full-restore run per size.
fn measure(bin: &Path, work: &Path, sizes: &[u64], guest_cache: &Path) -> Vec<Figures> {
    let dirs: Vec<PathBuf> = sizes
        .iter()
        .map(|&g| setup(bin, work, g, guest_cache))
        .collect();
    let repeat: usize = std::env::var("STANDBY_BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new(); sizes.len()];
    let mut served = vec![String::new(); sizes.len()];
    for _ in 0..repeat {
        for (i, (&g, d)) in sizes.iter().zip(&dirs).enumerate() {
            let (r, w, s) = instant_once(bin, d, g);
            runs[i].push((r, w));
            served[i] = s;
        }
    }
    let full = !std::env::var("STANDBY_BENCH_FULL").is_ok_and(|v| v == "0");
    let mut figs = Vec::new();
    for (i, (&gib, d)) in sizes.iter().zip(&dirs).enumerate() {
        runs[i].sort_by(|a, b| a.0.total_cmp(&b.0));
        let (instant, instant_wall) = runs[i][runs[i].len() / 2];
        let (full, full_wall) = if full {
            full_once(bin, d, gib)
        } else {
            (f64::NAN, f64::NAN)
        };
        if std::env::var_os("STANDBY_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(d);
        }
        figs.push(Figures {
            gib,
            instant,
            instant_wall,
            full,
            full_wall,
            served: std::mem::take(&mut served[i]),
        });
    }
    figs
}

fn main() {
    let mut args = std::env::args().skip(1);
    let work = PathBuf::from(args.next().unwrap_or_else(|| "/var/tmp".into()));
    let bin = PathBuf::from(args.next().expect("the standby binary"));
    let bin = std::path::absolute(&bin).unwrap();
    let target = bin.parent().and_then(Path::parent).unwrap().to_path_buf();
    let guest_cache = target.join("standby-guest");
    standby_provider_qemu::guest::ensure(&guest_cache).expect("the test guest");
    let sizes: Vec<u64> = std::env::var("STANDBY_BENCH_SIZES_GIB")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8]);
    let figs = measure(&bin, &work, &sizes, &guest_cache);
    println!(
        "test failover of plans/qemu's two VMs (two groups), RTO = start to the last check passing"
    );
    println!("| data disk | instant RTO (median) | instant wall | full-restore RTO | full wall |");
    println!("|---|---|---|---|---|");
    for f in &figs {
        println!(
            "| {} GiB ({} MiB data) | {:.1} s | {:.1} s | {:.1} s | {:.1} s |",
            f.gib,
            f.gib * 128 * data_eighths(),
            f.instant,
            f.instant_wall,
            f.full,
            f.full_wall
        );
    }
    for f in &figs {
        println!(
            "{} GiB, instant, per disk (last run):\n    {}",
            f.gib, f.served
        );
    }
    if let (Some(a), Some(b)) = (figs.first(), figs.last())
        && figs.len() > 1
    {
        println!(
            "instant {} GiB / {} GiB: {:.2}x (goal: within 1.2x); full restore: {:.2}x",
            b.gib,
            a.gib,
            b.instant / a.instant,
            b.full / a.full
        );
    }
}
