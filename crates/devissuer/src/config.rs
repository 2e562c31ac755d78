//! Configuration of the development issuer: plain serde structs as a file
//! would hold them ([`DevIssuerConfig`]), and the checked [`Directory`] the
//! running issuer uses, so request handling never sees unvalidated input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

use crate::Error;

/// Which access-token format an API receives, like the app manifest's
/// `accessTokenAcceptedVersion` (`null`/`1` → v1.0, `2` → v2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "u8")]
pub enum TokenVersion {
    /// v1.0 tokens: issuer `https://sts.windows.net/{tid}/`, `appid`, `upn`.
    #[default]
    V1,
    /// v2.0 tokens: issuer `{authority}/{tid}/v2.0`, `azp`, `preferred_username`.
    V2,
}

impl TryFrom<u8> for TokenVersion {
    type Error = String;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            1 => Ok(Self::V1),
            2 => Ok(Self::V2),
            other => Err(format!(
                "access_token_version must be 1 or 2, found {other}"
            )),
        }
    }
}

impl TokenVersion {
    /// The `ver` claim value.
    pub fn as_claim(self) -> &'static str {
        match self {
            Self::V1 => "1.0",
            Self::V2 => "2.0",
        }
    }
}

/// Which directory memberships an API's tokens carry, like the app
/// manifest's `groupMembershipClaims`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum GroupMembershipClaims {
    /// Neither `groups` nor `wids`.
    #[default]
    None,
    /// The `groups` claim.
    SecurityGroup,
    /// The `wids` claim (tenant-wide directory roles).
    DirectoryRole,
    /// Both `groups` and `wids`.
    All,
}

impl GroupMembershipClaims {
    fn groups(self) -> bool {
        matches!(self, Self::SecurityGroup | Self::All)
    }
    fn wids(self) -> bool {
        matches!(self, Self::DirectoryRole | Self::All)
    }
}

/// A protected web API (a resource), as registered in the tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Short name used to refer to the API from clients' and users' role maps.
    pub name: String,
    /// Application (client) id of the API: the `aud` of its v2.0 tokens.
    pub app_id: Uuid,
    /// Application ID URI, e.g. `api://intraport-demo`.
    pub app_id_uri: String,
    /// App roles the API defines (the `roles` claim).
    #[serde(default)]
    pub app_roles: Vec<String>,
    /// Delegated permissions the API exposes (the `scp` claim).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Token format the API accepts; v1.0 when unset, as in Entra.
    #[serde(default)]
    pub access_token_version: TokenVersion,
    /// Whether `groups` and/or `wids` are emitted.
    #[serde(default)]
    pub group_membership_claims: GroupMembershipClaims,
}

/// A client application registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Display name; also accepted by [`crate::DevIssuer::issue_token`] in
    /// place of the client id.
    pub name: String,
    /// Application (client) id.
    pub client_id: Uuid,
    /// Client secret; a client without one is a public client.
    #[serde(default)]
    pub secret: Option<String>,
    /// Whether public-client flows (password grant without a secret) are
    /// allowed, like the manifest's `allowPublicClient`.
    #[serde(default)]
    pub allow_public_client: bool,
    /// Object id of the client's service principal (`oid`/`sub` of app
    /// tokens); derived from the client id when unset.
    #[serde(default)]
    pub object_id: Option<Uuid>,
    /// App roles granted to this client, by API name.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
}

/// A user account in the tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User principal name, e.g. `alice@contoso.example`.
    pub username: String,
    /// Password for the resource-owner password grant.
    pub password: String,
    /// Object id (`oid`); derived from the username when unset.
    #[serde(default)]
    pub object_id: Option<Uuid>,
    /// Display name (`name`); the username when unset.
    #[serde(default)]
    pub name: Option<String>,
    /// App roles assigned to this user, by API name.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// Object ids of the groups the user is a member of.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Directory role template ids (`wids`).
    #[serde(default)]
    pub wids: Vec<String>,
}

/// Range the random access-token lifetime is drawn from, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimeRange {
    /// Shortest lifetime.
    pub min_secs: u64,
    /// Longest lifetime.
    pub max_secs: u64,
}

impl Default for LifetimeRange {
    /// 60 to 90 minutes, Entra's default variation.
    fn default() -> Self {
        Self {
            min_secs: 3600,
            max_secs: 5400,
        }
    }
}

/// Entra emits the groups overage claim past 200 groups in a JWT.
const DEFAULT_GROUP_OVERAGE_LIMIT: usize = 200;

fn default_true() -> bool {
    true
}

fn default_overage() -> usize {
    DEFAULT_GROUP_OVERAGE_LIMIT
}

/// Everything the issuer needs to start. Deserializable from TOML/JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevIssuerConfig {
    /// Port on 127.0.0.1; 0 asks the OS for a free one.
    #[serde(default)]
    pub port: u16,
    /// Serve HTTPS (the default) or plain HTTP.
    #[serde(default = "default_true")]
    pub tls: bool,
    /// Where the CA certificate is written; a fresh directory under the
    /// system temporary directory when unset.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Tenant id; random when unset.
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
    /// A verified domain of the tenant, accepted in URLs in place of the id.
    #[serde(default)]
    pub domain: Option<String>,
    /// Registered APIs.
    #[serde(default)]
    pub apis: Vec<ApiConfig>,
    /// Registered clients.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Users.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Number of groups past which a token carries the overage claim.
    #[serde(default = "default_overage")]
    pub group_overage_limit: usize,
    /// Access-token lifetime range.
    #[serde(default)]
    pub token_lifetime: LifetimeRange,
}

impl Default for DevIssuerConfig {
    fn default() -> Self {
        Self {
            port: 0,
            tls: true,
            state_dir: None,
            tenant_id: None,
            domain: None,
            apis: Vec::new(),
            clients: Vec::new(),
            users: Vec::new(),
            group_overage_limit: DEFAULT_GROUP_OVERAGE_LIMIT,
            token_lifetime: LifetimeRange::default(),
        }
    }
}

/// Fixed ids of the demo configuration, so printed examples stay valid
/// across runs.
pub mod demo {
    use uuid::Uuid;

    /// Tenant id of [`super::DevIssuerConfig::demo`].
    pub const TENANT_ID: Uuid = Uuid::from_u128(0x7f1c2a3e_5b6d_4e8f_9a0b_1c2d3e4f5a6b);
    /// Domain alias of the demo tenant.
    pub const DOMAIN: &str = "contoso.example";
    /// Name of the demo API.
    pub const API_NAME: &str = "intraport-demo";
    /// App id of the demo API.
    pub const API_APP_ID: Uuid = Uuid::from_u128(0x3b8e6c1d_2f4a_4b5c_8d9e_0a1b2c3d4e5f);
    /// App ID URI of the demo API.
    pub const API_APP_ID_URI: &str = "api://intraport-demo";
    /// Client id of `demo-client` (role `Reader`).
    pub const CLIENT_ID: Uuid = Uuid::from_u128(0x5a0c7e2b_9d1f_4c3a_b6e8_2f4d6a8c0e1b);
    /// Secret of `demo-client`.
    pub const CLIENT_SECRET: &str = "demo-client-secret";
    /// Client id of `admin-client` (roles `Reader` and `Writer`).
    pub const ADMIN_CLIENT_ID: Uuid = Uuid::from_u128(0x9e4b1a7c_3d2f_4e6a_8b0c_5d7e9f1a3b2c);
    /// Secret of `admin-client`.
    pub const ADMIN_CLIENT_SECRET: &str = "admin-client-secret";
    /// The demo user.
    pub const USERNAME: &str = "alice@contoso.example";
    /// The demo user's password.
    pub const PASSWORD: &str = "alice-password";
}

impl DevIssuerConfig {
    /// A ready demo tenant: API `api://intraport-demo` (v2.0 tokens, roles
    /// `Reader`/`Writer`, scope `access_as_user`), `demo-client` (role
    /// `Reader`, public-client flows allowed), `admin-client` (both roles)
    /// and the user `alice@contoso.example`. Ids are in [`demo`].
    pub fn demo() -> Self {
        let roles = |r: &[&str]| {
            BTreeMap::from([(
                demo::API_NAME.to_string(),
                r.iter().map(|s| s.to_string()).collect(),
            )])
        };
        Self {
            tenant_id: Some(demo::TENANT_ID),
            domain: Some(demo::DOMAIN.to_string()),
            apis: vec![ApiConfig {
                name: demo::API_NAME.to_string(),
                app_id: demo::API_APP_ID,
                app_id_uri: demo::API_APP_ID_URI.to_string(),
                app_roles: vec!["Reader".into(), "Writer".into()],
                scopes: vec!["access_as_user".into()],
                access_token_version: TokenVersion::V2,
                group_membership_claims: GroupMembershipClaims::SecurityGroup,
            }],
            clients: vec![
                ClientConfig {
                    name: "demo-client".into(),
                    client_id: demo::CLIENT_ID,
                    secret: Some(demo::CLIENT_SECRET.into()),
                    allow_public_client: true,
                    object_id: None,
                    roles: roles(&["Reader"]),
                },
                ClientConfig {
                    name: "admin-client".into(),
                    client_id: demo::ADMIN_CLIENT_ID,
                    secret: Some(demo::ADMIN_CLIENT_SECRET.into()),
                    allow_public_client: false,
                    object_id: None,
                    roles: roles(&["Reader", "Writer"]),
                },
            ],
            users: vec![UserConfig {
                username: demo::USERNAME.into(),
                password: demo::PASSWORD.into(),
                object_id: None,
                name: Some("Alice Example".into()),
                roles: roles(&["Reader"]),
                groups: vec![Uuid::from_u128(0x1d2e3f4a_5b6c_4d7e_8f9a_0b1c2d3e4f5a).to_string()],
                wids: Vec::new(),
            }],
            ..Self::default()
        }
    }
}

/// A checked API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub name: String,
    pub app_id: Uuid,
    pub app_id_uri: String,
    pub app_roles: BTreeSet<String>,
    pub scopes: Vec<String>,
    pub version: TokenVersion,
    pub emit_groups: bool,
    pub emit_wids: bool,
}

/// A checked client.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub name: String,
    pub client_id: Uuid,
    pub secret: Option<String>,
    pub allow_public_client: bool,
    pub object_id: Uuid,
    pub roles: BTreeMap<String, Vec<String>>,
}

/// A checked user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub username: String,
    pub password: String,
    pub object_id: Uuid,
    pub name: String,
    pub roles: BTreeMap<String, Vec<String>>,
    pub groups: Vec<String>,
    pub wids: Vec<String>,
}

/// The validated tenant: what request handling works from.
#[derive(Debug, Clone)]
pub(crate) struct Directory {
    pub tenant_id: Uuid,
    pub domain: Option<String>,
    pub apis: Vec<Api>,
    pub clients: Vec<Client>,
    pub users: Vec<User>,
    pub group_overage_limit: usize,
    pub lifetime: (Duration, Duration),
}

fn config_err(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Config {
        field: field.into(),
        message: message.into(),
    }
}

fn check_roles(
    field: &str,
    roles: &BTreeMap<String, Vec<String>>,
    apis: &[Api],
) -> Result<(), Error> {
    for (api_name, assigned) in roles {
        let api = apis
            .iter()
            .find(|a| &a.name == api_name)
            .ok_or_else(|| config_err(format!("{field}.{api_name}"), "no API has this name"))?;
        if let Some(role) = assigned.iter().find(|r| !api.app_roles.contains(*r)) {
            return Err(config_err(
                format!("{field}.{api_name}"),
                format!("role {role:?} is not an app role of API {api_name:?}"),
            ));
        }
    }
    Ok(())
}

impl Directory {
    /// Validates a configuration; every error names the offending field.
    pub(crate) fn from_config(config: &DevIssuerConfig) -> Result<Self, Error> {
        let tenant_id = config.tenant_id.unwrap_or_else(Uuid::new_v4);
        if let Some(domain) = &config.domain {
            let reserved = ["common", "organizations", "consumers"];
            if !domain.contains('.') || reserved.contains(&domain.as_str()) {
                return Err(config_err(
                    "domain",
                    format!("{domain:?} is not a DNS domain name"),
                ));
            }
        }
        let mut apis = Vec::new();
        for (i, a) in config.apis.iter().enumerate() {
            let field = format!("apis[{i}]");
            if a.name.is_empty() {
                return Err(config_err(format!("{field}.name"), "must not be empty"));
            }
            if a.app_id_uri.is_empty() || a.app_id_uri.ends_with('/') {
                return Err(config_err(
                    format!("{field}.app_id_uri"),
                    "must be a non-empty URI without a trailing slash",
                ));
            }
            if apis.iter().any(|o: &Api| o.name == a.name) {
                return Err(config_err(format!("{field}.name"), "duplicate API name"));
            }
            if apis
                .iter()
                .any(|o: &Api| o.app_id == a.app_id || o.app_id_uri == a.app_id_uri)
            {
                return Err(config_err(
                    format!("{field}.app_id"),
                    "app id or App ID URI already used by another API",
                ));
            }
            if let Some(s) = a.scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
                return Err(config_err(
                    format!("{field}.scopes"),
                    format!("scope {s:?} must be one non-empty word"),
                ));
            }
            apis.push(Api {
                name: a.name.clone(),
                app_id: a.app_id,
                app_id_uri: a.app_id_uri.clone(),
                app_roles: a.app_roles.iter().cloned().collect(),
                scopes: a.scopes.clone(),
                version: a.access_token_version,
                emit_groups: a.group_membership_claims.groups(),
                emit_wids: a.group_membership_claims.wids(),
            });
        }
        let mut clients: Vec<Client> = Vec::new();
        for (i, c) in config.clients.iter().enumerate() {
            let field = format!("clients[{i}]");
            if clients.iter().any(|o| o.client_id == c.client_id) {
                return Err(config_err(
                    format!("{field}.client_id"),
                    "duplicate client id",
                ));
            }
            if c.secret.as_deref() == Some("") {
                return Err(config_err(format!("{field}.secret"), "must not be empty"));
            }
            check_roles(&format!("{field}.roles"), &c.roles, &apis)?;
            clients.push(Client {
                name: c.name.clone(),
                client_id: c.client_id,
                secret: c.secret.clone(),
                allow_public_client: c.allow_public_client || c.secret.is_none(),
                object_id: c
                    .object_id
                    .unwrap_or_else(|| Uuid::new_v5(&tenant_id, c.client_id.as_bytes())),
                roles: c.roles.clone(),
            });
        }
        let mut users: Vec<User> = Vec::new();
        for (i, u) in config.users.iter().enumerate() {
            let field = format!("users[{i}]");
            if !u.username.contains('@') {
                return Err(config_err(
                    format!("{field}.username"),
                    "must be a user principal name like name@domain",
                ));
            }
            if users
                .iter()
                .any(|o| o.username.eq_ignore_ascii_case(&u.username))
            {
                return Err(config_err(
                    format!("{field}.username"),
                    "duplicate username",
                ));
            }
            check_roles(&format!("{field}.roles"), &u.roles, &apis)?;
            users.push(User {
                username: u.username.clone(),
                password: u.password.clone(),
                object_id: u.object_id.unwrap_or_else(|| {
                    Uuid::new_v5(&tenant_id, u.username.to_ascii_lowercase().as_bytes())
                }),
                name: u.name.clone().unwrap_or_else(|| u.username.clone()),
                roles: u.roles.clone(),
                groups: u.groups.clone(),
                wids: u.wids.clone(),
            });
        }
        let LifetimeRange { min_secs, max_secs } = config.token_lifetime;
        if min_secs == 0 || min_secs > max_secs {
            return Err(config_err(
                "token_lifetime",
                format!("need 0 < min_secs <= max_secs, found {min_secs}..{max_secs}"),
            ));
        }
        Ok(Self {
            tenant_id,
            domain: config.domain.clone(),
            apis,
            clients,
            users,
            group_overage_limit: config.group_overage_limit,
            lifetime: (Duration::from_secs(min_secs), Duration::from_secs(max_secs)),
        })
    }

    /// Finds an API by App ID URI, app id or `api://{app id}`.
    pub(crate) fn api_by_resource(&self, resource: &str) -> Option<&Api> {
        self.apis.iter().find(|a| {
            a.app_id_uri.eq_ignore_ascii_case(resource)
                || Uuid::parse_str(resource).is_ok_and(|id| id == a.app_id)
                || resource
                    .strip_prefix("api://")
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .is_some_and(|id| id == a.app_id)
        })
    }

    /// Finds a client by id (what the token endpoint receives).
    pub(crate) fn client_by_id(&self, client_id: &str) -> Option<&Client> {
        let id = Uuid::parse_str(client_id).ok()?;
        self.clients.iter().find(|c| c.client_id == id)
    }

    /// Finds a user by username, case-insensitively as Entra does.
    pub(crate) fn user(&self, username: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn demo_config_validates() {
        let dir = Directory::from_config(&DevIssuerConfig::demo()).unwrap();
        assert_eq!(dir.tenant_id, demo::TENANT_ID);
        assert!(dir.api_by_resource("api://intraport-demo").is_some());
        assert!(dir.api_by_resource(&demo::API_APP_ID.to_string()).is_some());
        assert!(
            dir.api_by_resource(&format!("api://{}", demo::API_APP_ID))
                .is_some()
        );
        assert!(dir.api_by_resource("api://other").is_none());
        assert!(dir.user("ALICE@contoso.example").is_some());
    }

    #[test]
    fn unknown_role_is_rejected_with_its_field() {
        let mut config = DevIssuerConfig::demo();
        config.clients[0]
            .roles
            .insert(demo::API_NAME.into(), vec!["Owner".into()]);
        let err = Directory::from_config(&config).unwrap_err();
        assert!(
            err.to_string().contains("clients[0].roles.intraport-demo"),
            "{err}"
        );
    }

    #[test]
    fn role_for_unknown_api_is_rejected() {
        let mut config = DevIssuerConfig::demo();
        config.users[0].roles.insert("nope".into(), vec![]);
        let err = Directory::from_config(&config).unwrap_err();
        assert!(err.to_string().contains("users[0].roles.nope"), "{err}");
    }

    #[test]
    fn bad_lifetime_is_rejected() {
        let mut config = DevIssuerConfig::demo();
        config.token_lifetime = LifetimeRange {
            min_secs: 100,
            max_secs: 10,
        };
        let err = Directory::from_config(&config).unwrap_err();
        assert!(err.to_string().contains("token_lifetime"), "{err}");
    }

    #[test]
    fn deserializes_from_json_with_version_numbers() {
        let config: DevIssuerConfig = serde_json::from_value(serde_json::json!({
            "tenant_id": "00000000-0000-0000-0000-000000000001",
            "apis": [{"name": "a", "app_id": "00000000-0000-0000-0000-000000000002",
                      "app_id_uri": "api://a", "access_token_version": 2}],
        }))
        .unwrap();
        assert_eq!(config.apis[0].access_token_version, TokenVersion::V2);
        assert!(config.tls);
        let bad = serde_json::from_value::<DevIssuerConfig>(serde_json::json!({
            "apis": [{"name": "a", "app_id": "00000000-0000-0000-0000-000000000002",
                      "app_id_uri": "api://a", "access_token_version": 3}],
        }));
        assert!(bad.unwrap_err().to_string().contains("must be 1 or 2"));
        let unknown = serde_json::from_value::<DevIssuerConfig>(serde_json::json!({"prot": 1}));
        assert!(unknown.is_err());
    }
}
