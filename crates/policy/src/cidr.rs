//! CIDR sets: which configured network, if any, contains an address.
//!
//! A source rule may list thousands of networks (cloud ranges, a whole corporate
//! address plan), and the set is consulted for every connection, so lookups must not
//! scan the list. `ipnet` parses and normalises networks but has no lookup structure,
//! so the index here is hand-written; it is small and proved below.
//!
//! ## Index
//!
//! CIDR blocks are *laminar*: two blocks are either disjoint or one contains the
//! other. The networks of one family are sorted by (first address ascending, prefix
//! length ascending), so every block comes after all blocks that contain it, and each
//! block records its nearest enclosing block ("parent", found with a stack while
//! building). To look an address up, a binary search finds the last block whose first
//! address is `<=` the address; if that block does not contain the address, the
//! answer is on its parent chain (the most specific containing block `N` starts at or
//! before that block, which therefore lies inside `N`; every block between the two on
//! the chain lies inside `N` and is more specific, so the first chain member that
//! contains the address is `N`). The cost is `O(log n)` plus at most one step per
//! prefix length (32 for IPv4, 128 for IPv6), whatever the number of networks.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::PolicyError;

/// One indexed network of a family, as an integer range.
#[derive(Clone, Debug)]
struct Block {
    first: u128,
    last: u128,
    net: IpNet,
    /// Index of the nearest enclosing block, if any.
    parent: Option<usize>,
}

/// The index for one address family.
#[derive(Clone, Debug, Default)]
struct FamilyIndex {
    blocks: Vec<Block>,
}

impl FamilyIndex {
    fn build(mut ranges: Vec<(u128, u128, u8, IpNet)>) -> FamilyIndex {
        // Parents first: ascending start, then shorter prefixes (larger blocks) first.
        ranges.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
        ranges.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
        let mut blocks: Vec<Block> = Vec::with_capacity(ranges.len());
        let mut stack: Vec<usize> = Vec::new();
        for (first, last, _, net) in ranges {
            // Pop the blocks that end before this one starts: laminarity means the
            // remaining top (if any) contains this block.
            while let Some(&top) = stack.last() {
                if blocks[top].last < first {
                    stack.pop();
                } else {
                    break;
                }
            }
            let parent = stack.last().copied();
            blocks.push(Block {
                first,
                last,
                net,
                parent,
            });
            stack.push(blocks.len() - 1);
        }
        FamilyIndex { blocks }
    }

    fn lookup(&self, addr: u128) -> Option<IpNet> {
        let after = self.blocks.partition_point(|b| b.first <= addr);
        let mut at = after.checked_sub(1);
        while let Some(i) = at {
            let block = &self.blocks[i];
            if addr <= block.last {
                return Some(block.net);
            }
            at = block.parent;
        }
        None
    }
}

/// A set of IPv4 and IPv6 networks with a most-specific-match lookup.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4
/// peers) are matched as IPv4, and IPv6 networks inside `::ffff:0:0/96` are stored as
/// the IPv4 networks they denote. Other IPv6 networks, `::/0` included, match only
/// native IPv6 addresses: list IPv4 networks to admit IPv4 clients.
#[derive(Clone, Debug, Default)]
pub struct CidrSet {
    v4: FamilyIndex,
    v6: FamilyIndex,
    nets: Vec<IpNet>,
}

impl CidrSet {
    /// Builds the set. Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`) and
    /// duplicates are merged.
    pub fn new(nets: Vec<IpNet>) -> CidrSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut kept = Vec::with_capacity(nets.len());
        for net in nets {
            match canonical_net(net) {
                IpNet::V4(n) => {
                    let n = n.trunc();
                    v4.push((
                        u128::from(u32::from(n.network())),
                        u128::from(u32::from(n.broadcast())),
                        n.prefix_len(),
                        IpNet::V4(n),
                    ));
                    kept.push(IpNet::V4(n));
                }
                IpNet::V6(n) => {
                    let n = n.trunc();
                    v6.push((
                        u128::from(n.network()),
                        u128::from(n.broadcast()),
                        n.prefix_len(),
                        IpNet::V6(n),
                    ));
                    kept.push(IpNet::V6(n));
                }
            }
        }
        kept.sort();
        kept.dedup();
        CidrSet {
            v4: FamilyIndex::build(v4),
            v6: FamilyIndex::build(v6),
            nets: kept,
        }
    }

    /// Parses networks written as `a.b.c.d/len`, `x::y/len` or a bare address (a
    /// host route). `what` names the list in error messages (e.g. `routes.api.allow`).
    pub fn parse<S: AsRef<str>>(items: &[S], what: &str) -> Result<CidrSet, PolicyError> {
        let mut nets = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            nets.push(parse_net(item.as_ref()).map_err(|e| match e {
                PolicyError::BadNet { input, reason, .. } => PolicyError::BadNet {
                    input,
                    reason,
                    at: format!("{what}[{i}]"),
                },
                other => other,
            })?);
        }
        Ok(CidrSet::new(nets))
    }

    /// The most specific network containing `ip`, if any.
    pub fn contains(&self, ip: IpAddr) -> Option<IpNet> {
        match ip.to_canonical() {
            IpAddr::V4(a) => self.v4.lookup(u128::from(u32::from(a))),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
        }
    }

    /// True when the set holds no network.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The number of distinct networks.
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// The networks, normalised and sorted.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

/// An IPv6 network inside `::ffff:0:0/96` becomes the IPv4 network it denotes.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if n.prefix_len() >= 96 {
            if let Some(v4) = n.network().to_ipv4_mapped() {
                if let Ok(v4net) = Ipv4Net::new(v4, n.prefix_len() - 96) {
                    return IpNet::V4(v4net);
                }
            }
        }
    }
    net
}

/// Parses one network (`10.0.0.0/8`, `2001:db8::/32`) or bare address (`10.1.2.3`,
/// read as `/32` or `/128`). Host bits set after the prefix are an error, since
/// `10.1.2.3/8` is more often a typo than a wish for `10.0.0.0/8`.
pub fn parse_net(s: &str) -> Result<IpNet, PolicyError> {
    let bad = |reason: String| PolicyError::BadNet {
        input: s.to_string(),
        reason,
        at: String::new(),
    };
    let t = s.trim();
    if !t.contains('/') {
        return match t.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Ok(IpNet::V4(Ipv4Net::from(a))),
            Ok(IpAddr::V6(a)) => Ok(IpNet::V6(Ipv6Net::from(a))),
            Err(_) => Err(bad(
                "expected an IP address or a network like 10.0.0.0/8".into()
            )),
        };
    }
    let net: IpNet = t
        .parse()
        .map_err(|_| bad("expected a network like 10.0.0.0/8 or 2001:db8::/32".into()))?;
    if net.trunc() != net {
        return Err(bad(format!(
            "host bits are set after the prefix; did you mean {}?",
            net.trunc()
        )));
    }
    Ok(net)
}

/// Shorthand used by tests and callers that build sets from literals.
impl FromIterator<IpNet> for CidrSet {
    fn from_iter<I: IntoIterator<Item = IpNet>>(iter: I) -> CidrSet {
        CidrSet::new(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn set(items: &[&str]) -> CidrSet {
        CidrSet::parse(items, "test").unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_most_specific() {
        let s = set(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "192.168.0.0/16"]);
        assert_eq!(s.contains(ip("10.1.2.3")), Some(net("10.1.2.0/24")));
        assert_eq!(s.contains(ip("10.1.3.3")), Some(net("10.1.0.0/16")));
        assert_eq!(s.contains(ip("10.200.0.1")), Some(net("10.0.0.0/8")));
        assert_eq!(s.contains(ip("11.0.0.0")), None);
        assert_eq!(s.contains(ip("9.255.255.255")), None);
        assert_eq!(
            s.contains(ip("192.168.255.255")),
            Some(net("192.168.0.0/16"))
        );
        // A sibling after a nested block: the binary search lands on 10.1.2.0/24,
        // and the lookup must climb to 10.0.0.0/8.
        assert_eq!(s.contains(ip("10.255.0.0")), Some(net("10.0.0.0/8")));
    }

    #[test]
    fn ipv6_and_families_do_not_mix() {
        let s = set(&["2001:db8::/32", "2001:db8:1::/48", "::/0"]);
        assert_eq!(
            s.contains(ip("2001:db8:1::5")),
            Some(net("2001:db8:1::/48"))
        );
        assert_eq!(s.contains(ip("2001:db8:2::5")), Some(net("2001:db8::/32")));
        assert_eq!(s.contains(ip("fe80::1")), Some(net("::/0")));
        // ::/0 does not admit IPv4 clients, mapped or not.
        assert_eq!(s.contains(ip("10.0.0.1")), None);
        assert_eq!(s.contains(ip("::ffff:10.0.0.1")), None);
    }

    #[test]
    fn ipv4_mapped_addresses_match_as_ipv4() {
        let s = set(&["10.0.0.0/8"]);
        assert_eq!(s.contains(ip("::ffff:10.9.8.7")), Some(net("10.0.0.0/8")));
        assert_eq!(s.contains(ip("::ffff:11.9.8.7")), None);
        // A mapped network in the config denotes the IPv4 network.
        let m = set(&["::ffff:192.168.0.0/112"]);
        assert_eq!(m.contains(ip("192.168.3.4")), Some(net("192.168.0.0/16")));
        assert_eq!(m.nets(), &[net("192.168.0.0/16")]);
    }

    #[test]
    fn empty_and_full() {
        let e = CidrSet::default();
        assert!(e.is_empty());
        assert_eq!(e.contains(ip("1.2.3.4")), None);
        let all = set(&["0.0.0.0/0"]);
        assert!(!all.is_empty());
        assert_eq!(all.contains(ip("255.255.255.255")), Some(net("0.0.0.0/0")));
        assert_eq!(all.contains(ip("0.0.0.0")), Some(net("0.0.0.0/0")));
        let h = set(&["::1", "127.0.0.1"]);
        assert_eq!(h.contains(ip("::1")), Some(net("::1/128")));
        assert_eq!(h.contains(ip("127.0.0.1")), Some(net("127.0.0.1/32")));
        assert_eq!(h.contains(ip("127.0.0.2")), None);
    }

    #[test]
    fn duplicates_and_host_bits_normalised_by_new() {
        let s = CidrSet::new(vec![
            net("10.1.2.3/8"),
            net("10.0.0.0/8"),
            net("10.0.0.0/8"),
        ]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.contains(ip("10.3.3.3")), Some(net("10.0.0.0/8")));
    }

    #[test]
    fn parse_errors_name_the_entry() {
        let e = CidrSet::parse(&["10.0.0.0/8", "10.0.0.300/8"], "routes.api.allow").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("routes.api.allow[1]"), "{msg}");
        assert!(msg.contains("10.0.0.300/8"), "{msg}");
        let e = parse_net("10.1.2.3/8").unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        assert!(parse_net("banana").is_err());
        assert!(parse_net("10.0.0.0/33").is_err());
    }

    #[test]
    fn thousands_of_nets() {
        // 4096 /24s spread over 10.0.0.0/8, nested inside 16 /12s, plus 2000 IPv6 /64s.
        let mut nets = Vec::new();
        for i in 0..4096u32 {
            let a = Ipv4Addr::from(0x0a00_0000 | (i * 977 % 65536) << 8);
            nets.push(IpNet::V4(Ipv4Net::new(a, 24).unwrap()));
        }
        for i in 0..16u32 {
            nets.push(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | i << 20), 12).unwrap(),
            ));
        }
        for i in 0..2000u128 {
            let a = Ipv6Addr::from(0x2001_0db8_u128 << 96 | i << 64);
            nets.push(IpNet::V6(Ipv6Net::new(a, 64).unwrap()));
        }
        let s = CidrSet::new(nets.clone());
        let a = Ipv4Addr::from(0x0a00_0000 | (100 * 977 % 65536) << 8 | 9);
        assert_eq!(
            s.contains(IpAddr::V4(a)),
            Some(IpNet::V4(Ipv4Net::new(a, 24).unwrap().trunc()))
        );
        // An address in a /12 but in none of the /24s (the /24 indexes are 977*i
        // mod 65536, an odd multiplier, so exactly the indexes 0..4096 map in).
        let taken: std::collections::HashSet<u32> = (0..4096u32).map(|i| i * 977 % 65536).collect();
        let miss = (0..65536u32).find(|j| !taken.contains(j)).unwrap();
        let b = Ipv4Addr::from(0x0a00_0000 | miss << 8 | 1);
        assert_eq!(s.contains(IpAddr::V4(b)).unwrap().prefix_len(), 12);
        assert_eq!(
            s.contains(ip("2001:db8:0:7cf::1")),
            Some(net("2001:db8:0:7cf::/64"))
        );
        assert_eq!(s.contains(ip("2001:db8:0:7d0::1")), None);
        // A million lookups over 6000 networks stay far below a second even in
        // debug builds; this only guards against an accidental linear scan.
        let start = std::time::Instant::now();
        let mut hits = 0u32;
        for i in 0..200_000u32 {
            if s.contains(IpAddr::V4(Ipv4Addr::from(
                0x0a00_0000 | i.wrapping_mul(2_654_435_761) >> 8,
            )))
            .is_some()
            {
                hits += 1;
            }
        }
        assert_eq!(hits, 200_000, "every address is inside one of the /12s");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    fn brute(nets: &[IpNet], ip: IpAddr) -> Option<IpNet> {
        let ip = ip.to_canonical();
        nets.iter()
            .map(|n| canonical_net(*n).trunc())
            .filter(|n| n.contains(&ip))
            .max_by_key(|n| n.prefix_len())
    }

    fn arb_v4net() -> impl Strategy<Value = IpNet> {
        // A small address space (the top byte from four values) so that random
        // networks nest and collide often.
        (0u32..4, any::<u32>(), 0u8..=32).prop_map(|(top, rest, len)| {
            let a = Ipv4Addr::from(top << 30 | rest >> 2);
            IpNet::V4(Ipv4Net::new(a, len).unwrap())
        })
    }
    fn arb_v6net() -> impl Strategy<Value = IpNet> {
        (0u128..4, any::<u128>(), 0u8..=128).prop_map(|(top, rest, len)| {
            let a = Ipv6Addr::from(top << 126 | rest >> 2);
            IpNet::V6(Ipv6Net::new(a, len).unwrap())
        })
    }
    fn arb_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u32..4, any::<u32>()).prop_map(|(t, r)| IpAddr::V4(Ipv4Addr::from(t << 30 | r >> 2))),
            (0u128..4, any::<u128>())
                .prop_map(|(t, r)| IpAddr::V6(Ipv6Addr::from(t << 126 | r >> 2))),
            any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn contains_equals_brute_force(
            nets in proptest::collection::vec(prop_oneof![arb_v4net(), arb_v6net()], 0..60),
            addrs in proptest::collection::vec(arb_addr(), 1..40),
        ) {
            let s = CidrSet::new(nets.clone());
            for a in addrs {
                prop_assert_eq!(s.contains(a), brute(&nets, a), "addr {}", a);
            }
            // The edges of every listed network, where off-by-one errors live.
            for n in &nets {
                let a = n.trunc().network();
                prop_assert_eq!(s.contains(a), brute(&nets, a));
                let b = n.trunc().broadcast();
                prop_assert_eq!(s.contains(b), brute(&nets, b));
            }
        }
    }
}
