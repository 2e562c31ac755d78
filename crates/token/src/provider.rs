//! A provider: the issuers it trusts (from OIDC discovery or given statically), their
//! key sets kept fresh, the validation policy and the verified-token cache.
//!
//! Key-set life cycle: fetched at start; refreshed every `refresh_interval` (24 h by
//! default, Microsoft's advice); refetched when a token names an unknown key, but at
//! most once per `unknown_kid_cooldown` per source, so forged `kid`s cannot make us
//! hammer the IdP; the last good set survives every failed fetch. A source that never
//! loaded a set rejects with `jwks_unavailable` (fail closed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Deserialize;

pub use crate::cache::MAX_CACHE_AGE_SECS;
use crate::cache::{self, Entry, VerifiedCache};
use crate::claims::Identity;
use crate::error::{ErrorCode, SetupError, TokenError};
use crate::issuer::IssuerMatch;
use crate::jwt::{self, Parsed, Policy};
use crate::keys::{KeySet, VerifyingKey};

/// Where a key set comes from when it is not named by a discovery document.
#[derive(Clone, Debug)]
pub enum JwksLocation {
    /// A `jwks_uri`.
    Url(String),
    /// A local JWKS file (offline verification of captured tokens).
    File(PathBuf),
}

/// One metadata source: an issuer and its keys.
#[derive(Clone, Debug)]
pub enum MetadataSource {
    /// An OpenID Connect discovery document; its `access_token_issuer` (AD FS) or else
    /// `issuer`, and its `jwks_uri`, are used.
    Discovery {
        /// The `.well-known/openid-configuration` URL.
        url: String,
        /// For a v1 Entra source: the v2 issuer (template) of the same authority. Entra
        /// publishes keys with the v2 issuer on both key endpoints, so a v1 token's
        /// key binding is checked against this form.
        key_issuer_alias: Option<String>,
    },
    /// An issuer and key set given directly.
    Static {
        /// The issuer (may hold `{tenantid}`).
        issuer: String,
        /// Its keys.
        jwks: JwksLocation,
    },
}

/// Which Entra token versions a provider accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum TokenVersion {
    /// v1.0 tokens (`https://sts.windows.net/{tid}/`), from the v1 metadata document.
    #[serde(rename = "v1")]
    V1,
    /// v2.0 tokens (`{authority}/{tid}/v2.0`), from the v2 metadata document.
    #[serde(rename = "v2")]
    V2,
}

/// Everything a provider needs.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// A name for logs and errors.
    pub name: String,
    /// The issuers trusted.
    pub sources: Vec<MetadataSource>,
    /// What every token must satisfy.
    pub policy: Policy,
    /// How often key sets are refreshed (default 24 h).
    pub refresh_interval: Duration,
    /// The least time between two fetches of one source triggered by an unknown
    /// `kid` or a missing key set (default 5 min).
    pub unknown_kid_cooldown: Duration,
    /// Timeout of one metadata request (default 10 s).
    pub fetch_timeout: Duration,
    /// Extra CA certificates (PEM) trusted for metadata over HTTPS.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Verified-token cache capacity in entries; 0 turns the cache off.
    pub cache_capacity: usize,
}

impl ProviderConfig {
    /// A provider with defaults for the given sources.
    pub fn new(name: impl Into<String>, sources: Vec<MetadataSource>, policy: Policy) -> Self {
        ProviderConfig {
            name: name.into(),
            sources,
            policy,
            refresh_interval: Duration::from_secs(24 * 3600),
            unknown_kid_cooldown: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(10),
            extra_ca_pem: None,
            cache_capacity: 65_536,
        }
    }

    /// The metadata sources of an Entra (or Entra-compatible) authority and tenant:
    /// `{authority}/{tenant}/v2.0/.well-known/openid-configuration` for v2 and
    /// `{authority}/{tenant}/.well-known/openid-configuration` for v1. The tenant may
    /// be a GUID, a domain, or `common`/`organizations` (templated issuers).
    pub fn entra_sources(
        authority: &str,
        tenant: &str,
        versions: &[TokenVersion],
    ) -> Vec<MetadataSource> {
        let authority = authority.trim_end_matches('/');
        let mut out = Vec::new();
        if versions.contains(&TokenVersion::V2) {
            out.push(MetadataSource::Discovery {
                url: format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration"),
                key_issuer_alias: None,
            });
        }
        if versions.contains(&TokenVersion::V1) {
            out.push(MetadataSource::Discovery {
                url: format!("{authority}/{tenant}/.well-known/openid-configuration"),
                key_issuer_alias: Some(format!("{authority}/{{tenantid}}/v2.0")),
            });
        }
        out
    }
}

#[derive(Default)]
struct SourceState {
    issuer: Option<IssuerMatch>,
    keys: Option<Arc<KeySet>>,
    loaded_at: Option<SystemTime>,
    last_error: Option<String>,
}

struct Source {
    spec: MetadataSource,
    key_issuer_alias: Option<IssuerMatch>,
    state: ArcSwap<SourceState>,
    /// When the last on-demand fetch (unknown `kid`, missing key set) started; held
    /// across the fetch so that concurrent triggers wait for it instead of fetching
    /// again. Scheduled loads do not count against the cool-down.
    gate: tokio::sync::Mutex<Option<Instant>>,
    fetches: std::sync::atomic::AtomicU64,
    fetch_failures: std::sync::atomic::AtomicU64,
}

/// The public state of one source, for readiness checks, metrics and the CLI.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SourceStatus {
    /// The discovery URL or the static issuer.
    pub source: String,
    /// The issuer learned (or given).
    pub issuer: Option<String>,
    /// `kid`s of the current key set.
    pub kids: Vec<String>,
    /// Seconds since the key set was loaded.
    pub age_seconds: Option<u64>,
    /// The last fetch error, if the last fetch failed.
    pub last_error: Option<String>,
    /// Fetch attempts so far.
    pub fetches: u64,
    /// Fetch attempts that failed (the last good key set kept serving).
    pub fetch_failures: u64,
}

/// A ceiling on metadata fetches shared by several providers (the gateway's global
/// limit on discovery and key-set requests to identity providers).
pub trait FetchGate: Send + Sync {
    /// Whether a fetch of `url` may go out now; a refused fetch fails like a network
    /// error and is retried on the provider's usual schedule.
    fn allow_fetch(&self, url: &str) -> bool;
}

/// A token validator bound to its issuers.
pub struct Provider {
    fetch_gate: std::sync::OnceLock<Arc<dyn FetchGate>>,
    name: String,
    policy: Policy,
    sources: Vec<Source>,
    refresh_interval: Duration,
    cooldown: Duration,
    http: reqwest::Client,
    cache: Option<VerifiedCache>,
}

/// The most published keys tried, by their signature, for a token whose header names
/// no key of the set (no `kid`, or one not published). Microsoft tries every key
/// (`TryAllIssuerSigningKeys`); the bound keeps a forged token's cost fixed.
pub const MAX_KEYS_TRIED: usize = 8;

/// The most bytes read from a discovery or JWKS response.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

#[derive(Deserialize)]
struct DiscoveryDoc {
    issuer: Option<String>,
    access_token_issuer: Option<String>,
    jwks_uri: Option<String>,
}

/// A successful validation with the decoded claims, for the CLI.
#[derive(Debug)]
pub struct Verified {
    /// The identity.
    pub identity: Arc<Identity>,
    /// The token's claims as JSON.
    pub claims: serde_json::Value,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Provider {
    /// Build a provider; nothing is fetched yet (see [`Provider::load`]).
    pub fn new(config: ProviderConfig) -> Result<Provider, SetupError> {
        if config.policy.audiences.is_empty() {
            return Err(SetupError::Config {
                field: "audiences",
                message: "at least one accepted audience is required".into(),
            });
        }
        if config.policy.algorithms.is_empty() {
            return Err(SetupError::Config {
                field: "algorithms",
                message: "at least one algorithm is required".into(),
            });
        }
        if config.sources.is_empty() {
            return Err(SetupError::Config {
                field: "sources",
                message: "at least one issuer or discovery document is required".into(),
            });
        }
        for t in &config.policy.allowed_tenants {
            if !jwt::is_guid(t) {
                return Err(SetupError::Config {
                    field: "tenants",
                    message: format!("tenant {t:?} is not a GUID (tid claims always are)"),
                });
            }
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .connect_timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("intraport/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.extra_ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| SetupError::Config {
                    field: "ca",
                    message: format!("not a PEM certificate bundle: {e}"),
                })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| SetupError::Config {
            field: "http client",
            message: e.to_string(),
        })?;
        let sources = config
            .sources
            .into_iter()
            .map(|spec| {
                let (initial_issuer, alias) = match &spec {
                    MetadataSource::Static { issuer, .. } => {
                        (Some(IssuerMatch::parse(issuer)), None)
                    }
                    MetadataSource::Discovery {
                        key_issuer_alias, ..
                    } => (None, key_issuer_alias.as_deref().map(IssuerMatch::parse)),
                };
                Source {
                    spec,
                    key_issuer_alias: alias,
                    state: ArcSwap::from_pointee(SourceState {
                        issuer: initial_issuer,
                        ..SourceState::default()
                    }),
                    gate: tokio::sync::Mutex::new(None),
                    fetches: std::sync::atomic::AtomicU64::new(0),
                    fetch_failures: std::sync::atomic::AtomicU64::new(0),
                }
            })
            .collect();
        Ok(Provider {
            fetch_gate: std::sync::OnceLock::new(),
            name: config.name,
            policy: config.policy,
            sources,
            refresh_interval: config.refresh_interval,
            cooldown: config.unknown_kid_cooldown,
            http,
            cache: (config.cache_capacity > 0).then(|| VerifiedCache::new(config.cache_capacity)),
        })
    }

    /// Put every later metadata fetch under `gate` (only the first gate set counts).
    pub fn set_fetch_gate(&self, gate: Arc<dyn FetchGate>) {
        let _ = self.fetch_gate.set(gate);
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The validation policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Fetch every source now. Failures are kept in the status (and returned), never
    /// fatal: a source that fails keeps rejecting with `jwks_unavailable` until a
    /// later fetch succeeds.
    pub async fn load(&self) -> Vec<SetupError> {
        let mut errors = Vec::new();
        for s in &self.sources {
            if let Err(e) = self.fetch(s).await {
                errors.push(e);
            }
        }
        errors
    }

    /// True when every source has a key set (the gateway's readiness).
    pub fn is_ready(&self) -> bool {
        self.sources.iter().all(|s| s.state.load().keys.is_some())
    }

    /// The state of each source.
    pub fn status(&self) -> Vec<SourceStatus> {
        let now = SystemTime::now();
        self.sources
            .iter()
            .map(|s| {
                let st = s.state.load();
                SourceStatus {
                    source: match &s.spec {
                        MetadataSource::Discovery { url, .. } => url.clone(),
                        MetadataSource::Static { issuer, .. } => issuer.clone(),
                    },
                    issuer: st.issuer.as_ref().map(|i| i.to_string()),
                    kids: st.keys.as_ref().map(|k| k.kids()).unwrap_or_default(),
                    age_seconds: st
                        .loaded_at
                        .and_then(|t| now.duration_since(t).ok())
                        .map(|d| d.as_secs()),
                    last_error: st.last_error.clone(),
                    fetches: s.fetches.load(std::sync::atomic::Ordering::Relaxed),
                    fetch_failures: s.fetch_failures.load(std::sync::atomic::Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Run the periodic refresh until the task is dropped or aborted. A source
    /// without keys is retried every cool-down instead of every interval.
    pub async fn refresh_forever(self: Arc<Self>) {
        loop {
            let wait = if self.is_ready() {
                self.refresh_interval
            } else {
                self.cooldown.min(self.refresh_interval)
            };
            tokio::time::sleep(wait).await;
            for e in self.load().await {
                tracing::warn!(provider = %self.name, error = %e, "key set refresh failed; keeping the last good set");
            }
        }
    }

    /// Validate a token now.
    pub async fn validate(&self, token: &str) -> Result<Arc<Identity>, TokenError> {
        self.validate_at(token, now_secs()).await
    }

    /// Validate a token as of `now` (Unix seconds), using the verified-token cache.
    pub async fn validate_at(&self, token: &str, now: u64) -> Result<Arc<Identity>, TokenError> {
        if token.len() > self.policy.max_token_bytes {
            // The size check comes before hashing: hashing is work an attacker chooses.
            return Err(jwt::too_large(token.len(), self.policy.max_token_bytes));
        }
        let Some(cache) = &self.cache else {
            return self.validate_uncached(token, now).await.map(|(id, _)| id);
        };
        let h = cache::hash(token);
        if let Some(e) = cache.get(&h) {
            if self.entry_still_good(&e, now) {
                return Ok(e.identity);
            }
            cache.remove(&h);
        }
        let (identity, entry) = self.validate_uncached(token, now).await?;
        cache.insert(h, entry);
        Ok(identity)
    }

    /// Validate without the cache and return the decoded claims too (CLI, tests).
    pub async fn verify_detailed(&self, token: &str, now: u64) -> Result<Verified, TokenError> {
        let (identity, _) = self.validate_uncached(token, now).await?;
        let claims = decode_claims_json(token).unwrap_or(serde_json::Value::Null);
        Ok(Verified { identity, claims })
    }

    /// Number of entries in the verified-token cache.
    pub fn cached_tokens(&self) -> usize {
        self.cache.as_ref().map_or(0, VerifiedCache::len)
    }

    fn entry_still_good(&self, e: &Entry, now: u64) -> bool {
        if !e.fresh(now, self.policy.clock_skew.as_secs()) {
            return false;
        }
        // Served only while the issuer still publishes this very key under its id.
        let Some(source) = self.sources.get(e.source) else {
            return false;
        };
        let state = source.state.load();
        let Some(keys) = &state.keys else {
            return false;
        };
        let current = e
            .identity
            .kid
            .as_deref()
            .and_then(|id| keys.by_kid(id).or_else(|| keys.by_x5t(id)));
        current.is_some_and(|k| Arc::ptr_eq(k, &e.key))
    }

    async fn validate_uncached(
        &self,
        token: &str,
        now: u64,
    ) -> Result<(Arc<Identity>, Entry), TokenError> {
        let parsed = jwt::parse(token, &self.policy)?;
        let iss = parsed
            .claims
            .iss
            .clone()
            .ok_or_else(|| TokenError::new(ErrorCode::MissingClaim, "no `iss` claim"))?;
        let index = self.source_for(&iss).await?;
        let source = &self.sources[index];
        let key = self.key_for(source, &parsed, token).await?;
        let state = source.state.load();
        let issuer = state.issuer.clone().ok_or_else(|| {
            TokenError::new(ErrorCode::JwksUnavailable, "issuer metadata not loaded")
        })?;
        let not_before = parsed.claims.nbf;
        let identity = jwt::verify(
            token,
            parsed,
            &key,
            &issuer,
            source.key_issuer_alias.as_ref(),
            &self.policy,
            now,
        )?;
        let identity = Arc::new(identity);
        Ok((
            identity.clone(),
            Entry {
                identity,
                key,
                source: index,
                not_before,
                verified_at: now,
            },
        ))
    }

    /// The source vouching for `iss`. Sources whose metadata never loaded are tried
    /// once (throttled); if one of them might have been the issuer, the answer is
    /// `jwks_unavailable`, not `wrong_issuer`.
    async fn source_for(&self, iss: &str) -> Result<usize, TokenError> {
        let find = |this: &Self| {
            this.sources.iter().position(|s| {
                s.state
                    .load()
                    .issuer
                    .as_ref()
                    .is_some_and(|m| m.could_match(iss))
            })
        };
        if let Some(i) = find(self) {
            return Ok(i);
        }
        let unloaded: Vec<&Source> = self
            .sources
            .iter()
            .filter(|s| s.state.load().issuer.is_none())
            .collect();
        if unloaded.is_empty() {
            return Err(TokenError::new(
                ErrorCode::WrongIssuer,
                format!(
                    "issuer {iss:?} is not trusted by provider {:?} (trusted: {})",
                    self.name,
                    self.trusted_issuers().join(", ")
                ),
            ));
        }
        for s in unloaded {
            self.throttled_fetch(s).await;
        }
        find(self).ok_or_else(|| {
            TokenError::new(
                ErrorCode::JwksUnavailable,
                format!(
                    "issuer metadata of provider {:?} could not be loaded: {}",
                    self.name,
                    self.last_errors().join("; ")
                ),
            )
        })
    }

    fn trusted_issuers(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter_map(|s| s.state.load().issuer.as_ref().map(|i| i.to_string()))
            .collect()
    }

    fn last_errors(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter_map(|s| s.state.load().last_error.clone())
            .collect()
    }

    /// The key that signed the token: the one its `kid` (else `x5t`) names, after a
    /// throttled refetch when that id is not published; else, as Microsoft does, the
    /// first published key of the right type whose signature check passes (at most
    /// [`MAX_KEYS_TRIED`]). Only the signature picks that key: every other check still
    /// follows in `jwt::verify`.
    async fn key_for(
        &self,
        source: &Source,
        parsed: &Parsed,
        token: &str,
    ) -> Result<Arc<VerifyingKey>, TokenError> {
        let named = parsed.key_id().is_some();
        let lookup = |state: &SourceState| -> Option<Option<Arc<VerifyingKey>>> {
            let keys = state.keys.as_ref()?;
            let k = match (&parsed.kid, &parsed.x5t) {
                (Some(kid), _) => keys.by_kid(kid),
                (None, Some(x5t)) => keys.by_x5t(x5t),
                (None, None) => None,
            };
            Some(k.cloned())
        };
        if let Some(Some(k)) = lookup(&source.state.load()) {
            return Ok(k);
        }
        if named || source.state.load().keys.is_none() {
            self.throttled_fetch(source).await;
        }
        let state = source.state.load();
        let keys = match lookup(&state) {
            Some(Some(k)) => return Ok(k),
            Some(None) => state.keys.clone().unwrap_or_default(),
            None => {
                return Err(TokenError::new(
                    ErrorCode::JwksUnavailable,
                    format!(
                        "no key set has been loaded for this issuer: {}",
                        state
                            .last_error
                            .clone()
                            .unwrap_or_else(|| "not fetched yet".into())
                    ),
                ));
            }
        };
        if let Some(why) = parsed.kid.as_deref().and_then(|k| keys.skipped_reason(k)) {
            return Err(TokenError::new(
                ErrorCode::UnknownKid,
                format!(
                    "key {} is published but refused: {why}",
                    parsed.shown_key_id()
                ),
            ));
        }
        if let Some(k) = keys
            .admitting(parsed.alg)
            .take(MAX_KEYS_TRIED)
            .find(|k| parsed.signed_by(token, k))
        {
            return Ok(k.clone());
        }
        Err(TokenError::new(
            ErrorCode::UnknownKid,
            if named {
                format!(
                    "key {} is not in the issuer's key set, and no published {} key verifies the signature",
                    parsed.shown_key_id(),
                    parsed.alg
                )
            } else {
                format!(
                    "the header names no key (`kid` or `x5t`), and no published {} key verifies the signature",
                    parsed.alg
                )
            },
        ))
    }

    /// Fetch a source unless it was fetched within the cool-down. Concurrent callers
    /// wait for one fetch rather than each starting their own.
    async fn throttled_fetch(&self, source: &Source) {
        let mut gate = source.gate.lock().await;
        if gate.is_some_and(|t| t.elapsed() < self.cooldown) {
            return;
        }
        *gate = Some(Instant::now());
        if let Err(e) = self.fetch(source).await {
            tracing::warn!(provider = %self.name, error = %e, "on-demand key set fetch failed");
        }
    }

    async fn fetch(&self, source: &Source) -> Result<(), SetupError> {
        source
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self.fetch_inner(source).await;
        let old = source.state.load_full();
        match result {
            Ok((issuer, mut keys)) => {
                if let Some(old_keys) = &old.keys {
                    keys.reuse_unchanged(old_keys);
                }
                tracing::info!(provider = %self.name, issuer = %issuer, keys = keys.len(), "key set loaded");
                source.state.store(Arc::new(SourceState {
                    issuer: Some(issuer),
                    keys: Some(Arc::new(keys)),
                    loaded_at: Some(SystemTime::now()),
                    last_error: None,
                }));
                Ok(())
            }
            Err(e) => {
                source
                    .fetch_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                source.state.store(Arc::new(SourceState {
                    issuer: old.issuer.clone(),
                    keys: old.keys.clone(),
                    loaded_at: old.loaded_at,
                    last_error: Some(e.to_string()),
                }));
                Err(e)
            }
        }
    }

    async fn fetch_inner(&self, source: &Source) -> Result<(IssuerMatch, KeySet), SetupError> {
        let (issuer, location) = match &source.spec {
            MetadataSource::Static { issuer, jwks } => (IssuerMatch::parse(issuer), jwks.clone()),
            MetadataSource::Discovery { url, .. } => {
                let body = self.get(url, "discovery document").await?;
                let doc: DiscoveryDoc =
                    serde_json::from_slice(&body).map_err(|e| SetupError::Document {
                        what: "discovery document",
                        source_name: url.clone(),
                        message: format!("not a discovery document: {e}"),
                    })?;
                let issuer =
                    doc.access_token_issuer
                        .or(doc.issuer)
                        .ok_or_else(|| SetupError::Document {
                            what: "discovery document",
                            source_name: url.clone(),
                            message: "names no `issuer`".into(),
                        })?;
                let jwks = doc.jwks_uri.ok_or_else(|| SetupError::Document {
                    what: "discovery document",
                    source_name: url.clone(),
                    message: "names no `jwks_uri`".into(),
                })?;
                (IssuerMatch::parse(&issuer), JwksLocation::Url(jwks))
            }
        };
        let (bytes, name) = match &location {
            JwksLocation::Url(u) => (self.get(u, "key set").await?, u.clone()),
            JwksLocation::File(p) => {
                let name = p.display().to_string();
                let bytes = tokio::fs::read(p).await.map_err(|e| SetupError::Fetch {
                    what: "key set",
                    url: name.clone(),
                    message: e.to_string(),
                })?;
                (bytes, name)
            }
        };
        let keys = KeySet::from_json(&bytes, &self.policy.algorithms).map_err(|message| {
            SetupError::Document {
                what: "key set",
                source_name: name,
                message,
            }
        })?;
        Ok((issuer, keys))
    }

    async fn get(&self, url: &str, what: &'static str) -> Result<Vec<u8>, SetupError> {
        let err = |message: String| SetupError::Fetch {
            what,
            url: url.to_string(),
            message,
        };
        if self.fetch_gate.get().is_some_and(|g| !g.allow_fetch(url)) {
            return Err(err(
                "not sent: the global ceiling on identity-provider fetches is reached".into(),
            ));
        }
        let mut resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| err(error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP status {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| err(error_chain(&e)))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(err(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The payload of a token as JSON, unverified (for display only).
pub fn decode_claims_json(token: &str) -> Option<serde_json::Value> {
    decode_segment_json(token, 1)
}

/// The header of a token as JSON, unverified (for display and audit logs only).
pub fn decode_header_json(token: &str) -> Option<serde_json::Value> {
    decode_segment_json(token, 0)
}

fn decode_segment_json(token: &str, index: usize) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let segment = token.split('.').nth(index)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
