//! `intraport`: the internal port for Microsoft Entra ID.
//!
//! This binary only parses arguments, wires the feature crates together and prints
//! results; every decision (is this token valid, is this rule shadowed) lives in a
//! library crate so that the gateway and the toolkit can never disagree.
//!
//! Exit codes: 0 success / allowed / no findings, 1 the thing checked failed, 2 usage,
//! configuration or input error.

mod cmd;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The gateway's request path allocates small, short-lived objects (headers, futures,
// bodies); mimalloc is built for that pattern. Its share alone is not measured: the
// README's benchmark table is the result with it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The internal port for Microsoft Entra ID: an identity-aware gateway, and the
/// toolkit that proves the port is configured right.
#[derive(Parser, Debug)]
#[command(name = "intraport", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded Entra-compatible development issuer on loopback and print a
    /// token with the commands to try it.
    Dev(cmd::dev::Args),
    /// Verify, decode and acquire Entra access tokens.
    #[command(subcommand)]
    Token(Box<cmd::token::Command>),
    /// The ports and flows of Entra's hybrid components (Connect, pass-through
    /// authentication, private network connectors, ...), or the firewall rules they need.
    Ports(cmd::ports::Args),
    /// Check connectivity and TLS to targets or to a component's endpoints: DNS, TCP,
    /// TLS versions and certificates, interception and silent handshake failures.
    Check(Box<cmd::check::Args>),
    /// Analyse the TLS handshakes in a packet capture (pcap or pcapng).
    Pcap(cmd::pcap::Args),
    /// Audit firewall and NAT rules (iptables, nftables, Azure NSG).
    #[command(subcommand)]
    Rules(cmd::rules::Command),
    /// Run the gateway: TLS and mTLS listeners, HTTP and TCP routes checked against
    /// Entra tokens, client certificates and source networks.
    Serve(cmd::serve::Args),
    /// Work with gateway configuration files.
    #[command(subcommand)]
    Config(cmd::config::Command),
    /// Scheduled synthetic logins timed by stage (token, gateway, LDAP), and reports
    /// of their latency with periodic spike detection.
    #[command(subcommand)]
    Probe(cmd::probe::Command),
    /// Run a plan of live authentication flows through a staging gateway: pass/fail
    /// per case, JSON and JUnit XML, and with --compare the cases whose outcome
    /// differs on a second gateway.
    Validate(cmd::validate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INTRAPORT_LOG").unwrap_or_else(|_| {
                // A server logs what it does; one-shot commands only warnings.
                let level = if matches!(cli.command, Command::Serve(_)) {
                    "info"
                } else {
                    "warn"
                };
                tracing_subscriber::EnvFilter::new(level)
            }),
        )
        .init();
    let result = match cli.command {
        Command::Dev(args) => cmd::dev::run(args),
        Command::Token(c) => cmd::token::run(*c),
        Command::Ports(args) => cmd::ports::run(args),
        Command::Check(args) => cmd::check::run(*args),
        Command::Pcap(args) => cmd::pcap::run(args),
        Command::Rules(c) => cmd::rules::run(c),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Config(c) => cmd::config::run(c),
        Command::Probe(c) => cmd::probe::run(c),
        Command::Validate(args) => cmd::validate::run(args),
    };
    match result {
        Ok(outcome) => outcome.into(),
        Err(err) => {
            eprintln!("intraport: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
