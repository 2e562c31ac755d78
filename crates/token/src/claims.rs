//! Claims: the raw set a token carries, and the typed identity policy decisions use.
//!
//! Names follow Microsoft's access-token claims reference: v2 tokens carry `azp` /
//! `azpacr` and `preferred_username`, v1 tokens `appid` / `appidacr` and `upn` /
//! `unique_name`; both are folded into one [`Identity`].

use std::any::Any;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{ErrorCode, TokenError};
use crate::json;

/// `aud`: one string or an array of strings (RFC 7519 4.1.3).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
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

/// The latest NumericDate accepted: 9999-12-31T23:59:59Z, .NET's `DateTime.MaxValue`.
/// Microsoft's `EpochTime.DateTime` clamps anything later to that instant and so takes
/// it as "never expires"; here it is refused instead, as is a time before 1970 (which
/// Microsoft clamps to the epoch).
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// The claims of a token as decoded, before or after verification.
#[derive(Clone, Debug, Default)]
#[allow(missing_docs)] // field names are the registered claim names
pub struct RawClaims {
    pub iss: Option<String>,
    pub aud: Audience,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
    pub tid: Option<String>,
    pub oid: Option<String>,
    pub sub: Option<String>,
    pub azp: Option<String>,
    pub appid: Option<String>,
    pub azpacr: Option<String>,
    pub appidacr: Option<String>,
    pub scp: Option<String>,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub wids: Vec<String>,
    pub idtyp: Option<String>,
    pub ver: Option<String>,
    pub preferred_username: Option<String>,
    pub upn: Option<String>,
    pub unique_name: Option<String>,
    pub name: Option<String>,
    /// Whether `_claim_names` names `groups` (the groups overage).
    pub groups_overage: bool,
}

fn malformed(message: String) -> TokenError {
    TokenError::new(ErrorCode::Malformed, message)
}

/// A string claim; `null` reads as absent, as Microsoft's `ReadString` does.
fn string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, TokenError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(malformed(format!(
            "claim `{name}` must be a string, found a {}",
            json::kind(other)
        ))),
    }
}

/// A claim of strings: an array of them, or one string (Microsoft makes one claim per
/// element, and one claim of a lone string).
fn strings(map: &Map<String, Value>, name: &str) -> Result<Vec<String>, TokenError> {
    let bad = |found: &Value| {
        malformed(format!(
            "claim `{name}` must be an array of strings, found a {}",
            json::kind(found)
        ))
    };
    match map.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(bad(other)),
            })
            .collect(),
        Some(other) => Err(bad(other)),
    }
}

/// `aud` as Microsoft's `ReadPayloadValue` reads it: a string, or an array of strings
/// whose `null`s are skipped; `null` is no audience.
fn audience(map: &Map<String, Value>) -> Result<Audience, TokenError> {
    match map.get("aud") {
        None | Some(Value::Null) => Ok(Audience::None),
        Some(Value::String(s)) => Ok(Audience::One(s.clone())),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for v in items {
                match v {
                    Value::Null => {}
                    Value::String(s) => out.push(s.clone()),
                    other => {
                        return Err(malformed(format!(
                            "claim `aud` must hold strings, found a {}",
                            json::kind(other)
                        )));
                    }
                }
            }
            Ok(Audience::Many(out))
        }
        Some(other) => Err(malformed(format!(
            "claim `aud` must be a string or an array of strings, found a {}",
            json::kind(other)
        ))),
    }
}

/// What .NET's `long.TryParse` and `double.TryParse` skip around a number.
fn dotnet_white(c: char) -> bool {
    matches!(c, '\u{9}'..='\u{d}' | ' ')
}

/// A NumericDate (`exp`, `nbf`, `iat`) read as Microsoft.IdentityModel 8 reads it
/// (`JsonSerializerPrimitives.ReadLong`, called from `JsonWebToken.ReadPayloadValue`):
/// a JSON integer; else a JSON number converted with `Convert.ToInt64(double)`, which
/// rounds half to even; a string is parsed the same two ways (`long.TryParse`, then
/// `double.TryParse`); any other type, `null` included, is an error of the token's
/// reading (IDX14102, malformed). Deliberately narrower: a string's number is read in
/// the invariant culture without thousands separators (.NET's depends on the server's
/// culture), and a time outside 1970..=9999 is refused, not clamped.
fn numeric_date(map: &Map<String, Value>, name: &str) -> Result<Option<u64>, TokenError> {
    let Some(v) = map.get(name) else {
        return Ok(None);
    };
    let bad = |why: String| malformed(format!("claim `{name}` {why}"));
    let from_f64 = |f: f64| -> Result<i64, TokenError> {
        let r = f.round_ties_even();
        // i64::MAX as f64 is 2^63, itself out of range.
        if r.is_finite() && r >= i64::MIN as f64 && r < i64::MAX as f64 {
            Ok(r as i64)
        } else {
            Err(bad(format!("({f}) is not a time in seconds")))
        }
    };
    let secs: i64 = match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => i,
            None => from_f64(n.as_f64().unwrap_or(f64::NAN))?,
        },
        Value::String(s) => {
            let t = s.trim_matches(dotnet_white);
            match t.parse::<i64>() {
                Ok(i) => i,
                // "Infinity" and "NaN" parse here as in .NET, and are refused by
                // `from_f64` as `Convert.ToInt64` refuses them.
                Err(_) => match t.parse::<f64>() {
                    Ok(f) => from_f64(f)?,
                    Err(_) => {
                        return Err(bad(format!(
                            "must be a NumericDate (seconds since 1970), found the string {}",
                            json::shown(s)
                        )));
                    }
                },
            }
        }
        other => {
            return Err(bad(format!(
                "must be a NumericDate (seconds since 1970), found a {}",
                json::kind(other)
            )));
        }
    };
    u64::try_from(secs)
        .ok()
        .filter(|s| *s <= MAX_NUMERIC_DATE)
        .map(Some)
        .ok_or_else(|| {
            bad(format!(
                "is {secs}, outside the times accepted (0 to {MAX_NUMERIC_DATE}, the end of year 9999)"
            ))
        })
}

impl RawClaims {
    /// Read the claims the validation and the identity use from a token's payload
    /// object; other claims are ignored. A claim of the wrong type is `malformed`, and
    /// so are two claim names that differ only in case (`tid` and `TID`: one reader's
    /// tenant would be another's unknown claim).
    pub fn from_object(map: &Map<String, Value>) -> Result<RawClaims, TokenError> {
        let mut seen = std::collections::HashSet::with_capacity(map.len());
        for k in map.keys() {
            if !seen.insert(k.to_ascii_lowercase()) {
                return Err(malformed(format!(
                    "claim names {} and another differ only in case",
                    json::shown(k)
                )));
            }
        }
        let groups_overage = match map.get("_claim_names") {
            None | Some(Value::Null) => false,
            Some(Value::Object(names)) => names.contains_key("groups"),
            Some(other) => {
                return Err(malformed(format!(
                    "claim `_claim_names` must be an object, found a {}",
                    json::kind(other)
                )));
            }
        };
        Ok(RawClaims {
            iss: string(map, "iss")?,
            aud: audience(map)?,
            exp: numeric_date(map, "exp")?,
            nbf: numeric_date(map, "nbf")?,
            iat: numeric_date(map, "iat")?,
            tid: string(map, "tid")?,
            oid: string(map, "oid")?,
            sub: string(map, "sub")?,
            azp: string(map, "azp")?,
            appid: string(map, "appid")?,
            azpacr: string(map, "azpacr")?,
            appidacr: string(map, "appidacr")?,
            scp: string(map, "scp")?,
            roles: strings(map, "roles")?,
            groups: strings(map, "groups")?,
            wids: strings(map, "wids")?,
            idtyp: string(map, "idtyp")?,
            ver: string(map, "ver")?,
            preferred_username: string(map, "preferred_username")?,
            upn: string(map, "upn")?,
            unique_name: string(map, "unique_name")?,
            name: string(map, "name")?,
            groups_overage,
        })
    }
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

/// A GUID in the lower-case form Entra writes (and policies and upstreams compare
/// against); any other value as it is.
fn guid_lower(s: String) -> Arc<str> {
    if crate::jwt::is_guid(&s) {
        Arc::from(s.to_ascii_lowercase())
    } else {
        Arc::from(s)
    }
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
        let groups_overage = c.groups_overage;
        Identity {
            issuer: c.iss.unwrap_or_default(),
            audience,
            kid: kid.map(Arc::from),
            version: c.ver,
            tenant_id: c.tid.map(guid_lower),
            object_id: c.oid.map(guid_lower),
            subject: c.sub,
            app_id: c.azp.or(c.appid).map(guid_lower),
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
