//! Headers on the way upstream: hop-by-hop removal, identity headers, forwarding
//! headers.
//!
//! The gateway applies them in this order: [`strip_hop_by_hop`] (or
//! [`strip_hop_by_hop_with`]), [`strip_spoofable`], then adds [`identity_headers`],
//! then [`forwarded_headers`]. Stripping first means no client-sent
//! `X-Intraport-*` header survives (nor one that an upstream reads as such:
//! `X_Intraport_Roles`), and a `Connection` header cannot name (and so remove) the
//! headers the gateway adds afterwards.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{CONNECTION, FORWARDED, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};
use intraport_token::{Identity, IdentityKind};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::cert::CertIdentity;

/// Options for [`strip_hop_by_hop_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopByHop {
    /// Keep `Upgrade` and send `Connection: upgrade` when the request asked for an
    /// upgrade (WebSocket over HTTP/1.1). Everything else `Connection` listed is
    /// still removed.
    pub keep_upgrade: bool,
    /// Keep `TE: trailers` (and nothing else of `TE`). HTTP/2 allows `TE` only with
    /// the value `trailers`, which gRPC requires; set this when the upstream request
    /// is HTTP/2 and the client sent it.
    pub keep_te_trailers: bool,
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1): `Connection` and every
/// header it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`. Same as [`strip_hop_by_hop_with`] with default
/// options.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_hop_by_hop_with(headers, HopByHop::default());
}

/// Removes hop-by-hop headers, keeping an upgrade or `TE: trailers` as `opts` says.
pub fn strip_hop_by_hop_with(headers: &mut HeaderMap, opts: HopByHop) {
    let mut upgrade_requested = false;
    let mut listed: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(CONNECTION) {
        // A value that is not visible ASCII names nothing we could remove.
        let Ok(s) = value.to_str() else { continue };
        for token in s.split(',') {
            let token = token.trim();
            if token.eq_ignore_ascii_case("upgrade") {
                upgrade_requested = true;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                listed.push(name);
            }
        }
    }
    let te_trailers = opts.keep_te_trailers
        && headers.get_all(TE).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',').any(|t| {
                    t.split(';')
                        .next()
                        .is_some_and(|n| n.trim().eq_ignore_ascii_case("trailers"))
                })
            })
        });
    let keep_upgrade = opts.keep_upgrade && upgrade_requested && headers.contains_key(UPGRADE);
    for name in &listed {
        if keep_upgrade && name == UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    for name in [CONNECTION, TE, TRAILER, TRANSFER_ENCODING] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// The prefix of every header this gateway adds.
pub const INTRAPORT_PREFIX: &str = "x-intraport-";

/// Removes what a client could use to speak for the gateway or to point the upstream
/// at another resource than the one policy judged:
///
/// - every `X-Intraport-*` header;
/// - `X-Original-URL` and `X-Rewrite-URL`, which IIS URL Rewrite, Symfony and others
///   serve instead of the request path (from everyone: the gateway judged the path
///   in the request line, and forwards only that);
/// - from a peer that is not a trusted proxy, the client-address and forwarding
///   claims: `X-Real-IP`, `X-Client-IP`, `True-Client-IP`, `X-Cluster-Client-IP`,
///   `Forwarded` and every `X-Forwarded-*` ([`forwarded_headers`] then sets its
///   own);
/// - from anyone, a header whose name is one of those (or the gateway's
///   `X-Request-Id`) once every character other than a letter or digit is read as
///   `-`: CGI-style servers (wsgiref, PHP, Apache's CGI environment) turn `-` into
///   `_`, so `X_Intraport_Roles` and `X-Intraport-Roles` land in one variable
///   (`HTTP_X_INTRAPORT_ROLES`), and a proxy sends such names only to spoof.
pub fn strip_spoofable(headers: &mut HeaderMap, from_trusted_proxy: bool) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| spoofable(n.as_str(), from_trusted_proxy))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// Whether [`strip_spoofable`] removes a header of this (lower-case) name.
fn spoofable(name: &str, from_trusted_proxy: bool) -> bool {
    let dashed: Cow<'_, str> = if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(
            name.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect(),
        )
    };
    let d = dashed.as_ref();
    let rewrites = matches!(d, "x-original-url" | "x-rewrite-url");
    let client = d.starts_with("x-forwarded-")
        || matches!(
            d,
            "forwarded" | "x-real-ip" | "x-client-ip" | "true-client-ip" | "x-cluster-client-ip"
        );
    let disguised = matches!(dashed, Cow::Owned(_));
    d.starts_with(INTRAPORT_PREFIX)
        || rewrites
        || (client && (disguised || !from_trusted_proxy))
        || (disguised && d == "x-request-id")
}

/// `X-Intraport-Oid`: the object id of the user or service principal.
pub const OID: HeaderName = HeaderName::from_static("x-intraport-oid");
/// `X-Intraport-Tid`: the tenant.
pub const TID: HeaderName = HeaderName::from_static("x-intraport-tid");
/// `X-Intraport-Name`: the display name.
pub const NAME: HeaderName = HeaderName::from_static("x-intraport-name");
/// `X-Intraport-Upn`: the user name (`preferred_username`, `upn`, `unique_name`).
pub const UPN: HeaderName = HeaderName::from_static("x-intraport-upn");
/// `X-Intraport-Roles`: app roles, comma-separated.
pub const ROLES: HeaderName = HeaderName::from_static("x-intraport-roles");
/// `X-Intraport-Scopes`: delegated scopes, space-separated.
pub const SCOPES: HeaderName = HeaderName::from_static("x-intraport-scopes");
/// `X-Intraport-App-Id`: the client application.
pub const APP_ID: HeaderName = HeaderName::from_static("x-intraport-app-id");
/// `X-Intraport-Identity-Type`: `app` or `user`.
pub const IDENTITY_TYPE: HeaderName = HeaderName::from_static("x-intraport-identity-type");
/// `X-Intraport-Token-Version`: `1.0` or `2.0`.
pub const TOKEN_VERSION: HeaderName = HeaderName::from_static("x-intraport-token-version");
/// `X-Intraport-Client-Cert-Subject`: the RFC 4514 subject.
pub const CLIENT_CERT_SUBJECT: HeaderName =
    HeaderName::from_static("x-intraport-client-cert-subject");
/// `X-Intraport-Client-Cert-San`: the SANs (`dns:...`), comma-separated.
pub const CLIENT_CERT_SAN: HeaderName = HeaderName::from_static("x-intraport-client-cert-san");

/// Bytes escaped in every identity header value: controls, `%` (so that decoding is
/// unambiguous) and, by `utf8_percent_encode`, every non-ASCII byte.
const VALUE: &AsciiSet = &CONTROLS.add(b'%');
/// In list elements, also the separators.
const ELEMENT: &AsciiSet = &VALUE.add(b',').add(b' ');

/// Encodes a value with the given set. The output is printable ASCII, which is always
/// a valid header value.
fn encode(s: &str, set: &'static AsciiSet) -> HeaderValue {
    printable(utf8_percent_encode(s, set).to_string())
}

/// List elements encoded one by one (so separators inside them are escaped), joined.
fn encode_list(items: &[String], sep: &str) -> HeaderValue {
    let joined = items
        .iter()
        .map(|i| utf8_percent_encode(i, ELEMENT).to_string())
        .collect::<Vec<_>>()
        .join(sep);
    printable(joined)
}

/// A percent-encoded string as a header value. Cannot fail, since percent-encoding
/// leaves only printable ASCII; should it ever, the header carries an explicit marker
/// rather than being dropped silently.
fn printable(encoded: String) -> HeaderValue {
    HeaderValue::try_from(encoded).unwrap_or(HeaderValue::from_static("%3Finvalid"))
}

/// The identity headers for the upstream. Values are UTF-8, percent-encoded for
/// bytes outside printable ASCII and for `%` (and, inside list elements, for `,` and
/// space), so that any value reaches the upstream and decodes back exactly. Absent
/// claims and empty lists produce no header.
pub fn identity_headers(
    token: Option<&Identity>,
    cert: Option<&CertIdentity>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(t) = token {
        let fields = [
            (OID, t.object_id.as_deref()),
            (TID, t.tenant_id.as_deref()),
            (NAME, t.name.as_deref()),
            (UPN, t.username.as_deref()),
            (APP_ID, t.app_id.as_deref()),
            (TOKEN_VERSION, t.version.as_deref()),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                out.push((name, encode(v, VALUE)));
            }
        }
        if !t.roles.is_empty() {
            out.push((ROLES, encode_list(&t.roles, ",")));
        }
        if !t.scopes.is_empty() {
            out.push((SCOPES, encode_list(&t.scopes, " ")));
        }
        let kind = match t.kind {
            IdentityKind::App => "app",
            IdentityKind::User => "user",
        };
        out.push((IDENTITY_TYPE, HeaderValue::from_static(kind)));
    }
    if let Some(c) = cert {
        out.push((CLIENT_CERT_SUBJECT, encode(&c.subject, VALUE)));
        if !c.sans.is_empty() {
            out.push((CLIENT_CERT_SAN, encode_list(&c.sans, ",")));
        }
    }
    out
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sets the forwarding headers.
///
/// `peer` is the **socket peer** address this gateway received the request from. From
/// an untrusted peer it is the client, and `X-Forwarded-For` becomes exactly it, while
/// incoming `Forwarded`, `X-Forwarded-Proto` and `X-Forwarded-Host` are replaced or
/// removed (a client's claims about them are not passed on). From a trusted proxy
/// (`from_trusted_proxy`), the proxy's chain is kept and the peer appended, as proxies
/// do (`X-Forwarded-For: client, proxy1, peer`), a `Forwarded` header gets an element
/// for the peer, and the proxy's `X-Forwarded-Proto` / `-Host`, which describe the
/// original request, are kept when present.
///
/// `proto` is the scheme this gateway received (`http` / `https`), `host` the request's
/// host (`Host` or `:authority`).
pub fn forwarded_headers(
    headers: &mut HeaderMap,
    peer: IpAddr,
    proto: &str,
    host: Option<&str>,
    from_trusted_proxy: bool,
) {
    let peer = peer.to_canonical();
    let peer_text = peer.to_string();
    if from_trusted_proxy {
        // The proxy's lines are kept byte for byte (they were valid header values,
        // so their concatenation is one too) and folded into one line.
        let mut joined: Vec<u8> = Vec::new();
        for v in headers.get_all(&X_FORWARDED_FOR) {
            let line = v.as_bytes().trim_ascii();
            if !line.is_empty() {
                joined.extend_from_slice(line);
                joined.extend_from_slice(b", ");
            }
        }
        joined.extend_from_slice(peer_text.as_bytes());
        let value = HeaderValue::from_bytes(&joined)
            .unwrap_or_else(|_| encode(&String::from_utf8_lossy(&joined), VALUE));
        headers.insert(X_FORWARDED_FOR, value);
        if headers.contains_key(FORWARDED) {
            let node = match peer {
                IpAddr::V4(_) => peer_text.clone(),
                IpAddr::V6(_) => format!("\"[{peer_text}]\""),
            };
            let mut element = format!("for={node};proto={}", forwarded_token(proto));
            if let Some(h) = host {
                element.push_str(&format!(";host=\"{}\"", forwarded_quoted(h)));
            }
            headers.append(FORWARDED, encode(&element, VALUE));
        }
    } else {
        headers.insert(X_FORWARDED_FOR, encode(&peer_text, VALUE));
        headers.remove(FORWARDED);
    }
    if !(from_trusted_proxy && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, encode(proto, VALUE));
    }
    if !(from_trusted_proxy && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, encode(h, VALUE));
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

/// A token for `proto=`: the scheme if it is a plain scheme, else quoted.
fn forwarded_token(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        s.to_string()
    } else {
        format!("\"{}\"", forwarded_quoted(s))
    }
}

fn forwarded_quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::policy::tests::identity;
    use percent_encoding::percent_decode_str;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }
    fn get<'a>(h: &'a HeaderMap, n: &str) -> Vec<&'a str> {
        h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect()
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "x-other-hop, bad header name"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers, deflate"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret-hop", "1"),
            ("x-other-hop", "2"),
            ("x-end-to-end", "kept"),
            ("authorization", "Bearer x"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["authorization", "x-end-to-end"]);
    }

    #[test]
    fn keep_upgrade_for_websocket() {
        let base = [
            ("connection", "Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("sec-websocket-key", "k"),
        ];
        let mut h = map(&base);
        strip_hop_by_hop_with(
            &mut h,
            HopByHop {
                keep_upgrade: true,
                ..Default::default()
            },
        );
        assert_eq!(get(&h, "connection"), vec!["upgrade"]);
        assert_eq!(get(&h, "upgrade"), vec!["websocket"]);
        assert!(!h.contains_key("x-hop"));
        assert!(h.contains_key("sec-websocket-key"));
        // Without the option the upgrade is removed.
        let mut h = map(&base);
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("upgrade") && !h.contains_key("connection"));
        // Upgrade without `Connection: upgrade` is not an upgrade request.
        let mut h = map(&[("upgrade", "websocket")]);
        strip_hop_by_hop_with(
            &mut h,
            HopByHop {
                keep_upgrade: true,
                ..Default::default()
            },
        );
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn keep_te_trailers_only() {
        let mut h = map(&[("te", "gzip, trailers;q=1")]);
        strip_hop_by_hop_with(
            &mut h,
            HopByHop {
                keep_te_trailers: true,
                ..Default::default()
            },
        );
        assert_eq!(get(&h, "te"), vec!["trailers"]);
        let mut h = map(&[("te", "gzip")]);
        strip_hop_by_hop_with(
            &mut h,
            HopByHop {
                keep_te_trailers: true,
                ..Default::default()
            },
        );
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn spoofed_intraport_headers_are_removed() {
        let mut h = map(&[
            ("x-intraport-oid", "attacker"),
            ("X-Intraport-Roles", "Admin"),
            ("x-intraport-anything-new", "x"),
            ("x-intraportal", "not ours"),
            ("accept", "*/*"),
        ]);
        strip_spoofable(&mut h, true);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["accept", "x-intraportal"]);
    }

    fn kept(pairs: &[(&str, &str)], from_trusted_proxy: bool) -> Vec<String> {
        let mut h = map(pairs);
        strip_spoofable(&mut h, from_trusted_proxy);
        let mut names: Vec<String> = h.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn headers_read_as_identity_or_forwarding_once_separators_are_dashes_are_removed() {
        let disguised = [
            ("X_Intraport_Roles", "Writer"),
            ("x_intraport-oid", "attacker"),
            ("x.intraport.upn", "admin@victim.test"),
            ("X_Forwarded_For", "10.0.0.1"),
            ("x_forwarded_host", "evil.test"),
            ("X_Real_IP", "10.0.0.1"),
            ("true_client_ip", "10.0.0.1"),
            ("X_Original_URL", "/admin"),
            ("x_request_id", "forged"),
            // Underscores elsewhere are nobody's business.
            ("x_api_version", "2"),
            ("x-custom_thing", "1"),
        ];
        for trusted in [false, true] {
            assert_eq!(
                kept(&disguised, trusted),
                vec!["x-custom_thing", "x_api_version"],
                "trusted proxy: {trusted}"
            );
        }
    }

    #[test]
    fn rewrite_headers_go_and_client_claims_stay_only_from_trusted_proxies() {
        let claims = [
            ("x-real-ip", "10.0.0.1"),
            ("x-client-ip", "10.0.0.1"),
            ("true-client-ip", "10.0.0.1"),
            ("x-cluster-client-ip", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("forwarded", "for=10.0.0.1"),
            ("x-original-url", "/admin/secret"),
            ("x-rewrite-url", "/admin/secret"),
            ("x-request-id", "from-the-proxy"),
        ];
        assert_eq!(kept(&claims, false), vec!["x-request-id"]);
        let from_proxy = kept(&claims, true);
        assert!(
            !from_proxy.iter().any(|n| n.contains("url")),
            "{from_proxy:?}"
        );
        assert_eq!(from_proxy.len(), claims.len() - 2, "{from_proxy:?}");
    }

    #[test]
    fn connection_cannot_remove_headers_added_later() {
        let mut h = map(&[("connection", "x-intraport-oid, x-forwarded-for")]);
        strip_hop_by_hop(&mut h);
        strip_spoofable(&mut h, false);
        for (n, v) in identity_headers(Some(&identity()), None) {
            h.insert(n, v);
        }
        forwarded_headers(
            &mut h,
            "198.51.100.1".parse().unwrap(),
            "https",
            Some("a.test"),
            false,
        );
        assert!(h.contains_key("x-intraport-oid"));
        assert_eq!(get(&h, "x-forwarded-for"), vec!["198.51.100.1"]);
    }

    #[test]
    fn identity_headers_encode_and_never_drop() {
        let mut t = identity();
        t.roles = vec!["Reader".into(), "Odd,Role".into()];
        t.tenant_id = Some("tenant\r\nx-injected: 1".into());
        let mut h = HeaderMap::new();
        for (n, v) in identity_headers(Some(&t), None) {
            h.append(n, v);
        }
        assert_eq!(get(&h, "x-intraport-name"), vec!["J%C3%BCrgen M%C3%BCller"]);
        assert_eq!(
            percent_decode_str(get(&h, "x-intraport-name")[0])
                .decode_utf8()
                .unwrap(),
            "Jürgen Müller"
        );
        assert_eq!(get(&h, "x-intraport-upn"), vec!["j%C3%BCrgen@example.com"]);
        assert_eq!(
            get(&h, "x-intraport-tid"),
            vec!["tenant%0D%0Ax-injected: 1"]
        );
        assert_eq!(get(&h, "x-intraport-roles"), vec!["Reader,Odd%2CRole"]);
        assert_eq!(get(&h, "x-intraport-scopes"), vec!["Files.Read User.Read"]);
        assert_eq!(get(&h, "x-intraport-identity-type"), vec!["user"]);
        assert_eq!(get(&h, "x-intraport-token-version"), vec!["2.0"]);
        assert_eq!(
            get(&h, "x-intraport-oid"),
            vec!["11111111-2222-3333-4444-555555555555"]
        );
        assert_eq!(
            get(&h, "x-intraport-app-id"),
            vec!["BBBBBBBB-0000-0000-0000-000000000002"]
        );
        assert!(!h.contains_key("x-intraport-client-cert-subject"));
        // Absent claims produce no header; an app token says app.
        t.name = None;
        t.roles.clear();
        t.kind = IdentityKind::App;
        let hs = identity_headers(Some(&t), None);
        assert!(hs.iter().all(|(n, _)| n != NAME && n != ROLES));
        assert!(hs.iter().any(|(n, v)| n == IDENTITY_TYPE && v == "app"));
        assert!(identity_headers(None, None).is_empty());
    }

    #[test]
    fn cert_headers() {
        let c = CertIdentity {
            subject: r"CN=Jürgen,O=Example\, Inc.".into(),
            sans: vec!["dns:a.test".into(), "uri:urn:x,y".into()],
        };
        let hs = identity_headers(None, Some(&c));
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[0].0, CLIENT_CERT_SUBJECT);
        assert_eq!(hs[0].1, r"CN=J%C3%BCrgen,O=Example\, Inc.");
        assert_eq!(hs[1].0, CLIENT_CERT_SAN);
        assert_eq!(hs[1].1, "dns:a.test,uri:urn:x%2Cy");
    }

    #[test]
    fn any_string_becomes_a_valid_decodable_header() {
        use proptest::prelude::*;
        proptest!(|(s in any::<String>())| {
            let v = encode(&s, VALUE);
            prop_assert_eq!(percent_decode_str(v.to_str().unwrap()).decode_utf8().unwrap(), s.as_str());
        });
    }

    #[test]
    fn forwarded_from_untrusted_client_replaces() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.test"),
        ]);
        forwarded_headers(
            &mut h,
            "::ffff:198.51.100.1".parse().unwrap(),
            "https",
            None,
            false,
        );
        assert_eq!(get(&h, "x-forwarded-for"), vec!["198.51.100.1"]);
        assert!(!h.contains_key("forwarded"));
        assert_eq!(get(&h, "x-forwarded-proto"), vec!["https"]);
        assert!(!h.contains_key("x-forwarded-host"));
        let mut h = HeaderMap::new();
        forwarded_headers(
            &mut h,
            "2001:db8::1".parse().unwrap(),
            "http",
            Some("a.test:8080"),
            false,
        );
        assert_eq!(get(&h, "x-forwarded-for"), vec!["2001:db8::1"]);
        assert_eq!(get(&h, "x-forwarded-host"), vec!["a.test:8080"]);
    }

    #[test]
    fn forwarded_from_trusted_proxy_appends() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.5"),
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=203.0.113.5;proto=https"),
            ("x-forwarded-proto", "https"),
        ]);
        forwarded_headers(
            &mut h,
            "fd00::2".parse().unwrap(),
            "http",
            Some("a.test"),
            true,
        );
        assert_eq!(
            get(&h, "x-forwarded-for"),
            vec!["203.0.113.5, 10.0.0.1, fd00::2"]
        );
        assert_eq!(
            get(&h, "forwarded"),
            vec![
                "for=203.0.113.5;proto=https",
                r#"for="[fd00::2]";proto=http;host="a.test""#
            ]
        );
        assert_eq!(get(&h, "x-forwarded-proto"), vec!["https"]);
        assert_eq!(get(&h, "x-forwarded-host"), vec!["a.test"]);
        // The appended element parses back with the client_ip reader.
        let trusted = crate::CidrSet::parse(&["fd00::/8"], "t").unwrap();
        let c = crate::client_ip("fd00::3".parse().unwrap(), &h, &trusted);
        assert_eq!(c.ip, "203.0.113.5".parse::<IpAddr>().unwrap());
        // Lines that are not text are kept as they are, not dropped.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"203.0.113.5\xff ").unwrap(),
        );
        forwarded_headers(&mut h, "10.0.0.9".parse().unwrap(), "https", None, true);
        assert_eq!(
            h["x-forwarded-for"].as_bytes(),
            b"203.0.113.5\xff, 10.0.0.9"
        );
        // A trusted proxy that sent no chain gets one.
        let mut h = HeaderMap::new();
        forwarded_headers(&mut h, "10.0.0.9".parse().unwrap(), "https", None, true);
        assert_eq!(get(&h, "x-forwarded-for"), vec!["10.0.0.9"]);
        assert!(!h.contains_key("forwarded"));
    }
}
