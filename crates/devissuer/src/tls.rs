//! HTTPS for the issuer: a throwaway CA generated at start, a server
//! certificate for 127.0.0.1 and localhost issued by it, and the CA written
//! as PEM so curl (`--cacert`) and Python (`verify=`) can trust it.
//! ECDSA P-256 keys keep start-up fast; only token signing needs RSA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

/// The generated CA's PEM, the server certificate and key (PEM), and the server
/// configuration they back.
pub(crate) struct Tls {
    pub config: Arc<ServerConfig>,
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: String,
}

pub(crate) fn generate() -> Result<Tls, Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "intraport dev issuer CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::default();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.subject_alt_names = vec![
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::DnsName("localhost".try_into()?),
    ];
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        ca_pem: ca_cert.pem(),
        server_pem: leaf_cert.pem(),
        server_key_pem: leaf_key.serialize_pem(),
    })
}

/// Where [`write_files`] put the PEM files.
pub(crate) struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Writes the CA certificate, the server certificate and its key (owner-only) into
/// `dir` (created if missing). The server pair lets `intraport dev` put its gateway
/// under the same CA, so that clients trust one file.
pub(crate) fn write_files(dir: &Path, tls: &Tls) -> Result<TlsFiles, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::StateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let write = |name: &str, pem: &str, private: bool| {
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        options
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, pem.as_bytes()))
            .map_err(|source| Error::StateDir {
                path: path.clone(),
                source,
            })?;
        Ok::<_, Error>(path)
    };
    Ok(TlsFiles {
        ca: write("ca.pem", &tls.ca_pem, false)?,
        server_cert: write("server.pem", &tls.server_pem, false)?,
        server_key: write("server-key.pem", &tls.server_key_pem, true)?,
    })
}
