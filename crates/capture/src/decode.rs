//! From a captured frame to a TCP segment: link layer, IPv4/IPv6, TCP.
//!
//! `pcap-parser` strips the link-layer headers it knows (Ethernet, raw IP, Linux
//! cooked SLL and SLL2); `etherparse` does IP and TCP, laxly, so that a packet cut
//! short by the capture's snap length still yields its TCP header and the bytes that
//! were captured. BSD loopback (`NULL`/`LOOP`) is decoded here because its 4-byte
//! header is in the capturing host's byte order, which `pcap-parser` assumes is
//! little-endian.

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, IpNumber, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use pcap_parser::Linktype;
use pcap_parser::data::{PacketData, get_packetdata};

use crate::capture::Frame;

/// A decoded TCP segment.
pub(crate) struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    /// The captured part of the payload.
    pub payload: &'a [u8],
    /// True when the payload was cut short by the capture (snap length).
    pub truncated: bool,
    /// The tunnel the segment was carried in (`gre`, `vxlan`, `geneve`, `gtp-u`,
    /// `ip-in-ip`), the outermost when nested.
    pub tunnel: Option<&'static str>,
}

/// Why a frame yields no segment.
pub(crate) enum Skip {
    /// Not TCP over IP (ARP, UDP, ICMP, ...): normal, not worth a warning.
    NotTcp,
    /// Something that should have decoded did not.
    Warn(String),
    /// An encapsulated packet whose content is not decoded: the tunnel and what it
    /// carries; counted, and reported once per kind at the end.
    Tunnel(&'static str, String),
}

/// Tunnels inside tunnels decoded at most this deep.
const MAX_NESTING: u8 = 4;

/// The IANA UDP ports of the UDP tunnels.
const VXLAN_PORT: u16 = 4789;
const GENEVE_PORT: u16 = 6081;
const GTP_U_PORT: u16 = 2152;

/// EtherType of an Ethernet frame carried inside GRE or Geneve.
const TRANSPARENT_ETHERNET: u16 = 0x6558;

/// `LINKTYPE_LOOP`: OpenBSD loopback, like `NULL` but in network byte order.
const LINKTYPE_LOOP: Linktype = Linktype(108);

pub(crate) fn decode<'a>(frame: &Frame<'a>) -> Result<Segment<'a>, Skip> {
    let data = frame.data;
    let packet = match frame.linktype {
        Linktype::NULL | LINKTYPE_LOOP => {
            let Some((head, rest)) = data.split_first_chunk::<4>() else {
                return Err(Skip::Warn("loopback header shorter than 4 bytes".into()));
            };
            // The family is a small number; whichever byte order makes it small is right.
            let le = u32::from_le_bytes(*head);
            let family = if le > 0xffff {
                u32::from_be_bytes(*head)
            } else {
                le
            };
            match family {
                2 => from_l3(EtherType::IPV4, rest),
                24 | 28 | 30 => from_l3(EtherType::IPV6, rest),
                _ => return Err(Skip::NotTcp),
            }
        }
        linktype => match get_packetdata(data, linktype, data.len()) {
            Some(PacketData::L2(eth)) => match LaxSlicedPacket::from_ethernet(eth) {
                Ok(p) => p,
                Err(e) => return Err(Skip::Warn(format!("bad Ethernet header: {e}"))),
            },
            Some(PacketData::L3(ethertype, l3)) => from_l3(EtherType(ethertype), l3),
            Some(PacketData::L4(..)) => return Err(Skip::NotTcp),
            Some(PacketData::Unsupported(_)) => {
                return Err(Skip::Warn(format!(
                    "unsupported link type {} ({}); only Ethernet, Linux cooked (SLL, SLL2), raw IP and loopback are decoded",
                    linktype.0,
                    linktype_name(linktype)
                )));
            }
            None => {
                return Err(Skip::Warn(format!(
                    "link-layer header too short or malformed for link type {}",
                    linktype_name(linktype)
                )));
            }
        },
    };
    segment(packet, None, 0)
}

/// The TCP segment of a decoded packet, looking into tunnels.
fn segment<'a>(
    packet: LaxSlicedPacket<'a>,
    tunnel: Option<&'static str>,
    depth: u8,
) -> Result<Segment<'a>, Skip> {
    let (src_ip, dst_ip, ip_incomplete, fragmented): (IpAddr, IpAddr, bool, bool) =
        match &packet.net {
            Some(LaxNetSlice::Ipv4(v4)) => (
                v4.header().source_addr().into(),
                v4.header().destination_addr().into(),
                v4.payload().incomplete,
                v4.payload().fragmented,
            ),
            Some(LaxNetSlice::Ipv6(v6)) => (
                v6.header().source_addr().into(),
                v6.header().destination_addr().into(),
                v6.payload().incomplete,
                v6.payload().fragmented,
            ),
            Some(LaxNetSlice::Arp(_)) => return Err(Skip::NotTcp),
            None => {
                return match packet.stop_err {
                    Some((e, _)) => Err(Skip::Warn(format!("bad IP header: {e}"))),
                    None => Err(Skip::NotTcp),
                };
            }
        };
    let ip_payload = match &packet.net {
        Some(LaxNetSlice::Ipv4(v4)) => Some(v4.payload()),
        Some(LaxNetSlice::Ipv6(v6)) => Some(v6.payload()),
        _ => None,
    };
    let tcp = match packet.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        Some(TransportSlice::Udp(udp)) if !fragmented && depth < MAX_NESTING => {
            let ports = [udp.destination_port(), udp.source_port()];
            let inner = if ports.contains(&VXLAN_PORT) {
                vxlan(udp.payload())
            } else if ports.contains(&GENEVE_PORT) {
                geneve(udp.payload())
            } else if ports.contains(&GTP_U_PORT) {
                gtp_u(udp.payload())
            } else {
                return Err(Skip::NotTcp);
            }?;
            return segment(inner, tunnel.or(Some(inner_name(&ports))), depth + 1);
        }
        Some(_) => return Err(Skip::NotTcp),
        None if !fragmented && depth < MAX_NESTING && ip_payload.is_some() => {
            let Some(p) = ip_payload else {
                return Err(Skip::NotTcp);
            };
            let inner = match p.ip_number {
                IpNumber::GRE => ("gre", gre(p.payload)?),
                IpNumber::IPV4 => (
                    "ip-in-ip",
                    LaxSlicedPacket::from_ether_type(EtherType::IPV4, p.payload),
                ),
                IpNumber::IPV6 => (
                    "ip-in-ip",
                    LaxSlicedPacket::from_ether_type(EtherType::IPV6, p.payload),
                ),
                _ => {
                    return match packet.stop_err {
                        Some((e, _)) => Err(Skip::Warn(format!("bad TCP header: {e}"))),
                        None => Err(Skip::NotTcp),
                    };
                }
            };
            return segment(inner.1, tunnel.or(Some(inner.0)), depth + 1);
        }
        None => {
            if fragmented {
                return Err(Skip::Warn(
                    "IP fragment; fragments are not reassembled, so its TCP data is not analysed"
                        .into(),
                ));
            }
            return match packet.stop_err {
                Some((e, _)) => Err(Skip::Warn(format!("bad TCP header: {e}"))),
                None => Err(Skip::NotTcp),
            };
        }
    };
    Ok(Segment {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload(),
        truncated: ip_incomplete,
        tunnel,
    })
}

fn inner_name(ports: &[u16; 2]) -> &'static str {
    if ports.contains(&VXLAN_PORT) {
        "vxlan"
    } else if ports.contains(&GENEVE_PORT) {
        "geneve"
    } else {
        "gtp-u"
    }
}

/// A frame or packet inside a tunnel, by the EtherType its header names.
fn by_ether_type<'a>(
    tunnel: &'static str,
    proto: u16,
    inner: &'a [u8],
) -> Result<LaxSlicedPacket<'a>, Skip> {
    match proto {
        TRANSPARENT_ETHERNET => LaxSlicedPacket::from_ethernet(inner)
            .map_err(|e| Skip::Warn(format!("{tunnel}: bad inner Ethernet header: {e}"))),
        0x0800 | 0x86dd => Ok(LaxSlicedPacket::from_ether_type(EtherType(proto), inner)),
        other => Err(Skip::Tunnel(tunnel, format!("protocol 0x{other:04x}"))),
    }
}

/// GRE (RFC 2784, with the key and sequence fields of RFC 2890): 4 bytes, plus 4
/// for each of checksum, key and sequence number when its flag is set.
fn gre(p: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    let Some(head) = p.get(..4) else {
        return Err(Skip::Warn("GRE header shorter than 4 bytes".into()));
    };
    let flags = u16::from_be_bytes([head[0], head[1]]);
    let proto = u16::from_be_bytes([head[2], head[3]]);
    if flags & 0x0007 != 0 {
        // Version 1 is PPTP's enhanced GRE, which carries PPP.
        return Err(Skip::Tunnel(
            "gre",
            format!("GRE version {} (PPTP)", flags & 0x0007),
        ));
    }
    let len = 4 + 4 * [0x8000u16, 0x2000, 0x1000]
        .iter()
        .filter(|f| flags & **f != 0)
        .count();
    let Some(inner) = p.get(len..) else {
        return Err(Skip::Warn(format!("GRE header shorter than {len} bytes")));
    };
    by_ether_type("gre", proto, inner)
}

/// VXLAN (RFC 7348): an 8-byte header, then an Ethernet frame.
fn vxlan(p: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    match p.get(8..) {
        Some(inner) if p[0] & 0x08 != 0 => LaxSlicedPacket::from_ethernet(inner)
            .map_err(|e| Skip::Warn(format!("vxlan: bad inner Ethernet header: {e}"))),
        Some(_) => Err(Skip::Tunnel("vxlan", "a header without a VNI".into())),
        None => Err(Skip::Warn("VXLAN header shorter than 8 bytes".into())),
    }
}

/// Geneve (RFC 8926): 8 bytes, options of a length given in 4-byte words, and the
/// EtherType of what follows.
fn geneve(p: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    let Some(head) = p.get(..8) else {
        return Err(Skip::Warn("Geneve header shorter than 8 bytes".into()));
    };
    if head[0] >> 6 != 0 {
        return Err(Skip::Tunnel("geneve", format!("version {}", head[0] >> 6)));
    }
    let len = 8 + usize::from(head[0] & 0x3f) * 4;
    let Some(inner) = p.get(len..) else {
        return Err(Skip::Warn(format!(
            "Geneve header and options shorter than {len} bytes"
        )));
    };
    by_ether_type("geneve", u16::from_be_bytes([head[2], head[3]]), inner)
}

/// GTP-U (3GPP TS 29.281): an 8-byte header, 4 more when any of the E, S or PN
/// flags is set, then the extension headers chained by their next-type byte; only
/// G-PDUs (message type 255) carry user packets (IPv4 or IPv6).
fn gtp_u(p: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    let Some(head) = p.get(..8) else {
        return Err(Skip::Warn("GTP-U header shorter than 8 bytes".into()));
    };
    if head[0] >> 5 != 1 || head[0] & 0x10 == 0 {
        return Err(Skip::Tunnel(
            "gtp-u",
            format!("a header of version {} (not GTPv1)", head[0] >> 5),
        ));
    }
    if head[1] != 255 {
        return Err(Skip::Tunnel(
            "gtp-u",
            format!("signalling message type {}", head[1]),
        ));
    }
    let mut pos = 8;
    if head[0] & 0x07 != 0 {
        let Some(&next) = p.get(pos + 3) else {
            return Err(Skip::Warn("GTP-U optional fields cut short".into()));
        };
        pos += 4;
        let mut next = next;
        // Each extension header: its length in 4-byte units, content, next type.
        let mut hops = 0;
        while next != 0 {
            hops += 1;
            let units = p.get(pos).copied().unwrap_or(0);
            if units == 0 || hops > 16 {
                return Err(Skip::Warn("malformed GTP-U extension header".into()));
            }
            pos += usize::from(units) * 4;
            let Some(&n) = p.get(pos - 1) else {
                return Err(Skip::Warn("GTP-U extension header cut short".into()));
            };
            next = n;
        }
    }
    let inner = p.get(pos..).unwrap_or_default();
    match inner.first().map(|b| b >> 4) {
        Some(4) => Ok(LaxSlicedPacket::from_ether_type(EtherType::IPV4, inner)),
        Some(6) => Ok(LaxSlicedPacket::from_ether_type(EtherType::IPV6, inner)),
        _ => Err(Skip::Tunnel("gtp-u", "a G-PDU that is not IP".into())),
    }
}

fn from_l3(ethertype: EtherType, data: &[u8]) -> LaxSlicedPacket<'_> {
    LaxSlicedPacket::from_ether_type(ethertype, data)
}

fn linktype_name(l: Linktype) -> &'static str {
    match l {
        Linktype::NULL => "NULL",
        Linktype::ETHERNET => "ETHERNET",
        Linktype::RAW => "RAW",
        Linktype::LINUX_SLL => "LINUX_SLL",
        Linktype::LINUX_SLL2 => "LINUX_SLL2",
        Linktype::IPV4 => "IPV4",
        Linktype::IPV6 => "IPV6",
        _ => "see the tcpdump link-type list",
    }
}
