//! What chain an endpoint should present, to tell TLS interception (DPI) from the real
//! server: pinned SPKI hashes, or the names of the CAs expected to issue its leaf.
//!
//! ```toml
//! [[endpoint]]
//! host = "*.msappproxy.net"          # exact name, or *.suffix
//! issuers = ["Microsoft", "DigiCert"] # leaf issuer CN/O must contain one (case-insensitive)
//!
//! [[endpoint]]
//! host = "ldaps.corp.example"
//! port = 636                                             # optional
//! spki_sha256 = ["q4PO2G2cbkZhZ82+JgmRUyGMoAeozA+BSXVXQWB8XWQ="]  # any chain cert
//! ```
//!
//! A chain that matches neither is reported as interception, naming the CA that issued
//! the presented leaf — the intercepting appliance's CA when a middlebox re-signs.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Location};
use crate::tls::CertSummary;

/// Expected issuers for Microsoft's hybrid endpoints, as documented defaults.
///
/// Microsoft's public endpoints are issued by Microsoft's own TLS issuing CAs or by
/// DigiCert; a leaf issued by anything else on these names is the signature of a TLS
/// inspection appliance. These are substring matches on the issuer CN/O, opt-in with
/// `--microsoft-defaults`, and never required: a CA change at Microsoft would make them
/// stale, which is why they are not applied silently.
pub const MICROSOFT_DEFAULTS: &str = r#"
[[endpoint]]
host = "login.microsoftonline.com"
issuers = ["Microsoft", "DigiCert"]

[[endpoint]]
host = "*.microsoftonline.com"
issuers = ["Microsoft", "DigiCert"]

[[endpoint]]
host = "login.windows.net"
issuers = ["Microsoft", "DigiCert"]

[[endpoint]]
host = "*.msappproxy.net"
issuers = ["Microsoft", "DigiCert"]

[[endpoint]]
host = "*.servicebus.windows.net"
issuers = ["Microsoft", "DigiCert"]

[[endpoint]]
host = "autologon.microsoftazuread-sso.com"
issuers = ["Microsoft", "DigiCert"]
"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    endpoint: Vec<toml::Spanned<Endpoint>>,
}

/// What one endpoint should present.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Exact host name, or `*.suffix` for any name under it.
    pub host: String,
    /// Only this port, when given.
    #[serde(default)]
    pub port: Option<u16>,
    /// Pinned SHA-256 hashes (base64) of a SubjectPublicKeyInfo somewhere in the chain.
    #[serde(default)]
    pub spki_sha256: Vec<String>,
    /// Names of the CAs allowed to issue the leaf (substring of the issuer CN or O).
    #[serde(default)]
    pub issuers: Vec<String>,
}

/// A set of endpoint expectations; the first matching entry applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Entries in file order.
    pub endpoints: Vec<Endpoint>,
}

/// The verdict for one presented chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Interception {
    /// The chain matches what is expected.
    AsExpected,
    /// The chain does not: something between us and the server re-signed it.
    Intercepted {
        /// The issuer of the presented leaf: the intercepting CA.
        intercepting_ca: String,
        /// What was expected instead.
        expected: String,
    },
}

impl Expectations {
    /// Parse an expectations file; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Expectations, Error> {
        let raw: RawFile = toml::from_str(text).map_err(|e| Error::Input {
            location: Location::at(origin, text, e.span().map(|s| s.start)),
            field: "expectations".into(),
            message: e.message().to_string(),
        })?;
        let mut endpoints = Vec::new();
        for spanned in raw.endpoint {
            let at = Location::at(origin, text, Some(spanned.span().start));
            let ep = spanned.into_inner();
            let bad = |field: &str, message: String| Error::Input {
                location: at.clone(),
                field: format!("endpoint {:?}: {field}", ep.host),
                message,
            };
            if ep.host.trim().is_empty() {
                return Err(bad("host", "empty".into()));
            }
            if ep.spki_sha256.is_empty() && ep.issuers.is_empty() {
                return Err(bad(
                    "spki_sha256/issuers",
                    "give pinned SPKI hashes, expected issuers, or both".into(),
                ));
            }
            for pin in &ep.spki_sha256 {
                use base64::Engine as _;
                let ok = base64::engine::general_purpose::STANDARD
                    .decode(pin)
                    .map(|b| b.len() == 32)
                    .unwrap_or(false);
                if !ok {
                    return Err(bad(
                        "spki_sha256",
                        format!("expected base64 of 32 bytes, found {pin:?}"),
                    ));
                }
            }
            endpoints.push(ep);
        }
        Ok(Expectations { endpoints })
    }

    /// The documented Microsoft defaults ([`MICROSOFT_DEFAULTS`]).
    pub fn microsoft_defaults() -> Result<Expectations, Error> {
        Expectations::parse(MICROSOFT_DEFAULTS, "built-in Microsoft defaults")
    }

    /// Append `other`'s entries after ours (ours take precedence).
    pub fn extend(&mut self, other: Expectations) {
        self.endpoints.extend(other.endpoints);
    }

    /// The entry for `host:port`, if any.
    pub fn find(&self, host: &str, port: u16) -> Option<&Endpoint> {
        let host = host.to_ascii_lowercase();
        self.endpoints.iter().find(|ep| {
            ep.port.is_none_or(|p| p == port) && host_matches(&ep.host.to_ascii_lowercase(), &host)
        })
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1),
        None => pattern == host,
    }
}

/// Compare a presented chain (leaf first) with `ep`.
pub fn evaluate(ep: &Endpoint, chain: &[CertSummary]) -> Interception {
    let Some(leaf) = chain.first() else {
        return Interception::Intercepted {
            intercepting_ca: "(no certificate presented)".into(),
            expected: describe(ep),
        };
    };
    let pin_ok = ep.spki_sha256.is_empty()
        || chain
            .iter()
            .any(|c| ep.spki_sha256.iter().any(|p| p == &c.spki_sha256));
    let issuer_ok = ep.issuers.is_empty() || {
        let issuer = leaf.issuer.to_ascii_lowercase();
        ep.issuers
            .iter()
            .any(|want| issuer.contains(&want.to_ascii_lowercase()))
    };
    if pin_ok && issuer_ok {
        Interception::AsExpected
    } else {
        Interception::Intercepted {
            intercepting_ca: if leaf.issuer_name.is_empty() {
                leaf.issuer.clone()
            } else {
                leaf.issuer_name.clone()
            },
            expected: describe(ep),
        }
    }
}

fn describe(ep: &Endpoint) -> String {
    let mut parts = Vec::new();
    if !ep.issuers.is_empty() {
        parts.push(format!("issuer one of {}", ep.issuers.join(", ")));
    }
    if !ep.spki_sha256.is_empty() {
        parts.push(format!("SPKI pin one of {}", ep.spki_sha256.join(", ")));
    }
    parts.join(" and ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cert(issuer: &str, issuer_name: &str, spki: &str) -> CertSummary {
        CertSummary {
            subject: "CN=leaf".into(),
            issuer: issuer.into(),
            issuer_name: issuer_name.into(),
            not_before: 0,
            not_after: 0,
            subject_alt_names: vec![],
            spki_sha256: spki.into(),
        }
    }

    const PIN: &str = "q4PO2G2cbkZhZ82+JgmRUyGMoAeozA+BSXVXQWB8XWQ=";

    #[test]
    fn matches_hosts_and_ports() {
        let e = Expectations::parse(
            "[[endpoint]]\nhost = \"*.corp.test\"\nport = 636\nissuers = [\"Corp CA\"]\n",
            "e.toml",
        )
        .unwrap();
        assert!(e.find("DC1.corp.test", 636).is_some());
        assert!(e.find("dc1.corp.test", 443).is_none());
        assert!(e.find("corp.test", 636).is_none());
        assert!(e.find("evilcorp.test", 636).is_none());
    }

    #[test]
    fn unexpected_issuer_is_interception_naming_it() {
        let ep = Endpoint {
            host: "x".into(),
            port: None,
            spki_sha256: vec![],
            issuers: vec!["Microsoft".into()],
        };
        let ok = [cert(
            "CN=Microsoft Azure RSA TLS Issuing CA 03, O=Microsoft Corporation",
            "Microsoft Azure RSA TLS Issuing CA 03",
            "a",
        )];
        assert_eq!(evaluate(&ep, &ok), Interception::AsExpected);
        let bad = [cert("CN=mitmproxy, O=mitmproxy", "mitmproxy", "a")];
        let Interception::Intercepted {
            intercepting_ca, ..
        } = evaluate(&ep, &bad)
        else {
            panic!()
        };
        assert_eq!(intercepting_ca, "mitmproxy");
    }

    #[test]
    fn pins_match_any_chain_certificate() {
        let ep = Endpoint {
            host: "x".into(),
            port: None,
            spki_sha256: vec![PIN.into()],
            issuers: vec![],
        };
        let chain = [cert("CN=I", "I", "other"), cert("CN=R", "R", PIN)];
        assert_eq!(evaluate(&ep, &chain), Interception::AsExpected);
        assert!(matches!(
            evaluate(&ep, &chain[..1]),
            Interception::Intercepted { .. }
        ));
    }

    #[test]
    fn bad_files_are_named() {
        let err = Expectations::parse("[[endpoint]]\nhost = \"x\"\n", "e.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("e.toml:1") && err.contains("issuers"),
            "{err}"
        );
        let err = Expectations::parse(
            "[[endpoint]]\nhost = \"x\"\nspki_sha256 = [\"short\"]\n",
            "e.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("32 bytes"), "{err}");
        assert!(
            Expectations::microsoft_defaults()
                .unwrap()
                .find("login.microsoftonline.com", 443)
                .is_some()
        );
    }
}
