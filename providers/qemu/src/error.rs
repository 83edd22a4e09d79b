//! The crate's error type.

use std::path::PathBuf;

/// Everything that can fail in this crate. Messages name the object (VM,
/// socket, command, export) and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} not found: run .ci/run (it installs the QEMU packages) or install {package}")]
    MissingTool { tool: String, package: String },
    #[error("QMP command {command} failed: {class}: {desc}")]
    Qmp {
        command: String,
        class: String,
        desc: String,
    },
    #[error("guest agent command {command} failed: {class}: {desc}")]
    Agent {
        command: String,
        class: String,
        desc: String,
    },
    #[error("{peer} sent a reply that does not parse: {detail}")]
    Protocol { peer: String, detail: String },
    #[error("interrupted while {what}")]
    Interrupted { what: String },
    #[error("timed out after {seconds:.1} s waiting for {what}")]
    Timeout { what: String, seconds: f64 },
    #[error("NBD server refused {what}: {detail}")]
    NbdRefused { what: String, detail: String },
    #[error("NBD {command} at offset {offset} failed: error {errno} ({detail})")]
    NbdCommand {
        command: &'static str,
        offset: u64,
        errno: u32,
        detail: String,
    },
    #[error("TLS with {peer} failed: {detail}")]
    Tls { peer: String, detail: String },
    #[error("VM {name}: {detail}")]
    Vm { name: String, detail: String },
    #[error("building the test guest into {dir} failed: {detail}")]
    GuestBuild { dir: PathBuf, detail: String },
    #[error("changed-block tracking on {node}: {detail}")]
    Cbt { node: String, detail: String },
    /// `qemu-img` refused (`what`: the step, e.g. "create of the wrapper
    /// of IMAGE").
    #[error("qemu-img {what}: {detail}")]
    Image { what: String, detail: String },
    /// Instant recovery's background copy of one disk (QEMU node).
    #[error("the background copy of disk {node}: {detail}")]
    Copy { node: String, detail: String },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
