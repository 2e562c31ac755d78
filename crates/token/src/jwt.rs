//! The I/O-free core: parse a compact JWS, then verify it against one chosen key.
//!
//! Hand-written on purpose (about a hundred lines over `base64`, `serde_json` and
//! aws-lc-rs) rather than taken from a JWT crate: the checks that matter here are the
//! ones general libraries leave to the caller or get wrong by default: the algorithm is
//! fixed by the key and the allowlist (never by the token), key-carrying headers
//! (`jwk`, `jku`, `x5u`, `x5c`) and unknown `crit` extensions are refused, Entra's
//! signing-key `issuer` binding is enforced, and keys are pre-parsed once per key set.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::claims::{Identity, RawClaims};
use crate::error::{ErrorCode, TokenError};
use crate::issuer::IssuerMatch;
use crate::keys::{Algorithm, VerifyingKey};

/// What every validation of a provider checks besides the signature.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Accepted `aud` values (client id GUID and App ID URI forms): any one matches.
    pub audiences: Vec<String>,
    /// Accepted `tid` values; empty means any tenant the issuer vouches for.
    pub allowed_tenants: Vec<String>,
    /// Leeway for `exp`, `nbf` and `iat` (default 5 minutes, as Microsoft's libraries).
    pub clock_skew: Duration,
    /// Algorithms a key may verify with (default RS256 only).
    pub algorithms: Vec<Algorithm>,
    /// Tokens longer than this are rejected before any decoding (default 16 KiB).
    pub max_token_bytes: usize,
    /// Require a GUID `tid` claim (Entra tokens always carry one).
    pub require_tenant: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            audiences: Vec::new(),
            allowed_tenants: Vec::new(),
            clock_skew: Duration::from_secs(300),
            algorithms: vec![Algorithm::RS256],
            max_token_bytes: 16 * 1024,
            require_tenant: true,
        }
    }
}

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    x5t: Option<Cow<'a, str>>,
    crit: Option<serde_json::Value>,
    jwk: Option<serde_json::Value>,
    jku: Option<serde_json::Value>,
    x5u: Option<serde_json::Value>,
    x5c: Option<serde_json::Value>,
    #[serde(borrow)]
    enc: Option<Cow<'a, str>>,
}

/// A token whose structure is sound but whose signature is not yet checked.
/// Nothing in it may be trusted except to choose the issuer and the key.
#[derive(Debug)]
pub struct Parsed {
    /// The header's algorithm, already known to be on the allowlist.
    pub alg: Algorithm,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// The header's `x5t`.
    pub x5t: Option<String>,
    /// The claims, decoded but unverified.
    pub claims: RawClaims,
    signing_input_len: usize,
    signature: Vec<u8>,
}

impl Parsed {
    /// The key id to report: `kid`, else `x5t`.
    pub fn key_id(&self) -> Option<&str> {
        self.kid.as_deref().or(self.x5t.as_deref())
    }
}

fn malformed(message: impl Into<String>) -> TokenError {
    TokenError::new(ErrorCode::Malformed, message)
}

fn decode_part(part: &str, name: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| malformed(format!("the {name} is not base64url without padding: {e}")))
}

/// The rejection of a token over the size cap.
pub fn too_large(len: usize, max: usize) -> TokenError {
    TokenError::new(
        ErrorCode::TooLarge,
        format!("token is {len} bytes, the limit is {max}"),
    )
}

/// Split, decode and parse a compact JWS; check the header's algorithm and tricks.
pub fn parse(token: &str, policy: &Policy) -> Result<Parsed, TokenError> {
    if token.len() > policy.max_token_bytes {
        return Err(too_large(token.len(), policy.max_token_bytes));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "expected three dot-separated parts (header.payload.signature); encrypted (JWE) tokens are not accepted",
        ));
    };
    let header_bytes = decode_part(h, "header")?;
    let header: RawHeader<'_> = serde_json::from_slice(&header_bytes)
        .map_err(|e| malformed(format!("the header is not a JSON object: {e}")))?;
    for (name, present) in [
        ("jwk", header.jwk.is_some()),
        ("jku", header.jku.is_some()),
        ("x5u", header.x5u.is_some()),
        ("x5c", header.x5c.is_some()),
    ] {
        if present {
            return Err(malformed(format!(
                "the header carries `{name}`: keys are only ever taken from the issuer's published key set"
            )));
        }
    }
    if let Some(crit) = &header.crit {
        // RFC 7515 4.1.11: a recipient that does not understand a critical extension
        // must reject the token. We understand none.
        return Err(malformed(format!(
            "the header marks extensions critical ({crit}); none are supported"
        )));
    }
    if header.enc.is_some() {
        return Err(malformed(
            "the header has `enc`: encrypted tokens are not accepted",
        ));
    }
    let alg_name = header
        .alg
        .as_deref()
        .ok_or_else(|| malformed("the header has no `alg`"))?;
    let alg = Algorithm::from_name(alg_name)
        .filter(|a| policy.algorithms.contains(a))
        .ok_or_else(|| {
            TokenError::new(
                ErrorCode::UnsupportedAlg,
                format!(
                    "algorithm {alg_name:?} is not allowed (allowed: {})",
                    policy
                        .algorithms
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    let payload = decode_part(p, "payload")?;
    let claims: RawClaims = serde_json::from_slice(&payload)
        .map_err(|e| malformed(format!("the payload is not a JSON object of claims: {e}")))?;
    let signature = decode_part(s, "signature")?;
    if signature.is_empty() {
        return Err(malformed("the signature is empty"));
    }
    Ok(Parsed {
        alg,
        kid: header.kid.map(Cow::into_owned),
        x5t: header.x5t.map(Cow::into_owned),
        claims,
        signing_input_len: h.len() + 1 + p.len(),
        signature,
    })
}

/// Whether `s` is a GUID in its canonical textual form (as Entra writes `tid`).
pub fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// Verify a parsed token with the key its issuer published, then every claim.
///
/// `issuer` is the matcher of the metadata document that vouches for the token's
/// `iss`; `v2_equivalent` is, for a v1 (`sts.windows.net`) source, the v2 issuer
/// template of the same authority: Entra publishes its keys with the v2 form of the
/// issuer on both key endpoints, so a v1 token's key is bound by that form.
pub fn verify(
    token: &str,
    parsed: Parsed,
    key: &VerifyingKey,
    issuer: &IssuerMatch,
    v2_equivalent: Option<&IssuerMatch>,
    policy: &Policy,
    now: u64,
) -> Result<Identity, TokenError> {
    if !key.admits(parsed.alg) {
        return Err(TokenError::new(
            ErrorCode::UnsupportedAlg,
            format!(
                "the header says {} but key {:?} is fixed to {}",
                parsed.alg,
                parsed.key_id().unwrap_or("?"),
                key.pinned_alg
                    .map(|a| a.as_str())
                    .unwrap_or("another key type")
            ),
        ));
    }
    let claims = &parsed.claims;
    let iss = claims
        .iss
        .as_deref()
        .ok_or_else(|| TokenError::new(ErrorCode::MissingClaim, "no `iss` claim"))?;
    let tid = claims.tid.as_deref();
    if let Some(t) = tid
        && !is_guid(t)
    {
        return Err(TokenError::new(
            ErrorCode::WrongIssuer,
            format!("`tid` {t:?} is not a GUID"),
        ));
    }
    if policy.require_tenant && tid.is_none() {
        return Err(TokenError::new(ErrorCode::MissingClaim, "no `tid` claim"));
    }
    if !issuer.matches(iss, tid) {
        return Err(TokenError::new(
            ErrorCode::WrongIssuer,
            format!("`iss` {iss:?} does not match {issuer} for tid {tid:?}"),
        ));
    }
    // The issuer's tenant segment (Entra: https://host/{tid}/...) must be the `tid`.
    if let (Some(t), Some(seg)) = (tid, issuer_tenant_segment(iss))
        && is_guid(seg)
        && !seg.eq_ignore_ascii_case(t)
    {
        return Err(TokenError::new(
            ErrorCode::WrongIssuer,
            format!("`iss` names tenant {seg} but `tid` is {t}"),
        ));
    }
    if let Some(key_issuer) = &key.issuer {
        let bound = IssuerMatch::parse(key_issuer);
        let ok = bound.matches(iss, tid)
            || v2_equivalent.is_some_and(|v2| {
                tid.is_some_and(|t| bound.resolve(t) == v2.resolve(t) && bound.resolve(t).is_some())
            });
        if !ok {
            return Err(TokenError::new(
                ErrorCode::WrongIssuer,
                format!(
                    "key {:?} is published for issuer {key_issuer:?}, not for {iss:?}",
                    parsed.key_id().unwrap_or("?")
                ),
            ));
        }
    }
    let signing_input = token
        .as_bytes()
        .get(..parsed.signing_input_len)
        .ok_or_else(|| malformed("signing input out of range"))?;
    if !key.verify(parsed.alg, signing_input, &parsed.signature) {
        return Err(TokenError::new(
            ErrorCode::BadSignature,
            format!(
                "the {} signature does not verify with key {:?}",
                parsed.alg,
                parsed.key_id().unwrap_or("?")
            ),
        ));
    }
    // From here on the claims are the issuer's own words.
    let skew = policy.clock_skew.as_secs();
    let exp = claims
        .exp
        .ok_or_else(|| TokenError::new(ErrorCode::MissingClaim, "no numeric `exp` claim"))?;
    if exp.saturating_add(skew) <= now {
        return Err(TokenError::new(
            ErrorCode::Expired,
            format!(
                "expired at {exp}, {}s ago (clock skew allowed: {skew}s)",
                now - exp
            ),
        ));
    }
    if let Some(nbf) = claims.nbf
        && nbf > now.saturating_add(skew)
    {
        return Err(TokenError::new(
            ErrorCode::NotYetValid,
            format!(
                "not valid before {nbf}, {}s from now (clock skew allowed: {skew}s)",
                nbf - now
            ),
        ));
    }
    if let Some(iat) = claims.iat
        && iat > now.saturating_add(skew)
    {
        return Err(TokenError::new(
            ErrorCode::NotYetValid,
            format!("issued at {iat}, {}s in the future", iat - now),
        ));
    }
    let audiences = claims.aud.values();
    if audiences.is_empty() {
        return Err(TokenError::new(ErrorCode::MissingClaim, "no `aud` claim"));
    }
    let Some(aud) = audiences
        .iter()
        .find(|a| policy.audiences.iter().any(|want| want == *a))
    else {
        return Err(TokenError::new(
            ErrorCode::WrongAudience,
            format!(
                "`aud` {:?} is none of the accepted audiences {:?}",
                audiences, policy.audiences
            ),
        ));
    };
    let aud = aud.to_string();
    if !policy.allowed_tenants.is_empty() {
        let t = tid.ok_or_else(|| TokenError::new(ErrorCode::MissingClaim, "no `tid` claim"))?;
        if !policy
            .allowed_tenants
            .iter()
            .any(|a| a.eq_ignore_ascii_case(t))
        {
            return Err(TokenError::new(
                ErrorCode::TenantNotAllowed,
                format!("tenant {t} is not in the allowlist"),
            ));
        }
    }
    let kid = parsed.key_id().map(str::to_string);
    Ok(Identity::from_claims(parsed.claims, aud, kid, exp))
}

/// The first path segment of an issuer URL (`https://host/{seg}/...`).
fn issuer_tenant_segment(iss: &str) -> Option<&str> {
    let rest = iss.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    path.split('/').next().filter(|s| !s.is_empty())
}
