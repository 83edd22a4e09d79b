//! `writeback::Export` (a writable NBD export of a qcow2 image by
//! `qemu-storage-daemon`) and the NBD client's `WRITE`/`FLUSH` against it:
//! writes land in the image and are marked in its persistent bitmap, a
//! clean close stores the bitmap, a daemon left by a killed run is ended
//! by the next open (and its bitmap then says it cannot be trusted).

use std::path::Path;
use std::process::Command;

use standby_provider_qemu::writeback::Export;

fn qemu_img(args: &[&str], dir: &Path) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn byte_at(raw: &Path, off: u64, n: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; n];
    std::fs::File::open(raw)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    b
}

#[test]
fn writes_land_in_the_image_marked_in_its_bitmap_and_leftovers_are_ended() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    qemu_img(&["create", "-q", "-f", "qcow2", "d.qcow2", "64M"], d);
    qemu_img(&["bitmap", "--add", "d.qcow2", "standby-1"], d);
    let img = d.join("d.qcow2");
    let run = d.join("run");

    let e = Export::open(&img, "disk", &run, "t").unwrap();
    assert_eq!(e.untrusted().unwrap(), None);
    let b = e.bitmaps().unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].1.count, 0, "{b:?}");
    let ctx = e.dirty_context().expect("the bitmap is served");
    assert_eq!(ctx, "qemu:dirty-bitmap:standby-1");
    let mut c = e.connect_with(&[&ctx]).unwrap();
    assert_eq!(c.size, 64 << 20);
    let dirty = |c: &mut standby_provider_qemu::nbd::Client| -> Vec<(u64, u64)> {
        c.block_status(&ctx, 0, 64 << 20)
            .unwrap()
            .into_iter()
            .filter(|x| x.flags & standby_provider_qemu::nbd::STATE_DIRTY != 0)
            .map(|x| (x.offset, x.length))
            .collect()
    };
    assert_eq!(dirty(&mut c), vec![]);
    let data: Vec<u8> = (0..12288u32).map(|i| (i % 251) as u8 + 1).collect();
    c.write(1 << 20, &data).unwrap();
    c.flush().unwrap();
    let err = c.write((64 << 20) - 4096, &data).unwrap_err().to_string();
    assert!(err.contains("past the export's end"), "{err}");
    let mut back = vec![0u8; data.len()];
    c.read(1 << 20, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(dirty(&mut c), vec![(1 << 20, 64 << 10)]);
    c.disconnect().unwrap();
    let b = e.bitmaps().unwrap();
    assert_eq!(b[0].1.count, 64 << 10, "one 64 KiB chunk dirty: {b:?}");
    e.close().unwrap();
    assert!(!run.join("t.wb.pid").exists());

    // Stored cleanly: the bitmap is not in use, and the bytes are there.
    let info = qemu_img(&["info", "--output=json", "d.qcow2"], d);
    assert!(info.contains("standby-1"), "{info}");
    assert!(!info.contains("in-use"), "{info}");
    qemu_img(&["convert", "-O", "raw", "d.qcow2", "d.raw"], d);
    assert_eq!(byte_at(&d.join("d.raw"), 1 << 20, data.len()), data);
    assert_eq!(byte_at(&d.join("d.raw"), 0, 4096), vec![0u8; 4096]);

    // A daemon a killed run left: killed here too, so its bitmap is left
    // in use; the next open ends nothing alive and says why the bitmap
    // cannot be trusted.
    let e = Export::open(&img, "disk", &run, "t").unwrap();
    let pid: i32 = std::fs::read_to_string(run.join("t.wb.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: the daemon this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    drop(e);
    // A live one left behind is ended by the next open (image locking
    // would refuse a second opener).
    let first = Export::open(&img, "disk", &run, "t").unwrap();
    let why = first
        .untrusted()
        .unwrap()
        .expect("a killed daemon's bitmap");
    assert!(why.contains("inconsistent"), "{why}");
    assert_eq!(
        first.dirty_context(),
        None,
        "an inconsistent bitmap is not served"
    );
    let again = Export::open(&img, "disk", &run, "t").unwrap();
    assert!(again.connect().is_ok());
    again.close().unwrap();
    drop(first);
}
