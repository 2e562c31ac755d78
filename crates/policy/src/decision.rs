//! Decisions: the value a policy check produces, used alike by the response, the
//! audit event and the metric label.

use std::fmt;

/// Why a request or connection was refused by policy.
///
/// Invalid tokens are not policy's business: the token crate's `ErrorCode` names
/// those (expired, bad signature, wrong audience, ...). A [`DenyReason`] is about a
/// valid identity (or a source address) that this route does not admit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// The source address is in the route's deny list.
    SourceDenied,
    /// The source address is in no network of the route's allow list (default deny).
    SourceNotAllowed,
    /// The route needs a bearer token and the request carried none.
    TokenRequired,
    /// The route needs a verified client certificate and the connection had none.
    ClientCertRequired,
    /// The token's tenant (`tid`) is not among the allowed tenants.
    TenantNotAllowed,
    /// The token lacks a required app role.
    RoleMissing,
    /// The token lacks a required delegated scope.
    ScopeMissing,
    /// The token is in none of the required groups.
    GroupMissing,
    /// The route requires groups and the token's group list is incomplete
    /// (`_claim_names.groups`, Entra's "group overage"): policy fails closed.
    GroupsOverage,
    /// The client application (`azp` / `appid`) is not among the allowed apps.
    AppNotAllowed,
    /// The token version (`ver`) is not among the allowed versions.
    VersionNotAllowed,
    /// The identity kind (app or user) is not among the allowed kinds.
    IdentityKindNotAllowed,
    /// The client certificate's subject and SANs match none of the allowed ones.
    CertNotAllowed,
}

impl DenyReason {
    /// Every reason, for tests and documentation tables.
    pub const ALL: [DenyReason; 13] = [
        DenyReason::SourceDenied,
        DenyReason::SourceNotAllowed,
        DenyReason::TokenRequired,
        DenyReason::ClientCertRequired,
        DenyReason::TenantNotAllowed,
        DenyReason::RoleMissing,
        DenyReason::ScopeMissing,
        DenyReason::GroupMissing,
        DenyReason::GroupsOverage,
        DenyReason::AppNotAllowed,
        DenyReason::VersionNotAllowed,
        DenyReason::IdentityKindNotAllowed,
        DenyReason::CertNotAllowed,
    ];

    /// A stable snake_case code, used in audit events, metric labels and the
    /// `error_description` of responses.
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::SourceDenied => "source_denied",
            DenyReason::SourceNotAllowed => "source_not_allowed",
            DenyReason::TokenRequired => "token_required",
            DenyReason::ClientCertRequired => "client_cert_required",
            DenyReason::TenantNotAllowed => "tenant_not_allowed",
            DenyReason::RoleMissing => "role_missing",
            DenyReason::ScopeMissing => "scope_missing",
            DenyReason::GroupMissing => "group_missing",
            DenyReason::GroupsOverage => "groups_overage",
            DenyReason::AppNotAllowed => "app_not_allowed",
            DenyReason::VersionNotAllowed => "version_not_allowed",
            DenyReason::IdentityKindNotAllowed => "identity_kind_not_allowed",
            DenyReason::CertNotAllowed => "cert_not_allowed",
        }
    }

    /// The HTTP status for this refusal: 401 when a token would help (RFC 6750), 403
    /// otherwise.
    pub fn status(&self) -> u16 {
        match self {
            DenyReason::TokenRequired => 401,
            _ => 403,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refusal: the reason (for responses and metrics) and a detail for the audit log
/// and operators. The detail may name claims and addresses, so it is never sent to
/// the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The machine-readable reason.
    pub reason: DenyReason,
    /// What was required and what was found.
    pub detail: String,
}

impl Denial {
    /// A denial with its detail.
    pub fn new(reason: DenyReason, detail: impl Into<String>) -> Denial {
        Denial {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.detail)
    }
}

impl std::error::Error for Denial {}

/// Which identity satisfied a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllowedBy {
    /// The route requires no identity.
    Anonymous,
    /// The bearer token.
    Token,
    /// The client certificate.
    Cert,
    /// Both the bearer token and the client certificate.
    Both,
}

impl AllowedBy {
    /// A stable snake_case code for audit events and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AllowedBy::Anonymous => "anonymous",
            AllowedBy::Token => "token",
            AllowedBy::Cert => "cert",
            AllowedBy::Both => "token_and_cert",
        }
    }
}

/// An admission: which identity passed and which rule admitted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// The identity that satisfied the route.
    pub by: AllowedBy,
    /// The policy (route) name.
    pub policy: String,
    /// The certificate requirement that matched (e.g. `subject CN=agent,O=Example`
    /// or `san dns:agent.example.com`), when a certificate requirement was checked.
    pub cert_rule: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_statuses_fixed() {
        let mut seen = std::collections::HashSet::new();
        for r in DenyReason::ALL {
            let c = r.code();
            assert!(seen.insert(c), "duplicate code {c}");
            assert!(
                c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c}"
            );
            let want = if r == DenyReason::TokenRequired {
                401
            } else {
                403
            };
            assert_eq!(r.status(), want, "{c}");
        }
        assert_eq!(
            Denial::new(DenyReason::RoleMissing, "need Admin").to_string(),
            "role_missing: need Admin"
        );
    }
}
