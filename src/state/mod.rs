//! The actual state: one versioned JSON document ([`StateDoc`]) and where it
//! is kept. What the document holds lives in `document`; how it is stored
//! and locked lives in the backends, behind one small interface.

mod document;

pub use document::*;
