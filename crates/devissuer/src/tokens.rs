//! The token endpoint's logic without HTTP: which grant, which client,
//! which API, which claims; and the JWT minting itself. Claim sets follow
//! Microsoft's access-token claims reference for v1.0 and v2.0 tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Error;
use crate::config::{Api, Client, Directory, TokenVersion, User};
use crate::error::OAuthError;
use crate::keys::{Keys, SigningKey};

/// Scopes that ask for sign-in artefacts, not for an API.
const RESERVED_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Entra backdates `iat`/`nbf` by five minutes to absorb clock skew.
const BACKDATE_SECS: u64 = 300;

/// Which token endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/{tenant}/oauth2/token` (`resource=`).
    V1,
    /// `/{tenant}/oauth2/v2.0/token` (`scope=`).
    V2,
}

/// The form fields of a token request, after client authentication
/// fields from HTTP Basic have been merged in.
#[derive(Debug, Default, Clone)]
pub(crate) struct TokenParams {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// A request to mint a token directly, without HTTP and without secrets:
/// what `intraport dev` uses to print a ready token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRequest {
    /// An app-only token, as the client-credentials grant gives.
    App {
        /// Client id (GUID) or display name of a configured client.
        client: String,
        /// The API: App ID URI, app id, or its configured name.
        api: String,
    },
    /// A delegated token, as the password grant gives.
    User {
        /// Client id (GUID) or display name of a configured client.
        client: String,
        /// Username of a configured user.
        username: String,
        /// The API: App ID URI, app id, or its configured name.
        api: String,
        /// Delegated scope names (without the API prefix); all of the API's
        /// scopes when empty.
        scopes: Vec<String>,
    },
}

/// A minted access token and facts about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWS.
    pub access_token: String,
    /// Lifetime in seconds from issuance.
    pub expires_in: u64,
    /// Expiry as a Unix timestamp (`exp`).
    pub expires_on: u64,
    /// Token format.
    pub version: TokenVersion,
    /// `kid` of the key that signed it.
    pub kid: String,
    /// The `aud` claim.
    pub audience: String,
    /// The `iss` claim.
    pub issuer: String,
}

/// What a successful request resolves to, before claims are built.
struct Grant<'a> {
    api: &'a Api,
    /// The API identifier as the client named it (v1.0 `aud`).
    resource_as_requested: String,
    client: &'a Client,
    /// `0` public client, `1` client secret.
    client_auth: &'static str,
    user: Option<&'a User>,
    /// Delegated scopes (user tokens only).
    scp: Vec<String>,
    wants_id_token: bool,
}

/// Claims of a v2.0 access token, in the order Entra writes them.
#[derive(Serialize)]
struct V2Claims<'a> {
    aud: String,
    iss: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    aio: String,
    azp: String,
    azpacr: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<&'a [String]>,
    idtyp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    oid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
    rh: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scp: Option<String>,
    sub: String,
    tid: String,
    uti: String,
    ver: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    wids: Option<&'a [String]>,
    #[serde(rename = "_claim_names", skip_serializing_if = "Option::is_none")]
    claim_names: Option<Value>,
    #[serde(rename = "_claim_sources", skip_serializing_if = "Option::is_none")]
    claim_sources: Option<Value>,
}

/// Claims of a v1.0 access token, in the order Entra writes them.
#[derive(Serialize)]
struct V1Claims<'a> {
    aud: String,
    iss: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    acr: Option<&'a str>,
    aio: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    amr: Option<[&'a str; 1]>,
    appid: String,
    appidacr: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<&'a [String]>,
    idp: String,
    idtyp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    oid: String,
    rh: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scp: Option<String>,
    sub: String,
    tid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    unique_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upn: Option<&'a str>,
    uti: String,
    ver: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    wids: Option<&'a [String]>,
    #[serde(rename = "_claim_names", skip_serializing_if = "Option::is_none")]
    claim_names: Option<Value>,
    #[serde(rename = "_claim_sources", skip_serializing_if = "Option::is_none")]
    claim_sources: Option<Value>,
}

/// JOSE header; `x5t` only on v1.0 tokens, as Entra does.
#[derive(Serialize)]
struct Header<'a> {
    typ: &'a str,
    alg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5t: Option<&'a str>,
    kid: &'a str,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut buf = [0u8; N];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| Error::Crypto("random source failed".into()))?;
    Ok(buf)
}

fn opaque(len: usize) -> Result<String, Error> {
    let bytes = random_bytes::<96>()?;
    Ok(URL_SAFE_NO_PAD.encode(&bytes[..len.min(96)]))
}

fn b64_json(value: &impl Serialize) -> Result<String, Error> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| Error::Crypto(format!("claims encoding: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Everything token minting needs: the tenant, the keys, where we live.
pub(crate) struct Minter {
    pub dir: Directory,
    pub keys: Keys,
    pub authority: String,
}

impl Minter {
    pub(crate) fn tid(&self) -> String {
        self.dir.tenant_id.to_string()
    }

    /// `iss` of v2.0 tokens.
    pub(crate) fn v2_issuer(&self) -> String {
        format!("{}/{}/v2.0", self.authority, self.dir.tenant_id)
    }

    /// `iss` of v1.0 tokens, exactly as Entra writes it.
    pub(crate) fn v1_issuer(&self) -> String {
        format!("https://sts.windows.net/{}/", self.dir.tenant_id)
    }

    fn lifetime(&self) -> Result<u64, Error> {
        let (min, max) = self.dir.lifetime;
        let span = max.saturating_sub(min).as_secs();
        let r = u64::from_le_bytes(random_bytes::<8>()?);
        Ok(min.as_secs() + if span == 0 { 0 } else { r % (span + 1) })
    }

    /// Handles a token-endpoint request; the value is the JSON response body.
    pub(crate) fn token_response(
        &self,
        endpoint: Endpoint,
        params: &TokenParams,
    ) -> Result<Value, Error> {
        let grant = self.evaluate(endpoint, params)?;
        let token = self.mint(&grant, SystemTime::now())?;
        let mut body = match endpoint {
            Endpoint::V2 => json!({
                "token_type": "Bearer",
                "expires_in": token.expires_in,
                "ext_expires_in": token.expires_in,
                "access_token": token.access_token,
            }),
            // The v1.0 endpoint sends its numbers as strings.
            Endpoint::V1 => json!({
                "token_type": "Bearer",
                "expires_in": token.expires_in.to_string(),
                "ext_expires_in": token.expires_in.to_string(),
                "expires_on": token.expires_on.to_string(),
                "not_before": token.expires_on.saturating_sub(token.expires_in + BACKDATE_SECS).to_string(),
                "resource": grant.resource_as_requested,
                "access_token": token.access_token,
            }),
        };
        if let (Some(user), Value::Object(map)) = (grant.user, &mut body) {
            let scope = match endpoint {
                Endpoint::V2 => grant
                    .scp
                    .iter()
                    .map(|s| format!("{}/{s}", grant.resource_as_requested))
                    .collect::<Vec<_>>()
                    .join(" "),
                Endpoint::V1 => grant.scp.join(" "),
            };
            map.insert("scope".into(), Value::String(scope));
            if endpoint == Endpoint::V2 && grant.wants_id_token {
                map.insert(
                    "id_token".into(),
                    Value::String(self.id_token(grant.client, user, SystemTime::now())?),
                );
                let info = json!({"uid": user.object_id, "utid": self.dir.tenant_id});
                map.insert(
                    "client_info".into(),
                    Value::String(URL_SAFE_NO_PAD.encode(info.to_string())),
                );
            }
        }
        Ok(body)
    }

    /// Mints a token for configured principals, skipping secrets.
    pub(crate) fn issue(&self, request: &TokenRequest) -> Result<IssuedToken, Error> {
        let tenant = self.tid();
        let (client, api_ref) = match request {
            TokenRequest::App { client, api } | TokenRequest::User { client, api, .. } => {
                (client, api)
            }
        };
        let client = self
            .dir
            .client_by_id(client)
            .or_else(|| self.dir.clients.iter().find(|c| &c.name == client))
            .ok_or_else(|| OAuthError::unknown_client(client, &tenant))?;
        let api = self
            .dir
            .api_by_resource(api_ref)
            .or_else(|| self.dir.apis.iter().find(|a| &a.name == api_ref))
            .ok_or_else(|| OAuthError::unknown_resource(api_ref, &tenant))?;
        let grant = match request {
            TokenRequest::App { .. } => Grant {
                api,
                resource_as_requested: api.app_id_uri.clone(),
                client,
                client_auth: "1",
                user: None,
                scp: Vec::new(),
                wants_id_token: false,
            },
            TokenRequest::User {
                username, scopes, ..
            } => {
                let user = self
                    .dir
                    .user(username)
                    .ok_or_else(|| OAuthError::unknown_user(&tenant))?;
                let scp = if scopes.is_empty() {
                    api.scopes.clone()
                } else {
                    if let Some(bad) = scopes.iter().find(|s| !api.scopes.contains(s)) {
                        return Err(OAuthError::invalid_scope(&format!(
                            "{}/{bad}",
                            api.app_id_uri
                        ))
                        .into());
                    }
                    scopes.clone()
                };
                Grant {
                    api,
                    resource_as_requested: api.app_id_uri.clone(),
                    client,
                    client_auth: if client.secret.is_some() { "1" } else { "0" },
                    user: Some(user),
                    scp,
                    wants_id_token: false,
                }
            }
        };
        self.mint(&grant, SystemTime::now())
    }

    /// Checks a token-endpoint request and resolves what to issue.
    fn evaluate<'a>(&'a self, endpoint: Endpoint, p: &TokenParams) -> Result<Grant<'a>, Error> {
        let tenant = self.tid();
        let grant_type = p
            .grant_type
            .as_deref()
            .ok_or_else(|| OAuthError::missing_parameter("grant_type"))?;
        let is_password = match grant_type {
            "client_credentials" => false,
            "password" => true,
            other => return Err(OAuthError::unsupported_grant(other).into()),
        };
        let client_id = p
            .client_id
            .as_deref()
            .ok_or_else(|| OAuthError::missing_parameter("client_id"))?;
        let client = self
            .dir
            .client_by_id(client_id)
            .ok_or_else(|| OAuthError::unknown_client(client_id, &tenant))?;

        // Resolve the API and, for user tokens, the delegated scopes.
        let (api, resource_as_requested, scp, wants_id_token) = match endpoint {
            Endpoint::V1 => {
                let resource = p
                    .resource
                    .as_deref()
                    .ok_or_else(|| OAuthError::missing_parameter("resource"))?;
                let api = self
                    .dir
                    .api_by_resource(resource)
                    .ok_or_else(|| OAuthError::unknown_resource(resource, &tenant))?;
                let scp = if is_password {
                    api.scopes.clone()
                } else {
                    Vec::new()
                };
                (api, resource.to_string(), scp, false)
            }
            Endpoint::V2 => {
                let scope = p
                    .scope
                    .as_deref()
                    .ok_or_else(|| OAuthError::missing_parameter("scope"))?;
                self.resolve_scopes(scope, is_password)?
            }
        };

        // Authenticate the client: secret if one was sent, else public.
        let client_auth = match (&p.client_secret, &client.secret) {
            (Some(sent), Some(expected)) => {
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    sent.as_bytes(),
                    expected.as_bytes(),
                )
                .map_err(|_| OAuthError::bad_secret(client_id))?;
                "1"
            }
            (Some(_), None) => return Err(OAuthError::bad_secret(client_id).into()),
            (None, _) if is_password && client.allow_public_client => "0",
            (None, _) => return Err(OAuthError::missing_client_credential().into()),
        };

        let user = if is_password {
            let username = p
                .username
                .as_deref()
                .ok_or_else(|| OAuthError::missing_parameter("username"))?;
            let password = p
                .password
                .as_deref()
                .ok_or_else(|| OAuthError::missing_parameter("password"))?;
            let user = self
                .dir
                .user(username)
                .ok_or_else(|| OAuthError::unknown_user(&tenant))?;
            aws_lc_rs::constant_time::verify_slices_are_equal(
                password.as_bytes(),
                user.password.as_bytes(),
            )
            .map_err(|_| OAuthError::bad_user_credentials())?;
            Some(user)
        } else {
            None
        };
        Ok(Grant {
            api,
            resource_as_requested,
            client,
            client_auth,
            user,
            scp,
            wants_id_token,
        })
    }

    /// Splits a v2.0 `scope` parameter into one API and its scopes.
    fn resolve_scopes(
        &self,
        scope: &str,
        is_password: bool,
    ) -> Result<(&Api, String, Vec<String>, bool), Error> {
        let tenant = self.tid();
        let mut wants_id_token = false;
        let mut target: Option<(&Api, String)> = None;
        let mut names: Vec<String> = Vec::new();
        for item in scope.split_whitespace() {
            if RESERVED_SCOPES.contains(&item) {
                wants_id_token |= item == "openid";
                if !is_password {
                    return Err(OAuthError::client_credentials_scope(item).into());
                }
                continue;
            }
            let Some((resource, name)) = item.rsplit_once('/') else {
                return Err(OAuthError::invalid_scope(item).into());
            };
            if !is_password && name != ".default" {
                return Err(OAuthError::client_credentials_scope(item).into());
            }
            let api = self
                .dir
                .api_by_resource(resource)
                .ok_or_else(|| OAuthError::unknown_resource(resource, &tenant))?;
            match &target {
                Some((t, _)) if t.app_id != api.app_id => {
                    return Err(OAuthError::several_resources().into());
                }
                Some(_) => {}
                None => target = Some((api, resource.to_string())),
            }
            if name == ".default" {
                names.extend(api.scopes.iter().cloned());
            } else if api.scopes.iter().any(|s| s == name) {
                names.push(name.to_string());
            } else {
                return Err(OAuthError::invalid_scope(item).into());
            }
        }
        let Some((api, resource)) = target else {
            // Only sign-in scopes: Entra would issue a Microsoft Graph token,
            // and this tenant has no Graph.
            return Err(if scope.trim().is_empty() {
                OAuthError::missing_parameter("scope")
            } else {
                OAuthError::unknown_resource("https://graph.microsoft.com", &tenant)
            }
            .into());
        };
        let mut scp: Vec<String> = Vec::new();
        for n in names {
            if !scp.contains(&n) {
                scp.push(n);
            }
        }
        let scp = if is_password { scp } else { Vec::new() };
        Ok((api, resource, scp, wants_id_token))
    }

    fn sign(&self, header_x5t: bool, claims: &impl Serialize) -> Result<(String, String), Error> {
        let keys = self.keys.snapshot();
        let key: &SigningKey = keys
            .current()
            .ok_or_else(|| Error::Crypto("no signing key".into()))?;
        let header = Header {
            typ: "JWT",
            alg: "RS256",
            x5t: header_x5t.then_some(key.kid.as_str()),
            kid: &key.kid,
        };
        let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(claims)?);
        let signature = key.sign(signing_input.as_bytes())?;
        Ok((
            format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)),
            key.kid.clone(),
        ))
    }

    /// Builds the claim set for a resolved grant and signs it.
    fn mint(&self, g: &Grant<'_>, now: SystemTime) -> Result<IssuedToken, Error> {
        let lifetime = self.lifetime()?;
        let now_s = unix(now);
        let iat = now_s.saturating_sub(BACKDATE_SECS);
        let exp = now_s + lifetime;
        let tid = self.tid();
        let roles: Vec<String> = match g.user {
            Some(u) => u.roles.get(&g.api.name),
            None => g.client.roles.get(&g.api.name),
        }
        .cloned()
        .unwrap_or_default();
        let roles = (!roles.is_empty()).then_some(roles);
        let scp = g.user.map(|_| g.scp.join(" "));
        let (oid, sub) = match g.user {
            Some(u) => (u.object_id.to_string(), self.pairwise_sub(u, g.client)),
            None => (
                g.client.object_id.to_string(),
                g.client.object_id.to_string(),
            ),
        };
        // Groups, or the overage pointer when there are too many of them.
        let mut groups = None;
        let mut claim_names = None;
        let mut claim_sources = None;
        if let Some(u) = g.user.filter(|u| g.api.emit_groups && !u.groups.is_empty()) {
            if u.groups.len() > self.dir.group_overage_limit {
                claim_names = Some(json!({"groups": "src1"}));
                claim_sources = Some(json!({"src1": {"endpoint": format!(
                    "https://graph.windows.net/{tid}/users/{}/getMemberObjects",
                    u.object_id
                )}}));
            } else {
                groups = Some(u.groups.as_slice());
            }
        }
        let wids = g
            .user
            .filter(|u| g.api.emit_wids && !u.wids.is_empty())
            .map(|u| u.wids.as_slice());
        let idtyp = if g.user.is_some() { "user" } else { "app" };
        let aio = opaque(72)?;
        let rh = format!("0.{}.", opaque(60)?);
        let uti = opaque(16)?;

        let (access_token, kid, audience, issuer) = match g.api.version {
            TokenVersion::V2 => {
                let claims = V2Claims {
                    aud: g.api.app_id.to_string(),
                    iss: self.v2_issuer(),
                    iat,
                    nbf: iat,
                    exp,
                    aio,
                    azp: g.client.client_id.to_string(),
                    azpacr: g.client_auth,
                    groups,
                    idtyp,
                    name: g.user.map(|u| u.name.as_str()),
                    oid,
                    preferred_username: g.user.map(|u| u.username.as_str()),
                    rh,
                    roles,
                    scp,
                    sub,
                    tid: tid.clone(),
                    uti,
                    ver: TokenVersion::V2.as_claim(),
                    wids,
                    claim_names,
                    claim_sources,
                };
                let (t, kid) = self.sign(false, &claims)?;
                (t, kid, claims.aud, claims.iss)
            }
            TokenVersion::V1 => {
                let claims = V1Claims {
                    aud: g.resource_as_requested.clone(),
                    iss: self.v1_issuer(),
                    iat,
                    nbf: iat,
                    exp,
                    acr: g.user.map(|_| "1"),
                    aio,
                    amr: g.user.map(|_| ["pwd"]),
                    appid: g.client.client_id.to_string(),
                    appidacr: g.client_auth,
                    groups,
                    idp: self.v1_issuer(),
                    idtyp,
                    name: g.user.map(|u| u.name.as_str()),
                    oid,
                    rh,
                    roles,
                    scp,
                    sub,
                    tid: tid.clone(),
                    unique_name: g.user.map(|u| u.username.as_str()),
                    upn: g.user.map(|u| u.username.as_str()),
                    uti,
                    ver: TokenVersion::V1.as_claim(),
                    wids,
                    claim_names,
                    claim_sources,
                };
                let (t, kid) = self.sign(true, &claims)?;
                (t, kid, claims.aud, claims.iss)
            }
        };
        Ok(IssuedToken {
            access_token,
            expires_in: lifetime,
            expires_on: exp,
            version: g.api.version,
            kid,
            audience,
            issuer,
        })
    }

    /// A v2.0 ID token for the password grant when `openid` was asked for.
    fn id_token(&self, client: &Client, user: &User, now: SystemTime) -> Result<String, Error> {
        let now_s = unix(now);
        let iat = now_s.saturating_sub(BACKDATE_SECS);
        let claims = json!({
            "aud": client.client_id,
            "iss": self.v2_issuer(),
            "iat": iat,
            "nbf": iat,
            "exp": now_s + 3600,
            "name": user.name,
            "oid": user.object_id,
            "preferred_username": user.username,
            "rh": format!("0.{}.", opaque(60)?),
            "sub": self.pairwise_sub(user, client),
            "tid": self.dir.tenant_id,
            "uti": opaque(16)?,
            "ver": "2.0",
        });
        Ok(self.sign(false, &claims)?.0)
    }

    /// `sub` is pairwise: stable per user and client, different across clients.
    fn pairwise_sub(&self, user: &User, client: &Client) -> String {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(self.dir.tenant_id.as_bytes());
        ctx.update(user.object_id.as_bytes());
        ctx.update(client.client_id.as_bytes());
        URL_SAFE_NO_PAD.encode(ctx.finish().as_ref())
    }
}
