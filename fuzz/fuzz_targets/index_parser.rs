//! The index parser and its checks (`vault::index::decode`): bytes (as
//! opened from a sealed `index/..` object) decode to checked pack entries
//! or an error, never a panic. The body lives in `standby::fuzz_bodies`,
//! which CI also replays.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| standby::fuzz_bodies::index_parser(data));
