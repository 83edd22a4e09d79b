//! The sealed-object decoder (`vault::seal::Sealer::open`): arbitrary bytes
//! must open to an error, never a panic or an unbounded allocation; and
//! whatever is sealed opens to exactly itself (both compression paths).
//! The body lives in `standby::fuzz_bodies`, which CI also replays.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| standby::fuzz_bodies::sealed_object(data));
