//! What `check` connects to: explicit targets from the command line, or the rows of a
//! component in the port map.

use std::net::IpAddr;

use serde::Serialize;

use crate::error::Error;
use crate::hosts::Hosts;
use crate::portmap::{PortMap, Selection, TlsExpectation, Transport};

/// Ports where a bare `host:port` is assumed to speak TLS from the first byte.
const TLS_PORTS: &[u16] = &[443, 465, 636, 853, 993, 995, 5671, 8443, 49443];

/// One endpoint to check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// What the user wrote, or `row-id host:port` for port map targets.
    pub label: String,
    /// Host name or IP address literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether a TLS handshake is expected.
    pub tls: bool,
}

impl Target {
    /// Parse `host:port`, `[v6]:port`, `https://host[:port][/path]`, `tls://host:port`
    /// or `tcp://host:port`. A bare `host:port` is checked for TLS on the usual TLS ports.
    pub fn parse(s: &str) -> Result<Target, Error> {
        let bad = |m: &str| Error::input("arguments", format!("target {s:?}"), m.to_string());
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, s),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| bad("expected host:port, [ipv6]:port or a URL such as https://host/"))?;
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let (port, tls) = match (scheme.as_deref(), port) {
            (Some("https"), p) => (p.unwrap_or(443), true),
            (Some("tls"), Some(p)) => (p, true),
            (Some("tcp"), Some(p)) => (p, false),
            (Some("tls" | "tcp"), None) => return Err(bad("tls:// and tcp:// need a port")),
            (Some(other), _) => {
                return Err(bad(&format!(
                    "unknown scheme {other:?}; use https://, tls:// or tcp://"
                )));
            }
            (None, Some(p)) => (p, TLS_PORTS.contains(&p)),
            (None, None) => return Err(bad("missing port")),
        };
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(Target {
            label: s.to_string(),
            host: host.to_string(),
            port,
            tls,
        })
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

fn split_host_port(a: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = a.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match a.rsplit_once(':') {
        // More than one colon without brackets: an IPv6 literal without a port.
        Some((h, _)) if h.contains(':') => Some((a, None)),
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((a, None)),
    }
}

/// The TCP targets of the port map rows `sel` selects: every single address the hosts
/// file gives the destination role, and every documented host name that is not a
/// wildcard. Rows with a port range (dynamic RPC) are skipped: there is no one port to
/// try.
pub fn targets_for(map: &PortMap, hosts: Option<&Hosts>, sel: &Selection) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for row in map.select(sel) {
        if !row.transport.contains(&Transport::Tcp) || row.ports.start != row.ports.end {
            continue;
        }
        let port = row.ports.start;
        let tls = row.tls == TlsExpectation::Required;
        let mut hostnames: Vec<String> = Vec::new();
        if let Some(nets) = hosts.and_then(|h| h.roles.get(&row.to)) {
            for net in nets {
                if net.prefix_len() == net.max_prefix_len() {
                    hostnames.push(net.addr().to_string());
                }
            }
        }
        hostnames.extend(
            row.hostnames
                .iter()
                .filter(|h| !h.starts_with("*."))
                .cloned(),
        );
        for host in hostnames {
            if out.iter().any(|t| t.host == host && t.port == port) {
                continue;
            }
            let shown = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            out.push(Target {
                label: format!("{} {shown}", row.id),
                host,
                port,
                tls,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_the_target_forms() {
        let t = Target::parse("https://login.example.test/common").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("login.example.test", 443, true)
        );
        let t = Target::parse("dc1.corp.test:389").unwrap();
        assert_eq!((t.port, t.tls), (389, false));
        let t = Target::parse("dc1.corp.test:636").unwrap();
        assert!(t.tls);
        let t = Target::parse("[::1]:8443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        let t = Target::parse("tls://127.0.0.1:9999").unwrap();
        assert!(t.tls);
        let t = Target::parse("https://[::1]:4443/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 4443));
        for bad in ["host", "ftp://x:1", "x:0", "x:99999", "tcp://x", ":443"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn component_targets_use_hosts_and_documented_names() {
        let map = PortMap::builtin().unwrap();
        let hosts = Hosts::parse(
            "entra-id = [\"10.9.9.9\", \"10.8.0.0/16\"]\ncrl-ocsp = [\"10.7.7.7\"]\n",
            "h.toml",
            &map,
        )
        .unwrap();
        let sel = Selection {
            components: vec!["pta".into()],
            ..Selection::default()
        };
        let targets = targets_for(&map, Some(&hosts), &sel);
        let labels: Vec<_> = targets.iter().map(|t| t.label.as_str()).collect();
        assert!(labels.contains(&"pta-https 10.9.9.9:443"), "{labels:?}");
        assert!(labels.contains(&"pta-https login.microsoftonline.com:443"));
        assert!(labels.contains(&"pta-crl 10.7.7.7:80"));
        assert!(
            !labels.iter().any(|l| l.contains("10.8.0.0")),
            "networks skipped"
        );
        assert!(!labels.iter().any(|l| l.contains('*')), "wildcards skipped");
        let https = targets.iter().find(|t| t.port == 443).unwrap();
        assert!(https.tls);
        assert!(!targets.iter().find(|t| t.port == 80).unwrap().tls);
    }
}
