//! Signing algorithms, JSON Web Keys and key sets.
//!
//! Keys are parsed once, when a key set is loaded, into aws-lc-rs `ParsedPublicKey`s:
//! verifying with a pre-parsed key skips the per-signature key set-up that
//! `RsaPublicKeyComponents::verify` (and libraries built on it) pay on every token.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::json::{kind, shown};

/// A signature algorithm this crate can verify.
///
/// Only asymmetric algorithms exist here: `none` and the HMAC family cannot even be
/// named, so no configuration can let a public key be used as an HMAC secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256: what Entra ID signs with.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

impl Algorithm {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
            Algorithm::ES256 => "ES256",
        }
    }

    /// Parse a JOSE name; `None` for anything not supported.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "RS256" => Some(Algorithm::RS256),
            "PS256" => Some(Algorithm::PS256),
            "ES256" => Some(Algorithm::ES256),
            _ => None,
        }
    }

    fn family(self) -> KeyFamily {
        match self {
            Algorithm::RS256 | Algorithm::PS256 => KeyFamily::Rsa,
            Algorithm::ES256 => KeyFamily::EcP256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    EcP256,
}

/// One public key ready to verify signatures.
pub struct VerifyingKey {
    /// `kid`, if the JWK has one.
    pub kid: Option<String>,
    /// `x5t` (SHA-1 certificate thumbprint), if the JWK has one.
    pub x5t: Option<String>,
    /// The issuer the key is published for (Entra's `issuer` key property), possibly
    /// with the `{tenantid}` template.
    pub issuer: Option<String>,
    /// The algorithm pinned by the JWK's `alg`, if any.
    pub pinned_alg: Option<Algorithm>,
    family: KeyFamily,
    /// One parsed key per algorithm it may verify with.
    parsed: Vec<(Algorithm, ParsedPublicKey)>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("x5t", &self.x5t)
            .field("issuer", &self.issuer)
            .field("pinned_alg", &self.pinned_alg)
            .field("family", &self.family)
            .finish()
    }
}

impl VerifyingKey {
    /// The key's id for messages (`kid`, else `x5t`), quoted and cut when long.
    pub fn shown_id(&self) -> String {
        self.kid
            .as_deref()
            .or(self.x5t.as_deref())
            .map_or_else(|| "(no kid)".to_string(), shown)
    }

    /// Whether this key may verify `alg` (its type and its pinned `alg` decide).
    pub fn admits(&self, alg: Algorithm) -> bool {
        self.parsed.iter().any(|(a, _)| *a == alg)
    }

    fn material(&self) -> Vec<(Algorithm, &[u8])> {
        self.parsed.iter().map(|(a, k)| (*a, k.as_ref())).collect()
    }

    /// Verify `signature` over `message` with `alg`; false when the key does not
    /// admit `alg` or the signature is wrong.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.parsed
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }
}

/// The members of a JWK this crate reads, each a string when present.
#[derive(Default)]
struct RawJwk {
    kty: Option<String>,
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    kid: Option<String>,
    x5t: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    issuer: Option<String>,
}

impl RawJwk {
    /// Read a key; a member of the wrong type makes the key unusable, named.
    fn from_value(value: &serde_json::Value) -> Result<RawJwk, String> {
        let serde_json::Value::Object(map) = value else {
            return Err(format!("a JSON {}, not a key object", kind(value)));
        };
        let string = |name: &str| -> Result<Option<String>, String> {
            match map.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!(
                    "`{name}` must be a string, found a {}",
                    kind(other)
                )),
            }
        };
        let key_ops = match map.get("key_ops") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Array(ops)) => Some(
                ops.iter()
                    .map(|o| o.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or("`key_ops` must be an array of strings")?,
            ),
            Some(other) => {
                return Err(format!(
                    "`key_ops` must be an array of strings, found a {}",
                    kind(other)
                ));
            }
        };
        Ok(RawJwk {
            kty: string("kty")?,
            use_: string("use")?,
            key_ops,
            kid: string("kid")?,
            x5t: string("x5t")?,
            alg: string("alg")?,
            n: string("n")?,
            e: string("e")?,
            crv: string("crv")?,
            x: string("x")?,
            y: string("y")?,
            issuer: string("issuer")?,
        })
    }
}

/// A loaded key set: keys indexed by `kid` and `x5t`.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
    by_kid: HashMap<String, usize>,
    by_x5t: HashMap<String, usize>,
    /// Keys of the document that were skipped (encryption keys, unsupported types),
    /// with the reason, for diagnostics.
    pub skipped: Vec<String>,
    /// Why the skipped keys that have a `kid` were skipped, by `kid`: a token naming
    /// one is told why its key is refused rather than that it is unknown.
    skipped_by_kid: HashMap<String, String>,
}

impl KeySet {
    /// Parse a JWKS document. Keys for other uses or of unsupported types are skipped
    /// (and listed in `skipped`); a document with no usable key is an error.
    pub fn from_json(bytes: &[u8], allowed: &[Algorithm]) -> Result<KeySet, String> {
        let doc: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a JWKS document: not valid JSON: {e}"))?;
        let keys = match doc.get("keys") {
            Some(serde_json::Value::Array(keys)) => keys,
            Some(other) => {
                return Err(format!(
                    "not a JWKS document: `keys` is a {}, not an array",
                    kind(other)
                ));
            }
            None => {
                return Err(format!(
                    "not a JWKS document: a JSON {} without `keys`",
                    kind(&doc)
                ));
            }
        };
        let mut set = KeySet::default();
        for (i, value) in keys.iter().enumerate() {
            let jwk = match RawJwk::from_value(value) {
                Ok(j) => j,
                Err(e) => {
                    set.skipped.push(format!("keys[{i}]: {e}"));
                    continue;
                }
            };
            match parse_jwk(&jwk, allowed) {
                Ok(key) => set.insert(key),
                Err(why) => {
                    let kid = jwk.kid.as_deref().map_or_else(|| "(none)".into(), shown);
                    set.skipped.push(format!("keys[{i}] (kid {kid}): {why}"));
                    if let Some(k) = jwk.kid {
                        set.skipped_by_kid.entry(k).or_insert(why);
                    }
                }
            }
        }
        if set.keys.is_empty() {
            return Err(format!(
                "no usable signing key (skipped: {})",
                if set.skipped.is_empty() {
                    "none, the set is empty".to_string()
                } else {
                    set.skipped.join("; ")
                }
            ));
        }
        Ok(set)
    }

    fn insert(&mut self, key: VerifyingKey) {
        let i = self.keys.len();
        if let Some(kid) = &key.kid {
            self.by_kid.entry(kid.clone()).or_insert(i);
        }
        if let Some(x5t) = &key.x5t {
            self.by_x5t.entry(x5t.clone()).or_insert(i);
        }
        self.keys.push(Arc::new(key));
    }

    /// Keep the old `Arc` of every key that is unchanged (same ids, same key bytes), so
    /// that verified-token cache entries stay valid across refreshes while a removed
    /// or replaced key invalidates its entries.
    pub fn reuse_unchanged(&mut self, old: &KeySet) {
        for slot in &mut self.keys {
            let same = slot
                .kid
                .as_deref()
                .and_then(|kid| old.by_kid(kid))
                .or_else(|| slot.x5t.as_deref().and_then(|x| old.by_x5t(x)));
            if let Some(prev) = same
                && prev.kid == slot.kid
                && prev.x5t == slot.x5t
                && prev.issuer == slot.issuer
                && prev.pinned_alg == slot.pinned_alg
                && prev.material() == slot.material()
            {
                *slot = prev.clone();
            }
        }
    }

    /// The key named by `kid`.
    pub fn by_kid(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.by_kid.get(kid).and_then(|&i| self.keys.get(i))
    }

    /// The key whose certificate thumbprint is `x5t` (v1 tokens carry it).
    pub fn by_x5t(&self, x5t: &str) -> Option<&Arc<VerifyingKey>> {
        self.by_x5t.get(x5t).and_then(|&i| self.keys.get(i))
    }

    /// Why the published key `kid` is not usable, when it was skipped.
    pub fn skipped_reason(&self, kid: &str) -> Option<&str> {
        self.skipped_by_kid.get(kid).map(String::as_str)
    }

    /// The usable keys that admit `alg`, in the document's order.
    pub fn admitting(&self, alg: Algorithm) -> impl Iterator<Item = &Arc<VerifyingKey>> {
        self.keys.iter().filter(move |k| k.admits(alg))
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key (never true for a set built by `from_json`).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s of the set, for diagnostics.
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }
}

/// The size of an RSA modulus in bits (big-endian bytes, leading zeros ignored).
fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

fn b64(field: &str, value: &Option<String>) -> Result<Vec<u8>, String> {
    let v = value
        .as_deref()
        .ok_or_else(|| format!("missing `{field}`"))?;
    URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .map_err(|e| format!("`{field}` is not base64url: {e}"))
}

fn parse_jwk(jwk: &RawJwk, allowed: &[Algorithm]) -> Result<VerifyingKey, String> {
    if let Some(u) = &jwk.use_
        && u != "sig"
    {
        return Err(format!("`use` is {u:?}, not \"sig\""));
    }
    if let Some(ops) = &jwk.key_ops
        && !ops.iter().any(|o| o == "verify")
    {
        return Err("`key_ops` does not include \"verify\"".into());
    }
    let pinned_alg = match &jwk.alg {
        None => None,
        Some(name) => {
            Some(Algorithm::from_name(name).ok_or_else(|| format!("unsupported `alg` {name:?}"))?)
        }
    };
    let (family, candidates): (KeyFamily, &[Algorithm]) = match jwk.kty.as_deref() {
        Some("RSA") => (KeyFamily::Rsa, &[Algorithm::RS256, Algorithm::PS256]),
        Some("EC") => {
            if jwk.crv.as_deref() != Some("P-256") {
                return Err(format!("unsupported EC curve {:?}", jwk.crv));
            }
            (KeyFamily::EcP256, &[Algorithm::ES256])
        }
        other => return Err(format!("unsupported key type {other:?}")),
    };
    if let Some(alg) = pinned_alg
        && alg.family() != family
    {
        return Err(format!("`alg` {alg} does not fit key type {family:?}"));
    }
    let mut parsed = Vec::new();
    for &alg in candidates {
        if !allowed.contains(&alg) || pinned_alg.is_some_and(|p| p != alg) {
            continue;
        }
        let key = match family {
            KeyFamily::Rsa => {
                let n = b64("n", &jwk.n)?;
                let e = b64("e", &jwk.e)?;
                let bits = rsa_bits(&n);
                if bits < 2048 {
                    // Microsoft.IdentityModel still verifies with 1024-bit keys; a key
                    // that small is within reach of a factoring budget, so not here.
                    return Err(format!(
                        "an RSA key of {bits} bits: at least 2048 bits are required"
                    ));
                }
                let params = match alg {
                    Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA256,
                };
                RsaPublicKeyComponents { n: &n, e: &e }
                    .to_parsed_public_key(params)
                    .map_err(|e| format!("invalid RSA key: {e}"))?
            }
            KeyFamily::EcP256 => {
                let x = b64("x", &jwk.x)?;
                let y = b64("y", &jwk.y)?;
                if x.len() != 32 || y.len() != 32 {
                    return Err("P-256 coordinates must be 32 bytes".into());
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .map_err(|e| format!("invalid P-256 key: {e}"))?
            }
        };
        parsed.push((alg, key));
    }
    if parsed.is_empty() {
        return Err("no allowed algorithm fits this key".into());
    }
    Ok(VerifyingKey {
        kid: jwk.kid.clone(),
        x5t: jwk.x5t.clone(),
        issuer: jwk.issuer.clone(),
        pinned_alg,
        family,
        parsed,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ALL: [Algorithm; 3] = [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];

    #[test]
    fn skips_encryption_and_unknown_keys_but_keeps_signing_keys() {
        let doc = br#"{"keys":[
            {"kty":"RSA","use":"enc","kid":"e","n":"AQAB","e":"AQAB"},
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"EC","crv":"P-384","kid":"p384","x":"AA","y":"AA"},
            {"kty":"EC","crv":"P-256","kid":"ec","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}
        ]}"#;
        let set = KeySet::from_json(doc, &ALL).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.by_kid("ec").unwrap().admits(Algorithm::ES256));
        assert_eq!(set.skipped.len(), 3, "{:?}", set.skipped);
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error() {
        let err =
            KeySet::from_json(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#, &ALL).unwrap_err();
        assert!(err.contains("no usable signing key"), "{err}");
        assert!(KeySet::from_json(b"[]", &ALL).is_err());
        assert!(KeySet::from_json(b"\xff", &ALL).is_err());
    }

    #[test]
    fn pinned_alg_must_fit_the_key_type() {
        let doc = br#"{"keys":[{"kty":"EC","crv":"P-256","alg":"RS256","kid":"x","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;
        assert!(KeySet::from_json(doc, &ALL).is_err());
    }
}
