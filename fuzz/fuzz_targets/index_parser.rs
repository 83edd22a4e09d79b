//! The index parser and its checks (`vault::index::decode`): bytes (as
//! opened from a sealed `index/..` object) decode to checked pack entries
//! or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby::vault::index;

fuzz_target!(|data: &[u8]| {
    if let Ok(packs) = index::decode(data) {
        for p in &packs {
            for &(_, offset, len, _) in &p.blobs {
                assert!(offset.checked_add(u64::from(len)).is_some());
            }
        }
    }
});
