//! `intraport rules audit`: firewall and NAT rule anomalies, proved by set arithmetic,
//! and the coverage of required flows.

use std::path::PathBuf;

use anyhow::Context;
use intraport_rules::{
    AuditOptions, CoverageResult, FlowStatus, InputFormat, Report, Severity, analysis::Analysis,
    audit::audit_analysis, coverage, parse, parse_flows,
};
use serde::Serialize;

use crate::output::{Format, Outcome, print_json};

/// Firewall and NAT rule audits.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Find shadowed, redundant and correlated rules, overlapping NAT, DNAT into a
    /// drop, overly permissive accepts, and check required flows.
    #[command(after_help = "Examples:\n  \
        iptables-save > fw.rules && intraport rules audit fw.rules\n  \
        nft -j list ruleset > fw.json && intraport rules audit fw.json --input nftables\n  \
        az network nsg show -g RG -n NSG > nsg.json && intraport rules audit nsg.json\n  \
        intraport rules audit fw.rules --flows flows.toml --fail-on medium\n\n\
        Exit status: 0 no finding at or above --fail-on and every flow allowed,\n\
        1 such findings or a blocked/partial flow, 2 unreadable input.")]
    Audit(AuditArgs),
}

/// Rule file syntaxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InputKind {
    /// `iptables-save` / `ip6tables-save` output.
    Iptables,
    /// `nft -j list ruleset` output.
    Nftables,
    /// `az network nsg show` output.
    Nsg,
}

/// Severities for `--fail-on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Anything, including notes about parts not analysed.
    Info,
    /// Redundant and correlated rules and worse.
    Low,
    /// Shadowed rules, overlapping NAT and worse.
    Medium,
    /// Only exposure or breakage: permissive accepts, DNAT into a drop, loops.
    High,
}

/// Arguments of `rules audit`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// The ruleset file.
    file: PathBuf,
    /// Its syntax (default: detected from the content). The CLI-wide `--format`
    /// chooses the output, so the input syntax has its own flag.
    #[arg(long = "input", value_enum, value_name = "SYNTAX")]
    input: Option<InputKind>,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Exit 1 when a finding of this severity or higher exists.
    #[arg(long, value_enum, default_value = "low")]
    fail_on: FailOn,
    /// TOML file of flows that must get through (`[[flow]]` with name, proto, src,
    /// dst, dports, chain).
    #[arg(long, value_name = "FILE")]
    flows: Option<PathBuf>,
}

#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    coverage: Vec<CoverageResult>,
}

/// Run a `rules` subcommand.
pub fn run(cmd: Command) -> anyhow::Result<Outcome> {
    match cmd {
        Command::Audit(args) => run_audit(args),
    }
}

fn detect(text: &str) -> InputFormat {
    let t = text.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        if t.contains("\"nftables\"") {
            InputFormat::Nftables
        } else {
            InputFormat::Nsg
        }
    } else {
        InputFormat::Iptables
    }
}

fn run_audit(args: AuditArgs) -> anyhow::Result<Outcome> {
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {name}"))?;
    let format = match args.input {
        Some(InputKind::Iptables) => InputFormat::Iptables,
        Some(InputKind::Nftables) => InputFormat::Nftables,
        Some(InputKind::Nsg) => InputFormat::Nsg,
        None => detect(&text),
    };
    let ruleset = parse(format, &name, &text)?;
    let flows = match &args.flows {
        Some(path) => {
            let fname = path.display().to_string();
            let ftext =
                std::fs::read_to_string(path).with_context(|| format!("reading {fname}"))?;
            parse_flows(&fname, &ftext)?
        }
        None => Vec::new(),
    };
    let analysis = Analysis::new(&ruleset);
    let report = audit_analysis(&analysis, &AuditOptions::default());
    let cov = coverage(&analysis, &flows);
    let level = match args.fail_on {
        FailOn::Info => Severity::Info,
        FailOn::Low => Severity::Low,
        FailOn::Medium => Severity::Medium,
        FailOn::High => Severity::High,
    };
    let failed = report.fails(level)
        || cov
            .iter()
            .any(|c| matches!(c.status, FlowStatus::Blocked | FlowStatus::Partial));
    match Format::resolve(args.format) {
        Format::Json => print_json(&Output {
            report: &report,
            coverage: cov,
        })?,
        Format::Table => print_table(&report, &cov),
    }
    Ok(if failed { Outcome::Failed } else { Outcome::Ok })
}

fn print_table(report: &Report, cov: &[CoverageResult]) {
    println!(
        "{}: {} tables, {} rules, {} base chains analysed, {} findings",
        report.file,
        report.stats.tables,
        report.stats.rules,
        report.stats.chains_analysed,
        report.findings.len()
    );
    if !report.findings.is_empty() {
        println!();
        println!("{:<8} {:<13} {:<28} MESSAGE", "SEVERITY", "KIND", "RULE");
    }
    for f in &report.findings {
        let rule = f.rule.as_ref().map(|r| r.to_string()).unwrap_or_default();
        println!(
            "{:<8} {:<13} {:<28} {}",
            f.severity.to_string(),
            f.kind.to_string(),
            rule,
            f.message
        );
        for r in &f.related {
            println!("{:<51} related: {r}  {}", "", r.text);
        }
        if let Some(p) = &f.example {
            println!("{:<51} example: {p}", "");
        }
        if let Some(p) = &f.translated {
            println!("{:<51} after NAT: {p}", "");
        }
    }
    if !cov.is_empty() {
        println!();
        println!("{:<32} {:<10} {:<12} BY", "FLOW", "CHAIN", "STATUS");
        for c in cov {
            let status = serde_json::to_value(c.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let by: Vec<String> = c.by.iter().map(|r| r.to_string()).collect();
            println!(
                "{:<32} {:<10} {:<12} {}",
                c.flow,
                c.chain,
                status,
                by.join(", ")
            );
            if let Some(p) = &c.example {
                println!("{:<56} example: {p}", "");
            }
        }
    }
}
