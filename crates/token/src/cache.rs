//! The verified-token cache: a token's signature is checked once, then its identity
//! is served from memory until the token expires.
//!
//! Keyed by the SHA-256 of the whole token, so a lookup can only hit for the very
//! bytes that were verified (a collision would need a SHA-256 second preimage).
//! Bounded (`quick_cache`, CLOCK-Pro eviction), and expiry-aware: an entry is only
//! served while the token is within `exp` (+ skew), for at most an hour after it was
//! verified (`MAX_CACHE_AGE_SECS`, whatever the `exp`), and only while the key that
//! verified it is still the one its issuer publishes under that id.

use std::sync::Arc;

use aws_lc_rs::digest;
use quick_cache::sync::Cache;

use crate::claims::Identity;
use crate::keys::VerifyingKey;

pub(crate) type TokenHash = [u8; 32];

pub(crate) fn hash(token: &str) -> TokenHash {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub identity: Arc<Identity>,
    pub key: Arc<VerifyingKey>,
    pub source: usize,
    pub not_before: Option<u64>,
    /// When the token was verified (the `now` of that validation).
    pub verified_at: u64,
}

/// The longest a verified token is served from the cache before it is verified again,
/// whatever its `exp` (which may be years away: `exp` is only bounded by 9999).
pub const MAX_CACHE_AGE_SECS: u64 = 3600;

impl Entry {
    /// Whether the token is still within its lifetime (with `skew`) at `now`, and the
    /// verdict young enough to serve; a `now` before the verification (a
    /// `validate_at` in the past) verifies again.
    pub fn fresh(&self, now: u64, skew: u64) -> bool {
        self.identity.expires_at.saturating_add(skew) > now
            && self
                .not_before
                .is_none_or(|nbf| nbf <= now.saturating_add(skew))
            && now >= self.verified_at
            && now - self.verified_at < MAX_CACHE_AGE_SECS
    }
}

pub(crate) struct VerifiedCache {
    inner: Cache<TokenHash, Entry>,
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> Self {
        VerifiedCache {
            inner: Cache::new(capacity.max(1)),
        }
    }

    pub fn get(&self, h: &TokenHash) -> Option<Entry> {
        self.inner.get(h)
    }

    pub fn insert(&self, h: TokenHash, e: Entry) {
        self.inner.insert(h, e);
    }

    pub fn remove(&self, h: &TokenHash) {
        self.inner.remove(h);
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::claims::RawClaims;
    use crate::keys::{Algorithm, KeySet};

    fn entry(exp: u64, nbf: Option<u64>, verified_at: u64) -> Entry {
        let doc = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"ec","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;
        let set = KeySet::from_json(doc, &[Algorithm::ES256]).unwrap();
        Entry {
            identity: Arc::new(Identity::from_claims(
                RawClaims::default(),
                "aud".into(),
                Some("ec".into()),
                exp,
            )),
            key: set.by_kid("ec").unwrap().clone(),
            source: 0,
            not_before: nbf,
            verified_at,
        }
    }

    #[test]
    fn an_entry_is_served_within_its_lifetime_and_an_hour_at_most() {
        let t = 1_800_000_000;
        // A token valid until 9999 is still verified again after an hour.
        let e = entry(crate::claims::MAX_NUMERIC_DATE, None, t);
        assert!(e.fresh(t, 0));
        assert!(e.fresh(t + MAX_CACHE_AGE_SECS - 1, 0));
        assert!(!e.fresh(t + MAX_CACHE_AGE_SECS, 0));
        // ... and before the time it was verified at.
        assert!(!e.fresh(t - 1, 0));
        // exp and nbf, with the skew.
        let e = entry(t + 100, Some(t + 50), t);
        assert!(e.fresh(t + 399, 300));
        assert!(!e.fresh(t + 400, 300));
        assert!(!e.fresh(t + 100, 0));
        let e = entry(t + 1000, Some(t + 500), t);
        assert!(!e.fresh(t + 100, 300));
        assert!(e.fresh(t + 200, 300));
    }
}
