//! Real disks through the library: ext4 images changed with debugfs, SQLite
//! databases changed between points, qcow2 files, sparse files, shrinking
//! disks, and dedup across disks and machines.

mod vault_support;

use standby::samples;
use std::os::unix::fs::FileExt;
use std::process::Command;
use vault_support::*;

#[test]
fn ext4_and_sqlite_points_restore_clean() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let img = make_ext4(d, "fs", "64M");
    let db = d.join("data.sqlite");
    samples::make_sqlite(&db, 3000).unwrap();
    let cache = d.join("cache");
    let mut points = Vec::new();
    for round in 0..3 {
        if round > 0 {
            ext4_write(
                &img,
                d,
                &format!("/etc/round{round}"),
                &"x".repeat(10_000 * round),
            );
            samples::add_orders(&db, 700).unwrap();
        }
        let r_img = snapshot(&img, &d.join(format!("ref-img-{round}")));
        let r_db = snapshot(&db, &d.join(format!("ref-db-{round}")));
        let p = take(
            &vault,
            &cache,
            &[target("m", &[("system", &img), ("data", &db)])],
        )
        .remove(0);
        if round > 0 {
            // A delta is small: the changed blocks, not the 64 MiB image.
            assert!(
                p.stats.new < 2 << 20,
                "round {round} stored {}",
                p.stats.new
            );
        }
        points.push((p, r_img, r_db));
    }
    for (p, r_img, r_db) in &points {
        let out_img = d.join(format!("out-{}.img", p.id.short()));
        let out_db = d.join(format!("out-{}.sqlite", p.id.short()));
        restore(&vault, p, "system", &out_img);
        restore(&vault, p, "data", &out_db);
        assert_same(r_img, &out_img);
        assert_same(r_db, &out_db);
        e2fsck_clean(&out_img);
        assert_eq!(samples::sqlite_integrity(&out_db).unwrap(), "ok");
    }
}

#[test]
fn qcow2_files_restore_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let raw = make_ext4(d, "q", "32M");
    let qcow = d.join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow));
    let cache = d.join("cache");
    let r1 = snapshot(&qcow, &d.join("ref1.qcow2"));
    let p1 = take(&vault, &cache, &[target("q", &[("root", &qcow)])]).remove(0);
    // Change the guest data and convert again (the qcow2 file changes).
    ext4_write(&raw, d, "/etc/new", "new content\n");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow));
    let r2 = snapshot(&qcow, &d.join("ref2.qcow2"));
    let p2 = take(&vault, &cache, &[target("q", &[("root", &qcow)])]).remove(0);
    for (p, r) in [(&p1, &r1), (&p2, &r2)] {
        let out = d.join(format!("out-{}.qcow2", p.id.short()));
        restore(&vault, p, "root", &out);
        assert_same(r, &out);
        run(Command::new("qemu-img").arg("check").arg(&out));
        run(Command::new("qemu-img").arg("compare").arg(r).arg(&out));
    }
    // A fresh empty qcow2 (qemu-img create) round-trips too.
    let empty = d.join("empty.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-f", "qcow2"])
        .arg(&empty)
        .arg("1G"));
    let p = take(&vault, &cache, &[target("e", &[("root", &empty)])]).remove(0);
    let out = d.join("out-empty.qcow2");
    restore(&vault, &p, "root", &out);
    run(Command::new("qemu-img")
        .arg("compare")
        .arg(&empty)
        .arg(&out));
}

#[test]
fn sparse_shrinking_and_deduplicated_disks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let cache = d.join("cache");
    // A 1 GiB sparse file with 2 MiB of data costs nothing for its holes.
    let sparse = d.join("sparse");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(1 << 30).unwrap();
    let data: Vec<u8> = (0..(2 << 20)).map(|_| rand::random::<u8>()).collect();
    f.write_all_at(&data, 512 << 20).unwrap();
    drop(f);
    let p = take(&vault, &cache, &[target("s", &[("root", &sparse)])]).remove(0);
    assert_eq!(p.stats.read, 4 << 20, "only the chunk holding data is read");
    assert_eq!(p.stats.new, 2 << 20);
    let out = d.join("out-sparse");
    restore(&vault, &p, "root", &out);
    assert_same(&sparse, &out);
    assert!(allocated(&out) <= 3 << 20, "restored file is sparse");

    // The same content on another machine's disk stores nothing new.
    let copy = d.join("copy");
    std::fs::copy(&sparse, &copy).unwrap();
    let p2 = take(&vault, &cache, &[target("other", &[("root", &copy)])]).remove(0);
    assert_eq!(p2.stats.new, 0, "deduplicated across machines");

    // Shrinking a disk between points.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&sparse)
        .unwrap();
    f.set_len((512 << 20) + 4096 + 17).unwrap();
    drop(f);
    let p3 = take(&vault, &cache, &[target("s", &[("root", &sparse)])]).remove(0);
    assert_eq!(p3.disks["root"].parent, Some(p.id));
    restore(&vault, &p3, "root", &out);
    assert_same(&sparse, &out);
}
