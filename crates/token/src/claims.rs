//! Claims: the raw set a token carries, and the typed identity policy decisions use.
//!
//! Names follow Microsoft's access-token claims reference: v2 tokens carry `azp` /
//! `azpacr` and `preferred_username`, v1 tokens `appid` / `appidacr` and `upn` /
//! `unique_name`; both are folded into one [`Identity`].

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize};

/// `aud`: one string or an array of strings (RFC 7519 4.1.3).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    /// No `aud` claim.
    #[default]
    None,
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// The audience values.
    pub fn values(&self) -> Vec<&str> {
        match self {
            Audience::None => Vec::new(),
            Audience::One(a) => vec![a.as_str()],
            Audience::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A NumericDate that is absent or of the wrong type reads as `None`, so that the
/// validator reports `missing_claim` naming it rather than a generic parse error.
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(|v| match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        _ => None,
    }))
}

/// The claims of a token as decoded, before or after verification.
#[derive(Clone, Debug, Default, Deserialize)]
#[allow(missing_docs)] // field names are the registered claim names
pub struct RawClaims {
    pub iss: Option<String>,
    #[serde(default)]
    pub aud: Audience,
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<u64>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub nbf: Option<u64>,
    #[serde(default, deserialize_with = "numeric_date")]
    pub iat: Option<u64>,
    pub tid: Option<String>,
    pub oid: Option<String>,
    pub sub: Option<String>,
    pub azp: Option<String>,
    pub appid: Option<String>,
    pub azpacr: Option<String>,
    pub appidacr: Option<String>,
    pub scp: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub wids: Vec<String>,
    pub idtyp: Option<String>,
    pub ver: Option<String>,
    pub preferred_username: Option<String>,
    pub upn: Option<String>,
    pub unique_name: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "_claim_names")]
    pub claim_names: Option<HashMap<String, serde_json::Value>>,
}

/// Whether the caller is an application (client credentials) or a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    /// An application acting as itself (app-only token).
    App,
    /// A user, through a client application (delegated token).
    User,
}

/// The verified identity a token establishes: what policy decisions and forwarded
/// identity headers use.
#[derive(Clone, Debug, Serialize)]
pub struct Identity {
    /// `iss`.
    pub issuer: String,
    /// The `aud` value that matched the configuration.
    pub audience: String,
    /// The key that signed the token (`kid`, else `x5t`).
    pub kid: Option<Arc<str>>,
    /// `ver`: "1.0" or "2.0" for Entra tokens.
    pub version: Option<String>,
    /// `tid`: the tenant.
    pub tenant_id: Option<Arc<str>>,
    /// `oid`: the object id of the user or service principal.
    pub object_id: Option<Arc<str>>,
    /// `sub`.
    pub subject: Option<String>,
    /// `azp` (v2) or `appid` (v1): the client application.
    pub app_id: Option<Arc<str>>,
    /// `azpacr` (v2) or `appidacr` (v1): how the client authenticated (0 public,
    /// 1 secret, 2 certificate).
    pub app_auth: Option<String>,
    /// `scp`, split on spaces: delegated permissions.
    pub scopes: Vec<String>,
    /// `roles`: app roles (application permissions or assigned user roles).
    pub roles: Vec<String>,
    /// `groups`: group object ids.
    pub groups: Vec<String>,
    /// True when the groups did not fit in the token (`_claim_names.groups`): a groups
    /// policy must then fail closed, since the list above is incomplete.
    pub groups_overage: bool,
    /// `wids`: directory role template ids.
    pub wids: Vec<String>,
    /// `idtyp` when present.
    pub idtyp: Option<String>,
    /// App or user, from `idtyp`, else from the absence of `scp` (Microsoft's rule for
    /// tokens without the optional `idtyp` claim).
    pub kind: IdentityKind,
    /// `preferred_username` (v2), else `upn` or `unique_name` (v1).
    pub username: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `exp`: when the token, and any cache entry for it, dies.
    pub expires_at: u64,
    /// What a caller derives from this identity once and reuses: the verified-token
    /// cache hands out the same identity for every request with the same token, so
    /// per-request work on it (the gateway's audit identity) is done once per token.
    /// Not part of the identity; not serialised.
    #[serde(skip)]
    pub derived: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl Identity {
    pub(crate) fn from_claims(
        c: RawClaims,
        audience: String,
        kid: Option<String>,
        exp: u64,
    ) -> Identity {
        let kind = match c.idtyp.as_deref() {
            Some("app") => IdentityKind::App,
            Some("user") => IdentityKind::User,
            _ if c.scp.is_none() => IdentityKind::App,
            _ => IdentityKind::User,
        };
        let groups_overage = c
            .claim_names
            .as_ref()
            .is_some_and(|names| names.contains_key("groups"));
        Identity {
            issuer: c.iss.unwrap_or_default(),
            audience,
            kid: kid.map(Arc::from),
            version: c.ver,
            tenant_id: c.tid.map(Arc::from),
            object_id: c.oid.map(Arc::from),
            subject: c.sub,
            app_id: c.azp.or(c.appid).map(Arc::from),
            app_auth: c.azpacr.or(c.appidacr),
            scopes: c
                .scp
                .as_deref()
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            roles: c.roles,
            groups: c.groups,
            groups_overage,
            wids: c.wids,
            idtyp: c.idtyp,
            kind,
            username: c.preferred_username.or(c.upn).or(c.unique_name),
            name: c.name,
            expires_at: exp,
            derived: OnceLock::new(),
        }
    }
}
