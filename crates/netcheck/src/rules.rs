//! From the port map and a hosts file to the flows a firewall must allow, and from those
//! flows to iptables, nftables or Azure NSG allow rules.
//!
//! [`required_flows`] is the interface the rules audit uses to measure coverage: the
//! same flows this module prints as rules are the ones the audit looks for.

use std::fmt::Write as _;

use ipnet::IpNet;
use serde::Serialize;

use crate::error::Error;
use crate::hosts::Hosts;
use crate::portmap::{PortMap, PortRange, Selection, Transport};

/// Which side of the flow a rule is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The chosen role opens the connection (host firewall, OUTPUT / Outbound).
    Outbound,
    /// The chosen role accepts the connection (host firewall, INPUT / Inbound).
    Inbound,
    /// No role chosen: a network firewall between the two sides (FORWARD).
    Forward,
}

/// One flow a firewall must allow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequiredFlow {
    /// The port map row it comes from.
    pub row_id: String,
    /// The components that need it.
    pub components: Vec<String>,
    /// Role opening the connection.
    pub from_role: String,
    /// Role accepting it.
    pub to_role: String,
    /// Transport.
    pub transport: Transport,
    /// Source networks (the `from` role's entries in the hosts file).
    pub src: Vec<IpNet>,
    /// Destination networks (the `to` role's entries).
    pub dst: Vec<IpNet>,
    /// Destination ports.
    pub dports: PortRange,
    /// Which side the rule is for.
    pub direction: Direction,
}

/// The flows `sel` selects, with addresses from `hosts`.
///
/// With `sel.role` set, flows are seen from that role's host (outbound when it opens the
/// connection, inbound when it accepts); without, they are forward flows for a network
/// firewall. A role used by a selected row but missing from the hosts file is an error
/// naming the role and the row, so a rule set is never silently incomplete.
pub fn required_flows(
    map: &PortMap,
    hosts: &Hosts,
    sel: &Selection,
) -> Result<Vec<RequiredFlow>, Error> {
    map.check_selection(sel)?;
    let mut flows = Vec::new();
    for row in map.select(sel) {
        let addrs = |role: &str| {
            hosts.roles.get(role).cloned().ok_or_else(|| {
                Error::input(
                    &hosts.origin,
                    role,
                    format!(
                        "role is needed by port map row {:?} ({}) but has no addresses",
                        row.id, row.direction
                    ),
                )
            })
        };
        let src = addrs(&row.from)?;
        let dst = addrs(&row.to)?;
        let direction = match &sel.role {
            Some(role) if role == &row.from => Direction::Outbound,
            Some(_) => Direction::Inbound,
            None => Direction::Forward,
        };
        for &transport in &row.transport {
            flows.push(RequiredFlow {
                row_id: row.id.clone(),
                components: row.components.clone(),
                from_role: row.from.clone(),
                to_role: row.to.clone(),
                transport,
                src: src.clone(),
                dst: dst.clone(),
                dports: row.ports,
                direction,
            });
        }
    }
    Ok(flows)
}

/// The firewall dialects `--as-rules` can print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleFormat {
    /// `iptables-restore` input for the filter table (IPv4).
    Iptables,
    /// An `nft -f` script with one `inet` table.
    Nftables,
    /// Azure network security group `securityRules`, as JSON.
    Nsg,
}

/// Rules as text, and warnings for the operator (e.g. flows a dialect cannot express).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenderedRules {
    /// The rules, ready for the firewall's loader.
    pub text: String,
    /// Things left out, and why.
    pub warnings: Vec<String>,
}

/// Render `flows` in `format`.
pub fn render_rules(flows: &[RequiredFlow], format: RuleFormat) -> Result<RenderedRules, Error> {
    match format {
        RuleFormat::Iptables => Ok(iptables(flows)),
        RuleFormat::Nftables => Ok(nftables(flows)),
        RuleFormat::Nsg => nsg(flows),
    }
}

/// Source and destination networks of one address family.
fn same_family(flow: &RequiredFlow, v6: bool) -> (Vec<&IpNet>, Vec<&IpNet>) {
    (of_family(&flow.src, v6), of_family(&flow.dst, v6))
}

fn of_family(nets: &[IpNet], v6: bool) -> Vec<&IpNet> {
    nets.iter()
        .filter(|n| matches!(n, IpNet::V6(_)) == v6)
        .collect()
}

/// The direction replies of `d` travel in.
fn reply_of(d: Direction) -> Direction {
    match d {
        Direction::Outbound => Direction::Inbound,
        Direction::Inbound => Direction::Outbound,
        Direction::Forward => Direction::Forward,
    }
}

fn chain_of(d: Direction) -> &'static str {
    match d {
        Direction::Outbound => "OUTPUT",
        Direction::Inbound => "INPUT",
        Direction::Forward => "FORWARD",
    }
}

fn iptables(flows: &[RequiredFlow]) -> RenderedRules {
    let mut out = String::new();
    let mut warnings = Vec::new();
    out.push_str(
        "# intraport: allow rules for the Entra port map (IPv4 filter table).\n\
         # Load with `iptables-restore --noflush`; chain policies are left as they are.\n\
         *filter\n",
    );
    let mut chains: Vec<&str> = flows
        .iter()
        .flat_map(|f| [chain_of(f.direction), chain_of(reply_of(f.direction))])
        .collect();
    chains.sort_unstable();
    chains.dedup();
    for chain in &chains {
        // Replies of an allowed connection come back on the reverse chain (INPUT for an
        // OUTPUT flow); one stateful rule per chain lets them through without opening
        // reverse ports.
        let _ = writeln!(
            out,
            "-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"intraport established\" -j ACCEPT"
        );
    }
    for flow in flows {
        let (src, dst) = same_family(flow, false);
        if src.is_empty() || dst.is_empty() {
            warnings.push(format!(
                "{} ({}): no IPv4 source/destination pair; use --as-rules nftables for IPv6",
                flow.row_id, flow.transport
            ));
            continue;
        }
        let ports = if flow.dports.start == flow.dports.end {
            flow.dports.start.to_string()
        } else {
            format!("{}:{}", flow.dports.start, flow.dports.end)
        };
        for s in &src {
            for d in &dst {
                let _ = writeln!(
                    out,
                    "-A {} -s {s} -d {d} -p {t} -m {t} --dport {ports} -m comment --comment \"intraport {}\" -j ACCEPT",
                    chain_of(flow.direction),
                    flow.row_id,
                    t = flow.transport,
                );
            }
        }
    }
    out.push_str("COMMIT\n");
    RenderedRules {
        text: out,
        warnings,
    }
}

fn nft_set(nets: &[&IpNet]) -> String {
    let items: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
    format!("{{ {} }}", items.join(", "))
}

fn nftables(flows: &[RequiredFlow]) -> RenderedRules {
    let mut out = String::new();
    out.push_str(
        "# intraport: allow rules for the Entra port map.\n\
         # Load with `nft -f`. The chains accept by default so loading this cannot cut a\n\
         # host off; set `policy drop` once the rules are reviewed.\n\
         table inet intraport {\n",
    );
    for (direction, name, hook) in [
        (Direction::Inbound, "input", "input"),
        (Direction::Outbound, "output", "output"),
        (Direction::Forward, "forward", "forward"),
    ] {
        let chain: Vec<&RequiredFlow> = flows.iter().filter(|f| f.direction == direction).collect();
        // A chain is needed for its own flows, or to let replies of the reverse ones in.
        if !flows
            .iter()
            .any(|f| f.direction == direction || reply_of(f.direction) == direction)
        {
            continue;
        }
        let _ = writeln!(
            out,
            "  chain {name} {{\n    type filter hook {hook} priority filter; policy accept;\n    ct state established,related accept"
        );
        for flow in chain {
            for (v6, family) in [(false, "ip"), (true, "ip6")] {
                let (src, dst) = same_family(flow, v6);
                if src.is_empty() || dst.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "    {family} saddr {} {family} daddr {} {} dport {} accept comment \"intraport {}\"",
                    nft_set(&src),
                    nft_set(&dst),
                    flow.transport,
                    flow.dports,
                    flow.row_id
                );
            }
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    RenderedRules {
        text: out,
        warnings: Vec::new(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NsgProperties {
    priority: u32,
    direction: &'static str,
    access: &'static str,
    protocol: &'static str,
    source_address_prefixes: Vec<String>,
    source_port_range: &'static str,
    destination_address_prefixes: Vec<String>,
    destination_port_range: String,
    description: String,
}

#[derive(Serialize)]
struct NsgRule {
    name: String,
    properties: NsgProperties,
}

/// NSG priorities allowed for user rules.
const NSG_FIRST_PRIORITY: u32 = 1000;
const NSG_LAST_PRIORITY: u32 = 4096;

fn nsg(flows: &[RequiredFlow]) -> Result<RenderedRules, Error> {
    let mut rules = Vec::new();
    let mut priority = NSG_FIRST_PRIORITY;
    for flow in flows {
        // An NSG sits on one side: a forward flow needs an outbound rule on the source's
        // NSG and an inbound rule on the destination's.
        let sides: &[&'static str] = match flow.direction {
            Direction::Outbound => &["Outbound"],
            Direction::Inbound => &["Inbound"],
            Direction::Forward => &["Outbound", "Inbound"],
        };
        for side in sides {
            if priority > NSG_LAST_PRIORITY {
                return Err(Error::input(
                    "arguments",
                    "--as-rules nsg",
                    format!(
                        "more than {} rules; narrow with --component or --role",
                        NSG_LAST_PRIORITY - NSG_FIRST_PRIORITY + 1
                    ),
                ));
            }
            rules.push(NsgRule {
                name: format!(
                    "intraport-{}-{}-{}",
                    flow.row_id,
                    flow.transport,
                    side.to_ascii_lowercase()
                ),
                properties: NsgProperties {
                    priority,
                    direction: side,
                    access: "Allow",
                    protocol: match flow.transport {
                        Transport::Tcp => "Tcp",
                        Transport::Udp => "Udp",
                    },
                    source_address_prefixes: flow.src.iter().map(|n| n.to_string()).collect(),
                    source_port_range: "*",
                    destination_address_prefixes: flow.dst.iter().map(|n| n.to_string()).collect(),
                    destination_port_range: flow.dports.to_string(),
                    description: format!(
                        "intraport {}: {} -> {}",
                        flow.row_id, flow.from_role, flow.to_role
                    ),
                },
            });
            priority += 1;
        }
    }
    let text = serde_json::to_string_pretty(&serde_json::json!({ "securityRules": rules }))
        .map_err(|e| Error::input("nsg rules", "json", e.to_string()))?;
    Ok(RenderedRules {
        text: text + "\n",
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn fixture() -> (PortMap, Hosts) {
        let map = PortMap::builtin().unwrap();
        let hosts = Hosts::parse(
            "connect-server = [\"10.0.0.5\", \"2001:db8:1::5\"]\ndomain-controller = [\"10.0.1.0/24\", \"2001:db8::10\"]\n\
             entra-id = [\"0.0.0.0/0\"]\ncrl-ocsp = [\"0.0.0.0/0\"]\n",
            "h.toml",
            &map,
        )
        .unwrap();
        (map, hosts)
    }

    #[test]
    fn flows_follow_the_chosen_role() {
        let (map, hosts) = fixture();
        let sel = Selection {
            components: vec!["connect-sync".into()],
            role: Some("domain-controller".into()),
            include_optional: false,
        };
        let flows = required_flows(&map, &hosts, &sel).unwrap();
        assert!(!flows.is_empty());
        assert!(flows.iter().all(|f| f.direction == Direction::Inbound));
        let dns: Vec<_> = flows
            .iter()
            .filter(|f| f.row_id == "connect-ad-dns")
            .collect();
        assert_eq!(dns.len(), 2, "tcp and udp");
        let rpc = flows
            .iter()
            .find(|f| f.row_id == "connect-ad-rpc-dynamic")
            .unwrap();
        assert_eq!(
            rpc.dports,
            PortRange {
                start: 49152,
                end: 65535
            }
        );
        assert!(
            !flows.iter().any(|f| f.row_id == "connect-ad-ldaps"),
            "optional"
        );

        let sel = Selection {
            role: Some("connect-server".into()),
            ..sel
        };
        let flows = required_flows(&map, &hosts, &sel).unwrap();
        assert!(flows.iter().all(|f| f.direction == Direction::Outbound));
        // Replies of outbound flows come back on INPUT.
        let r = render_rules(&flows, RuleFormat::Iptables).unwrap();
        assert!(
            r.text
                .contains("-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED")
        );
        assert!(!r.text.contains("-A INPUT -s"));
    }

    #[test]
    fn a_missing_role_is_an_error_naming_it() {
        let (map, hosts) = fixture();
        let sel = Selection {
            components: vec!["pta".into()],
            ..Selection::default()
        };
        let err = required_flows(&map, &hosts, &sel).unwrap_err().to_string();
        assert!(err.contains("pta-agent") && err.contains("h.toml"), "{err}");
    }

    #[test]
    fn iptables_rules_use_ranges_and_skip_ipv6_with_a_warning() {
        let (map, hosts) = fixture();
        let sel = Selection {
            components: vec!["connect-sync".into()],
            ..Selection::default()
        };
        let flows = required_flows(&map, &hosts, &sel).unwrap();
        let r = render_rules(&flows, RuleFormat::Iptables).unwrap();
        assert!(r.text.contains(
            "-A FORWARD -s 10.0.0.5/32 -d 10.0.1.0/24 -p tcp -m tcp --dport 49152:65535"
        ));
        assert!(!r.text.contains("2001:db8"));
        assert!(
            r.warnings.is_empty(),
            "every flow has an IPv4 pair: {:?}",
            r.warnings
        );
        assert!(r.text.ends_with("COMMIT\n"));
        let n = render_rules(&flows, RuleFormat::Nftables).unwrap();
        assert!(n.text.contains("ip6 saddr"), "{}", n.text);
        assert!(n.text.contains("dport 49152-65535"));
    }

    #[test]
    fn nsg_forward_flows_get_both_sides() {
        let (map, hosts) = fixture();
        let sel = Selection {
            components: vec!["connect-sync".into()],
            ..Selection::default()
        };
        let flows = required_flows(&map, &hosts, &sel).unwrap();
        let r = render_rules(&flows, RuleFormat::Nsg).unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
        let rules = v["securityRules"].as_array().unwrap();
        assert_eq!(rules.len(), flows.len() * 2);
        let mut prios: Vec<u64> = rules
            .iter()
            .map(|r| r["properties"]["priority"].as_u64().unwrap())
            .collect();
        prios.dedup();
        assert_eq!(prios.len(), rules.len(), "priorities unique");
    }
}
