//! HTTP routes end to end, over real TLS on 127.0.0.1: allowed requests with identity
//! headers at real upstreams (HTTP/1.1, HTTP/2 over TLS, WebSocket), every rejection
//! with its status, challenge and code, spoofing and forwarded headers, and mTLS.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use support::env::Env;
use support::mint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Status, `WWW-Authenticate`, and the JSON body.
async fn send(req: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let rid = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(
            body["request_id"].as_str(),
            rid.as_deref(),
            "the body and the header carry one request id"
        );
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(2),
            "a refusal body holds only the code and the request id: {body}"
        );
    }
    (status, challenge, body)
}

fn header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name][0].as_str()
}

#[tokio::test]
async fn allowed_requests_reach_upstreams_with_identity_headers() {
    let env = Env::start().await;
    let c = env.client();
    let token = env.minter.token(&env.minter.claims());

    // HTTP/2 from the client to the gateway, HTTP/1.1 to the upstream.
    let (status, _, echo) = send(
        c.get(env.url("/api/orders?x=1"))
            .bearer_auth(&token)
            .header("X-Intraport-Oid", "spoofed")
            .header("x-intraport-roles", "Admin")
            .header("X-Forwarded-For", "10.9.9.9")
            .header("X-Forwarded-Host", "evil.test"),
    )
    .await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/api/orders");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(
        header(&echo, "x-intraport-oid"),
        Some("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
    );
    assert_eq!(header(&echo, "x-intraport-tid"), Some(mint::TENANT));
    assert_eq!(header(&echo, "x-intraport-roles"), Some("Reader"));
    assert_eq!(header(&echo, "x-intraport-app-id"), Some(mint::APP));
    assert_eq!(header(&echo, "x-intraport-identity-type"), Some("app"));
    // The spoofed values are gone, not merely joined by ours.
    assert_eq!(
        echo["headers"]["x-intraport-oid"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        echo["headers"]["x-intraport-roles"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // An untrusted client's forwarding claims are replaced.
    assert_eq!(header(&echo, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&echo, "x-forwarded-proto"), Some("https"));
    assert_eq!(
        header(&echo, "x-forwarded-host"),
        Some(format!("127.0.0.1:{}", env.web.port()).as_str())
    );
    assert!(header(&echo, "x-request-id").is_some());
    assert!(header(&echo, "authorization").is_some());

    // A spoofed identity header without any token never reaches an open route either.
    let (status, _, echo) = send(
        c.post(env.url("/open/x"))
            .header("X-Intraport-Upn", "admin@victim.test")
            .body(vec![b'a'; 100_000]),
    )
    .await;
    assert_eq!(status, 200);
    assert!(header(&echo, "x-intraport-upn").is_none(), "{echo}");
    assert_eq!(echo["body_len"], 100_000);

    // HTTP/2 upstream over TLS with the route's own CA (ALPN h2).
    let (status, _, echo) = send(c.get(env.url("/h2/x")).bearer_auth(&token)).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(header(&echo, "x-intraport-tid"), Some(mint::TENANT));

    // strip_authorization.
    let (status, _, echo) = send(c.get(env.url("/strip")).bearer_auth(&token)).await;
    assert_eq!(status, 200);
    assert!(header(&echo, "authorization").is_none(), "{echo}");

    // A user token with the scope, group, app, version and kind each route asks for.
    let user = env.minter.with(json!({
        "idtyp": "user", "scp": "read write", "groups": ["g1"], "ver": "1.0",
        "upn": "alice@example.test", "name": "Alice",
    }));
    for path in ["/scope", "/group", "/app", "/version", "/kind", "/tenant"] {
        let (status, _, echo) = send(c.get(env.url(path)).bearer_auth(&user)).await;
        assert_eq!(status, 200, "{path}: {echo}");
    }
    let (_, _, echo) = send(c.get(env.url("/kind")).bearer_auth(&user)).await;
    assert_eq!(header(&echo, "x-intraport-scopes"), Some("read write"));
    assert_eq!(header(&echo, "x-intraport-name"), Some("Alice"));
}

#[tokio::test]
async fn token_failures_are_401_with_their_code() {
    let env = Env::start().await;
    let c = env.client();
    let m = &env.minter;
    let good = m.token(&m.claims());

    // No token: a plain challenge (RFC 6750 section 3.1).
    let (status, challenge, body) = send(c.get(env.url("/api"))).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    assert_eq!(body["error"], "token_required");
    // Another scheme is no bearer token either.
    let (status, challenge, _) = send(
        c.get(env.url("/api"))
            .header("Authorization", "Basic dXNlcjpwdw=="),
    )
    .await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer")));

    let mut tampered = good.clone();
    let dot = tampered.rfind('.').unwrap();
    tampered.replace_range(
        dot + 1..dot + 3,
        if &good[dot + 1..dot + 3] == "AA" {
            "BB"
        } else {
            "AA"
        },
    );
    let t = mint::now();
    let cases: Vec<(&str, String)> = vec![
        ("malformed", "not-a-jwt".into()),
        ("too_large", format!("{good}{}", "A".repeat(17_000))),
        (
            "unsupported_alg",
            m.sign(&json!({"alg": "HS256", "kid": m.kid}), &m.claims()),
        ),
        // An unpublished kid, and a signature no published key verifies (the keys
        // are tried when the kid names none of them).
        ("unknown_kid", {
            let mut t = m.sign(&json!({"alg": "RS256", "kid": "nobody"}), &m.claims());
            let dot = t.rfind('.').unwrap();
            let flip = if &t[dot + 1..dot + 3] == "AA" {
                "BB"
            } else {
                "AA"
            };
            t.replace_range(dot + 1..dot + 3, flip);
            t
        }),
        ("bad_signature", tampered),
        (
            "expired",
            m.with(json!({"exp": t - 3600, "iat": t - 7200, "nbf": t - 7200})),
        ),
        (
            "not_yet_valid",
            m.with(json!({"nbf": t + 3600, "iat": t + 3600})),
        ),
        (
            "wrong_issuer",
            m.with(json!({"iss": "https://elsewhere.test/"})),
        ),
        (
            "wrong_audience",
            m.with(json!({"aud": "api://someone-else"})),
        ),
        (
            "tenant_not_allowed",
            m.with(json!({"tid": "99999999-9999-4999-8999-999999999999"})),
        ),
        ("missing_claim", m.with(json!({"exp": null}))),
        // Neither scp nor roles: refused before the route's policy is asked.
        ("no_scope_or_role", m.with(json!({"roles": null}))),
    ];
    for (code, token) in cases {
        let (status, challenge, body) = send(c.get(env.url("/api")).bearer_auth(&token)).await;
        assert_eq!(status, 401, "{code}: {body}");
        assert_eq!(
            challenge.as_deref(),
            Some(format!("Bearer error=\"invalid_token\", error_description=\"{code}\"").as_str()),
            "{code}"
        );
        assert_eq!(body["error"], code);
    }
    // A route in the ACL mode (`allow_acl_tokens`) takes that token, and decides by
    // who the caller is.
    let acl = m.with(json!({"roles": null}));
    let (status, _, body) = send(c.get(env.url("/acl")).bearer_auth(&acl)).await;
    assert_eq!(status, 200, "{body}");
    let other_app = m.with(json!({"roles": null, "azp": "0d6a7c1e-0000-4000-8000-000000000001"}));
    let (status, _, body) = send(c.get(env.url("/acl")).bearer_auth(&other_app)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("app_not_allowed")),
        "{body}"
    );
    // Two Authorization headers.
    let (status, _, body) = send(
        c.get(env.url("/api"))
            .header("Authorization", format!("Bearer {good}"))
            .header("Authorization", format!("Bearer {good}")),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (401, Some("malformed")));
    // The issuer's keys cannot be fetched: fail closed.
    let (status, challenge, body) = send(c.get(env.url("/jwksdown")).bearer_auth(&good)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "jwks_unavailable");
    assert!(challenge.unwrap().contains("jwks_unavailable"));
}

#[tokio::test]
async fn policy_failures_are_403_with_their_reason() {
    let env = Env::start().await;
    let c = env.client();
    let m = &env.minter;
    let app = m.token(&m.claims());
    let cases: Vec<(&str, &str, String)> = vec![
        ("/tenant", "tenant_not_allowed", m.with(json!({"tid": mint::OTHER_TENANT}))),
        ("/role", "role_missing", app.clone()),
        ("/scope", "scope_missing", m.with(json!({"idtyp": "user", "scp": "read"}))),
        ("/group", "group_missing", m.with(json!({"groups": ["g2"]}))),
        (
            "/group",
            "groups_overage",
            m.with(json!({"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://graph.test/"}}})),
        ),
        ("/app", "app_not_allowed", m.with(json!({"azp": "00000000-0000-4000-8000-000000000000"}))),
        ("/version", "version_not_allowed", app.clone()),
        ("/kind", "identity_kind_not_allowed", app.clone()),
    ];
    for (path, code, token) in cases {
        let (status, challenge, body) = send(c.get(env.url(path)).bearer_auth(&token)).await;
        assert_eq!(status, 403, "{path} {code}: {body}");
        assert_eq!(body["error"], code, "{path}");
        assert_eq!(
            challenge.as_deref(),
            Some(
                format!("Bearer error=\"insufficient_scope\", error_description=\"{code}\"")
                    .as_str()
            )
        );
    }
    // Source rules: no bearer challenge, since no token would help.
    for (path, code) in [
        ("/srcdeny", "source_denied"),
        ("/srcnot", "source_not_allowed"),
    ] {
        let (status, challenge, body) = send(c.get(env.url(path)).bearer_auth(&app)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some(code)),
            "{path}"
        );
        assert_eq!(challenge, None);
    }
    // Client certificate requirements on the optional-mTLS listener.
    let (status, _, body) = send(c.get(env.url("/cert"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("client_cert_required"))
    );
    let other = env.client_with_cert("other");
    let (status, _, body) = send(other.get(env.url("/cert"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("cert_not_allowed"))
    );
    let agent = env.client_with_cert("agent");
    let (status, _, echo) = send(agent.get(env.url("/cert"))).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        header(&echo, "x-intraport-client-cert-subject"),
        Some("CN=agent")
    );
    // token_or_cert: either identity passes, neither is a 401.
    assert_eq!(send(agent.get(env.url("/either"))).await.0, 200);
    assert_eq!(
        send(c.get(env.url("/either")).bearer_auth(&app)).await.0,
        200
    );
    let (status, challenge, _) = send(c.get(env.url("/either"))).await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer")));
}

#[tokio::test]
async fn routing_and_upstream_failures() {
    let env = Env::start().await;
    let c = env.client();
    let (status, _, body) = send(c.get(env.url("/nothing/here"))).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("no_route")));
    // An encoded slash could make the upstream see another path than policy did.
    let (status, _, body) = send(c.get(env.url("/open/a%2Fb"))).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_path")));
    let (status, _, body) = send(c.get(env.url("/down"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("upstream_unavailable"))
    );
    let started = std::time::Instant::now();
    let (status, _, body) = send(c.get(env.url("/slow"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (504, Some("upstream_timeout"))
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    // Refusals are counted.
    let stats = env.gw.listener_stats("web").await.unwrap();
    assert_eq!(stats.refused.load(std::sync::atomic::Ordering::Relaxed), 0);
    send(c.get(env.url("/api"))).await;
    assert_eq!(stats.refused.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    let env = Env::start().await;
    // The web listener trusts no proxy: the XFF claim is ignored for the source check.
    // (Its open route admits 127.0.0.0/8; the proxied listener only 10.9.9.9.)
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{}/anything", env.proxied.port());
    // The proxied listener trusts 127.0.0.1: its XFF names the client.
    let (status, _, echo) = send(plain.get(&url).header("X-Forwarded-For", "10.9.9.9")).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        header(&echo, "x-forwarded-for"),
        Some("10.9.9.9, 127.0.0.1")
    );
    // Without the header the peer itself is the client, which that route refuses.
    let (status, _, body) = send(plain.get(&url)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("source_not_allowed"))
    );
    // On the web listener (no trusted proxies) the same claim changes nothing.
    let c = env.client();
    let (status, _, echo) = send(
        c.get(env.url("/open"))
            .header("X-Forwarded-For", "10.9.9.9"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&echo, "x-forwarded-for"), Some("127.0.0.1"));
    let (status, _, body) = send(
        c.get(env.url("/srcnot"))
            .header("X-Forwarded-For", "10.1.2.3"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("source_not_allowed"))
    );
}

#[tokio::test]
async fn mtls_listener_accepts_and_refuses_with_reasons() {
    let env = Env::start().await;
    let url = format!("https://127.0.0.1:{}/x", env.mtls.port());
    let stats = env.gw.listener_stats("mtls").await.unwrap();
    use intraport_gateway::HandshakeFailure as H;

    let (status, _, echo) = send(env.client_with_cert("agent").get(&url)).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        header(&echo, "x-intraport-client-cert-san"),
        Some("dns:agent.example.test")
    );
    // Verified, but not the subject the route allows.
    let (status, _, body) = send(env.client_with_cert("other").get(&url)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("cert_not_allowed"))
    );

    // No certificate, and one from an unknown CA: the handshake fails, counted by reason.
    assert!(env.client().get(&url).send().await.is_err());
    support::eventually(5, "client_cert_missing counted", || async {
        (stats.handshake_failures_of(H::ClientCertMissing) == 1).then_some(())
    })
    .await;
    assert!(
        env.client_with_cert("rogue")
            .get(&url)
            .send()
            .await
            .is_err()
    );
    support::eventually(5, "client_cert_invalid counted", || async {
        (stats.handshake_failures_of(H::ClientCertInvalid) == 1).then_some(())
    })
    .await;
    // TLS 1.2 on a 1.3-only listener.
    let agent_cert = std::fs::read_to_string(env.pki.path("agent.pem")).unwrap();
    let agent_key = std::fs::read_to_string(env.pki.path("agent-key.pem")).unwrap();
    let tls12 = support::http_client(support::client_tls(
        &env.server_ca,
        Some((&agent_cert, &agent_key)),
        &[&rustls::version::TLS12],
    ));
    assert!(tls12.get(&url).send().await.is_err());
    support::eventually(5, "protocol_version counted", || async {
        (stats.handshake_failures_of(H::ProtocolVersion) == 1).then_some(())
    })
    .await;
    // Not TLS at all.
    let mut s = tokio::net::TcpStream::connect(env.mtls).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    support::eventually(5, "not_tls counted", || async {
        (stats.handshake_failures_of(H::NotTls) == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let env = Env::start().await;
    let token = env.minter.token(&env.minter.claims());
    let mut tls = support::client_tls(&env.server_ca, None, rustls::DEFAULT_VERSIONS);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(env.web).await.unwrap();
    let mut s = connector
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let req = format!(
        "GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "head ended early");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // RFC 6455's example key and accept value.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    // A masked text frame "hello", echoed by the upstream byte for byte.
    let frame = [
        0x81,
        0x85,
        1,
        2,
        3,
        4,
        b'h' ^ 1,
        b'e' ^ 2,
        b'l' ^ 3,
        b'l' ^ 4,
        b'o' ^ 1,
    ];
    for _ in 0..3 {
        s.write_all(&frame).await.unwrap();
        let mut back = [0u8; 11];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, frame);
    }
    // Without a token the upgrade is refused before reaching the upstream.
    let c = env.client();
    let (status, _, _) = send(
        c.get(env.url("/ws/chat"))
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade"),
    )
    .await;
    assert_eq!(status, 401);
}
