//! Errors for building policy objects from configuration and certificates.
//!
//! Request-time outcomes are not errors: a refused request is a [`crate::Denial`], a
//! path that must not be routed is a [`crate::PathError`].

/// Why a policy object could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A network in a CIDR list does not parse or has host bits set.
    #[error("{}bad network `{input}`: {reason}", at_prefix(at))]
    BadNet {
        /// The text as written.
        input: String,
        /// What is wrong and what was expected.
        reason: String,
        /// Where it was found (e.g. `routes.api.allow[2]`), empty when unknown.
        at: String,
    },
    /// A client certificate is not a parseable X.509 certificate.
    #[error("client certificate: {0}")]
    Certificate(String),
    /// An identity kind other than `app` or `user`.
    #[error("unknown identity kind `{0}`: expected `app` or `user`")]
    BadIdentityKind(String),
    /// A route's host pattern is not a host name, `*.suffix` or empty.
    #[error("route `{route}`: bad host pattern `{host}`: {reason}")]
    BadHostPattern {
        /// The route.
        route: String,
        /// The pattern as written.
        host: String,
        /// What is wrong.
        reason: String,
    },
    /// A route's path prefix is not an absolute, normalised path.
    #[error("route `{route}`: bad path prefix `{prefix}`: {reason}")]
    BadPathPrefix {
        /// The route.
        route: String,
        /// The prefix as written.
        prefix: String,
        /// What is wrong.
        reason: String,
    },
    /// A requirement that the policy's identity mode can never check (e.g. required
    /// roles on a route that asks for no token).
    #[error("policy `{policy}`: {reason}")]
    Inconsistent {
        /// The policy (route) name.
        policy: String,
        /// What does not fit together.
        reason: String,
    },
}

fn at_prefix(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    }
}
