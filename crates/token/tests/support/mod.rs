//! Test support: an in-memory RSA issuer that mints tokens with any header and claims,
//! including the malicious ones the validator must refuse.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

pub const TENANT: &str = "8eaef023-2b34-4da1-9baa-8bc8c9d6a490";
pub const OTHER_TENANT: &str = "82229342-1101-4ab6-817b-70c0747630f3";
pub const AUDIENCE: &str = "6e74172b-be56-4843-9ff4-e66a39bb12e3";
pub const AUTHORITY: &str = "https://login.microsoftonline.com";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub struct TestKey {
    pub kid: String,
    pub pair: KeyPair,
}

impl TestKey {
    pub fn new(kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_string(),
            pair: KeyPair::generate(KeySize::Rsa2048).unwrap(),
        }
    }

    pub fn public_der(&self) -> Vec<u8> {
        self.pair.public_key().as_der().unwrap().as_ref().to_vec()
    }

    /// The JWK of this key, with an Entra-style `issuer` property when given.
    pub fn jwk(&self, issuer: Option<&str>) -> Value {
        let pk = self.pair.public_key();
        let mut j = json!({
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
            "n": b64(pk.modulus().big_endian_without_leading_zero()),
            "e": b64(pk.exponent().big_endian_without_leading_zero()),
        });
        if let Some(i) = issuer {
            j["issuer"] = json!(i);
        }
        j
    }

    pub fn sign_raw(&self, input: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input,
                &mut sig,
            )
            .unwrap();
        sig
    }

    pub fn sign_pss(&self, input: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PSS_SHA256,
                &SystemRandom::new(),
                input,
                &mut sig,
            )
            .unwrap();
        sig
    }

    /// A token with this header and claims, RS256-signed by this key.
    pub fn token(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.sign_raw(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    pub fn header(&self) -> Value {
        json!({"typ": "JWT", "alg": "RS256", "kid": self.kid})
    }
}

pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn v2_issuer(tid: &str) -> String {
    format!("{AUTHORITY}/{tid}/v2.0")
}

/// Claims shaped like an Entra v2 app-only access token.
pub fn v2_app_claims(now: u64) -> Value {
    json!({
        "aud": AUDIENCE,
        "iss": v2_issuer(TENANT),
        "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
        "aio": "E2RgYPj", "azp": "f2d5b1c0-1c3a-4b5e-9a51-0a3c2d1e4f60", "azpacr": "1",
        "idtyp": "app",
        "oid": "7f4ae3b5-5c2a-4e70-9d4b-1e9a0b6c2d31", "sub": "7f4ae3b5-5c2a-4e70-9d4b-1e9a0b6c2d31",
        "rh": "0.AAAA", "roles": ["Reader"], "tid": TENANT, "uti": "fqiBqXLPj0eQa82S-IYFAA", "ver": "2.0"
    })
}
