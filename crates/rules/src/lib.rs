//! Firewall and NAT rule audit for intraport: parses `iptables-save` /
//! `ip6tables-save` text, `nft -j list ruleset` JSON and Azure NSG JSON into one
//! model, and finds shadowed, redundant and correlated rules, overlapping NAT, DNAT
//! into a drop, overly permissive accepts, and the coverage of required flows.
//!
//! The analysis is exact set arithmetic over packet spaces (unions of boxes over
//! source, destination, protocol, ports, interfaces and conntrack state), not
//! heuristics: a rule is called shadowed only when it is proved so, and every
//! finding carries an example packet. Matches it does not model make a rule an
//! "unknown subset", which never serves as proof.
//!
//! Beyond plain matches it models nftables verdict maps written in the rule,
//! address types (`-m addrtype`, `fib ... type`: [`addrtype`]), REJECT replies,
//! every IANA protocol name ([`protocols`]), and Azure's default NSG rules and
//! address-set service tags ([`nsg`]).
//!
//! It is not a firewall manager: it never changes rules, and it does not model
//! packet mangling, rate limits, named sets/maps of nftables, or the interplay of
//! several nftables base chains on one hook.

pub mod addrtype;
pub mod analysis;
pub mod audit;
pub mod compile;
pub mod coverage;
pub mod error;
mod index;
pub mod iptables;
pub mod model;
pub mod nft;
pub mod nsg;
pub mod protocols;
pub mod space;

pub use audit::{AuditOptions, Finding, Kind, Report, RuleRef, Severity, audit};
pub use coverage::{CoverageResult, FlowStatus, RequiredFlow, coverage, parse_flows};
pub use error::Error;
pub use model::{InputFormat, Packet, Ruleset};

/// Parse a ruleset file's text in the given format. `file` names it in errors and
/// findings.
pub fn parse(format: InputFormat, file: &str, text: &str) -> Result<Ruleset, Error> {
    match format {
        InputFormat::Iptables => iptables::parse(file, text),
        InputFormat::Nftables => nft::parse(file, text),
        InputFormat::Nsg => nsg::parse(file, text),
    }
}
