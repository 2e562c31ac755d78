//! Coverage of required flows: for each flow (say, a hybrid-identity component's
//! port map entry), whether the ruleset allows all of it, blocks it (and by which
//! rule) or allows only part of it (with a blocked example packet).
//!
//! Flows come from the port map (a library caller) or, for now, from a small TOML
//! file (`--flows FILE`):
//!
//! ```toml
//! [[flow]]
//! name = "directory sync to LDAP"
//! proto = "tcp"
//! src = ["10.0.0.0/24"]
//! dst = ["10.0.1.10/32"]
//! dports = [389, "3268-3269"]
//! chain = "INPUT"      # INPUT, FORWARD, OUTPUT; for NSGs Inbound or Outbound
//! ```

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::analysis::{Analysis, Part};
use crate::audit::RuleRef;
use crate::error::Error;
use crate::iptables::proto_number;
use crate::model::{Cond, Family, Field, IfPat, Packet, TableKind, Values, net_range};

/// A flow that must get through, as new connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequiredFlow {
    /// For people.
    pub name: String,
    /// IP protocol number.
    pub proto: u8,
    /// Source networks.
    pub src: Vec<IpNet>,
    /// Destination networks.
    pub dst: Vec<IpNet>,
    /// Destination port ranges (inclusive).
    pub dports: Vec<(u16, u16)>,
    /// The base chain (hook) that must let it through: `INPUT`, `FORWARD`,
    /// `OUTPUT`, or NSG `Inbound` / `Outbound`.
    pub chain: String,
}

/// What a ruleset does to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowStatus {
    /// Every packet of the flow is accepted.
    Allowed,
    /// Every packet of the flow is dropped or rejected.
    Blocked,
    /// Some packets accepted, some not.
    Partial,
    /// A rule with unknown matches may decide part of the flow.
    Unknown,
    /// No chain on that hook: the ruleset does not filter it.
    NotFiltered,
}

/// The coverage of one flow.
#[derive(Clone, Debug, Serialize)]
pub struct CoverageResult {
    /// The flow's name.
    pub flow: String,
    /// The hook.
    pub chain: String,
    /// The outcome.
    pub status: FlowStatus,
    /// Rules (or policies) that block the flow, or for `unknown` the undecidable
    /// rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<RuleRef>,
    /// A packet of the flow that does not get through (or is undecided).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example: Option<Packet>,
}

/// Judge each flow against the ruleset's filter chains.
pub fn coverage(a: &Analysis<'_>, flows: &[RequiredFlow]) -> Vec<CoverageResult> {
    flows.iter().map(|f| one(a, f)).collect()
}

fn family_fits(table: Family, nets: &[IpNet]) -> bool {
    nets.iter().all(|n| {
        matches!(
            (table, n),
            (Family::Inet, _) | (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    })
}

/// Whether a flow on this chain comes from another host: on the input side
/// (INPUT, FORWARD, PREROUTING) from sources other than loopback. Such packets
/// never arrive on the loopback interface, which carries only the host's own.
fn from_elsewhere(chain: &crate::analysis::FlatChain, src: &[IpNet]) -> bool {
    let input_side = ["INPUT", "FORWARD", "PREROUTING"]
        .iter()
        .any(|h| chain.hook.eq_ignore_ascii_case(h));
    input_side && !src.iter().all(|n| n.addr().is_loopback())
}

fn not_loopback() -> Cond {
    Cond {
        field: Field::Iif,
        negated: true,
        values: Values::Ifaces(vec![IfPat {
            name: "lo".into(),
            wildcard: false,
        }]),
    }
}

fn one(a: &Analysis<'_>, f: &RequiredFlow) -> CoverageResult {
    let mut result = CoverageResult {
        flow: f.name.clone(),
        chain: f.chain.clone(),
        status: FlowStatus::NotFiltered,
        by: Vec::new(),
        example: None,
    };
    let ranges = |nets: &[IpNet]| nets.iter().map(|n| net_range(*n)).collect::<Vec<_>>();
    let dports: Vec<(u128, u128)> = f
        .dports
        .iter()
        .map(|&(lo, hi)| (lo.into(), hi.into()))
        .collect();
    let mut parts: Vec<(Part, &crate::analysis::FlatChain)> = Vec::new();
    for chain in a.chains.iter().filter(|c| {
        c.kind == TableKind::Filter
            && c.hook.eq_ignore_ascii_case(&f.chain)
            && a.ruleset
                .tables
                .get(c.table)
                .is_some_and(|t| family_fits(t.family, &f.src) && family_fits(t.family, &f.dst))
    }) {
        let mut q = a.flow_space(chain, &ranges(&f.src), &ranges(&f.dst), f.proto, &dports);
        if from_elsewhere(chain, &f.src) {
            q = q.intersect(&a.compiler.compile(&[not_loopback()], &chain.universe));
        }
        parts.extend(a.decide_space(chain, &q).into_iter().map(|p| (p, chain)));
    }
    if parts.is_empty() {
        return result;
    }
    let uncertain: Vec<_> = parts.iter().filter(|(p, _)| !p.certain).collect();
    let denied: Vec<_> = parts
        .iter()
        .filter(|(p, _)| p.certain && p.verdict.is_deny())
        .collect();
    let (status, chosen) = if !uncertain.is_empty() {
        (FlowStatus::Unknown, uncertain)
    } else if denied.is_empty() {
        (FlowStatus::Allowed, Vec::new())
    } else if denied.len() == parts.len() {
        (FlowStatus::Blocked, denied)
    } else {
        (FlowStatus::Partial, denied)
    };
    result.status = status;
    result.by = chosen
        .iter()
        .filter_map(|(p, c)| a.decider_ref(c, p.by))
        .collect();
    result.example = chosen.first().and_then(|(p, _)| a.example(&p.space));
    result
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowFile {
    #[serde(default)]
    flow: Vec<RawFlow>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortSpec {
    Num(u16),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    name: String,
    proto: toml::Spanned<String>,
    src: Vec<IpNet>,
    dst: Vec<IpNet>,
    dports: Vec<toml::Spanned<PortSpec>>,
    chain: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.matches('\n').count() + 1)
}

/// Read required flows from TOML text (`[[flow]]` tables, see the module docs).
pub fn parse_flows(file: &str, text: &str) -> Result<Vec<RequiredFlow>, Error> {
    let raw: FlowFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        let token = e
            .span()
            .and_then(|s| text.get(s))
            .unwrap_or_default()
            .to_string();
        Error::parse(file, line, token, e.message())
    })?;
    let mut out = Vec::new();
    for f in raw.flow {
        let proto = match proto_number(f.proto.get_ref()) {
            Some(Some(p)) => p,
            _ => {
                return Err(Error::parse(
                    file,
                    line_of(text, f.proto.span().start),
                    f.proto.get_ref(),
                    "expected a protocol (tcp, udp, a number)",
                ));
            }
        };
        let mut dports = Vec::new();
        for d in &f.dports {
            let bad = || {
                Error::parse(
                    file,
                    line_of(text, d.span().start),
                    text.get(d.span()).unwrap_or_default(),
                    "expected a port or \"LOW-HIGH\"",
                )
            };
            dports.push(match d.get_ref() {
                PortSpec::Num(p) => (*p, *p),
                PortSpec::Text(t) => {
                    let (a, b) = t.split_once('-').unwrap_or((t, t));
                    let lo: u16 = a.trim().parse().map_err(|_| bad())?;
                    let hi: u16 = b.trim().parse().map_err(|_| bad())?;
                    if lo > hi {
                        return Err(bad());
                    }
                    (lo, hi)
                }
            });
        }
        out.push(RequiredFlow {
            name: f.name,
            proto,
            src: f.src,
            dst: f.dst,
            dports,
            chain: f.chain,
        });
    }
    Ok(out)
}
