//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong starting or feeding the audit pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid; `field` is its path (`audit.sink[1].address`).
    #[error("{field}: {message}")]
    Config {
        /// The field's path.
        field: String,
        /// What was expected and what was found.
        message: String,
    },
    /// A file or directory a sink needs could not be opened or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What the file is for (`audit file`, `spool`).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `emit_durable` could not confirm the event on disk in the named sink (its
    /// write or fsync failed, or the pipeline is shut down). Fail closed: do not
    /// answer as if the event were recorded.
    #[error("audit event not durable in sink {sink}: {reason}")]
    NotDurable {
        /// The sink's name.
        sink: String,
        /// Why.
        reason: String,
    },
}
