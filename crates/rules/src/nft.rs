//! Parser for `nft -j list ruleset` JSON (libnftables JSON schema 1).
//!
//! Rules are named by `family table chain handle N` (the JSON is one line, so lines
//! say nothing). Expressions the analysis does not model (named sets, limits,
//! `xt` compat matches, marks, ...) make the rule an unknown subset.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde_json::Value;

use crate::addrtype::AddrType;
use crate::error::Error;
use crate::iptables::proto_number;
use crate::model::{
    Chain, Cond, CtState, Family, Field, IfPat, InputFormat, Location, NatTo, Rule, Ruleset, Table,
    TableKind, Target, V4_BASE, Values, Verdict, addr_to_u128, net_range, reject_kind,
};

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, token: impl std::fmt::Display, msg: impl std::fmt::Display) -> Error {
        Error::parse(self.file, 1, token, msg)
    }
}

fn s<'v>(v: &'v Value, k: &str) -> Option<&'v str> {
    v.get(k).and_then(Value::as_str)
}

/// Parse `nft -j list ruleset` output.
pub fn parse(file: &str, text: &str) -> Result<Ruleset, Error> {
    let cx = Ctx { file };
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        Error::parse(
            file,
            e.line(),
            format!("column {}", e.column()),
            format!("not JSON: {e}"),
        )
    })?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| cx.err("nftables", "expected an object with an `nftables` array"))?;
    let mut tables: Vec<Table> = Vec::new();
    let find = |tables: &[Table], fam: &str, name: &str| {
        tables
            .iter()
            .position(|t| t.name == format!("{fam} {name}"))
    };
    for item in items {
        if let Some(t) = item.get("table") {
            let (fam, name) = (s(t, "family").unwrap_or(""), s(t, "name").unwrap_or(""));
            let (family, kind) = match fam {
                "ip" => (Family::V4, TableKind::Filter),
                "ip6" => (Family::V6, TableKind::Filter),
                "inet" => (Family::Inet, TableKind::Filter),
                _ => (Family::Inet, TableKind::Other),
            };
            tables.push(Table {
                name: format!("{fam} {name}"),
                kind,
                family,
                chains: Vec::new(),
            });
        } else if let Some(c) = item.get("chain") {
            let (fam, tname, name) = (
                s(c, "family").unwrap_or(""),
                s(c, "table").unwrap_or(""),
                s(c, "name").unwrap_or(""),
            );
            let ti = find(&tables, fam, tname)
                .ok_or_else(|| cx.err(format!("{fam} {tname}"), "chain of an unknown table"))?;
            let hook = s(c, "hook").map(str::to_string);
            let policy = hook.as_ref().map(|_| match s(c, "policy") {
                Some("drop") => Verdict::Drop,
                _ => Verdict::Accept,
            });
            let kind = match s(c, "type") {
                Some("filter") => Some(TableKind::Filter),
                Some("nat") => Some(TableKind::Nat),
                Some(_) => Some(TableKind::Other),
                None => None,
            };
            if let Some(t) = tables.get_mut(ti) {
                t.chains.push(Chain {
                    name: name.to_string(),
                    hook: hook.map(|h| h.to_ascii_uppercase()),
                    policy,
                    kind: if t.kind == TableKind::Other {
                        Some(TableKind::Other)
                    } else {
                        kind
                    },
                    rules: Vec::new(),
                });
            }
        } else if let Some(r) = item.get("rule") {
            let (fam, tname, cname) = (
                s(r, "family").unwrap_or(""),
                s(r, "table").unwrap_or(""),
                s(r, "chain").unwrap_or(""),
            );
            let ti = find(&tables, fam, tname)
                .ok_or_else(|| cx.err(format!("{fam} {tname}"), "rule of an unknown table"))?;
            let handle = r.get("handle").and_then(Value::as_u64).unwrap_or(0);
            let label = format!("{fam} {tname} {cname} handle {handle}");
            let Some(table) = tables.get_mut(ti) else {
                continue;
            };
            let family = table.family;
            let ci = table
                .chains
                .iter()
                .position(|c| c.name == cname)
                .ok_or_else(|| cx.err(&label, "rule of an unknown chain"))?;
            let exprs = r
                .get("expr")
                .and_then(Value::as_array)
                .ok_or_else(|| cx.err(&label, "rule without an `expr` array"))?;
            let rules = parse_rule(&cx, &label, family, exprs)?;
            if let Some(c) = table.chains.get_mut(ci) {
                c.rules.extend(rules);
            }
        }
    }
    // Jumps name chains of the same table; check they exist so a typo is an error.
    for t in &tables {
        for c in &t.chains {
            for r in &c.rules {
                if let Target::Jump(n) | Target::Goto(n) = &r.target
                    && !t.chains.iter().any(|x| &x.name == n)
                {
                    return Err(cx.err(
                        r.loc.name.clone().unwrap_or_default(),
                        format!("jump to unknown chain `{n}`"),
                    ));
                }
            }
        }
    }
    Ok(Ruleset {
        file: file.to_string(),
        format: InputFormat::Nftables,
        tables,
    })
}

/// One value of a match's right-hand side, as ranges of the field's numbering.
fn ranges(v: &Value, field: Field, out: &mut Vec<(u128, u128)>) -> Option<()> {
    match v {
        Value::Number(n) => {
            let n = u128::from(n.as_u64()?);
            out.push((n, n));
        }
        Value::String(t) => match field {
            Field::Src | Field::Dst => {
                let ip = IpAddr::from_str(t).ok()?;
                out.push(net_range(IpNet::from(ip)));
            }
            Field::Proto => {
                let p = u128::from(proto_number(t)??);
                out.push((p, p));
            }
            Field::State => {
                let st = CtState::parse(t)? as u128;
                out.push((st, st));
            }
            Field::Sport | Field::Dport => {
                let p: u128 = t.parse().ok()?;
                out.push((p, p));
            }
            Field::Iif | Field::Oif => return None,
        },
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = IpAddr::from_str(s(p, "addr")?).ok()?;
                let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
                out.push(net_range(IpNet::new(addr, len).ok()?.trunc()));
            } else if let Some(r) = o.get("range").and_then(Value::as_array) {
                let mut lo = Vec::new();
                let mut hi = Vec::new();
                ranges(r.first()?, field, &mut lo)?;
                ranges(r.get(1)?, field, &mut hi)?;
                out.push((lo.first()?.0, hi.first()?.1));
            } else if let Some(set) = o.get("set") {
                match set {
                    Value::Array(xs) => {
                        for x in xs {
                            ranges(x, field, out)?;
                        }
                    }
                    x => ranges(x, field, out)?,
                }
            } else {
                return None;
            }
        }
        Value::Array(xs) => {
            for x in xs {
                ranges(x, field, out)?;
            }
        }
        _ => return None,
    }
    Some(())
}

fn ifaces(v: &Value, out: &mut Vec<IfPat>) -> Option<()> {
    match v {
        Value::String(n) => out.push(match n.strip_suffix('*') {
            Some(p) if !n.ends_with("\\*") => IfPat {
                name: p.to_string(),
                wildcard: true,
            },
            _ => IfPat {
                name: n.clone(),
                wildcard: false,
            },
        }),
        Value::Object(o) => match o.get("set")? {
            Value::Array(xs) => {
                for x in xs {
                    ifaces(x, out)?;
                }
            }
            x => ifaces(x, out)?,
        },
        Value::Array(xs) => {
            for x in xs {
                ifaces(x, out)?;
            }
        }
        _ => return None,
    }
    Some(())
}

const V4_ALL: (u128, u128) = (V4_BASE, V4_BASE | 0xffff_ffff);

/// The conditions of one `match` expression, or `None` when not modelled.
fn match_conds(m: &Value, family: Family) -> Option<Vec<Cond>> {
    let op = s(m, "op")?;
    let left = m.get("left")?;
    let right = m.get("right")?;
    let mut out = Vec::new();
    let (field, values): (Field, Values) = if let Some(p) = left.get("payload") {
        let proto = s(p, "protocol")?;
        let f = s(p, "field")?;
        match (proto, f) {
            ("ip" | "ip6", "saddr" | "daddr") => {
                let field = if f == "saddr" { Field::Src } else { Field::Dst };
                if family == Family::Inet {
                    // `ip saddr` also says the packet is IPv4 (and `ip6` IPv6).
                    let fam = if proto == "ip" {
                        vec![V4_ALL]
                    } else {
                        vec![(0, V4_BASE - 1), ((V4_BASE | 0xffff_ffff) + 1, u128::MAX)]
                    };
                    out.push(Cond {
                        field,
                        negated: false,
                        values: Values::Ranges(fam),
                    });
                }
                let mut r = Vec::new();
                ranges(right, Field::Src, &mut r)?;
                (field, Values::Ranges(r))
            }
            ("ip", "protocol") | ("ip6", "nexthdr") => {
                let mut r = Vec::new();
                ranges(right, Field::Proto, &mut r)?;
                (Field::Proto, Values::Ranges(r))
            }
            ("tcp" | "udp" | "sctp" | "udplite" | "th", "sport" | "dport") => {
                let protos: Vec<u128> = match proto {
                    "tcp" => vec![6],
                    "udp" => vec![17],
                    "sctp" => vec![132],
                    "udplite" => vec![136],
                    _ => vec![6, 17, 33, 132, 136],
                };
                out.push(Cond {
                    field: Field::Proto,
                    negated: false,
                    values: Values::Ranges(protos.iter().map(|&p| (p, p)).collect()),
                });
                let mut r = Vec::new();
                ranges(right, Field::Dport, &mut r)?;
                let field = if f == "sport" {
                    Field::Sport
                } else {
                    Field::Dport
                };
                (field, Values::Ranges(r))
            }
            _ => return None,
        }
    } else if let Some(meta) = left.get("meta") {
        match s(meta, "key")? {
            "l4proto" => {
                let mut r = Vec::new();
                ranges(right, Field::Proto, &mut r)?;
                (Field::Proto, Values::Ranges(r))
            }
            "iifname" | "oifname" => {
                let mut pats = Vec::new();
                ifaces(right, &mut pats)?;
                let field = if s(meta, "key") == Some("iifname") {
                    Field::Iif
                } else {
                    Field::Oif
                };
                (field, Values::Ifaces(pats))
            }
            // `meta protocol` is the ethertype (`ip`, `ip6`), `meta nfproto` the
            // netfilter family (`ipv4`, `ipv6`): for IP packets the same split.
            "nfproto" | "protocol" => {
                let r = match right.as_str()? {
                    "ipv4" | "ip" => vec![V4_ALL],
                    "ipv6" | "ip6" => {
                        vec![(0, V4_BASE - 1), ((V4_BASE | 0xffff_ffff) + 1, u128::MAX)]
                    }
                    _ => return None,
                };
                (Field::Src, Values::Ranges(r))
            }
            _ => return None,
        }
    } else if let Some(fib) = left.get("fib") {
        // `fib daddr type local`: the address type of the destination (or source)
        // in the routing table, not limited to an interface.
        if s(fib, "result")? != "type" {
            return None;
        }
        let flags: Vec<&str> = match fib.get("flags")? {
            Value::String(f) => vec![f.as_str()],
            Value::Array(fs) => fs.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        let field = match flags.as_slice() {
            ["daddr"] => Field::Dst,
            ["saddr"] => Field::Src,
            _ => return None,
        };
        let names: Vec<&Value> = match right {
            Value::Object(o) => match o.get("set")? {
                Value::Array(xs) => xs.iter().collect(),
                x => vec![x],
            },
            x => vec![x],
        };
        let mut types = Vec::new();
        for n in names {
            types.push(AddrType::parse(n.as_str()?)?);
        }
        (field, Values::AddrTypes(types))
    } else if let Some(ct) = left.get("ct") {
        if s(ct, "key")? != "state" {
            return None;
        }
        let mut r = Vec::new();
        ranges(right, Field::State, &mut r)?;
        (Field::State, Values::Ranges(r))
    } else {
        return None;
    };
    let (negated, values) = match (op, values) {
        ("==" | "in", v) => (false, v),
        ("!=", v) => (true, v),
        (cmp @ ("<" | "<=" | ">" | ">="), Values::Ranges(r)) if r.len() == 1 => {
            let v = r.first()?.0;
            let max = match field {
                Field::Sport | Field::Dport => 65535,
                Field::Proto => 255,
                _ => return None,
            };
            let range = match cmp {
                "<" => (0, v.checked_sub(1)?),
                "<=" => (0, v),
                ">" => (v + 1, max),
                _ => (v, max),
            };
            (false, Values::Ranges(vec![range]))
        }
        _ => return None,
    };
    out.push(Cond {
        field,
        negated,
        values,
    });
    Some(out)
}

fn nat_to(v: &Value) -> Option<NatTo> {
    let addrs = match v.get("addr") {
        Some(Value::String(a)) => {
            let a = addr_to_u128(IpAddr::from_str(a).ok()?);
            Some((a, a))
        }
        Some(_) => return None,
        None => None,
    };
    let ports = match v.get("port") {
        Some(Value::Number(n)) => {
            let p = u16::try_from(n.as_u64()?).ok()?;
            Some((p, p))
        }
        Some(Value::Object(o)) => {
            let r = o.get("range")?.as_array()?;
            let lo = u16::try_from(r.first()?.as_u64()?).ok()?;
            let hi = u16::try_from(r.get(1)?.as_u64()?).ok()?;
            Some((lo, hi))
        }
        Some(_) => return None,
        None => None,
    };
    Some(NatTo { addrs, ports })
}

/// One rule's expressions as model rules: one, or for a verdict map (`ct state
/// vmap { established : accept, invalid : drop }`) one per element, each matching
/// the rule's conditions and its key, in the map's order (the keys of a map do not
/// overlap, so the order changes nothing). A packet whose key is in no element
/// goes on to the next rule.
fn parse_rule(
    cx: &Ctx<'_>,
    label: &str,
    family: Family,
    exprs: &[Value],
) -> Result<Vec<Rule>, Error> {
    let mut conds = Vec::new();
    let mut unknown = Vec::new();
    let mut target = Target::None;
    let mut packets = None;
    let mut vmap: Option<(&Value, &Vec<Value>)> = None;
    for e in exprs {
        let Some((key, body)) = e.as_object().and_then(|o| o.iter().next()) else {
            return Err(cx.err(label, "expected an expression object"));
        };
        let verdict = |v| Target::Verdict {
            verdict: v,
            nat_to: None,
        };
        match key.as_str() {
            "match" => match match_conds(body, family) {
                Some(c) => conds.extend(c),
                None => unknown.push(format!("match {}", body.get("left").unwrap_or(body))),
            },
            "counter" => packets = body.get("packets").and_then(Value::as_u64),
            "accept" => target = verdict(Verdict::Accept),
            "drop" => target = verdict(Verdict::Drop),
            "reject" => {
                // `{"type": "tcp reset"}`, `{"type": "icmpx", "expr":
                // "admin-prohibited"}`, or null for the default.
                let with = match (s(body, "type"), s(body, "expr")) {
                    (Some(t), None) if t.starts_with("tcp") => Some("tcp-reset"),
                    (_, Some(code)) => Some(code),
                    _ => None,
                };
                target = verdict(Verdict::Reject(reject_kind(with)));
            }
            "return" => target = Target::Return,
            "jump" | "goto" => {
                let name = s(body, "target")
                    .ok_or_else(|| cx.err(label, format!("{key} without a target")))?
                    .to_string();
                target = if key == "jump" {
                    Target::Jump(name)
                } else {
                    Target::Goto(name)
                };
            }
            "dnat" | "snat" => {
                let shown = body.get("addr").map(|a| a.to_string()).unwrap_or_default();
                let port = body
                    .get("port")
                    .map(|p| format!(":{p}"))
                    .unwrap_or_default();
                let to = format!("{}{port}", shown.trim_matches('"'));
                target = Target::Verdict {
                    verdict: if key == "dnat" {
                        Verdict::Dnat(to)
                    } else {
                        Verdict::Snat(to)
                    },
                    nat_to: nat_to(body),
                };
            }
            "masquerade" => target = verdict(Verdict::Masquerade),
            "redirect" => {
                let p = body.get("port").map(|p| p.to_string()).unwrap_or_default();
                target = Target::Verdict {
                    verdict: Verdict::Redirect(p),
                    nat_to: nat_to(body).map(|n| NatTo { addrs: None, ..n }),
                };
            }
            "log" | "mangle" | "notrack" | "ct helper" => {
                if matches!(target, Target::None) {
                    target = Target::Continue(key.clone());
                }
            }
            "xt" if s(body, "type") == Some("target") => {
                let name = s(body, "name").unwrap_or("xt").to_string();
                target = verdict(Verdict::Unknown(name));
            }
            "queue" | "synproxy" | "tproxy" => target = verdict(Verdict::Unknown(key.clone())),
            "vmap" => match (body.get("key"), body.get("data").and_then(|d| d.get("set"))) {
                (Some(k), Some(Value::Array(elems))) => vmap = Some((k, elems)),
                // A named map (`vmap @ports`): its contents are not in the rule.
                _ => {
                    target = verdict(Verdict::Unknown(format!(
                        "vmap {}",
                        body.get("data").unwrap_or(body)
                    )))
                }
            },
            other => unknown.push(other.to_string()),
        }
    }
    let text = serde_json::to_string(exprs).unwrap_or_default();
    let rule = |name: String, conds, unknown, target| Rule {
        loc: Location {
            file: cx.file.to_string(),
            line: None,
            name: Some(name),
        },
        text: text.clone(),
        conds,
        unknown,
        target,
        packets,
    };
    let Some((key, elems)) = vmap else {
        return Ok(vec![rule(label.to_string(), conds, unknown, target)]);
    };
    let mut out = Vec::with_capacity(elems.len());
    for e in elems {
        let (Some(k), Some(v)) = (e.get(0), e.get(1)) else {
            return Err(cx.err(
                label,
                format!("vmap element {e} is not a [key, verdict] pair"),
            ));
        };
        // With per-element counters the key is wrapped: {"elem": {"val": ...}}.
        let k = k.get("elem").and_then(|x| x.get("val")).unwrap_or(k);
        let m = serde_json::json!({"op": "==", "left": key, "right": k});
        let mut c = conds.clone();
        let mut u = unknown.clone();
        match match_conds(&m, family) {
            Some(kc) => c.extend(kc),
            None => u.push(format!("vmap key {key} : {k}")),
        }
        let t = parse_rule(cx, label, family, std::slice::from_ref(v))?
            .into_iter()
            .next()
            .map_or(Target::None, |r| r.target);
        let shown = match k {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push(rule(format!("{label} vmap {shown}"), c, u, t));
    }
    Ok(out)
}
