//! Bytes -> one HCL file -> the whole configuration loader (parse, variables,
//! references, checks) -> rendered diagnostics. Any input must end in a
//! configuration or diagnostics, never a panic. The body lives in
//! `standby::fuzz_bodies`, which CI also replays.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One directory for the whole run; each input replaces its only file.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("standby-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a scratch directory");
        d
    })
}

fuzz_target!(|data: &[u8]| standby::fuzz_bodies::config_loader(dir(), data));
