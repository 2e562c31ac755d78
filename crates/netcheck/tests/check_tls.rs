//! `check` against real TLS servers on loopback: rustls in-process and `openssl
//! s_server`, with certificates made for each test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use intraport_netcheck::check::{FindingKind, Severity, check_target};
use intraport_netcheck::expect::{Expectations, Interception};
use intraport_netcheck::legacy::{LegacyAnswer, LegacyVersion};
use intraport_netcheck::target::Target;
use intraport_netcheck::tcp::TcpOutcome;
use intraport_netcheck::tls::{ChainVerdict, HandshakeOutcome};

fn negotiated(r: &intraport_netcheck::check::TargetReport) -> &intraport_netcheck::tls::Negotiated {
    match &r.tls[0].outcome {
        HandshakeOutcome::Completed(n) => n,
        other => panic!("handshake did not complete: {other:?}"),
    }
}

#[tokio::test]
async fn good_certificate_passes_with_details() {
    let ca = Ca::new("Good Test CA");
    let server = rustls_server(&ca.leaf(&["gw.intraport.test"], -1, 365)).await;
    let r = check("gw.intraport.test", server.addr, &options(ca.roots())).await;
    assert!(r.ok, "{:#?}", r.findings);
    let n = negotiated(&r);
    assert_eq!(n.version, "TLSv1.3");
    assert!(
        n.cipher_suite.starts_with("TLS_AES_") || n.cipher_suite.starts_with("TLS_CHACHA20_"),
        "IANA name: {}",
        n.cipher_suite
    );
    assert_eq!(n.verdict, ChainVerdict::Valid);
    assert!(!n.ocsp_stapled);
    assert_eq!(n.chain[0].issuer_name, "Good Test CA");
    assert!((363..=365).contains(&n.leaf_days_left.unwrap()));
    assert!(r.tcp[0].outcome == TcpOutcome::Connected);
    // rustls refuses TLS 1.0/1.1: the probes are answered with an alert or a close.
    assert_eq!(r.legacy.len(), 2);
    assert!(
        r.legacy
            .iter()
            .all(|p| !matches!(p.answer, LegacyAnswer::Accepted { .. })),
        "{:?}",
        r.legacy
    );
}

#[tokio::test]
async fn untrusted_chain_is_a_finding() {
    let ca = Ca::new("Some CA");
    let other = Ca::new("Other CA");
    let server = rustls_server(&ca.leaf(&["gw.intraport.test"], -1, 365)).await;
    let r = check("gw.intraport.test", server.addr, &options(other.roots())).await;
    assert!(!r.ok);
    assert_eq!(kinds(&r), [FindingKind::CertificateUntrusted]);
}

#[tokio::test]
async fn expired_certificate_is_a_finding() {
    let ca = Ca::new("Expiry CA");
    let server = rustls_server(&ca.leaf(&["gw.intraport.test"], -30, -2)).await;
    let r = check("gw.intraport.test", server.addr, &options(ca.roots())).await;
    assert!(!r.ok);
    assert_eq!(kinds(&r), [FindingKind::CertificateExpired]);
    assert!(negotiated(&r).leaf_days_left.unwrap() < 0);
}

#[tokio::test]
async fn certificate_expiring_within_30_days_is_a_warning() {
    let ca = Ca::new("Soon CA");
    let server = rustls_server(&ca.leaf(&["gw.intraport.test"], -1, 10)).await;
    let r = check("gw.intraport.test", server.addr, &options(ca.roots())).await;
    assert!(r.ok, "a warning does not fail the check");
    assert_eq!(kinds(&r), [FindingKind::CertificateExpiringSoon]);
    assert_eq!(r.findings[0].severity, Severity::Warn);
}

#[tokio::test]
async fn wrong_hostname_is_a_finding_rustls_and_openssl() {
    let ca = Ca::new("Name CA");
    let leaf = ca.leaf(&["other.intraport.test"], -1, 365);
    let server = rustls_server(&leaf).await;
    let r = check("gw.intraport.test", server.addr, &options(ca.roots())).await;
    assert_eq!(kinds(&r), [FindingKind::HostnameMismatch]);
    assert!(r.findings[0].message.contains("other.intraport.test"));

    if !have("openssl") {
        return;
    }
    let server = openssl_server(&leaf, &[]);
    let r = check("gw.intraport.test", server.addr, &options(ca.roots())).await;
    assert_eq!(kinds(&r), [FindingKind::HostnameMismatch], "{:#?}", r);
}

#[tokio::test]
async fn openssl_good_and_expired_certificates() {
    if !have("openssl") {
        return;
    }
    let ca = Ca::new("OpenSSL CA");
    let good = openssl_server(&ca.leaf(&["gw.intraport.test"], -1, 365), &[]);
    let r = check("gw.intraport.test", good.addr, &options(ca.roots())).await;
    assert!(r.ok, "{:#?}", r.findings);
    assert_eq!(negotiated(&r).version, "TLSv1.3");

    let expired = openssl_server(&ca.leaf(&["gw.intraport.test"], -30, -1), &[]);
    let r = check("gw.intraport.test", expired.addr, &options(ca.roots())).await;
    assert_eq!(kinds(&r), [FindingKind::CertificateExpired]);
}

#[tokio::test]
async fn tls_1_0_and_1_1_accepted_by_openssl_are_findings() {
    if !have("openssl") {
        return;
    }
    let ca = Ca::new("Legacy CA");
    let leaf = ca.leaf(&["gw.intraport.test"], -1, 365);
    // Debian's OpenSSL allows only TLS 1.2+ at security level 2; the legacy server
    // lowers both on purpose.
    let server = openssl_server(
        &leaf,
        &["-min_protocol", "TLSv1", "-cipher", "DEFAULT:@SECLEVEL=0"],
    );
    let r = check("gw.intraport.test", server.addr, &options(ca.roots())).await;
    assert!(!r.ok);
    assert_eq!(
        kinds(&r),
        [
            FindingKind::LegacyTlsAccepted,
            FindingKind::LegacyTlsAccepted
        ],
        "{:#?}",
        r.legacy
    );
    assert_eq!(r.legacy[0].version, LegacyVersion::Tls10);
    assert!(r.findings[0].message.contains("TLS 1.0"));
    assert!(r.findings[1].message.contains("TLS 1.1"));

    // Only TLS 1.1 enabled besides 1.2+: exactly one finding.
    let server = openssl_server(
        &leaf,
        &["-min_protocol", "TLSv1.1", "-cipher", "DEFAULT:@SECLEVEL=0"],
    );
    let r = check("gw.intraport.test", server.addr, &options(ca.roots())).await;
    assert_eq!(kinds(&r), [FindingKind::LegacyTlsAccepted]);
    assert!(r.findings[0].message.contains("TLS 1.1"));
    assert!(matches!(
        r.legacy[0].answer,
        LegacyAnswer::Alert { .. } | LegacyAnswer::Closed
    ));

    // Debian's defaults: both refused with a fatal alert (OpenSSL sends internal_error
    // when no enabled version fits, rather than protocol_version).
    let modern = openssl_server(&leaf, &[]);
    let r = check("gw.intraport.test", modern.addr, &options(ca.roots())).await;
    assert!(r.ok, "{:#?}", r.findings);
    assert!(
        r.legacy
            .iter()
            .all(|p| matches!(&p.answer, LegacyAnswer::Alert { .. })),
        "{:?}",
        r.legacy
    );
}

#[tokio::test]
async fn unexpected_issuer_is_reported_as_interception() {
    let real = Ca::new("Real Issuing CA");
    let appliance = Ca::new("Corp DPI Appliance CA");
    let expectations = Expectations::parse(
        "[[endpoint]]\nhost = \"*.intraport.test\"\nissuers = [\"Real Issuing CA\"]\n",
        "expect.toml",
    )
    .unwrap();
    // The appliance's CA is trusted (as on a managed client), so only the expectation
    // can tell.
    let mut opts = options(appliance.roots());
    opts.expectations = expectations.clone();
    let intercepted = rustls_server(&appliance.leaf(&["gw.intraport.test"], -1, 365)).await;
    let r = check("gw.intraport.test", intercepted.addr, &opts).await;
    assert_eq!(kinds(&r), [FindingKind::Interception], "{:#?}", r.findings);
    assert!(r.findings[0].message.contains("Corp DPI Appliance CA"));
    assert!(matches!(
        &r.interception,
        Some(Interception::Intercepted { intercepting_ca, .. }) if intercepting_ca == "Corp DPI Appliance CA"
    ));

    let mut opts = options(real.roots());
    opts.expectations = expectations;
    let genuine = rustls_server(&real.leaf(&["gw.intraport.test"], -1, 365)).await;
    let r = check("gw.intraport.test", genuine.addr, &opts).await;
    assert!(r.ok, "{:#?}", r.findings);
    assert_eq!(r.interception, Some(Interception::AsExpected));
}

#[tokio::test]
async fn pinned_spki_mismatch_is_interception() {
    let ca = Ca::new("Pin CA");
    let server = rustls_server(&ca.leaf(&["gw.intraport.test"], -1, 365)).await;
    // First learn the real pin from a check, then pin something else.
    let r = check("gw.intraport.test", server.addr, &options(ca.roots())).await;
    let real_pin = negotiated(&r).chain[0].spki_sha256.clone();
    let mut opts = options(ca.roots());
    opts.expectations = Expectations::parse(
        &format!("[[endpoint]]\nhost = \"gw.intraport.test\"\nspki_sha256 = [\"{real_pin}\"]\n"),
        "e.toml",
    )
    .unwrap();
    assert!(check("gw.intraport.test", server.addr, &opts).await.ok);
    opts.expectations = Expectations::parse(
        "[[endpoint]]\nhost = \"gw.intraport.test\"\nspki_sha256 = [\"q4PO2G2cbkZhZ82+JgmRUyGMoAeozA+BSXVXQWB8XWQ=\"]\n",
        "e.toml",
    )
    .unwrap();
    let r = check("gw.intraport.test", server.addr, &opts).await;
    assert_eq!(kinds(&r), [FindingKind::Interception]);
}

#[tokio::test]
async fn reset_after_client_hello_is_classified() {
    let ca = Ca::new("Relay CA");
    let server = rustls_server(&ca.leaf(&["gw.intraport.test"], -1, 365)).await;
    let mb = relay(server.addr, Middlebox::ResetAfterHello).await;
    let r = check("gw.intraport.test", mb.addr, &options(ca.roots())).await;
    assert!(!r.ok);
    // Reset with and without SNI: not SNI filtering.
    assert_eq!(
        kinds(&r),
        [FindingKind::TlsResetAfterClientHello],
        "{:#?}",
        r.tls
    );
    assert_eq!(r.tls.len(), 2);
    assert!(r.tls[0].sni && !r.tls[1].sni);
}

#[tokio::test]
async fn stall_after_client_hello_is_classified() {
    let ca = Ca::new("Relay CA");
    let server = rustls_server(&ca.leaf(&["gw.intraport.test"], -1, 365)).await;
    let mb = relay(server.addr, Middlebox::StallAfterHello).await;
    let mut opts = options(ca.roots());
    opts.timeout = Duration::from_millis(800);
    let r = check("gw.intraport.test", mb.addr, &opts).await;
    assert_eq!(
        kinds(&r),
        [FindingKind::TlsStallAfterClientHello],
        "{:#?}",
        r.tls
    );
    assert!(r.tls[0].elapsed_ms >= 700.0);
}

#[tokio::test]
async fn sni_based_drop_is_classified_as_sni_filtering() {
    let ca = Ca::new("Relay CA");
    let server = rustls_server(&ca.leaf(&["blocked.intraport.test"], -1, 365)).await;
    let mb = relay(server.addr, Middlebox::DropSni("blocked.intraport.test")).await;
    let r = check("blocked.intraport.test", mb.addr, &options(ca.roots())).await;
    assert_eq!(
        kinds(&r),
        [
            FindingKind::TlsResetAfterClientHello,
            FindingKind::TlsSniFiltered
        ],
        "{:#?}",
        r.tls
    );
    assert!(matches!(r.tls[1].outcome, HandshakeOutcome::Completed(_)));

    // Another name passes through the same relay untouched.
    let server = rustls_server(&ca.leaf(&["open.intraport.test"], -1, 365)).await;
    let mb = relay(server.addr, Middlebox::DropSni("blocked.intraport.test")).await;
    let r = check("open.intraport.test", mb.addr, &options(ca.roots())).await;
    assert!(r.ok, "{:#?}", r.findings);
}

#[tokio::test]
async fn refused_port_is_classified() {
    // Bind, learn the port, close: nothing listens there now.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    drop(l);
    let target = Target::parse(&format!("tcp://127.0.0.1:{}", addr.port())).unwrap();
    let r = check_target(target, &options(Ca::new("x").roots())).await;
    assert_eq!(kinds(&r), [FindingKind::TcpRefused]);
    assert!(r.tls.is_empty());
    assert_eq!(r.target.ip(), Some(IpAddr::from([127, 0, 0, 1])));
}

#[tokio::test]
async fn a_server_speaking_only_tls_1_0_and_1_1_is_reported_as_such() {
    if !have("openssl") {
        return;
    }
    let ca = Ca::new("Old Server CA");
    let leaf = ca.leaf(&["old.intraport.test"], -1, 365);
    let server = openssl_server(
        &leaf,
        &[
            "-min_protocol",
            "TLSv1",
            "-max_protocol",
            "TLSv1.1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ],
    );
    let r = check("old.intraport.test", server.addr, &options(ca.roots())).await;
    assert!(!r.ok);
    // One finding saying what the server speaks, not a bare alert, and no SNI retry
    // (the server answered: nothing on the path filtered the name).
    assert_eq!(kinds(&r), [FindingKind::TlsLegacyOnly], "{:#?}", r.findings);
    assert_eq!(r.tls.len(), 1);
    let m = &r.findings[0].message;
    assert!(m.starts_with("the server speaks only TLS 1.0/1.1"), "{m}");
    assert!(m.contains("alert protocol_version"), "{m}");
    assert!(
        m.contains("TLS 1.0 (with TLS_") && m.contains("TLS 1.1 (with TLS_"),
        "{m}"
    );
    assert!(!m.contains("0x") && !m.contains("ProtocolVersion"), "{m}");
    for p in &r.legacy {
        let LegacyAnswer::Accepted { cipher_suite } = &p.answer else {
            panic!("{p:?}")
        };
        assert!(
            cipher_suite.starts_with("TLS_ECDHE_"),
            "IANA name: {cipher_suite}"
        );
    }
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["findings"][0]["kind"], "tls_legacy_only");
    assert_eq!(json["tls"][0]["description"], "protocol_version");
    // The table says it too.
    let table = intraport_netcheck::check::check_table(std::slice::from_ref(&r));
    assert!(table.contains("only TLSv1.0,TLSv1.1"), "{table}");
}

#[tokio::test]
async fn a_ca_certificate_used_as_the_leaf_is_explained() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(vec!["ca-leaf.intraport.test".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "ca-leaf.intraport.test");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let leaf = Leaf {
        chain: vec![cert.der().clone()],
        key_der: key.serialize_der(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    let server = rustls_server(&leaf).await;
    // Trusted as given with --ca: the chain is refused for being a CA used as a leaf.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let r = check(
        "ca-leaf.intraport.test",
        server.addr,
        &options(std::sync::Arc::new(roots)),
    )
    .await;
    assert_eq!(
        kinds(&r),
        [FindingKind::CertificateInvalid],
        "{:#?}",
        r.findings
    );
    let sentence =
        "the server's certificate is a CA certificate used as a leaf: self-signed? pass --ca";
    assert_eq!(
        negotiated(&r).verdict,
        ChainVerdict::Invalid {
            detail: sentence.into()
        }
    );
    assert_eq!(
        r.findings[0].message,
        format!("the certificate was refused: {sentence}")
    );
}
