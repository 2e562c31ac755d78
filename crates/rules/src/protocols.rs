//! IP protocol names and numbers: the IANA registry as Debian's netbase ships it in
//! `/etc/protocols` (embedded from `data/protocols`, never read from the host at
//! run time, so an audit means the same on every machine), with the aliases
//! iptables adds of its own (`icmpv6`, `ipv6-mh`, `mh`, `all`).
//!
//! iptables-save prints a protocol by the name the dumping host's `/etc/protocols`
//! gives it (`vrrp`, `ospf`, `mobility-header`), or by number when it has none; nft
//! prints its own names for the few it knows and numbers otherwise.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The netbase file, as shipped.
const PROTOCOLS: &str = include_str!("../data/protocols");

/// Names iptables knows without `/etc/protocols` (its `xtables_chain_protos`).
const IPTABLES_ALIASES: &[(&str, u8)] = &[("icmpv6", 58), ("ipv6-mh", 135), ("mh", 135)];

struct Table {
    by_name: HashMap<String, u8>,
    names: [Option<&'static str>; 256],
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut by_name = HashMap::new();
        let mut names = [None; 256];
        for line in PROTOCOLS.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut it = line.split_whitespace();
            let (Some(name), Some(num)) = (it.next(), it.next()) else {
                continue;
            };
            // Numbers above 255 (the kernel's internal MPTCP entry) are not IP
            // protocol numbers.
            let Ok(num) = num.parse::<u8>() else {
                continue;
            };
            names[usize::from(num)].get_or_insert(name);
            for n in std::iter::once(name).chain(it) {
                by_name.entry(n.to_ascii_lowercase()).or_insert(num);
            }
        }
        for &(n, v) in IPTABLES_ALIASES {
            by_name.entry(n.to_string()).or_insert(v);
        }
        Table { by_name, names }
    })
}

/// The number of a protocol name or alias (any case), or of a decimal number.
/// `all` (and 0, `ip`, `hopopt`, which iptables and nft take as "any protocol")
/// give `Some(None)`.
pub fn number(s: &str) -> Option<Option<u8>> {
    let lower = s.to_ascii_lowercase();
    if lower == "all" {
        return Some(None);
    }
    let n = match s.parse::<u8>() {
        Ok(v) => v,
        Err(_) => *table().by_name.get(&lower)?,
    };
    Some((n != 0).then_some(n))
}

/// The registry's name of a protocol number, if it has one.
pub fn name(p: u8) -> Option<&'static str> {
    table().names[usize::from(p)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_numbers() {
        assert_eq!(number("vrrp"), Some(Some(112)));
        assert_eq!(number("VRRP"), Some(Some(112)));
        assert_eq!(number("dccp"), Some(Some(33)));
        assert_eq!(number("ospf"), Some(Some(89)));
        assert_eq!(number("OSPFIGP"), Some(Some(89)));
        assert_eq!(number("pim"), Some(Some(103)));
        assert_eq!(number("mobility-header"), Some(Some(135)));
        assert_eq!(number("mh"), Some(Some(135)));
        assert_eq!(number("ipv6-icmp"), Some(Some(58)));
        assert_eq!(number("icmpv6"), Some(Some(58)));
        assert_eq!(number("253"), Some(Some(253)));
        assert_eq!(number("all"), Some(None));
        assert_eq!(number("0"), Some(None));
        assert_eq!(number("mptcp"), None);
        assert_eq!(number("nonesuch"), None);
        assert_eq!(name(112), Some("vrrp"));
        assert_eq!(name(6), Some("tcp"));
    }
}
