//! `intraport ports`: the Entra hybrid port map, filtered, as a table, JSON or CSV, or as
//! the allow rules a firewall needs.

use std::path::PathBuf;

use anyhow::Context;
use intraport_netcheck::hosts::Hosts;
use intraport_netcheck::portmap::{PortMap, Selection};
use intraport_netcheck::render::{ports_csv, ports_table};
use intraport_netcheck::rules::{RuleFormat, render_rules, required_flows};

use crate::output::out;
use crate::output::{Format, Outcome, print_json};

/// How `ports` prints the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PortsFormat {
    /// One JSON document.
    Json,
    /// A table for people.
    Table,
    /// CSV with a header line, for spreadsheets.
    Csv,
}

/// Firewall dialects for `--as-rules`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RulesDialect {
    /// `iptables-restore --noflush` input (IPv4 filter table).
    Iptables,
    /// An `nft -f` script (IPv4 and IPv6).
    Nftables,
    /// Azure NSG `securityRules` JSON.
    Nsg,
}

/// Show the ports and endpoints Entra's hybrid components need, each row with the
/// document it comes from.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("addresses").multiple(true)))]
#[command(after_help = "Examples:\n  \
    intraport ports --component pta\n  \
    intraport ports --role domain-controller --format csv\n  \
    intraport ports --component connect-sync --role domain-controller --as-rules iptables --hosts hosts.toml\n\n\
    A hosts file maps roles to addresses: connect-server = [\"10.0.0.5\"];\n\
    --host connect-server=10.0.0.5 does the same on the command line.")]
pub struct Args {
    /// Only rows of this component (repeatable), e.g. connect-sync, pta, cloud-sync.
    #[arg(long = "component", value_name = "NAME")]
    components: Vec<String>,
    /// Only rows where this role is on either side, e.g. domain-controller. With
    /// --as-rules, the rules are for that role's host (INPUT/OUTPUT); without, for a
    /// network firewall between the roles (FORWARD).
    #[arg(long, value_name = "ROLE")]
    role: Option<String>,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum, conflicts_with = "as_rules")]
    format: Option<PortsFormat>,
    /// Print the allow rules a firewall needs instead of the map; needs --hosts or --host.
    #[arg(
        long = "as-rules",
        value_enum,
        value_name = "DIALECT",
        requires = "addresses"
    )]
    as_rules: Option<RulesDialect>,
    /// TOML file mapping roles to addresses or CIDRs, for --as-rules.
    #[arg(long, value_name = "FILE", group = "addresses")]
    hosts: Option<PathBuf>,
    /// A role's addresses, ROLE=ADDR[,ADDR...] (repeatable; added to --hosts).
    #[arg(long = "host", value_name = "ROLE=ADDRS", group = "addresses")]
    host: Vec<String>,
    /// With --as-rules, also allow flows the documents mark optional or conditional.
    #[arg(long)]
    include_optional: bool,
    /// Use this port map instead of the built-in one (same TOML layout).
    #[arg(long, value_name = "FILE")]
    map: Option<PathBuf>,
}

/// Run `intraport ports`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let map = match &args.map {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            PortMap::parse(&text, &path.display().to_string())?
        }
        None => PortMap::builtin()?,
    };
    if let Some(dialect) = args.as_rules {
        let mut hosts = match &args.hosts {
            Some(p) => Hosts::load(&p.display().to_string(), &map)?,
            None => Hosts {
                origin: "--host".into(),
                ..Hosts::default()
            },
        };
        for h in &args.host {
            hosts.add_arg(h, "--host", &map)?;
        }
        let sel = Selection {
            components: args.components,
            role: args.role,
            include_optional: args.include_optional,
        };
        let flows = required_flows(&map, &hosts, &sel)?;
        let rendered = render_rules(
            &flows,
            match dialect {
                RulesDialect::Iptables => RuleFormat::Iptables,
                RulesDialect::Nftables => RuleFormat::Nftables,
                RulesDialect::Nsg => RuleFormat::Nsg,
            },
        )?;
        for w in &rendered.warnings {
            eprintln!("intraport: warning: {w}");
        }
        out!("{}", rendered.text);
        return Ok(Outcome::Ok);
    }
    // A listing shows optional rows too; they are marked.
    let sel = Selection {
        components: args.components,
        role: args.role,
        include_optional: true,
    };
    map.check_selection(&sel)?;
    let rows: Vec<_> = map.select(&sel).collect();
    let format = args.format.unwrap_or(match Format::resolve(None) {
        Format::Json => PortsFormat::Json,
        Format::Table => PortsFormat::Table,
    });
    match format {
        PortsFormat::Json => print_json(&serde_json::json!({
            "source_repository": "MicrosoftDocs/entra-docs",
            "components": map.components,
            "roles": map.roles,
            "rows": rows,
        }))?,
        PortsFormat::Table => out!("{}", ports_table(rows)),
        PortsFormat::Csv => out!("{}", ports_csv(rows)?),
    }
    Ok(Outcome::Ok)
}
