//! The actual state: one versioned JSON document ([`StateDoc`]) and where it
//! is kept. What the document holds lives in `document`; how it is stored
//! and locked lives in the backends, behind one small interface.

mod document;

pub use document::*;

use std::path::{Path, PathBuf};

/// Where the local backend keeps the state, relative to the configuration directory.
pub const LOCAL_STATE_PATH: &str = ".standby/state.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not a valid state document: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// Read the local state of the configuration in `dir`; `None` when no state exists yet.
pub fn read_local(dir: &Path) -> Result<Option<StateDoc>, StateError> {
    let path = dir.join(LOCAL_STATE_PATH);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StateError::Malformed {
            path,
            reason: e.to_string(),
        })
}
