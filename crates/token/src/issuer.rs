//! Issuer identifiers: exact, or Entra's tenant-independent `{tenantid}` template.

use std::fmt;

use crate::jwt::is_guid;

/// An accepted issuer, as a metadata document or a key's `issuer` property names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuerMatch {
    /// The `iss` claim must equal this string exactly (OpenID Connect Core 3.1.3.7).
    Exact(String),
    /// `prefix{tenantid}suffix`: `iss` must equal the template with the token's own
    /// GUID `tid` substituted (Microsoft's rule for tenant-independent metadata).
    Template {
        /// Text before the placeholder.
        prefix: String,
        /// Text after the placeholder.
        suffix: String,
    },
}

const PLACEHOLDER: &str = "{tenantid}";

impl IssuerMatch {
    /// Read an issuer string; the `{tenantid}` placeholder is matched without regard
    /// to case, as Microsoft's recap pseudo-code does.
    pub fn parse(issuer: &str) -> IssuerMatch {
        let lower = issuer.to_ascii_lowercase();
        match lower.find(PLACEHOLDER) {
            Some(at) => IssuerMatch::Template {
                prefix: issuer[..at].to_string(),
                suffix: issuer[at + PLACEHOLDER.len()..].to_string(),
            },
            None => IssuerMatch::Exact(issuer.to_string()),
        }
    }

    /// Whether `iss` is this issuer for a token whose `tid` is `tid`.
    pub fn matches(&self, iss: &str, tid: Option<&str>) -> bool {
        match self {
            IssuerMatch::Exact(e) => e == iss,
            IssuerMatch::Template { prefix, suffix } => match tid {
                Some(t) if is_guid(t) => {
                    iss.len() == prefix.len() + t.len() + suffix.len()
                        && iss.starts_with(prefix.as_str())
                        && iss.ends_with(suffix.as_str())
                        // Entra writes GUIDs in lower case; an upper-case `tid` or
                        // issuer segment is the same tenant.
                        && iss[prefix.len()..prefix.len() + t.len()].eq_ignore_ascii_case(t)
                }
                _ => false,
            },
        }
    }

    /// Whether a token claiming `iss` could belong here at all (before `tid` is
    /// trusted): used to pick the metadata source for a token.
    pub fn could_match(&self, iss: &str) -> bool {
        match self {
            IssuerMatch::Exact(e) => e == iss,
            IssuerMatch::Template { prefix, suffix } => {
                iss.len() > prefix.len() + suffix.len()
                    && iss.starts_with(prefix.as_str())
                    && iss.ends_with(suffix.as_str())
            }
        }
    }

    /// The concrete issuer for tenant `tid` (None when `tid` is not a GUID).
    pub fn resolve(&self, tid: &str) -> Option<String> {
        match self {
            IssuerMatch::Exact(e) => Some(e.clone()),
            IssuerMatch::Template { prefix, suffix } => {
                is_guid(tid).then(|| format!("{prefix}{tid}{suffix}"))
            }
        }
    }
}

/// Whether a key published for `key_issuer` (resolved for the token's tenant) may sign
/// a v1 Entra token issued as `iss` for tenant `tid`. A v1 token's `iss` is
/// `https://sts.windows.net/{tid}/` (`sts.chinacloudapi.cn` and the like in other
/// clouds), but Entra binds every signing key to the v2 form of the issuer,
/// `https://{login host}/{tid}/v2.0`, on both key endpoints: a key set saved from Entra
/// only verifies v1 tokens through this. What the binding is for still holds: the
/// key's tenant must be the token's.
pub fn v1_token_fits_v2_key(iss: &str, key_issuer: &str, tid: &str) -> bool {
    let one_segment = |rest: &str| -> Option<(String, String)> {
        let (host, path) = rest.split_once('/')?;
        Some((host.to_string(), path.to_string()))
    };
    let Some((v1_host, v1_path)) = iss.strip_prefix("https://").and_then(one_segment) else {
        return false;
    };
    let Some((key_host, key_path)) = key_issuer.strip_prefix("https://").and_then(one_segment)
    else {
        return false;
    };
    v1_host.starts_with("sts.")
        && v1_path
            .strip_suffix('/')
            .is_some_and(|t| is_guid(t) && t.eq_ignore_ascii_case(tid))
        && !key_host.is_empty()
        && key_path
            .strip_suffix("/v2.0")
            .is_some_and(|t| is_guid(t) && t.eq_ignore_ascii_case(tid))
}

impl fmt::Display for IssuerMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IssuerMatch::Exact(e) => write!(f, "{e:?}"),
            IssuerMatch::Template { prefix, suffix } => {
                write!(f, "\"{prefix}{PLACEHOLDER}{suffix}\"")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn template_substitutes_the_tokens_own_guid_tid() {
        let m = IssuerMatch::parse("https://login.microsoftonline.com/{TenantId}/v2.0");
        let iss = format!("https://login.microsoftonline.com/{T}/v2.0");
        assert!(m.matches(&iss, Some(T)));
        assert!(m.could_match(&iss));
        // tid of another tenant, non-GUID tid, no tid: no match
        assert!(!m.matches(&iss, Some("9188040d-6c67-4c5b-b112-36a304b66dad")));
        assert!(!m.matches(
            "https://login.microsoftonline.com/common/v2.0",
            Some("common")
        ));
        assert!(!m.matches(&iss, None));
        assert_eq!(m.resolve(T), Some(iss));
        assert_eq!(m.resolve("contoso"), None);
    }

    #[test]
    fn a_v1_token_fits_the_v2_form_key_of_its_own_tenant_only() {
        let v1 = format!("https://sts.windows.net/{T}/");
        let v2 = format!("https://login.microsoftonline.com/{T}/v2.0");
        assert!(v1_token_fits_v2_key(&v1, &v2, T));
        // any cloud's login host, the dev issuer's included; GUIDs in any case
        let upper = T.to_ascii_uppercase();
        assert!(v1_token_fits_v2_key(
            &format!("https://sts.chinacloudapi.cn/{upper}/"),
            &format!("https://127.0.0.1:8443/{T}/v2.0"),
            T
        ));
        const O: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
        for (iss, key, tid) in [
            (
                v1.clone(),
                format!("https://login.microsoftonline.com/{O}/v2.0"),
                T,
            ),
            (v1.clone(), v2.clone(), O),
            (format!("https://sts.windows.net/{O}/"), v2.clone(), T),
            (v2.clone(), v2.clone(), T), // a v2 token is not a v1 token
            (format!("https://evil.example/{T}/"), v2.clone(), T),
            (format!("https://sts.windows.net/{T}"), v2.clone(), T),
            (format!("https://sts.windows.net/{T}/x/"), v2.clone(), T),
            (
                v1.clone(),
                format!("https://login.microsoftonline.com/{T}/v2.0/x"),
                T,
            ),
            (
                v1.clone(),
                format!("https://login.microsoftonline.com/{T}"),
                T,
            ),
            (
                v1.clone(),
                format!("http://login.microsoftonline.com/{T}/v2.0"),
                T,
            ),
            ("https://sts.windows.net/common/".to_string(), v2.clone(), T),
        ] {
            assert!(!v1_token_fits_v2_key(&iss, &key, tid), "{iss} {key} {tid}");
        }
    }

    #[test]
    fn a_guid_in_upper_case_is_the_same_tenant() {
        let m = IssuerMatch::parse("https://login.microsoftonline.com/{tenantid}/v2.0");
        let upper = T.to_ascii_uppercase();
        assert!(m.matches(
            &format!("https://login.microsoftonline.com/{T}/v2.0"),
            Some(&upper)
        ));
        assert!(m.matches(
            &format!("https://login.microsoftonline.com/{upper}/v2.0"),
            Some(T)
        ));
    }

    #[test]
    fn exact_is_exact() {
        let m = IssuerMatch::parse("https://sts.windows.net/x/");
        assert!(m.matches("https://sts.windows.net/x/", None));
        assert!(!m.matches("https://sts.windows.net/x", None));
        assert!(!m.could_match("https://sts.windows.net/X/"));
    }
}
