//! Benchmark driver (bench/qemu_cbt.sh runs it): a `standby replicate`
//! point of a running VM through changed-block tracking against a point of
//! the same disk through today's file path, both through the real binary,
//! cold page cache for both. Not a test: it prints the numbers and the
//! ratio.
//!
//! The disk: 4 GiB, all of it data, every 4 KiB block unique
//! (`STANDBY_BENCH_DATA_GIB` writes only the first N GiB; text with a
//! random header by default, all random with `STANDBY_BENCH_RANDOM=1`), as
//! a qcow2 image the VM runs on
//! (`machine.vmdb` at a `qemu` site) and as a raw copy on a `local` site
//! (`machine.filedb`). After both protections' first points (`apply`), the
//! guest writes 4 MiB (64 scattered writes of 64 KiB, direct I/O) and the
//! same 64 writes go into the raw copy; then a point of each. That is one
//! round; `STANDBY_BENCH_ROUNDS` (default 3) rounds run and the median
//! ratio is reported beside each round's. Cold cache: `posix_fadvise
//! (DONTNEED)` on both images (other users' caches stay); with
//! `STANDBY_BENCH_DROP_CACHES=1` also `echo 3 > /proc/sys/vm/drop_caches`.
//! `STANDBY_BENCH_KEEP=1` leaves the VM running and its directory in place.
//!
//! `cargo run --example qemu_cbt_bench -- [WORKDIR] [STANDBY_BINARY]`

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use standby_provider_qemu::guest;
use standby_provider_qemu::qga::Agent;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn cold(paths: &[&Path]) {
    for p in paths {
        let f = File::open(p).expect("open for fadvise");
        // SAFETY: fadvise on an fd we own.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
    if std::env::var_os("STANDBY_BENCH_DROP_CACHES").is_some() {
        let _ = Command::new("sync").status();
        if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
            eprintln!("drop_caches: {e}");
        }
    }
}

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

fn newest(bin: &Path, dir: &Path, machine: &str) -> serde_json::Value {
    let (_, text) = run(bin, dir, &["points", "--json"]);
    let v: Vec<serde_json::Value> = serde_json::from_str(&text).expect("points --json");
    v.into_iter()
        .rev()
        .find(|p| p["machine"] == machine)
        .expect("a point")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let work = args.next().unwrap_or_else(|| "/var/tmp".into());
    let bin = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/debug/standby"));
    let bin = std::path::absolute(&bin).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("sbqb")
        .tempdir_in(&work)
        .unwrap();
    let dir = tmp.path();
    let g = guest::ensure(Path::new("target/standby-guest")).expect("test guest");

    let data_gib: u64 = std::env::var("STANDBY_BENCH_DATA_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
        .min(4);
    for d in ["hv1/vmdb", "files/filedb", "dr"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let raw = dir.join("files/filedb/data.img");
    let qcow = dir.join("hv1/vmdb/data.qcow2");
    eprintln!("making the 4 GiB disk ({data_gib} GiB of data) as raw and qcow2");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&raw)
        .unwrap();
    f.set_len(4 * GIB).unwrap();
    // Every 4 KiB block unique (so nothing deduplicates within the disk),
    // all of it random with STANDBY_BENCH_RANDOM=1; by default only a
    // 16-byte header is random and the rest text, so the vault of the
    // first points stays small (the delta point reads the same either way).
    let random = std::env::var_os("STANDBY_BENCH_RANDOM").is_some();
    let text: Vec<u8> = b"standby benchmark block: the quick brown fox jumps over the lazy dog. "
        .iter()
        .copied()
        .cycle()
        .take(4096)
        .collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 4 << 20];
    for i in 0..(data_gib * GIB / chunk.len() as u64) {
        for (b, block) in chunk.chunks_mut(4096).enumerate() {
            if !random {
                block.copy_from_slice(&text);
            }
            let words = if random { block.len() / 8 } else { 2 };
            for w in block.chunks_mut(8).take(words) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            block[8..16].copy_from_slice(&(i * 1024 + b as u64).to_le_bytes());
        }
        f.write_all_at(&chunk, i * chunk.len() as u64).unwrap();
    }
    f.sync_all().unwrap();
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .unwrap();
    assert!(st.success());
    g.root_overlay(&dir.join("hv1/vmdb/system.qcow2"), "system")
        .unwrap();

    std::fs::write(
        dir.join("main.hcl"),
        format!(
            r#"vault "main" {{
  url = "file://.standby/vault"
}}
site "hv1" {{
  provider = "qemu"
  root     = "hv1"
}}
site "files" {{
  provider = "local"
  root     = "files"
}}
site "dr" {{
  provider = "local"
  root     = "dr"
}}
policy "p" {{
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  app_consistent_every   = "5m"
  retention              = "30d"
}}
machine "vmdb" {{
  site = site.hv1
  vm {{
    memory = "256M"
    kernel = "{kernel}"
    initrd = "{initrd}"
    append = "console=ttyS0 quiet panic=-1"
  }}
  disk "system" {{ path = "vmdb/system.qcow2" }}
  disk "data" {{ path = "vmdb/data.qcow2" }}
}}
machine "filedb" {{
  site = site.files
  disk "data" {{ path = "filedb/data.img" }}
}}
protection "vmdb" {{
  machine = machine.vmdb
  target  = site.dr
  vault   = vault.main
  policy  = policy.p
}}
protection "filedb" {{
  machine = machine.filedb
  target  = site.dr
  vault   = vault.main
  policy  = policy.p
}}
"#,
            kernel = g.kernel.display(),
            initrd = g.initrd.display()
        ),
    )
    .unwrap();
    let cfg = standby::config::load(dir, &Default::default())
        .unwrap_or_else(|d| panic!("{}", d.render(false)))
        .config;
    let m = cfg
        .machines
        .values()
        .find(|m| m.addr.to_string() == "machine.vmdb")
        .unwrap();
    let r = standby::operations::vms::start(&cfg, m).expect("start the VM");
    eprintln!("accelerator: {}", r.accel);
    let vm = r.vm;
    let agent_path = dir.join("hv1/vmdb.qga");
    drop(Agent::connect_unix(&agent_path, Duration::from_secs(180)).expect("guest agent"));

    eprintln!("first points of both (apply): whole disks");
    let (t_apply, _) = run(&bin, dir, &["apply", "--auto-approve"]);
    let first = newest(&bin, dir, "machine.vmdb");
    println!(
        "first points (apply, both protections): {:.2} s; VM data disk read {} MiB (allocated extents)",
        t_apply.as_secs_f64(),
        first["cbt"]["disks"]["data"]["read_bytes"]
            .as_u64()
            .unwrap_or(0)
            / MIB
    );

    // Rounds of: 4 MiB of guest writes, scattered (the same writes into
    // the raw copy), then a point of each with a cold cache. The median
    // ratio is the figure; one round alone is at the mercy of the machine.
    let rounds: usize = std::env::var("STANDBY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut results = Vec::new();
    for round in 0..rounds as u64 {
        let mut script = String::new();
        let raw_f = OpenOptions::new().write(true).open(&raw).unwrap();
        for i in 0..64u64 {
            let off = (i * 61 + 7 + round * 13) % 4096 * MIB;
            script.push_str(&format!(
                "yes r{round}w{i} | head -c 65536 | dd of=/dev/vdb bs=65536 seek={} iflag=fullblock oflag=direct conv=notrunc 2>/dev/null; ",
                off / 65536
            ));
            let pat: Vec<u8> = format!("r{round}w{i}\n")
                .bytes()
                .cycle()
                .take(65536)
                .collect();
            raw_f.write_all_at(&pat, off).unwrap();
        }
        raw_f.sync_all().unwrap();
        script.push_str("sync");
        {
            let mut a = Agent::connect_unix(&agent_path, Duration::from_secs(60)).unwrap();
            a.sh(&script, Duration::from_secs(600)).unwrap();
        }

        cold(&[&qcow, &raw]);
        let (t_cbt, out_cbt) = run(&bin, dir, &["replicate", "vmdb"]);
        if std::env::var_os("STANDBY_BENCH_TRACE").is_some() {
            // Where a CBT point's time goes: one more point, logged.
            let out = Command::new(&bin)
                .args(["replicate", "vmdb"])
                .current_dir(dir)
                .env("STANDBY_LOG", "debug")
                .output()
                .unwrap();
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        let p = newest(&bin, dir, "machine.vmdb");
        cold(&[&qcow, &raw]);
        let (t_file, out_file) = run(&bin, dir, &["replicate", "filedb"]);
        let q = newest(&bin, dir, "machine.filedb");
        eprintln!(
            "round {}: CBT {:.2} s, file path {:.2} s, {:.1}x",
            round + 1,
            t_cbt.as_secs_f64(),
            t_file.as_secs_f64(),
            t_file.as_secs_f64() / t_cbt.as_secs_f64()
        );
        results.push((t_cbt, out_cbt, p, t_file, out_file, q));
    }
    // The median round by ratio.
    results.sort_by(|a, b| {
        let r = |x: &(
            Duration,
            String,
            serde_json::Value,
            Duration,
            String,
            serde_json::Value,
        )| { x.3.as_secs_f64() / x.0.as_secs_f64() };
        r(a).total_cmp(&r(b))
    });
    let ratios: Vec<String> = results
        .iter()
        .map(|x| format!("{:.1}x", x.3.as_secs_f64() / x.0.as_secs_f64()))
        .collect();
    let (t_cbt, out_cbt, p, t_file, out_file, q) = results.swap_remove(results.len() / 2);
    if std::env::var_os("STANDBY_BENCH_KEEP").is_some() {
        // Leave the VM and its directory for a closer look.
        eprintln!("kept: {} (VM still running)", tmp.keep().display());
        std::mem::forget(vm);
    } else {
        let _ = vm.stop(Duration::from_secs(30));
    }

    let d = &p["cbt"]["disks"]["data"];
    let (read, dirty) = (
        d["read_bytes"].as_u64().unwrap_or(0),
        d["dirty_bytes"].as_u64().unwrap_or(0),
    );
    print!("{out_cbt}{out_file}");
    println!(
        "CBT point (replicate vmdb):  {:>8.2} s  data disk: read {:.2} MiB over NBD in {} requests for {:.2} MiB dirty ({:.3}x; bar <= 1.2x); point read {:.2} MiB, new {:.2} MiB, stored {:.2} MiB",
        t_cbt.as_secs_f64(),
        read as f64 / MIB as f64,
        d["read_requests"].as_u64().unwrap_or(0),
        dirty as f64 / MIB as f64,
        read as f64 / (dirty.max(1)) as f64,
        p["stats"]["read"].as_f64().unwrap_or(0.0) / MIB as f64,
        p["stats"]["new"].as_f64().unwrap_or(0.0) / MIB as f64,
        p["stats"]["stored"].as_f64().unwrap_or(0.0) / MIB as f64,
    );
    println!(
        "file path (replicate filedb):{:>8.2} s  read {:.2} MiB, new {:.2} MiB, stored {:.2} MiB",
        t_file.as_secs_f64(),
        q["stats"]["read"].as_f64().unwrap_or(0.0) / MIB as f64,
        q["stats"]["new"].as_f64().unwrap_or(0.0) / MIB as f64,
        q["stats"]["stored"].as_f64().unwrap_or(0.0) / MIB as f64,
    );
    println!(
        "ratio: the CBT point is {:.1}x faster (median of {rounds} rounds: {}; bar: >= 10x)",
        t_file.as_secs_f64() / t_cbt.as_secs_f64(),
        ratios.join(" ")
    );
}
