//! One TCP connection: its two directions, what each sent, and the verdict.

use std::net::SocketAddr;

use crate::decode::Segment;
use crate::report::{Alert, ClientHello, Connection, Outcome, ServerHello, Side};
use crate::stream::{Arrival, Stream};
use crate::tls::{self, Event};
use crate::wrap::Via;

/// Length of a TLS 1.3 record carrying an encrypted alert: 2 bytes of alert, 1 byte
/// of inner content type and a 16-byte AEAD tag. A client's encrypted Finished is
/// at least 53 bytes, so after a ServerHello a 19-byte record from the client is an
/// alert (RFC 8446 allows padding, which TLS stacks do not use for alerts).
const TLS13_ENCRYPTED_ALERT_LEN: usize = 19;

/// What one direction (A = the sender of the connection's first packet, B = the
/// other) did, with timestamps in nanoseconds and packet numbers.
#[derive(Default)]
struct Dir {
    stream: Stream,
    tls: tls::Direction,
    payload_bytes: u64,
    syn: Option<i64>,
    syn_ack: bool,
    fin: Option<(i64, u64)>,
    rst: Option<(i64, u64)>,
    client_hello: Option<(ClientHello, i64)>,
    server_hello: Option<(ServerHello, i64)>,
    hello_retry: bool,
    /// TLS 1.2 ChangeCipherSpec then encrypted Finished.
    finished: Option<i64>,
    /// application_data records: first one's time, and first after a ServerHello
    /// (time, length, packet).
    app_data_after_sh: Option<(i64, usize, u64)>,
    any_record: bool,
    not_tls: bool,
    /// The wrapper TLS started after.
    via: Option<Via>,
    alert: Option<(Option<String>, String, i64, u64)>,
    /// Warning-level alerts: description and packet.
    warning_alerts: Vec<(String, u64)>,
    truncated_packets: u64,
}

pub(crate) struct Conn {
    a: SocketAddr,
    b: SocketAddr,
    dirs: [Dir; 2],
    first_packet: u64,
    first_ts: i64,
    last_ts: i64,
    packets: u64,
    retransmissions: u64,
    notes: Vec<String>,
    /// Set once the handshake's outcome cannot change any more: stop reassembling.
    done: bool,
    tunnel: Option<&'static str>,
}

/// Warning alerts kept per direction; more are not listed.
const MAX_WARNING_ALERTS: usize = 8;

impl Conn {
    pub fn new(first: &Segment<'_>, packet: u64, ts: i64) -> Conn {
        Conn {
            a: first.src,
            b: first.dst,
            dirs: [Dir::default(), Dir::default()],
            first_packet: packet,
            first_ts: ts,
            last_ts: ts,
            packets: 0,
            retransmissions: 0,
            notes: Vec::new(),
            done: false,
            tunnel: first.tunnel,
        }
    }

    /// Whether a new SYN from `src` with sequence `seq` starts a new connection on the
    /// same address pair (port reuse) rather than repeating this one's SYN.
    pub fn is_reused_by(&self, seg: &Segment<'_>) -> bool {
        if !seg.syn || seg.ack {
            return false;
        }
        let d = &self.dirs[self.index(seg.src)];
        let ended = self.dirs.iter().any(|d| d.fin.is_some() || d.rst.is_some());
        match d.stream.isn() {
            Some(isn) => isn != seg.seq && (ended || self.payload_seen()),
            None => ended || self.payload_seen(),
        }
    }

    fn payload_seen(&self) -> bool {
        self.dirs.iter().any(|d| d.payload_bytes > 0)
    }

    fn index(&self, src: SocketAddr) -> usize {
        usize::from(src != self.a)
    }

    /// The direction index of the client: the SYN sender, else the ClientHello
    /// sender, else the side whose port is higher (servers listen on low ports).
    fn client_index(&self) -> usize {
        if self.dirs[0].syn.is_some() && !self.dirs[0].syn_ack || self.dirs[1].syn_ack {
            return 0;
        }
        if self.dirs[1].syn.is_some() && !self.dirs[1].syn_ack || self.dirs[0].syn_ack {
            return 1;
        }
        if self.dirs[0].client_hello.is_some() {
            return 0;
        }
        if self.dirs[1].client_hello.is_some() {
            return 1;
        }
        usize::from(self.b.port() > self.a.port())
    }

    /// Whether the connection negotiates TLS 1.3: a ServerHello says so, or a
    /// HelloRetryRequest, which only TLS 1.3 has (after it, both sides' records stay
    /// plaintext past their compatibility ChangeCipherSpec until the real ServerHello).
    fn tls13(&self) -> bool {
        self.dirs.iter().any(|d| {
            d.hello_retry
                || d.server_hello
                    .as_ref()
                    .is_some_and(|(sh, _)| sh.version == "TLSv1.3")
        })
    }

    pub fn on_segment(
        &mut self,
        seg: &Segment<'_>,
        packet: u64,
        ts: i64,
        warn: &mut impl FnMut(Option<u64>, String),
    ) {
        self.packets += 1;
        self.last_ts = self.last_ts.max(ts);
        let i = self.index(seg.src);
        let mut data_seq = seg.seq;
        if seg.syn {
            let d = &mut self.dirs[i];
            if d.stream.syn(seg.seq) {
                self.retransmissions += 1;
            } else if d.syn.is_none() {
                d.syn = Some(ts);
                d.syn_ack = seg.ack;
            }
            data_seq = seg.seq.wrapping_add(1);
        }
        if seg.rst && self.dirs[i].rst.is_none() {
            self.dirs[i].rst = Some((ts, packet));
        }
        if !seg.payload.is_empty() {
            if seg.truncated {
                self.dirs[i].truncated_packets += 1;
            }
            let mut fresh = Vec::new();
            let arrival = self.dirs[i]
                .stream
                .insert(data_seq, seg.payload, &mut fresh);
            if arrival == Arrival::Retransmission {
                self.retransmissions += 1;
            }
            self.dirs[i].payload_bytes += seg.payload.len() as u64;
            if !fresh.is_empty() && !self.done {
                let tls13 = self.tls13();
                let client = i == self.client_index();
                let events = self.dirs[i].tls.feed(&fresh, tls13, client);
                for e in events {
                    self.apply(i, e, packet, ts, warn);
                }
                if self.dirs[i].tls.stopped() {
                    self.dirs[i].stream.give_up();
                }
                if self.handshake_decided() {
                    self.done = true;
                    for d in &mut self.dirs {
                        d.stream.give_up();
                    }
                }
            }
        }
        if seg.fin && self.dirs[i].fin.is_none() {
            self.dirs[i].fin = Some((ts, packet));
        }
    }

    fn apply(
        &mut self,
        i: usize,
        event: Event,
        packet: u64,
        ts: i64,
        warn: &mut impl FnMut(Option<u64>, String),
    ) {
        let other_sh = self.dirs[1 - i].server_hello.is_some();
        let d = &mut self.dirs[i];
        match event {
            Event::ClientHello(ch) => {
                d.any_record = true;
                if d.client_hello.is_none() {
                    d.client_hello = Some((ch, ts));
                }
            }
            Event::ServerHello(sh) => {
                d.any_record = true;
                if d.server_hello.is_none() {
                    d.server_hello = Some((sh, ts));
                }
            }
            Event::HelloRetryRequest => {
                d.any_record = true;
                d.hello_retry = true;
            }
            Event::Handshake | Event::ChangeCipherSpec => d.any_record = true,
            Event::EncryptedHandshake => {
                d.any_record = true;
                if d.finished.is_none() {
                    d.finished = Some(ts);
                }
            }
            Event::Alert { level, description } => {
                d.any_record = true;
                // Only a fatal alert ends a handshake (RFC 5246, 7.2); a warning, such
                // as a server's unrecognized_name, is listed and the handshake goes on.
                if level == "warning" {
                    if d.warning_alerts.len() < MAX_WARNING_ALERTS {
                        d.warning_alerts.push((description, packet));
                    }
                } else if d.alert.is_none() {
                    d.alert = Some((Some(level), description, ts, packet));
                }
            }
            Event::EncryptedAlert => {
                d.any_record = true;
                if d.alert.is_none() {
                    d.alert = Some((None, "encrypted".into(), ts, packet));
                }
            }
            Event::ApplicationData { len } => {
                d.any_record = true;
                if other_sh && d.app_data_after_sh.is_none() {
                    d.app_data_after_sh = Some((ts, len, packet));
                }
            }
            Event::NotTls(via, why) => {
                d.not_tls = true;
                if let Some(via) = via {
                    self.notes
                        .push(format!("{} did not lead to TLS: {why}", via.name()));
                }
            }
            Event::Wrapped(via) => d.via = Some(via),
            Event::Malformed(reason) => {
                let from = if i == self.client_index() {
                    "client"
                } else {
                    "server"
                };
                warn(
                    Some(packet),
                    format!("{} → {}: {from} stream: {reason}", self.a, self.b),
                );
                self.notes.push(format!(
                    "{from} stream stopped parsing at packet {packet}: {reason}"
                ));
            }
        }
    }

    /// Whether the handshake's outcome is known and later bytes cannot change it.
    fn handshake_decided(&self) -> bool {
        let (c, _) = self.roles();
        self.dirs.iter().any(|d| d.alert.is_some() || d.not_tls)
            || self.completion(c).is_some()
            || self.dirs.iter().all(|d| d.tls.stopped())
    }

    fn roles(&self) -> (usize, usize) {
        let c = self.client_index();
        (c, 1 - c)
    }

    /// When the handshake completed, if it did, and the client's TLS 1.3 encrypted
    /// alert if that is what the first post-ServerHello record was.
    fn completion(&self, c: usize) -> Option<i64> {
        let (client, server) = (&self.dirs[c], &self.dirs[1 - c]);
        server.server_hello.as_ref()?;
        if self.tls13() {
            let (ts, len, _) = client.app_data_after_sh?;
            (len != TLS13_ENCRYPTED_ALERT_LEN).then_some(ts)
        } else {
            Some(client.finished?.max(server.finished?))
        }
    }

    /// The final verdict, once the capture has been read to its end at `end_ts`.
    pub fn finish(mut self, id: usize, end_ts: i64) -> Connection {
        let (c, s) = self.roles();
        let (client_addr, server_addr) = if c == 0 {
            (self.a, self.b)
        } else {
            (self.b, self.a)
        };
        let start = self.dirs[c].syn.unwrap_or(self.first_ts);
        let ms = |t: i64| (t.saturating_sub(start)) as f64 / 1e6;
        let side = |i: usize| if i == c { Side::Client } else { Side::Server };

        for (i, d) in self.dirs.iter().enumerate() {
            if d.truncated_packets > 0 {
                self.notes.push(format!(
                    "{} {:?} packets cut short by the capture's snap length",
                    d.truncated_packets,
                    side(i)
                ));
            }
            if let Some(gap) = d.stream.gap_at() {
                if !self.done {
                    self.notes.push(format!(
                        "{:?} stream has a gap at byte {gap} (packets lost before the capture point or not captured)",
                        side(i)
                    ));
                }
            }
        }

        let client_hello = self.dirs[c].client_hello.clone();
        let server_hello = self.dirs[s].server_hello.clone();
        let completed = self.completion(c);

        // The client's 19-byte TLS 1.3 record after the ServerHello is an alert.
        if completed.is_none() && self.tls13() {
            if let Some((ts, len, packet)) = self.dirs[c].app_data_after_sh {
                if len == TLS13_ENCRYPTED_ALERT_LEN && self.dirs[c].alert.is_none() {
                    self.dirs[c].alert = Some((None, "encrypted".into(), ts, packet));
                }
            }
        }
        // First RST, else first FIN, by time.
        let ender = |pick: fn(&Dir) -> Option<(i64, u64)>| {
            [c, s]
                .into_iter()
                .filter_map(|i| pick(&self.dirs[i]).map(|e| (i, e.0)))
                .min_by_key(|e| e.1)
        };
        let rst = ender(|d| d.rst);
        let fin = ender(|d| d.fin);
        let first_close = [rst, fin].into_iter().flatten().min_by_key(|e| e.1);
        let mut alert = [c, s]
            .into_iter()
            .filter_map(|i| self.dirs[i].alert.as_ref().map(|a| (i, a)))
            .min_by_key(|(_, a)| a.2)
            .map(|(i, (level, description, ts, packet))| {
                (
                    *ts,
                    Alert {
                        from: side(i),
                        level: level.clone(),
                        description: description.clone(),
                        packet: *packet,
                    },
                )
            });
        // An alert sent after the other side had already hung up answers the close
        // (OpenSSL does so); the close, not the alert, ended the handshake.
        if let (Some((ts, a)), Some((closer, closed_at))) = (&alert, first_close) {
            if side(closer) != a.from && closed_at < *ts {
                self.notes.push(format!(
                    "{:?} sent alert {} after the {:?} had closed",
                    a.from,
                    a.description,
                    side(closer)
                ));
                alert = None;
            }
        }
        let alert = alert.map(|(_, a)| a);

        let mut closed_by = None;
        let outcome = if self.dirs.iter().all(|d| d.payload_bytes == 0) {
            Outcome::NoPayload
        } else if self.dirs[c].syn.is_some()
            && self.dirs[c].payload_bytes == 0
            && !self.dirs[s].not_tls
        {
            // The whole connection is in the capture and the client never sent a
            // byte: no handshake was attempted (a port check, say), whatever the
            // server said on its way out (OpenSSL answers the close with an alert).
            self.notes.push(format!(
                "the client sent nothing; the server sent {} bytes{}",
                self.dirs[s].payload_bytes,
                match &self.dirs[s].alert {
                    Some((_, d, _, _)) => format!(" (TLS alert {d})"),
                    None => String::new(),
                }
            ));
            Outcome::NoPayload
        } else if client_hello.is_none() {
            if self.dirs.iter().any(|d| d.not_tls) || !self.dirs.iter().any(|d| d.any_record) {
                Outcome::NotTls
            } else {
                Outcome::HandshakeNotCaptured
            }
        } else if completed.is_some() {
            Outcome::Completed
        } else if alert.is_some() {
            Outcome::Alert
        } else if self.dirs[s].not_tls {
            self.notes
                .push("the server answered the ClientHello with bytes that are not TLS".into());
            Outcome::NotTls
        } else if let Some(gap) = self.dirs.iter().find_map(|d| d.stream.gap_at()) {
            // Bytes are missing from the capture: whatever ended the connection, the
            // handshake cannot be judged from what was captured.
            self.notes.push(format!(
                "handshake not judged: a stream misses bytes from offset {gap} (packets not captured)"
            ));
            Outcome::TimeoutOrIncomplete
        } else if let Some((i, t)) =
            first_close.filter(|&(i, _)| i == c && self.dirs[s].payload_bytes == 0)
        {
            // The client hung up without a single byte from the server: it gave up
            // waiting for an answer to its ClientHello. That is a stall seen from the
            // client (a silent drop on the path), not a refusal by the server.
            closed_by = Some(side(i));
            let hello_ts = self.dirs[c]
                .client_hello
                .as_ref()
                .map_or(start, |(_, t)| *t);
            self.notes.push(format!(
                "the client closed {:.0} ms after its ClientHello without any answer from the server",
                t.saturating_sub(hello_ts) as f64 / 1e6
            ));
            Outcome::TimeoutOrIncomplete
        } else if let Some((i, _)) = rst {
            closed_by = Some(side(i));
            if server_hello.is_some() {
                Outcome::ResetDuringHandshake
            } else {
                Outcome::ResetAfterClientHello
            }
        } else if let Some((i, _)) = fin {
            closed_by = Some(side(i));
            if server_hello.is_some() {
                Outcome::ClosedDuringHandshake
            } else {
                Outcome::ClosedBeforeServerHello
            }
        } else {
            Outcome::TimeoutOrIncomplete
        };

        for (i, d) in self.dirs.iter().enumerate() {
            if let (_, Some(refusal)) = d.tls.wrapper() {
                self.notes.push(refusal.to_string());
            }
            let syns = d.stream.distinct_syns();
            if syns > 1 {
                self.notes.push(format!(
                    "the {:?} sent {syns} SYNs with different sequence numbers (another device answering for it?); its data follows the {} one",
                    side(i),
                    if d.stream.rebased() { "later" } else { "first" }
                ));
            }
        }
        let mut warning_alerts: Vec<Alert> = [c, s]
            .into_iter()
            .flat_map(|i| {
                self.dirs[i]
                    .warning_alerts
                    .iter()
                    .map(move |(description, packet)| Alert {
                        from: side(i),
                        level: Some("warning".into()),
                        description: description.clone(),
                        packet: *packet,
                    })
            })
            .collect();
        warning_alerts.sort_by_key(|a| a.packet);
        let via = self.dirs[c]
            .via
            .filter(|v| *v != Via::Text)
            .or(self.dirs[s].via)
            .map(|v| v.name().to_string());

        let sh = server_hello.as_ref().map(|(sh, _)| sh.clone());
        Connection {
            id,
            client: client_addr.to_string(),
            server: server_addr.to_string(),
            first_packet: self.first_packet,
            packets: self.packets,
            outcome,
            sni: client_hello.as_ref().and_then(|(ch, _)| ch.sni.clone()),
            version: sh.as_ref().map(|sh| sh.version.clone()),
            cipher_suite: sh.as_ref().map(|sh| sh.cipher_suite.clone()),
            alpn_selected: sh.as_ref().and_then(|sh| sh.alpn.clone()),
            client_hello: client_hello.map(|(ch, _)| ch),
            server_hello: sh,
            hello_retry_request: self.dirs[s].hello_retry,
            via,
            tunnel: self.tunnel.map(str::to_string),
            alert: if outcome == Outcome::Alert {
                alert
            } else {
                None
            },
            warning_alerts,
            closed_by,
            server_hello_ms: server_hello.as_ref().map(|(_, t)| ms(*t)),
            handshake_ms: completed.map(ms),
            idle_ms: (end_ts.saturating_sub(self.last_ts)) as f64 / 1e6,
            retransmissions: self.retransmissions,
            notes: self.notes,
        }
    }
}
