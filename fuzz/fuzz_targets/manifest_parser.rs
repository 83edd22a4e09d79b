//! The manifest parser and its checks (`vault::manifest::decode`): bytes
//! (as opened from a sealed `points/..` object) decode to a checked
//! manifest or an error, never a panic; a manifest that passes survives a
//! round trip and keeps every promise `check` makes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby::vault::manifest::{self, BLOCK, MAX_DISK};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = manifest::decode(data) else {
        return;
    };
    for (disk, map) in &m.disks {
        assert!(!disk.contains('/') && !disk.contains(".."), "{disk:?}");
        assert!(map.size <= MAX_DISK);
        for e in &map.extents {
            assert!(e.0 % BLOCK == 0 && e.0 + e.1 <= map.size.div_ceil(BLOCK) * BLOCK);
        }
    }
    let again = serde_json::to_vec(&m).expect("a manifest serializes");
    assert_eq!(
        manifest::decode(&again).expect("a checked manifest decodes again"),
        m
    );
});
