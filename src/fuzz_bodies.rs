//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`), kept in the
//! library so the test suite can run the very same checks on seeds and
//! random mutations (tests/fuzz_replay.rs) without libFuzzer's sanitizer
//! build. Each takes arbitrary bytes and panics only on a broken promise.

use crate::config::{self, VarInputs};
use crate::vault::manifest::{self, BLOCK, MAX_DISK};
use crate::vault::{index, seal::Sealer};
use std::path::Path;

/// Bytes as `DIR/main.hcl` -> the whole loader -> a configuration or
/// rendered diagnostics, never a panic.
pub fn config_loader(dir: &Path, data: &[u8]) {
    std::fs::write(dir.join("main.hcl"), data).expect("write the input");
    match config::load(dir, &VarInputs::default()) {
        Ok(loaded) => {
            let _ = loaded.warnings.render(false);
        }
        Err(diags) => {
            let text = diags.render(false);
            assert!(!text.is_empty(), "a failed load must say why");
        }
    }
}

/// Arbitrary bytes open to an error; whatever is sealed opens to exactly
/// itself; a truncated or bit-flipped seal is refused.
pub fn sealed_object(data: &[u8]) {
    let s = Sealer::new(&[7; 32]);
    let _ = s.open(data, b"points/fuzz");
    let level = i32::from(data.first().copied().unwrap_or(1) % 4) + 1;
    let sealed = s.seal(data, level, b"points/fuzz");
    let opened = s.open(&sealed, b"points/fuzz").expect("a fresh seal opens");
    assert_eq!(&*opened, data);
    if !data.is_empty() {
        let cut = usize::from(data[0]) % sealed.len();
        assert!(s.open(&sealed[..cut], b"points/fuzz").is_err());
        let mut bad = sealed.clone();
        let at = usize::from(data[data.len() - 1]) * 7 % bad.len();
        bad[at] ^= 0x01;
        assert!(s.open(&bad, b"points/fuzz").is_err());
    }
}

/// Bytes decode to a checked manifest or an error; a manifest that passes
/// keeps every promise `check` makes and survives a round trip.
pub fn manifest_parser(data: &[u8]) {
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
}

/// Bytes decode to checked pack entries or an error, never a panic.
pub fn index_parser(data: &[u8]) {
    if let Ok(packs) = index::decode(data) {
        for p in &packs {
            for &(_, offset, len, _) in &p.blobs {
                assert!(offset.checked_add(u64::from(len)).is_some());
            }
        }
    }
}
