//! The crate's error enum and the Entra (AADSTS) error a token or discovery
//! request is refused with.

use std::path::PathBuf;

/// Everything that can go wrong starting or driving the issuer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; `field` is its path, e.g. `clients[0].roles.api`.
    #[error("invalid dev issuer configuration at {field}: {message}")]
    Config {
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The state directory or the CA file in it could not be written.
    #[error("cannot write {path}: {source}")]
    StateDir {
        /// The directory or file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Key generation, encoding or signing failed in the crypto library.
    #[error("crypto failure: {0}")]
    Crypto(String),
    /// A certificate could not be built.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The TLS server configuration was refused.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// [`crate::DevIssuer::retire_key`] named a key that is not published.
    #[error("no published signing key has kid {0:?}")]
    UnknownKey(String),
    /// [`crate::DevIssuer::retire_key`] named the key that currently signs.
    #[error("key {0:?} is the current signing key; rotate before retiring it")]
    KeyInUse(String),
    /// The token request was refused, as the token endpoint would refuse it.
    #[error("{0}")]
    Grant(#[from] OAuthError),
    /// A lock was poisoned by a panic elsewhere.
    #[error("internal lock poisoned")]
    Poisoned,
    /// The server task failed or panicked.
    #[error("dev issuer server task failed: {0}")]
    Server(String),
}

/// An Entra-style OAuth error: `error`, an AADSTS code and its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: AADSTS{code}: {description}")]
pub struct OAuthError {
    /// HTTP status the endpoint answers with.
    pub status: u16,
    /// OAuth `error` value, e.g. `invalid_client`.
    pub error: &'static str,
    /// AADSTS number, e.g. 7000215.
    pub code: u32,
    /// Message after the `AADSTSnnn: ` prefix.
    pub description: String,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, code: u32, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            code,
            description: description.into(),
        }
    }

    /// AADSTS900144: a required body parameter is missing.
    pub(crate) fn missing_parameter(name: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// AADSTS70003: grant type not supported.
    pub(crate) fn unsupported_grant(grant: &str) -> Self {
        Self::new(
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        )
    }

    /// AADSTS700016: no such application in the tenant.
    pub(crate) fn unknown_client(client_id: &str, tenant: &str) -> Self {
        Self::new(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You may \
                 have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// AADSTS7000215: wrong client secret.
    pub(crate) fn bad_secret(client_id: &str) -> Self {
        Self::new(
            401,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client_id}'."
            ),
        )
    }

    /// AADSTS7000218: a confidential client sent no credential.
    pub(crate) fn missing_client_credential() -> Self {
        Self::new(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        )
    }

    /// AADSTS50126: wrong username or password.
    pub(crate) fn bad_user_credentials() -> Self {
        Self::new(
            400,
            "invalid_grant",
            50126,
            "Error validating credentials due to invalid username or password.",
        )
    }

    /// AADSTS50034: no such user.
    pub(crate) fn unknown_user(tenant: &str) -> Self {
        Self::new(
            400,
            "invalid_grant",
            50034,
            format!(
                "The user account {{EUII Hidden}} does not exist in the {tenant} directory. To \
                 sign into this application, the account must be added to the directory."
            ),
        )
    }

    /// AADSTS500011: no such resource principal.
    pub(crate) fn unknown_resource(resource: &str, tenant: &str) -> Self {
        Self::new(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named \
                 {tenant}. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You \
                 might have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// AADSTS1002012: client credentials need `{resource}/.default`.
    pub(crate) fn client_credentials_scope(scope: &str) -> Self {
        Self::new(
            400,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must \
                 have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI)."
            ),
        )
    }

    /// AADSTS70011: a delegated scope the API does not expose.
    pub(crate) fn invalid_scope(scope: &str) -> Self {
        Self::new(
            400,
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value \
                 for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        )
    }

    /// AADSTS28000: scopes of more than one resource in one request.
    pub(crate) fn several_resources() -> Self {
        Self::new(
            400,
            "invalid_scope",
            28000,
            "Provided value for the input parameter scope is not valid because it contains more \
             than one resource.",
        )
    }

    /// AADSTS90002: unknown tenant id or domain.
    pub(crate) fn unknown_tenant(tenant: &str) -> Self {
        Self::new(
            400,
            "invalid_tenant",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud. Check with your subscription \
                 administrator, this may happen if there are no active subscriptions for the \
                 tenant."
            ),
        )
    }

    /// AADSTS900023: the tenant segment is neither a GUID nor a domain name.
    pub(crate) fn malformed_tenant(tenant: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            900023,
            format!(
                "Specified tenant identifier '{tenant}' is neither a valid DNS name, nor a valid \
                 external domain."
            ),
        )
    }

    /// AADSTS90023: the request could not be read (e.g. not a form body).
    pub(crate) fn unreadable_body(why: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            90023,
            format!("Invalid request: {why}"),
        )
    }
}
