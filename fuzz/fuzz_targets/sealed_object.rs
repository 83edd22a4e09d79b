//! The sealed-object decoder (`vault::seal::Sealer::open`): arbitrary bytes
//! must open to an error, never a panic or an unbounded allocation; and
//! whatever is sealed opens to exactly itself (both compression paths).
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby::vault::seal::Sealer;

fuzz_target!(|data: &[u8]| {
    let s = Sealer::new(&[7; 32]);
    let _ = s.open(data, b"points/fuzz");
    let level = i32::from(data.first().copied().unwrap_or(1) % 4) + 1;
    let sealed = s.seal(data, level, b"points/fuzz");
    let opened = s.open(&sealed, b"points/fuzz").expect("a fresh seal opens");
    assert_eq!(&*opened, data);
    // Any truncation or flipped bit of a real seal is refused.
    if !data.is_empty() {
        let cut = usize::from(data[0]) % sealed.len();
        assert!(s.open(&sealed[..cut], b"points/fuzz").is_err());
        let mut bad = sealed.clone();
        let at = usize::from(data[data.len() - 1]) * 7 % bad.len();
        bad[at] ^= 0x01;
        assert!(s.open(&bad, b"points/fuzz").is_err());
    }
});
