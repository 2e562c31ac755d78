//! The identity a verified client certificate establishes.
//!
//! The TLS layer verifies the chain against the listener's CAs; this module only
//! reads the leaf's subject and subject alternative names into strings that
//! requirements compare and identity headers carry.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};
use x509_parser::x509::AttributeTypeAndValue;

use crate::error::PolicyError;

/// A client certificate's subject and SANs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject as an RFC 4514 string: most specific RDN first, `,` between RDNs,
    /// `+` inside multi-valued RDNs, RFC 4514 short names (CN, C, L, ST, STREET, O,
    /// OU, DC, UID) and dotted OIDs for other attributes
    /// (e.g. `CN=agent,OU=Sync,O=Example`).
    pub subject: String,
    /// The subject alternative names, each as `dns:NAME`, `uri:URI`, `email:ADDR` or
    /// `ip:ADDR`. Other name forms (directory names, other names) are not listed.
    pub sans: Vec<String>,
}

impl CertIdentity {
    /// Reads the subject and SANs of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertIdentity, PolicyError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| PolicyError::Certificate(format!("not a DER X.509 certificate: {e}")))?;
        let subject = rfc4514(cert.subject());
        let mut sans = Vec::new();
        let ext = cert
            .subject_alternative_name()
            .map_err(|e| PolicyError::Certificate(format!("bad subjectAltName extension: {e}")))?;
        if let Some(ext) = ext {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(s) => sans.push(format!("dns:{s}")),
                    GeneralName::URI(s) => sans.push(format!("uri:{s}")),
                    GeneralName::RFC822Name(s) => sans.push(format!("email:{s}")),
                    GeneralName::IPAddress(b) => {
                        if let Some(ip) = ip_from_bytes(b) {
                            sans.push(format!("ip:{ip}"));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(CertIdentity { subject, sans })
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        return Some(IpAddr::V4(Ipv4Addr::from(a)));
    }
    if let Ok(a) = <[u8; 16]>::try_from(b) {
        return Some(IpAddr::V6(Ipv6Addr::from(a)));
    }
    None
}

/// RFC 4514 short names (section 3); other attributes are written as dotted OIDs.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// The RFC 4514 string of a name. x509-parser's `Display` lists RDNs in certificate
/// order with `, `; RFC 4514 wants the reverse order, so the string is built here.
fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            match short_name(&oid) {
                Some(s) => out.push_str(s),
                None => out.push_str(&oid),
            }
            out.push('=');
            escape_value(&attr_string(atv), &mut out);
        }
    }
    out
}

/// The attribute value as text: the common string types directly, BMPString as
/// UTF-16, anything else read as UTF-8 with replacement characters (lossy, but
/// stable, which is what matching needs).
fn attr_string(atv: &AttributeTypeAndValue<'_>) -> String {
    if let Ok(s) = atv.as_str() {
        return s.to_string();
    }
    let bytes = atv.as_slice();
    if atv.attr_value().tag() == x509_parser::der_parser::asn1_rs::Tag::BmpString {
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// RFC 4514 section 2.4 escaping.
fn escape_value(v: &str, out: &mut String) {
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i + 1 == n => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    /// A self-signed certificate with the given subject parts (certificate order)
    /// and SANs.
    pub(crate) fn cert_der(dn: &[(DnType, &str)], sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_and_sans() {
        let der = cert_der(
            &[
                (DnType::CountryName, "DE"),
                (DnType::OrganizationName, "Example, Inc."),
                (DnType::CommonName, "agent-1"),
            ],
            vec![
                SanType::DnsName("agent.example.com".try_into().unwrap()),
                SanType::URI("spiffe://example/agent".try_into().unwrap()),
                SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
                SanType::IpAddress("192.0.2.7".parse().unwrap()),
                SanType::IpAddress("2001:db8::7".parse().unwrap()),
            ],
        );
        let id = CertIdentity::from_der(&der).unwrap();
        assert_eq!(id.subject, r"CN=agent-1,O=Example\, Inc.,C=DE");
        assert_eq!(
            id.sans,
            vec![
                "dns:agent.example.com",
                "uri:spiffe://example/agent",
                "email:ops@example.com",
                "ip:192.0.2.7",
                "ip:2001:db8::7",
            ]
        );
    }

    #[test]
    fn non_ascii_and_special_subject_values() {
        let der = cert_der(&[(DnType::CommonName, " Jürgen+#1 ")], vec![]);
        let id = CertIdentity::from_der(&der).unwrap();
        assert_eq!(id.subject, r"CN=\ Jürgen\+#1\ ");
        assert!(id.sans.is_empty());
        let der = cert_der(&[(DnType::CustomDnType(vec![2, 5, 4, 5]), "#42")], vec![]);
        assert_eq!(
            CertIdentity::from_der(&der).unwrap().subject,
            r"2.5.4.5=\#42"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let e = CertIdentity::from_der(b"not a certificate").unwrap_err();
        assert!(matches!(e, PolicyError::Certificate(_)));
        assert!(e.to_string().contains("client certificate"), "{e}");
        let der = cert_der(&[(DnType::CommonName, "x")], vec![]);
        for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
            assert!(CertIdentity::from_der(&der[..cut]).is_err(), "cut at {cut}");
        }
    }
}
