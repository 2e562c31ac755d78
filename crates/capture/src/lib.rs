//! TLS handshake analysis of packet captures: the engine of `intraport pcap`.
//!
//! Reads a pcap or pcapng file (link types Ethernet, Linux cooked SLL/SLL2 as
//! written by `tcpdump -i any`, raw IP, BSD loopback; inside GRE, VXLAN, Geneve,
//! GTP-U and IP-in-IP tunnels too), reassembles each TCP
//! direction far enough to parse TLS handshake records split across segments
//! (out-of-order and retransmitted segments included), and reports per connection
//! what the client offered, what the server chose, how long it took and how it
//! ended: completed, an alert (with its description), a reset or FIN before the
//! ServerHello, a stall, or not TLS at all. See [`Outcome`]. TLS that starts after
//! an HTTP CONNECT, a SOCKS5 exchange or a STARTTLS upgrade is found and analysed
//! the same way, the wrapper named ([`Connection::via`]).
//!
//! It is built to be pointed at captures from a broken network: malformed, truncated
//! and non-TLS traffic produces [`Warning`]s (with packet numbers) and the analysis
//! carries on; no input makes it panic (a property test feeds it random and mutated
//! captures).
//!
//! What it is not: a decryptor (nothing after the ServerHello of a TLS 1.3
//! handshake is readable, so TLS 1.3 completion and alerts are inferred from record
//! types and lengths), a general TCP analyser (no RTT, window or throughput figures),
//! or a live capture tool (record with `tcpdump`, then analyse the file).

mod capture;
mod conn;
mod decode;
mod report;
mod stream;
mod tls;
mod wrap;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;

pub use report::{
    Alert, ClientHello, Connection, Outcome, Report, ServerHello, ServerSummary, Side, Summary,
    Warning,
};
pub use tls::{alert_name, split_camel};

use conn::Conn;
use decode::Skip;

/// Warnings listed in a [`Report`]; more are only counted, so that a capture full of
/// garbage gives a readable report.
pub const MAX_WARNINGS: usize = 200;

/// Why a capture could not be analysed at all. Problems inside a readable capture
/// are [`Warning`]s, not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path given.
        path: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The input is not a pcap or pcapng capture.
    #[error("not a pcap or pcapng capture: {0}")]
    NotACapture(String),
    /// Reading failed before the header.
    #[error("read error")]
    Read,
}

/// Analyse the capture file at `path`.
pub fn analyze_file(path: &Path) -> Result<Report, Error> {
    let file = std::fs::File::open(path).map_err(|source| Error::Open {
        path: path.display().to_string(),
        source,
    })?;
    analyze(std::io::BufReader::new(file))
}

/// Analyse a capture read from `input` (pcap or pcapng, detected from the magic number).
pub fn analyze<R: Read + Send>(input: R) -> Result<Report, Error> {
    let mut warnings = Warnings::default();
    let mut conns: Vec<Conn> = Vec::new();
    // Unordered address pair → index of its latest connection in `conns`.
    let mut by_key: HashMap<(SocketAddr, SocketAddr), usize> = HashMap::new();
    let mut packets = 0u64;
    let mut tcp_packets = 0u64;
    let mut first_ts: Option<i64> = None;
    let mut last_ts = i64::MIN;
    let mut tunnels: BTreeMap<String, u64> = BTreeMap::new();
    // (tunnel, what it carried) → packets skipped, first packet number.
    let mut tunnel_skips: BTreeMap<(&'static str, String), (u64, u64)> = BTreeMap::new();

    let info = capture::read_frames(input, |frame| {
        packets += 1;
        first_ts.get_or_insert(frame.ts_ns);
        last_ts = last_ts.max(frame.ts_ns);
        let seg = match decode::decode(frame) {
            Ok(seg) => seg,
            Err(Skip::NotTcp) => return,
            Err(Skip::Warn(msg)) => {
                warnings.push(Some(frame.number), msg);
                return;
            }
            Err(Skip::Tunnel(tunnel, what)) => {
                tunnel_skips
                    .entry((tunnel, what))
                    .or_insert((0, frame.number))
                    .0 += 1;
                return;
            }
        };
        tcp_packets += 1;
        if let Some(t) = seg.tunnel {
            *tunnels.entry(t.to_string()).or_default() += 1;
        }
        let key = if seg.src <= seg.dst {
            (seg.src, seg.dst)
        } else {
            (seg.dst, seg.src)
        };
        let idx = match by_key.get(&key) {
            Some(&i) if !conns[i].is_reused_by(&seg) => i,
            _ => {
                conns.push(Conn::new(&seg, frame.number, frame.ts_ns));
                by_key.insert(key, conns.len() - 1);
                conns.len() - 1
            }
        };
        conns[idx].on_segment(&seg, frame.number, frame.ts_ns, &mut |p, m| {
            warnings.push(p, m)
        });
    })?;
    for (p, m) in info.warnings {
        warnings.push(p, m);
    }
    for ((tunnel, what), (n, first)) in tunnel_skips {
        warnings.push(
            Some(first),
            format!(
                "{n} {tunnel} packets skipped (first here): they carry {what}, which is not decoded"
            ),
        );
    }
    let end_ts = if packets == 0 { 0 } else { last_ts };
    let connections: Vec<Connection> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| c.finish(i + 1, end_ts))
        .collect();
    let summary = Summary::of(&connections);
    Ok(Report {
        format: info.format.to_string(),
        packets,
        tcp_packets,
        duration_ms: first_ts.map_or(0.0, |f| end_ts.saturating_sub(f) as f64 / 1e6),
        connections,
        summary,
        tunnels,
        warnings: warnings.list,
        warnings_suppressed: warnings.suppressed,
    })
}

/// Warnings, bounded.
#[derive(Default)]
struct Warnings {
    list: Vec<Warning>,
    suppressed: u64,
}

impl Warnings {
    fn push(&mut self, packet: Option<u64>, message: String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(Warning { packet, message });
        } else {
            self.suppressed += 1;
        }
    }
}
