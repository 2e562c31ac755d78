//! `intraport rules audit`: firewall and NAT rule anomalies, proved by set arithmetic,
//! and the coverage of required flows.

use std::path::PathBuf;

use anyhow::{Context, bail};
use intraport_netcheck::hosts::Hosts;
use intraport_netcheck::portmap::{PortMap, Selection, Transport};
use intraport_netcheck::rules::{Direction, required_flows};
use intraport_rules::{
    AuditOptions, CoverageResult, FlowStatus, InputFormat, Report, RequiredFlow, Severity,
    analysis::Analysis, audit::audit_analysis, coverage, parse, parse_flows,
};
use serde::Serialize;

use crate::output::outln;
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
        intraport rules audit fw.rules --flows flows.toml --fail-on medium\n  \
        intraport rules audit dc.rules --component connect-sync --role domain-controller \\\n    \
        --host domain-controller=10.0.1.10 --host connect-server=10.0.0.5\n\n\
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
    /// Check the flows this component of the Entra port map needs (repeatable), e.g.
    /// connect-sync, pta: each is allowed, blocked (by which rule) or partially allowed.
    /// The flows are those `intraport ports --as-rules` prints for the same choices.
    #[arg(long = "component", value_name = "NAME")]
    components: Vec<String>,
    /// The role whose own firewall the ruleset is (flows on its INPUT/OUTPUT, or NSG
    /// Inbound/Outbound); without it, a network firewall between the roles (FORWARD).
    #[arg(long, value_name = "ROLE", requires = "components")]
    role: Option<String>,
    /// TOML file mapping roles to addresses (role = ["10.0.0.5", "10.0.1.0/24"]).
    #[arg(long, value_name = "FILE", requires = "components")]
    hosts: Option<PathBuf>,
    /// A role's addresses, ROLE=ADDR[,ADDR...] (repeatable; added to --hosts).
    #[arg(long = "host", value_name = "ROLE=ADDRS", requires = "components")]
    host: Vec<String>,
    /// With --component, also require flows the documents mark optional.
    #[arg(long, requires = "components")]
    include_optional: bool,
    /// An address of the host the ruleset runs on, ADDR/PREFIX (repeatable), for
    /// `-m addrtype` / `fib ... type` matches (LOCAL, BROADCAST, UNICAST). Without
    /// it the hook decides: on INPUT a unicast destination is this host's, on
    /// FORWARD it is not; elsewhere such a match stays unknown.
    #[arg(long = "host-address", value_name = "ADDR/PREFIX")]
    host_address: Vec<ipnet::IpNet>,
    /// For NSGs: the virtual network's address space (repeatable), what the
    /// VirtualNetwork tag stands for (default: 10.0.0.0/8, 172.16.0.0/12,
    /// 192.168.0.0/16); Internet is everything else.
    #[arg(long = "vnet-address-space", value_name = "CIDR")]
    vnet_address_space: Vec<ipnet::IpNet>,
    /// An interface that faces untrusted networks (repeatable): once given, an
    /// accept limited to other input interfaces is not called permissive.
    #[arg(long = "external-interface", value_name = "NAME")]
    external_interface: Vec<String>,
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
    let ruleset = match format {
        InputFormat::Nsg => {
            intraport_rules::nsg::parse_with(&name, &text, &args.vnet_address_space)?
        }
        _ => parse(format, &name, &text)?,
    };
    let mut flows = match &args.flows {
        Some(path) => {
            let fname = path.display().to_string();
            let ftext =
                std::fs::read_to_string(path).with_context(|| format!("reading {fname}"))?;
            parse_flows(&fname, &ftext)?
        }
        None => Vec::new(),
    };
    if !args.components.is_empty() {
        flows.extend(port_map_flows(&args, format)?);
    }
    let host = intraport_rules::addrtype::Host {
        addresses: args.host_address.clone(),
    };
    let analysis = Analysis::with_host(&ruleset, host);
    let options = AuditOptions {
        external_interfaces: args.external_interface.clone(),
        ..AuditOptions::default()
    };
    let report = audit_analysis(&analysis, &options);
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

/// The required flows of the chosen components, from the port map and the roles'
/// addresses, in the rules crate's terms (hook names of the input's firewall).
fn port_map_flows(args: &AuditArgs, format: InputFormat) -> anyhow::Result<Vec<RequiredFlow>> {
    let map = PortMap::builtin()?;
    let mut hosts = match &args.hosts {
        Some(p) => Hosts::load(&p.display().to_string(), &map)?,
        None => Hosts::default(),
    };
    for h in &args.host {
        hosts.add_arg(h, "--host", &map)?;
    }
    if hosts.roles.is_empty() {
        bail!(
            "--component needs the roles' addresses: give --hosts FILE or --host ROLE=ADDR (e.g. --host domain-controller=10.0.1.10)"
        );
    }
    hosts.origin = match (&args.hosts, args.host.is_empty()) {
        (Some(p), true) => p.display().to_string(),
        (Some(p), false) => format!("{} and --host", p.display()),
        (None, _) => "--host".to_string(),
    };
    let sel = Selection {
        components: args.components.clone(),
        role: args.role.clone(),
        include_optional: args.include_optional,
    };
    let mut out = Vec::new();
    for f in required_flows(&map, &hosts, &sel)? {
        let chain = match (format, f.direction) {
            (InputFormat::Nsg, Direction::Inbound) => "Inbound",
            (InputFormat::Nsg, Direction::Outbound) => "Outbound",
            (InputFormat::Nsg, Direction::Forward) => bail!(
                "an NSG filters the traffic of one subnet or NIC: give --role, the role it protects"
            ),
            (_, Direction::Inbound) => "INPUT",
            (_, Direction::Outbound) => "OUTPUT",
            (_, Direction::Forward) => "FORWARD",
        };
        out.push(RequiredFlow {
            name: format!("{} {}/{}", f.row_id, f.transport, f.dports),
            proto: match f.transport {
                Transport::Tcp => 6,
                Transport::Udp => 17,
            },
            src: f.src,
            dst: f.dst,
            dports: vec![(f.dports.start, f.dports.end)],
            chain: chain.to_string(),
        });
    }
    Ok(out)
}

fn print_table(report: &Report, cov: &[CoverageResult]) {
    outln!(
        "{}: {} tables, {} rules, {} base chains analysed, {} findings",
        report.file,
        report.stats.tables,
        report.stats.rules,
        report.stats.chains_analysed,
        report.findings.len()
    );
    if !report.findings.is_empty() {
        outln!();
        outln!("{:<8} {:<13} {:<28} MESSAGE", "SEVERITY", "KIND", "RULE");
    }
    for f in &report.findings {
        let rule = f.rule.as_ref().map(|r| r.to_string()).unwrap_or_default();
        outln!(
            "{:<8} {:<13} {:<28} {}",
            f.severity.to_string(),
            f.kind.to_string(),
            rule,
            f.message
        );
        for r in &f.related {
            outln!("{:<51} related: {r}  {}", "", r.text);
        }
        if let Some(p) = &f.example {
            outln!("{:<51} example: {p}", "");
        }
        if let Some(p) = &f.translated {
            outln!("{:<51} after NAT: {p}", "");
        }
    }
    if !cov.is_empty() {
        let w = cov
            .iter()
            .map(|c| c.flow.chars().count())
            .max()
            .unwrap_or(0)
            .max(4);
        outln!();
        outln!("{:<w$} {:<10} {:<12} BY", "FLOW", "CHAIN", "STATUS");
        for c in cov {
            let status = serde_json::to_value(c.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let by: Vec<String> = c.by.iter().map(|r| r.to_string()).collect();
            outln!(
                "{:<w$} {:<10} {:<12} {}",
                c.flow,
                c.chain,
                status,
                by.join(", ")
            );
            if let Some(p) = &c.example {
                outln!("{:<pad$} example: {p}", "", pad = w + 24);
            }
        }
    }
}
