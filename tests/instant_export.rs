//! Instant recovery's read-only NBD export of a point's disk (issue 15
//! item 4, step 1): served by the standby executable from the vault on
//! demand, read by QEMU's own NBD client (`qemu-img`, `qemu-io`) and by
//! libnbd (`nbdinfo`), byte-identical to a normal restore, for a full point
//! and a delta; writes refused; a small read fetches a blob, not the disk;
//! opening a point reads its own index object, not the vault's (and the
//! whole index only for blobs deduplicated against other points).

use standby::model::KeySource;
use standby::recovery::instant::export::{self, Files, Source};
use standby::replication::{self, Options, Progress, Target};
use standby::vault::Vault;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// 24 MiB: random data, a zero run, a hole, text.
fn disk_bytes(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut d = vec![0u8; 24 << 20];
    for (i, b) in d.iter_mut().enumerate() {
        let mb = i >> 20;
        *b = match mb {
            0..=7 => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
            8..=13 => 0,
            14..=19 => b"log line of a disk\n"[i % 19],
            _ => 0,
        };
    }
    d
}

fn run(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().expect("run tool");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn take(vault: &Vault, dir: &Path, disk: &Path) -> standby::vault::manifest::Manifest {
    let target = Target {
        protection: "protection.db".into(),
        machine: "machine.db".into(),
        group: None,
        disks: vec![("data".into(), disk.to_path_buf())],
        quiesce: None,
        app: false,
        level: 1,
        site: None,
        vm: None,
    };
    let opts = Options::new(dir.join("cache"));
    replication::take_points(vault, &[target], &opts, &Progress::default())
        .unwrap()
        .remove(0)
}

#[test]
fn an_export_of_a_point_reads_like_its_restore_through_qemu_and_libnbd() {
    let d = tempfile::tempdir().unwrap();
    let key = KeySource::File(d.path().join("vault.key"));
    let url = format!("file://{}", d.path().join("vault").display());
    let vault = Vault::init(&url, &key, d.path()).unwrap().vault;
    let disk = d.path().join("disk.img");
    let mut bytes = disk_bytes(7);
    std::fs::write(&disk, &bytes).unwrap();
    let first = take(&vault, d.path(), &disk);
    // A delta: scattered 4 KiB writes and a zeroed range.
    for i in 0..64usize {
        let off = (i * 331 * 4096) % (bytes.len() - 4096);
        bytes[off..off + 4096].fill(i as u8 + 1);
    }
    bytes[(2 << 20)..(3 << 20)].fill(0);
    std::fs::write(&disk, &bytes).unwrap();
    let second = take(&vault, d.path(), &disk);

    for (n, point) in [&first, &second].into_iter().enumerate() {
        let restored = d.path().join(format!("restored{n}.raw"));
        replication::restore_disk(&vault, point, "data", &restored, &Progress::default()).unwrap();
        let files = Files::new(d.path(), &format!("db{n}"), "data");
        let src = Source {
            url: url.clone(),
            key: key.clone(),
            base: d.path().to_path_buf(),
            point: point.id,
            disk: "data".into(),
        };
        let h = export::start(&src, &files, Duration::from_secs(30)).unwrap();
        let nbd = files.url("data");
        // QEMU's NBD client: compare, and a full copy.
        let (ok, out) = run(Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&restored)
            .arg(&nbd));
        assert!(ok, "qemu-img compare: {out}");
        let copy = d.path().join(format!("copy{n}.raw"));
        let (ok, out) = run(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw"])
            .arg(&nbd)
            .arg(&copy));
        assert!(ok, "qemu-img convert: {out}");
        assert!(std::fs::read(&copy).unwrap() == std::fs::read(&restored).unwrap());
        if n == 1 {
            assert!(std::fs::read(&copy).unwrap() == bytes, "the delta's disk");
        }
        // libnbd: size and read-only as the export says.
        let (ok, out) = run(Command::new("nbdinfo").arg("--json").arg(&nbd));
        assert!(ok, "nbdinfo: {out}");
        let info: serde_json::Value = serde_json::from_str(&out).unwrap();
        let e = &info["exports"][0];
        assert_eq!(e["export-size"], 24 << 20, "{out}");
        assert_eq!(e["is_read_only"], true, "{out}");
        // Writes are refused; the disk is unchanged.
        let (ok, out) = run(Command::new("qemu-io")
            .args(["-f", "raw", "-c", "write -P 0x55 0 4096"])
            .arg(&nbd));
        assert!(
            !ok || out.contains("failed") || out.contains("Operation not permitted"),
            "a write passed: {out}"
        );
        h.stop();
        assert!(!files.socket.exists(), "the socket stays after stop");
        assert!(
            export::Handle::find(&files).is_none(),
            "the export still runs"
        );
    }

    // On demand: one 4 KiB read of the data fetches about a blob, and a
    // read in the zero range fetches nothing.
    let files = Files::new(d.path(), "db9", "data");
    let src = Source {
        url: url.clone(),
        key,
        base: d.path().to_path_buf(),
        point: second.id,
        disk: "data".into(),
    };
    let h = export::start(&src, &files, Duration::from_secs(30)).unwrap();
    let (ok, out) = run(Command::new("qemu-io")
        .args([
            "-r",
            "-f",
            "raw",
            "-c",
            "read -P 0 9M 4k",
            "-c",
            "read 1M 4k",
        ])
        .arg(files.url("data")));
    assert!(ok && !out.contains("fail"), "qemu-io: {out}");
    // The counters file is written within a moment of a change.
    let mut stats = None;
    for _ in 0..100 {
        stats = files.stats().filter(|s| s.served >= 8192);
        if stats.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = stats.expect("the export's counters");
    assert_eq!(s.size, 24 << 20);
    assert!(s.fetched > 0, "{s:?}");
    assert!(
        s.fetched <= 8 << 20,
        "a 4 KiB read fetched {} bytes",
        s.fetched
    );
    // A cleanup that removes the run's directory ends the export.
    std::fs::remove_file(&files.socket).unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if export::Handle::find(&files).is_none() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone, "the export outlived its socket");
    drop(h);
}

/// `--instant` on a plan whose machine is recovered to a local site is
/// refused before anything is done, naming the machine and the site.
#[test]
fn instant_on_a_plan_without_vms_at_a_qemu_site_is_refused_before_anything() {
    let d = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/invalid/96-qemu-instant-drill-to-local-site/main.hcl");
    // The fixture without its drill's `instant`: valid.
    let hcl = std::fs::read_to_string(fixture)
        .unwrap()
        .replace("    instant  = true\n", "");
    std::fs::write(d.path().join("main.hcl"), hcl).unwrap();
    for args in [
        &["failover", "test", "shop", "--instant"][..],
        &["failover", "unplanned", "shop", "--instant"][..],
        &["drill", "shop", "--instant"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_standby"))
            .args(args)
            .current_dir(d.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("--instant needs every machine of recovery_plan.shop to be a VM recovered to a qemu site: machine.db recovers to site.dr (provider local)"),
            "{args:?}: {err}"
        );
        assert!(err.contains("drop --instant"), "{err}");
        assert!(!d.path().join(".standby").exists(), "{args:?} wrote state");
        assert!(!d.path().join("dr").exists(), "{args:?} touched the site");
    }
}

/// A point's replication as machine `machine` of disk `disk`.
fn take_as(vault: &Vault, dir: &Path, machine: &str, disk: &Path) -> standby::vault::Manifest {
    let target = Target {
        protection: format!("protection.{machine}"),
        machine: format!("machine.{machine}"),
        group: None,
        disks: vec![("data".into(), disk.to_path_buf())],
        quiesce: None,
        app: false,
        level: 1,
        site: None,
        vm: None,
    };
    let opts = Options::new(dir.join("cache"));
    replication::take_points(vault, &[target], &opts, &Progress::default())
        .unwrap()
        .remove(0)
}

/// Starts the export of `point`'s disk, reads it whole through QEMU's
/// client into `copy`, and returns its counters once it has served it.
fn export_whole(
    d: &Path,
    url: &str,
    key: &KeySource,
    point: &standby::vault::Manifest,
    name: &str,
    copy: &Path,
) -> export::Stats {
    let files = Files::new(d, name, "data");
    let src = Source {
        url: url.to_string(),
        key: key.clone(),
        base: d.to_path_buf(),
        point: point.id,
        disk: "data".into(),
    };
    let h = export::start(&src, &files, Duration::from_secs(60)).unwrap();
    let (ok, out) = run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(files.url("data"))
        .arg(copy));
    assert!(ok, "qemu-img convert: {out}");
    let size = point.disks["data"].size;
    let mut stats = None;
    for _ in 0..200 {
        stats = files.stats().filter(|s| s.served >= size);
        if stats.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    h.stop();
    files.remove();
    for p in [&files.socket, &files.pid, &files.stats, &files.log] {
        assert!(!p.exists(), "{} stays after remove", p.display());
    }
    stats.expect("the export's counters")
}

/// What an export reads to open a point does not grow with the vault or
/// the disk: with 40 other machines' points (40 index objects) in the
/// vault and an 8 GiB sparse disk, the export reads the point's own index
/// object only, and a handful of requests. A point whose blobs were all
/// deduplicated against another machine's (its replication wrote no index
/// object) is found through the whole index instead, and reads right.
#[test]
fn an_export_reads_its_points_index_not_the_vaults() {
    let d = tempfile::tempdir().unwrap();
    let key = KeySource::File(d.path().join("vault.key"));
    let url = format!("file://{}", d.path().join("vault").display());
    let vault = Vault::init(&url, &key, d.path()).unwrap().vault;
    let small = d.path().join("small.img");
    for i in 0..40u64 {
        std::fs::write(&small, &disk_bytes(100 + i)[..(1 << 20)]).unwrap();
        take_as(&vault, d.path(), &format!("m{i}"), &small);
    }
    // 8 GiB, sparse: 8 MiB of data at the start, 1 MiB near the end.
    let big = d.path().join("big.img");
    let data = disk_bytes(3);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&big).unwrap();
        f.set_len(8 << 30).unwrap();
        f.write_all(&data[..8 << 20]).unwrap();
        f.seek(SeekFrom::Start((8 << 30) - (3 << 20))).unwrap();
        f.write_all(&data[16 << 20..17 << 20]).unwrap();
    }
    let point = take_as(&vault, d.path(), "db", &big);
    assert!(point.index.is_some(), "the point names its index object");
    let files = Files::new(d.path(), "db", "data");
    let src = Source {
        url: url.clone(),
        key: key.clone(),
        base: d.path().to_path_buf(),
        point: point.id,
        disk: "data".into(),
    };
    let h = export::start(&src, &files, Duration::from_secs(60)).unwrap();
    // A block of the last MiB of data, through QEMU's client.
    let (ok, out) = run(Command::new("qemu-io")
        .args(["-r", "-f", "raw", "-c"])
        .arg(format!("read {} 4096", (8u64 << 30) - (3 << 20)))
        .arg(files.url("data")));
    assert!(ok && !out.contains("fail"), "qemu-io: {out}");
    let mut stats = None;
    for _ in 0..200 {
        stats = files.stats().filter(|s| s.served >= 4096);
        if stats.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    h.stop();
    files.remove();
    let s = stats.expect("the export's counters");
    assert_eq!(s.size, 8 << 30);
    assert_eq!(s.data, 9 << 20, "{s:?}");
    assert_eq!(s.index_objects, 1, "{s:?}");
    // Key, manifest, its index object, a pack range or two: a handful,
    // never one per index object of the vault (41).
    assert!(s.requests <= 12, "{s:?}");

    // All deduplicated: the same bytes as machine m0's point.
    std::fs::write(&small, &disk_bytes(100)[..(1 << 20)]).unwrap();
    let dup = take_as(&vault, d.path(), "dup", &small);
    assert_eq!(dup.index, None, "nothing new was stored");
    let copy = d.path().join("dup.raw");
    let s = export_whole(d.path(), &url, &key, &dup, "dup", &copy);
    assert!(std::fs::read(&copy).unwrap() == disk_bytes(100)[..(1 << 20)]);
    assert!(s.index_objects > 1, "the whole index was read: {s:?}");
}
