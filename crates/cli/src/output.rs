//! Output conventions shared by every command: `--format json|table`, exit codes.
//!
//! Results go to stdout, diagnostics to stderr. With no `--format`, a terminal gets a
//! table and anything else (a pipe, a file, CI) gets JSON.

use std::io::IsTerminal;
use std::process::ExitCode;

/// How a command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON document on stdout, for scripts and pipelines.
    Json,
    /// A table for people.
    Table,
}

impl Format {
    /// The format asked for, or the default for where stdout goes.
    pub fn resolve(asked: Option<Format>) -> Format {
        asked.unwrap_or_else(|| {
            if std::io::stdout().is_terminal() {
                Format::Table
            } else {
                Format::Json
            }
        })
    }
}

/// Exit codes of DESIGN.md's command-line contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 0: success, allowed, no findings.
    Ok,
    /// 1: the thing checked failed (invalid token, findings, failed probe).
    Failed,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        match o {
            Outcome::Ok => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
        }
    }
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}
