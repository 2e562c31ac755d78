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
//! policy was written for other hosts. [`check_authority`] refuses a `Host` (or
//! `:authority`, or a proxy's `X-Forwarded-Host`) that is not a plain `host[:port]`.
//!
//! ## Path
//!
//! The longest prefix matching on a segment boundary wins: `/api` matches `/api`,
//! `/api/` and `/api/x`, not `/apix`; `/` matches everything. Prefixes are written
//! without a trailing slash (`/api/` is read as `/api`).
//!
//! Prefixes are compared character by character after percent-decoding (as the
//! upstream server decodes), ignoring case unless the route is `case_sensitive`:
//! Express, ASP.NET Core and IIS match routes without regard to case, so `/ADMIN`
//! must meet the policy of `/admin`. Case is folded generously (also `ı`, `ſ`, the
//! Kelvin sign `K` and `İ`, which Unicode maps to ASCII letters and which Java's
//! `equalsIgnoreCase` folds so), and the part of the path that matched is then forwarded spelled as
//! the prefix is: a path judged as `/admin/x` reaches the upstream as `/admin/x`,
//! never as a spelling that a case-sensitive upstream would take for another
//! resource.
//!
//! Requests must be matched on [`normalize_path`]'s result, and the gateway must
//! forward [`RouteMatch::path`], so that the upstream resolves what policy saw.

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
    /// Compare the prefix with its case (for upstreams known to be case-sensitive);
    /// `false` ignores case.
    pub case_sensitive: bool,
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
    /// The shared path prefix (as the later route writes it).
    pub path_prefix: String,
}

impl fmt::Display for RouteOverlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "routes `{}` and `{}` overlap: both match host `{}` with path prefix `{}` (prefixes that differ only in case overlap unless both routes are case_sensitive)",
            self.first, self.second, self.host, self.path_prefix
        )
    }
}

impl std::error::Error for RouteOverlap {}

/// A route that matched a request.
#[derive(Debug)]
pub struct RouteMatch<'t, 'p, T> {
    /// The route's name.
    pub name: &'t str,
    /// The route's value.
    pub value: &'t T,
    /// The path to forward: the request path with the part the prefix matched
    /// spelled as the prefix is (borrowed when that changes nothing).
    pub path: Cow<'p, str>,
}

/// One prefix of a group.
#[derive(Clone, Debug)]
struct Prefix {
    text: String,
    /// Characters after percent-decoding: the longest match is the one with most.
    chars: usize,
    case_sensitive: bool,
    index: usize,
}

/// A route that holds a prefix of a host pattern, while the table is built.
struct Owner {
    /// The prefix's characters after percent-decoding.
    decoded: Vec<char>,
    case_sensitive: bool,
    index: usize,
}

/// Routes of one host pattern, longest prefix first.
#[derive(Clone, Debug)]
struct Group {
    prefixes: Vec<Prefix>,
}

impl Group {
    /// The first (longest) prefix that matches, and how many bytes of `path` it
    /// matched.
    fn find(&self, path: &str) -> Option<(usize, usize)> {
        self.prefixes
            .iter()
            .find_map(|p| prefix_match(&p.text, path, !p.case_sensitive).map(|end| (p.index, end)))
    }
}

/// A route lookup table.
#[derive(Clone, Debug)]
pub struct RouteTable<T> {
    values: Vec<T>,
    names: Vec<String>,
    prefixes: Vec<String>,
    exact: HashMap<String, Group>,
    /// (suffix including the leading dot, group), longest suffix first.
    wildcard: Vec<(String, Group)>,
    any: Option<Group>,
}

impl<T> RouteTable<T> {
    /// Builds the table; every pair of routes with the same host pattern and an
    /// equivalent path prefix is reported (prefixes that differ in case are
    /// equivalent unless both routes are case-sensitive).
    pub fn new(entries: Vec<RouteEntry<T>>) -> Result<RouteTable<T>, Vec<RouteOverlap>> {
        let mut overlaps = Vec::new();
        // (host pattern, folded prefix) → the routes already there.
        let mut owner: HashMap<(String, Vec<char>), Vec<Owner>> = HashMap::new();
        let mut groups: HashMap<String, Vec<Prefix>> = HashMap::new();
        let mut values = Vec::with_capacity(entries.len());
        let mut names = Vec::with_capacity(entries.len());
        let mut prefixes = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            let prefix = normalize_prefix(&entry.path_prefix);
            let decoded: Vec<char> = units(&prefix).map(|(c, _)| c).collect();
            let folded: Vec<char> = decoded.iter().map(|c| fold(*c)).collect();
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
                let here = owner.entry((pattern.clone(), folded.clone())).or_default();
                let clash = here
                    .iter()
                    .find(|o| o.decoded == decoded || !(o.case_sensitive && entry.case_sensitive));
                if let Some(Owner { index: j, .. }) = clash {
                    overlaps.push(RouteOverlap {
                        first: names.get(*j).cloned().unwrap_or_default(),
                        second: entry.name.clone(),
                        host: pattern,
                        path_prefix: prefix.clone(),
                    });
                    continue;
                }
                here.push(Owner {
                    decoded: decoded.clone(),
                    case_sensitive: entry.case_sensitive,
                    index: i,
                });
                groups.entry(pattern).or_default().push(Prefix {
                    text: prefix.clone(),
                    chars: decoded.len(),
                    case_sensitive: entry.case_sensitive,
                    index: i,
                });
            }
            values.push(entry.value);
            names.push(entry.name);
            prefixes.push(prefix);
        }
        if !overlaps.is_empty() {
            return Err(overlaps);
        }
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        let mut any = None;
        for (pattern, mut list) in groups {
            list.sort_by(|a, b| b.chars.cmp(&a.chars).then(a.index.cmp(&b.index)));
            let group = Group { prefixes: list };
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
            prefixes,
            exact,
            wildcard,
            any,
        })
    }

    /// The route for a request. `host` is the `Host` header or `:authority` (a port
    /// is ignored); `path` should be [`normalize_path`]'s output.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&T> {
        self.lookup(host, path).map(|m| m.value)
    }

    /// The route for a request with its name and the path to forward.
    pub fn lookup<'p>(&self, host: Option<&str>, path: &'p str) -> Option<RouteMatch<'_, 'p, T>> {
        let (i, end) = self.find_index(host, path)?;
        let prefix = self.prefixes.get(i)?;
        let matched = path.get(..end)?;
        let path = if matched == prefix || prefix == "/" {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(format!("{prefix}{}", path.get(end..)?))
        };
        Some(RouteMatch {
            name: self.names.get(i)?.as_str(),
            value: self.values.get(i)?,
            path,
        })
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn find_index(&self, host: Option<&str>, path: &str) -> Option<(usize, usize)> {
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

/// Why a `Host`, `:authority` or `X-Forwarded-Host` value is refused (400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing before the port.
    #[error("the host is empty")]
    Empty,
    /// `user@host`: an upstream that builds URLs from it would send its users to
    /// whatever follows the `@`.
    #[error("the host carries userinfo (`@`)")]
    Userinfo,
    /// A character no host name or IP literal has.
    #[error("the host contains `{0}`, which no host name has")]
    BadChar(char),
    /// An IPv6 literal without its closing `]`, or text after it other than a port.
    #[error("malformed IPv6 literal")]
    BadIpLiteral,
    /// A port that is not 1 to 5 digits.
    #[error("the port is not a number")]
    BadPort,
}

/// Checks that `value` is a plain `host[:port]`: a host name (letters, digits, `-`,
/// `.`, `_`), an IPv4 address or a bracketed IPv6 literal, then an optional port of
/// digits. Userinfo, percent-encoding, spaces, commas and everything else are
/// refused, so that what the gateway routed on and passes on as `X-Forwarded-Host`
/// names one host and nothing more.
pub fn check_authority(value: &str) -> Result<(), HostError> {
    if value.contains('@') {
        return Err(HostError::Userinfo);
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(HostError::BadIpLiteral)?;
        if inside.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(HostError::BadIpLiteral);
        }
        match after {
            "" => (None, None),
            _ => (
                None,
                Some(after.strip_prefix(':').ok_or(HostError::BadIpLiteral)?),
            ),
        }
    } else {
        match value.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(value), None),
        }
    };
    if let Some(h) = host {
        if h.is_empty() {
            return Err(HostError::Empty);
        }
        if let Some(c) = h
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
        {
            return Err(HostError::BadChar(c));
        }
    }
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(HostError::BadPort);
    }
    Ok(())
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

/// Whether `prefix` matches `path` on a segment boundary, comparing decoded
/// characters (folded when `ignore_case`); the number of bytes of `path` it matched.
fn prefix_match(prefix: &str, path: &str, ignore_case: bool) -> Option<usize> {
    if prefix == "/" {
        return path.starts_with('/').then_some(1);
    }
    let mut path_units = units(path);
    let mut end = 0;
    for (want, _) in units(prefix) {
        let (got, at) = path_units.next()?;
        let same = if ignore_case {
            fold(want) == fold(got)
        } else {
            want == got
        };
        if !same {
            return None;
        }
        end = at;
    }
    let rest = path.get(end..)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(end)
}

/// Case folding for prefix matching, generous on purpose: every character whose
/// simple upper-case form, lower-cased again, is a letter folds to that letter. So
/// `ı` (dotless i) and `İ` fold to `i`, `ſ` (long s) to `s`, the Kelvin sign to `k`:
/// Java's `equalsIgnoreCase` takes them for those letters. Folding more than an
/// upstream does is safe, because the matched part is forwarded spelled as the
/// prefix; folding less would let an upstream that folds more reach a prefix the
/// gateway did not see.
fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut upper = c.to_uppercase();
    let up = match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    };
    up.to_lowercase().next().unwrap_or(up)
}

/// The characters of a path after percent-decoding, each with the byte offset just
/// past it. An escape that is not (part of) valid UTF-8 decodes to U+FFFD
/// (normalised paths have none).
fn units(s: &str) -> impl Iterator<Item = (char, usize)> + '_ {
    let bytes = s.as_bytes();
    let escaped = move |i: usize| -> Option<u8> {
        if bytes.get(i) != Some(&b'%') {
            return None;
        }
        Some(hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?)
    };
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= bytes.len() {
            return None;
        }
        let Some(lead) = escaped(i) else {
            let c = s.get(i..)?.chars().next()?;
            i += c.len_utf8();
            return Some((c, i));
        };
        let len = match lead {
            0x00..=0x7f => 1,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        let mut buf = [lead, 0, 0, 0];
        let mut ok = len > 0;
        for (k, slot) in buf.iter_mut().enumerate().take(len).skip(1) {
            match escaped(i + 3 * k) {
                Some(b) if ok => *slot = b,
                _ => ok = false,
            }
        }
        let c = ok
            .then(|| std::str::from_utf8(&buf[..len]).ok()?.chars().next())
            .flatten();
        match c {
            Some(c) => {
                i += 3 * len;
                Some((c, i))
            }
            None => {
                i += 3;
                Some((char::REPLACEMENT_CHARACTER, i))
            }
        }
    })
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
    /// A `.` or `..` segment, possibly percent-encoded.
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
    /// A `;` (or `%3B`): servlet containers (Tomcat, Jetty) and Spring cut path
    /// parameters off every segment before they route, so `/;x/admin` is `/admin`
    /// to them.
    #[error("the path contains a `;` path parameter")]
    Parameter,
    /// `%25`, an encoded `%`: decoded once it is another escape, which an upstream
    /// that decodes twice reads as the character it stands for.
    #[error("the path contains an encoded `%` (double encoding)")]
    EncodedPercent,
    /// Percent-encoded bytes that are not UTF-8.
    #[error("the path's percent-encoded bytes are not UTF-8")]
    BadUtf8,
    /// A segment ending in `.` or a space: Windows drops those from file names, so
    /// IIS serving files reads `/admin./x` as `/admin/x`.
    #[error("a path segment ends in `.` or a space")]
    TrailingDotOrSpace,
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
            PathError::Parameter => "path_parameter",
            PathError::EncodedPercent => "path_encoded_percent",
            PathError::BadUtf8 => "path_bad_utf8",
            PathError::TrailingDotOrSpace => "path_trailing_dot_or_space",
        }
    }
}

/// Checks and normalises a request path (without the query) before routing.
///
/// A proxy that routes on one spelling of a path while the upstream resolves
/// another lets a client escape the prefix a policy guards (`/public/../admin`,
/// `/%61dmin`, `//admin`, `/admin%2fx`, Tomcat's `/..;/` and `/;x/admin`). So:
///
/// - refused: `.` and `..` segments (also percent-encoded), `;` and `%3B` (path
///   parameters, which servlet containers strip), encoded `/` and `\` (`%2F`,
///   `%5C`), literal `\`, `%25` (double encoding), empty segments (`//`, except a
///   trailing slash), segments ending in `.` or a space (Windows drops them),
///   malformed `%` escapes, escapes that are not UTF-8, control characters and
///   `%00`;
/// - normalised: percent-encoded unreserved characters (letters, digits, `-._~`,
///   RFC 3986 section 6.2.2.2) are decoded, other escapes get upper-case hex, and
///   raw non-ASCII bytes are percent-encoded, so the result is ASCII.
///
/// Borrowed when nothing changed. Route on the result with [`RouteTable::lookup`]
/// and forward the path it returns.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let mut changed = false;
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                return Err(PathError::BadPercentEncoding);
            };
            let (Some(hv), Some(lv)) = (hex(*h), hex(*l)) else {
                return Err(PathError::BadPercentEncoding);
            };
            let v = hv << 4 | lv;
            match v {
                b'/' | b'\\' => return Err(PathError::EncodedSlash),
                b';' => return Err(PathError::Parameter),
                b'%' => return Err(PathError::EncodedPercent),
                0..0x20 | 0x7f => return Err(PathError::ControlChar),
                _ => {}
            }
            if is_unreserved(v) || h.is_ascii_lowercase() || l.is_ascii_lowercase() {
                changed = true;
            }
            decoded.push(v);
            i += 3;
            continue;
        }
        match b {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Parameter),
            0..0x20 | 0x7f => return Err(PathError::ControlChar),
            0x80.. => changed = true,
            _ => {}
        }
        decoded.push(b);
        i += 1;
    }
    // Raw characters are whole (the path is a `str`), so this fails only on escapes
    // that do not form characters.
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::BadUtf8);
    }
    let out: Cow<'_, str> = if changed {
        Cow::Owned(canonical(path))
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
        if *seg == "." || *seg == ".." {
            return Err(PathError::DotSegment);
        }
        if units(seg).last().is_some_and(|(c, _)| c == '.' || c == ' ') {
            return Err(PathError::TrailingDotOrSpace);
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

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes escapes of unreserved characters, upper-cases the others and
/// percent-encodes raw non-ASCII bytes. Only called on a path whose escapes were
/// all checked well-formed.
fn canonical(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len() + 8);
    let push_escape = |out: &mut String, v: u8| {
        out.push('%');
        out.push(char::from(HEX[usize::from(v >> 4)]));
        out.push(char::from(HEX[usize::from(v & 0xf)]));
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            let v = h << 4 | l;
            if is_unreserved(v) {
                out.push(char::from(v));
            } else {
                push_escape(&mut out, v);
            }
            i += 3;
            continue;
        }
        if b.is_ascii() {
            out.push(char::from(b));
        } else {
            push_escape(&mut out, b);
        }
        i += 1;
    }
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
            case_sensitive: false,
            value: name.to_string(),
            name: name.to_string(),
        }
    }

    fn strict(name: &str, prefix: &str) -> RouteEntry<String> {
        RouteEntry {
            case_sensitive: true,
            ..entry(name, &[], prefix)
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

    /// The route's name and the path to forward.
    fn look<'p>(t: &RouteTable<String>, path: &'p str) -> Option<(String, Cow<'p, str>)> {
        t.lookup(None, path).map(|m| (m.name.to_string(), m.path))
    }

    #[test]
    fn path_prefix_on_segment_boundaries() {
        let t = table();
        let f = |p| t.find(None, p).map(String::as_str);
        assert_eq!(f("/"), Some("root"));
        assert_eq!(f("/api"), Some("api"));
        assert_eq!(f("/api/"), Some("api"));
        assert_eq!(f("/api/x"), Some("api"));
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
        let m = t.lookup(Some("a.test"), "/x").unwrap();
        assert_eq!(m.name, "multi");
        assert_eq!(t.len(), 8);
    }

    #[test]
    fn prefixes_ignore_case_and_forward_the_prefix_spelling() {
        let t = RouteTable::new(vec![
            entry("open", &[], "/"),
            entry("admin", &[], "/admin"),
            entry("public", &[], "/admin/public"),
            entry("key", &[], "/key"),
            entry("secret", &[], "/secret"),
            entry("bang", &[], "/a!b"),
            entry("umlaut", &[], "/%C3%BCber"),
        ])
        .unwrap();
        let cases: &[(&str, &str, &str)] = &[
            ("/ADMIN/secret", "admin", "/admin/secret"),
            ("/Admin", "admin", "/admin"),
            ("/aDmIn/", "admin", "/admin/"),
            ("/admin/PUBLIC/x", "public", "/admin/public/x"),
            // Unicode letters that upper-case (or lower-case) to ASCII letters: .NET
            // and Java take them for those letters.
            ("/adm%C4%B1n/secret", "admin", "/admin/secret"), // ı, dotless i
            ("/ADM%C4%B0N/secret", "admin", "/admin/secret"), // İ, dotted capital I
            ("/%C5%BFecret", "secret", "/secret"),            // ſ, long s
            ("/%E2%84%AAey", "key", "/key"),                  // K, Kelvin sign
            // Compared after decoding, as the upstream decodes.
            ("/a%21b/x", "bang", "/a!b/x"),
            ("/%C3%9Cber/x", "umlaut", "/%C3%BCber/x"),
            // Not a boundary, or not the same letters.
            ("/adminx", "open", "/adminx"),
            ("/adm%C3%AFn", "open", "/adm%C3%AFn"),
            ("/%C3%9F", "open", "/%C3%9F"),
        ];
        for (path, route, forwarded) in cases {
            let (name, fwd) = look(&t, path).unwrap();
            assert_eq!(
                (name.as_str(), fwd.as_ref()),
                (*route, *forwarded),
                "{path}"
            );
        }
        // Unchanged paths are not copied.
        assert!(matches!(look(&t, "/admin/x").unwrap().1, Cow::Borrowed(_)));
        assert!(matches!(look(&t, "/ADMINX").unwrap().1, Cow::Borrowed(_)));
    }

    #[test]
    fn case_sensitive_routes_compare_exactly() {
        let t = RouteTable::new(vec![
            entry("open", &[], "/"),
            strict("strict", "/Strict"),
            strict("lower", "/strict"),
        ])
        .unwrap();
        assert_eq!(look(&t, "/Strict/x").unwrap().0, "strict");
        assert_eq!(look(&t, "/strict/x").unwrap().0, "lower");
        assert_eq!(
            look(&t, "/STRICT/x").unwrap(),
            ("open".into(), "/STRICT/x".into())
        );
        // Decoding still applies: `%53` is `S`, already decoded by normalize_path.
        let p = normalize_path("/%53trict").unwrap();
        assert_eq!(look(&t, &p).unwrap().0, "strict");
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
    fn prefixes_that_differ_in_case_overlap_unless_both_are_strict() {
        let pairs = |a: RouteEntry<String>, b: RouteEntry<String>| RouteTable::new(vec![a, b]);
        assert!(pairs(entry("a", &[], "/admin"), entry("b", &[], "/ADMIN")).is_err());
        assert!(pairs(entry("a", &[], "/admin"), strict("b", "/Admin")).is_err());
        assert!(pairs(strict("a", "/admin"), entry("b", &[], "/Admin")).is_err());
        assert!(pairs(strict("a", "/admin"), strict("b", "/admin")).is_err());
        assert!(pairs(strict("a", "/admin"), strict("b", "/Admin")).is_ok());
        // The same characters spelled differently are the same prefix.
        assert!(pairs(strict("a", "/a!b"), strict("b", "/a%21b")).is_err());
        assert!(pairs(entry("a", &[], "/adm%C4%B1n"), entry("b", &[], "/admin")).is_err());
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
            ("/public/..;/admin", PathError::Parameter),
            ("/public/..;x=1/admin", PathError::Parameter),
            ("/public%2f..%2fadmin", PathError::EncodedSlash),
            ("/public%2F..%2Fadmin", PathError::EncodedSlash),
            ("/public%5c..%5cadmin", PathError::EncodedSlash),
            ("/public\\..\\admin", PathError::Backslash),
            ("//admin", PathError::EmptySegment),
            ("/api//x", PathError::EmptySegment),
            ("/api%", PathError::BadPercentEncoding),
            ("/api%4", PathError::BadPercentEncoding),
            ("/api%zz", PathError::BadPercentEncoding),
            ("/%u0061dmin", PathError::BadPercentEncoding),
            ("/api%00", PathError::ControlChar),
            ("/api\t", PathError::ControlChar),
            // Path parameters, which Tomcat strips from every segment.
            ("/;x/admin/secret", PathError::Parameter),
            ("/admin;x/secret", PathError::Parameter),
            ("/admin/secret;jsessionid=1", PathError::Parameter),
            ("/admin%3bx/secret", PathError::Parameter),
            ("/admin%3Bx/secret", PathError::Parameter),
            // Double encoding: `%2561` is `%61` once decoded, `a` twice.
            ("/%2561dmin", PathError::EncodedPercent),
            ("/admin%252fx", PathError::EncodedPercent),
            // Escapes that are no UTF-8: Latin-1, an overlong `.`, a surrogate.
            ("/%E4", PathError::BadUtf8),
            ("/x/%C0%AE%C0%AE/admin", PathError::BadUtf8),
            ("/%ED%A0%80", PathError::BadUtf8),
            ("/%C3", PathError::BadUtf8),
            ("/%C3x", PathError::BadUtf8),
            // What Windows servers drop from a segment's end.
            ("/admin./secret", PathError::TrailingDotOrSpace),
            ("/admin%2E/secret", PathError::TrailingDotOrSpace),
            ("/admin%20/secret", PathError::TrailingDotOrSpace),
            ("/admin/secret.", PathError::TrailingDotOrSpace),
            ("/...", PathError::TrailingDotOrSpace),
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
        assert_eq!(normalize_path("/a..b/.x/x.y").unwrap(), "/a..b/.x/x.y");
        assert_eq!(normalize_path("/.well-known/x").unwrap(), "/.well-known/x");
        // Raw non-ASCII is percent-encoded: the result is ASCII.
        assert_eq!(normalize_path("/über").unwrap(), "/%C3%BCber");
        // The decoded path routes where the upstream would resolve it.
        let t =
            RouteTable::new(vec![entry("open", &[], "/"), entry("admin", &[], "/admin")]).unwrap();
        let p = normalize_path("/%61dmin/users").unwrap();
        assert_eq!(t.find(None, &p).map(String::as_str), Some("admin"));
        let p = normalize_path("/%41DMIN/users").unwrap();
        assert_eq!(
            look(&t, &p).unwrap(),
            ("admin".into(), "/admin/users".into())
        );
    }

    #[test]
    fn forwarded_path_is_judged_like_the_request() {
        use proptest::prelude::*;
        let t = RouteTable::new(vec![
            entry("open", &[], "/"),
            entry("admin", &[], "/admin"),
            entry("public", &[], "/admin/public"),
            strict("strict", "/Strict"),
        ])
        .unwrap();
        let piece = prop_oneof![
            Just("/".to_string()),
            Just("admin".to_string()),
            Just("ADMIN".to_string()),
            Just("public".to_string()),
            Just("Strict".to_string()),
            Just("%C4%B1".to_string()),
            Just("%25".to_string()),
            Just("%2e".to_string()),
            Just(";".to_string()),
            Just(".".to_string()),
            "[a-zA-Z%0-9ı. ]{0,3}",
        ];
        proptest!(|(pieces in proptest::collection::vec(piece, 0..8))| {
            let raw = format!("/{}", pieces.concat());
            if let Ok(p) = normalize_path(&raw) {
                prop_assert!(p.is_ascii(), "{}", p);
                prop_assert_eq!(normalize_path(&p).unwrap(), p.clone());
                let m = t.lookup(None, &p).unwrap();
                // What is forwarded is normal and routes to the same route, unchanged.
                prop_assert_eq!(normalize_path(&m.path).unwrap(), m.path.clone());
                let again = t.lookup(None, &m.path).unwrap();
                prop_assert_eq!(again.name, m.name);
                prop_assert_eq!(again.path.as_ref(), m.path.as_ref());
            }
        });
    }

    #[test]
    fn authorities() {
        for ok in [
            "a.test",
            "A.Test:8443",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "svc_name.local.",
        ] {
            assert_eq!(check_authority(ok), Ok(()), "{ok}");
        }
        let cases: &[(&str, HostError)] = &[
            ("", HostError::Empty),
            (":443", HostError::Empty),
            ("a.test@evil.test", HostError::Userinfo),
            ("user:pw@a.test", HostError::Userinfo),
            ("a.test, evil.test", HostError::BadChar(',')),
            ("a.test/x", HostError::BadChar('/')),
            ("a%2etest", HostError::BadChar('%')),
            ("a test", HostError::BadChar(' ')),
            ("a.test:", HostError::BadPort),
            ("a.test:x", HostError::BadPort),
            ("a.test:443:1", HostError::BadPort),
            ("a.test:123456", HostError::BadPort),
            ("[::1", HostError::BadIpLiteral),
            ("[not-ip]", HostError::BadIpLiteral),
            ("[::1]x", HostError::BadIpLiteral),
        ];
        for (v, want) in cases {
            assert_eq!(check_authority(v).as_ref(), Err(want), "{v}");
        }
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
        assert!(ok(&[], "/%C3%BCber").is_ok());
        for (hosts, prefix) in [
            (&["api.example.com:443"][..], "/"),
            (&["a.*.com"][..], "/"),
            (&["*."][..], "/"),
            (&["bad host"][..], "/"),
            (&[][..], "api"),
            (&[][..], "/a/../b"),
            (&[][..], "/%61pi"),
            (&[][..], "//x"),
            (&[][..], "/api;v=1"),
            (&[][..], "/über"),
        ] {
            let e = ok(hosts, prefix).unwrap_err().to_string();
            assert!(e.contains("route `r`"), "{e}");
        }
    }
}
