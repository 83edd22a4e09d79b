//! The manifest parser and its checks (`vault::manifest::decode`): bytes
//! (as opened from a sealed `points/..` object) decode to a checked
//! manifest or an error, never a panic; a manifest that passes survives a
//! round trip and keeps every promise `check` makes. The body lives in
//! `standby::fuzz_bodies`, which CI also replays.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| standby::fuzz_bodies::manifest_parser(data));
