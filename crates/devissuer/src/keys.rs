//! Token signing keys: RSA-2048 key pairs with a self-signed certificate
//! each (published as `x5c`), identified like Entra's keys by the base64url
//! SHA-1 thumbprint of that certificate (`kid` = `x5t`), and the rotating set
//! of them.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{CertificateParams, DnType};
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde_json::{Value, json};

use crate::Error;

/// One signing key and its published form.
pub(crate) struct SigningKey {
    pub kid: String,
    pair: KeyPair,
    n: String,
    e: String,
    x5c: String,
}

impl SigningKey {
    /// Generates an RSA-2048 key and its self-signed certificate.
    /// Takes tens to a few hundred milliseconds of CPU (prime search).
    pub(crate) fn generate() -> Result<Self, Error> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| Error::Crypto("RSA-2048 key generation failed".into()))?;
        let pkcs8 = pair
            .as_der()
            .map_err(|_| Error::Crypto("RSA key could not be encoded as PKCS#8".into()))?;
        let cert_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_ref()),
            &rcgen::PKCS_RSA_SHA256,
        )?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "intraport dev issuer token signing");
        let cert = params.self_signed(&cert_key)?;
        let der = cert.der();
        let thumbprint =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        let kid = URL_SAFE_NO_PAD.encode(thumbprint.as_ref());
        let public = pair.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        Ok(Self {
            kid,
            pair,
            n,
            e,
            x5c: STANDARD.encode(der),
        })
    }

    /// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature over `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
            .map_err(|_| Error::Crypto("RS256 signing failed".into()))?;
        Ok(signature)
    }

    /// The key as a JWK, with the Entra-specific `issuer` member.
    pub(crate) fn jwk(&self, issuer: &str) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n,
            "e": self.e,
            "x5c": [self.x5c],
            "issuer": issuer,
        })
    }
}

/// The published keys and which one signs.
pub(crate) struct KeySet {
    /// Newest first; `keys[0]` is the current signing key.
    pub keys: Vec<Arc<SigningKey>>,
}

impl KeySet {
    pub(crate) fn current(&self) -> Option<&Arc<SigningKey>> {
        self.keys.first()
    }
}

/// Lock-free reads for signing and JWKS; writers serialised by a mutex so
/// two rotations never lose a key.
pub(crate) struct Keys {
    set: ArcSwap<KeySet>,
    write: Mutex<()>,
}

impl Keys {
    pub(crate) fn new(first: SigningKey) -> Self {
        Self {
            set: ArcSwap::from_pointee(KeySet {
                keys: vec![Arc::new(first)],
            }),
            write: Mutex::new(()),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<KeySet> {
        self.set.load_full()
    }

    /// Generates a key and makes it current; older keys stay published.
    pub(crate) fn rotate(&self) -> Result<String, Error> {
        let key = Arc::new(SigningKey::generate()?);
        let kid = key.kid.clone();
        let _guard = self.write.lock().map_err(|_| Error::Poisoned)?;
        let old = self.set.load();
        let mut keys = Vec::with_capacity(old.keys.len() + 1);
        keys.push(key);
        keys.extend(old.keys.iter().cloned());
        self.set.store(Arc::new(KeySet { keys }));
        Ok(kid)
    }

    /// Stops publishing a key that no longer signs.
    pub(crate) fn retire(&self, kid: &str) -> Result<(), Error> {
        let _guard = self.write.lock().map_err(|_| Error::Poisoned)?;
        let old = self.set.load();
        match old.keys.iter().position(|k| k.kid == kid) {
            None => Err(Error::UnknownKey(kid.to_string())),
            Some(0) => Err(Error::KeyInUse(kid.to_string())),
            Some(i) => {
                let mut keys = old.keys.clone();
                keys.remove(i);
                self.set.store(Arc::new(KeySet { keys }));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};

    #[test]
    fn signature_verifies_with_published_n_and_e() {
        let key = SigningKey::generate().unwrap();
        let jwk = key.jwk("iss");
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256, "RSA-2048 modulus");
        let sig = key.sign(b"header.payload").unwrap();
        let public = RsaPublicKeyComponents { n: &n, e: &e };
        public
            .verify(&RSA_PKCS1_2048_8192_SHA256, b"header.payload", &sig)
            .unwrap();
        assert!(
            public
                .verify(&RSA_PKCS1_2048_8192_SHA256, b"header.payloaX", &sig)
                .is_err()
        );
    }

    #[test]
    fn kid_is_the_sha1_thumbprint_of_x5c() {
        let key = SigningKey::generate().unwrap();
        let jwk = key.jwk("iss");
        let der = STANDARD.decode(jwk["x5c"][0].as_str().unwrap()).unwrap();
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
        assert_eq!(jwk["kid"], URL_SAFE_NO_PAD.encode(sha1.as_ref()));
        assert_eq!(jwk["kid"], jwk["x5t"]);
        assert_eq!(jwk["kid"].as_str().unwrap().len(), 27);
    }

    #[test]
    fn rotate_and_retire() {
        let keys = Keys::new(SigningKey::generate().unwrap());
        let first = keys.snapshot().current().unwrap().kid.clone();
        let second = keys.rotate().unwrap();
        assert_ne!(first, second);
        let snap = keys.snapshot();
        assert_eq!(snap.current().unwrap().kid, second);
        assert_eq!(snap.keys.len(), 2);
        assert!(matches!(keys.retire(&second), Err(Error::KeyInUse(_))));
        assert!(matches!(keys.retire("nope"), Err(Error::UnknownKey(_))));
        keys.retire(&first).unwrap();
        assert_eq!(keys.snapshot().keys.len(), 1);
    }
}
