//! The replica store: object layout, keys and AEAD, zstd, packs, indexes,
//! recovery-point manifests, retention and GC, verify.
