//! Fast tests on the stored captures (recorded by `tests/loopback.rs` with tcpdump
//! on loopback) and on captures rewritten from them: other link types, segments
//! split small, reordered, duplicated, lost, cut by a snap length or a short file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{read_frames, write_pcap};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use intraport_capture::{Error, Outcome, Report, analyze, analyze_file};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Outcome name → count.
fn outcomes(r: &Report) -> BTreeMap<String, u64> {
    r.summary.by_outcome.clone()
}

/// The verdicts the stored capture must get (see `tests/loopback.rs` for how it was made).
fn expected() -> BTreeMap<String, u64> {
    [
        ("completed", 2),
        ("alert", 3),
        ("reset_after_client_hello", 1),
        ("closed_before_server_hello", 1),
        ("timeout_or_incomplete", 1),
        ("not_tls", 1),
        ("no_payload", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// (server port, outcome, alert description) per connection, in order.
fn verdicts(r: &Report) -> Vec<(String, Outcome, Option<String>)> {
    r.connections
        .iter()
        .map(|c| {
            (
                c.server.clone(),
                c.outcome,
                c.alert.as_ref().map(|a| a.description.clone()),
            )
        })
        .collect()
}

#[test]
fn stored_pcap_and_pcapng_give_every_verdict() {
    let pcap = analyze_file(&data("handshakes.pcap")).unwrap();
    let ng = analyze_file(&data("handshakes.pcapng")).unwrap();
    assert_eq!(pcap.format, "pcap");
    assert_eq!(ng.format, "pcapng");
    assert_eq!(outcomes(&pcap), expected());
    assert_eq!(verdicts(&pcap), verdicts(&ng));
    let mut alerts: Vec<_> = pcap
        .connections
        .iter()
        .filter_map(|c| c.alert.as_ref())
        .map(|a| a.description.as_str())
        .collect();
    alerts.sort();
    assert_eq!(alerts, ["encrypted", "protocol_version", "unknown_ca"]);
    assert!(pcap.warnings.is_empty(), "{:?}", pcap.warnings);
    assert_eq!(pcap.summary.handshakes, 8);
    assert_eq!(pcap.summary.failed, 6);
    assert!(pcap.connections.iter().all(|c| c.retransmissions == 0));
    // Per server: every connection had its own server port.
    assert_eq!(pcap.summary.by_server.len(), pcap.connections.len());
    let tls13 = pcap
        .connections
        .iter()
        .find(|c| c.version.as_deref() == Some("TLSv1.3") && c.outcome == Outcome::Completed)
        .unwrap();
    let by_server = pcap
        .summary
        .by_server
        .iter()
        .find(|s| s.server == tls13.server)
        .unwrap();
    assert_eq!(by_server.sni, ["good.test"]);
    assert_eq!(by_server.by_outcome["completed"], 1);
}

/// The frames of the Ethernet fixture as IP packets, with their timestamps.
fn ip_packets() -> Vec<(u64, Vec<u8>)> {
    read_frames(&data("handshakes.pcap"))
        .into_iter()
        .map(|(ts, link, bytes)| {
            assert_eq!(link, 1, "the fixture is Ethernet");
            (ts, bytes[14..].to_vec())
        })
        .collect()
}

#[test]
fn every_link_type_decodes_the_same() {
    let reference = verdicts(&analyze_file(&data("handshakes.pcap")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let packets = ip_packets();
    let sll = |ip: &[u8]| {
        // LINUX_SLL: packet type, ARPHRD_LOOPBACK, address length, address, protocol.
        let mut h = vec![0, 0, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        h.extend(ip);
        h
    };
    let sll2 = |ip: &[u8]| {
        // LINUX_SLL2: protocol, reserved, ifindex, ARPHRD_LOOPBACK, type, addr len, addr.
        let mut h = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        h.extend(ip);
        h
    };
    let null_le = |ip: &[u8]| [2u32.to_le_bytes().to_vec(), ip.to_vec()].concat();
    let null_be = |ip: &[u8]| [2u32.to_be_bytes().to_vec(), ip.to_vec()].concat();
    let raw = |ip: &[u8]| ip.to_vec();
    type Wrap<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;
    let cases: [(&str, u32, Wrap); 7] = [
        ("raw", 101, &raw),
        ("ipv4", 228, &raw),
        ("null-le", 0, &null_le),
        ("null-be", 0, &null_be),
        ("loop", 108, &null_be),
        ("sll", 113, &sll),
        ("sll2", 276, &sll2),
    ];
    for (name, link, wrap) in cases {
        let path = dir.path().join(format!("{name}.pcap"));
        let frames: Vec<_> = packets.iter().map(|(ts, ip)| (*ts, wrap(ip))).collect();
        write_pcap(&path, link, &frames);
        let r = analyze_file(&path).unwrap();
        assert_eq!(verdicts(&r), reference, "{name}");
        assert!(r.warnings.is_empty(), "{name}: {:?}", r.warnings);
    }
}

/// One TCP segment of the fixture, decoded.
#[derive(Clone)]
struct Seg {
    ts: u64,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    payload: Vec<u8>,
}

fn segments() -> Vec<Seg> {
    ip_packets()
        .into_iter()
        .map(|(ts, ip)| {
            let p = SlicedPacket::from_ip(&ip).unwrap();
            let Some(NetSlice::Ipv4(v4)) = p.net else {
                panic!("IPv4 expected")
            };
            let Some(TransportSlice::Tcp(t)) = p.transport else {
                panic!("TCP expected")
            };
            Seg {
                ts,
                src: v4.header().source(),
                dst: v4.header().destination(),
                sport: t.source_port(),
                dport: t.destination_port(),
                seq: t.sequence_number(),
                ack: t.ack().then(|| t.acknowledgment_number()),
                syn: t.syn(),
                fin: t.fin(),
                rst: t.rst(),
                payload: t.payload().to_vec(),
            }
        })
        .collect()
}

fn build(s: &Seg) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4(s.src, s.dst, 64)
        .tcp(s.sport, s.dport, s.seq, 512);
    if let Some(a) = s.ack {
        b = b.ack(a);
    }
    if s.syn {
        b = b.syn();
    }
    if s.fin {
        b = b.fin();
    }
    if s.rst {
        b = b.rst();
    }
    let mut out = Vec::new();
    b.write(&mut out, &s.payload).unwrap();
    out
}

/// Split every payload into `size`-byte segments; the FIN stays on the last piece.
fn split(segs: &[Seg], size: usize) -> Vec<Seg> {
    let mut out = Vec::new();
    for s in segs {
        if s.payload.len() <= size {
            out.push(s.clone());
            continue;
        }
        let chunks: Vec<&[u8]> = s.payload.chunks(size).collect();
        let mut seq = s.seq;
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            out.push(Seg {
                seq,
                payload: c.to_vec(),
                fin: s.fin && last,
                ..s.clone()
            });
            seq = seq.wrapping_add(c.len() as u32);
        }
    }
    out
}

fn write_segs(path: &Path, segs: &[Seg]) {
    let frames: Vec<_> = segs.iter().map(|s| (s.ts, build(s))).collect();
    write_pcap(path, 1, &frames);
}

#[test]
fn records_split_reordered_and_retransmitted_give_the_same_verdicts() {
    let reference = analyze_file(&data("handshakes.pcap")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 7-byte segments: every record header and handshake message spans several.
    let mut segs = split(&segments(), 7);
    // Swap neighbouring data segments of the same direction (out of order)...
    let mut i = 0;
    while i + 1 < segs.len() {
        let (a, b) = (&segs[i], &segs[i + 1]);
        if !a.payload.is_empty()
            && !b.payload.is_empty()
            && a.sport == b.sport
            && !a.fin
            && !b.fin
            && !a.rst
            && !b.rst
        {
            segs.swap(i, i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    // ...and send every 5th data segment twice (retransmissions), counted per
    // connection (its two ports, in either order: both are ephemeral).
    let mut with_dups = Vec::new();
    let mut dups: BTreeMap<(u16, u16), u64> = BTreeMap::new();
    let mut n = 0;
    for s in segs {
        let dup = !s.payload.is_empty() && !s.fin && !s.rst && {
            n += 1;
            n % 5 == 0
        };
        with_dups.push(s.clone());
        if dup {
            let key = (s.sport.min(s.dport), s.sport.max(s.dport));
            *dups.entry(key).or_default() += 1;
            with_dups.push(s);
        }
    }
    let path = dir.path().join("split.pcap");
    write_segs(&path, &with_dups);
    let r = analyze_file(&path).unwrap();
    assert_eq!(verdicts(&r), verdicts(&reference));
    for c in &r.connections {
        let port = |a: &str| a.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        let (cp, sp) = (port(&c.client), port(&c.server));
        assert_eq!(
            c.retransmissions,
            dups.get(&(cp.min(sp), cp.max(sp))).copied().unwrap_or(0),
            "{c:?}"
        );
        let orig = reference
            .connections
            .iter()
            .find(|o| o.server == c.server)
            .unwrap();
        assert_eq!(c.sni, orig.sni);
        assert_eq!(c.cipher_suite, orig.cipher_suite);
        assert_eq!(c.alpn_selected, orig.alpn_selected);
    }
    assert!(r.summary.by_outcome["completed"] == 2);
}

#[test]
fn a_lost_segment_makes_the_handshake_incomplete_not_failed_otherwise() {
    let reference = analyze_file(&data("handshakes.pcap")).unwrap();
    let tls12 = reference
        .connections
        .iter()
        .find(|c| c.version.as_deref() == Some("TLSv1.2") && c.outcome == Outcome::Completed)
        .unwrap();
    let server_port: u16 = tls12.server.rsplit(':').next().unwrap().parse().unwrap();
    let mut segs = split(&segments(), 100);
    // Drop the server's second data segment: the ServerHello's first 100 bytes arrive,
    // the rest of the flight sits behind a gap.
    let idx = segs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.sport == server_port && !s.payload.is_empty())
        .map(|(i, _)| i)
        .nth(1)
        .unwrap();
    segs.remove(idx);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lost.pcap");
    write_segs(&path, &segs);
    let r = analyze_file(&path).unwrap();
    let c = r
        .connections
        .iter()
        .find(|c| c.server == tls12.server)
        .unwrap();
    assert_eq!(c.outcome, Outcome::TimeoutOrIncomplete, "{c:?}");
    assert!(c.notes.iter().any(|n| n.contains("not captured")), "{c:?}");
    // The other connections are unaffected.
    let others = |r: &Report| {
        verdicts(r)
            .into_iter()
            .filter(|v| v.0 != tls12.server)
            .collect::<Vec<_>>()
    };
    assert_eq!(others(&r), others(&reference));
}

#[test]
fn without_the_syns_the_client_is_found_from_the_client_hello() {
    let reference = analyze_file(&data("handshakes.pcap")).unwrap();
    let segs: Vec<Seg> = segments().into_iter().filter(|s| !s.syn).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nosyn.pcap");
    write_segs(&path, &segs);
    let r = analyze_file(&path).unwrap();
    let mut v = verdicts(&r);
    let mut want = verdicts(&reference);
    // Connections with no payload and no SYN are gone to ACK/FIN-only flows; compare the rest.
    v.retain(|x| x.1 != Outcome::NoPayload);
    want.retain(|x| x.1 != Outcome::NoPayload);
    assert_eq!(v, want);
    // Without SYN or payload nothing tells the client from the server (the ports
    // of a loopback test are both ephemeral); every other connection is oriented.
    for c in r
        .connections
        .iter()
        .filter(|c| c.outcome != Outcome::NoPayload)
    {
        let orig = reference
            .connections
            .iter()
            .find(|o| o.server == c.server)
            .unwrap_or_else(|| panic!("{c:#?}"));
        assert_eq!(c.client, orig.client);
    }
}

#[test]
fn snap_length_truncation_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.pcap");
    // Rewrite with caplen 120: headers survive, payloads are cut.
    let frames = read_frames(&data("handshakes.pcap"));
    let mut out = std::fs::read(data("handshakes.pcap")).unwrap()[..24].to_vec();
    for (ts, _, bytes) in &frames {
        let cap = bytes.len().min(120);
        out.extend(((ts / 1_000_000) as u32).to_le_bytes());
        out.extend(((ts % 1_000_000) as u32).to_le_bytes());
        out.extend((cap as u32).to_le_bytes());
        out.extend((bytes.len() as u32).to_le_bytes());
        out.extend(&bytes[..cap]);
    }
    std::fs::write(&path, out).unwrap();
    let r = analyze_file(&path).unwrap();
    let hello = r
        .connections
        .iter()
        .find(|c| c.outcome != Outcome::NoPayload && c.outcome != Outcome::NotTls)
        .unwrap();
    assert!(
        hello.notes.iter().any(|n| n.contains("snap length")),
        "{hello:?}"
    );
    assert!(
        !r.any_failed()
            || r.connections
                .iter()
                .filter(|c| c.outcome.is_failure())
                .all(|c| !c.notes.is_empty())
    );
}

#[test]
fn a_cut_file_keeps_what_was_read_and_says_so() {
    let bytes = std::fs::read(data("handshakes.pcap")).unwrap();
    let r = analyze(&bytes[..bytes.len() - 10]).unwrap();
    assert!(
        r.warnings.iter().any(|w| w.message.contains("truncated")),
        "{:?}",
        r.warnings
    );
    assert_eq!(
        r.connections.len(),
        analyze_file(&data("handshakes.pcap"))
            .unwrap()
            .connections
            .len()
    );
    let ng = std::fs::read(data("handshakes.pcapng")).unwrap();
    let r = analyze(&ng[..ng.len() / 2]).unwrap();
    assert!(
        r.warnings.iter().any(|w| w.message.contains("truncated")),
        "{:?}",
        r.warnings
    );
    assert!(!r.connections.is_empty());
}

#[test]
fn not_a_capture_is_an_error() {
    assert!(matches!(analyze(&b""[..]), Err(Error::NotACapture(_))));
    assert!(matches!(
        analyze(&b"GET / HTTP/1.1\r\n\r\n and some more bytes"[..]),
        Err(Error::NotACapture(_))
    ));
    let e = analyze_file(Path::new("no/such/file.pcap")).unwrap_err();
    assert!(e.to_string().contains("no/such/file.pcap"), "{e}");
}

/// The Ethernet fixture's frames, as captured on a tunnel's underlay: each one
/// wrapped by `wrap` (inner Ethernet frame → outer frame).
fn tunnelled(path: &Path, wrap: &dyn Fn(&[u8]) -> Vec<u8>) {
    let frames: Vec<_> = read_frames(&data("handshakes.pcap"))
        .into_iter()
        .map(|(ts, _, eth)| (ts, wrap(&eth)))
        .collect();
    write_pcap(path, 1, &frames);
}

fn outer_udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(40_000, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn outer_gre(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .write(&mut out, etherparse::IpNumber::GRE, payload)
        .unwrap();
    out
}

/// GRE (as Linux `gretap` sends: key present), VXLAN, Geneve (with an option) and
/// GTP-U (with a sequence number and an extension header) around the real frames
/// give the verdicts of the plain capture. The kernel here has VXLAN only
/// (`tests/real_peers.rs` records that for real); the others are written from the
/// RFCs' and TS 29.281's header layouts.
#[test]
fn tunnels_are_looked_into() {
    let reference = verdicts(&analyze_file(&data("handshakes.pcap")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let gre_eth = |eth: &[u8]| {
        // C=0 K=1 S=0, version 0, protocol 0x6558 (transparent Ethernet), key 42.
        let mut g = vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 42];
        g.extend(eth);
        outer_gre(&g)
    };
    let gre_ip = |eth: &[u8]| {
        // C=1 S=1: checksum and sequence number present; protocol IPv4.
        let mut g = vec![0x90, 0x00, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0, 7];
        g.extend(&eth[14..]);
        outer_gre(&g)
    };
    let vxlan = |eth: &[u8]| {
        let mut v = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        v.extend(eth);
        outer_udp(4789, &v)
    };
    let geneve = |eth: &[u8]| {
        // One 4-byte-word option (class 0x0102, type 1, length 0 + its header).
        let mut g = vec![0x01, 0x00, 0x65, 0x58, 0, 0, 42, 0, 0x01, 0x02, 0x01, 0x00];
        g.extend(eth);
        outer_udp(6081, &g)
    };
    let gtp = |eth: &[u8]| {
        let ip = &eth[14..];
        // Version 1, PT=1, E=1 and S=1; G-PDU; length; TEID; sequence number, N-PDU,
        // next extension 0x85 (PDU session container: 1 word, then no more).
        let len = (4 + 4 + ip.len()) as u16;
        let mut g = vec![0x36, 0xff];
        g.extend(len.to_be_bytes());
        g.extend([0, 0, 0, 9, 0, 1, 0, 0x85, 1, 0x10, 0x09, 0x00]);
        g.extend(ip);
        outer_udp(2152, &g)
    };
    type Wrap<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;
    let cases: [(&str, &str, Wrap); 5] = [
        ("gre-eth", "gre", &gre_eth),
        ("gre-ip", "gre", &gre_ip),
        ("vxlan", "vxlan", &vxlan),
        ("geneve", "geneve", &geneve),
        ("gtp-u", "gtp-u", &gtp),
    ];
    for (name, tunnel, wrap) in cases {
        let path = dir.path().join(format!("{name}.pcap"));
        tunnelled(&path, wrap);
        let r = analyze_file(&path).unwrap();
        assert_eq!(verdicts(&r), reference, "{name}");
        assert!(r.warnings.is_empty(), "{name}: {:?}", r.warnings);
        assert_eq!(r.tunnels.get(tunnel), Some(&r.tcp_packets), "{name}");
        assert!(
            r.connections
                .iter()
                .all(|c| c.tunnel.as_deref() == Some(tunnel)),
            "{name}"
        );
    }

    // What a tunnel carries that is not decoded is counted, once per kind.
    let path = dir.path().join("pptp.pcap");
    tunnelled(&path, &|eth: &[u8]| {
        // Enhanced GRE (version 1, PPTP) carrying PPP.
        let mut g = vec![0x30, 0x01, 0x88, 0x0b, 0, 0, 0, 1, 0, 0, 0, 1];
        g.extend(eth);
        outer_gre(&g)
    });
    let r = analyze_file(&path).unwrap();
    assert!(r.connections.is_empty());
    let [w] = &r.warnings[..] else {
        panic!("{:?}", r.warnings)
    };
    assert_eq!(w.packet, Some(1));
    assert!(
        w.message
            .starts_with(&format!("{} gre packets skipped", r.packets)),
        "{w:?}"
    );
    assert!(w.message.contains("PPTP"), "{w:?}");
}

/// A second SYN-ACK with other sequence numbers before the real one (a device on
/// the path answering for the server): the server's data follows the real one, so
/// the ServerHello is still found, and a note says what happened.
#[test]
fn data_after_a_second_syn_ack_is_not_lost() {
    let reference = analyze_file(&data("handshakes.pcap")).unwrap();
    let segs = segments();
    let mut out = Vec::new();
    let mut forged = 0;
    for s in &segs {
        if s.syn && s.ack.is_some() {
            out.push(Seg {
                seq: s.seq.wrapping_add(0x4000_0000),
                ..s.clone()
            });
            forged += 1;
        }
        out.push(s.clone());
    }
    assert!(forged > 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two-syn-acks.pcap");
    write_segs(&path, &out);
    let r = analyze_file(&path).unwrap();
    assert_eq!(verdicts(&r), verdicts(&reference));
    let completed: Vec<_> = r
        .connections
        .iter()
        .filter(|c| c.outcome == Outcome::Completed)
        .collect();
    assert_eq!(completed.len(), 2);
    for c in completed {
        assert!(c.server_hello.is_some());
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("2 SYNs") && n.contains("later")),
            "{c:#?}"
        );
    }
}
