//! Benchmark: a changed-block-tracking point of a running VM against
//! today's file path, same disk content, cold page cache for both
//! (`posix_fadvise(DONTNEED)` on the image files, so other users' caches
//! stay). Not a test: it prints the numbers and the ratio.
//!
//! The disk: 4 GiB, all of it data (`STANDBY_BENCH_DATA_GIB=N` writes
//! only the first N GiB; the rest stays unallocated), as a qcow2 image the VM runs on and as a raw copy the file
//! path reads. The guest then writes 4 MiB (64 scattered writes of 64 KiB,
//! direct I/O). The CBT point: freeze through the agent, transaction,
//! thaw, dirty ranges over NBD, every 4 KiB block read hashed with BLAKE3,
//! commit. The file path: every data range of the raw file read and hashed
//! the same way (what `replicate` does for a disk file today).
//!
//! `cargo run -p standby-provider-qemu --example cbt_bench [WORKDIR]` (BLAKE3
//! is optimised in debug builds too; see the workspace's profile).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use standby_provider_qemu::cbt::{self, Change};
use standby_provider_qemu::guest;
use standby_provider_qemu::source::DiskSource;
use standby_provider_qemu::vm::{DiskFormat, DiskSpec, Vm, VmSpec};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn cold(path: &Path) {
    let f = File::open(path).expect("open for fadvise");
    // SAFETY: fadvise on an fd we own.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

fn hash_blocks(buf: &[u8]) -> u64 {
    let mut n = 0;
    for b in buf.chunks(4096) {
        std::hint::black_box(blake3::hash(b));
        n += 1;
    }
    n
}

/// Today's method: read every data range (SEEK_DATA/SEEK_HOLE) and hash.
fn file_path_point(path: &Path) -> (Duration, u64) {
    let t = Instant::now();
    let f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let fd = f.as_raw_fd();
    let mut off: i64 = 0;
    let mut read = 0u64;
    let mut buf = vec![0u8; 4 << 20];
    loop {
        // SAFETY: lseek on our fd.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 || data as u64 >= size {
            break;
        }
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let mut at = data as u64;
        while at < hole as u64 {
            let n = ((hole as u64 - at).min(buf.len() as u64)) as usize;
            f.read_exact_at(&mut buf[..n], at).unwrap();
            hash_blocks(&buf[..n]);
            read += n as u64;
            at += n as u64;
        }
        off = hole;
    }
    (t.elapsed(), read)
}

fn main() {
    let work = std::env::args().nth(1).unwrap_or_else(|| "/tmp".into());
    let dir = tempfile::Builder::new()
        .prefix("sbqb")
        .tempdir_in(&work)
        .unwrap();
    let g = guest::ensure(Path::new("target/standby-guest")).expect("test guest");
    let accel = standby_provider_qemu::accel::probe(&g.kernel);
    eprintln!("accelerator: {:?} ({})", accel.accel, accel.reason);

    // 4 GiB disk, pseudo-random data in its first DATA_GIB GiB.
    let data_gib: u64 = std::env::var("STANDBY_BENCH_DATA_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
        .min(4);
    let raw = dir.path().join("data.raw");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&raw)
        .unwrap();
    f.set_len(4 * GIB).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 4 << 20];
    for i in 0..(data_gib * GIB / chunk.len() as u64) {
        for w in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all_at(&chunk, i * chunk.len() as u64).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let qcow = dir.path().join("data.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .unwrap();
    assert!(st.success());

    let root = g
        .root_overlay(&dir.path().join("root.qcow2"), "root")
        .unwrap();
    let spec = VmSpec {
        name: "bench".into(),
        memory_mib: 256,
        cpus: 1,
        boot: g.boot(false),
        disks: vec![
            root,
            DiskSpec {
                node_name: "data".into(),
                path: qcow.clone(),
                format: DiskFormat::Qcow2,
                read_only: false,
            },
        ],
        accel: accel.accel,
        remote_qmp: None,
    };
    let vm = Vm::start(&spec, dir.path()).unwrap();
    let mut qmp = vm.qmp().unwrap();
    let mut agent = vm.agent(Duration::from_secs(120)).unwrap();
    cbt::enable(&mut qmp, "data", cbt::DEFAULT_GRANULARITY).unwrap();
    let pdir = dir.path().join("p");
    std::fs::create_dir_all(&pdir).unwrap();

    let point = |qmp: &mut _, agent: &mut _, full: bool| -> (Duration, u64, u64) {
        let t = Instant::now();
        let p = cbt::begin(qmp, Some(agent), &["data"], &pdir).unwrap();
        let mut src = DiskSource::open(&p, &p.disks[0], full).unwrap();
        // 32 MiB per call: the client pipelines it as 8 requests of 4 MiB.
        let mut buf = vec![0u8; 32 << 20];
        let mut read = 0;
        for r in src.ranges().to_vec() {
            if r.change != Change::Data {
                continue;
            }
            let mut at = r.offset;
            while at < r.offset + r.length {
                let n = (r.offset + r.length - at).min(buf.len() as u64) as usize;
                src.read_at(&mut buf[..n], at).unwrap();
                hash_blocks(&buf[..n]);
                read += n as u64;
                at += n as u64;
            }
        }
        let dirty = src.dirty_bytes();
        src.close().unwrap();
        cbt::finish(qmp, p, true).unwrap();
        (t.elapsed(), read, dirty)
    };

    cold(&qcow);
    let (t_first, read_first, _) = point(&mut qmp, &mut agent, true);
    println!(
        "first CBT point (allocated extents): {:.2} s, {} MiB read",
        t_first.as_secs_f64(),
        read_first / MIB
    );

    // 4 MiB of guest writes, scattered.
    let mut script = String::new();
    for i in 0..64u64 {
        let off = (i * 61 + 7) % 4096 * MIB; // spread over the 4 GiB
        script.push_str(&format!(
            "yes w{i} | head -c 65536 | dd of=/dev/vdb bs=65536 seek={} iflag=fullblock oflag=direct conv=notrunc 2>/dev/null; ",
            off / 65536
        ));
    }
    script.push_str("sync");
    agent.sh(&script, Duration::from_secs(300)).unwrap();

    cold(&qcow);
    let (t_cbt, read_cbt, dirty) = point(&mut qmp, &mut agent, false);
    // The raw copy does not have the guest's 4 MiB, which changes nothing
    // about the file path's cost (it reads every data range either way).
    cold(&raw);
    let (t_file, read_file) = file_path_point(&raw);
    println!(
        "CBT point after 4 MiB of writes: {:.3} s, {} KiB read, QEMU dirty {} KiB",
        t_cbt.as_secs_f64(),
        read_cbt >> 10,
        dirty >> 10
    );
    println!(
        "file path (read + hash every data range): {:.3} s, {} MiB read",
        t_file.as_secs_f64(),
        read_file / MIB
    );
    println!(
        "ratio file path / CBT point: {:.1}x",
        t_file.as_secs_f64() / t_cbt.as_secs_f64()
    );
    drop(agent);
    drop(qmp);
    let _ = vm.stop(Duration::from_secs(30));
}
