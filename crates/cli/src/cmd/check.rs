//! `intraport check`: DNS, TCP, TLS, old TLS versions, interception (DPI) and silent
//! handshake failures, against explicit targets or a component's rows of the port map.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use intraport_netcheck::check::{CheckOptions, check_all, check_table};
use intraport_netcheck::dns::ResolverSpec;
use intraport_netcheck::expect::Expectations;
use intraport_netcheck::hosts::Hosts;
use intraport_netcheck::portmap::{PortMap, Selection};
use intraport_netcheck::target::{Target, targets_for};
use intraport_netcheck::tls::{roots_from_pem, system_roots};

use crate::output::out;
use crate::output::{Format, Outcome, print_json};

/// Check reachability and TLS of endpoints, and look for TLS interception and
/// middleboxes that silently break handshakes.
#[derive(clap::Args, Debug)]
#[command(after_help = "Targets:\n  \
    host:port                TCP; TLS too on usual TLS ports (443, 636, 5671, 8443, ...)\n  \
    https://host[:port]/...  TLS\n  \
    tls://host:port          TLS on any port\n  \
    tcp://host:port          TCP only\n\n\
Examples:\n  \
    intraport check https://login.microsoftonline.com/ --microsoft-defaults\n  \
    intraport check --component pta --hosts hosts.toml\n  \
    intraport check dc1.corp.example:636 --ca corp-root.pem --resolver 10.0.0.53 --resolver 1.1.1.1\n\n\
Exit codes: 0 no failing finding, 1 a check failed, 2 bad arguments or files.")]
pub struct Args {
    /// Endpoints to check.
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// Also check the TCP rows of this port map component (repeatable).
    #[arg(long = "component", value_name = "NAME")]
    components: Vec<String>,
    /// Hosts file (role = ["address", ...]) giving addresses for --component rows.
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// With --component, also check rows the documents mark optional.
    #[arg(long)]
    include_optional: bool,
    /// With --component, a concrete name for a wildcard endpoint (repeatable):
    /// `--name contoso.servicebus.windows.net` checks it where the map says
    /// `*.servicebus.windows.net`. Wildcards without a name are listed as skipped.
    #[arg(long = "name", value_name = "HOST")]
    names: Vec<String>,
    /// DNS server to ask, IP or IP:port (repeatable; two or more are compared).
    /// Default: the system's resolver.
    #[arg(long = "resolver", value_name = "ADDR")]
    resolvers: Vec<String>,
    /// Use this address for a host name instead of DNS, as host:ip (repeatable).
    #[arg(long = "resolve", value_name = "HOST:IP")]
    resolve: Vec<String>,
    /// Trust anchors (PEM) instead of the system store.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Expected chains per endpoint (TOML: [[endpoint]] host, issuers, spki_sha256), to
    /// detect TLS interception.
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
    /// Also apply the documented expected issuers for Microsoft endpoints.
    #[arg(long)]
    microsoft_defaults: bool,
    /// Deadline for each DNS query, connection and handshake.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Skip the TLS 1.0/1.1 acceptance probes.
    #[arg(long)]
    no_legacy: bool,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// Run `intraport check`.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut targets = Vec::new();
    for t in &args.targets {
        targets.push(Target::parse(t)?);
    }
    let mut skipped = Vec::new();
    if !args.names.is_empty() && args.components.is_empty() {
        bail!(
            "--name gives a concrete name for a wildcard endpoint of --component rows; give --component too"
        );
    }
    if !args.components.is_empty() {
        let map = PortMap::builtin()?;
        let hosts = match &args.hosts {
            Some(p) => Some(Hosts::load(&p.display().to_string(), &map)?),
            None => None,
        };
        let sel = Selection {
            components: args.components.clone(),
            role: None,
            include_optional: args.include_optional,
        };
        map.check_selection(&sel)?;
        let found = targets_for(&map, hosts.as_ref(), &sel, &args.names);
        if let Some(name) = found.unused_names.first() {
            bail!(
                "--name {name:?} matches no wildcard endpoint of the selected rows (see `intraport ports --component {}`)",
                args.components.join(",")
            );
        }
        targets.extend(found.targets);
        skipped = found.skipped;
    }
    for s in &skipped {
        eprintln!(
            "intraport: not checked: {} {}:{}: {}",
            s.row, s.host, s.ports, s.reason
        );
    }
    if targets.is_empty() {
        bail!(
            "nothing to check: give targets, or --component with --hosts{}",
            if skipped.is_empty() {
                ""
            } else {
                " (and --name for its wildcard endpoints)"
            }
        );
    }
    let mut resolvers = Vec::new();
    for r in &args.resolvers {
        resolvers.push(ResolverSpec::Server(parse_resolver(r)?));
    }
    let mut overrides = Vec::new();
    for r in &args.resolve {
        let (host, ip) = r
            .rsplit_once(':')
            .and_then(|(h, ip)| Some((h, ip.trim_matches(['[', ']']).parse::<IpAddr>().ok()?)))
            .with_context(|| format!("--resolve {r:?}: expected host:ip"))?;
        overrides.push((host.to_string(), ip));
    }
    let roots = match &args.ca {
        Some(p) => roots_from_pem(&p.display().to_string())?,
        None => {
            let (store, errors) = system_roots();
            for e in errors {
                eprintln!("intraport: warning: system trust store: {e}");
            }
            if store.is_empty() {
                eprintln!(
                    "intraport: warning: the system trust store is empty; every chain will be untrusted (use --ca)"
                );
            }
            store
        }
    };
    let mut expectations = match &args.expect {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Expectations::parse(&text, &p.display().to_string())?
        }
        None => Expectations::default(),
    };
    if args.microsoft_defaults {
        expectations.extend(Expectations::microsoft_defaults()?);
    }
    let opts = CheckOptions {
        resolvers,
        roots: Arc::new(roots),
        timeout: args.timeout,
        expectations,
        legacy: !args.no_legacy,
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        expiry_warn_days: 30,
        overrides,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let reports = runtime.block_on(check_all(targets, &opts));
    let ok = reports.iter().all(|r| r.ok);
    match Format::resolve(args.format) {
        Format::Json => {
            print_json(&serde_json::json!({ "ok": ok, "targets": reports, "skipped": skipped }))?
        }
        Format::Table => out!("{}", check_table(&reports)),
    }
    Ok(if ok { Outcome::Ok } else { Outcome::Failed })
}

fn parse_resolver(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = s
        .trim_matches(['[', ']'])
        .parse()
        .with_context(|| format!("--resolver {s:?}: expected IP or IP:port"))?;
    Ok(SocketAddr::new(ip, 53))
}
