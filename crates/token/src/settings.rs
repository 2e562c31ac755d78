//! Provider settings as written in configuration files (`[[provider]]` tables), and
//! their validation into a [`ProviderConfig`]: the data plane never sees raw settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::SetupError;
use crate::jwt::Policy;
use crate::keys::Algorithm;
use crate::provider::{JwksLocation, MetadataSource, ProviderConfig, TokenVersion};

/// The public Entra authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

/// One identity provider, as configured.
///
/// Three ways to name the issuer: `authority` + `tenant` (+ `versions`) for Entra and
/// sovereign clouds, `discovery` for any OpenID provider or AD FS, or `issuer` +
/// `jwks` for a fixed issuer with a key set URL or file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Name used by routes and in logs.
    pub name: String,
    /// Entra authority (default the public cloud).
    pub authority: Option<String>,
    /// Tenant id, domain, `common` or `organizations`.
    pub tenant: Option<String>,
    /// Token versions accepted (default both, `["v2", "v1"]`, as Microsoft.Identity.Web
    /// accepts both of a tenant).
    #[serde(default)]
    pub versions: Vec<TokenVersion>,
    /// A discovery document URL, instead of authority + tenant.
    pub discovery: Option<String>,
    /// A fixed issuer (with `jwks`).
    pub issuer: Option<String>,
    /// The key set of the fixed issuer: an `http(s)://` URL or a file path.
    pub jwks: Option<String>,
    /// Accepted audiences (client id and App ID URI forms).
    pub audiences: Vec<String>,
    /// Tenant allowlist (GUIDs).
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    /// Accepted algorithms (default `["RS256"]`).
    #[serde(default)]
    pub algorithms: Vec<Algorithm>,
    /// Clock skew in seconds (default 300).
    pub clock_skew_seconds: Option<u64>,
    /// Token size cap in bytes (default 16384).
    pub max_token_bytes: Option<usize>,
    /// Require a GUID `tid` (default true for Entra authorities, false for
    /// `discovery`/`issuer` providers).
    pub require_tenant: Option<bool>,
    /// Key set refresh interval in seconds (default 86400).
    pub refresh_interval_seconds: Option<u64>,
    /// Least seconds between on-demand refetches (default 300).
    pub unknown_kid_cooldown_seconds: Option<u64>,
    /// Metadata request timeout in seconds (default 10).
    pub fetch_timeout_seconds: Option<u64>,
    /// Extra CA certificates (PEM file) for metadata over HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Verified-token cache entries (default 65536; 0 = off).
    pub cache_capacity: Option<usize>,
}

fn bad(field: &'static str, message: impl Into<String>) -> SetupError {
    SetupError::Config {
        field,
        message: message.into(),
    }
}

impl ProviderSettings {
    /// Check the settings and build the provider configuration. Relative paths are
    /// taken from `base_dir` (the configuration file's directory).
    pub fn to_config(&self, base_dir: &Path) -> Result<ProviderConfig, SetupError> {
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };
        let entra = self.authority.is_some() || self.tenant.is_some();
        let ways = [entra, self.discovery.is_some(), self.issuer.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if ways != 1 {
            return Err(bad(
                "authority/tenant, discovery, issuer",
                "name the issuer exactly one way: `tenant` (with an optional `authority`), `discovery`, or `issuer` with `jwks`",
            ));
        }
        if self.jwks.is_some() != self.issuer.is_some() {
            return Err(bad("jwks", "`issuer` and `jwks` go together"));
        }
        let sources = if entra {
            let tenant = self
                .tenant
                .as_deref()
                .ok_or_else(|| bad("tenant", "an Entra provider needs a `tenant`"))?;
            let authority = self.authority.as_deref().unwrap_or(DEFAULT_AUTHORITY);
            check_url("authority", authority)?;
            let versions = if self.versions.is_empty() {
                vec![TokenVersion::V2, TokenVersion::V1]
            } else {
                self.versions.clone()
            };
            ProviderConfig::entra_sources(authority, tenant, &versions)
        } else if let Some(url) = &self.discovery {
            check_url("discovery", url)?;
            vec![MetadataSource::Discovery {
                url: url.clone(),
                key_issuer_alias: None,
            }]
        } else {
            let issuer = self.issuer.clone().unwrap_or_default();
            let jwks = self.jwks.as_deref().unwrap_or_default();
            let location = if jwks.starts_with("http://") || jwks.starts_with("https://") {
                JwksLocation::Url(jwks.to_string())
            } else {
                JwksLocation::File(resolve(Path::new(jwks)))
            };
            vec![MetadataSource::Static {
                issuer,
                jwks: location,
            }]
        };
        let policy = Policy {
            audiences: self.audiences.clone(),
            allowed_tenants: self.allowed_tenants.clone(),
            clock_skew: Duration::from_secs(self.clock_skew_seconds.unwrap_or(300)),
            algorithms: if self.algorithms.is_empty() {
                vec![Algorithm::RS256]
            } else {
                self.algorithms.clone()
            },
            max_token_bytes: self.max_token_bytes.unwrap_or(16 * 1024),
            require_tenant: self.require_tenant.unwrap_or(entra),
        };
        let mut cfg = ProviderConfig::new(self.name.clone(), sources, policy);
        if let Some(s) = self.refresh_interval_seconds {
            cfg.refresh_interval = Duration::from_secs(s.max(1));
        }
        if let Some(s) = self.unknown_kid_cooldown_seconds {
            cfg.unknown_kid_cooldown = Duration::from_secs(s);
        }
        if let Some(s) = self.fetch_timeout_seconds {
            cfg.fetch_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(c) = self.cache_capacity {
            cfg.cache_capacity = c;
        }
        if let Some(ca) = &self.ca_file {
            let path = resolve(ca);
            let pem = std::fs::read(&path)
                .map_err(|e| bad("ca_file", format!("reading {}: {e}", path.display())))?;
            cfg.extra_ca_pem = Some(pem);
        }
        Ok(cfg)
    }
}

fn check_url(field: &'static str, url: &str) -> Result<(), SetupError> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(bad(field, format!("{url:?} is not an http(s) URL")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_tenant_provider_takes_v1_and_v2_tokens_by_default() {
        let settings: ProviderSettings = toml::from_str(
            "name = \"entra\"\ntenant = \"contoso.example\"\naudiences = [\"api://a\"]\n",
        )
        .unwrap();
        let cfg = settings.to_config(Path::new(".")).unwrap();
        let urls: Vec<&str> = cfg
            .sources
            .iter()
            .map(|s| match s {
                MetadataSource::Discovery { url, .. } => url.as_str(),
                MetadataSource::Static { issuer, .. } => issuer.as_str(),
            })
            .collect();
        assert_eq!(
            urls,
            [
                "https://login.microsoftonline.com/contoso.example/v2.0/.well-known/openid-configuration",
                "https://login.microsoftonline.com/contoso.example/.well-known/openid-configuration",
            ]
        );
    }
}
