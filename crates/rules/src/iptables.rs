//! Parser for `iptables-save` / `ip6tables-save` output (with or without `-c`).
//!
//! Hand-written: there is no maintained crate that parses iptables-save text into
//! match semantics, and the format is line-oriented with a small, fixed grammar.
//! Matches the analysis does not model are kept as `unknown` so the rule is treated
//! as matching an unknown subset, never as a proof.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::Error;
use crate::model::{
    Chain, Cond, CtState, Family, Field, IfPat, InputFormat, Location, NatTo, Rule, Ruleset, Table,
    TableKind, Target, Values, Verdict, addr_to_u128, net_range,
};

/// Targets that never end evaluation: the packet continues to the next rule.
const NON_TERMINAL_TARGETS: &[&str] = &[
    "LOG",
    "NFLOG",
    "ULOG",
    "TRACE",
    "AUDIT",
    "MARK",
    "CONNMARK",
    "CT",
    "TCPMSS",
    "DSCP",
    "TOS",
    "TTL",
    "HL",
    "CLASSIFY",
    "SET",
    "CHECKSUM",
    "NOTRACK",
    "SECMARK",
    "CONNSECMARK",
    "IDLETIMER",
    "LED",
    "RATEEST",
    "TEE",
];

/// Modules whose `--sport`/`--dport` mean source/destination port.
const PORT_MODULES: &[&str] = &["tcp", "udp", "sctp", "udplite", "dccp"];

struct Parser<'a> {
    file: &'a str,
    line: usize,
    family: Option<(Family, usize)>,
}

impl Parser<'_> {
    fn err(&self, token: impl std::fmt::Display, msg: impl std::fmt::Display) -> Error {
        Error::parse(self.file, self.line, token, msg)
    }

    fn note_family(&mut self, ip: IpAddr, token: &str) -> Result<(), Error> {
        let f = if ip.is_ipv4() { Family::V4 } else { Family::V6 };
        match self.family {
            None => {
                self.family = Some((f, self.line));
                Ok(())
            }
            Some((g, _)) if g == f => Ok(()),
            Some((g, at)) => Err(self.err(
                token,
                format!(
                    "{f:?} address in a {g:?} ruleset (family set by line {at}); iptables-save and ip6tables-save output must be audited separately"
                ),
            )),
        }
    }

    fn addr_list(&mut self, tok: &str) -> Result<Vec<(u128, u128)>, Error> {
        let mut out = Vec::new();
        for part in tok.split(',') {
            let net = if let Some((a, m)) = part.split_once('/') {
                let ip = IpAddr::from_str(a).map_err(|_| self.err(part, "expected an address"))?;
                let len = match u8::from_str(m) {
                    Ok(l) => l,
                    Err(_) => {
                        // A dotted netmask; only contiguous masks have a prefix length.
                        let mask = IpAddr::from_str(m)
                            .map_err(|_| self.err(part, "expected a prefix length or netmask"))?;
                        ipnet::ip_mask_to_prefix(mask)
                            .map_err(|_| self.err(part, "non-contiguous netmask"))?
                    }
                };
                IpNet::new(ip, len).map_err(|_| self.err(part, "prefix length too long"))?
            } else {
                let ip = IpAddr::from_str(part).map_err(|_| {
                    self.err(part, "expected an address (host names are not resolved)")
                })?;
                IpNet::from(ip)
            };
            self.note_family(net.addr(), part)?;
            out.push(net_range(net));
        }
        Ok(out)
    }

    fn addr_range(&mut self, tok: &str) -> Result<(u128, u128), Error> {
        let (a, b) = tok
            .split_once('-')
            .ok_or_else(|| self.err(tok, "expected FROM-TO address range"))?;
        let a = IpAddr::from_str(a).map_err(|_| self.err(tok, "expected an address"))?;
        let b = IpAddr::from_str(b).map_err(|_| self.err(tok, "expected an address"))?;
        self.note_family(a, tok)?;
        self.note_family(b, tok)?;
        let (lo, hi) = (addr_to_u128(a), addr_to_u128(b));
        if lo > hi {
            return Err(self.err(tok, "range start is above its end"));
        }
        Ok((lo, hi))
    }

    fn port_range(&self, tok: &str) -> Result<(u128, u128), Error> {
        let p = |s: &str| {
            if s.is_empty() {
                return Ok(None);
            }
            port_number(s)
                .map(Some)
                .ok_or_else(|| self.err(tok, "expected a port number or service name"))
        };
        let (lo, hi) = match tok.split_once(':') {
            Some((a, b)) => (p(a)?.unwrap_or(0), p(b)?.unwrap_or(65535)),
            None => {
                let v = p(tok)?.ok_or_else(|| self.err(tok, "expected a port"))?;
                (v, v)
            }
        };
        if lo > hi {
            return Err(self.err(tok, "port range start is above its end"));
        }
        Ok((u128::from(lo), u128::from(hi)))
    }

    fn port_list(&self, tok: &str) -> Result<Vec<(u128, u128)>, Error> {
        tok.split(',').map(|p| self.port_range(p)).collect()
    }

    fn states(&self, tok: &str, unknown: &mut Vec<String>) -> Vec<(u128, u128)> {
        let mut out = Vec::new();
        for s in tok.split(',') {
            match CtState::parse(s) {
                Some(st) => out.push((st as u128, st as u128)),
                // SNAT/DNAT states: not modelled, the rule matches an unknown subset.
                None => unknown.push(format!("state {s}")),
            }
        }
        out
    }

    fn nat_to(&self, tok: &str) -> Option<NatTo> {
        // Forms: ADDR, ADDR-ADDR, ADDR:PORT, ADDR:PORT-PORT, [V6]:PORT, :PORT.
        let (addr, port) = if let Some(rest) = tok.strip_prefix('[') {
            let (a, p) = rest.split_once(']')?;
            (a, p.strip_prefix(':'))
        } else if tok.matches(':').count() > 1 {
            (tok, None)
        } else {
            match tok.split_once(':') {
                Some((a, p)) => (a, Some(p)),
                None => (tok, None),
            }
        };
        let addrs = if addr.is_empty() {
            None
        } else {
            let (a, b) = addr.split_once('-').unwrap_or((addr, addr));
            let a = addr_to_u128(IpAddr::from_str(a).ok()?);
            let b = addr_to_u128(IpAddr::from_str(b).ok()?);
            Some((a.min(b), a.max(b)))
        };
        let ports = match port {
            None => None,
            Some(p) => Some(to_ports(p)?),
        };
        Some(NatTo { addrs, ports })
    }
}

fn to_ports(p: &str) -> Option<(u16, u16)> {
    let (a, b) = p.split_once('-').unwrap_or((p, p));
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A port number or one of the service names iptables prints for well-known ports.
fn port_number(s: &str) -> Option<u16> {
    if let Ok(v) = s.parse() {
        return Some(v);
    }
    Some(match s {
        "ssh" => 22,
        "telnet" => 23,
        "smtp" => 25,
        "domain" => 53,
        "http" => 80,
        "kerberos" => 88,
        "ntp" => 123,
        "ldap" => 389,
        "https" => 443,
        "microsoft-ds" => 445,
        "ldaps" => 636,
        _ => return None,
    })
}

/// A protocol name or number; `None` for `all`.
pub(crate) fn proto_number(s: &str) -> Option<Option<u8>> {
    if let Ok(v) = s.parse::<u8>() {
        return Some((v != 0).then_some(v));
    }
    Some(Some(match s.to_ascii_lowercase().as_str() {
        "all" => return Some(None),
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "udplite" => 136,
        _ => return None,
    }))
}

/// Split a line into tokens: whitespace-separated, with `"..."` quoting and
/// backslash escapes inside quotes, as iptables-save writes comments and prefixes.
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_tok = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_tok = true;
                loop {
                    match chars.next() {
                        None => return Err(cur),
                        Some('"') => break,
                        Some('\\') => {
                            if let Some(e) = chars.next() {
                                cur.push(e);
                            }
                        }
                        Some(o) => cur.push(o),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_tok {
                    out.push(std::mem::take(&mut cur));
                    in_tok = false;
                }
            }
            c => {
                in_tok = true;
                cur.push(c);
            }
        }
    }
    if in_tok {
        out.push(cur);
    }
    Ok(out)
}

fn table_kind(name: &str) -> TableKind {
    match name {
        "filter" => TableKind::Filter,
        "nat" => TableKind::Nat,
        _ => TableKind::Other,
    }
}

/// Parse `iptables-save` or `ip6tables-save` output. `file` names the input in
/// errors and findings.
pub fn parse(file: &str, text: &str) -> Result<Ruleset, Error> {
    let mut p = Parser {
        file,
        line: 0,
        family: None,
    };
    let mut tables: Vec<Table> = Vec::new();
    let mut open: Option<Table> = None;
    for (i, raw) in text.lines().enumerate() {
        p.line = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if let Some(t) = &open {
                return Err(p.err(line, format!("table `{}` is not COMMITted", t.name)));
            }
            open = Some(Table {
                name: name.to_string(),
                kind: table_kind(name),
                family: Family::V4,
                chains: Vec::new(),
            });
            continue;
        }
        if line == "COMMIT" {
            let t = open
                .take()
                .ok_or_else(|| p.err(line, "COMMIT outside a table"))?;
            tables.push(t);
            continue;
        }
        let Some(table) = open.as_mut() else {
            return Err(p.err(line, "expected `*table` before chains and rules"));
        };
        if let Some(decl) = line.strip_prefix(':') {
            let mut it = decl.split_whitespace();
            let name = it
                .next()
                .ok_or_else(|| p.err(line, "expected a chain name"))?;
            let policy = it
                .next()
                .ok_or_else(|| p.err(line, "expected a policy or `-`"))?;
            let policy = match policy {
                "-" => None,
                "ACCEPT" => Some(Verdict::Accept),
                "DROP" => Some(Verdict::Drop),
                other => return Err(p.err(other, "expected policy ACCEPT, DROP or `-`")),
            };
            if table.chains.iter().any(|c| c.name == name) {
                return Err(p.err(name, "chain declared twice"));
            }
            table.chains.push(Chain {
                name: name.to_string(),
                hook: policy.as_ref().map(|_| name.to_string()),
                policy,
                kind: None,
                rules: Vec::new(),
            });
            continue;
        }
        let tokens = tokenize(line).map_err(|t| p.err(t, "unterminated quote"))?;
        let (rule, chain) = parse_rule(&mut p, table, &tokens, line)?;
        if let Some(c) = table.chains.get_mut(chain) {
            c.rules.push(rule);
        }
    }
    if let Some(t) = open {
        return Err(p.err(
            format!("*{}", t.name),
            "table not terminated by COMMIT (truncated file?)",
        ));
    }
    let family = p.family.map_or(Family::V4, |(f, _)| f);
    for t in &mut tables {
        t.family = family;
    }
    Ok(Ruleset {
        file: file.to_string(),
        format: InputFormat::Iptables,
        tables,
    })
}

fn parse_rule(
    p: &mut Parser<'_>,
    table: &Table,
    tokens: &[String],
    line: &str,
) -> Result<(Rule, usize), Error> {
    let mut i = 0;
    let mut packets = None;
    if let Some(c) = tokens.first().and_then(|t| t.strip_prefix('[')) {
        let (pk, _) = c
            .trim_end_matches(']')
            .split_once(':')
            .ok_or_else(|| p.err(&tokens[0], "expected [packets:bytes]"))?;
        packets = Some(
            pk.parse()
                .map_err(|_| p.err(&tokens[0], "expected [packets:bytes]"))?,
        );
        i = 1;
    }
    match tokens.get(i).map(String::as_str) {
        Some("-A" | "--append") => {}
        Some(t) => return Err(p.err(t, "expected `-A CHAIN`, `:CHAIN`, `*table` or COMMIT")),
        None => return Err(p.err(line, "expected `-A CHAIN`")),
    }
    let chain_name = tokens
        .get(i + 1)
        .ok_or_else(|| p.err("-A", "expected a chain name"))?;
    let chain = table
        .chains
        .iter()
        .position(|c| &c.name == chain_name)
        .ok_or_else(|| p.err(chain_name, "chain not declared in this table"))?;
    i += 2;

    let mut conds = Vec::new();
    let mut unknown = Vec::new();
    let mut target = Target::None;
    let mut module: Option<&str> = None;
    let mut module_known = true;
    let mut neg = false;
    while i < tokens.len() {
        let tok = tokens[i].as_str();
        let value = |k: usize| {
            tokens
                .get(k)
                .map(String::as_str)
                .ok_or_else(|| p.err(tok, "expected a value after this option"))
        };
        if tok == "!" {
            neg = true;
            i += 1;
            continue;
        }
        let negated = std::mem::take(&mut neg);
        let mut push = |field, values| {
            conds.push(Cond {
                field,
                negated,
                values,
            })
        };
        match tok {
            "-s" | "--source" | "-d" | "--destination" => {
                let v = value(i + 1)?;
                let ranges = p.addr_list(v)?;
                let field = if tok.starts_with("-s") || tok == "--source" {
                    Field::Src
                } else {
                    Field::Dst
                };
                push(field, Values::Ranges(ranges));
                i += 2;
            }
            "-p" | "--protocol" => {
                let v = value(i + 1)?;
                match proto_number(v) {
                    Some(Some(n)) => {
                        push(Field::Proto, Values::Ranges(vec![(n.into(), n.into())]));
                    }
                    Some(None) => {
                        if negated {
                            push(Field::Proto, Values::Ranges(Vec::new()));
                        }
                    }
                    None => return Err(p.err(v, "unknown protocol")),
                }
                i += 2;
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let v = value(i + 1)?;
                let field = if tok.starts_with("-i") || tok == "--in-interface" {
                    Field::Iif
                } else {
                    Field::Oif
                };
                let pat = match v.strip_suffix('+') {
                    Some(prefix) => IfPat {
                        name: prefix.to_string(),
                        wildcard: true,
                    },
                    None => IfPat {
                        name: v.to_string(),
                        wildcard: false,
                    },
                };
                push(field, Values::Ifaces(vec![pat]));
                i += 2;
            }
            "-f" | "--fragment" => {
                unknown.push("fragment".to_string());
                i += 1;
            }
            "-c" | "--set-counters" => {
                packets = Some(
                    value(i + 1)?
                        .parse()
                        .map_err(|_| p.err(tok, "bad counter"))?,
                );
                i += 3;
            }
            "-m" | "--match" => {
                let m = value(i + 1)?;
                module = Some(m);
                module_known = matches!(
                    m,
                    "tcp"
                        | "udp"
                        | "sctp"
                        | "udplite"
                        | "multiport"
                        | "iprange"
                        | "conntrack"
                        | "state"
                        | "comment"
                );
                if !module_known {
                    unknown.push(format!("-m {m}"));
                }
                i += 2;
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                let name = value(i + 1)?;
                let opts = &tokens[i + 2..];
                let is_goto = tok == "-g" || tok == "--goto";
                target = parse_target(p, table, name, opts, is_goto)?;
                break;
            }
            opt if opt.starts_with("--") => {
                let known = module_known
                    && match opt {
                        "--sport" | "--source-port" | "--dport" | "--destination-port" => {
                            module.is_none_or(|m| PORT_MODULES.contains(&m))
                        }
                        "--sports" | "--source-ports" | "--dports" | "--destination-ports" => {
                            module == Some("multiport")
                        }
                        "--src-range" | "--dst-range" => module == Some("iprange"),
                        "--ctstate" => module == Some("conntrack"),
                        "--state" => module == Some("state"),
                        "--comment" => module == Some("comment"),
                        _ => false,
                    };
                if !known {
                    if module_known {
                        unknown.push(format!("{}{opt}", if negated { "! " } else { "" }));
                    }
                    // Skip the option's values: everything up to the next option.
                    i += 1;
                    while i < tokens.len() && tokens[i] != "!" && !tokens[i].starts_with('-') {
                        i += 1;
                    }
                    continue;
                }
                let v = value(i + 1)?;
                match opt {
                    "--sport" | "--source-port" => {
                        push(Field::Sport, Values::Ranges(vec![p.port_range(v)?]))
                    }
                    "--dport" | "--destination-port" => {
                        push(Field::Dport, Values::Ranges(vec![p.port_range(v)?]))
                    }
                    "--sports" | "--source-ports" => {
                        push(Field::Sport, Values::Ranges(p.port_list(v)?))
                    }
                    "--dports" | "--destination-ports" => {
                        push(Field::Dport, Values::Ranges(p.port_list(v)?))
                    }
                    "--src-range" => {
                        let r = p.addr_range(v)?;
                        push(Field::Src, Values::Ranges(vec![r]));
                    }
                    "--dst-range" => {
                        let r = p.addr_range(v)?;
                        push(Field::Dst, Values::Ranges(vec![r]));
                    }
                    "--ctstate" | "--state" => {
                        let s = p.states(v, &mut unknown);
                        push(Field::State, Values::Ranges(s));
                    }
                    _ => {} // --comment: documentation only.
                }
                i += 2;
            }
            other => {
                if !module_known {
                    // A value of an unknown module's option.
                    i += 1;
                    continue;
                }
                return Err(p.err(other, "unexpected token in rule"));
            }
        }
    }
    let rule = Rule {
        loc: Location {
            file: p.file.to_string(),
            line: Some(p.line),
            name: None,
        },
        text: line.to_string(),
        conds,
        unknown,
        target,
        packets,
    };
    Ok((rule, chain))
}

fn parse_target(
    p: &Parser<'_>,
    table: &Table,
    name: &str,
    opts: &[String],
    is_goto: bool,
) -> Result<Target, Error> {
    let opt = |k: &str| {
        opts.iter()
            .position(|o| o == k)
            .and_then(|j| opts.get(j + 1))
            .map(String::as_str)
    };
    if table
        .chains
        .iter()
        .any(|c| c.name == name && c.policy.is_none())
    {
        return Ok(if is_goto {
            Target::Goto(name.to_string())
        } else {
            Target::Jump(name.to_string())
        });
    }
    if is_goto {
        return Err(p.err(name, "goto target is not a user chain of this table"));
    }
    let verdict = |v| Target::Verdict {
        verdict: v,
        nat_to: None,
    };
    Ok(match name {
        "ACCEPT" => verdict(Verdict::Accept),
        "DROP" => verdict(Verdict::Drop),
        "REJECT" => verdict(Verdict::Reject),
        "RETURN" => Target::Return,
        "DNAT" => {
            let to = opt("--to-destination").unwrap_or_default();
            Target::Verdict {
                verdict: Verdict::Dnat(to.to_string()),
                nat_to: p.nat_to(to),
            }
        }
        "SNAT" => {
            let to = opt("--to-source").unwrap_or_default();
            Target::Verdict {
                verdict: Verdict::Snat(to.to_string()),
                nat_to: p.nat_to(to),
            }
        }
        "MASQUERADE" => verdict(Verdict::Masquerade),
        "REDIRECT" => {
            let to = opt("--to-ports").unwrap_or_default();
            Target::Verdict {
                verdict: Verdict::Redirect(to.to_string()),
                nat_to: to_ports(to).map(|ports| NatTo {
                    addrs: None,
                    ports: Some(ports),
                }),
            }
        }
        n if NON_TERMINAL_TARGETS.contains(&n) => Target::Continue(n.to_string()),
        n => verdict(Verdict::Unknown(n.to_string())),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tokenizer_handles_quotes_and_escapes() {
        let t = tokenize(r#"-A INPUT -m comment --comment "a \"b\" c" -j ACCEPT"#).unwrap();
        assert_eq!(t[5], r#"a "b" c"#);
        assert!(tokenize(r#"-A INPUT --comment "open"#).is_err());
    }

    #[test]
    fn nat_destinations_are_read() {
        let p = Parser {
            file: "f",
            line: 1,
            family: None,
        };
        let v4 = |s: &str| addr_to_u128(IpAddr::from_str(s).unwrap());
        let t = p.nat_to("10.0.0.5:80").unwrap();
        assert_eq!(t.addrs, Some((v4("10.0.0.5"), v4("10.0.0.5"))));
        assert_eq!(t.ports, Some((80, 80)));
        let t = p.nat_to("10.0.0.5-10.0.0.9:80-90").unwrap();
        assert_eq!(t.addrs, Some((v4("10.0.0.5"), v4("10.0.0.9"))));
        assert_eq!(t.ports, Some((80, 90)));
        let t = p.nat_to("[2001:db8::1]:443").unwrap();
        assert_eq!(t.addrs, Some((v4("2001:db8::1"), v4("2001:db8::1"))));
        let t = p.nat_to("2001:db8::1").unwrap();
        assert_eq!(t.ports, None);
    }
}
