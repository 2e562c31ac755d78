//! From a captured frame to a TCP segment: link layer, IPv4/IPv6, TCP.
//!
//! `pcap-parser` strips the link-layer headers it knows (Ethernet, raw IP, Linux
//! cooked SLL and SLL2); `etherparse` does IP and TCP, laxly, so that a packet cut
//! short by the capture's snap length still yields its TCP header and the bytes that
//! were captured. BSD loopback (`NULL`/`LOOP`) is decoded here because its 4-byte
//! header is in the capturing host's byte order, which `pcap-parser` assumes is
//! little-endian.

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};
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
}

/// Why a frame yields no segment.
pub(crate) enum Skip {
    /// Not TCP over IP (ARP, UDP, ICMP, ...): normal, not worth a warning.
    NotTcp,
    /// Something that should have decoded did not.
    Warn(String),
}

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
    let tcp = match packet.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        Some(_) => return Err(Skip::NotTcp),
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
    })
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
