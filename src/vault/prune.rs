//! Prune: placeholder.
