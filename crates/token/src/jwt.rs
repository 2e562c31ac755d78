//! The I/O-free core: parse a compact JWS, then verify it against one chosen key.
//!
//! Hand-written on purpose (about a hundred lines over `base64`, `serde_json` and
//! aws-lc-rs) rather than taken from a JWT crate: the checks that matter here are the
//! ones general libraries leave to the caller or get wrong by default: the algorithm is
//! fixed by the key and the allowlist (never by the token), key-carrying headers
//! (`jwk`, `jku`, `x5u`, `x5c`) and unknown `crit` extensions are refused, Entra's
//! signing-key `issuer` binding is enforced, and keys are pre-parsed once per key set.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::claims::{Identity, RawClaims};
use crate::error::{ErrorCode, TokenError};
use crate::issuer::IssuerMatch;
use crate::json::{self, shown};
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

    /// The key id for a message: quoted, cut when long (it is attacker-chosen).
    pub fn shown_key_id(&self) -> String {
        self.key_id().map_or_else(|| "(none)".to_string(), shown)
    }

    /// Whether `key` verifies this token's signature with the header's algorithm
    /// (the search for a key when the header names none that is published).
    pub fn signed_by(&self, token: &str, key: &VerifyingKey) -> bool {
        token
            .as_bytes()
            .get(..self.signing_input_len)
            .is_some_and(|input| key.verify(self.alg, input, &self.signature))
    }
}

/// A header parameter that must be a string when present.
fn header_string(header: &Map<String, Value>, name: &str) -> Result<Option<String>, TokenError> {
    match header.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(malformed(format!(
            "the header's `{name}` must be a string, found a {}",
            json::kind(other)
        ))),
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
    let header = json::object(&header_bytes, "header").map_err(malformed)?;
    for name in ["jwk", "jku", "x5u", "x5c"] {
        if header.contains_key(name) {
            return Err(malformed(format!(
                "the header carries `{name}`: keys are only ever taken from the issuer's published key set"
            )));
        }
    }
    if let Some(crit) = header.get("crit") {
        // RFC 7515 4.1.11: a recipient that does not understand a critical extension
        // must reject the token. We understand none.
        return Err(malformed(format!(
            "the header marks extensions critical ({}); none are supported",
            shown(&crit.to_string())
        )));
    }
    if header.contains_key("enc") {
        return Err(malformed(
            "the header has `enc`: encrypted tokens are not accepted",
        ));
    }
    let alg_name =
        header_string(&header, "alg")?.ok_or_else(|| malformed("the header has no `alg`"))?;
    let alg = Algorithm::from_name(&alg_name)
        .filter(|a| policy.algorithms.contains(a))
        .ok_or_else(|| {
            TokenError::new(
                ErrorCode::UnsupportedAlg,
                format!(
                    "algorithm {} is not allowed (allowed: {})",
                    shown(&alg_name),
                    policy
                        .algorithms
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    let kid = header_string(&header, "kid")?;
    let x5t = header_string(&header, "x5t")?;
    let payload = decode_part(p, "payload")?;
    let claims = RawClaims::from_object(&json::object(&payload, "payload").map_err(malformed)?)?;
    let signature = decode_part(s, "signature")?;
    if signature.is_empty() {
        return Err(malformed("the signature is empty"));
    }
    Ok(Parsed {
        alg,
        kid,
        x5t,
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
                "the header says {} but key {} is fixed to {}",
                parsed.alg,
                key.shown_id(),
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
            format!("`tid` {} is not a GUID", shown(t)),
        ));
    }
    if policy.require_tenant && tid.is_none() {
        return Err(TokenError::new(ErrorCode::MissingClaim, "no `tid` claim"));
    }
    if !issuer.matches(iss, tid) {
        return Err(TokenError::new(
            ErrorCode::WrongIssuer,
            format!(
                "`iss` {} does not match {issuer} for tid {}",
                shown(iss),
                tid.map_or_else(|| "(none)".to_string(), shown)
            ),
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
            })
            || tid.is_some_and(|t| {
                bound
                    .resolve(t)
                    .is_some_and(|k| crate::issuer::v1_token_fits_v2_key(iss, &k, t))
            });
        if !ok {
            return Err(TokenError::new(
                ErrorCode::WrongIssuer,
                format!(
                    "key {} is published for issuer {key_issuer:?}, not for {}",
                    key.shown_id(),
                    shown(iss)
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
                "the {} signature does not verify with key {}",
                parsed.alg,
                key.shown_id()
            ),
        ));
    }
    // From here on the claims are the issuer's own words.
    let skew = policy.clock_skew.as_secs();
    let exp = claims
        .exp
        .ok_or_else(|| TokenError::new(ErrorCode::MissingClaim, "no numeric `exp` claim"))?;
    if let Some(nbf) = claims.nbf
        && nbf > exp
    {
        // Microsoft refuses this too (IDX10224, an invalid lifetime), skew or not.
        return Err(TokenError::new(
            ErrorCode::Expired,
            format!("`nbf` {nbf} is after `exp` {exp}: the token is never valid"),
        ));
    }
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
    // Stricter than Microsoft, which reads `iat` but never checks it.
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
                "`aud` {} is none of the accepted audiences {:?}",
                shown(&audiences.join(", ")),
                policy.audiences
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
    // The key's own id: what the verified-token cache finds it by again, also when the
    // header named no published key and the key was found by its signature.
    let kid = key.kid.clone().or_else(|| key.x5t.clone());
    Ok(Identity::from_claims(parsed.claims, aud, kid, exp))
}

/// Refuse a token that carries neither a scope (`scp`) nor an app role (`roles`), as a
/// web API behind Microsoft.Identity.Web does by default (IDW10201): any application
/// of a tenant can get a token for any API of it, and such a token only says who the
/// caller is, not that anyone granted it access. Routes that authorise callers by
/// their identity alone (Identity.Web's `AllowWebApiToBeAuthorizedByACL`) skip this.
pub fn require_scope_or_role(identity: &Identity) -> Result<(), TokenError> {
    if identity.scopes.is_empty() && identity.roles.iter().all(|r| r.trim().is_empty()) {
        return Err(TokenError::new(
            ErrorCode::NoScopeOrRole,
            "the token carries neither `scp` nor `roles`: no permission was granted to \
             the caller (a route authorising by identity alone needs allow_acl_tokens)",
        ));
    }
    Ok(())
}

/// The first path segment of an issuer URL (`https://host/{seg}/...`).
fn issuer_tenant_segment(iss: &str) -> Option<&str> {
    let rest = iss.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    path.split('/').next().filter(|s| !s.is_empty())
}
