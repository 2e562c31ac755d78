//! Plain sentences for what rustls and webpki report, so that `check` never shows a
//! library's variant name (`CaUsedAsEndEntity`) where a person needs to know what
//! is wrong and what to do.
//!
//! Every variant a client handshake or its certificate verification can produce has
//! a sentence; the enums are `non_exhaustive`, so a variant added by a later rustls
//! gets a generic sentence with its name spelt out in words.

use rustls::{
    CertRevocationListError, CertificateError, EncryptedClientHelloError, Error, InvalidMessage,
    PeerIncompatible, PeerMisbehaved,
};

/// What went wrong in a handshake, for people.
pub fn error(e: &Error) -> String {
    match e {
        Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
            "the server sent a TLS message out of order (a broken TLS stack, or a middlebox that rewrites the handshake)".into()
        }
        Error::InvalidEncryptedClientHello(e) => match e {
            EncryptedClientHelloError::InvalidConfigList => {
                "the server's Encrypted Client Hello configuration is malformed".into()
            }
            EncryptedClientHelloError::NoCompatibleConfig => {
                "the server offers no Encrypted Client Hello configuration this client supports".into()
            }
            EncryptedClientHelloError::SniRequired => {
                "Encrypted Client Hello needs a server name, and none was sent".into()
            }
            other => format!(
                "Encrypted Client Hello failed ({})",
                words(&format!("{other:?}"))
            ),
        },
        Error::InvalidMessage(m) => invalid_message(m),
        Error::NoCertificatesPresented => "the server presented no certificate".into(),
        Error::UnsupportedNameType => {
            "the name given is of a type the certificate check does not support".into()
        }
        Error::DecryptError => {
            "a TLS record did not decrypt: the data was altered on the way or the server's keys do not match its certificate".into()
        }
        Error::EncryptError => "this client could not encrypt a TLS record".into(),
        Error::PeerIncompatible(p) => peer_incompatible(p),
        Error::PeerMisbehaved(p) => peer_misbehaved(p),
        Error::AlertReceived(a) => format!(
            "the server sent fatal alert {}",
            intraport_capture::alert_name(u8::from(*a))
        ),
        Error::InvalidCertificate(c) => certificate(c),
        Error::InvalidCertRevocationList(c) => revocation_list(c),
        Error::General(s) => format!("the TLS library failed: {s}"),
        Error::FailedToGetCurrentTime => "the system clock could not be read".into(),
        Error::FailedToGetRandomBytes => "the system gave no random bytes".into(),
        Error::HandshakeNotComplete => "the handshake did not complete".into(),
        Error::PeerSentOversizedRecord => {
            "the server sent a TLS record larger than TLS allows (not TLS, or a broken stack)".into()
        }
        Error::NoApplicationProtocol => {
            "the server supports none of the offered application protocols (ALPN h2, http/1.1)".into()
        }
        Error::BadMaxFragmentSize => "the maximum fragment size is out of range".into(),
        Error::InconsistentKeys(_) => {
            "the client certificate and its private key do not match".into()
        }
        Error::Other(o) => format!("the TLS library failed: {o}"),
        other => format!(
            "the TLS handshake failed ({})",
            words(&format!("{other:?}"))
        ),
    }
}

/// Why a certificate was refused, for people.
pub fn certificate(e: &CertificateError) -> String {
    use CertificateError as C;
    match e {
        C::BadEncoding => "a certificate of the chain is not valid DER (corrupt or not a certificate)".into(),
        C::Expired | C::ExpiredContext { .. } => "the certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the certificate is not valid yet (or this machine's clock is behind)".into()
        }
        C::Revoked => "the certificate has been revoked by its issuer".into(),
        C::UnhandledCriticalExtension => {
            "a certificate carries a critical extension this client does not understand".into()
        }
        C::UnknownIssuer => {
            "no path to a trusted root: the issuer is not trusted (pass its CA with --ca)".into()
        }
        C::UnknownRevocationStatus => "the certificate's revocation status is unknown".into(),
        C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
            "the certificate revocation list has expired".into()
        }
        C::BadSignature => {
            "a certificate's signature does not verify with its issuer's key (altered, or signed by another key of the same name)".into()
        }
        #[allow(deprecated)]
        C::UnsupportedSignatureAlgorithm
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "a certificate is signed with an algorithm this client does not accept (SHA-1, MD5 or an unusual curve)".into()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the certificate does not name the host".into()
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "the certificate is not meant for TLS servers (its extended key usage lacks serverAuth)".into()
        }
        C::InvalidOcspResponse => "the server stapled an OCSP response that is not valid".into(),
        C::ApplicationVerificationFailure => "the certificate was refused by this check".into(),
        C::Other(o) => match o.0.downcast_ref::<webpki::Error>() {
            Some(w) => webpki_error(w),
            None => format!("the certificate was refused: {o}"),
        },
        other => format!(
            "the certificate was refused ({})",
            words(&format!("{other:?}"))
        ),
    }
}

/// The webpki errors that rustls passes on without a variant of its own.
fn webpki_error(e: &webpki::Error) -> String {
    use webpki::Error as W;
    match e {
        W::CaUsedAsEndEntity => "the server's certificate is a CA certificate used as a leaf: self-signed? pass --ca".into(),
        W::EndEntityUsedAsCa => {
            "a certificate that is not a CA signed the server's certificate (the chain is built wrong)".into()
        }
        W::CertDistrusted => "the certificate is distrusted by the trust store".into(),
        W::EmptyEkuExtension => "the certificate's extended key usage is empty".into(),
        W::ExtensionValueInvalid => "a certificate extension holds an invalid value".into(),
        W::InvalidNetworkMaskConstraint => "a name constraint has an invalid network mask".into(),
        W::InvalidSerialNumber => "a certificate's serial number is invalid".into(),
        W::MalformedDnsIdentifier => "a certificate names a malformed DNS name".into(),
        W::MalformedExtensions => "a certificate's extensions are malformed".into(),
        W::MalformedNameConstraint => "a CA's name constraints are malformed".into(),
        W::MaximumNameConstraintComparisonsExceeded
        | W::MaximumPathBuildCallsExceeded
        | W::MaximumSignatureChecksExceeded => {
            "the chain is too complex to verify (too many candidate paths)".into()
        }
        W::MaximumPathDepthExceeded => "the chain is longer than a verifier accepts".into(),
        W::NameConstraintViolation => {
            "the certificate names a host its issuing CA may not issue for (name constraints)".into()
        }
        W::PathLenConstraintViolated => {
            "the chain is longer than a CA's path length constraint allows".into()
        }
        W::SignatureAlgorithmMismatch => {
            "a certificate's inner and outer signature algorithms differ".into()
        }
        W::UnsupportedCertVersion => "a certificate is not X.509 version 3".into(),
        W::UnsupportedCriticalExtension => {
            "a certificate carries a critical extension this client does not understand".into()
        }
        W::UnsupportedNameType => "the certificate names the host in an unsupported form".into(),
        W::BadDer | W::BadDerTime | W::TrailingData(_) => {
            "a certificate of the chain is not valid DER".into()
        }
        other => format!(
            "the certificate was refused ({})",
            words(&format!("{other:?}"))
        ),
    }
}

fn revocation_list(e: &CertRevocationListError) -> String {
    format!(
        "a certificate revocation list was refused ({})",
        words(&format!("{e:?}"))
    )
}

fn invalid_message(m: &InvalidMessage) -> String {
    use InvalidMessage as M;
    let what = match m {
        M::CertificatePayloadTooLarge => "a certificate message too large",
        M::HandshakePayloadTooLarge | M::MessageTooLarge => "a message too large",
        M::InvalidCcs => "a malformed ChangeCipherSpec",
        M::InvalidContentType => "a record of unknown type",
        M::UnknownProtocolVersion => "a record of an unknown protocol version",
        M::MessageTooShort | M::MissingData(_) => "a message cut short",
        M::TrailingData(_) => "a message with bytes after its end",
        M::UnexpectedMessage(_) => "a message it may not send",
        M::InvalidServerName => "a malformed server name",
        M::UnsupportedCompression => "a compression method TLS 1.2 and 1.3 do not allow",
        M::InvalidDhParams | M::UnsupportedCurveType | M::MissingKeyExchange => {
            "a key exchange this client cannot use"
        }
        _ => "",
    };
    if what.is_empty() {
        format!(
            "the server sent a malformed TLS message ({}): not TLS, or a middlebox rewriting the handshake",
            words(&format!("{m:?}"))
        )
    } else {
        format!("the server sent {what}: not TLS, or a middlebox rewriting the handshake")
    }
}

fn peer_incompatible(p: &PeerIncompatible) -> String {
    use PeerIncompatible as P;
    match p {
        P::ServerDoesNotSupportTls12Or13 | P::Tls12NotOffered | P::Tls12NotOfferedOrEnabled => {
            "the server does not speak TLS 1.2 or 1.3".into()
        }
        P::ServerTlsVersionIsDisabledByOurConfig => {
            "the server chose a TLS version this check does not allow (below TLS 1.2)".into()
        }
        P::NoCipherSuitesInCommon => "the server and this client share no cipher suite".into(),
        P::NoKxGroupsInCommon => "the server and this client share no key exchange group".into(),
        P::NoSignatureSchemesInCommon | P::NoCertificateRequestSignatureSchemesInCommon => {
            "the server and this client share no signature algorithm".into()
        }
        P::NoEcPointFormatsInCommon | P::UncompressedEcPointsRequired | P::EcPointsExtensionRequired => {
            "the server does not accept uncompressed elliptic curve points".into()
        }
        P::ExtendedMasterSecretExtensionRequired => {
            "the server does not support the extended master secret (RFC 7627), which TLS 1.2 needs here".into()
        }
        P::NullCompressionRequired => "the server requires TLS compression".into(),
        P::ServerRejectedEncryptedClientHello(_) => {
            "the server rejected Encrypted Client Hello".into()
        }
        other => format!(
            "the server and this client cannot agree on the handshake ({})",
            words(&format!("{other:?}"))
        ),
    }
}

fn peer_misbehaved(p: &PeerMisbehaved) -> String {
    let name = format!("{p:?}");
    let what = if name.contains("HelloRetryRequest") || name.contains("Retry") {
        "its HelloRetryRequest breaks the TLS 1.3 rules"
    } else if name.starts_with("SelectedUnoffered") || name.starts_with("SelectedUnusable") {
        "it chose something this client never offered"
    } else if name.starts_with("Unsolicited") || name == "UnexpectedCleartextExtension" {
        "it sent an extension this client did not ask for"
    } else if name.starts_with("Duplicate") {
        "it sent the same extension twice"
    } else if name.contains("Signed") || name.contains("Signature") {
        "it signed the handshake with an algorithm it may not use"
    } else if name.contains("KeyShare") || name.contains("Group") {
        "its key share does not match the group"
    } else {
        "it broke the TLS protocol"
    };
    format!(
        "the server's handshake is invalid: {what} ({}); a faulty TLS stack, or a middlebox rewriting the handshake",
        words(&name)
    )
}

/// A variant name in words: `SelectedUnofferedCipherSuite` → "selected unoffered
/// cipher suite" (for the fallbacks only).
fn words(debug: &str) -> String {
    let name = debug.split(['(', ' ', '{']).next().unwrap_or(debug);
    intraport_capture::split_camel(name, ' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_sentence_is_a_variant_name() {
        let ca_leaf = CertificateError::Other(rustls::OtherError(std::sync::Arc::new(
            webpki::Error::CaUsedAsEndEntity,
        )));
        let samples = [
            (
                error(&Error::PeerIncompatible(
                    PeerIncompatible::NoCipherSuitesInCommon,
                )),
                "NoCipherSuitesInCommon",
            ),
            (
                error(&Error::PeerMisbehaved(
                    PeerMisbehaved::SelectedUnofferedCipherSuite,
                )),
                "SelectedUnofferedCipherSuite",
            ),
            (
                error(&Error::InvalidMessage(InvalidMessage::InvalidCcs)),
                "InvalidCcs",
            ),
            (certificate(&ca_leaf), "CaUsedAsEndEntity"),
            (
                certificate(&CertificateError::InvalidPurpose),
                "InvalidPurpose",
            ),
            (
                error(&Error::AlertReceived(
                    rustls::AlertDescription::ProtocolVersion,
                )),
                "ProtocolVersion",
            ),
        ];
        for (sentence, variant) in &samples {
            assert!(!sentence.contains(variant), "{sentence}");
        }
        assert_eq!(
            samples[3].0,
            "the server's certificate is a CA certificate used as a leaf: self-signed? pass --ca"
        );
        assert!(
            samples[1].0.contains("selected unoffered cipher suite"),
            "{}",
            samples[1].0
        );
        assert_eq!(samples[5].0, "the server sent fatal alert protocol_version");
    }
}
