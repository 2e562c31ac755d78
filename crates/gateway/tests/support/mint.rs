//! A test issuer whose tokens can carry any claims: an RSA key, its JWKS file, and
//! RS256 signing. The gateway's `local` provider trusts it as a fixed issuer.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

pub const ISSUER: &str = "https://issuer.test/gateway";
pub const TENANT: &str = "7d3c0c4e-2a1b-4c5d-9e8f-0a1b2c3d4e5f";
pub const OTHER_TENANT: &str = "0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d";
pub const AUDIENCE: &str = "api://gateway-test";
pub const APP: &str = "11111111-2222-4333-8444-555555555555";

pub struct Minter {
    pair: KeyPair,
    pub kid: String,
    pub jwks_path: PathBuf,
}

pub fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Minter {
    /// A key and its JWKS written to `dir/jwks.json`.
    pub fn new(dir: &Path) -> Minter {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let kid = "test-key-1".to_string();
        let pk = pair.public_key();
        let jwks = json!({"keys": [{
            "kty": "RSA", "use": "sig", "kid": kid,
            "n": b64(pk.modulus().big_endian_without_leading_zero()),
            "e": b64(pk.exponent().big_endian_without_leading_zero()),
        }]});
        let jwks_path = dir.join("jwks.json");
        std::fs::write(&jwks_path, jwks.to_string()).unwrap();
        Minter {
            pair,
            kid,
            jwks_path,
        }
    }

    /// Claims of a valid app token for the test audience.
    pub fn claims(&self) -> Value {
        let t = now();
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "tid": TENANT,
            "iat": t - 10, "nbf": t - 10, "exp": t + 3600,
            "oid": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "sub": "subject-1",
            "azp": APP, "azpacr": "1", "roles": ["Reader"], "ver": "2.0", "idtyp": "app",
        })
    }

    /// A token with these claims, signed with the header given.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{input}.{}", b64(&sig))
    }

    /// A valid token with these claims.
    pub fn token(&self, claims: &Value) -> String {
        self.sign(
            &json!({"typ": "JWT", "alg": "RS256", "kid": self.kid}),
            claims,
        )
    }

    /// A valid token: the default claims with `changes` merged in (null removes).
    pub fn with(&self, changes: Value) -> String {
        let mut c = self.claims();
        if let (Some(obj), Some(ch)) = (c.as_object_mut(), changes.as_object()) {
            for (k, v) in ch {
                if v.is_null() {
                    obj.remove(k);
                } else {
                    obj.insert(k.clone(), v.clone());
                }
            }
        }
        self.token(&c)
    }
}
