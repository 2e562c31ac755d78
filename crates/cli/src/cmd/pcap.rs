//! `intraport pcap FILE`: TLS handshakes in a packet capture, per connection and in
//! summary, so that a capture taken on a network segment shows whether encrypted
//! traffic really gets through.

use std::path::PathBuf;

use intraport_capture::{Connection, Report, analyze_file};
use intraport_netcheck::table::Table;

use crate::output::out;
use crate::output::{Format, Outcome, print_json};

/// Arguments of `pcap`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    tcpdump -i any -w segment.pcap 'tcp port 443 or tcp port 636'\n  \
    intraport pcap segment.pcap\n  \
    intraport pcap segment.pcapng --format json | jq '.summary'\n\n\
    Exit status: 0 no failed handshake, 1 at least one failed handshake\n\
    (alert, reset or FIN before completion, stall), 2 unreadable file.")]
pub struct Args {
    /// The capture (pcap or pcapng; Ethernet, Linux cooked, raw IP or loopback; GRE,
    /// VXLAN, Geneve and GTP-U tunnels are looked into).
    file: PathBuf,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// In the table, list only connections whose handshake failed.
    #[arg(long)]
    failed_only: bool,
}

/// Analyse the capture and print the report.
pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let report = analyze_file(&args.file)?;
    match Format::resolve(args.format) {
        Format::Json => print_json(&report)?,
        Format::Table => out!("{}", table(&report, args.failed_only)),
    }
    Ok(if report.any_failed() {
        Outcome::Failed
    } else {
        Outcome::Ok
    })
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_default()
}

fn outcome_cell(c: &Connection) -> String {
    let mut cell = match &c.alert {
        Some(a) => format!("alert:{}", a.description),
        None => c.outcome.as_str().to_string(),
    };
    for a in &c.warning_alerts {
        cell.push_str(&format!(" warning:{}", a.description));
    }
    if c.hello_retry_request {
        cell.push_str(" hrr");
    }
    if c.client_hello.as_ref().is_some_and(|h| h.sslv2_format) {
        cell.push_str(" sslv2-hello");
    }
    if let Some(v) = &c.via {
        cell.push_str(&format!(" via:{v}"));
    }
    if let Some(t) = &c.tunnel {
        cell.push_str(&format!(" in:{t}"));
    }
    cell
}

fn table(r: &Report, failed_only: bool) -> String {
    let mut t = Table::new(&[
        "#",
        "CLIENT",
        "SERVER",
        "SNI",
        "VERSION",
        "CIPHER",
        "HANDSHAKE_MS",
        "RETRANS",
        "OUTCOME",
    ]);
    for c in r
        .connections
        .iter()
        .filter(|c| !failed_only || c.outcome.is_failure())
    {
        t.row(vec![
            c.id.to_string(),
            c.client.clone(),
            c.server.clone(),
            c.sni.clone().unwrap_or_default(),
            c.version.clone().unwrap_or_default(),
            c.cipher_suite.clone().unwrap_or_default(),
            ms(c.handshake_ms),
            c.retransmissions.to_string(),
            outcome_cell(c),
        ]);
    }
    let mut out = t.render();
    let mut servers = Table::new(&["SERVER", "SNI", "CONNECTIONS", "OUTCOMES"]);
    for s in &r.summary.by_server {
        let outcomes: Vec<String> = s
            .by_outcome
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        servers.row(vec![
            s.server.clone(),
            s.sni.join(","),
            s.connections.to_string(),
            outcomes.join(" "),
        ]);
    }
    out.push('\n');
    out.push_str(&servers.render());
    out.push_str(&format!(
        "\n{} packets ({} TCP, {}), {:.1} ms; {} connections, {} TLS handshakes, {} failed\n",
        r.packets,
        r.tcp_packets,
        r.format,
        r.duration_ms,
        r.summary.connections,
        r.summary.handshakes,
        r.summary.failed
    ));
    if !r.tunnels.is_empty() {
        let t: Vec<String> = r.tunnels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("TCP packets inside tunnels: {}\n", t.join(" ")));
    }
    for w in &r.warnings {
        match w.packet {
            Some(p) => out.push_str(&format!("warning: packet {p}: {}\n", w.message)),
            None => out.push_str(&format!("warning: {}\n", w.message)),
        }
    }
    if r.warnings_suppressed > 0 {
        out.push_str(&format!(
            "warning: {} more warnings not listed\n",
            r.warnings_suppressed
        ));
    }
    out
}
