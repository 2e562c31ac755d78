//! `intraport config check FILE`: validate a gateway configuration and report every
//! error with its file, line, column and field.

use std::path::PathBuf;

use anyhow::Result;
use intraport_gateway::{Config, ConfigError, config::Routes, load_config};
use serde_json::json;

use crate::output::outln;
use crate::output::{Format, Outcome, print_json};

/// `config` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Check a configuration file as `serve` checks it at start (everything but
    /// binding its sockets): unknown keys, types, addresses (a listener on the admin
    /// port), CIDRs, every certificate, key, CA and key set file, the audit sinks'
    /// paths, listener and provider names, overlapping routes, a file without
    /// listeners. Exit 0 when valid, 1 when not (every error is listed).
    Check(CheckArgs),
}

/// `config check` arguments.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The configuration file.
    file: PathBuf,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// Run a `config` subcommand.
pub fn run(cmd: Command) -> Result<Outcome> {
    match cmd {
        Command::Check(args) => check(args),
    }
}

fn counts(c: &Config) -> (usize, usize) {
    let routes = c
        .listeners
        .iter()
        .map(|l| match &l.routes {
            Routes::Http { routes, .. } => routes.len(),
            Routes::Tcp(_) => 1,
        })
        .sum();
    (c.listeners.len(), routes)
}

fn error_json(e: &ConfigError) -> serde_json::Value {
    json!({
        "file": e.file.as_ref().map(|p| p.display().to_string()),
        "line": e.line,
        "column": e.column,
        "field": e.path,
        "message": e.message,
    })
}

fn check(args: CheckArgs) -> Result<Outcome> {
    let result = load_config(&args.file);
    let format = Format::resolve(args.format);
    match (&result, format) {
        (Ok(c), Format::Json) => {
            let (listeners, routes) = counts(c);
            print_json(&json!({
                "valid": true,
                "file": args.file.display().to_string(),
                "listeners": listeners,
                "routes": routes,
                "providers": c.providers.len(),
                "errors": [],
            }))?;
        }
        (Ok(c), Format::Table) => {
            let (listeners, routes) = counts(c);
            outln!(
                "{}: valid ({listeners} listeners, {routes} routes, {} providers)",
                args.file.display(),
                c.providers.len()
            );
        }
        (Err(errors), Format::Json) => print_json(&json!({
            "valid": false,
            "file": args.file.display().to_string(),
            "errors": errors.iter().map(error_json).collect::<Vec<_>>(),
        }))?,
        (Err(errors), Format::Table) => {
            for e in errors {
                outln!("{e}");
            }
            outln!(
                "{}: invalid ({} error{})",
                args.file.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
        }
    }
    Ok(if result.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}
