//! The crate's error type.

use std::fmt;

/// Why a ruleset or flow file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is not valid in its format.
    #[error("{file}:{line}: {message} (at `{token}`)")]
    Parse {
        /// File as given.
        file: String,
        /// 1-based line (for JSON inputs, the line of the offending value where known).
        line: usize,
        /// The offending token or field.
        token: String,
        /// What was expected.
        message: String,
    },
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// File as given.
        file: String,
        /// Underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// A parse error.
    pub fn parse(
        file: &str,
        line: usize,
        token: impl fmt::Display,
        message: impl fmt::Display,
    ) -> Error {
        Error::Parse {
            file: file.to_string(),
            line,
            token: token.to_string(),
            message: message.to_string(),
        }
    }
}
