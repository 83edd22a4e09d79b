//! Points taken by another process that is killed (SIGKILL) at random
//! moments: the process loops "open a point, apply its dirty ranges to a
//! local image (fsync), commit", while the guest keeps writing. After each
//! kill at most two bitmap generations remain; at the end one more point
//! (which sweeps what the killed runs left) brings the image to exactly the
//! disk at that point, read whole over NBD: no change was lost.
//!
//! Rounds: `STANDBY_QEMU_KILLS` (3 in CI, 20 in the long form). Seed:
//! printed; `STANDBY_SEED=N` replays the kill timings.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use standby_provider_qemu::cbt::{self, Change};
use standby_provider_qemu::guest::make_blank_disk;
use standby_provider_qemu::qmp::Qmp;
use standby_provider_qemu::source::DiskSource;
use standby_provider_qemu::vm::{DiskFormat, DiskSpec, Vm, VmSpec};

const SIZE: u64 = 64 << 20;

/// Applies one committed point onto `image`.
fn one_point(qmp: &mut Qmp, image: &Path, pdir: &Path) -> u64 {
    let p = cbt::begin(qmp, None, &["scratch"], pdir).unwrap();
    let mut src = DiskSource::open(&p, &p.disks[0], false).unwrap();
    let img = OpenOptions::new().write(true).open(image).unwrap();
    let mut n = 0;
    for r in src.ranges().to_vec() {
        let mut buf = vec![0u8; r.length as usize];
        if r.change == Change::Data {
            src.read_at(&mut buf, r.offset).unwrap();
        }
        img.write_all_at(&buf, r.offset).unwrap();
        n += r.length;
    }
    // The image is durable before the bitmap generation goes (as the
    // vault's manifest would be).
    img.sync_all().unwrap();
    src.close().unwrap();
    cbt::finish(qmp, p, true).unwrap();
    n
}

/// The child: loops points until killed. Runs only when re-executed by
/// the parent test with STANDBY_KILLS_QMP set.
#[test]
fn kills_child() {
    let Some(qmp_path) = std::env::var_os("STANDBY_KILLS_QMP") else {
        return;
    };
    let image = PathBuf::from(std::env::var_os("STANDBY_KILLS_IMAGE").unwrap());
    let pdir = PathBuf::from(std::env::var_os("STANDBY_KILLS_DIR").unwrap());
    let mut qmp = Qmp::connect_unix(Path::new(&qmp_path), Duration::from_secs(10)).unwrap();
    let log = pdir.join("committed");
    loop {
        one_point(&mut qmp, &image, &pdir);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        std::io::Write::write_all(&mut f, b"1\n").unwrap();
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn killed_point_takers_lose_no_change() {
    let rounds: usize = std::env::var("STANDBY_QEMU_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("STANDBY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed {seed} (STANDBY_SEED={seed} replays)");
    let mut rng = Rng(seed);
    let g = common::guest();
    let accel = common::accel(&g);
    let dir = common::tempdir();
    let root = g
        .root_overlay(&dir.path().join("root.qcow2"), "root")
        .unwrap();
    let scratch = dir.path().join("scratch.qcow2");
    make_blank_disk(&scratch, SIZE, DiskFormat::Qcow2).unwrap();
    // vdb: an ext4 disk is not needed; the scratch disk is vdb here.
    let spec = VmSpec {
        name: "k".into(),
        memory_mib: 256,
        cpus: 1,
        boot: g.boot(false),
        disks: vec![
            root,
            DiskSpec {
                node_name: "scratch".into(),
                path: scratch,
                format: DiskFormat::Qcow2,
                read_only: false,
            },
        ],
        accel: accel.accel,
        remote_qmp: None,
    };
    let vm = Vm::start(&spec, dir.path()).unwrap();
    let _guard = common::KillOnDrop(vm.clone());
    let mut agent = vm.agent(Duration::from_secs(120)).unwrap();
    let mut qmp = vm.qmp().unwrap();
    cbt::enable(&mut qmp, "scratch", cbt::DEFAULT_GRANULARITY).unwrap();
    drop(qmp); // QMP serves one client at a time here: the child's turn
    let image = dir.path().join("image.raw");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&image)
        .unwrap();
    f.set_len(SIZE).unwrap();
    drop(f);
    let pdir = dir.path().join("p");
    std::fs::create_dir_all(&pdir).unwrap();

    let exe = std::env::current_exe().unwrap();
    let write = |rng: &mut Rng, agent: &mut standby_provider_qemu::qga::Agent| {
        let block = rng.next() % (SIZE / 4096);
        let blocks = 1 + rng.next() % 32;
        let blocks = blocks.min(SIZE / 4096 - block);
        let tag = rng.next() % 1_000_000;
        agent
            .sh(
                &format!(
                    "yes {tag} | head -c {} | dd of=/dev/vdb bs=4096 seek={block} iflag=fullblock oflag=direct conv=notrunc 2>&1",
                    blocks * 4096
                ),
                Duration::from_secs(60),
            )
            .unwrap();
    };
    let mut total_mid_point = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--exact", "kills_child", "--nocapture", "--test-threads=1"])
            .env("STANDBY_KILLS_QMP", Vm::qmp_path(dir.path(), "k"))
            .env("STANDBY_KILLS_IMAGE", &image)
            .env("STANDBY_KILLS_DIR", &pdir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Guest writes while the child takes points; kill at a random moment.
        let until = Instant::now() + Duration::from_millis(300 + rng.next() % 2500);
        while Instant::now() < until {
            write(&mut rng, &mut agent);
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "the child ended on its own: {status}"
        );
        let mut qmp = vm.qmp().unwrap();
        let n = cbt::bitmaps(&mut qmp, "scratch").unwrap().len();
        let committed = std::fs::read_to_string(pdir.join("committed"))
            .unwrap_or_default()
            .lines()
            .count();
        eprintln!(
            "round {round}: killed; {committed} points committed so far; {n} bitmap generation(s) left"
        );
        total_mid_point += usize::from(n == 2);
        assert!(n <= 2, "round {round}: {n} generations");
        drop(qmp);
        write(&mut rng, &mut agent);
    }

    let committed = std::fs::read_to_string(pdir.join("committed"))
        .unwrap_or_default()
        .lines()
        .count();
    assert!(committed > 0, "the child never committed a point");
    eprintln!("{total_mid_point} of {rounds} kills landed inside a point");

    // The final point sweeps the killed runs' leftovers and applies.
    let mut qmp = vm.qmp().unwrap();
    one_point(&mut qmp, &image, &pdir);
    let p = cbt::begin(&mut qmp, None, &["scratch"], &pdir).unwrap();
    let mut c = p.connect(&p.disks[0]).unwrap();
    let mut view = vec![0u8; SIZE as usize];
    c.read(0, &mut view).unwrap();
    c.disconnect().unwrap();
    // Nothing was written between the last point and this one.
    assert_eq!(p.disks[0].dirty_bytes, 0);
    cbt::finish(&mut qmp, p, true).unwrap();
    let got = std::fs::read(&image).unwrap();
    assert!(
        got == view,
        "the image rebuilt from dirty ranges only differs from the disk"
    );
    assert_eq!(cbt::bitmaps(&mut qmp, "scratch").unwrap().len(), 1);
    drop(qmp);
    drop(agent);
    vm.stop(Duration::from_secs(60)).unwrap();
}
