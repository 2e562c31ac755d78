//! An embedded, Entra-compatible development token issuer.
//!
//! [`DevIssuer::start`] serves, on 127.0.0.1, the same URL layout as
//! login.microsoftonline.com for one tenant: v1.0 and v2.0 OpenID discovery
//! documents, JWKS with Entra's `issuer`/`x5t`/`x5c` members, the v1.0 and
//! v2.0 token endpoints (client-credentials and password grants, client
//! authentication by form fields or HTTP Basic, Entra's AADSTS error JSON)
//! and the user-realm endpoint MSAL calls. Access tokens are shaped like
//! Entra's (v1.0 or v2.0 per API, like `accessTokenAcceptedVersion`),
//! RS256-signed with rotatable RSA-2048 keys. HTTPS uses a CA generated at
//! start whose PEM is written to a file clients can trust.
//!
//! Tenant paths accept the tenant id or its configured domain; `common` and
//! `organizations` serve the tenant-independent discovery documents and
//! keys (issuer template `{tenantid}`), and on the token endpoints stand for
//! the one configured tenant. `POST /_dev/rotate` and
//! `POST /_dev/retire/{kid}` rotate signing keys from outside (loopback
//! peers only).
//!
//! [`demo_env`] holds the rest of the `intraport dev` demo (an upstream that echoes
//! the identity headers, the gateway configuration in front of it), shared with the
//! end-to-end tests.
//!
//! It is for local development and tests (`intraport dev`, end-to-end tests
//! with Microsoft's own client library): it is **not** an identity provider.
//! There is no interactive sign-in, no refresh tokens, no consent, no
//! persistence, and secrets are compared as configured plain text. It does
//! not validate tokens either; that is the `intraport-token` crate's job.

mod config;
pub mod demo_env;
mod error;
mod keys;
mod server;
mod tls;
mod tokens;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use config::{
    ApiConfig, ClientConfig, DevIssuerConfig, GroupMembershipClaims, LifetimeRange, TokenVersion,
    UserConfig, demo,
};
pub use error::{Error, OAuthError};
pub use tokens::{IssuedToken, TokenRequest};

use config::Directory;
use keys::{Keys, SigningKey};
use tokens::Minter;

/// A running development issuer. Dropping it stops the server without
/// waiting; [`DevIssuer::shutdown`] stops it and waits for requests in
/// flight.
pub struct DevIssuer {
    minter: Arc<Minter>,
    addr: SocketAddr,
    tls_files: Option<tls::TlsFiles>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("authority", &self.minter.authority)
            .field("tenant_id", &self.minter.dir.tenant_id)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// Validates `config`, generates the signing key (and, with `tls`, a CA
    /// and server certificate, writing the CA PEM into the state directory),
    /// binds 127.0.0.1:`port` and starts serving on the current Tokio runtime.
    pub async fn start(config: DevIssuerConfig) -> Result<Self, Error> {
        let dir = Directory::from_config(&config)?;
        let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, config.port));
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| Error::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr: bind, source })?;

        // RSA key generation and certificate building are CPU work; run them
        // off the async threads, side by side.
        let key_task = tokio::task::spawn_blocking(SigningKey::generate);
        let tls = if config.tls {
            let tls = tokio::task::spawn_blocking(tls::generate)
                .await
                .map_err(|e| Error::Server(e.to_string()))??;
            let state_dir = config.state_dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "intraport-devissuer-{}-{}",
                    std::process::id(),
                    addr.port()
                ))
            });
            let files = tls::write_files(&state_dir, &tls)?;
            Some((tokio_rustls::TlsAcceptor::from(tls.config), files))
        } else {
            None
        };
        let key = key_task.await.map_err(|e| Error::Server(e.to_string()))??;

        let scheme = if tls.is_some() { "https" } else { "http" };
        let minter = Arc::new(Minter {
            dir,
            keys: Keys::new(key),
            authority: format!("{scheme}://{addr}"),
        });
        let (acceptor, tls_files) = match tls {
            Some((a, f)) => (Some(a), Some(f)),
            None => (None, None),
        };
        let (shutdown, rx) = watch::channel(false);
        let router = server::router(minter.clone());
        let task = tokio::spawn(server::serve(listener, acceptor, router, rx));
        tracing::info!(authority = %minter.authority, tenant = %minter.dir.tenant_id, "dev issuer started");
        Ok(Self {
            minter,
            addr,
            tls_files,
            shutdown,
            task: Some(task),
        })
    }

    /// Base URL, e.g. `https://127.0.0.1:PORT`; tenant paths go below it.
    pub fn authority(&self) -> String {
        self.minter.authority.clone()
    }

    /// The tenant id (`tid`).
    pub fn tenant_id(&self) -> Uuid {
        self.minter.dir.tenant_id
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate file to trust; `None` when serving plain HTTP.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.tls_files.as_ref().map(|f| f.ca.as_path())
    }

    /// The issuer's own server certificate (for 127.0.0.1 and localhost, issued by
    /// the CA of [`DevIssuer::ca_pem_path`]) and its private key, as PEM files;
    /// `None` when serving plain HTTP. `intraport dev` serves its gateway with them.
    pub fn server_cert_paths(&self) -> Option<(&Path, &Path)> {
        self.tls_files
            .as_ref()
            .map(|f| (f.server_cert.as_path(), f.server_key.as_path()))
    }

    /// `iss` of the v2.0 tokens: `{authority}/{tid}/v2.0`.
    pub fn issuer_v2(&self) -> String {
        self.minter.v2_issuer()
    }

    /// `iss` of the v1.0 tokens: `https://sts.windows.net/{tid}/`.
    pub fn issuer_v1(&self) -> String {
        self.minter.v1_issuer()
    }

    /// The `kid` that signs new tokens.
    pub fn current_kid(&self) -> String {
        self.minter
            .keys
            .snapshot()
            .current()
            .map(|k| k.kid.clone())
            .unwrap_or_default()
    }

    /// Mints an access token for configured principals without HTTP and
    /// without their secrets (for `intraport dev` to print one).
    pub fn issue_token(&self, request: &TokenRequest) -> Result<IssuedToken, Error> {
        self.minter.issue(request)
    }

    /// Generates a new signing key and makes it current; earlier keys stay
    /// published until [`DevIssuer::retire_key`]. Returns the new `kid`.
    /// Blocks for the RSA key generation (tens to hundreds of milliseconds).
    pub fn rotate_key(&self) -> Result<String, Error> {
        self.minter.keys.rotate()
    }

    /// Stops publishing a key. The current signing key cannot be retired.
    pub fn retire_key(&self, kid: &str) -> Result<(), Error> {
        self.minter.keys.retire(kid)
    }

    /// Stops accepting connections and waits (up to five seconds) for
    /// requests in flight to finish.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        match self.task.take() {
            Some(task) => task.await.map_err(|e| Error::Server(e.to_string())),
            None => Ok(()),
        }
    }
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
