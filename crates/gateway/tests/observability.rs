//! The gateway as the witness of its port, end to end on loopback: an audit event for
//! every connection, handshake, request, ban and reload (read back from the file
//! sink, and from a second one in OCSF that a third-party implementation of the OCSF
//! schema checks: PyPI `pydantic-ocsf`), every TLS handshake failure reason with its
//! event and its metric label, the
//! `/metrics` exposition, and the `/status` page rendered by a real headless Chromium
//! (Debian `chromium`) showing the numbers `/metrics` has.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use intraport_gateway::{Gateway, GatewayHandle};
use serde_json::Value;
use support::mint::{self, Minter};
use support::pki::Pki;
use support::{closed_within, eventually, upstream};

struct Gw {
    pki: Pki,
    minter: Minter,
    gw: Arc<GatewayHandle>,
    plain: SocketAddr,
    mtls: SocketAddr,
    admin: SocketAddr,
    audit: PathBuf,
    ocsf: PathBuf,
}

fn config_text(minter: &Minter, up: SocketAddr, audit: &Path, ocsf: &Path) -> String {
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
[[audit.sink]]
type = "file"
path = "{ocsf}"
format = "ocsf"
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
[listener.limits]
header_read_timeout_ms = 400

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
name = "tok"
listener = "mtls"
path_prefix = "/tok"
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
        ocsf = ocsf.display(),
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
    let ocsf = pki.dir.join("audit-ocsf.jsonl");
    let file = pki.dir.join("gateway.toml");
    std::fs::write(&file, config_text(&minter, up, &audit, &ocsf)).unwrap();
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
        ocsf,
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

/// The Python with the test packages: INTRAPORT_TEST_PYTHON, else the workspace's
/// .venv that the README's test command makes.
fn python() -> PathBuf {
    let p = std::env::var_os("INTRAPORT_TEST_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        p.exists(),
        "no test Python at {}: run the README's test command (scripts/test.sh), which creates it",
        p.display()
    );
    p
}

/// `tests/ocsf/validate.py` on `file`: whether every event passed, its report and its
/// stderr.
fn validate_ocsf(file: &Path) -> (bool, String, String) {
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ocsf/validate.py"))
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The OCSF sink's events, once it has every event the ECS sink has now (the same
/// ids), each checked against the OCSF 1.7.0 schema by `tests/ocsf/validate.py`
/// (PyPI `pydantic-ocsf`'s models, and no attribute the schema lacks). Returns the
/// events by their id.
async fn ocsf_events(g: &Gw) -> BTreeMap<String, Value> {
    let ids: BTreeSet<String> = events(&g.audit, "ECS events", |_| true)
        .await
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_string())
        .collect();
    // One snapshot of the file, whole lines only (more events may follow meanwhile),
    // is what is matched, checked and counted.
    let text = eventually(10, "the same events in OCSF", || async {
        let text = std::fs::read_to_string(&g.ocsf).unwrap_or_default();
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let seen: BTreeSet<String> = whole
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|e| e["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        ids.iter()
            .all(|id| seen.contains(id))
            .then(|| whole.to_string())
    })
    .await;
    let snapshot = g.pki.dir.join("ocsf-snapshot.jsonl");
    std::fs::write(&snapshot, &text).unwrap();
    let (ok, report, stderr) = validate_ocsf(&snapshot);
    assert!(ok, "OCSF events the schema refuses:\n{report}{stderr}");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        report.lines().last(),
        Some(format!("events {}", events.len()).as_str())
    );
    let by_id: BTreeMap<String, Value> = events
        .into_iter()
        .map(|e| (e["metadata"]["uid"].as_str().unwrap().to_string(), e))
        .collect();
    for id in &ids {
        assert!(by_id.contains_key(id), "event {id} is not in the OCSF sink");
    }
    by_id
}

/// The OCSF check is not vacuous: an event with an attribute its class lacks, a wrong
/// caption, a bad address or a status of another class fails it, naming what.
#[test]
fn the_ocsf_check_refuses_what_the_schema_does_not_define() {
    let pki = Pki::new();
    let good = r#"{"time":1,"class_uid":4001,"category_uid":4,"activity_id":1,"activity_name":"Open","type_uid":400101,"severity_id":1,"status_id":1,"status":"Success","metadata":{"version":"1.7.0","product":{"name":"intraport"}},"src_endpoint":{"ip":"127.0.0.1","port":1}}"#;
    let cases = [
        (
            r#""port":1}"#,
            r#""port":1,"owner_name":"x"}"#,
            "src_endpoint.owner_name: not an attribute",
        ),
        (
            r#""activity_name":"Open""#,
            r#""activity_name":"Close""#,
            "activity_name",
        ),
        (
            r#""ip":"127.0.0.1""#,
            r#""ip":"127.0.0.999""#,
            "not an IP address",
        ),
        (
            r#""status":"Success""#,
            r#""status":"New""#,
            "is not status_id 1's caption",
        ),
        (
            r#""severity_id":1,"#,
            r#""severity_id":"1","#,
            "an integer expected",
        ),
        (
            r#""class_uid":4001"#,
            r#""class_uid":1001"#,
            "not a class intraport writes",
        ),
    ];
    for (from, to, says) in cases {
        let file = pki.dir.join("events.jsonl");
        std::fs::write(&file, format!("{good}\n{}\n", good.replace(from, to))).unwrap();
        let (ok, report, _) = validate_ocsf(&file);
        assert!(!ok, "{to}: accepted\n{report}");
        let mut lines = report.lines();
        assert_eq!(lines.next(), Some("ok 4001 1"), "{report}");
        let bad = lines.next().unwrap_or_default();
        assert!(
            bad.starts_with("line 2:") && bad.contains(says),
            "{to}: {report}"
        );
    }
}

/// `(class_uid, activity_id)` of an OCSF event.
fn class(e: &Value) -> (u64, u64) {
    (
        e["class_uid"].as_u64().unwrap(),
        e["activity_id"].as_u64().unwrap(),
    )
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
        }) && evs
            .iter()
            .any(|e| action(e) == "policy-decision" && reason(e) == "cert_not_allowed")
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
    // The connection whose failure banned the source is closed after its answer, and
    // while banned a connection is refused at accept, each with its event.
    assert!(plain_client().get(&api).send().await.is_err());
    let evs = events(&g.audit, "ban, close, refusal and unban", |evs| {
        evs.iter().any(|e| action(e) == "ban")
            && evs.iter().any(|e| action(e) == "unban")
            && evs
                .iter()
                .any(|e| action(e) == "connection-closed" && reason(e) == "banned")
            && evs
                .iter()
                .any(|e| action(e) == "connection-refused" && reason(e) == "banned")
    })
    .await;
    let closed = evs
        .iter()
        .find(|e| action(e) == "connection-closed" && reason(e) == "banned")
        .unwrap();
    assert_eq!(closed["source"]["ip"], "127.0.0.1");
    assert_eq!(closed["event"]["outcome"], "failure");
    let ban = evs.iter().find(|e| action(e) == "ban").unwrap();
    assert_eq!(ban["source"]["ip"], "127.0.0.1");
    assert_eq!(reason(ban), "malformed");
    assert_eq!(ban["intraport"]["ban_seconds"], 2);

    // The same events in OCSF, each in its class, the schema's check passed.
    let ocsf = ocsf_events(&g).await;
    let of = |e: &Value| &ocsf[e["event"]["id"].as_str().unwrap()];
    let o = of(ok);
    assert_eq!(class(o), (4002, 3), "{o}");
    assert_eq!(o["status_id"], 1);
    assert_eq!(o["http_response"]["code"], 200);
    assert_eq!(o["http_request"]["uid"], ok_rid.as_str());
    assert_eq!(o["traffic"]["bytes_in"].as_u64(), Some(ok_len));
    assert_eq!(
        o["actor"]["user"]["uid"],
        "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    );
    assert_eq!(o["actor"]["user"]["org"]["uid"], mint::TENANT);
    assert_eq!(o["unmapped"]["token_kid"], "test-key-1");
    assert_eq!(o["unmapped"]["route"], "api");
    assert_eq!(o["metadata"]["profiles"][0], "host");
    let o = of(bad[0]);
    assert_eq!(class(o), (3002, 1), "{o}");
    assert_eq!(
        (o["status_id"].as_u64(), o["status_detail"].as_str()),
        (Some(2), Some("bad_signature"))
    );
    assert_eq!(o["auth_protocol_id"], 6);
    assert_eq!(o["service"]["name"], "api");
    // A refused token's claims are not trusted: no user is named.
    assert_eq!(o["user"]["name"], "unknown");
    let o = of(none[0]);
    assert_eq!(class(o), (4002, 3), "{o}");
    assert_eq!(o["status_detail"], "no_route");
    let o = of(hs);
    assert_eq!(class(o), (4001, 99), "{o}");
    assert_eq!(o["tls"]["version"], "1.3");
    assert_eq!(o["tls"]["sni"], "localhost");
    assert_eq!(o["actor"]["user"]["name"], "CN=agent");
    assert_eq!(class(of(denied)), (4002, 3));
    let o = of(closed);
    assert_eq!(
        (class(o), o["status_detail"].as_str()),
        ((4001, 2), Some("banned"))
    );
    let refused = evs
        .iter()
        .find(|e| action(e) == "connection-refused")
        .unwrap();
    assert_eq!(class(of(refused)), (4001, 5));
    let b = of(ban);
    assert_eq!(class(b), (2004, 1));
    assert_eq!(b["finding_info"]["uid"], "intraport-ban-127.0.0.1");
    assert_eq!(b["evidences"][0]["src_endpoint"]["ip"], "127.0.0.1");
    let unban = evs.iter().find(|e| action(e) == "unban").unwrap();
    let u = of(unban);
    assert_eq!(class(u), (2004, 3));
    assert_eq!(u["finding_info"]["uid"], b["finding_info"]["uid"]);
    assert!(
        !std::fs::read_to_string(&g.ocsf).unwrap().contains(&good),
        "the token itself is never written"
    );
}

/// A request head not finished within the header timeout closes its connection, and
/// the close is an event naming that reason, the client and how long it lasted.
#[tokio::test]
async fn a_head_cut_at_the_header_timeout_is_an_event_with_its_reason() {
    use tokio::io::AsyncWriteExt;
    let g = start().await;
    let mut slow = tokio::net::TcpStream::connect(g.plain).await.unwrap();
    let port = slow.local_addr().unwrap().port();
    slow.write_all(b"GET /api HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, 5).await,
        "the unfinished head was not cut"
    );
    let evs = events(&g.audit, "the slow head's close", |evs| {
        evs.iter().any(|e| {
            action(e) == "connection-closed" && e["source"]["port"].as_u64() == Some(port.into())
        })
    })
    .await;
    let closed = evs
        .iter()
        .find(|e| {
            action(e) == "connection-closed" && e["source"]["port"].as_u64() == Some(port.into())
        })
        .unwrap();
    assert_eq!(reason(closed), "header_read_timeout");
    assert_eq!(closed["event"]["outcome"], "failure");
    assert_eq!(closed["intraport"]["listener"], "plain");
    let lasted = closed["intraport"]["duration_us"]["total"]
        .as_u64()
        .unwrap();
    assert!(
        (350_000..5_000_000).contains(&lasted),
        "closed after {lasted} us, the timeout is 400 ms"
    );
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
    let ocsf = ocsf_events(&g).await;
    for (r, status) in reloads.iter().zip([2, 1]) {
        let o = &ocsf[r["event"]["id"].as_str().unwrap()];
        assert_eq!(
            (class(o), o["status_id"].as_u64()),
            ((6002, 8), Some(status))
        );
        assert_eq!(o["app"]["name"], "intraport");
    }
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

/// A token refused on a TLS listener is an Authentication event whose user is the
/// client certificate's subject; OCSF's Authentication has no `tls` (the ECS event has
/// it).
#[tokio::test]
async fn a_token_refused_over_tls_is_an_authentication_event_without_tls() {
    let g = start().await;
    let url = format!("https://localhost:{}/tok/x", g.mtls.port());
    let r = cert_client(&g, "agent")
        .get(&url)
        .bearer_auth("x.y.z")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let by_rid = |e: &Value| e["http"]["request"]["id"].as_str() == Some(rid.as_str());
    let evs = events(&g.audit, "the refusal", |evs| evs.iter().any(by_rid)).await;
    let e = evs.iter().find(|e| by_rid(e)).unwrap();
    assert_eq!(action(e), "authentication");
    assert_eq!(e["tls"]["version"], "1.3");
    let ocsf = ocsf_events(&g).await;
    let o = &ocsf[e["event"]["id"].as_str().unwrap()];
    assert_eq!(class(o), (3002, 1), "{o}");
    assert!(o.get("tls").is_none(), "{o}");
    assert_eq!(o["user"]["name"], "CN=agent");
    assert_eq!(o["service"]["name"], "tok");
}

/// A TLS handshake from `client` to the mTLS listener; true if it completed.
async fn handshake(g: &Gw, client: rustls::ClientConfig) -> bool {
    let s = tokio::net::TcpStream::connect(g.mtls).await.unwrap();
    let c = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    match c.connect(name, s).await {
        Err(_) => false,
        Ok(mut tls) => {
            // TLS 1.3 client-certificate failures surface on the first read.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let mut buf = [0u8; 64];
            matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
        }
    }
}

#[tokio::test]
async fn every_handshake_failure_reason_has_its_event_and_metric_label() {
    use tokio::io::AsyncWriteExt;
    let g = start().await;
    let read = |n: &str| std::fs::read_to_string(g.pki.path(n)).unwrap();
    let ca = g.pki.server_ca.pem.clone();
    let (agent, agent_key) = (read("agent.pem"), read("agent-key.pem"));
    let (rogue, rogue_key) = (read("rogue.pem"), read("rogue-key.pem"));
    let tls13 = [&rustls::version::TLS13];

    assert!(
        handshake(
            &g,
            support::client_tls(&ca, Some((&agent, &agent_key)), &tls13)
        )
        .await
    );
    // protocol_version: TLS 1.2 only, to a 1.3-only listener.
    let tls12 = support::client_tls(&ca, Some((&agent, &agent_key)), &[&rustls::version::TLS12]);
    assert!(!handshake(&g, tls12).await);
    // client_cert_missing and client_cert_invalid.
    assert!(!handshake(&g, support::client_tls(&ca, None, &tls13)).await);
    assert!(
        !handshake(
            &g,
            support::client_tls(&ca, Some((&rogue, &rogue_key)), &tls13)
        )
        .await
    );
    // peer_alert: a client that does not trust the server's certificate says so.
    let stranger = support::pki::Ca::new("unrelated CA").pem;
    assert!(
        !handshake(
            &g,
            support::client_tls(&stranger, Some((&agent, &agent_key)), &tls13)
        )
        .await
    );
    // not_tls: plain HTTP to the TLS port.
    let mut s = tokio::net::TcpStream::connect(g.mtls).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut s, 5).await);
    // eof: half a record header, then the client goes away.
    let mut s = tokio::net::TcpStream::connect(g.mtls).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(closed_within(&mut s, 5).await);
    // timeout: connect and say nothing (handshake_timeout_ms = 300).
    let mut s = tokio::net::TcpStream::connect(g.mtls).await.unwrap();
    assert!(closed_within(&mut s, 5).await);
    // incompatible: a TLS 1.3 client offering only AES-CCM, which the server lacks.
    // Asynchronously: the gateway answers on this test's runtime.
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &g.mtls.to_string(),
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_128_CCM_SHA256",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("openssl s_client finished")
        .expect("openssl (Debian package openssl) must be installed");
    assert!(!out.status.success());

    let reasons = [
        "protocol_version",
        "client_cert_missing",
        "client_cert_invalid",
        "peer_alert",
        "not_tls",
        "eof",
        "timeout",
        "incompatible",
    ];
    let evs = events(&g.audit, "every handshake failure event", |evs| {
        reasons.iter().all(|r| {
            evs.iter().any(|e| {
                action(e) == "tls-handshake"
                    && e["event"]["outcome"] == "failure"
                    && reason(e) == *r
            })
        })
    })
    .await;
    for r in reasons {
        let e = evs
            .iter()
            .find(|e| action(e) == "tls-handshake" && reason(e) == r)
            .unwrap();
        assert_eq!(e["intraport"]["listener"], "mtls", "{e}");
        assert_eq!(e["destination"]["port"], g.mtls.port());
        assert!(
            e["intraport"]["duration_us"]["handshake"]
                .as_u64()
                .is_some()
        );
    }
    let timeout = evs
        .iter()
        .find(|e| action(e) == "tls-handshake" && reason(e) == "timeout")
        .unwrap();
    assert!(
        timeout["intraport"]["duration_us"]["handshake"]
            .as_u64()
            .unwrap()
            >= 300_000
    );
    let ocsf = ocsf_events(&g).await;
    for r in reasons {
        let e = evs
            .iter()
            .find(|e| action(e) == "tls-handshake" && reason(e) == r)
            .unwrap();
        let o = &ocsf[e["event"]["id"].as_str().unwrap()];
        assert_eq!(class(o), (4001, 99), "{o}");
        assert_eq!(
            (o["status_id"].as_u64(), o["status_detail"].as_str()),
            (Some(2), Some(r))
        );
    }
    let m = samples(&metrics(g.admin).await);
    for r in reasons.iter().chain(&["success"]) {
        let n = sum(
            &m,
            "intraport_tls_handshake_duration_seconds_count",
            &["listener=\"mtls\"", &format!("outcome=\"{r}\"")],
        );
        assert!(n >= 1.0, "no metric sample for outcome {r}");
    }
}

fn chromium(dir: &Path, args: &[String]) -> std::process::Output {
    let profile = dir.join("chromium-profile");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium (Debian package chromium) must be installed");
    // Chromium can hang on exit in containers: wait with a deadline, then kill.
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// The text of the element with `id` in a DOM dump.
fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no element {id}"));
    let rest = &dom[at + id.len() + 6..];
    &rest[..rest.find('<').unwrap()]
}

#[tokio::test]
async fn status_page_in_chromium_shows_what_metrics_has_and_the_dashboard_queries_exist() {
    let g = start().await;
    let api = format!("http://{}/api/x", g.plain);
    let good = g.minter.token(&g.minter.claims());
    {
        let c = plain_client();
        for _ in 0..4 {
            assert_eq!(
                c.get(&api)
                    .bearer_auth(&good)
                    .send()
                    .await
                    .unwrap()
                    .status(),
                200
            );
        }
        let r = c
            .get(&api)
            .bearer_auth(g.minter.with(serde_json::json!({"aud": "api://other"})))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let agents = format!("https://localhost:{}/x", g.mtls.port());
        assert_eq!(
            cert_client(&g, "agent")
                .get(&agents)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let mut s = tokio::net::TcpStream::connect(g.mtls).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"not tls\r\n\r\n")
            .await
            .unwrap();
        assert!(closed_within(&mut s, 5).await);
    }
    // Quiet: every connection closed and a few samples taken after the traffic.
    let m = eventually(10, "connections closed", || async {
        let m = samples(&metrics(g.admin).await);
        (sum(&m, "intraport_connections_active", &[]) == 0.0).then_some(m)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let m2 = samples(&metrics(g.admin).await);
    let text_of = |m: &BTreeMap<String, f64>| {
        m.iter()
            .filter(|(k, _)| {
                !k.starts_with("intraport_audit") && !k.starts_with("intraport_jwks_age")
            })
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(text_of(&m), text_of(&m2), "the gateway is not quiet");

    let dir = g.pki.dir.clone();
    let url = format!("http://{}/status", g.admin);
    let dom = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let url = url.clone();
        move || chromium(&dir, &["--dump-dom".to_string(), url])
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(dom.contains("intraport gateway status"), "{dom}");
    let m = samples(&metrics(g.admin).await);
    let expect = [
        (
            "connections_active",
            sum(&m, "intraport_connections_active", &[]),
        ),
        (
            "connections_accepted",
            sum(&m, "intraport_connections_total", &["outcome=\"accepted\""]),
        ),
        (
            "handshakes_ok",
            sum(
                &m,
                "intraport_tls_handshake_duration_seconds_count",
                &["outcome=\"success\""],
            ),
        ),
        ("requests", sum(&m, "intraport_http_requests_total", &[])),
        (
            "requests_forwarded",
            sum(&m, "intraport_http_requests_total", &["code=\"forwarded\""]),
        ),
        (
            "auth_valid",
            sum(
                &m,
                "intraport_token_validation_duration_seconds_count",
                &["result=\"valid\""],
            ),
        ),
        (
            "auth_failed",
            sum(&m, "intraport_token_validation_duration_seconds_count", &[])
                - sum(
                    &m,
                    "intraport_token_validation_duration_seconds_count",
                    &["result=\"valid\""],
                ),
        ),
        ("bans_active", sum(&m, "intraport_bans_active", &[])),
    ];
    for (id, want) in expect {
        let shown: f64 = element(&dom, id).parse().unwrap();
        assert_eq!(shown, want, "{id} on the page");
    }
    // What the traffic was, independently of both.
    assert_eq!(element(&dom, "requests"), "6");
    assert_eq!(element(&dom, "requests_forwarded"), "5");
    let failed: f64 = element(&dom, "handshakes_failed").parse().unwrap();
    assert_eq!(
        failed,
        sum(&m, "intraport_tls_handshake_duration_seconds_count", &[])
            - sum(
                &m,
                "intraport_tls_handshake_duration_seconds_count",
                &["outcome=\"success\""]
            )
    );
    assert!(failed >= 1.0);
    // The charts have data: the sampler ran during the traffic.
    assert!(dom.contains("data-series=\"open\""), "no connection series");
    assert!(dom.contains("data-series=\"valid per second\""));

    // The screenshot renders (inline SVG, no external assets).
    let shot = dir.join("status.png");
    tokio::task::spawn_blocking({
        let dir = dir.clone();
        let shot = shot.clone();
        move || {
            chromium(
                &dir,
                &[
                    format!("--screenshot={}", shot.display()),
                    "--window-size=1280,1400".to_string(),
                    url,
                ],
            )
        }
    })
    .await
    .unwrap();
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // Every metric the Grafana dashboard queries exists in the exposition.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/grafana/intraport-gateway.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exposition = metrics(g.admin).await;
    let names: std::collections::BTreeSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("intraport_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    names.contains(name.as_str()),
                    "the dashboard queries {name}, which /metrics lacks"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 20, "{queried}");
}

/// `durability = "sync"` fails closed: when the request's event cannot be written (a
/// full disk: `/dev/full`), the client gets 503 `audit_unavailable`, not the response.
#[tokio::test]
async fn sync_durability_refuses_the_response_whose_event_cannot_be_written() {
    let pki = Pki::new();
    let minter = Minter::new(&pki.dir);
    let up = upstream::http1().await;
    // Both sinks become `sync`: the response waits for both, and the first fails.
    let text = config_text(
        &minter,
        up,
        Path::new("/dev/full"),
        &pki.dir.join("ocsf.jsonl"),
    )
    .replace("commit_interval_ms = 10", "durability = \"sync\"");
    let config = intraport_gateway::Config::from_toml_str(&text, &pki.dir).unwrap();
    let gw = Gateway::start(config).await.unwrap();
    eventually(10, "provider ready", || async {
        gw.is_ready().then_some(())
    })
    .await;
    let api = format!("http://{}/api/x", gw.listener_addr("plain").await.unwrap());
    let r = plain_client()
        .get(&api)
        .bearer_auth(minter.token(&minter.claims()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "audit_unavailable");
    assert!(gw.audit_stats()[0].errors >= 1);
}
