//! The verified-token cache: a token's signature is checked once, then its identity
//! is served from memory until the token expires.
//!
//! Keyed by the SHA-256 of the whole token, so a lookup can only hit for the very
//! bytes that were verified (a collision would need a SHA-256 second preimage).
//! Bounded (`quick_cache`, CLOCK-Pro eviction), and expiry-aware: an entry is only
//! served while the token is within `exp` (+ skew), and only while the key that
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
