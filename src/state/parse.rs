//! Turning the bytes of a state file into a [`StateDoc`], with errors that
//! say what is wrong and where (line and column).

use super::{FORMAT_VERSION, StateDoc, StateError};
use std::path::Path;

/// Parse the bytes of the state file at `path` (the path is only for messages).
///
/// Order matters for the message: first is it JSON at all, then is it a
/// format this build reads (a newer file names the version that wrote it),
/// then does it have exactly the document's shape.
pub fn parse_document(path: &Path, bytes: &[u8]) -> Result<StateDoc, StateError> {
    let malformed = |reason: String| StateError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(malformed(
            "the file is empty (a write may have been cut short)".to_string(),
        ));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| malformed(describe_json_error(&e)))?;
    let Some(obj) = value.as_object() else {
        return Err(malformed(format!(
            "expected a JSON object at the top, found {}",
            json_type(&value)
        )));
    };
    match obj.get("format_version") {
        None => return Err(malformed("`format_version` is missing".to_string())),
        Some(v) => match v.as_u64() {
            None => {
                return Err(malformed(format!(
                    "`format_version` must be a whole number, found {}",
                    json_type(v)
                )));
            }
            Some(n) if n > u64::from(FORMAT_VERSION) => {
                let written_by = obj
                    .get("standby_version")
                    .and_then(|v| v.as_str())
                    .unwrap_or("(unknown version)")
                    .to_string();
                return Err(StateError::NewerFormat {
                    path: path.to_path_buf(),
                    found: n,
                    written_by,
                    ours: env!("CARGO_PKG_VERSION"),
                    supported: FORMAT_VERSION,
                });
            }
            Some(n) if n != u64::from(FORMAT_VERSION) => {
                return Err(malformed(format!(
                    "format version {n} is not supported (this build reads format version {FORMAT_VERSION})"
                )));
            }
            Some(_) => {}
        },
    }
    // Parse again from the bytes (not from `value`) so shape errors keep
    // their line and column.
    serde_json::from_slice(bytes).map_err(|e| malformed(describe_json_error(&e)))
}

fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Eof => "the file ends too early (truncated?)",
        Category::Syntax => "not valid JSON",
        Category::Data => "wrong document shape",
        Category::Io => "read error",
    };
    // serde_json's message already ends in "at line L column C".
    format!("{what}: {e}")
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
