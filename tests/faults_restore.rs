//! A restore whose writer thread panics fails (issue 19 item 3): the join
//! error is the restore's error, and a restore succeeds only when every
//! data block of the disk was written.

mod vault_support;

use standby::progress::Progress;
use standby::replication::restore::{Sink, write_resolved};
use standby::vault::{index, manifest};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use vault_support::*;

/// Records writes; panics on the `panic_at`-th write (1-based, 0: never).
struct Recording {
    writes: AtomicU64,
    panic_at: u64,
    bytes: Mutex<u64>,
}

impl Sink for Recording {
    fn write_at(&self, _off: u64, data: &[u8]) -> std::io::Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.panic_at {
            panic!("injected writer panic");
        }
        *self.bytes.lock().unwrap() += data.len() as u64;
        Ok(())
    }
    fn target(&self) -> PathBuf {
        PathBuf::from("recording sink")
    }
}

#[test]
fn a_writer_panic_fails_the_restore() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vault, _) = new_vault(&backend_url("file", d), d);
    let disk = d.join("disk");
    // Incompressible, not deduplicated data: several blobs.
    let mut data = vec![0u8; 4 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&disk, &data).unwrap();
    let points = take(&vault, &d.join("cache"), &[target("a", &[("root", &disk)])]);
    let point = &points[0];
    let (idx, _) = index::load(&vault, false).unwrap();
    let r = manifest::resolve(&vault, point, "root", &mut HashMap::new()).unwrap();

    // Control: the same sink without a panic writes every byte.
    let sink = Recording {
        writes: AtomicU64::new(0),
        panic_at: 0,
        bytes: Mutex::new(0),
    };
    write_resolved(&vault, &idx, &r, &sink, &Progress::default(), &point.id).unwrap();
    assert_eq!(*sink.bytes.lock().unwrap(), data.len() as u64);

    let sink = Recording {
        writes: AtomicU64::new(0),
        panic_at: 1,
        bytes: Mutex::new(0),
    };
    let err = write_resolved(&vault, &idx, &r, &sink, &Progress::default(), &point.id)
        .expect_err("a restore whose writer panicked must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("a restore writer thread panicked: injected writer panic"),
        "{msg}"
    );
}
