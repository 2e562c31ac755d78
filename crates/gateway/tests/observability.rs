//! The gateway as the witness of its port, end to end on loopback: an audit event for
//! every connection, handshake, request, ban and reload (read back from the file
//! sink), every TLS handshake failure reason with its event and its metric label, the
//! `/metrics` exposition, and the `/status` page rendered by a real headless Chromium
//! (Debian `chromium`) showing the numbers `/metrics` has.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use intraport_gateway::{Gateway, GatewayHandle};
use serde_json::Value;
use support::mint::{self, Minter};
use support::pki::Pki;
use support::{eventually, upstream};

struct Gw {
    pki: Pki,
    minter: Minter,
    gw: Arc<GatewayHandle>,
    plain: SocketAddr,
    mtls: SocketAddr,
    admin: SocketAddr,
    audit: PathBuf,
}

fn config_text(minter: &Minter, up: SocketAddr, audit: &Path) -> String {
    format!(
        r#"
[server]
watch_config = false
shutdown_grace_seconds = 1
[admin]
listen = "127.0.0.1:0"
status_sample_interval_ms = 100
[abuse]
sync_interval_ms = 100
[abuse.bans]
failures = 3
window_seconds = 60
ban_seconds = 2
[audit]
queue_full = "block"
[[audit.sink]]
type = "file"
path = "{audit}"
commit_interval_ms = 10

[[provider]]
name = "local"
issuer = "{iss}"
jwks = "{jwks}"
audiences = ["{aud}"]

[[listener]]
name = "plain"
listen = "127.0.0.1:0"
protocol = "http"

[[listener]]
name = "mtls"
listen = "127.0.0.1:0"
protocol = "https"
handshake_timeout_ms = 300
[listener.tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "client-ca.pem"
client_cert = "required"
min_version = "1.3"

[[route]]
name = "api"
listener = "plain"
path_prefix = "/api"
upstream = "http://{up}"
provider = "local"
[route.source]
allow = ["127.0.0.0/8"]

[[route]]
name = "agents"
listener = "mtls"
upstream = "http://{up}"
identity = "client_cert"
[route.source]
allow = ["127.0.0.0/8"]
[route.require]
client_cert_subjects = ["CN=agent"]
"#,
        audit = audit.display(),
        iss = mint::ISSUER,
        jwks = minter.jwks_path.display(),
        aud = mint::AUDIENCE,
    )
}

async fn start() -> Gw {
    let pki = Pki::new();
    let minter = Minter::new(&pki.dir);
    let up = upstream::http1().await;
    let audit = pki.dir.join("audit.jsonl");
    let file = pki.dir.join("gateway.toml");
    std::fs::write(&file, config_text(&minter, up, &audit)).unwrap();
    let config = intraport_gateway::load_config(&file).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let gw = Gateway::start(config).await.unwrap();
    let plain = gw.listener_addr("plain").await.unwrap();
    let mtls = gw.listener_addr("mtls").await.unwrap();
    let admin = gw.admin_addr();
    eventually(10, "provider ready", || async {
        gw.is_ready().then_some(())
    })
    .await;
    Gw {
        pki,
        minter,
        gw,
        plain,
        mtls,
        admin,
        audit,
    }
}

/// The audit file's events, once every one of `until` holds (the file sink commits
/// every 10 ms).
async fn events(path: &Path, what: &str, until: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    eventually(10, what, || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let evs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is one JSON event"))
            .collect();
        until(&evs).then_some(evs)
    })
    .await
}

fn action(e: &Value) -> &str {
    e["event"]["action"].as_str().unwrap_or("")
}

fn reason(e: &Value) -> &str {
    e["event"]["reason"].as_str().unwrap_or("")
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn cert_client(g: &Gw, name: &str) -> reqwest::Client {
    let cert = std::fs::read_to_string(g.pki.path(&format!("{name}.pem"))).unwrap();
    let key = std::fs::read_to_string(g.pki.path(&format!("{name}-key.pem"))).unwrap();
    support::http_client(support::client_tls(
        &g.pki.server_ca.pem,
        Some((&cert, &key)),
        &[&rustls::version::TLS13],
    ))
}

async fn metrics(admin: SocketAddr) -> String {
    let r = plain_client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    r.text().await.unwrap()
}

/// `name{labels} value` lines of an exposition, keyed by `name{labels}`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of metric `name` whose labels contain all of `with`.
fn sum(samples: &BTreeMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && with.iter().all(|w| k.contains(w)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn every_connection_request_ban_and_reload_has_its_event() {
    let g = start().await;
    let api = format!("http://{}/api/items", g.plain);
    let good = g.minter.token(&g.minter.claims());

    // Allowed: forwarded, with its identity, bytes and durations.
    let r = plain_client()
        .get(&api)
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ok_rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let ok_len = r.bytes().await.unwrap().len() as u64;
    // A forged token (signed by a key the issuer never published).
    let forger = g.pki.dir.join("forger");
    std::fs::create_dir_all(&forger).unwrap();
    let forged = Minter::new(&forger).token(&g.minter.claims());
    let r = plain_client()
        .get(&api)
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let bad_rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    // No route.
    let r = plain_client()
        .get(format!("http://{}/nowhere", g.plain))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let none_rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    // mTLS: the allowed certificate, then one the route does not allow.
    let agents = format!("https://localhost:{}/x", g.mtls.port());
    let r = cert_client(&g, "agent").get(&agents).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = cert_client(&g, "other").get(&agents).send().await.unwrap();
    assert_eq!(r.status(), 403);

    let evs = events(&g.audit, "request events", |evs| {
        [&ok_rid, &bad_rid, &none_rid].iter().all(|rid| {
            evs.iter()
                .any(|e| e["http"]["request"]["id"].as_str() == Some(rid.as_str()))
        })
    })
    .await;
    let by_rid = |rid: &str| -> Vec<&Value> {
        evs.iter()
            .filter(|e| e["http"]["request"]["id"].as_str() == Some(rid))
            .collect()
    };
    // Exactly one event per request.
    let ok = by_rid(&ok_rid);
    assert_eq!(ok.len(), 1, "{ok:?}");
    let ok = ok[0];
    assert_eq!(action(ok), "upstream-result");
    assert_eq!(ok["event"]["outcome"], "success");
    assert_eq!(ok["http"]["response"]["status_code"], 200);
    assert_eq!(ok["destination"]["bytes"].as_u64(), Some(ok_len));
    assert_eq!(ok["intraport"]["route"], "api");
    assert_eq!(ok["rule"]["name"], "token");
    assert_eq!(ok["user"]["id"], "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    assert_eq!(ok["intraport"]["token"]["kid"], "test-key-1");
    assert_eq!(ok["intraport"]["token"]["tid"], mint::TENANT);
    assert!(ok["intraport"]["duration_us"]["auth"].as_u64().is_some());
    assert!(
        ok["intraport"]["duration_us"]["upstream"]
            .as_u64()
            .is_some()
    );
    assert!(
        !ok.to_string().contains(&good),
        "the token itself is never written"
    );

    let bad = by_rid(&bad_rid);
    assert_eq!(bad.len(), 1);
    assert_eq!(action(bad[0]), "authentication");
    assert_eq!(bad[0]["event"]["outcome"], "failure");
    assert_eq!(reason(bad[0]), "bad_signature");
    assert_eq!(bad[0]["intraport"]["token"]["kid"], "test-key-1");
    assert_eq!(bad[0]["http"]["response"]["status_code"], 401);

    let none = by_rid(&none_rid);
    assert_eq!(none.len(), 1);
    assert_eq!(action(none[0]), "policy-decision");
    assert_eq!(reason(none[0]), "no_route");

    // Connections: every one accepted has its event, with the listener's address.
    let accepted: Vec<&Value> = evs
        .iter()
        .filter(|e| action(e) == "connection-accepted")
        .collect();
    assert!(accepted.len() >= 5, "{accepted:?}");
    assert!(
        accepted
            .iter()
            .any(|e| e["destination"]["port"] == g.mtls.port())
    );
    // The handshake on the mTLS listener names the certificate and the TLS facts.
    let hs = evs
        .iter()
        .find(|e| {
            action(e) == "tls-handshake"
                && e["event"]["outcome"] == "success"
                && e["tls"]["client"]["subject"] == "CN=agent"
        })
        .expect("a successful handshake with the agent's certificate");
    assert_eq!(hs["tls"]["version"], "1.3");
    assert_eq!(hs["tls"]["client"]["server_name"], "localhost");
    assert!(hs["tls"]["cipher"].as_str().unwrap().starts_with("TLS13_"));
    let denied = evs
        .iter()
        .find(|e| action(e) == "policy-decision" && reason(e) == "cert_not_allowed")
        .expect("the denied certificate's decision");
    assert_eq!(denied["tls"]["client"]["subject"], "CN=other");
    // Events of one connection share its id.
    let conn = hs["intraport"]["connection_id"].as_u64().unwrap();
    assert!(evs.iter().any(|e| action(e) == "upstream-result"
        && e["intraport"]["connection_id"].as_u64() == Some(conn)));

    // Three failures ban the source (the forged token was the first); the ban ends
    // after two seconds: both are events.
    for _ in 0..2 {
        let r = plain_client()
            .get(&api)
            .bearer_auth("x.y.z")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // While banned, a connection is refused at accept, with its event.
    assert!(plain_client().get(&api).send().await.is_err());
    let evs = events(&g.audit, "ban, refusal and unban", |evs| {
        evs.iter().any(|e| action(e) == "ban")
            && evs.iter().any(|e| action(e) == "unban")
            && evs
                .iter()
                .any(|e| action(e) == "connection-refused" && reason(e) == "banned")
    })
    .await;
    let ban = evs.iter().find(|e| action(e) == "ban").unwrap();
    assert_eq!(ban["source"]["ip"], "127.0.0.1");
    assert_eq!(reason(ban), "malformed");
    assert_eq!(ban["intraport"]["ban_seconds"], 2);
}

#[tokio::test]
async fn reloads_are_events() {
    let g = start().await;
    let file = g.pki.dir.join("gateway.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, "[[listener]]\nname = 1\n").unwrap();
    assert!(g.gw.reload_from_file().await.is_err());
    std::fs::write(&file, good).unwrap();
    g.gw.reload_from_file().await.unwrap();
    let evs = events(&g.audit, "two reload events", |evs| {
        evs.iter().filter(|e| action(e) == "reload").count() == 2
    })
    .await;
    let reloads: Vec<&Value> = evs.iter().filter(|e| action(e) == "reload").collect();
    assert_eq!(reloads[0]["event"]["outcome"], "failure");
    assert_eq!(reason(reloads[0]), "invalid_configuration");
    assert!(
        reloads[0]["message"]
            .as_str()
            .unwrap()
            .contains("gateway.toml:2"),
        "{}",
        reloads[0]
    );
    assert_eq!(reloads[1]["event"]["outcome"], "success");
    let m = samples(&metrics(g.admin).await);
    assert_eq!(
        sum(
            &m,
            "intraport_config_reloads_total",
            &["outcome=\"applied\""]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "intraport_config_reloads_total",
            &["outcome=\"rejected\""]
        ),
        1.0
    );
}
