//! Certificates generated for a test: a CA, server and client certificates, written
//! as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A CA that can issue certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A leaf certificate and its key, as PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> Leaf {
        self.leaf(
            "localhost",
            vec![
                SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
                SanType::DnsName("localhost".try_into().unwrap()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate `CN=<cn>` with a DNS SAN.
    pub fn client(&self, cn: &str, dns: &str) -> Leaf {
        self.leaf(
            cn,
            vec![SanType::DnsName(dns.try_into().unwrap())],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn leaf(&self, cn: &str, sans: Vec<SanType>, eku: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = sans;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![eku];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The files a gateway test uses, in a fresh directory.
pub struct Pki {
    pub dir: PathBuf,
    pub server_ca: Ca,
    pub client_ca: Ca,
}

impl Pki {
    /// A fresh directory with `server.pem`, `server-key.pem`, `server-ca.pem`,
    /// `client-ca.pem`, and client certificates `agent.pem`/`agent-key.pem`
    /// (CN=agent) and `other.pem`/`other-key.pem` (CN=other), plus `rogue.pem` /
    /// `rogue-key.pem` from a CA the gateway does not trust.
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("intraport-gw-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let server_ca = Ca::new("test server CA");
        let client_ca = Ca::new("test client CA");
        let rogue_ca = Ca::new("rogue CA");
        let server = server_ca.server();
        write(&dir, "server.pem", &server.cert_pem);
        write(&dir, "server-key.pem", &server.key_pem);
        write(&dir, "server-ca.pem", &server_ca.pem);
        write(&dir, "client-ca.pem", &client_ca.pem);
        for (name, leaf) in [
            ("agent", client_ca.client("agent", "agent.example.test")),
            ("other", client_ca.client("other", "other.example.test")),
            ("rogue", rogue_ca.client("agent", "agent.example.test")),
        ] {
            write(&dir, &format!("{name}.pem"), &leaf.cert_pem);
            write(&dir, &format!("{name}-key.pem"), &leaf.key_pem);
        }
        Pki {
            dir,
            server_ca,
            client_ca,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}
