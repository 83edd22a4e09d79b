//! Verify: placeholder, filled in below.
