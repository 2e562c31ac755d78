//! Parser for Azure network security group JSON as `az network nsg show` exports
//! it (rule fields at the top level), or as ARM templates write it (fields under
//! `properties`).
//!
//! Each direction becomes a base chain (`Inbound`, `Outbound`) of rules in priority
//! order, custom rules first and the default rules (65000+) last: those of the
//! export's `defaultSecurityRules` (`properties.defaultSecurityRules` in the REST
//! form), or Azure's six when the export leaves them out (AllowVnetInBound,
//! AllowAzureLoadBalancerInBound, DenyAllInBound, AllowVnetOutBound,
//! AllowInternetOutBound, DenyAllOutBound; priorities 65000, 65001, 65500).
//!
//! Three service tags are address sets: `VirtualNetwork` is the virtual network's
//! address space as given (`--vnet-address-space`), or by default the RFC 1918
//! blocks (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16), plus the platform address
//! 168.63.129.16 in both cases (Azure counts the VNet, its peerings, the connected
//! on-premises networks and that address in the tag); `Internet` is every address
//! outside `VirtualNetwork`; `AzureLoadBalancer` is 168.63.129.16. Other service
//! tags and application security groups are opaque named sets (see the compile
//! module).

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde_json::Value;

use crate::error::Error;
use crate::model::{
    Chain, Cond, Family, Field, InputFormat, Location, Rule, Ruleset, Table, TableKind, Target,
    Values, Verdict, net_range,
};

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    /// The line where a rule's name appears, so findings point into the file.
    fn line_of(&self, name: &str) -> usize {
        let needle = format!("\"{name}\"");
        self.text
            .find(&needle)
            .map_or(1, |at| self.text[..at].matches('\n').count() + 1)
    }

    fn err(&self, rule: &str, token: impl std::fmt::Display, msg: impl std::fmt::Display) -> Error {
        Error::parse(self.file, self.line_of(rule), token, msg)
    }
}

fn field<'v>(r: &'v Value, k: &str) -> Option<&'v Value> {
    r.get("properties")
        .and_then(|p| p.get(k))
        .or_else(|| r.get(k))
}

fn text_field<'v>(r: &'v Value, k: &str) -> Option<&'v str> {
    field(r, k).and_then(Value::as_str)
}

/// The singular field, or the plural list when it is non-empty.
fn values(r: &Value, one: &str, many: &str) -> Vec<String> {
    if let Some(list) = field(r, many).and_then(Value::as_array)
        && !list.is_empty()
    {
        return list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
    }
    text_field(r, one)
        .map(|s| vec![s.to_string()])
        .unwrap_or_default()
}

fn is_any(s: &str) -> bool {
    matches!(s, "*" | "Any" | "any" | "0.0.0.0/0")
}

/// The default `VirtualNetwork` address space: the RFC 1918 blocks.
pub const DEFAULT_VNET: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// Azure's platform address (DHCP, DNS, health probes): in `VirtualNetwork`, and
/// all of `AzureLoadBalancer`.
const PLATFORM: &str = "168.63.129.16/32";

/// The default rules Azure adds to every NSG, as an export lists them.
fn default_rules() -> Vec<Value> {
    let rule = |name: &str, prio: u64, dir: &str, access: &str, src: &str, dst: &str| {
        serde_json::json!({
            "name": name, "priority": prio, "direction": dir, "access": access,
            "protocol": "*", "sourceAddressPrefix": src, "destinationAddressPrefix": dst,
            "sourcePortRange": "*", "destinationPortRange": "*",
        })
    };
    vec![
        rule(
            "AllowVnetInBound",
            65000,
            "Inbound",
            "Allow",
            "VirtualNetwork",
            "VirtualNetwork",
        ),
        rule(
            "AllowAzureLoadBalancerInBound",
            65001,
            "Inbound",
            "Allow",
            "AzureLoadBalancer",
            "*",
        ),
        rule("DenyAllInBound", 65500, "Inbound", "Deny", "*", "*"),
        rule(
            "AllowVnetOutBound",
            65000,
            "Outbound",
            "Allow",
            "VirtualNetwork",
            "VirtualNetwork",
        ),
        rule(
            "AllowInternetOutBound",
            65001,
            "Outbound",
            "Allow",
            "*",
            "Internet",
        ),
        rule("DenyAllOutBound", 65500, "Outbound", "Deny", "*", "*"),
    ]
}

/// Parse an NSG export, `VirtualNetwork` being the RFC 1918 default. `file` names
/// it in errors and findings.
pub fn parse(file: &str, text: &str) -> Result<Ruleset, Error> {
    parse_with(file, text, &[])
}

/// Parse an NSG export with the virtual network's address space (`vnet`; empty:
/// the RFC 1918 default).
pub fn parse_with(file: &str, text: &str, vnet: &[IpNet]) -> Result<Ruleset, Error> {
    let default_vnet: Vec<IpNet> = DEFAULT_VNET.iter().filter_map(|n| n.parse().ok()).collect();
    let mut vnet_space: Vec<(u128, u128)> = if vnet.is_empty() { &default_vnet } else { vnet }
        .iter()
        .map(|n| net_range(n.trunc()))
        .collect();
    let platform = PLATFORM.parse::<IpNet>().map(net_range).ok();
    vnet_space.extend(platform);
    let all = vec![(0, u128::MAX)];
    let tags = Tags {
        internet: crate::addrtype::minus(all, &vnet_space),
        load_balancer: platform.into_iter().collect(),
        vnet: vnet_space,
    };
    let cx = Ctx { file, text };
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        Error::parse(
            file,
            e.line(),
            format!("column {}", e.column()),
            format!("not JSON: {e}"),
        )
    })?;
    let nsg_name = doc.get("name").and_then(Value::as_str).unwrap_or("nsg");
    let custom = field(&doc, "securityRules").and_then(Value::as_array);
    let defaults = field(&doc, "defaultSecurityRules").and_then(Value::as_array);
    if custom.is_none() && defaults.is_none() {
        return Err(Error::parse(
            file,
            1,
            "securityRules",
            "expected an NSG with securityRules and/or defaultSecurityRules",
        ));
    }
    let mut family = Family::V4;
    let mut parsed: Vec<(String, u64, Rule)> = Vec::new();
    let implied = if defaults.is_none() {
        default_rules()
    } else {
        Vec::new()
    };
    let given = custom.into_iter().chain(defaults).flatten();
    for (r, is_implied) in given
        .map(|r| (r, false))
        .chain(implied.iter().map(|r| (r, true)))
    {
        let name = text_field(r, "name").unwrap_or("(unnamed)").to_string();
        let (dir, prio, mut rule) = parse_rule(&cx, &name, r, &mut family, &tags)?;
        if is_implied {
            // Not in the file: named, without a line.
            rule.loc.line = None;
            rule.loc.name = Some(format!("{name} (Azure default, not in the export)"));
        }
        if let Some((_, _, other)) = parsed.iter().find(|(d, p, _)| *d == dir && *p == prio) {
            return Err(cx.err(
                &name,
                prio,
                format!(
                    "priority {prio} used twice in direction {dir} (also by {})",
                    other.loc.name.clone().unwrap_or_default()
                ),
            ));
        }
        parsed.push((dir, prio, rule));
    }
    parsed.sort_by_key(|(_, p, _)| *p);
    let chain = |dir: &str| Chain {
        name: dir.to_string(),
        hook: Some(dir.to_string()),
        // The default DenyAll rules end every direction; nothing falls off.
        policy: Some(Verdict::Unknown("end of rules".into())),
        kind: None,
        rules: parsed
            .iter()
            .filter(|(d, _, _)| d == dir)
            .map(|(_, _, r)| r.clone())
            .collect(),
    };
    Ok(Ruleset {
        file: file.to_string(),
        format: InputFormat::Nsg,
        tables: vec![Table {
            name: format!("nsg {nsg_name}"),
            kind: TableKind::Filter,
            family,
            chains: vec![chain("Inbound"), chain("Outbound")],
        }],
    })
}

/// The service tags that are address sets.
struct Tags {
    vnet: Vec<(u128, u128)>,
    internet: Vec<(u128, u128)>,
    load_balancer: Vec<(u128, u128)>,
}

impl Tags {
    fn ranges(&self, tag: &str) -> Option<&[(u128, u128)]> {
        Some(match tag.to_ascii_lowercase().as_str() {
            "virtualnetwork" => &self.vnet,
            "internet" => &self.internet,
            "azureloadbalancer" => &self.load_balancer,
            _ => return None,
        })
    }
}

fn parse_rule(
    cx: &Ctx<'_>,
    name: &str,
    r: &Value,
    family: &mut Family,
    known_tags: &Tags,
) -> Result<(String, u64, Rule), Error> {
    let prio = field(r, "priority")
        .and_then(Value::as_u64)
        .ok_or_else(|| cx.err(name, "priority", "expected a numeric priority"))?;
    let dir = match text_field(r, "direction") {
        Some(d) if d.eq_ignore_ascii_case("inbound") => "Inbound",
        Some(d) if d.eq_ignore_ascii_case("outbound") => "Outbound",
        other => {
            return Err(cx.err(
                name,
                other.unwrap_or("direction"),
                "expected direction Inbound or Outbound",
            ));
        }
    };
    let verdict = match text_field(r, "access") {
        Some(a) if a.eq_ignore_ascii_case("allow") => Verdict::Accept,
        Some(a) if a.eq_ignore_ascii_case("deny") => Verdict::Drop,
        other => {
            return Err(cx.err(
                name,
                other.unwrap_or("access"),
                "expected access Allow or Deny",
            ));
        }
    };
    let mut conds = Vec::new();
    let mut unknown = Vec::new();
    let proto = text_field(r, "protocol").unwrap_or("*");
    let p = match proto.to_ascii_lowercase().as_str() {
        "*" | "any" => None,
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "esp" => Some(50),
        "ah" => Some(51),
        _ => {
            return Err(cx.err(
                name,
                proto,
                "expected protocol Tcp, Udp, Icmp, Esp, Ah or *",
            ));
        }
    };
    if let Some(p) = p {
        conds.push(Cond {
            field: Field::Proto,
            negated: false,
            values: Values::Ranges(vec![(p, p)]),
        });
    }
    for (fieldname, one, many) in [
        (Field::Sport, "sourcePortRange", "sourcePortRanges"),
        (
            Field::Dport,
            "destinationPortRange",
            "destinationPortRanges",
        ),
    ] {
        let vals = values(r, one, many);
        if vals.iter().any(|v| v == "*") || vals.is_empty() {
            continue;
        }
        let mut ranges = Vec::new();
        for v in &vals {
            let (a, b) = v.split_once('-').unwrap_or((v, v));
            let (Ok(lo), Ok(hi)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) else {
                return Err(cx.err(name, v, format!("expected a port or LOW-HIGH in {one}")));
            };
            if lo > hi {
                return Err(cx.err(name, v, "port range start is above its end"));
            }
            ranges.push((u128::from(lo), u128::from(hi)));
        }
        conds.push(Cond {
            field: fieldname,
            negated: false,
            values: Values::Ranges(ranges),
        });
    }
    for (fieldname, one, many, asg) in [
        (
            Field::Src,
            "sourceAddressPrefix",
            "sourceAddressPrefixes",
            "sourceApplicationSecurityGroups",
        ),
        (
            Field::Dst,
            "destinationAddressPrefix",
            "destinationAddressPrefixes",
            "destinationApplicationSecurityGroups",
        ),
    ] {
        let mut vals = values(r, one, many);
        // Application security groups are named sets like service tags.
        if let Some(groups) = field(r, asg).and_then(Value::as_array) {
            vals.extend(
                groups
                    .iter()
                    .filter_map(|g| g.get("id").and_then(Value::as_str))
                    .map(|id| format!("asg:{}", id.rsplit('/').next().unwrap_or(id))),
            );
        }
        if vals.is_empty() || vals.iter().any(|v| is_any(v)) {
            continue;
        }
        let mut ranges = Vec::new();
        let mut tags = Vec::new();
        for v in &vals {
            let net = IpNet::from_str(v)
                .ok()
                .or_else(|| IpAddr::from_str(v).ok().map(IpNet::from));
            match net {
                Some(n) => {
                    if n.addr().is_ipv6() {
                        *family = Family::Inet;
                    }
                    ranges.push(net_range(n.trunc()));
                }
                None => match known_tags.ranges(v) {
                    Some(rs) => ranges.extend_from_slice(rs),
                    None => tags.push(v.clone()),
                },
            }
        }
        match (ranges.is_empty(), tags.is_empty()) {
            (false, true) => conds.push(Cond {
                field: fieldname,
                negated: false,
                values: Values::Ranges(ranges),
            }),
            (true, false) => conds.push(Cond {
                field: fieldname,
                negated: false,
                values: Values::Tags(tags),
            }),
            // A union across prefixes and tags is not one condition: keep the
            // prefixes' side unknown rather than guess.
            _ => unknown.push(format!(
                "{one}: prefixes mixed with tags {}",
                tags.join(",")
            )),
        }
    }
    let summary = format!(
        "{prio} {dir} {} {proto} {} -> {} dport {}",
        text_field(r, "access").unwrap_or(""),
        values(r, "sourceAddressPrefix", "sourceAddressPrefixes").join(","),
        values(r, "destinationAddressPrefix", "destinationAddressPrefixes").join(","),
        values(r, "destinationPortRange", "destinationPortRanges").join(","),
    );
    let rule = Rule {
        loc: Location {
            file: cx.file.to_string(),
            line: Some(cx.line_of(name)),
            name: Some(name.to_string()),
        },
        text: summary,
        conds,
        unknown,
        target: Target::Verdict {
            verdict,
            nat_to: None,
        },
        packets: None,
    };
    Ok((dir.to_string(), prio, rule))
}
