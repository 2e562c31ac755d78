//! The crate's one error type: input that cannot be used, named with where it came from.

use std::fmt;

/// Where a piece of input came from: a file (or the built-in map) and, when known, a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file name, or a name such as `built-in port map`.
    pub origin: String,
    /// 1-based line number, when the parser could tell.
    pub line: Option<usize>,
}

impl Location {
    /// A location in `origin`, at the line holding byte `offset` of `text` if given.
    pub fn at(origin: &str, text: &str, offset: Option<usize>) -> Location {
        let line = offset.map(|o| text[..o.min(text.len())].matches('\n').count() + 1);
        Location {
            origin: origin.to_string(),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.origin),
            None => write!(f, "{}", self.origin),
        }
    }
}

/// Everything that can go wrong before a check runs: bad files, bad arguments.
///
/// Findings of a check (a closed port, an expired certificate) are not errors; they are
/// values in the report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or argument could not be used; names the place, the field and the problem.
    #[error("{location}: {field}: {message}")]
    Input {
        /// Where the bad value is.
        location: Location,
        /// The field, key or argument that holds it.
        field: String,
        /// What was expected and what was found.
        message: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

impl Error {
    /// An [`Error::Input`] without a line.
    pub fn input(origin: &str, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Input {
            location: Location {
                origin: origin.to_string(),
                line: None,
            },
            field: field.into(),
            message: message.into(),
        }
    }
}
