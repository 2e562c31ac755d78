//! The parsed ruleset, common to every input format: tables of chains of rules, each
//! rule a conjunction of symbolic conditions and a target.
//!
//! Conditions stay symbolic here (address ranges, interface patterns, tags) so that a
//! brute-force first-match evaluator can run on them directly, independent of the
//! box algebra the analysis compiles them to.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Which input syntax a ruleset came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// `iptables-save` / `ip6tables-save` text.
    Iptables,
    /// `nft -j list ruleset` JSON.
    Nftables,
    /// Azure network security group JSON (`az network nsg show`).
    Nsg,
}

/// Address family of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
    /// Both (nftables `inet`).
    Inet,
}

/// Where a rule is written: file and line, and a name where the format has one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The file as given.
    pub file: String,
    /// 1-based line, when the format has meaningful lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// A name: NSG rule name, or nftables `table/chain handle N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(n) = &self.name {
            write!(f, " ({n})")?;
        }
        Ok(())
    }
}

/// Connection-tracking states. The order puts NEW first so that example packets
/// (lowest corner of a box) are new connections whenever the rule allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CtState {
    /// First packet of a connection.
    New = 0,
    /// Part of a known connection.
    Established = 1,
    /// Related to a known connection (ICMP errors, FTP data).
    Related = 2,
    /// Not identifiable.
    Invalid = 3,
    /// Exempted from tracking.
    Untracked = 4,
}

impl CtState {
    /// All states, in index order.
    pub const ALL: [CtState; 5] = [
        CtState::New,
        CtState::Established,
        CtState::Related,
        CtState::Invalid,
        CtState::Untracked,
    ];

    /// Parse a state name as iptables and nftables write it (any case).
    pub fn parse(s: &str) -> Option<CtState> {
        match s.to_ascii_uppercase().as_str() {
            "NEW" => Some(CtState::New),
            "ESTABLISHED" => Some(CtState::Established),
            "RELATED" => Some(CtState::Related),
            "INVALID" => Some(CtState::Invalid),
            "UNTRACKED" => Some(CtState::Untracked),
            _ => None,
        }
    }

    /// The state with index `i`.
    pub fn from_index(i: u128) -> CtState {
        match i {
            0 => CtState::New,
            1 => CtState::Established,
            2 => CtState::Related,
            3 => CtState::Invalid,
            _ => CtState::Untracked,
        }
    }
}

/// An interface pattern: an exact name, or a prefix (`eth+` in iptables, `eth*` in
/// nftables).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct IfPat {
    /// Name, or the prefix when `wildcard`.
    pub name: String,
    /// Prefix match.
    pub wildcard: bool,
}

impl IfPat {
    /// Whether the interface `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        if self.wildcard {
            name.starts_with(&self.name)
        } else {
            name == self.name
        }
    }
}

/// The value set of one condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Values {
    /// Inclusive numeric ranges (addresses as `u128`, IPv4 mapped; protocols; ports;
    /// conntrack state indexes).
    Ranges(Vec<(u128, u128)>),
    /// Interface patterns (any of them).
    Ifaces(Vec<IfPat>),
    /// Opaque named address sets (NSG service tags), any of them.
    Tags(Vec<String>),
    /// Address types (`-m addrtype`), any of them: which addresses they are
    /// depends on the host and the hook (see [`crate::addrtype`]).
    AddrTypes(Vec<crate::addrtype::AddrType>),
}

/// Which packet field a condition tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Source address (or source tags).
    Src,
    /// Destination address (or destination tags).
    Dst,
    /// IP protocol.
    Proto,
    /// Source port.
    Sport,
    /// Destination port.
    Dport,
    /// Input interface.
    Iif,
    /// Output interface.
    Oif,
    /// Conntrack state.
    State,
}

/// One condition: the field's value is (or with `negated`, is not) in `values`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cond {
    /// Field tested.
    pub field: Field,
    /// Inverted (`!`).
    pub negated: bool,
    /// Accepted values.
    pub values: Values,
}

/// A final decision of a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "to", rename_all = "lowercase")]
pub enum Verdict {
    /// Let the packet through (in a nat table: leave it untranslated).
    Accept,
    /// Discard silently.
    Drop,
    /// Discard with an error reply: `tcp-reset`, or the ICMP error sent (`icmp
    /// port-unreachable`, ...; see [`reject_kind`]). Two REJECTs with different
    /// replies are different verdicts.
    Reject(String),
    /// Rewrite the destination.
    Dnat(String),
    /// Rewrite the source.
    Snat(String),
    /// Rewrite the source to the output interface's address.
    Masquerade,
    /// Rewrite the destination to the local machine.
    Redirect(String),
    /// A terminating target the analysis does not know (its effect is unknown).
    Unknown(String),
}

impl Verdict {
    /// Whether the packet is discarded.
    pub fn is_deny(&self) -> bool {
        matches!(self, Verdict::Drop | Verdict::Reject(_))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("ACCEPT"),
            Verdict::Drop => f.write_str("DROP"),
            Verdict::Reject(with) => write!(f, "REJECT with {with}"),
            Verdict::Dnat(t) => write!(f, "DNAT to {t}"),
            Verdict::Snat(t) => write!(f, "SNAT to {t}"),
            Verdict::Masquerade => f.write_str("MASQUERADE"),
            Verdict::Redirect(t) => write!(f, "REDIRECT to {t}"),
            Verdict::Unknown(t) => write!(f, "{t}"),
        }
    }
}

/// The reply of a REJECT, named the same whichever tool wrote it: `tcp-reset`, or
/// `icmp ` and the ICMP error (`port-unreachable`, `host-prohibited`, ...). `with`
/// is iptables' `--reject-with` value (`icmp-port-unreachable`, ip6tables'
/// `icmp6-adm-prohibited` or `adm-prohibited`) or nft's `tcp reset` / ICMP code
/// name; `None` is the default, port unreachable.
pub fn reject_kind(with: Option<&str>) -> String {
    let Some(w) = with else {
        return "icmp port-unreachable".into();
    };
    let w = w.trim().to_ascii_lowercase().replace(' ', "-");
    if w == "tcp-reset" || w == "tcp-rst" {
        return "tcp-reset".into();
    }
    let code = w
        .strip_prefix("icmp6-")
        .or_else(|| w.strip_prefix("icmp-"))
        .unwrap_or(&w);
    let code = match code {
        "port-unreach" => "port-unreachable",
        "addr-unreach" => "addr-unreachable",
        "adm-prohibited" => "admin-prohibited",
        c => c,
    };
    format!("icmp {code}")
}

/// Where a NAT rule sends packets, when it can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NatTo {
    /// Address range (IPv4 mapped), if given.
    pub addrs: Option<(u128, u128)>,
    /// Port range, if given.
    pub ports: Option<(u16, u16)>,
}

/// What a rule does with a matching packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// A final decision.
    Verdict {
        /// The decision.
        verdict: Verdict,
        /// Where a NAT decision sends packets.
        #[serde(skip_serializing_if = "Option::is_none")]
        nat_to: Option<NatTo>,
    },
    /// Continue with the rest of the calling chain (or the policy, in a base chain).
    Return,
    /// Evaluate a user chain, then continue here.
    Jump(String),
    /// Evaluate a user chain, then return to this chain's caller.
    Goto(String),
    /// Does not decide (LOG, counters, marks): evaluation continues.
    Continue(String),
    /// No target: the rule only counts packets.
    None,
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Where it is written.
    pub loc: Location,
    /// The rule as written (one line for iptables).
    pub text: String,
    /// All must hold.
    pub conds: Vec<Cond>,
    /// Matches the analysis does not understand: the rule matches some unknown
    /// subset of what `conds` describe.
    pub unknown: Vec<String>,
    /// What happens to a match.
    pub target: Target,
    /// Packet counter as dumped (`iptables-save -c`, nft counters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
}

/// A chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// For base chains: the hook (`INPUT`, `PREROUTING`, NSG `Inbound`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    /// For base chains: what happens at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Verdict>,
    /// For nftables base chains: the chain's type, which may differ from other
    /// base chains of the same table (`None`: the table's role).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<TableKind>,
    /// Rules in evaluation order.
    pub rules: Vec<Rule>,
}

/// What a table is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// Accept/drop decisions.
    Filter,
    /// Address translation.
    Nat,
    /// Parsed but not analysed (mangle, raw, security, ...).
    Other,
}

/// A table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Table name.
    pub name: String,
    /// Its role.
    pub kind: TableKind,
    /// Its address family.
    pub family: Family,
    /// Chains in file order.
    pub chains: Vec<Chain>,
}

/// A parsed ruleset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ruleset {
    /// The file it came from.
    pub file: String,
    /// Its syntax.
    pub format: InputFormat,
    /// Tables in file order.
    pub tables: Vec<Table>,
}

impl Ruleset {
    /// The rule at an index triple.
    pub fn rule(&self, id: RuleId) -> Option<&Rule> {
        self.tables
            .get(id.table)?
            .chains
            .get(id.chain)?
            .rules
            .get(id.rule)
    }
}

/// Index of a rule in a [`Ruleset`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId {
    /// Table index.
    pub table: usize,
    /// Chain index within the table.
    pub chain: usize,
    /// Rule index within the chain.
    pub rule: usize,
}

/// IPv4 addresses live in the IPv4-mapped block of the `u128` address space, so one
/// dimension serves IPv4, IPv6 and nftables `inet` tables alike.
pub const V4_BASE: u128 = 0xffff_0000_0000;

/// An address as a `u128` (IPv4 mapped).
pub fn addr_to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => V4_BASE | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address a `u128` stands for (mapped values print as IPv4).
pub fn u128_to_addr(v: u128) -> IpAddr {
    if v >> 32 == V4_BASE >> 32 {
        // ok: the shift leaves the low 32 bits, which fit.
        IpAddr::V4(Ipv4Addr::from((v & 0xffff_ffff) as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// The address range of a CIDR network.
pub fn net_range(n: ipnet::IpNet) -> (u128, u128) {
    (addr_to_u128(n.network()), addr_to_u128(n.broadcast()))
}

/// A concrete packet, as the analysis shows examples and as the brute-force
/// evaluator takes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port (meaningful for TCP, UDP, SCTP).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Input interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    /// Output interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oif: Option<String>,
    /// Conntrack state.
    pub state: CtState,
    /// Service tags the source belongs to (NSG).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub src_tags: BTreeSet<String>,
    /// Service tags the destination belongs to (NSG).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub dst_tags: BTreeSet<String>,
}

/// The name of an IP protocol number, for display.
pub fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => crate::protocols::name(n).map_or_else(|| n.to_string(), str::to_string),
    }
}

/// Whether a protocol has ports.
pub fn has_ports(p: u8) -> bool {
    matches!(p, 6 | 17 | 132 | 136)
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", proto_name(self.proto))?;
        if has_ports(self.proto) {
            write!(
                f,
                "{}:{} -> {}:{}",
                self.src, self.sport, self.dst, self.dport
            )?;
        } else {
            write!(f, "{} -> {}", self.src, self.dst)?;
        }
        if let Some(i) = &self.iif {
            write!(f, " in {i}")?;
        }
        if let Some(o) = &self.oif {
            write!(f, " out {o}")?;
        }
        write!(f, " {:?}", self.state)?;
        if !self.src_tags.is_empty() {
            write!(f, " src-tags {:?}", self.src_tags)?;
        }
        if !self.dst_tags.is_empty() {
            write!(f, " dst-tags {:?}", self.dst_tags)?;
        }
        Ok(())
    }
}

impl Cond {
    /// Whether the packet satisfies the condition (the reference semantics).
    pub fn matches(&self, p: &Packet) -> bool {
        let hit = match (&self.values, self.field) {
            (Values::Ranges(rs), f) => {
                let v = match f {
                    Field::Src => addr_to_u128(p.src),
                    Field::Dst => addr_to_u128(p.dst),
                    Field::Proto => u128::from(p.proto),
                    Field::Sport => u128::from(p.sport),
                    Field::Dport => u128::from(p.dport),
                    Field::State => p.state as u128,
                    Field::Iif | Field::Oif => return false,
                };
                rs.iter().any(|&(lo, hi)| lo <= v && v <= hi)
            }
            (Values::Ifaces(pats), Field::Iif) => p
                .iif
                .as_deref()
                .is_some_and(|n| pats.iter().any(|pat| pat.matches(n))),
            (Values::Ifaces(pats), Field::Oif) => p
                .oif
                .as_deref()
                .is_some_and(|n| pats.iter().any(|pat| pat.matches(n))),
            // Without the host and the hook the reference cannot tell an address's
            // type: only the analysis, which knows both, models these.
            (Values::AddrTypes(_), _) => false,
            (Values::Tags(tags), Field::Src) => tags.iter().any(|t| p.src_tags.contains(t)),
            (Values::Tags(tags), Field::Dst) => tags.iter().any(|t| p.dst_tags.contains(t)),
            _ => false,
        };
        hit != self.negated
    }
}
