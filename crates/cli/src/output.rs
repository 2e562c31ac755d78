//! Output conventions shared by every command: `--format json|table`, exit codes.
//!
//! Results go to stdout, diagnostics to stderr. With no `--format`, a terminal gets a
//! table and anything else (a pipe, a file, CI) gets JSON.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// `print!` for results: when stdout's reader has gone (`intraport ports | head`) the
/// process ends quietly with status 0, as a Unix tool killed by SIGPIPE would, instead
/// of panicking. (Rust ignores SIGPIPE, and the network commands need it ignored: their
/// sockets are written with `writev`, which raises it when a peer has gone.)
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!($($arg)*))
    };
}

/// `println!` for results, with [`out!`]'s handling of a closed stdout.
macro_rules! outln {
    () => {
        $crate::output::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Write to stdout; a closed pipe ends the process quietly, another error is reported.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing the result to stdout: {e}");
        std::process::exit(2);
    }
}

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
    outln!("{text}");
    Ok(())
}
