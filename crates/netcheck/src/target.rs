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

/// A port map endpoint that `check` cannot connect to as documented, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The port map row.
    pub row: String,
    /// The documented host (a wildcard such as `*.servicebus.windows.net`) or, for a
    /// port range, the role.
    pub host: String,
    /// The documented ports (`49152-65535` for a range).
    pub ports: String,
    /// Why, and what to pass to check it.
    pub reason: String,
}

/// The targets of a component, and the endpoints that could not be made targets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentTargets {
    /// What to check.
    pub targets: Vec<Target>,
    /// What was not checked, each with its reason.
    pub skipped: Vec<Skipped>,
    /// The `names` that matched no wildcard endpoint of the selected rows.
    pub unused_names: Vec<String>,
}

/// Whether `name` is a concrete name under the wildcard `pattern` (`*.example.com`
/// covers `a.example.com` and `a.b.example.com`: Microsoft's lists mean any name
/// under the suffix).
fn covers(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    let suffix = suffix.to_ascii_lowercase();
    name.len() > suffix.len() && name.ends_with(&suffix) && !name.contains('*')
}

/// The TCP targets of the port map rows `sel` selects: every single address the hosts
/// file gives the destination role, every documented host name that is not a
/// wildcard, and for a wildcard (`*.servicebus.windows.net`) each of `names` it
/// covers (the concrete names of a tenant, such as its relay namespace). A wildcard
/// no name covers, and a row with a port range (dynamic RPC: there is no one port to
/// try), are listed in [`ComponentTargets::skipped`] with the reason.
pub fn targets_for(
    map: &PortMap,
    hosts: Option<&Hosts>,
    sel: &Selection,
    names: &[String],
) -> ComponentTargets {
    let mut out = ComponentTargets::default();
    let mut used = vec![false; names.len()];
    for row in map.select(sel) {
        if !row.transport.contains(&Transport::Tcp) {
            continue;
        }
        if row.ports.start != row.ports.end {
            out.skipped.push(Skipped {
                row: row.id.clone(),
                host: row.to.clone(),
                ports: format!("{}-{}", row.ports.start, row.ports.end),
                reason: "a port range (dynamic RPC) has no one port to try".into(),
            });
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
        for h in &row.hostnames {
            if !h.starts_with('*') {
                hostnames.push(h.clone());
                continue;
            }
            let mut any = false;
            for (i, n) in names.iter().enumerate() {
                if covers(h, n) {
                    used[i] = true;
                    any = true;
                    hostnames.push(n.clone());
                }
            }
            if !any {
                out.skipped.push(Skipped {
                    row: row.id.clone(),
                    host: h.clone(),
                    ports: port.to_string(),
                    reason: format!(
                        "a wildcard cannot be checked without a concrete name: pass --name NAME{}",
                        h.trim_start_matches('*')
                    ),
                });
            }
        }
        for host in hostnames {
            if out.targets.iter().any(|t| t.host == host && t.port == port) {
                continue;
            }
            let shown = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            out.targets.push(Target {
                label: format!("{} {shown}", row.id),
                host,
                port,
                tls,
            });
        }
    }
    out.unused_names = names
        .iter()
        .zip(used)
        .filter(|(_, u)| !u)
        .map(|(n, _)| n.clone())
        .collect();
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
    fn a_name_under_a_wildcard_becomes_a_target() {
        let map = PortMap::builtin().unwrap();
        let sel = Selection {
            components: vec!["pta".into()],
            ..Selection::default()
        };
        let wildcard = targets_for(&map, None, &sel, &[])
            .skipped
            .into_iter()
            .find(|s| s.host.starts_with("*."))
            .unwrap();
        let name = format!("tenant1{}", wildcard.host.trim_start_matches('*'));
        let found = targets_for(
            &map,
            None,
            &sel,
            &[name.clone(), "other.example.test".into()],
        );
        assert!(
            found.targets.iter().any(|t| t.host == name),
            "{:?}",
            found.targets
        );
        assert!(!found.skipped.iter().any(|s| s.host == wildcard.host));
        assert_eq!(found.unused_names, ["other.example.test"]);
        assert!(!covers("*.example.com", "example.com"));
        assert!(covers("*.example.com", "A.b.Example.com"));
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
        let found = targets_for(&map, Some(&hosts), &sel, &[]);
        let targets = found.targets;
        let labels: Vec<_> = targets.iter().map(|t| t.label.as_str()).collect();
        assert!(labels.contains(&"pta-https 10.9.9.9:443"), "{labels:?}");
        assert!(labels.contains(&"pta-https login.microsoftonline.com:443"));
        assert!(labels.contains(&"pta-crl 10.7.7.7:80"));
        assert!(
            !labels.iter().any(|l| l.contains("10.8.0.0")),
            "networks skipped"
        );
        assert!(!labels.iter().any(|l| l.contains('*')), "wildcards skipped");
        // ... and said so, with what to pass.
        let wild = found
            .skipped
            .iter()
            .find(|s| s.host.starts_with('*'))
            .expect("pta has wildcard endpoints");
        assert!(wild.reason.contains("--name NAME."), "{wild:?}");
        let https = targets.iter().find(|t| t.port == 443).unwrap();
        assert!(https.tls);
        assert!(!targets.iter().find(|t| t.port == 80).unwrap().tls);
    }
}
