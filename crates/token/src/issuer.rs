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
                        && &iss[prefix.len()..prefix.len() + t.len()] == t
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
    fn exact_is_exact() {
        let m = IssuerMatch::parse("https://sts.windows.net/x/");
        assert!(m.matches("https://sts.windows.net/x/", None));
        assert!(!m.matches("https://sts.windows.net/x", None));
        assert!(!m.could_match("https://sts.windows.net/X/"));
    }
}
