//! Acquiring tokens from an authority's token endpoint (client credentials and the
//! resource-owner password grant), for `intraport token get`, synthetic logins and
//! staging validation. Entra's error responses (`error`, `error_description`,
//! `error_codes`) are kept whole so failures can be classified.

use serde::{Deserialize, Serialize};

/// A grant to run.
#[derive(Clone, Debug)]
pub enum Grant {
    /// `grant_type=client_credentials`.
    ClientCredentials {
        /// `client_id`.
        client_id: String,
        /// `client_secret`.
        client_secret: String,
    },
    /// `grant_type=password` (test users only: no MFA, no federation).
    Password {
        /// `client_id`.
        client_id: String,
        /// `client_secret`, for confidential clients.
        client_secret: Option<String>,
        /// `username`.
        username: String,
        /// `password`.
        password: String,
    },
}

/// What to ask for: v2 `scope` values or a v1 `resource`.
#[derive(Clone, Debug)]
pub enum Target {
    /// v2.0 endpoint: space-joined `scope` (e.g. `api://x/.default`).
    Scopes(Vec<String>),
    /// v1.0 endpoint: `resource` (App ID URI or client id).
    Resource(String),
}

/// A successful token response.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// `Bearer`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Lifetime in seconds (a number, or a string on Entra's v1 endpoint).
    #[serde(default)]
    pub expires_in: Option<serde_json::Value>,
    /// Granted scopes, when the endpoint says.
    #[serde(default)]
    pub scope: Option<String>,
}

/// An error response from the token endpoint, or a transport failure.
#[derive(Debug, thiserror::Error, Serialize)]
pub enum AcquireError {
    /// The endpoint answered with an OAuth error.
    #[error("token endpoint answered HTTP {status}: {error}: {description}")]
    Endpoint {
        /// HTTP status.
        status: u16,
        /// `error`.
        error: String,
        /// `error_description`.
        description: String,
        /// Entra's `error_codes` (AADSTS numbers).
        error_codes: Vec<u64>,
    },
    /// No usable answer (connection, TLS, not JSON).
    #[error("token endpoint {endpoint}: {message}")]
    Transport {
        /// The URL.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<u64>,
}

/// Run `grant` against `endpoint`.
pub async fn acquire(
    http: &reqwest::Client,
    endpoint: &str,
    grant: &Grant,
    target: &Target,
) -> Result<TokenResponse, AcquireError> {
    let mut form: Vec<(&str, String)> = Vec::new();
    match grant {
        Grant::ClientCredentials {
            client_id,
            client_secret,
        } => {
            form.push(("grant_type", "client_credentials".into()));
            form.push(("client_id", client_id.clone()));
            form.push(("client_secret", client_secret.clone()));
        }
        Grant::Password {
            client_id,
            client_secret,
            username,
            password,
        } => {
            form.push(("grant_type", "password".into()));
            form.push(("client_id", client_id.clone()));
            if let Some(s) = client_secret {
                form.push(("client_secret", s.clone()));
            }
            form.push(("username", username.clone()));
            form.push(("password", password.clone()));
        }
    }
    match target {
        Target::Scopes(s) => form.push(("scope", s.join(" "))),
        Target::Resource(r) => form.push(("resource", r.clone())),
    }
    let transport = |message: String| AcquireError::Transport {
        endpoint: endpoint.to_string(),
        message,
    };
    let resp = http
        .post(endpoint)
        .form(&form)
        .send()
        .await
        .map_err(|e| transport(crate::provider::error_chain(&e)))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| transport(crate::provider::error_chain(&e)))?;
    if status.is_success() {
        return serde_json::from_slice(&body)
            .map_err(|e| transport(format!("HTTP {status} but not a token response: {e}")));
    }
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(b) => Err(AcquireError::Endpoint {
            status: status.as_u16(),
            error: b.error.unwrap_or_else(|| "unknown_error".into()),
            description: b.error_description.unwrap_or_default(),
            error_codes: b.error_codes,
        }),
        Err(_) => Err(transport(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))),
    }
}
