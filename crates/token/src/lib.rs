//! Microsoft Entra ID access-token validation, exactly as Microsoft documents it and
//! stricter than typical JWT libraries.
//!
//! What it is for: deciding whether a bearer token is a genuine, current access token
//! for one of our audiences, issued by a trusted Entra tenant (or any OIDC provider,
//! or AD FS), and turning it into a typed [`Identity`]. The gateway, the CLI's
//! `token verify`, the probes and the staging validation all call this one crate, so
//! they can never disagree about what a valid token is.
//!
//! What it is not: an authorisation policy (roles, scopes, groups and CIDRs are the
//! policy layer's job). [`client`] can acquire tokens (client credentials, password
//! grant) for the toolkit's own tests of a port, nothing more.
//!
//! Layout: [`jwt`] is the I/O-free core (parse, then verify against one key), over a
//! strict JSON reader (objects, UTF-8, no key twice) and the typed [`claims`];
//! [`keys`] parses JWKS into pre-parsed keys; [`issuer`] matches exact and
//! `{tenantid}`-templated issuers; [`provider`] adds discovery, the JWKS cache with
//! throttled refetch, and the verified-token cache. Every rejection is an
//! [`ErrorCode`] of the fixed vocabulary, with a message saying what was expected.

mod cache;
pub mod claims;
pub mod client;
pub mod error;
pub mod issuer;
mod json;
pub mod jwt;
pub mod keys;
pub mod provider;
pub mod settings;

pub use claims::{Identity, IdentityKind};
pub use error::{ErrorCode, SetupError, TokenError};
pub use jwt::{Policy, require_scope_or_role};
pub use keys::{Algorithm, KeySet};
pub use provider::{
    FetchGate, JwksLocation, MetadataSource, Provider, ProviderConfig, SourceStatus, TokenVersion,
    Verified, decode_header_json,
};
pub use settings::ProviderSettings;
