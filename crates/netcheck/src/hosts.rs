//! The hosts file: which addresses play which role of the port map.
//!
//! ```toml
//! connect-server = ["10.0.0.5"]
//! domain-controller = ["10.0.1.10", "10.0.1.11/32"]
//! entra-id = ["0.0.0.0/0"]   # or the published service ranges
//! ```

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::error::{Error, Location};
use crate::portmap::PortMap;

/// Role name → the networks that play it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hosts {
    /// The networks of each role named in the file.
    pub roles: BTreeMap<String, Vec<IpNet>>,
    /// Where the file came from, for messages.
    pub origin: String,
}

impl Hosts {
    /// Read and parse a hosts file.
    pub fn load(path: &str, map: &PortMap) -> Result<Hosts, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_string(),
            source,
        })?;
        Hosts::parse(&text, path, map)
    }

    /// Parse hosts text; every role must be one of `map`'s roles.
    pub fn parse(text: &str, origin: &str, map: &PortMap) -> Result<Hosts, Error> {
        let raw: BTreeMap<toml::Spanned<String>, Vec<toml::Spanned<String>>> = toml::from_str(text)
            .map_err(|e| Error::Input {
                location: Location::at(origin, text, e.span().map(|s| s.start)),
                field: "hosts".into(),
                message: format!(
                    "{} (expected role = [\"address or cidr\", ...])",
                    e.message()
                ),
            })?;
        let mut roles = BTreeMap::new();
        for (role, entries) in raw {
            let at = |offset: usize| Location::at(origin, text, Some(offset));
            if !map.roles.contains_key(role.get_ref()) {
                return Err(Error::Input {
                    location: at(role.span().start),
                    field: role.get_ref().clone(),
                    message: format!(
                        "unknown role; the port map's roles are: {}",
                        map.roles.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            let mut nets = Vec::with_capacity(entries.len());
            for entry in entries {
                let net = parse_net(entry.get_ref()).ok_or_else(|| Error::Input {
                    location: at(entry.span().start),
                    field: role.get_ref().clone(),
                    message: format!(
                        "expected an IP address or CIDR, found {:?}",
                        entry.get_ref()
                    ),
                })?;
                nets.push(net);
            }
            roles.insert(role.into_inner(), nets);
        }
        Ok(Hosts {
            roles,
            origin: origin.to_string(),
        })
    }
}

impl Hosts {
    /// Add the addresses of one command-line argument `ROLE=ADDR[,ADDR...]` (as given
    /// to `--host`), after those already known for the role. `origin` names the
    /// argument in errors.
    pub fn add_arg(&mut self, arg: &str, origin: &str, map: &PortMap) -> Result<(), Error> {
        let bad = |field: &str, message: String| Error::input(origin, field, message);
        let Some((role, addrs)) = arg.split_once('=') else {
            return Err(bad(
                arg,
                "expected ROLE=ADDRESS[,ADDRESS...], e.g. domain-controller=10.0.1.10".into(),
            ));
        };
        let role = role.trim();
        if !map.roles.contains_key(role) {
            return Err(bad(
                role,
                format!(
                    "unknown role; the port map's roles are: {}",
                    map.roles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let mut nets = Vec::new();
        for a in addrs.split(',') {
            nets.push(parse_net(a).ok_or_else(|| {
                bad(
                    role,
                    format!("expected an IP address or CIDR, found {:?}", a.trim()),
                )
            })?);
        }
        self.roles.entry(role.to_string()).or_default().extend(nets);
        if self.origin.is_empty() {
            self.origin = origin.to_string();
        }
        Ok(())
    }
}

/// An address (as a host network) or a CIDR, normalised to its network address.
fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_addresses_and_cidrs() {
        let map = PortMap::builtin().unwrap();
        let hosts = Hosts::parse(
            "connect-server = [\"10.0.0.5\", \"2001:db8::/64\"]\ndomain-controller = [\"10.0.1.7/24\"]\n",
            "h.toml",
            &map,
        )
        .unwrap();
        assert_eq!(hosts.roles["connect-server"][0].to_string(), "10.0.0.5/32");
        assert_eq!(
            hosts.roles["domain-controller"][0].to_string(),
            "10.0.1.0/24"
        );
    }

    #[test]
    fn command_line_roles_add_to_the_file() {
        let map = PortMap::builtin().unwrap();
        let mut hosts = Hosts::parse("connect-server = [\"10.0.0.5\"]\n", "h.toml", &map).unwrap();
        hosts
            .add_arg("domain-controller=10.0.1.10, 10.0.2.0/24", "--host", &map)
            .unwrap();
        hosts
            .add_arg("connect-server=10.0.0.6", "--host", &map)
            .unwrap();
        assert_eq!(hosts.roles["connect-server"].len(), 2);
        assert_eq!(
            hosts.roles["domain-controller"][1].to_string(),
            "10.0.2.0/24"
        );
        let err = hosts
            .add_arg("domain-controller", "--host", &map)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--host: domain-controller: expected ROLE="),
            "{err}"
        );
        let err = hosts
            .add_arg("toaster=10.0.0.1", "--host", &map)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--host: toaster: unknown role"), "{err}");
        let err = hosts
            .add_arg("domain-controller=10.0.0.300", "--host", &map)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"10.0.0.300\""), "{err}");
    }

    #[test]
    fn errors_name_file_line_and_role() {
        let map = PortMap::builtin().unwrap();
        let err = Hosts::parse(
            "connect-server = [\"10.0.0.5\"]\ndomain-controller = [\"10.0.0.300\"]\n",
            "h.toml",
            &map,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("h.toml:2: domain-controller:") && err.contains("10.0.0.300"),
            "{err}"
        );
        let err = Hosts::parse("toaster = [\"10.0.0.5\"]\n", "h.toml", &map)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("h.toml:1: toaster: unknown role"), "{err}");
        let err = Hosts::parse("connect-server = \"10.0.0.5\"\n", "h.toml", &map)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("h.toml:1"), "{err}");
    }
}
