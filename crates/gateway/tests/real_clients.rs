//! Real third parties around the gateway: `curl` (Debian) as the client, the embedded
//! Entra-compatible issuer through discovery, and the OpenID Certified `oidc-provider`
//! (npm) as the identity provider.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use intraport_devissuer::{DevIssuer, DevIssuerConfig, TokenRequest, demo};
use intraport_gateway::{Config, Gateway};
use support::pki::Pki;

/// `curl -s -i` with extra arguments; returns (status, head, body).
fn curl(args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20", "--noproxy", "*"])
        .args(args)
        .output()
        .expect("curl is installed by scripts/test.sh (Debian package curl)");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// One signature character changed (not the last, whose low bits are padding).
fn tamper(token: &str) -> String {
    let mut t = token.as_bytes().to_vec();
    let i = t.len() - 10;
    t[i] = if t[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(t).unwrap()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_gateway_with_dev_issuer_tokens() {
    let pki = Pki::new();
    let issuer = DevIssuer::start(DevIssuerConfig {
        state_dir: Some(pki.dir.join("issuer")),
        ..DevIssuerConfig::demo()
    })
    .await
    .unwrap();
    let up = support::upstream::http1().await;
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[provider]]
name = "dev"
authority = "{authority}"
tenant = "{tenant}"
audiences = ["{uri}", "{app}"]
ca_file = "{ca}"

[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "https"
[listener.tls]
cert = "server.pem"
key = "server-key.pem"

[[route]]
name = "read"
listener = "web"
path_prefix = "/read"
upstream = "http://{up}"
provider = "dev"
[route.source]
allow = ["127.0.0.1"]
[route.require]
roles_any = ["Reader"]

[[route]]
name = "write"
listener = "web"
path_prefix = "/write"
upstream = "http://{up}"
provider = "dev"
[route.source]
allow = ["127.0.0.1"]
[route.require]
roles_all = ["Writer"]
"#,
        authority = issuer.authority(),
        tenant = issuer.tenant_id(),
        uri = demo::API_APP_ID_URI,
        app = demo::API_APP_ID,
        ca = issuer.ca_pem_path().unwrap().display(),
    );
    let gw = Gateway::start(Config::from_toml_str(&text, &pki.dir).unwrap())
        .await
        .unwrap();
    let port = gw.listener_addr("web").await.unwrap().port();
    let token = issuer
        .issue_token(&TokenRequest::App {
            client: "demo-client".into(),
            api: demo::API_NAME.into(),
        })
        .unwrap()
        .access_token;
    let ca = pki.path("server-ca.pem").display().to_string();
    let url = move |p: &str| format!("https://127.0.0.1:{port}{p}");
    let auth = format!("Authorization: Bearer {token}");

    let results = tokio::task::spawn_blocking(move || {
        let ok = curl(&[
            "--cacert",
            &ca,
            "-H",
            &auth,
            "-H",
            "X-Intraport-Roles: Writer",
            &url("/read/items"),
        ]);
        let h2 = curl(&[
            "--http2",
            "--cacert",
            &ca,
            "-H",
            &auth,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &url("/read"),
        ]);
        let none = curl(&["--cacert", &ca, &url("/read")]);
        let tampered_token = tamper(&token);
        let tampered = curl(&[
            "--cacert",
            &ca,
            "-H",
            &format!("Authorization: Bearer {tampered_token}"),
            &url("/read"),
        ]);
        let forbidden = curl(&["--cacert", &ca, "-H", &auth, &url("/write")]);
        let untrusted = curl(&[&url("/read")]);
        (ok, h2, none, tampered, forbidden, untrusted)
    })
    .await
    .unwrap();
    let (ok, h2, none, tampered, forbidden, untrusted) = results;

    assert_eq!(ok.0, 200, "{ok:?}");
    let echo: serde_json::Value = serde_json::from_str(&ok.2).unwrap();
    assert_eq!(echo["headers"]["x-intraport-roles"][0], "Reader", "{echo}");
    assert_eq!(
        echo["headers"]["x-intraport-tid"][0],
        issuer.tenant_id().to_string()
    );
    assert!(header(&ok.1, "x-request-id").is_some());
    // With -o, only the -w text is printed.
    assert_eq!(h2.1.trim(), "2", "curl negotiated HTTP/{}", h2.1);

    assert_eq!(none.0, 401);
    assert_eq!(header(&none.1, "www-authenticate"), Some("Bearer"));
    assert!(
        none.2.contains("\"error\":\"token_required\""),
        "{}",
        none.2
    );

    assert_eq!(tampered.0, 401);
    assert_eq!(
        header(&tampered.1, "www-authenticate"),
        Some("Bearer error=\"invalid_token\", error_description=\"bad_signature\"")
    );

    assert_eq!(forbidden.0, 403);
    assert_eq!(
        header(&forbidden.1, "www-authenticate"),
        Some("Bearer error=\"insufficient_scope\", error_description=\"role_missing\"")
    );
    assert!(forbidden.2.contains("\"error\":\"role_missing\""));

    // curl without our CA refuses the certificate: status 0, no response.
    assert_eq!(untrusted.0, 0);
    gw.shutdown(Duration::from_secs(1)).await;
}

const IDP_TENANT: &str = "4a7c1e2d-9b3f-4d6a-8e1c-2b5d7f9a0c3e";

/// The oidc-provider process, stopped when dropped.
struct Idp {
    child: Child,
    issuer: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_idp(keys: &Path) -> Idp {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/idp");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "oidc-provider is not installed in tests/idp: run scripts/test.sh, which installs it"
    );
    let mut child = Command::new("node")
        .arg(dir.join("launch.mjs"))
        .arg("--keys")
        .arg(keys)
        .args(["--port", "0", "--tenant", IDP_TENANT])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting node");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(issuer) = line.strip_prefix("READY ") {
                let _ = tx.send(issuer.to_string());
                return;
            }
        }
    });
    let issuer = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("oidc-provider did not become ready within 30 s");
    Idp { child, issuer }
}

#[tokio::test]
async fn tokens_from_a_real_openid_provider_through_discovery() {
    let pki = Pki::new();
    let idp = start_idp(&pki.path("idp-keys.json"));
    let up = support::upstream::http1().await;
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[provider]]
name = "idp"
discovery = "{issuer}/.well-known/openid-configuration"
audiences = ["api://intraport-idp"]
allowed_tenants = ["{IDP_TENANT}"]

[[listener]]
name = "web"
listen = "127.0.0.1:0"
protocol = "http"

[[route]]
name = "api"
listener = "web"
upstream = "http://{up}"
provider = "idp"
[route.source]
allow = ["127.0.0.1"]
[route.require]
tenants = ["{IDP_TENANT}"]
roles_any = ["Reader"]
"#,
        issuer = idp.issuer
    );
    let gw = Gateway::start(Config::from_toml_str(&text, &pki.dir).unwrap())
        .await
        .unwrap();
    support::eventually(30, "the provider's keys", || async {
        gw.is_ready().then_some(())
    })
    .await;
    let token = intraport_token::client::acquire(
        &reqwest::Client::new(),
        &format!("{}/token", idp.issuer),
        &intraport_token::client::Grant::ClientCredentials {
            client_id: "svc-reader".into(),
            client_secret: "svc-reader-secret".into(),
        },
        &intraport_token::client::Target::Resource("api://intraport-idp".into()),
    )
    .await
    .expect("client credentials at oidc-provider")
    .access_token;
    let web = gw.listener_addr("web").await.unwrap();
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = c
        .get(format!("http://{web}/data"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-intraport-tid"][0], IDP_TENANT, "{echo}");
    assert_eq!(echo["headers"]["x-intraport-roles"][0], "Reader");
    // The same provider's token with one byte changed is refused.
    let bad = tamper(&token);
    let r = c
        .get(format!("http://{web}/data"))
        .bearer_auth(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\", error_description=\"bad_signature\""
    );
}
