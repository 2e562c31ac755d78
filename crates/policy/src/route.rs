//! Routing by host and path prefix, and the request-path check that keeps a path from
//! escaping the prefix policy saw.
//!
//! ## Host
//!
//! Matched case-insensitively, without port and trailing dot. Exact names beat
//! wildcards (`*.example.com`: any name ending in `.example.com`, not
//! `example.com` itself; the longest suffix wins), which beat routes without hosts.
//! The most specific host pattern that matches picks the group of routes; the path is
//! then looked up in that group only, with no fall-through to less specific hosts, so
//! a request for a host with its own routes never lands on a catch-all route whose
//! policy was written for other hosts.
//!
//! ## Path
//!
//! The longest prefix matching on a segment boundary wins: `/api` matches `/api`,
//! `/api/x` and `/api;v=1`, not `/apix`; `/` matches everything. Prefixes are
//! written without a trailing slash (`/api/` is read as `/api`).
//!
//! Requests must be matched on [`normalize_path`]'s result, and the gateway must
//! forward that same string upstream, so that the upstream resolves what policy saw.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// One route to index.
#[derive(Clone, Debug)]
pub struct RouteEntry<T> {
    /// Host patterns: exact names, `*.suffix` wildcards; empty matches any host.
    pub hosts: Vec<String>,
    /// The path prefix (`/` for everything).
    pub path_prefix: String,
    /// What the lookup returns.
    pub value: T,
    /// The route name, for overlap errors.
    pub name: String,
}

/// Two routes with the same host pattern and path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteOverlap {
    /// The route listed first.
    pub first: String,
    /// The route listed later.
    pub second: String,
    /// The shared host pattern (`*` for "any host").
    pub host: String,
    /// The shared path prefix.
    pub path_prefix: String,
}

impl fmt::Display for RouteOverlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "routes `{}` and `{}` overlap: both match host `{}` with path prefix `{}`",
            self.first, self.second, self.host, self.path_prefix
        )
    }
}

impl std::error::Error for RouteOverlap {}

/// Routes of one host pattern, longest prefix first.
#[derive(Clone, Debug)]
struct Group {
    /// (normalised prefix, entry index).
    prefixes: Vec<(String, usize)>,
}

impl Group {
    fn find(&self, path: &str) -> Option<usize> {
        self.prefixes
            .iter()
            .find(|(p, _)| prefix_matches(p, path))
            .map(|(_, i)| *i)
    }
}

/// A route lookup table.
#[derive(Clone, Debug)]
pub struct RouteTable<T> {
    values: Vec<T>,
    names: Vec<String>,
    exact: HashMap<String, Group>,
    /// (suffix including the leading dot, group), longest suffix first.
    wildcard: Vec<(String, Group)>,
    any: Option<Group>,
}

impl<T> RouteTable<T> {
    /// Builds the table; every pair of routes with the same host pattern and path
    /// prefix is reported.
    pub fn new(entries: Vec<RouteEntry<T>>) -> Result<RouteTable<T>, Vec<RouteOverlap>> {
        let mut overlaps = Vec::new();
        let mut owner: HashMap<(String, String), usize> = HashMap::new();
        let mut groups: HashMap<String, Vec<(String, usize)>> = HashMap::new();
        let mut values = Vec::with_capacity(entries.len());
        let mut names = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            let prefix = normalize_prefix(&entry.path_prefix);
            let mut patterns: Vec<String> = if entry.hosts.is_empty() {
                vec!["*".to_string()]
            } else {
                entry
                    .hosts
                    .iter()
                    .map(|h| normalize_host_pattern(h))
                    .collect()
            };
            patterns.sort();
            patterns.dedup();
            for pattern in patterns {
                let key = (pattern.clone(), prefix.clone());
                if let Some(&j) = owner.get(&key) {
                    overlaps.push(RouteOverlap {
                        first: names.get(j).cloned().unwrap_or_default(),
                        second: entry.name.clone(),
                        host: pattern,
                        path_prefix: prefix.clone(),
                    });
                    continue;
                }
                owner.insert(key, i);
                groups.entry(pattern).or_default().push((prefix.clone(), i));
            }
            values.push(entry.value);
            names.push(entry.name);
        }
        if !overlaps.is_empty() {
            return Err(overlaps);
        }
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        let mut any = None;
        for (pattern, mut prefixes) in groups {
            prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
            let group = Group { prefixes };
            if pattern == "*" {
                any = Some(group);
            } else if let Some(suffix) = pattern.strip_prefix('*') {
                wildcard.push((suffix.to_string(), group));
            } else {
                exact.insert(pattern, group);
            }
        }
        wildcard.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Ok(RouteTable {
            values,
            names,
            exact,
            wildcard,
            any,
        })
    }

    /// The route for a request. `host` is the `Host` header or `:authority` (a port
    /// is ignored); `path` should be [`normalize_path`]'s output.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&T> {
        self.find_index(host, path).and_then(|i| self.values.get(i))
    }

    /// Like [`RouteTable::find`], with the route's name.
    pub fn find_named(&self, host: Option<&str>, path: &str) -> Option<(&str, &T)> {
        let i = self.find_index(host, path)?;
        Some((self.names.get(i)?.as_str(), self.values.get(i)?))
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn find_index(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let group = host
            .map(request_host)
            .filter(|h| !h.is_empty())
            .and_then(|h| {
                self.exact.get(h.as_ref()).or_else(|| {
                    self.wildcard
                        .iter()
                        .find(|(suffix, _)| h.len() > suffix.len() && h.ends_with(suffix.as_str()))
                        .map(|(_, g)| g)
                })
            })
            .or(self.any.as_ref())?;
        group.find(path)
    }
}

/// Lower-cases a host pattern and drops a trailing dot; `""` and `*` mean any host.
fn normalize_host_pattern(h: &str) -> String {
    let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
    if h.is_empty() { "*".to_string() } else { h }
}

/// The host of a `Host` header value: lower-case, without port or trailing dot,
/// IPv6 literals without brackets.
fn request_host(h: &str) -> Cow<'_, str> {
    let h = h.trim();
    let host = if let Some(rest) = h.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(inside, _)| inside)
    } else {
        h.split_once(':').map_or(h, |(name, _)| name)
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// A prefix as matched: leading slash ensured, trailing slashes removed (`/` kept).
fn normalize_prefix(p: &str) -> String {
    let p = p.trim();
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with(';'),
        None => false,
    }
}

/// Checks a route's host pattern and path prefix as written in the configuration:
/// host patterns are names or `*.suffix` (no ports, no other `*`), prefixes are
/// absolute paths that [`normalize_path`] leaves unchanged.
pub fn validate_route(
    name: &str,
    hosts: &[String],
    path_prefix: &str,
) -> Result<(), crate::PolicyError> {
    for h in hosts {
        let bad = |reason: &str| crate::PolicyError::BadHostPattern {
            route: name.to_string(),
            host: h.clone(),
            reason: reason.to_string(),
        };
        let body = h.strip_prefix("*.").unwrap_or(h);
        if body.is_empty() {
            return Err(bad("empty host name"));
        }
        if body.contains('*') {
            return Err(bad("`*` is only allowed as a leading `*.` label"));
        }
        if !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(bad(
                "expected a host name without port (letters, digits, `-`, `.`, `_`)",
            ));
        }
    }
    let bad = |reason: String| crate::PolicyError::BadPathPrefix {
        route: name.to_string(),
        prefix: path_prefix.to_string(),
        reason,
    };
    if !path_prefix.starts_with('/') {
        return Err(bad("must start with `/`".into()));
    }
    match normalize_path(path_prefix) {
        Ok(n) if n == path_prefix => Ok(()),
        Ok(n) => Err(bad(format!("write it in normalised form: `{n}`"))),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Why a request path is refused (the gateway answers 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path does not start with `/`")]
    NotAbsolute,
    /// A `.` or `..` segment, possibly percent-encoded or with `;` parameters.
    #[error("the path contains a `.` or `..` segment")]
    DotSegment,
    /// An encoded `/` or `\`, which an upstream may decode into a separator.
    #[error("the path contains an encoded `/` or `\\`")]
    EncodedSlash,
    /// A literal `\`, which some servers treat as `/`.
    #[error("the path contains a backslash")]
    Backslash,
    /// An empty segment (`//`) other than a trailing slash.
    #[error("the path contains an empty segment (`//`)")]
    EmptySegment,
    /// A `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-encoding")]
    BadPercentEncoding,
    /// A control character or an encoded NUL.
    #[error("the path contains a control character")]
    ControlChar,
}

impl PathError {
    /// A stable snake_case code for responses, audit events and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::DotSegment => "path_dot_segment",
            PathError::EncodedSlash => "path_encoded_slash",
            PathError::Backslash => "path_backslash",
            PathError::EmptySegment => "path_empty_segment",
            PathError::BadPercentEncoding => "path_bad_percent_encoding",
            PathError::ControlChar => "path_control_char",
        }
    }
}

/// Checks and normalises a request path (without the query) before routing.
///
/// A proxy that routes on one spelling of a path while the upstream resolves
/// another lets a client escape the prefix a policy guards (`/public/../admin`,
/// `/%61dmin`, `//admin`, `/admin%2fx`, Tomcat's `/..;/`). So:
///
/// - refused: `.` and `..` segments (also percent-encoded, also before a `;`
///   parameter), encoded `/` and `\` (`%2F`, `%5C`), literal `\`, empty segments
///   (`//`, except a trailing slash), malformed `%` escapes, control characters and
///   `%00`;
/// - normalised: percent-encoded unreserved characters (letters, digits, `-._~`,
///   RFC 3986 section 6.2.2.2) are decoded, other escapes get upper-case hex.
///
/// Borrowed when nothing changed. Route on the result and forward the result.
/// Matching stays case-sensitive: an upstream that ignores case (IIS) must be
/// guarded by prefixes that do not depend on case.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                return Err(PathError::BadPercentEncoding);
            };
            let (Some(h), Some(l)) = (hex(*h), hex(*l)) else {
                return Err(PathError::BadPercentEncoding);
            };
            let v = h << 4 | l;
            if v == b'/' || v == b'\\' {
                return Err(PathError::EncodedSlash);
            }
            if v < 0x20 || v == 0x7f {
                return Err(PathError::ControlChar);
            }
            if is_unreserved(v)
                || bytes[i + 1].is_ascii_lowercase()
                || bytes[i + 2].is_ascii_lowercase()
            {
                changed = true;
            }
            i += 3;
            continue;
        }
        if b == b'\\' {
            return Err(PathError::Backslash);
        }
        if b < 0x20 || b == 0x7f {
            return Err(PathError::ControlChar);
        }
        i += 1;
    }
    let out: Cow<'_, str> = if changed {
        Cow::Owned(decode_unreserved(path))
    } else {
        Cow::Borrowed(path)
    };
    // Segment checks on the normalised form, where `%2e` is already `.`.
    let segments: Vec<&str> = out[1..].split('/').collect();
    let last = segments.len() - 1;
    for (k, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            if k == last {
                continue; // trailing slash, or the root path
            }
            return Err(PathError::EmptySegment);
        }
        let name = seg.split(';').next().unwrap_or(seg);
        if name == "." || name == ".." {
            return Err(PathError::DotSegment);
        }
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escapes of unreserved characters and upper-cases the others. Only called
/// on a path whose escapes were all checked well-formed.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    let mut plain = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push_str(&path[plain..i]);
                let v = h << 4 | l;
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
                i += 3;
                plain = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&path[plain..]);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn entry(name: &str, hosts: &[&str], prefix: &str) -> RouteEntry<String> {
        RouteEntry {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            path_prefix: prefix.to_string(),
            value: name.to_string(),
            name: name.to_string(),
        }
    }

    fn table() -> RouteTable<String> {
        RouteTable::new(vec![
            entry("root", &[], "/"),
            entry("api", &[], "/api"),
            entry("api-v2", &[], "/api/v2/"),
            entry("exact", &["app.example.com"], "/"),
            entry("exact-admin", &["App.Example.com."], "/admin"),
            entry("wild", &["*.example.com"], "/"),
            entry("wild-deep", &["*.eu.example.com"], "/"),
            entry("multi", &["a.test", "b.test"], "/x"),
        ])
        .unwrap()
    }

    #[test]
    fn path_prefix_on_segment_boundaries() {
        let t = table();
        let f = |p| t.find(None, p).map(String::as_str);
        assert_eq!(f("/"), Some("root"));
        assert_eq!(f("/api"), Some("api"));
        assert_eq!(f("/api/"), Some("api"));
        assert_eq!(f("/api/x"), Some("api"));
        assert_eq!(f("/api;jsessionid=1"), Some("api"));
        assert_eq!(f("/apix"), Some("root"));
        assert_eq!(f("/api/v2"), Some("api-v2"));
        assert_eq!(f("/api/v2/users"), Some("api-v2"));
        assert_eq!(f("/api/v22"), Some("api"));
        assert_eq!(f("no-slash"), None);
    }

    #[test]
    fn host_precedence_without_fallthrough() {
        let t = table();
        let f = |h, p| t.find(Some(h), p).map(String::as_str);
        assert_eq!(f("app.example.com", "/admin/x"), Some("exact-admin"));
        assert_eq!(f("APP.EXAMPLE.COM:8443", "/admin"), Some("exact-admin"));
        assert_eq!(f("app.example.com.", "/other"), Some("exact"));
        assert_eq!(f("x.example.com", "/admin"), Some("wild"));
        assert_eq!(f("a.b.example.com", "/"), Some("wild"));
        assert_eq!(f("x.eu.example.com", "/"), Some("wild-deep"));
        // The wildcard does not match the bare suffix; the catch-all does.
        assert_eq!(f("example.com", "/api"), Some("api"));
        assert_eq!(f("[2001:db8::1]:443", "/api"), Some("api"));
        assert_eq!(f("", "/api"), Some("api"));
        assert_eq!(f("b.test", "/x/y"), Some("multi"));
        // A host with its own routes does not fall through to the catch-all.
        assert_eq!(f("a.test", "/api"), None);
        let (name, _) = t.find_named(Some("a.test"), "/x").unwrap();
        assert_eq!(name, "multi");
        assert_eq!(t.len(), 8);
    }

    #[test]
    fn overlaps_are_all_reported_by_name() {
        let e = RouteTable::new(vec![
            entry("one", &["a.test"], "/api"),
            entry("two", &["A.TEST"], "/api/"),
            entry("three", &[], "/"),
            entry("four", &[""], "/"),
            entry("five", &["b.test", "a.test"], "/other"),
            entry("six", &["*.test"], "/"),
            entry("seven", &["*.test"], "/x"),
        ])
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0],
            RouteOverlap {
                first: "one".into(),
                second: "two".into(),
                host: "a.test".into(),
                path_prefix: "/api".into()
            }
        );
        assert_eq!(
            (
                e[1].first.as_str(),
                e[1].second.as_str(),
                e[1].host.as_str()
            ),
            ("three", "four", "*")
        );
        let msg = e[0].to_string();
        assert!(
            msg.contains("`one`") && msg.contains("`two`") && msg.contains("/api"),
            "{msg}"
        );
    }

    #[test]
    fn normalize_path_refuses_escapes() {
        let cases: &[(&str, PathError)] = &[
            ("api", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/public/../admin", PathError::DotSegment),
            ("/public/..", PathError::DotSegment),
            ("/./admin", PathError::DotSegment),
            ("/public/%2e%2e/admin", PathError::DotSegment),
            ("/public/.%2E/admin", PathError::DotSegment),
            ("/public/..;/admin", PathError::DotSegment),
            ("/public/..;x=1/admin", PathError::DotSegment),
            ("/public%2f..%2fadmin", PathError::EncodedSlash),
            ("/public%2F..%2Fadmin", PathError::EncodedSlash),
            ("/public%5c..%5cadmin", PathError::EncodedSlash),
            ("/public\\..\\admin", PathError::Backslash),
            ("//admin", PathError::EmptySegment),
            ("/api//x", PathError::EmptySegment),
            ("/api%", PathError::BadPercentEncoding),
            ("/api%4", PathError::BadPercentEncoding),
            ("/api%zz", PathError::BadPercentEncoding),
            ("/api%00", PathError::ControlChar),
            ("/api\t", PathError::ControlChar),
        ];
        for (p, want) in cases {
            assert_eq!(normalize_path(p).as_ref(), Err(want), "{p}");
            assert!(want.code().starts_with("path_"));
        }
    }

    #[test]
    fn normalize_path_decodes_unreserved_and_keeps_the_rest() {
        assert!(matches!(
            normalize_path("/api/x"),
            Ok(Cow::Borrowed("/api/x"))
        ));
        assert!(matches!(normalize_path("/"), Ok(Cow::Borrowed("/"))));
        assert_eq!(normalize_path("/api/").unwrap(), "/api/");
        assert_eq!(normalize_path("/%61dmin").unwrap(), "/admin");
        assert_eq!(normalize_path("/a%7Eb%2dc").unwrap(), "/a~b-c");
        assert_eq!(normalize_path("/a%20b%c3%bc").unwrap(), "/a%20b%C3%BC");
        assert!(matches!(normalize_path("/a%20b"), Ok(Cow::Borrowed(_))));
        assert_eq!(normalize_path("/a..b/.x/x.").unwrap(), "/a..b/.x/x.");
        assert_eq!(normalize_path("/über").unwrap(), "/über");
        // The decoded path routes where the upstream would resolve it.
        let t =
            RouteTable::new(vec![entry("open", &[], "/"), entry("admin", &[], "/admin")]).unwrap();
        let p = normalize_path("/%61dmin/users").unwrap();
        assert_eq!(t.find(None, &p).map(String::as_str), Some("admin"));
    }

    #[test]
    fn validate_route_config() {
        let ok = |hosts: &[&str], prefix: &str| {
            validate_route(
                "r",
                &hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                prefix,
            )
        };
        assert!(ok(&["api.example.com", "*.example.com"], "/api").is_ok());
        assert!(ok(&[], "/").is_ok());
        for (hosts, prefix) in [
            (&["api.example.com:443"][..], "/"),
            (&["a.*.com"][..], "/"),
            (&["*."][..], "/"),
            (&["bad host"][..], "/"),
            (&[][..], "api"),
            (&[][..], "/a/../b"),
            (&[][..], "/%61pi"),
            (&[][..], "//x"),
        ] {
            let e = ok(hosts, prefix).unwrap_err().to_string();
            assert!(e.contains("route `r`"), "{e}");
        }
    }
}
