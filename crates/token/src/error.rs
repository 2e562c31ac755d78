//! The fixed vocabulary of token rejections.
//!
//! These codes are a public interface: the CLI prints them, the gateway puts them in
//! `WWW-Authenticate` headers, audit events and metric labels. Adding a variant is a
//! compatible change; renaming one is not.

use std::fmt;

use serde::Serialize;

/// Why a token was rejected: one of DESIGN.md's fixed codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a compact JWS with base64url parts and JSON objects (UTF-8, no key twice),
    /// a header trick, or a claim of the wrong type or out of range.
    Malformed,
    /// Larger than the configured size cap.
    TooLarge,
    /// An algorithm outside the allowlist, or one the key does not fix.
    UnsupportedAlg,
    /// The `kid`/`x5t` names no key of the issuer, even after a (throttled) refetch.
    UnknownKid,
    /// The signature does not verify with the issuer's key.
    BadSignature,
    /// `exp` (plus clock skew) is in the past, or before `nbf`.
    Expired,
    /// `nbf` or `iat` (less clock skew) is in the future.
    NotYetValid,
    /// `iss` is not one this provider accepts, or disagrees with `tid` or the key.
    WrongIssuer,
    /// No `aud` value is one of the configured audiences.
    WrongAudience,
    /// `tid` is not in the tenant allowlist.
    TenantNotAllowed,
    /// A claim the validation needs is absent.
    MissingClaim,
    /// No key set has ever been loaded for the issuer: fail closed.
    JwksUnavailable,
    /// Neither `scp` nor `roles`: no permission was granted to the caller (refused
    /// unless the route authorises by identity alone, `allow_acl_tokens`).
    NoScopeOrRole,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedAlg,
        ErrorCode::UnknownKid,
        ErrorCode::BadSignature,
        ErrorCode::Expired,
        ErrorCode::NotYetValid,
        ErrorCode::WrongIssuer,
        ErrorCode::WrongAudience,
        ErrorCode::TenantNotAllowed,
        ErrorCode::MissingClaim,
        ErrorCode::JwksUnavailable,
        ErrorCode::NoScopeOrRole,
    ];

    /// The code as it appears in JSON, headers and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedAlg => "unsupported_alg",
            ErrorCode::UnknownKid => "unknown_kid",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::Expired => "expired",
            ErrorCode::NotYetValid => "not_yet_valid",
            ErrorCode::WrongIssuer => "wrong_issuer",
            ErrorCode::WrongAudience => "wrong_audience",
            ErrorCode::TenantNotAllowed => "tenant_not_allowed",
            ErrorCode::MissingClaim => "missing_claim",
            ErrorCode::JwksUnavailable => "jwks_unavailable",
            ErrorCode::NoScopeOrRole => "no_scope_or_role",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected token: the code for machines, a message for people.
///
/// The message never contains the token itself, only what was expected and found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct TokenError {
    /// The fixed code.
    pub code: ErrorCode,
    /// What was expected and what was found.
    pub message: String,
}

impl TokenError {
    /// A rejection with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TokenError {
            code,
            message: message.into(),
        }
    }
}

/// A problem with configuration or with fetching metadata (not a token rejection).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// An invalid setting, named.
    #[error("invalid setting `{field}`: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Discovery or JWKS could not be fetched or read.
    #[error("fetching {what} from {url}: {message}")]
    Fetch {
        /// `discovery document` or `key set`.
        what: &'static str,
        /// Where from.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A JWKS or discovery document that is not what it should be.
    #[error("{what} from {source_name}: {message}")]
    Document {
        /// `discovery document` or `key set`.
        what: &'static str,
        /// The URL or file it came from.
        source_name: String,
        /// What is wrong with it.
        message: String,
    },
}
