//! Failback's data path: bringing an existing disk to a point by writing
//! only the blocks that differ, on real ext4 images checked by e2fsck.

mod vault_support;

use standby::replication::{Progress, restore_onto};
use std::os::unix::fs::FileExt;
use vault_support::*;

/// Overwrite `count` scattered 4 KiB blocks of `img` with fresh bytes.
fn scribble(img: &std::path::Path, count: u64, seed: u8) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let blocks = f.metadata().unwrap().len() / 4096;
    for i in 0..count {
        let block = (i * 7919 + seed as u64 * 31) % blocks;
        let bytes: Vec<u8> = (0..4096u32).map(|j| (j as u8) ^ seed ^ (i as u8)).collect();
        f.write_all_at(&bytes, block * 4096).unwrap();
    }
}

fn resync(
    vault: &standby::vault::Vault,
    point: &standby::vault::Manifest,
    disk: &str,
    onto: &std::path::Path,
    cache: &std::path::Path,
) -> standby::replication::Resynced {
    restore_onto(vault, point, disk, onto, cache, &Progress::default()).unwrap()
}

#[test]
fn only_changed_blocks_are_written_onto_the_original_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let cache = d.join("cache");
    // The original site's disk, and the DR copy made from its point.
    let dr = make_ext4(d, "dr", "32M");
    let p1 = take(&vault, &cache, &[target("m", &[("system", &dr)])]).remove(0);
    let original = d.join("original.img");
    restore(&vault, &p1, "system", &original);

    // The DR copy changes (1% of its blocks, and a file through the file
    // system); the reverse point is a delta.
    ext4_write(
        &dr,
        d,
        "/etc/written-at-dr",
        "rows written at the DR site\n",
    );
    let size = std::fs::metadata(&dr).unwrap().len();
    let changed = size / 4096 / 100;
    scribble(&dr, changed, 1);
    let p2 = take(&vault, &cache, &[target("m", &[("system", &dr)])]).remove(0);
    assert!(p2.stats.new <= 2 * (changed + 16) * 4096, "{:?}", p2.stats);

    let r = resync(&vault, &p2, "system", &original, &cache);
    assert!(!r.full);
    assert_eq!(r.compared, size);
    assert!(r.written > 0);
    assert!(
        r.written <= 2 * (changed + 16) * 4096,
        "wrote {} bytes for {} changed blocks",
        r.written,
        changed
    );
    assert_same(&dr, &original);

    // Again: nothing differs, nothing is written. Without the change-tracking
    // cache the point's hashes come from the vault, same answer.
    std::fs::remove_dir_all(&cache).unwrap();
    let again = resync(&vault, &p2, "system", &original, &cache);
    assert_eq!(again.written, 0);
    assert_same(&dr, &original);
}

#[test]
fn blocks_zeroed_and_disks_resized_at_the_dr_site_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let cache = d.join("cache");
    let disk = d.join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    scribble(&disk, 100, 3);
    let p1 = take(&vault, &cache, &[target("m", &[("data", &disk)])]).remove(0);
    let original = d.join("original.raw");
    restore(&vault, &p1, "data", &original);

    // At DR: some blocks zeroed, the disk grows by 64 KiB.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&vec![0u8; 8 * 4096], 0).unwrap();
    f.set_len((1 << 20) + 65536).unwrap();
    f.write_all_at(b"tail", (1 << 20) + 100).unwrap();
    drop(f);
    let p2 = take(&vault, &cache, &[target("m", &[("data", &disk)])]).remove(0);
    let r = resync(&vault, &p2, "data", &original, &cache);
    assert!(r.written <= 16 * 4096, "{r:?}");
    assert_same(&disk, &original);

    // A disk that is gone at the original site is restored in full.
    std::fs::remove_file(&original).unwrap();
    let r = resync(&vault, &p2, "data", &original, &cache);
    assert!(r.full);
    assert_same(&disk, &original);
}
