//! The port map of Entra's hybrid components: typed rows loaded from TOML, validated,
//! and selected by component and role.
//!
//! The data lives in `data/entra-ports.toml`, embedded in the binary, so the map ships
//! with the tool and changes to it are reviewed like code. Every row cites its source
//! document; validation refuses a row without one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Location};

/// The built-in map's text.
const BUILTIN: &str = include_str!("../data/entra-ports.toml");
/// How the built-in map is named in messages.
pub const BUILTIN_ORIGIN: &str = "built-in port map";

/// A transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        })
    }
}

/// What protects a flow on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsExpectation {
    /// TLS is expected (and with it, TLS 1.2 or later).
    Required,
    /// Protected by Kerberos sign and seal, not by TLS.
    Kerberos,
    /// Cleartext by design (CRL/OCSP downloads, DNS).
    None,
}

impl fmt::Display for TlsExpectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsExpectation::Required => "required",
            TlsExpectation::Kerberos => "kerberos",
            TlsExpectation::None => "none",
        })
    }
}

/// An inclusive destination port range; a single port has `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<PortRange, String> {
        let parse = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("expected a port 1-65535, found {p:?}")),
                Ok(n) => Ok(n),
            }
        };
        let (start, end) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let p = parse(s)?;
                (p, p)
            }
        };
        if start > end {
            return Err(format!("range {s:?} ends before it starts"));
        }
        Ok(PortRange { start, end })
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a row's facts come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Path in the MicrosoftDocs/entra-docs repository.
    pub path: String,
    /// Heading of the section that states the fact.
    pub heading: String,
}

/// One flow a hybrid component needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Stable identifier.
    pub id: String,
    /// The components that need the flow.
    pub components: Vec<String>,
    /// Application protocol as the source names it.
    pub protocol: String,
    /// Transports.
    pub transport: Vec<Transport>,
    /// Destination ports.
    pub ports: PortRange,
    /// Role that opens the connection.
    pub from: String,
    /// Role that listens.
    pub to: String,
    /// "Entra Connect server → domain controllers".
    pub direction: String,
    /// What the flow is for.
    pub purpose: String,
    /// What protects the flow on the wire.
    pub tls: TlsExpectation,
    /// Host names the source documents for the `to` side.
    pub hostnames: Vec<String>,
    /// Optional or conditional flows.
    pub optional: bool,
    /// Where the row goes beyond its source, or a caveat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The source document.
    pub source: Source,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    components: BTreeMap<String, String>,
    roles: BTreeMap<String, String>,
    row: Vec<toml::Spanned<RawRow>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    id: String,
    components: Vec<String>,
    protocol: String,
    transport: Vec<Transport>,
    ports: String,
    from: String,
    to: String,
    purpose: String,
    tls: TlsExpectation,
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default)]
    optional: bool,
    note: Option<String>,
    source: Source,
}

/// The validated port map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortMap {
    /// Component name → description.
    pub components: BTreeMap<String, String>,
    /// Role name → description.
    pub roles: BTreeMap<String, String>,
    /// The rows, in file order.
    pub rows: Vec<Row>,
}

/// Which rows to take: by component, by role, optional ones or not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Components to keep; empty keeps all.
    pub components: Vec<String>,
    /// Keep only rows where this role is on either side.
    pub role: Option<String>,
    /// Keep rows marked optional.
    pub include_optional: bool,
}

impl PortMap {
    /// The map shipped with intraport.
    pub fn builtin() -> Result<PortMap, Error> {
        PortMap::parse(BUILTIN, BUILTIN_ORIGIN)
    }

    /// Parse and validate a map; `origin` names the text in messages.
    pub fn parse(text: &str, origin: &str) -> Result<PortMap, Error> {
        let raw: RawMap = toml::from_str(text).map_err(|e| Error::Input {
            location: Location::at(origin, text, e.span().map(|s| s.start)),
            field: "port map".into(),
            message: e.message().to_string(),
        })?;
        let mut seen = BTreeSet::new();
        let mut rows = Vec::with_capacity(raw.row.len());
        for spanned in raw.row {
            let at = Location::at(origin, text, Some(spanned.span().start));
            let r = spanned.into_inner();
            let bad = |field: &str, message: String| Error::Input {
                location: at.clone(),
                field: format!("row {:?}: {field}", r.id),
                message,
            };
            if r.id.is_empty() || !seen.insert(r.id.clone()) {
                return Err(bad("id", "missing or duplicate id".into()));
            }
            if r.components.is_empty() {
                return Err(bad("components", "at least one component".into()));
            }
            for c in &r.components {
                if !raw.components.contains_key(c) {
                    return Err(bad("components", format!("unknown component {c:?}")));
                }
            }
            for (field, role) in [("from", &r.from), ("to", &r.to)] {
                if !raw.roles.contains_key(role) {
                    return Err(bad(field, format!("unknown role {role:?}")));
                }
            }
            if r.transport.is_empty() {
                return Err(bad("transport", "at least one of tcp, udp".into()));
            }
            let ports = r.ports.parse::<PortRange>().map_err(|m| bad("ports", m))?;
            if r.purpose.trim().is_empty() {
                return Err(bad("purpose", "empty".into()));
            }
            if r.source.path.trim().is_empty()
                || !(r.source.path.ends_with(".md") || r.source.path.ends_with(".yml"))
            {
                return Err(bad(
                    "source.path",
                    format!("expected a documentation path, found {:?}", r.source.path),
                ));
            }
            if r.source.heading.trim().is_empty() {
                return Err(bad("source.heading", "empty".into()));
            }
            for h in &r.hostnames {
                if !valid_hostname_pattern(h) {
                    return Err(bad("hostnames", format!("not a host name: {h:?}")));
                }
            }
            let direction = format!("{} → {}", raw.roles[&r.from], raw.roles[&r.to]);
            rows.push(Row {
                id: r.id,
                components: r.components,
                protocol: r.protocol,
                transport: r.transport,
                ports,
                from: r.from,
                to: r.to,
                direction,
                purpose: r.purpose,
                tls: r.tls,
                hostnames: r.hostnames,
                optional: r.optional,
                note: r.note,
                source: r.source,
            });
        }
        Ok(PortMap {
            components: raw.components,
            roles: raw.roles,
            rows,
        })
    }

    /// Check that the names in `sel` exist in the map; `origin` names the arguments.
    pub fn check_selection(&self, sel: &Selection) -> Result<(), Error> {
        for c in &sel.components {
            if !self.components.contains_key(c) {
                return Err(Error::input(
                    "arguments",
                    "--component",
                    format!(
                        "unknown component {c:?}; known: {}",
                        join(self.components.keys())
                    ),
                ));
            }
        }
        if let Some(role) = &sel.role {
            if !self.roles.contains_key(role) {
                return Err(Error::input(
                    "arguments",
                    "--role",
                    format!("unknown role {role:?}; known: {}", join(self.roles.keys())),
                ));
            }
        }
        Ok(())
    }

    /// The rows `sel` keeps, in map order.
    pub fn select<'a>(&'a self, sel: &'a Selection) -> impl Iterator<Item = &'a Row> + 'a {
        self.rows.iter().filter(move |r| {
            (sel.components.is_empty() || r.components.iter().any(|c| sel.components.contains(c)))
                && sel
                    .role
                    .as_ref()
                    .is_none_or(|role| &r.from == role || &r.to == role)
                && (sel.include_optional || !r.optional)
        })
    }
}

fn join<'a>(items: impl Iterator<Item = &'a String>) -> String {
    items.map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// A DNS name, optionally starting with `*.`.
fn valid_hostname_pattern(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn builtin_map_parses_and_every_row_cites_a_source() {
        let map = PortMap::builtin().unwrap();
        assert!(map.rows.len() >= 25, "{} rows", map.rows.len());
        for row in &map.rows {
            assert!(
                row.source.path.starts_with("docs/"),
                "{}: {:?}",
                row.id,
                row.source
            );
            assert!(!row.source.heading.is_empty(), "{}", row.id);
        }
        // Every component and role is used by at least one row.
        for c in map.components.keys() {
            assert!(map.rows.iter().any(|r| r.components.contains(c)), "{c}");
        }
        for role in map.roles.keys() {
            assert!(
                map.rows.iter().any(|r| &r.from == role || &r.to == role),
                "{role}"
            );
        }
    }

    #[test]
    fn port_ranges_parse_and_reject() {
        assert_eq!(
            "49152-65535".parse::<PortRange>().unwrap(),
            PortRange {
                start: 49152,
                end: 65535
            }
        );
        assert_eq!("443".parse::<PortRange>().unwrap().to_string(), "443");
        for bad in ["0", "65536", "10-5", "x", "1-", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    const MINIMAL: &str = r#"
[components]
c = "C"
[roles]
a = "A"
b = "B"

[[row]]
id = "r1"
components = ["c"]
protocol = "HTTPS"
transport = ["tcp"]
ports = "443"
from = "a"
to = "b"
purpose = "p"
tls = "required"
source = { path = "docs/x.md", heading = "H" }
"#;

    #[test]
    fn minimal_map_parses() {
        let map = PortMap::parse(MINIMAL, "m.toml").unwrap();
        assert_eq!(map.rows[0].direction, "A → B");
    }

    #[test]
    fn a_row_without_source_is_refused_with_its_line() {
        let text = MINIMAL.replace("source = { path = \"docs/x.md\", heading = \"H\" }\n", "");
        let err = PortMap::parse(&text, "m.toml").unwrap_err().to_string();
        assert!(err.contains("m.toml:") && err.contains("source"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("ports = \"443\"", "ports = \"70000\"", "ports"),
            ("to = \"b\"", "to = \"nobody\"", "unknown role"),
            ("heading = \"H\"", "heading = \"\"", "source.heading"),
            (
                "components = [\"c\"]",
                "components = [\"z\"]",
                "unknown component",
            ),
            ("tls = \"required\"", "tls = \"maybe\"", "maybe"),
        ];
        for (from, to, expect) in cases {
            let text = MINIMAL.replace(from, to);
            let err = PortMap::parse(&text, "m.toml").unwrap_err().to_string();
            assert!(err.contains(expect), "{to}: {err}");
            assert!(err.starts_with("m.toml:"), "{err}");
        }
    }

    #[test]
    fn selection_filters_by_component_role_and_optional() {
        let map = PortMap::builtin().unwrap();
        let sel = Selection {
            components: vec!["pta".into()],
            role: None,
            include_optional: false,
        };
        let ids: Vec<_> = map.select(&sel).map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["pta-crl", "pta-https"]);
        let sel = Selection {
            include_optional: true,
            ..sel
        };
        assert_eq!(map.select(&sel).count(), 3);
        let sel = Selection {
            components: vec![],
            role: Some("domain-controller".into()),
            include_optional: true,
        };
        assert!(
            map.select(&sel)
                .all(|r| r.to == "domain-controller" || r.from == "domain-controller")
        );
        assert!(map.check_selection(&sel).is_ok());
        let bad = Selection {
            role: Some("toaster".into()),
            ..sel
        };
        let err = map.check_selection(&bad).unwrap_err().to_string();
        assert!(err.contains("--role") && err.contains("toaster"), "{err}");
    }
}
