//! Source addresses: who the client is (the socket peer, or what trusted proxies say)
//! and whether a route admits it.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::FORWARDED;
use ipnet::IpNet;

use crate::cidr::CidrSet;
use crate::decision::{Denial, DenyReason};

/// A route's source rule: deny wins, then allow; an empty allow list admits nobody.
#[derive(Clone, Debug, Default)]
pub struct SourceRule {
    /// Networks admitted.
    pub allow: CidrSet,
    /// Networks refused even when also allowed.
    pub deny: CidrSet,
}

/// The allow-list network that admitted an address, for the audit event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceMatch {
    /// The address checked (IPv4-mapped IPv6 shown as IPv4).
    pub ip: IpAddr,
    /// The most specific allow-list network containing it.
    pub net: IpNet,
}

impl SourceRule {
    /// Checks a client address.
    pub fn check(&self, ip: IpAddr) -> Result<SourceMatch, Denial> {
        let ip = ip.to_canonical();
        if let Some(net) = self.deny.contains(ip) {
            return Err(Denial::new(
                DenyReason::SourceDenied,
                format!("source {ip} is in denied network {net}"),
            ));
        }
        match self.allow.contains(ip) {
            Some(net) => Ok(SourceMatch { ip, net }),
            None if self.allow.is_empty() => Err(Denial::new(
                DenyReason::SourceNotAllowed,
                format!("source {ip} refused: the allow list is empty (default deny)"),
            )),
            None => Err(Denial::new(
                DenyReason::SourceNotAllowed,
                format!("source {ip} is in no allowed network"),
            )),
        }
    }
}

/// The client address a request is attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client: the socket peer, or the first untrusted hop reported by trusted
    /// proxies. IPv4-mapped IPv6 addresses are shown as IPv4.
    pub ip: IpAddr,
    /// The trusted proxy that reported `ip`, when it came from a forwarding header.
    pub via: Option<IpAddr>,
}

/// Finds the client address of a request.
///
/// The socket peer is the client unless it is in `trusted`. From a trusted peer, the
/// `Forwarded` header (RFC 7239; all its lines, in order) is read, or when there is
/// none `X-Forwarded-For`; the hops are walked from right (nearest) to left, trusted
/// proxies are skipped, and the first untrusted address is the client. A hop that
/// does not parse as an address (garbage, an empty element, `unknown`, an obfuscated
/// `_name`, a `Forwarded` element without `for=`) stops the walk: the client is then
/// the last trusted hop, since nothing it relayed can be believed. When every hop is
/// trusted, the leftmost one is the client.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &CidrSet) -> ClientAddr {
    let peer = peer.to_canonical();
    if trusted.contains(peer).is_none() {
        return ClientAddr {
            ip: peer,
            via: None,
        };
    }
    let hops: Vec<Option<IpAddr>> = if headers.contains_key(FORWARDED) {
        forwarded_hops(headers)
    } else {
        xff_hops(headers)
    };
    // `reporter` is the trusted hop whose report we read next; `before` the one that
    // reported `reporter` (None for the socket peer).
    let mut reporter = peer;
    let mut before: Option<IpAddr> = None;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if trusted.contains(*ip).is_some() => {
                before = Some(reporter);
                reporter = *ip;
            }
            Some(ip) => {
                return ClientAddr {
                    ip: *ip,
                    via: Some(reporter),
                };
            }
            None => break,
        }
    }
    ClientAddr {
        ip: reporter,
        via: before,
    }
}

/// The `X-Forwarded-For` hops in order (left = farthest), `None` for a hop that is
/// not an address. A header line that is not visible ASCII is one bad hop.
fn xff_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        match value.to_str() {
            Ok(s) => hops.extend(s.split(',').map(|h| parse_node(h.trim()))),
            Err(_) => hops.push(None),
        }
    }
    hops
}

/// The `for=` nodes of every `Forwarded` element in order, `None` for an element
/// without a usable `for=` (missing, `unknown`, obfuscated, malformed).
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(FORWARDED) {
        match value.to_str() {
            Ok(s) => match split_forwarded(s) {
                Some(elements) => hops.extend(elements.iter().map(|e| element_for(e))),
                None => hops.push(None),
            },
            Err(_) => hops.push(None),
        }
    }
    hops
}

/// Splits a `Forwarded` line into elements at commas outside quoted strings.
/// `None` when a quoted string is not closed.
fn split_forwarded(s: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    out.push(s[start..].trim());
    Some(out)
}

/// The address in an element's `for=` parameter.
fn element_for(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_pairs(element)? {
        let (name, value) = pair.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("for") {
            if found.is_some() {
                return None; // two `for=` in one element: ambiguous
            }
            let value = value.trim();
            let value = match value.strip_prefix('"') {
                Some(rest) => rest.strip_suffix('"')?,
                None => value,
            };
            if value.contains('\\') || value.contains('"') {
                return None;
            }
            found = Some(parse_node(value)?);
        }
    }
    found
}

/// Splits an element into `name=value` pairs at semicolons outside quotes.
fn split_pairs(element: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in element.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&element[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    out.push(&element[start..]);
    Some(out)
}

/// A node: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:80`. Anything else (`unknown`, `_hidden`, garbage) is `None`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if s.is_empty() {
        return None;
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    // RFC 7239 allows an obfuscated port (`[::1]:_abc`) and a bracketed address
    // without a port.
    let (host, _port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (h, tail) = rest.split_once(']')?;
            if !(tail.is_empty() || tail.starts_with(':')) {
                return None;
            }
            (h, tail)
        }
        None => s.split_once(':')?,
    };
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn set(items: &[&str]) -> CidrSet {
        CidrSet::parse(items, "test").unwrap()
    }
    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }
    fn trusted() -> CidrSet {
        set(&["10.0.0.0/8", "fd00::/8"])
    }

    #[test]
    fn source_rule_deny_wins_then_allow_then_default_deny() {
        let rule = SourceRule {
            allow: set(&["10.0.0.0/8", "10.1.0.0/16"]),
            deny: set(&["10.1.2.0/24"]),
        };
        let ok = rule.check(ip("10.1.9.9")).unwrap();
        assert_eq!(ok.net, "10.1.0.0/16".parse::<IpNet>().unwrap());
        assert_eq!(ok.ip, ip("10.1.9.9"));
        let d = rule.check(ip("10.1.2.3")).unwrap_err();
        assert_eq!(d.reason, DenyReason::SourceDenied);
        assert!(d.detail.contains("10.1.2.0/24"), "{}", d.detail);
        let d = rule.check(ip("192.0.2.1")).unwrap_err();
        assert_eq!(d.reason, DenyReason::SourceNotAllowed);
        // Mapped addresses are checked as IPv4, deny list included.
        assert_eq!(
            rule.check(ip("::ffff:10.1.2.3")).unwrap_err().reason,
            DenyReason::SourceDenied
        );
        assert_eq!(
            rule.check(ip("::ffff:10.5.5.5")).unwrap().ip,
            ip("10.5.5.5")
        );
        let empty = SourceRule::default();
        let d = empty.check(ip("127.0.0.1")).unwrap_err();
        assert_eq!(d.reason, DenyReason::SourceNotAllowed);
        assert!(d.detail.contains("empty"), "{}", d.detail);
    }

    #[test]
    fn spoofed_xff_from_untrusted_peer_is_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.2"),
        ]);
        let c = client_ip(ip("203.0.113.9"), &h, &trusted());
        assert_eq!(
            c,
            ClientAddr {
                ip: ip("203.0.113.9"),
                via: None
            }
        );
    }

    #[test]
    fn trusted_peer_without_headers_is_the_client() {
        let c = client_ip(ip("10.0.0.5"), &HeaderMap::new(), &trusted());
        assert_eq!(
            c,
            ClientAddr {
                ip: ip("10.0.0.5"),
                via: None
            }
        );
    }

    #[test]
    fn xff_chain_through_several_trusted_proxies() {
        // The client spoofs a leftmost entry; the chain is spoof, client, proxy1, proxy2
        // and the socket peer is proxy3.
        let h = headers(&[(
            "x-forwarded-for",
            "1.1.1.1, 198.51.100.7, 10.0.0.1,10.0.0.2",
        )]);
        let c = client_ip(ip("10.0.0.3"), &h, &trusted());
        assert_eq!(
            c,
            ClientAddr {
                ip: ip("198.51.100.7"),
                via: Some(ip("10.0.0.1"))
            }
        );
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 198.51.100.7"),
            ("x-forwarded-for", "10.0.0.1"),
        ]);
        let c = client_ip(ip("10.0.0.3"), &h, &trusted());
        assert_eq!(
            c,
            ClientAddr {
                ip: ip("198.51.100.7"),
                via: Some(ip("10.0.0.1"))
            }
        );
        // Ports and IPv6 forms.
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:5555, fd00::1")]);
        let c = client_ip(ip("fd00::2"), &h, &trusted());
        assert_eq!(
            c,
            ClientAddr {
                ip: ip("2001:db8::7"),
                via: Some(ip("fd00::1"))
            }
        );
        let h = headers(&[("x-forwarded-for", "198.51.100.7:443")]);
        assert_eq!(
            client_ip(ip("10.0.0.3"), &h, &trusted()).ip,
            ip("198.51.100.7")
        );
        // A mapped peer counts as its IPv4 address.
        let h = headers(&[("x-forwarded-for", "198.51.100.8")]);
        let c = client_ip(ip("::ffff:10.0.0.3"), &h, &trusted());
        assert_eq!(
            c,
            ClientAddr {
                ip: ip("198.51.100.8"),
                via: Some(ip("10.0.0.3"))
            }
        );
    }

    #[test]
    fn all_trusted_chain_yields_leftmost() {
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.1")]);
        let c = client_ip(ip("10.0.0.3"), &h, &trusted());
        assert_eq!(
            c,
            ClientAddr {
                ip: ip("10.9.9.9"),
                via: Some(ip("10.0.0.1"))
            }
        );
    }

    #[test]
    fn malformed_xff_falls_back_to_last_trusted_hop() {
        for bad in [
            "198.51.100.7, garbage, 10.0.0.1",
            "198.51.100.7, , 10.0.0.1",
            "198.51.100.7, unknown, 10.0.0.1",
        ] {
            let h = headers(&[("x-forwarded-for", bad)]);
            let c = client_ip(ip("10.0.0.3"), &h, &trusted());
            assert_eq!(
                c,
                ClientAddr {
                    ip: ip("10.0.0.1"),
                    via: Some(ip("10.0.0.3"))
                },
                "{bad}"
            );
        }
        // Garbage right at the peer: the peer itself is the client.
        let h = headers(&[("x-forwarded-for", "198.51.100.7, 999.1.1.1")]);
        let c = client_ip(ip("10.0.0.3"), &h, &trusted());
        assert_eq!(
            c,
            ClientAddr {
                ip: ip("10.0.0.3"),
                via: None
            }
        );
        // Non-ASCII bytes in the header.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.7\xff").unwrap(),
        );
        assert_eq!(client_ip(ip("10.0.0.3"), &h, &trusted()).ip, ip("10.0.0.3"));
    }

    #[test]
    fn forwarded_header_forms() {
        let h = headers(&[(
            "forwarded",
            r#"for=1.1.1.1, for="[2001:db8::9]:4711";proto=https, For="10.0.0.1:80";by=10.0.0.2"#,
        )]);
        let c = client_ip(ip("10.0.0.3"), &h, &trusted());
        assert_eq!(
            c,
            ClientAddr {
                ip: ip("2001:db8::9"),
                via: Some(ip("10.0.0.1"))
            }
        );
        // Forwarded is preferred over X-Forwarded-For.
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.2"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.3"), &h, &trusted()).ip,
            ip("198.51.100.2")
        );
        // Quoted commas do not split elements.
        let h = headers(&[("forwarded", r#"for=198.51.100.3;host="a,b", for=10.0.0.1"#)]);
        assert_eq!(
            client_ip(ip("10.0.0.3"), &h, &trusted()).ip,
            ip("198.51.100.3")
        );
        // Bracketed IPv6 without port, and obfuscated port.
        let h = headers(&[(
            "forwarded",
            r#"for="[2001:db8::a]", for="[2001:db8::b]:_p""#,
        )]);
        let c = client_ip(ip("10.0.0.3"), &h, &trusted());
        assert_eq!(c.ip, ip("2001:db8::b"));
    }

    #[test]
    fn malformed_forwarded_stops_at_the_proxy() {
        for bad in [
            "for=198.51.100.7, for=unknown, for=10.0.0.1",
            "for=198.51.100.7, for=_hidden, for=10.0.0.1",
            "for=198.51.100.7, proto=https, for=10.0.0.1",
            r#"for=198.51.100.7, for="10.0.0.9, for=10.0.0.1"#,
            "for=198.51.100.7, for=[2001:db8::1]x, for=10.0.0.1",
            "for=198.51.100.7, for=1.2.3.4;for=5.6.7.8, for=10.0.0.1",
        ] {
            let h = headers(&[("forwarded", bad)]);
            let c = client_ip(ip("10.0.0.3"), &h, &trusted());
            assert!(
                trusted().contains(c.ip).is_some(),
                "{bad}: fell back to {c:?}, which must be a trusted hop"
            );
            assert_ne!(c.ip, ip("198.51.100.7"), "{bad}");
        }
        // An unterminated quote poisons its whole line.
        let h = headers(&[("forwarded", r#"for=198.51.100.7, for="10.0.0.1"#)]);
        assert_eq!(client_ip(ip("10.0.0.3"), &h, &trusted()).ip, ip("10.0.0.3"));
    }
}
