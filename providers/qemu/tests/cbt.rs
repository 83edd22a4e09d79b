//! Changed-block tracking on a running guest, one boot for the whole story:
//! enable bitmaps, points with the guest frozen through its agent, dirty
//! extents checked against known writes (at the bitmap's granularity) and
//! against `nbdinfo --map` on QEMU's own export, bytes read equal to the
//! guest's disk at the freeze (later guest writes invisible), commit,
//! abort (merged, nothing lost), a killed point swept up, and a database
//! disk rebuilt from a full point plus a dirty-only point that passes
//! `e2fsck -fn` and `PRAGMA integrity_check` with the order count the
//! guest's freeze hook recorded.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use standby_provider_qemu::cbt::{self, Change, Point, PointDisk, Range};
use standby_provider_qemu::guest::{make_blank_disk, make_data_disk};
use standby_provider_qemu::qga::Agent;
use standby_provider_qemu::source::DiskSource;
use standby_provider_qemu::vm::{DiskFormat, DiskSpec, Vm, VmSpec};

const MIB: u64 = 1 << 20;
const G: u64 = cbt::DEFAULT_GRANULARITY;
const SCRATCH: u64 = 64 * MIB;

/// `yes TAG | head -c LEN`: what the guest writes, computed on the host.
fn pattern(tag: &str, len: u64) -> Vec<u8> {
    let line = format!("{tag}\n");
    line.bytes().cycle().take(len as usize).collect()
}

/// Writes `pattern(tag, len)` at `offset` of the unmounted scratch disk
/// (/dev/vdc) in the guest, bypassing its page cache.
fn guest_write(agent: &mut Agent, tag: &str, offset: u64, len: u64) {
    assert_eq!(offset % 4096, 0);
    assert_eq!(len % 4096, 0);
    agent
        .sh(
            &format!(
                "yes '{tag}' | head -c {len} | dd of=/dev/vdc bs=4096 seek={} iflag=fullblock oflag=direct conv=notrunc,fsync 2>&1 && sync",
                offset / 4096
            ),
            Duration::from_secs(60),
        )
        .unwrap();
}

/// Applies a point's ranges onto `file`, reading Data ranges over NBD.
/// Returns the bytes read from the VM.
fn apply(point: &Point, disk: &PointDisk, ranges: &[Range], file: &File) -> u64 {
    let mut c = point.connect(disk).unwrap();
    let mut read = 0;
    for r in ranges {
        let mut buf = vec![0u8; r.length as usize];
        if r.change == Change::Data {
            c.read(r.offset, &mut buf).unwrap();
            read += r.length;
        }
        file.write_all_at(&buf, r.offset).unwrap();
    }
    c.disconnect().unwrap();
    read
}

fn dirty_of(ranges: &[Range]) -> Vec<(u64, u64)> {
    ranges.iter().map(|r| (r.offset, r.length)).collect()
}

fn nbdinfo_dirty(point: &Point, disk: &PointDisk) -> Vec<(u64, u64)> {
    let uri = format!(
        "nbd+unix:///{}?socket={}",
        disk.export,
        point.socket.display()
    );
    let out = Command::new("nbdinfo")
        .arg(format!("--map={}", disk.bitmap_context()))
        .args(["--json", &uri])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut d: Vec<(u64, u64)> = Vec::new();
    for e in v.as_array().unwrap().iter().filter(|e| e["type"] == 1) {
        let (o, l) = (e["offset"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        match d.last_mut() {
            Some(x) if x.0 + x.1 == o => x.1 += l,
            _ => d.push((o, l)),
        }
    }
    d
}

#[test]
fn dirty_extents_points_commit_abort_and_sweep_on_a_running_guest() {
    let g = common::guest();
    let accel = common::accel(&g);
    let dir = common::tempdir();
    let root = g
        .root_overlay(&dir.path().join("root.qcow2"), "root")
        .unwrap();
    let data_path = dir.path().join("data.qcow2");
    make_data_disk(&data_path, 256 * MIB, DiskFormat::Qcow2).unwrap();
    let scratch_path = dir.path().join("scratch.qcow2");
    make_blank_disk(&scratch_path, SCRATCH, DiskFormat::Qcow2).unwrap();
    let disk = |node: &str, path: &Path| DiskSpec {
        node_name: node.into(),
        path: path.to_path_buf(),
        format: DiskFormat::Qcow2,
        read_only: false,
    };
    let spec = VmSpec {
        name: "db".into(),
        memory_mib: 256,
        cpus: 1,
        boot: g.boot(true),
        disks: vec![
            root,
            disk("data", &data_path),
            disk("scratch", &scratch_path),
        ],
        accel: accel.accel,
        remote_qmp: None,
    };
    let t0 = Instant::now();
    let vm = Vm::start(&spec, dir.path()).unwrap();
    let _guard = common::KillOnDrop(vm.clone());
    let mut qmp = vm.qmp().unwrap();
    let mut agent = vm.agent(Duration::from_secs(120)).unwrap();
    eprintln!(
        "boot to guest agent: {:.2} s ({:?})",
        t0.elapsed().as_secs_f64(),
        accel.accel
    );

    // Tracking on both disks; a second enable finds the same bitmap.
    assert_eq!(
        cbt::enable(&mut qmp, "data", G).unwrap(),
        ("standby-1".into(), true)
    );
    assert_eq!(
        cbt::enable(&mut qmp, "scratch", G).unwrap(),
        ("standby-1".into(), true)
    );
    assert_eq!(
        cbt::enable(&mut qmp, "scratch", G).unwrap(),
        ("standby-1".into(), false)
    );
    // The root overlay is qcow2 too; a raw disk is refused by name (none here).

    // Let the writer commit a few orders.
    let start = Instant::now();
    loop {
        let n = agent.sh("sqlite3 -cmd '.timeout 10000' /data/orders.db 'SELECT count(*) FROM orders' 2>/dev/null || echo 0", Duration::from_secs(30)).unwrap();
        if n.trim().parse::<u64>().unwrap_or(0) >= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the writer never committed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Point 1 (first: full read of allocated extents), app-consistent.
    let pdir = dir.path().join("p");
    std::fs::create_dir_all(&pdir).unwrap();
    let p1 = cbt::begin(&mut qmp, Some(&mut agent), &["data", "scratch"], &pdir).unwrap();
    let f = p1.freeze.unwrap();
    eprintln!(
        "point 1: freeze window {:.0} ms (freeze call {:.0} ms, transaction {:.1} ms, {} file systems)",
        f.window.as_secs_f64() * 1e3,
        f.freeze_call.as_secs_f64() * 1e3,
        f.transaction.as_secs_f64() * 1e3,
        f.filesystems
    );
    assert_eq!(p1.disks[0].old_bitmap, "standby-1");
    assert_eq!(p1.disks[0].new_bitmap, "standby-2");
    let data_img = dir.path().join("data-restored.raw");
    let data_file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&data_img)
        .unwrap();
    data_file.set_len(256 * MIB).unwrap();
    let mut c = p1.connect(&p1.disks[0]).unwrap();
    let full = cbt::ranges(&mut c, &p1.disks[0], true).unwrap();
    c.disconnect().unwrap();
    let read1 = apply(&p1, &p1.disks[0], &full, &data_file);
    assert!(
        read1 < 256 * MIB / 2,
        "a first point reads only allocated extents ({read1} bytes)"
    );
    // The blank scratch disk has nothing allocated.
    let mut c = p1.connect(&p1.disks[1]).unwrap();
    assert_eq!(cbt::ranges(&mut c, &p1.disks[1], true).unwrap(), vec![]);
    c.disconnect().unwrap();
    cbt::finish(&mut qmp, p1, true).unwrap();
    let count1 = common::shared::check_database_image(&data_img);
    let names: Vec<String> = cbt::bitmaps(&mut qmp, "data")
        .unwrap()
        .into_iter()
        .map(|(_, b)| b.name)
        .collect();
    assert_eq!(
        names,
        vec!["standby-2"],
        "commit deleted the old generation"
    );

    // Known writes: within one granule, straddling two, a large one.
    let writes: [(&str, u64, u64); 4] = [
        ("A-1", 0, 4096),
        ("A-2", MIB + 4096, 8192),
        ("A-3", 3 * MIB - 4096, 8192),
        ("A-4", 10 * MIB, 128 << 10),
    ];
    let mut expected = vec![0u8; SCRATCH as usize];
    for (tag, off, len) in writes {
        guest_write(&mut agent, tag, off, len);
        expected[off as usize..(off + len) as usize].copy_from_slice(&pattern(tag, len));
    }

    // Point 2: dirty ranges only.
    let p2 = cbt::begin(&mut qmp, Some(&mut agent), &["data", "scratch"], &pdir).unwrap();
    eprintln!(
        "point 2: freeze window {:.0} ms",
        p2.freeze.unwrap().window.as_secs_f64() * 1e3
    );
    let (pd, ps) = (&p2.disks[0], &p2.disks[1]);
    let want_dirty = vec![(0, G), (MIB, G), (3 * MIB - G, 2 * G), (10 * MIB, 2 * G)];
    assert_eq!(ps.dirty_bytes, 6 * G, "QEMU's count of dirty bytes");
    // Writes after the point must not show in its view.
    guest_write(&mut agent, "B-2", MIB + 4096, 8192);
    guest_write(&mut agent, "B-4", 10 * MIB, 128 << 10);
    let mut c = p2.connect(ps).unwrap();
    let sr = cbt::ranges(&mut c, ps, false).unwrap();
    assert_eq!(
        dirty_of(&sr),
        want_dirty,
        "dirty extents cover exactly the writes, at 64 KiB"
    );
    assert!(sr.iter().all(|r| r.change == Change::Data));
    assert_eq!(
        nbdinfo_dirty(&p2, ps),
        want_dirty,
        "nbdinfo --map agrees on QEMU's own export"
    );
    let mut view = vec![0u8; SCRATCH as usize];
    c.read(0, &mut view).unwrap();
    assert!(view == expected, "the view is the disk at the freeze");
    let view = view; // point 2's image: point 5 is rebuilt onto it below
    c.disconnect().unwrap();
    // The database disk: dirty ranges applied on point 1 give point 2.
    let mut c = p2.connect(pd).unwrap();
    let dr = cbt::ranges(&mut c, pd, false).unwrap();
    c.disconnect().unwrap();
    let read2 = apply(&p2, pd, &dr, &data_file);
    eprintln!(
        "data disk: point 2 read {read2} bytes; QEMU counted {} dirty",
        pd.dirty_bytes
    );
    assert!(read2 <= pd.dirty_bytes, "only dirty bytes are read");
    cbt::finish(&mut qmp, p2, true).unwrap();
    drop(data_file);
    let count2 = common::shared::check_database_image(&data_img);
    assert!(
        count2 > count1,
        "the writer went on between points ({count1} -> {count2})"
    );

    // Point 3 aborted: its changes are merged into the next generation.
    let p3 = cbt::begin(&mut qmp, None, &["scratch"], &pdir).unwrap();
    let b_dirty = vec![(MIB, G), (10 * MIB, 2 * G)];
    let mut c = p3.connect(&p3.disks[0]).unwrap();
    assert_eq!(
        dirty_of(&cbt::ranges(&mut c, &p3.disks[0], false).unwrap()),
        b_dirty
    );
    c.disconnect().unwrap();
    cbt::finish(&mut qmp, p3, false).unwrap();
    let bms = cbt::bitmaps(&mut qmp, "scratch").unwrap();
    assert_eq!(bms.len(), 1);
    assert_eq!(
        bms[0].1.count,
        3 * G,
        "the aborted point's changes are kept"
    );

    // Point 4 "killed": opened, never finished, its QMP connection dropped.
    guest_write(&mut agent, "C-1", 0, 4096);
    let p4 = cbt::begin(&mut qmp, None, &["scratch"], &pdir).unwrap();
    std::mem::forget(p4);
    drop(qmp);
    guest_write(&mut agent, "D-5", 20 * MIB, 4096);
    let mut qmp = vm.qmp().unwrap();
    let swept = cbt::sweep(&mut qmp, "scratch").unwrap();
    assert_eq!(swept.merged.len(), 1, "{swept:?}");
    assert_eq!(
        swept.removed,
        vec!["sbx-scratch", "sbj-scratch", "sbf-scratch", "sbg-scratch"]
    );
    // Point 5 has every change since point 2: B (aborted), C (killed), D.
    for (tag, off, len) in [
        ("B-2", MIB + 4096, 8192),
        ("B-4", 10 * MIB, 128 << 10),
        ("C-1", 0, 4096),
        ("D-5", 20 * MIB, 4096),
    ] {
        expected[off as usize..(off + len) as usize].copy_from_slice(&pattern(tag, len));
    }
    let p5 = cbt::begin(&mut qmp, Some(&mut agent), &["scratch"], &pdir).unwrap();
    // Through the source interface the pipeline will use.
    let mut src = DiskSource::open(&p5, &p5.disks[0], false).unwrap();
    assert_eq!(src.size(), SCRATCH);
    assert_eq!(
        dirty_of(src.ranges()),
        vec![(0, G), (MIB, G), (10 * MIB, 2 * G), (20 * MIB, G)]
    );
    assert_eq!(src.data_bytes(), src.dirty_bytes());
    // Point 2's image plus point 5's ranges is the disk at point 5.
    let mut rebuilt = view.clone();
    for r in src.ranges().to_vec() {
        let (o, l) = (r.offset as usize, r.length as usize);
        src.read_at(&mut rebuilt[o..o + l], r.offset).unwrap();
    }
    let mut whole = vec![0u8; SCRATCH as usize];
    src.read_at(&mut whole, 0).unwrap();
    assert!(
        whole == expected,
        "point 5's view is the disk at its instant"
    );
    assert!(
        rebuilt == expected,
        "point 2 plus point 5's dirty ranges is point 5"
    );
    src.close().unwrap();
    cbt::finish(&mut qmp, p5, true).unwrap();
    let bms = cbt::bitmaps(&mut qmp, "scratch").unwrap();
    assert_eq!(bms.len(), 1, "one generation left after commit");
    assert!(bms[0].1.recording && bms[0].1.persistent);
    let exports = qmp
        .execute_value("query-block-exports", serde_json::Value::Null)
        .unwrap();
    assert_eq!(exports, serde_json::json!([]), "no export left");
    assert!(qmp.block_jobs().unwrap().is_empty(), "no job left");
    drop(qmp);
    drop(agent); // the agent serves one client at a time

    // The bitmap persists: after a clean stop the image holds it.
    let how = vm.stop(Duration::from_secs(60)).unwrap();
    assert_eq!(how, standby_provider_qemu::vm::Stopped::GuestAgent);
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&scratch_path)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let stored = info["format-specific"]["data"]["bitmaps"]
        .as_array()
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0]["name"].as_str().unwrap().starts_with("standby-"));
}
