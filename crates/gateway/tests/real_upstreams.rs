//! Authorization against the real servers behind the gateway: every way a request
//! could reach a resource its route's policy refuses, shown first to work on the
//! real server itself (Tomcat strips path parameters, Express ignores case, wsgiref
//! merges `X_Intraport_Roles` into `X-Intraport-Roles`, ...) and then refused or
//! normalised by the gateway. The servers run on 127.0.0.1: Tomcat (Debian
//! `tomcat10`), Express (npm) and Python's wsgiref.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use intraport_gateway::{Gateway, GatewayHandle};
use serde_json::{Value, json};
use support::mint::{self, Minter};
use support::pki::Pki;
use support::real;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer read off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    body: String,
}

impl Resp {
    /// The `error` of a refusal's JSON body.
    fn error(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// Sends `request` as it is written and reads the answer until the server closes
/// (requests say `Connection: close`).
async fn raw(addr: SocketAddr, request: &str) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("answer within 20 s")
        .ok();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `GET path` for `host`, with extra header lines.
async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(addr, "GET", host, path, headers).await
}

async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw(addr, &req).await
}

/// A gateway with a plain-HTTP listener `plain` (clients are untrusted) and, when a
/// route names it, `proxied` (127.0.0.1 is a trusted proxy), the given routes, and a
/// provider trusting `minter`'s tokens.
struct Gw {
    _pki: Pki,
    minter: Minter,
    _gw: Arc<GatewayHandle>,
    plain: SocketAddr,
    proxied: SocketAddr,
}

impl Gw {
    async fn start(routes: &str) -> Gw {
        let pki = Pki::new();
        let minter = Minter::new(&pki.dir);
        let text = format!(
            r#"
[admin]
listen = "127.0.0.1:0"

[[provider]]
name = "local"
issuer = "{iss}"
jwks = "{jwks}"
audiences = ["{aud}"]

[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocol = "http"

{proxied}
{routes}"#,
            proxied = if routes.contains("listener = \"proxied\"") {
                "[[listener]]\nname = \"proxied\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
            } else {
                ""
            },
            iss = mint::ISSUER,
            jwks = minter.jwks_path.display(),
            aud = mint::AUDIENCE,
        );
        let config = support::parse_config(&text, &pki.dir);
        let gw = Gateway::start(config).await.unwrap();
        let plain = gw.listener_addr("plain").await.unwrap();
        let proxied = gw.listener_addr("proxied").await.unwrap_or(plain);
        Gw {
            _pki: pki,
            minter,
            _gw: gw,
            plain,
            proxied,
        }
    }

    /// `Authorization` for a token with these app roles.
    fn bearer(&self, roles: &[&str]) -> String {
        format!("Bearer {}", self.minter.with(json!({ "roles": roles })))
    }
}

/// A route on `listener` for `host`: `policy` is "reader", "writer" or "none".
fn route(listener: &str, host: &str, prefix: &str, upstream: SocketAddr, policy: &str) -> String {
    route_with(listener, host, prefix, upstream, policy, "")
}

fn route_with(
    listener: &str,
    host: &str,
    prefix: &str,
    upstream: SocketAddr,
    policy: &str,
    extra: &str,
) -> String {
    let name = format!("{listener}-{host}{}", prefix.replace('/', "-"));
    let identity = match policy {
        "reader" => "identity = \"token\"\nprovider = \"local\"\n",
        "writer" => "identity = \"token\"\nprovider = \"local\"\n",
        _ => "identity = \"none\"\n",
    };
    let require = match policy {
        "reader" => "[route.require]\nroles_any = [\"Reader\", \"Writer\"]\n",
        "writer" => "[route.require]\nroles_any = [\"Writer\"]\n",
        _ => "",
    };
    format!(
        "\n[[route]]\nname = \"{name}\"\nlistener = \"{listener}\"\nhosts = [\"{host}\"]\npath_prefix = \"{prefix}\"\nupstream = \"http://{upstream}\"\n{extra}\n{identity}[route.source]\nallow = [\"127.0.0.0/8\"]\n{require}"
    )
}

/// Tomcat: path parameters (`;`) are cut off every segment before the servlet
/// mapping, so `/;x/admin/secret` is `/admin/secret`; and Tomcat is case-sensitive,
/// so a case-insensitive match must forward the spelling it judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tomcat_path_parameters_and_case() {
    let dir = Pki::new();
    let tomcat = real::tomcat(
        &dir.dir,
        &[
            ("admin/secret", "tomcat: the admin secret"),
            ("public/index.txt", "tomcat: public"),
            ("PUBLIC/secret", "tomcat: the upper-case secret"),
        ],
    );
    let t = tomcat.addr;
    let log = || std::fs::read_to_string(tomcat.log.as_ref().unwrap()).unwrap_or_default();
    // Tomcat itself: what each spelling reaches.
    let direct = |p: &'static str| async move { get(t, "localhost", p, &[]).await };
    for p in [
        "/admin/secret",
        "/;x/admin/secret",
        "/admin;x/secret",
        "/admin/secret;jsessionid=1",
        "/x/..;/admin/secret",
    ] {
        let r = direct(p).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "tomcat: the admin secret"),
            "Tomcat serves {p} as /admin/secret\n{}",
            log()
        );
    }
    assert_eq!(direct("/ADMIN/secret").await.status, 404);
    assert_eq!(
        direct("/PUBLIC/secret").await.body,
        "tomcat: the upper-case secret"
    );

    let mut routes = route("plain", "tomcat.test", "/", t, "reader");
    routes += &route("plain", "tomcat.test", "/admin", t, "writer");
    // An open part inside a protected site: the default (ignore case) and a route
    // that says its upstream is case-sensitive.
    routes += &route("plain", "open.test", "/", t, "writer");
    routes += &route("plain", "open.test", "/public", t, "none");
    routes += &route("plain", "strict.test", "/", t, "writer");
    routes += &route_with(
        "plain",
        "strict.test",
        "/public",
        t,
        "none",
        "case_sensitive = true",
    );
    let gw = Gw::start(&routes).await;
    let reader = gw.bearer(&["Reader"]);
    let writer = gw.bearer(&["Writer"]);
    let auth = |b: &str| vec![("Authorization", b.to_string())];
    let as_ = |who: &str| {
        let a = auth(who);
        move |p: &'static str| {
            let a = a.clone();
            let addr = gw.plain;
            async move {
                let h: Vec<(&str, &str)> = a.iter().map(|(k, v)| (*k, v.as_str())).collect();
                get(addr, "tomcat.test", p, &h).await
            }
        }
    };
    let as_reader = as_(&reader);
    let as_writer = as_(&writer);

    // The route works: the Writer gets the secret, the Reader does not.
    let r = as_writer("/admin/secret").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "tomcat: the admin secret")
    );
    let r = as_reader("/admin/secret").await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (403, "role_missing"),
        "{r:?}"
    );

    // Path parameters anywhere: refused, never forwarded to Tomcat, which would
    // serve the Writer's secret to the Reader.
    for p in [
        "/;x/admin/secret",
        "/admin;x/secret",
        "/admin/secret;jsessionid=1",
        "/x/..;/admin/secret",
        "/%3Bx/admin/secret",
    ] {
        let r = as_reader(p).await;
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, "bad_path"),
            "{p}: {r:?}"
        );
    }
    // Other spellings of /admin meet the Writer's route.
    for p in ["/ADMIN/secret", "/%61dmin/secret", "/Adm%C4%B1n/secret"] {
        let r = as_reader(p).await;
        assert_eq!(
            (r.status, r.error().as_str()),
            (403, "role_missing"),
            "{p}: {r:?}"
        );
    }
    // The open route judged /PUBLIC/secret as public: it reaches Tomcat as
    // /public/secret (no such file), never as Tomcat's other resource /PUBLIC/secret,
    // which lies under the Writer's route.
    let anon =
        |host: &'static str, p: &'static str| async move { get(gw.plain, host, p, &[]).await };
    let r = anon("open.test", "/PUBLIC/secret").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(!r.body.contains("upper-case secret"), "{r:?}");
    let r = anon("open.test", "/Public/index.txt").await;
    assert_eq!((r.status, r.body.as_str()), (200, "tomcat: public"));
    // With case_sensitive, /PUBLIC is not the open route's: the Writer's route asks
    // for a token.
    let r = anon("strict.test", "/PUBLIC/secret").await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "token_required"),
        "{r:?}"
    );
    let r = anon("strict.test", "/public/index.txt").await;
    assert_eq!((r.status, r.body.as_str()), (200, "tomcat: public"));
    let r = as_writer("/ADMIN/secret").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "tomcat: the admin secret"),
        "forwarded as the prefix is spelled"
    );
}

/// Express matches routes ignoring case (its default), so `/ADMIN/secret` is its
/// `/admin/secret`.
#[tokio::test]
async fn express_case_insensitive_routing() {
    let express = real::express();
    let e = express.addr;
    for p in [
        "/admin/secret",
        "/ADMIN/secret",
        "/Admin/Secret",
        "/admin/secret/",
    ] {
        let r = get(e, "localhost", p, &[]).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "express: the admin secret"),
            "Express serves {p} as /admin/secret"
        );
    }
    let mut routes = route("plain", "express.test", "/", e, "reader");
    routes += &route("plain", "express.test", "/admin", e, "writer");
    let gw = Gw::start(&routes).await;
    let reader = gw.bearer(&["Reader"]);
    let writer = gw.bearer(&["Writer"]);
    let send = |who: &str, p: &'static str| {
        let a = who.to_string();
        let addr = gw.plain;
        async move { get(addr, "express.test", p, &[("Authorization", &a)]).await }
    };
    for p in [
        "/ADMIN/secret",
        "/Admin/Secret",
        "/aDmIn/secret/",
        "/%41DMIN/secret",
        "/ADM%C4%B0N/secret",
    ] {
        let r = send(&reader, p).await;
        assert_eq!(
            (r.status, r.error().as_str()),
            (403, "role_missing"),
            "{p}: {r:?}"
        );
    }
    for p in ["/admin/secret", "/ADMIN/secret", "/Admin/Secret"] {
        let r = send(&writer, p).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "express: the admin secret"),
            "{p}"
        );
    }
    // The Reader's own route still works (Express answers 404 with what it saw).
    let r = send(&reader, "/other").await;
    assert_eq!(r.status, 404);
    let seen: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(seen["url"], "/other");
    assert_eq!(seen["headers"]["x-intraport-roles"], "Reader");
}

/// wsgiref, like every CGI-style server, reads `-` and `_` in header names alike:
/// `X_Intraport_Roles` lands in `HTTP_X_INTRAPORT_ROLES` with the gateway's own
/// `X-Intraport-Roles`. And the app trusts `X-Real-IP` and serves
/// `X-Original-URL` / `X-Rewrite-URL` instead of the path, as Symfony and IIS URL
/// Rewrite do.
#[tokio::test]
async fn wsgiref_header_spoofing() {
    let wsgi = real::wsgiref();
    let w = wsgi.addr;
    // The server itself: each header reaches what it guards.
    let direct = |p: &'static str, h: &'static [(&'static str, &'static str)]| async move {
        get(w, "localhost", p, h).await
    };
    let r = direct(
        "/writer/secret",
        &[
            ("X-Intraport-Roles", "Reader"),
            ("X_Intraport_Roles", "Writer"),
        ],
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "wsgi: the writer secret")
    );
    let r = direct("/internal/secret", &[("X-Real-IP", "10.0.0.1")]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "wsgi: the internal secret")
    );
    for h in ["X-Original-URL", "X-Rewrite-URL"] {
        let r = get(w, "localhost", "/x", &[(h, "/admin/secret")]).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "wsgi: the admin secret"),
            "{h}"
        );
    }

    let mut routes = route("plain", "wsgi.test", "/", w, "reader");
    routes += &route("plain", "wsgi.test", "/admin", w, "writer");
    routes += &route("plain", "open.test", "/", w, "none");
    routes += &route("proxied", "wsgi.test", "/", w, "none");
    let gw = Gw::start(&routes).await;
    let reader = gw.bearer(&["Reader"]);
    let send = |p: &'static str, h: Vec<(&'static str, &'static str)>| {
        let a = reader.clone();
        let addr = gw.plain;
        async move {
            let mut h: Vec<(&str, &str)> = h;
            h.push(("Authorization", &a));
            get(addr, "wsgi.test", p, &h).await
        }
    };

    // A Reader poses as Writer through the underscore spelling, or any spelling
    // that a server reads as the identity header.
    for name in [
        "X_Intraport_Roles",
        "x_intraport-roles",
        "X-Intraport_Roles",
    ] {
        let r = send("/writer/secret", vec![(name, "Writer")]).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, "wsgi: Writer role required"),
            "{name}"
        );
    }
    // Without a token the identity headers are not forged either.
    let r = get(
        gw.plain,
        "open.test",
        "/writer/secret",
        &[("X_Intraport_Roles", "Writer")],
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    // What the app saw: only the gateway's values.
    let r = send(
        "/echo",
        vec![
            ("X_Intraport_Oid", "attacker"),
            ("X_Forwarded_For", "10.0.0.1"),
            ("X_Forwarded_Host", "evil.test"),
            ("X_Request_Id", "forged"),
            ("X-Forwarded-Prefix", "/admin"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let env: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(env["HTTP_X_INTRAPORT_ROLES"], "Reader", "{env}");
    assert_eq!(
        env["HTTP_X_INTRAPORT_OID"],
        "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    );
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "127.0.0.1", "{env}");
    assert_eq!(env["HTTP_X_FORWARDED_HOST"], "wsgi.test", "{env}");
    assert!(
        !env["HTTP_X_REQUEST_ID"]
            .as_str()
            .unwrap()
            .contains("forged"),
        "{env}"
    );
    assert!(env.get("HTTP_X_FORWARDED_PREFIX").is_none(), "{env}");

    // X-Real-IP from a client: stripped. From a trusted proxy it is the proxy's word
    // (and only in its own spelling).
    let r = send("/internal/secret", vec![("X-Real-IP", "10.0.0.1")]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "wsgi: internal clients only")
    );
    let r = send("/internal/secret", vec![("X_Real_IP", "10.0.0.1")]).await;
    assert_eq!(r.status, 403);
    let via = |h: (&'static str, &'static str)| async move {
        get(gw.proxied, "wsgi.test", "/internal/secret", &[h]).await
    };
    let r = via(("X-Real-IP", "10.0.0.1")).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "wsgi: the internal secret")
    );
    let r = via(("X_Real_IP", "10.0.0.1")).await;
    assert_eq!(r.status, 403);

    // A path override would serve /admin/secret under the Reader's route: stripped
    // from everyone, trusted proxies included.
    for h in ["X-Original-URL", "X-Rewrite-URL", "X_Original_URL"] {
        let r = send("/x", vec![(h, "/admin/secret")]).await;
        assert_eq!(r.status, 200);
        assert!(!r.body.contains("secret"), "{h}: {r:?}");
        let r = get(gw.proxied, "wsgi.test", "/x", &[(h, "/admin/secret")]).await;
        assert!(!r.body.contains("secret"), "{h} via proxy: {r:?}");
    }
}

/// CONNECT and TRACE reach wsgiref, which answers any method: the gateway refuses
/// them (405) before any route is looked up.
#[tokio::test]
async fn connect_and_trace_are_refused() {
    let wsgi = real::wsgiref();
    let w = wsgi.addr;
    for m in ["TRACE", "CONNECT", "trace"] {
        let r = request(w, m, "localhost", "/echo", &[]).await;
        assert_eq!(r.status, 200, "wsgiref answers {m}");
        let env: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(env["REQUEST_METHOD"], m);
    }
    let mut routes = route("plain", "wsgi.test", "/", w, "none");
    routes += &route("plain", "wsgi.test", "/api", w, "reader");
    let gw = Gw::start(&routes).await;
    let reader = gw.bearer(&["Reader"]);
    for m in ["TRACE", "TRACK", "trace", "CONNECT"] {
        for p in ["/echo", "/api/x"] {
            let r = request(gw.plain, m, "wsgi.test", p, &[("Authorization", &reader)]).await;
            assert_eq!(
                (r.status, r.error().as_str()),
                (405, "method_not_allowed"),
                "{m} {p}: {r:?}"
            );
        }
    }
    // CONNECT in its own form, naming an authority.
    let r = raw(
        gw.plain,
        "CONNECT wsgi.test:80 HTTP/1.1\r\nHost: wsgi.test:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (405, "method_not_allowed"),
        "{r:?}"
    );
    // Other methods pass.
    for m in ["GET", "POST", "DELETE", "OPTIONS"] {
        let r = request(
            gw.plain,
            m,
            "wsgi.test",
            "/echo",
            &[("Content-Length", "0")],
        )
        .await;
        assert_eq!(r.status, 200, "{m}: {r:?}");
    }
}

/// `Host`: one, present, plain `host[:port]`, and the same as the target's
/// authority; a trusted proxy's `X-Forwarded-Host` names hosts only. A malformed
/// chunked body is the client's error (400), not the upstream's (502).
#[tokio::test]
async fn request_heads_and_bodies_that_are_not_well_formed() {
    let echo = support::upstream::http1().await;
    let mut routes = route("plain", "echo.test", "/", echo, "none");
    routes += &route("proxied", "echo.test", "/", echo, "none");
    let gw = Gw::start(&routes).await;
    let g = gw.plain;
    let ok = get(g, "echo.test", "/x", &[]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let bad_host = [
        "GET /x HTTP/1.1\r\nHost: echo.test\r\nHost: other.test\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: echo.test\r\nHost: echo.test\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.0\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: evil.test@echo.test\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: echo.test, evil.test\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: echo.test:x\r\nConnection: close\r\n\r\n",
        // Absolute form: the target's authority is the host, and Host must agree.
        "GET http://echo.test/x HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
        "GET http://evil.test@echo.test/x HTTP/1.1\r\nHost: evil.test@echo.test\r\nConnection: close\r\n\r\n",
    ];
    for req in bad_host {
        let r = raw(g, req).await;
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, "bad_host"),
            "{req:?}: {r:?}"
        );
    }
    let r = raw(
        g,
        "GET http://echo.test/x HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(g, "ECHO.test:8080", "/x", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-host"][0], "ECHO.test:8080");

    // A trusted proxy's X-Forwarded-Host is passed on only when it names hosts.
    let r = get(
        gw.proxied,
        "echo.test",
        "/x",
        &[("X-Forwarded-Host", "a.test, b.test:8443")],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        seen["headers"]["x-forwarded-host"][0],
        "a.test, b.test:8443"
    );
    for xfh in ["evil.test@a.test", "a.test, evil.test@b.test", "a.test/x"] {
        let r = get(gw.proxied, "echo.test", "/x", &[("X-Forwarded-Host", xfh)]).await;
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, "bad_host"),
            "{xfh}: {r:?}"
        );
    }

    // HTTP/2: `:authority` and a Host that differs.
    let h2 = |authority: &'static str, host: Option<&'static str>| async move {
        let tcp = TcpStream::connect(g).await.unwrap();
        let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::get(format!("http://{authority}/x"));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let (resp, _) = client.send_request(req.body(()).unwrap(), true).unwrap();
        let resp = resp.await.unwrap();
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        (status, String::from_utf8_lossy(&bytes).into_owned())
    };
    assert_eq!(h2("echo.test", None).await.0, 200);
    assert_eq!(h2("echo.test", Some("echo.test")).await.0, 200);
    let (status, body) = h2("echo.test", Some("other.test")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_host"), "{body}");

    // A chunked body with a malformed chunk size.
    let post = |chunks: &'static str| async move {
        raw(
            g,
            &format!(
                "POST /x HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunks}"
            ),
        )
        .await
    };
    let r = post("5\r\nhello\r\n0\r\n\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\"body_len\":5"), "{r:?}");
    for chunks in ["zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n"] {
        let r = post(chunks).await;
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, "bad_request"),
            "{chunks:?}: {r:?}"
        );
    }
}
