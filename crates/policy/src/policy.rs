//! Route policies: which identity a route requires and what that identity must carry.
//!
//! Evaluation order is fixed, so that the same request always yields the same reason:
//!
//! 1. the source address ([`RoutePolicy::check_source`]), which the gateway runs before
//!    it validates any token, since it costs nothing;
//! 2. in [`RoutePolicy::authorize`]: the client certificate (presence, then
//!    [`CertRequirements`]) when the route needs one, then the token (presence, then
//!    [`ClaimRequirements`] in the order kinds, versions, tenants, app ids, roles
//!    all/any, scopes all/any, groups).

use std::net::IpAddr;

use intraport_token::{Identity, IdentityKind};
use serde::{Deserialize, Deserializer, Serialize};

use crate::cert::CertIdentity;
use crate::decision::{Allowed, AllowedBy, Denial, DenyReason};
use crate::error::PolicyError;
use crate::source::{SourceMatch, SourceRule};

/// Which identity a route requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityRequirement {
    /// No identity: source rules only.
    None,
    /// A valid bearer token.
    Token,
    /// A client certificate verified by the listener's CAs.
    ClientCert,
    /// Either; when both are presented, either passing suffices.
    TokenOrCert,
    /// Both.
    TokenAndCert,
}

impl IdentityRequirement {
    fn wants_token(self) -> bool {
        matches!(
            self,
            IdentityRequirement::Token
                | IdentityRequirement::TokenOrCert
                | IdentityRequirement::TokenAndCert
        )
    }
    fn wants_cert(self) -> bool {
        matches!(
            self,
            IdentityRequirement::ClientCert
                | IdentityRequirement::TokenOrCert
                | IdentityRequirement::TokenAndCert
        )
    }
}

/// What a token must carry. Every empty list is "not checked"; the default checks
/// nothing. Tenants, app ids and groups are GUIDs and compare case-insensitively;
/// roles, scopes, versions exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimRequirements {
    /// Allowed tenants (`tid`).
    pub tenants: Vec<String>,
    /// At least one of these app roles.
    pub roles_any: Vec<String>,
    /// All of these app roles.
    pub roles_all: Vec<String>,
    /// At least one of these delegated scopes.
    pub scopes_any: Vec<String>,
    /// All of these delegated scopes.
    pub scopes_all: Vec<String>,
    /// At least one of these group object ids. A token whose groups did not fit
    /// (overage) and that lists none of them is refused with
    /// [`DenyReason::GroupsOverage`]: its list is incomplete.
    pub groups_any: Vec<String>,
    /// Allowed client applications (`azp` / `appid`).
    pub app_ids: Vec<String>,
    /// Allowed token versions (`"1.0"`, `"2.0"`).
    pub versions: Vec<String>,
    /// Allowed identity kinds.
    pub kinds: Vec<IdentityKind>,
}

impl ClaimRequirements {
    /// True when nothing is checked.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
            && self.roles_any.is_empty()
            && self.roles_all.is_empty()
            && self.scopes_any.is_empty()
            && self.scopes_all.is_empty()
            && self.groups_any.is_empty()
            && self.app_ids.is_empty()
            && self.versions.is_empty()
            && self.kinds.is_empty()
    }

    /// Checks a verified token's identity.
    pub fn check(&self, t: &Identity) -> Result<(), Denial> {
        if !self.kinds.is_empty() && !self.kinds.contains(&t.kind) {
            return Err(Denial::new(
                DenyReason::IdentityKindNotAllowed,
                format!(
                    "identity kind {} is not in [{}]",
                    kind_name(t.kind),
                    self.kinds
                        .iter()
                        .map(|k| kind_name(*k))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if !self.versions.is_empty()
            && !t
                .version
                .as_ref()
                .is_some_and(|v| self.versions.contains(v))
        {
            return Err(Denial::new(
                DenyReason::VersionNotAllowed,
                format!(
                    "token version {} is not in [{}]",
                    t.version.as_deref().unwrap_or("(none)"),
                    self.versions.join(", ")
                ),
            ));
        }
        if !self.tenants.is_empty() && !any_ci(&self.tenants, t.tenant_id.as_deref()) {
            return Err(Denial::new(
                DenyReason::TenantNotAllowed,
                format!(
                    "tenant {} is not in [{}]",
                    t.tenant_id.as_deref().unwrap_or("(none)"),
                    self.tenants.join(", ")
                ),
            ));
        }
        if !self.app_ids.is_empty() && !any_ci(&self.app_ids, t.app_id.as_deref()) {
            return Err(Denial::new(
                DenyReason::AppNotAllowed,
                format!(
                    "client application {} is not in [{}]",
                    t.app_id.as_deref().unwrap_or("(none)"),
                    self.app_ids.join(", ")
                ),
            ));
        }
        if let Some(missing) = self.roles_all.iter().find(|r| !t.roles.contains(r)) {
            return Err(Denial::new(
                DenyReason::RoleMissing,
                format!(
                    "role {missing} is required (all of [{}]); token roles: [{}]",
                    self.roles_all.join(", "),
                    t.roles.join(", ")
                ),
            ));
        }
        if !self.roles_any.is_empty() && !self.roles_any.iter().any(|r| t.roles.contains(r)) {
            return Err(Denial::new(
                DenyReason::RoleMissing,
                format!(
                    "one of the roles [{}] is required; token roles: [{}]",
                    self.roles_any.join(", "),
                    t.roles.join(", ")
                ),
            ));
        }
        if let Some(missing) = self.scopes_all.iter().find(|s| !t.scopes.contains(s)) {
            return Err(Denial::new(
                DenyReason::ScopeMissing,
                format!(
                    "scope {missing} is required (all of [{}]); token scopes: [{}]",
                    self.scopes_all.join(", "),
                    t.scopes.join(" ")
                ),
            ));
        }
        if !self.scopes_any.is_empty() && !self.scopes_any.iter().any(|s| t.scopes.contains(s)) {
            return Err(Denial::new(
                DenyReason::ScopeMissing,
                format!(
                    "one of the scopes [{}] is required; token scopes: [{}]",
                    self.scopes_any.join(", "),
                    t.scopes.join(" ")
                ),
            ));
        }
        if !self.groups_any.is_empty()
            && !self
                .groups_any
                .iter()
                .any(|g| t.groups.iter().any(|h| h.eq_ignore_ascii_case(g)))
        {
            // A group the token does list is proof of membership even under overage;
            // only the absence of a match is inconclusive.
            if t.groups_overage {
                return Err(Denial::new(
                    DenyReason::GroupsOverage,
                    format!(
                        "one of the groups [{}] is required, but the token's group list is \
                         incomplete (_claim_names.groups: group overage), so membership \
                         cannot be checked; use app roles or fewer groups",
                        self.groups_any.join(", ")
                    ),
                ));
            }
            return Err(Denial::new(
                DenyReason::GroupMissing,
                format!(
                    "one of the groups [{}] is required; the token lists {} group(s), none of them",
                    self.groups_any.join(", "),
                    t.groups.len()
                ),
            ));
        }
        Ok(())
    }
}

fn any_ci(allowed: &[String], value: Option<&str>) -> bool {
    value.is_some_and(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v)))
}

fn kind_name(k: IdentityKind) -> &'static str {
    match k {
        IdentityKind::App => "app",
        IdentityKind::User => "user",
    }
}

/// Parses an identity kind as the configuration writes it: `app` or `user`.
pub fn parse_identity_kind(s: &str) -> Result<IdentityKind, PolicyError> {
    match s {
        "app" => Ok(IdentityKind::App),
        "user" => Ok(IdentityKind::User),
        other => Err(PolicyError::BadIdentityKind(other.to_string())),
    }
}

/// A serde `deserialize_with` helper for a list of identity kinds
/// (`kinds = ["app", "user"]`), since the token crate's `IdentityKind` is
/// serialise-only.
pub fn deserialize_identity_kinds<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<IdentityKind>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| parse_identity_kind(n).map_err(serde::de::Error::custom))
        .collect()
}

/// What a client certificate must show. Both lists empty: any certificate the
/// listener's CAs verified. Otherwise the subject must equal one of `subjects`, or
/// one of the certificate's SANs must equal one of `sans`.
///
/// Subjects are RFC 4514 strings (see [`CertIdentity::subject`]) compared
/// case-insensitively, ignoring spaces around separators (`CN=a, O=b` equals
/// `cn=a,o=b`); SANs are `dns:`, `uri:`, `email:` or `ip:` followed by the value,
/// DNS names and e-mail addresses compared case-insensitively, IP addresses as
/// addresses, URIs exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertRequirements {
    /// Allowed subjects.
    pub subjects: Vec<String>,
    /// Allowed subject alternative names.
    pub sans: Vec<String>,
}

impl CertRequirements {
    /// True when any verified certificate passes.
    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty() && self.sans.is_empty()
    }

    /// Checks a certificate; on success, names the requirement that matched (None
    /// when there is no requirement).
    pub fn check(&self, c: &CertIdentity) -> Result<Option<String>, Denial> {
        if self.is_empty() {
            return Ok(None);
        }
        let subject = normalize_dn(&c.subject);
        if let Some(s) = self.subjects.iter().find(|s| normalize_dn(s) == subject) {
            return Ok(Some(format!("subject {s}")));
        }
        for want in &self.sans {
            if c.sans.iter().any(|have| san_eq(want, have)) {
                return Ok(Some(format!("san {want}")));
            }
        }
        Err(Denial::new(
            DenyReason::CertNotAllowed,
            format!(
                "client certificate subject {} and SANs [{}] match none of subjects [{}] / SANs [{}]",
                c.subject,
                c.sans.join(", "),
                self.subjects.join("; "),
                self.sans.join(", ")
            ),
        ))
    }

    /// Checks that every SAN requirement has a known kind; `what` names the place in
    /// the configuration.
    pub fn validate(&self, what: &str) -> Result<(), PolicyError> {
        for (i, s) in self.sans.iter().enumerate() {
            let ok = match s.split_once(':') {
                Some((k, v)) if !v.is_empty() => match k.to_ascii_lowercase().as_str() {
                    "dns" | "uri" | "email" => true,
                    "ip" => v.parse::<IpAddr>().is_ok(),
                    _ => false,
                },
                _ => false,
            };
            if !ok {
                return Err(PolicyError::Inconsistent {
                    policy: what.to_string(),
                    reason: format!(
                        "sans[{i}] `{s}`: expected dns:NAME, uri:URI, email:ADDR or ip:ADDR"
                    ),
                });
            }
        }
        Ok(())
    }
}

fn san_eq(want: &str, have: &str) -> bool {
    let (Some((wk, wv)), Some((hk, hv))) = (want.split_once(':'), have.split_once(':')) else {
        return false;
    };
    if !wk.eq_ignore_ascii_case(hk) {
        return false;
    }
    match hk {
        "dns" | "email" => wv.eq_ignore_ascii_case(hv),
        "ip" => match (wv.parse::<IpAddr>(), hv.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a.to_canonical() == b.to_canonical(),
            _ => false,
        },
        _ => wv == hv,
    }
}

/// Lower-cases a distinguished name and drops unescaped spaces around `,`, `+` and
/// `=`, so that hand-written configuration matches the RFC 4514 form. Escaped
/// characters (`\,`, `\ `) are kept as they are. Hand-written: no crate normalises
/// RFC 4514 strings without parsing them into a full X.500 model.
fn normalize_dn(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut protected = 0; // out[..protected] may not be trimmed
    let mut skip_spaces = true;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push('\\');
            if let Some(n) = chars.next() {
                out.extend(n.to_lowercase());
            }
            protected = out.len();
            skip_spaces = false;
            continue;
        }
        if skip_spaces && c == ' ' {
            continue;
        }
        skip_spaces = false;
        if matches!(c, ',' | '+' | '=') {
            while out.len() > protected && out.ends_with(' ') {
                out.pop();
            }
            out.push(c);
            protected = out.len();
            skip_spaces = true;
            continue;
        }
        out.extend(c.to_lowercase());
    }
    while out.len() > protected && out.ends_with(' ') {
        out.pop();
    }
    out
}

/// The policy of one route.
#[derive(Clone, Debug)]
pub struct RoutePolicy {
    /// The route name (reported in [`Allowed`] and audit events).
    pub name: String,
    /// Source address rule.
    pub source: SourceRule,
    /// Which identity is required.
    pub identity: IdentityRequirement,
    /// Token requirements.
    pub claims: ClaimRequirements,
    /// Client-certificate requirements.
    pub cert: CertRequirements,
}

impl RoutePolicy {
    /// Step 1: the source address (run before validating a token).
    pub fn check_source(&self, ip: IpAddr) -> Result<SourceMatch, Denial> {
        self.source.check(ip)
    }

    /// Rejects combinations the configuration check must report: claim
    /// requirements on a route that never asks for a token, certificate requirements
    /// on one that never asks for a certificate, malformed SAN requirements.
    /// [`RoutePolicy::authorize`] fails closed on such policies anyway (it then
    /// requires the identity the requirements imply).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !self.claims.is_empty() && !self.identity.wants_token() {
            return Err(PolicyError::Inconsistent {
                policy: self.name.clone(),
                reason: format!(
                    "claim requirements are set but identity is `{}`, which never checks a token",
                    requirement_name(self.identity)
                ),
            });
        }
        if !self.cert.is_empty() && !self.identity.wants_cert() {
            return Err(PolicyError::Inconsistent {
                policy: self.name.clone(),
                reason: format!(
                    "client certificate requirements are set but identity is `{}`, which never \
                     checks a certificate",
                    requirement_name(self.identity)
                ),
            });
        }
        self.cert.validate(&self.name)
    }

    /// The requirement actually enforced: the configured one, raised to what the
    /// claim and certificate requirements imply (fail closed on an inconsistent
    /// policy that [`RoutePolicy::validate`] would have rejected).
    pub fn effective_identity(&self) -> IdentityRequirement {
        use IdentityRequirement as R;
        let token = !self.claims.is_empty() && !self.identity.wants_token();
        let cert = !self.cert.is_empty() && !self.identity.wants_cert();
        match (self.identity, token, cert) {
            (r, false, false) => r,
            (R::None, true, false) => R::Token,
            (R::None, false, true) => R::ClientCert,
            _ => R::TokenAndCert,
        }
    }

    /// Step 2: the identity. `token` is a token the validator accepted (invalid
    /// tokens never reach policy), `cert` a client certificate the listener verified.
    pub fn authorize(
        &self,
        token: Option<&Identity>,
        cert: Option<&CertIdentity>,
    ) -> Result<Allowed, Denial> {
        let allowed = |by, cert_rule| Allowed {
            by,
            policy: self.name.clone(),
            cert_rule,
        };
        match self.effective_identity() {
            IdentityRequirement::None => Ok(allowed(AllowedBy::Anonymous, None)),
            IdentityRequirement::Token => {
                self.claims.check(self.need_token(token)?)?;
                Ok(allowed(AllowedBy::Token, None))
            }
            IdentityRequirement::ClientCert => {
                let rule = self.cert.check(self.need_cert(cert)?)?;
                Ok(allowed(AllowedBy::Cert, rule))
            }
            IdentityRequirement::TokenAndCert => {
                let rule = self.cert.check(self.need_cert(cert)?)?;
                self.claims.check(self.need_token(token)?)?;
                Ok(allowed(AllowedBy::Both, rule))
            }
            IdentityRequirement::TokenOrCert => match (token, cert) {
                (None, None) => Err(Denial::new(
                    DenyReason::TokenRequired,
                    format!(
                        "route {} requires a bearer token or a client certificate; neither was presented",
                        self.name
                    ),
                )),
                (Some(t), None) => {
                    self.claims.check(t)?;
                    Ok(allowed(AllowedBy::Token, None))
                }
                (None, Some(c)) => Ok(allowed(AllowedBy::Cert, self.cert.check(c)?)),
                (Some(t), Some(c)) => match (self.claims.check(t), self.cert.check(c)) {
                    (Ok(()), Ok(rule)) => Ok(allowed(AllowedBy::Both, rule)),
                    (Ok(()), Err(_)) => Ok(allowed(AllowedBy::Token, None)),
                    (Err(_), Ok(rule)) => Ok(allowed(AllowedBy::Cert, rule)),
                    (Err(e), Err(_)) => Err(e),
                },
            },
        }
    }

    fn need_token<'a>(&self, token: Option<&'a Identity>) -> Result<&'a Identity, Denial> {
        token.ok_or_else(|| {
            Denial::new(
                DenyReason::TokenRequired,
                format!(
                    "route {} requires a bearer token; none was presented",
                    self.name
                ),
            )
        })
    }

    fn need_cert<'a>(&self, cert: Option<&'a CertIdentity>) -> Result<&'a CertIdentity, Denial> {
        cert.ok_or_else(|| {
            Denial::new(
                DenyReason::ClientCertRequired,
                format!(
                    "route {} requires a client certificate; the connection presented none",
                    self.name
                ),
            )
        })
    }
}

fn requirement_name(r: IdentityRequirement) -> &'static str {
    match r {
        IdentityRequirement::None => "none",
        IdentityRequirement::Token => "token",
        IdentityRequirement::ClientCert => "client_cert",
        IdentityRequirement::TokenOrCert => "token_or_cert",
        IdentityRequirement::TokenAndCert => "token_and_cert",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::cidr::CidrSet;

    pub(crate) fn identity() -> Identity {
        Identity {
            issuer: "https://login.microsoftonline.com/t/v2.0".into(),
            audience: "api://intraport".into(),
            kid: Some("k1".into()),
            version: Some("2.0".into()),
            tenant_id: Some("AAAAAAAA-0000-0000-0000-000000000001".into()),
            object_id: Some("11111111-2222-3333-4444-555555555555".into()),
            subject: Some("sub".into()),
            app_id: Some("BBBBBBBB-0000-0000-0000-000000000002".into()),
            app_auth: Some("1".into()),
            scopes: vec!["Files.Read".into(), "User.Read".into()],
            roles: vec!["Reader".into(), "Writer".into()],
            groups: vec!["cccccccc-0000-0000-0000-000000000003".into()],
            groups_overage: false,
            wids: vec![],
            idtyp: None,
            kind: IdentityKind::User,
            username: Some("jürgen@example.com".into()),
            name: Some("Jürgen Müller".into()),
            expires_at: 4_000_000_000,
            derived: Default::default(),
        }
    }

    fn cert() -> CertIdentity {
        CertIdentity {
            subject: "CN=agent-1,O=Example,C=DE".into(),
            sans: vec!["dns:agent.example.com".into(), "ip:192.0.2.7".into()],
        }
    }

    fn policy(identity: IdentityRequirement) -> RoutePolicy {
        RoutePolicy {
            name: "api".into(),
            source: SourceRule {
                allow: CidrSet::parse(&["0.0.0.0/0"], "t").unwrap(),
                deny: CidrSet::default(),
            },
            identity,
            claims: ClaimRequirements::default(),
            cert: CertRequirements::default(),
        }
    }

    fn deny(p: &RoutePolicy, t: Option<&Identity>, c: Option<&CertIdentity>) -> DenyReason {
        p.authorize(t, c).unwrap_err().reason
    }

    #[test]
    fn claims_each_reason() {
        let t = identity();
        let check = |req: ClaimRequirements| req.check(&t).map_err(|d| d.reason);
        assert_eq!(check(ClaimRequirements::default()), Ok(()));
        // Tenant and app id are case-insensitive.
        assert_eq!(
            check(ClaimRequirements {
                tenants: vec!["aaaaaaaa-0000-0000-0000-000000000001".into()],
                app_ids: vec!["bbbbbbbb-0000-0000-0000-000000000002".into()],
                ..Default::default()
            }),
            Ok(())
        );
        let cases: Vec<(ClaimRequirements, DenyReason)> = vec![
            (
                ClaimRequirements {
                    tenants: vec!["other".into()],
                    ..Default::default()
                },
                DenyReason::TenantNotAllowed,
            ),
            (
                ClaimRequirements {
                    roles_any: vec!["Admin".into(), "Owner".into()],
                    ..Default::default()
                },
                DenyReason::RoleMissing,
            ),
            (
                ClaimRequirements {
                    roles_all: vec!["Reader".into(), "Admin".into()],
                    ..Default::default()
                },
                DenyReason::RoleMissing,
            ),
            (
                // Roles compare exactly.
                ClaimRequirements {
                    roles_any: vec!["reader".into()],
                    ..Default::default()
                },
                DenyReason::RoleMissing,
            ),
            (
                ClaimRequirements {
                    scopes_any: vec!["Mail.Send".into()],
                    ..Default::default()
                },
                DenyReason::ScopeMissing,
            ),
            (
                ClaimRequirements {
                    scopes_all: vec!["Files.Read".into(), "Mail.Send".into()],
                    ..Default::default()
                },
                DenyReason::ScopeMissing,
            ),
            (
                ClaimRequirements {
                    groups_any: vec!["dddddddd-0000-0000-0000-000000000004".into()],
                    ..Default::default()
                },
                DenyReason::GroupMissing,
            ),
            (
                ClaimRequirements {
                    app_ids: vec!["other-app".into()],
                    ..Default::default()
                },
                DenyReason::AppNotAllowed,
            ),
            (
                ClaimRequirements {
                    versions: vec!["1.0".into()],
                    ..Default::default()
                },
                DenyReason::VersionNotAllowed,
            ),
            (
                ClaimRequirements {
                    kinds: vec![IdentityKind::App],
                    ..Default::default()
                },
                DenyReason::IdentityKindNotAllowed,
            ),
        ];
        for (req, want) in cases {
            assert_eq!(check(req.clone()), Err(want), "{req:?}");
        }
        // Positive counterparts.
        assert_eq!(
            check(ClaimRequirements {
                roles_any: vec!["Admin".into(), "Writer".into()],
                roles_all: vec!["Reader".into(), "Writer".into()],
                scopes_any: vec!["User.Read".into()],
                scopes_all: vec!["Files.Read".into()],
                groups_any: vec!["CCCCCCCC-0000-0000-0000-000000000003".into()],
                versions: vec!["1.0".into(), "2.0".into()],
                kinds: vec![IdentityKind::User],
                ..Default::default()
            }),
            Ok(())
        );
    }

    #[test]
    fn missing_claims_fail_closed() {
        let mut t = identity();
        t.tenant_id = None;
        t.app_id = None;
        t.version = None;
        for (req, want) in [
            (
                ClaimRequirements {
                    tenants: vec!["x".into()],
                    ..Default::default()
                },
                DenyReason::TenantNotAllowed,
            ),
            (
                ClaimRequirements {
                    app_ids: vec!["x".into()],
                    ..Default::default()
                },
                DenyReason::AppNotAllowed,
            ),
            (
                ClaimRequirements {
                    versions: vec!["2.0".into()],
                    ..Default::default()
                },
                DenyReason::VersionNotAllowed,
            ),
        ] {
            let d = req.check(&t).unwrap_err();
            assert_eq!(d.reason, want);
            assert!(d.detail.contains("(none)"), "{}", d.detail);
        }
    }

    #[test]
    fn groups_overage_denies_and_says_so() {
        let mut t = identity();
        t.groups.clear();
        t.groups_overage = true;
        let req = ClaimRequirements {
            groups_any: vec!["cccccccc-0000-0000-0000-000000000003".into()],
            ..Default::default()
        };
        let d = req.check(&t).unwrap_err();
        assert_eq!(d.reason, DenyReason::GroupsOverage);
        assert!(d.detail.contains("_claim_names.groups"), "{}", d.detail);
        // A listed matching group is proof even with overage.
        t.groups = vec!["cccccccc-0000-0000-0000-000000000003".into()];
        assert_eq!(req.check(&t), Ok(()));
        // Overage does not matter when groups are not required.
        t.groups.clear();
        assert_eq!(ClaimRequirements::default().check(&t), Ok(()));
    }

    #[test]
    fn claim_order_is_fixed() {
        // Everything wrong: the first check in the documented order wins.
        let t = identity();
        let req = ClaimRequirements {
            tenants: vec!["x".into()],
            roles_any: vec!["x".into()],
            versions: vec!["1.0".into()],
            kinds: vec![IdentityKind::App],
            ..Default::default()
        };
        assert_eq!(
            req.check(&t).unwrap_err().reason,
            DenyReason::IdentityKindNotAllowed
        );
    }

    #[test]
    fn identity_requirements() {
        let t = identity();
        let c = cert();
        let p = policy(IdentityRequirement::None);
        assert_eq!(p.authorize(None, None).unwrap().by, AllowedBy::Anonymous);

        let p = policy(IdentityRequirement::Token);
        assert_eq!(deny(&p, None, Some(&c)), DenyReason::TokenRequired);
        assert_eq!(DenyReason::TokenRequired.status(), 401);
        let a = p.authorize(Some(&t), None).unwrap();
        assert_eq!((a.by, a.policy.as_str()), (AllowedBy::Token, "api"));

        let p = policy(IdentityRequirement::ClientCert);
        assert_eq!(deny(&p, Some(&t), None), DenyReason::ClientCertRequired);
        assert_eq!(p.authorize(None, Some(&c)).unwrap().by, AllowedBy::Cert);

        let p = policy(IdentityRequirement::TokenAndCert);
        assert_eq!(deny(&p, None, None), DenyReason::ClientCertRequired);
        assert_eq!(deny(&p, None, Some(&c)), DenyReason::TokenRequired);
        assert_eq!(deny(&p, Some(&t), None), DenyReason::ClientCertRequired);
        assert_eq!(p.authorize(Some(&t), Some(&c)).unwrap().by, AllowedBy::Both);

        let mut p = policy(IdentityRequirement::TokenOrCert);
        assert_eq!(deny(&p, None, None), DenyReason::TokenRequired);
        assert_eq!(p.authorize(Some(&t), None).unwrap().by, AllowedBy::Token);
        assert_eq!(p.authorize(None, Some(&c)).unwrap().by, AllowedBy::Cert);
        assert_eq!(p.authorize(Some(&t), Some(&c)).unwrap().by, AllowedBy::Both);
        p.claims.roles_any = vec!["Admin".into()];
        p.cert.sans = vec!["dns:other.example.com".into()];
        assert_eq!(deny(&p, Some(&t), Some(&c)), DenyReason::RoleMissing);
        assert_eq!(deny(&p, None, Some(&c)), DenyReason::CertNotAllowed);
        p.cert.sans = vec!["dns:AGENT.example.com".into()];
        let a = p.authorize(Some(&t), Some(&c)).unwrap();
        assert_eq!(a.by, AllowedBy::Cert);
        assert_eq!(a.cert_rule.as_deref(), Some("san dns:AGENT.example.com"));
    }

    #[test]
    fn cert_requirements() {
        let c = cert();
        let ok = |subjects: &[&str], sans: &[&str]| {
            CertRequirements {
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                sans: sans.iter().map(|s| s.to_string()).collect(),
            }
            .check(&c)
        };
        assert_eq!(ok(&[], &[]), Ok(None));
        assert_eq!(
            ok(&["cn=Agent-1, o=example , c=de"], &[]),
            Ok(Some("subject cn=Agent-1, o=example , c=de".into()))
        );
        assert!(ok(&["CN=agent-1,O=Example"], &[]).is_err());
        assert_eq!(
            ok(&[], &["ip:192.0.2.7"]),
            Ok(Some("san ip:192.0.2.7".into()))
        );
        assert_eq!(
            ok(&[], &["IP:::ffff:192.0.2.7"]).map(|r| r.is_some()),
            Ok(true)
        );
        let d = ok(&["CN=other"], &["dns:other.example.com", "uri:spiffe://x"]).unwrap_err();
        assert_eq!(d.reason, DenyReason::CertNotAllowed);
        assert!(d.detail.contains("CN=agent-1"), "{}", d.detail);
        // Escaped separators are kept.
        assert_eq!(normalize_dn(r"CN=a\, b , O=x"), r"cn=a\, b,o=x");
        assert_eq!(normalize_dn(r"CN=\ a\ "), r"cn=\ a\ ");
    }

    #[test]
    fn validate_and_fail_closed_on_inconsistent_policies() {
        let mut p = policy(IdentityRequirement::None);
        p.claims.roles_any = vec!["Admin".into()];
        let e = p.validate().unwrap_err().to_string();
        assert!(
            e.contains("api") && e.contains("never checks a token"),
            "{e}"
        );
        assert_eq!(p.effective_identity(), IdentityRequirement::Token);
        assert_eq!(deny(&p, None, None), DenyReason::TokenRequired);

        let mut p = policy(IdentityRequirement::Token);
        p.cert.subjects = vec!["CN=x".into()];
        assert!(p.validate().is_err());
        assert_eq!(p.effective_identity(), IdentityRequirement::TokenAndCert);
        assert_eq!(
            deny(&p, Some(&identity()), None),
            DenyReason::ClientCertRequired
        );

        let mut p = policy(IdentityRequirement::ClientCert);
        p.cert.sans = vec!["dns:x".into(), "spiffe:y".into()];
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("sans[1]"), "{e}");
        p.cert.sans = vec!["ip:not-an-ip".into()];
        assert!(p.validate().is_err());
        p.cert.sans = vec!["ip:10.0.0.1".into(), "uri:spiffe://x".into()];
        assert!(p.validate().is_ok());
    }

    #[test]
    fn source_step() {
        let mut p = policy(IdentityRequirement::None);
        p.source.deny = CidrSet::parse(&["192.0.2.0/24"], "t").unwrap();
        assert_eq!(
            p.check_source("192.0.2.1".parse().unwrap())
                .unwrap_err()
                .reason,
            DenyReason::SourceDenied
        );
        assert!(p.check_source("198.51.100.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn every_deny_reason_is_produced_through_a_route_policy() {
        let t = identity();
        let c = cert();
        let mut seen = std::collections::HashSet::new();
        let mut p = policy(IdentityRequirement::TokenAndCert);
        p.source.deny = CidrSet::parse(&["192.0.2.0/24"], "t").unwrap();
        seen.insert(
            p.check_source("192.0.2.1".parse().unwrap())
                .unwrap_err()
                .reason,
        );
        p.source.allow = CidrSet::default();
        seen.insert(
            p.check_source("198.51.100.1".parse().unwrap())
                .unwrap_err()
                .reason,
        );
        seen.insert(deny(&p, None, Some(&c)));
        seen.insert(deny(&p, Some(&t), None));
        p.cert.subjects = vec!["CN=nobody".into()];
        seen.insert(deny(&p, Some(&t), Some(&c)));
        p.cert = CertRequirements::default();
        let mut overage = t.clone();
        overage.groups.clear();
        overage.groups_overage = true;
        let claim_cases = [
            ClaimRequirements {
                tenants: vec!["x".into()],
                ..Default::default()
            },
            ClaimRequirements {
                roles_any: vec!["x".into()],
                ..Default::default()
            },
            ClaimRequirements {
                scopes_any: vec!["x".into()],
                ..Default::default()
            },
            ClaimRequirements {
                groups_any: vec!["x".into()],
                ..Default::default()
            },
            ClaimRequirements {
                app_ids: vec!["x".into()],
                ..Default::default()
            },
            ClaimRequirements {
                versions: vec!["1.0".into()],
                ..Default::default()
            },
            ClaimRequirements {
                kinds: vec![IdentityKind::App],
                ..Default::default()
            },
        ];
        for claims in claim_cases {
            p.claims = claims;
            seen.insert(deny(&p, Some(&t), Some(&c)));
        }
        p.claims = ClaimRequirements {
            groups_any: vec!["x".into()],
            ..Default::default()
        };
        seen.insert(deny(&p, Some(&overage), Some(&c)));
        for r in DenyReason::ALL {
            assert!(seen.contains(&r), "{} never produced", r.code());
        }
    }

    #[test]
    fn serde_names() {
        #[derive(Deserialize)]
        struct C {
            identity: IdentityRequirement,
            #[serde(deserialize_with = "deserialize_identity_kinds")]
            kinds: Vec<IdentityKind>,
        }
        let c: C =
            serde_json::from_str(r#"{"identity":"token_or_cert","kinds":["app","user"]}"#).unwrap();
        assert_eq!(c.identity, IdentityRequirement::TokenOrCert);
        assert_eq!(c.kinds, vec![IdentityKind::App, IdentityKind::User]);
        let e = serde_json::from_str::<C>(r#"{"identity":"token","kinds":["robot"]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("robot"), "{e}");
        assert!(serde_json::from_str::<C>(r#"{"identity":"Token","kinds":[]}"#).is_err());
    }
}
