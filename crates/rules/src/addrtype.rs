//! Address types (`-m addrtype --dst-type LOCAL`, nft `fib daddr type local`) as
//! address ranges, from the host's addresses when they are given and from what the
//! hook implies when they are not.
//!
//! The kernel's classification (IPv4 `inet_addr_type`, a lookup in the `local`
//! routing table): `0.0.0.0/8` and `255.255.255.255` are BROADCAST, `224.0.0.0/4`
//! MULTICAST; then `127.255.255.255` and each of the host's subnet broadcast
//! addresses are BROADCAST, `127.0.0.0/8` and the host's addresses LOCAL; anything
//! else UNICAST. IPv6: `ff00::/8` MULTICAST, `::1` and the host's addresses LOCAL,
//! anything else UNICAST (assuming a route to it: without one the kernel says
//! UNREACHABLE).
//!
//! Without the host's addresses (`--host-address`), what the hook implies stands in
//! for them, and only where it is certain enough to state:
//! - on INPUT, a destination that is not broadcast or multicast is LOCAL: the
//!   kernel delivers to INPUT only packets for its own addresses (a subnet broadcast
//!   address, unknown without the host's subnets, is then taken as LOCAL);
//! - on FORWARD, no destination is LOCAL but loopback: forwarded packets are for
//!   other hosts;
//! - on INPUT, FORWARD and PREROUTING, no source is LOCAL but loopback: a packet from
//!   another host does not carry one of this host's addresses (the kernel drops
//!   such martians), and one from the host itself is taken as sent from loopback;
//! - on OUTPUT, a source that is not broadcast or multicast is LOCAL.
//!
//! Elsewhere (the destination on PREROUTING, OUTPUT and POSTROUTING, the source on
//! POSTROUTING) the match stays unknown until the addresses are given. Types that
//! need the routing table (BLACKHOLE, UNREACHABLE, PROHIBIT, THROW, NAT, XRESOLVE,
//! ANYCAST, UNSPEC) are always unknown.

use ipnet::IpNet;
use serde::Serialize;

use crate::model::{Field, V4_BASE, net_range};

/// An address type, as `-m addrtype` and nft `fib ... type` name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AddrType {
    /// An address of this host (or loopback).
    Local,
    /// A broadcast address.
    Broadcast,
    /// A multicast address.
    Multicast,
    /// Any other address with a unicast route.
    Unicast,
    /// A type that depends on the routing table (not modelled).
    Other,
}

impl AddrType {
    /// Parse a type name (any case); `None` when it is no address type.
    pub fn parse(s: &str) -> Option<AddrType> {
        Some(match s.to_ascii_uppercase().as_str() {
            "LOCAL" => AddrType::Local,
            "BROADCAST" => AddrType::Broadcast,
            "MULTICAST" => AddrType::Multicast,
            "UNICAST" => AddrType::Unicast,
            "UNSPEC" | "ANYCAST" | "BLACKHOLE" | "UNREACHABLE" | "PROHIBIT" | "THROW" | "NAT"
            | "XRESOLVE" => AddrType::Other,
            _ => return None,
        })
    }
}

/// What the audit knows of the host the ruleset runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    /// The host's addresses, with their prefix lengths (the subnet gives the
    /// broadcast address); empty when not given.
    pub addresses: Vec<IpNet>,
}

fn v4(a: u32, len: u8) -> (u128, u128) {
    let net = ipnet::Ipv4Net::new(a.into(), len).map_or(ipnet::Ipv4Net::default(), |n| n.trunc());
    net_range(IpNet::V4(net))
}

fn v4_point(a: u32) -> (u128, u128) {
    (V4_BASE | u128::from(a), V4_BASE | u128::from(a))
}

/// Subtract `b` from every range of `a`.
pub(crate) fn minus(a: Vec<(u128, u128)>, b: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut out = a;
    for &(blo, bhi) in b {
        let mut next = Vec::with_capacity(out.len() + 1);
        for (lo, hi) in out {
            if bhi < lo || blo > hi {
                next.push((lo, hi));
                continue;
            }
            if blo > lo {
                next.push((lo, blo - 1));
            }
            if bhi < hi {
                next.push((bhi + 1, hi));
            }
        }
        out = next;
    }
    out
}

/// Whether, with no host addresses given, every non-broadcast, non-multicast
/// address counts as LOCAL (`Some(true)`), only loopback does (`Some(false)`), or
/// the hook says nothing (`None`).
fn assumed_local(field: Field, hook: &str) -> Option<bool> {
    match (field, hook.to_ascii_uppercase().as_str()) {
        (Field::Dst, "INPUT") | (Field::Src, "OUTPUT") => Some(true),
        (Field::Dst, "FORWARD") | (Field::Src, "INPUT" | "FORWARD" | "PREROUTING") => Some(false),
        _ => None,
    }
}

impl Host {
    /// The addresses of the given types, as ranges over both families (IPv4
    /// mapped), for a match on `field` in a chain on `hook`; `None` when they are
    /// not known (see the module docs).
    pub fn ranges(
        &self,
        types: &[AddrType],
        field: Field,
        hook: &str,
    ) -> Option<Vec<(u128, u128)>> {
        if types.contains(&AddrType::Other) {
            return None;
        }
        let all_v4 = v4(0, 0);
        let all_v6 = [(0, V4_BASE - 1), (all_v4.1 + 1, u128::MAX)];
        let mut multicast = vec![v4(0xe000_0000, 4)];
        multicast.push(net_range("ff00::/8".parse().ok()?));
        let mut broadcast = vec![v4(0, 8), v4_point(u32::MAX)];
        // Checked after the two above: the local table's entries.
        let mut local_bcast = vec![v4_point(0x7fff_ffff)];
        let mut local = vec![v4(0x7f00_0000, 8), net_range("::1/128".parse().ok()?)];
        if self.addresses.is_empty() {
            if assumed_local(field, hook)? {
                local = vec![all_v4];
                local.extend(all_v6);
            }
        } else {
            for a in &self.addresses {
                local.push(net_range(IpNet::from(a.addr())));
                if let IpNet::V4(n) = a
                    && n.prefix_len() <= 30
                {
                    local_bcast.push(v4_point(u32::from(n.broadcast())));
                }
            }
        }
        broadcast.extend(minus(local_bcast, &multicast));
        let local = minus(minus(local, &broadcast), &multicast);
        let mut out = Vec::new();
        for t in types {
            match t {
                AddrType::Multicast => out.extend(multicast.iter().copied()),
                AddrType::Broadcast => out.extend(broadcast.iter().copied()),
                AddrType::Local => out.extend(local.iter().copied()),
                AddrType::Unicast => {
                    let mut rest = vec![all_v4];
                    rest.extend(all_v6);
                    let rest = minus(minus(minus(rest, &multicast), &broadcast), &local);
                    out.extend(rest);
                }
                AddrType::Other => return None,
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::model::addr_to_u128;

    fn has(r: &[(u128, u128)], a: &str) -> bool {
        let v = addr_to_u128(a.parse().unwrap());
        r.iter().any(|&(lo, hi)| lo <= v && v <= hi)
    }

    #[test]
    fn given_addresses_classify_like_the_kernel() {
        let h = Host {
            addresses: vec!["10.0.0.5/24".parse().unwrap()],
        };
        let local = h
            .ranges(&[AddrType::Local], Field::Dst, "PREROUTING")
            .unwrap();
        assert!(has(&local, "10.0.0.5") && has(&local, "127.0.0.9"));
        assert!(!has(&local, "10.0.0.6") && !has(&local, "127.255.255.255"));
        let b = h
            .ranges(&[AddrType::Broadcast], Field::Dst, "INPUT")
            .unwrap();
        assert!(has(&b, "10.0.0.255") && has(&b, "255.255.255.255") && has(&b, "0.1.2.3"));
        let u = h.ranges(&[AddrType::Unicast], Field::Dst, "INPUT").unwrap();
        assert!(has(&u, "10.0.0.6") && has(&u, "2001:db8::1"));
        assert!(!has(&u, "10.0.0.5") && !has(&u, "224.0.0.1") && !has(&u, "ff02::1"));
    }

    #[test]
    fn the_hook_stands_in_for_unknown_addresses() {
        let h = Host::default();
        let local = h.ranges(&[AddrType::Local], Field::Dst, "INPUT").unwrap();
        assert!(has(&local, "192.0.2.1") && has(&local, "2001:db8::1"));
        assert!(!has(&local, "224.0.0.251") && !has(&local, "255.255.255.255"));
        let local = h.ranges(&[AddrType::Local], Field::Dst, "FORWARD").unwrap();
        assert!(!has(&local, "192.0.2.1") && has(&local, "127.0.0.1"));
        assert!(
            h.ranges(&[AddrType::Local], Field::Dst, "PREROUTING")
                .is_none()
        );
        assert!(h.ranges(&[AddrType::Other], Field::Dst, "INPUT").is_none());
    }
}
