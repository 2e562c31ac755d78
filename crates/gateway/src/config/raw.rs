//! The configuration file as written: serde structs that reject unknown keys. Nothing
//! here is checked beyond types; [`super::validate`] turns them into a [`super::Config`].

use serde::Deserialize;
use toml::Spanned;

use super::limits::{RawListenerLimits, RawRouteLimits};

/// A list of CIDRs or addresses as written.
pub type RawNets = Vec<Spanned<String>>;

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub worker_threads: Option<Spanned<usize>>,
    pub shutdown_grace_seconds: Option<u64>,
    pub watch_config: Option<bool>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    pub status_sample_interval_ms: Option<Spanned<u64>>,
}

/// `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Spanned<String>,
    pub listen: Spanned<String>,
    pub protocol: Spanned<String>,
    pub tls: Option<Spanned<RawTls>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    pub handshake_timeout_ms: Option<Spanned<u64>>,
    pub backlog: Option<Spanned<u64>>,
    pub limits: Option<Spanned<RawListenerLimits>>,
}

/// `[listener.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    pub min_version: Option<Spanned<String>>,
    pub client_ca: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub reload_interval_seconds: Option<u64>,
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    pub listener: Spanned<String>,
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub case_sensitive: Option<bool>,
    pub upstream: Spanned<String>,
    pub upstream_ca: Option<Spanned<String>>,
    pub connect_timeout_ms: Option<u64>,
    pub response_timeout_ms: Option<u64>,
    pub idle_timeout_s: Option<u64>,
    pub identity: Option<Spanned<String>>,
    pub provider: Option<Spanned<String>>,
    pub strip_authorization: Option<bool>,
    pub allow_acl_tokens: Option<bool>,
    pub source: Option<RawSource>,
    pub require: Option<RawRequire>,
    pub limits: Option<RawRouteLimits>,
}

/// `[route.source]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
}

/// `[route.require]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequire {
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub roles_any: Vec<String>,
    #[serde(default)]
    pub roles_all: Vec<String>,
    #[serde(default)]
    pub scopes_any: Vec<String>,
    #[serde(default)]
    pub scopes_all: Vec<String>,
    #[serde(default)]
    pub groups_any: Vec<String>,
    #[serde(default)]
    pub app_ids: Vec<String>,
    #[serde(default)]
    pub versions: Vec<Spanned<String>>,
    #[serde(default)]
    pub identity_types: Vec<Spanned<String>>,
    #[serde(default)]
    pub client_cert_subjects: Vec<String>,
    #[serde(default)]
    pub client_cert_sans: Vec<String>,
}
